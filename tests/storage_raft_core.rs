//! The consensus core running over the real raft log: three nodes, each with its own
//! raft-engine directory, elect a leader, replicate, then restart from disk and carry on.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::proto::raftpb::{ConfState, Entry, Message, Snapshot, SnapshotMetadata};
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::raft::{Config, RawNode, Role};
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{
    LogWriteBatch, RaftLogConfig, RaftLogEngine, RaftLogStore, RegionLog,
};

const REGION: RegionId = RegionId(1);

struct Node {
    raw: RawNode<Arc<RegionLog>>,
    log: Arc<RegionLog>,
    engine: Arc<RaftLogEngine>,
    applied: Vec<Entry>,
    /// The state machine a snapshot installed, as (index, data).
    installed: Option<(u64, Vec<u8>)>,
}

fn start(id: u64, dir: &Path, applied: u64) -> Node {
    let engine = Arc::new(RaftLogEngine::open(&RaftLogConfig::new(dir)).unwrap());
    let local = engine.local_state(REGION).unwrap().unwrap_or_default();
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    let log = Arc::new(RegionLog::new(
        REGION,
        engine.clone(),
        local,
        (0, 0),
        cs,
        1 << 20,
    ));
    let mut cfg = Config::new(id);
    cfg.applied = applied;
    cfg.check_quorum = false;
    let raw = RawNode::new(cfg, log.clone()).unwrap();
    Node {
        raw,
        log,
        engine,
        applied: Vec::new(),
        installed: None,
    }
}

/// Handles one Ready: a synced write of entries + state, then the acknowledgements.
fn handle_ready(n: &mut Node, out: &mut VecDeque<Message>) -> bool {
    if !n.raw.has_ready() {
        return false;
    }
    let mut rd = n.raw.ready().unwrap();
    let ack = rd.persisted_up_to();
    out.extend(std::mem::take(&mut rd.messages));
    // The state as of the last write, advanced by this Ready.
    let st = n.raw.status();
    let mut local = RaftLocalState {
        hard_state: Some(st.hard_state),
        last_index: st.persisted_index,
        // Not recorded (0) unless this Ready moves the end: the log answers then.
        last_term: 0,
    };
    if let Some(hs) = rd.hard_state {
        local.hard_state = Some(hs);
    }
    let mut batch = LogWriteBatch::default();
    if let Some(snap) = &rd.snapshot {
        // Install: the old log goes; the state and any entries after the snapshot follow.
        let meta = snap.metadata.clone().unwrap_or_default();
        batch.reset(REGION);
        (local.last_index, local.last_term) = (meta.index, meta.term);
        assert_eq!(n.log.on_truncated(meta.index, meta.term), None);
        n.log.set_conf_state(meta.conf_state.unwrap_or_default());
        n.installed = Some((meta.index, snap.data.to_vec()));
    }
    if let Some(last) = rd.entries.last() {
        (local.last_index, local.last_term) = (last.index, last.term);
    }
    batch.append(REGION, &rd.entries).unwrap();
    batch.put_state(REGION, &local);
    let sync = match rd.must_sync {
        true => SyncMode::Sync,
        false => SyncMode::NoSync,
    };
    n.engine.write(&mut batch, sync).unwrap();
    n.log.on_written(&rd.entries, &local);
    if let Some((index, term)) = ack {
        n.raw.on_persisted(index, term);
    }
    out.extend(rd.persisted_messages);
    if let Some((index, _)) = &n.installed
        && rd.snapshot.is_some()
    {
        n.raw.on_applied(*index);
    }
    if let Some(last) = rd.committed_entries.last().map(|e| e.index) {
        n.applied.extend(
            rd.committed_entries
                .into_iter()
                .filter(|e| !e.data.is_empty()),
        );
        n.raw.on_applied(last);
    }
    true
}

fn settle(nodes: &mut [Node]) {
    settle_cut_off(nodes, 0);
}

/// Runs Readys and delivers messages until quiet; messages to or from node `cut` are lost.
fn settle_cut_off(nodes: &mut [Node], cut: u64) {
    for _ in 0..1000 {
        let mut msgs = VecDeque::new();
        let mut busy = false;
        for n in nodes.iter_mut() {
            busy |= handle_ready(n, &mut msgs);
        }
        busy |= !msgs.is_empty();
        for m in msgs.into_iter().filter(|m| m.to != cut && m.from != cut) {
            let to = (m.to - 1) as usize;
            nodes[to].raw.step(m).unwrap();
        }
        if !busy {
            return;
        }
    }
    panic!("did not settle");
}

/// Three fresh nodes, each with its own log directory; node 1 is elected.
fn three_nodes_led_by_node_1() -> (Vec<tempfile::TempDir>, Vec<Node>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start(i as u64 + 1, dirs[i].path(), 0))
        .collect();
    nodes[0].raw.campaign().unwrap();
    settle(&mut nodes);
    (dirs, nodes)
}

#[test]
fn core_replicates_over_raft_engine_and_restarts_from_disk() {
    let (dirs, mut nodes) = three_nodes_led_by_node_1();
    assert_eq!(nodes[0].raw.status().soft_state.role, Role::Leader);
    for i in 0..50 {
        nodes[0]
            .raw
            .propose(format!("v{i}").into_bytes(), Vec::new())
            .unwrap();
    }
    settle(&mut nodes);
    for n in &nodes {
        assert_eq!(n.applied.len(), 50);
    }
    let last = nodes[0].raw.status().last_index;
    let applied: Vec<u64> = nodes.iter().map(|n| n.raw.status().applied).collect();

    // Restart everyone from disk: the logs and hard states come back from raft-engine.
    drop(nodes);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start(i as u64 + 1, dirs[i].path(), applied[i]))
        .collect();
    for n in &nodes {
        let st = n.raw.status();
        assert_eq!(st.last_index, last);
        assert_eq!(st.hard_state.commit, last);
    }
    nodes[1].raw.campaign().unwrap();
    settle(&mut nodes);
    assert_eq!(nodes[1].raw.status().soft_state.role, Role::Leader);
    nodes[1]
        .raw
        .propose(b"after restart".to_vec(), Vec::new())
        .unwrap();
    settle(&mut nodes);
    for n in &nodes {
        assert_eq!(n.applied.last().unwrap().data.as_ref(), b"after restart");
        assert_eq!(n.raw.status().last_index, last + 2, "no-op + proposal");
    }
}

/// A follower that fell behind the leader's compacted log gets a snapshot: the leader's
/// first attempt finds none and leaves a request for the store; once the store offers one,
/// the next attempt sends it and the follower catches up from there.
#[test]
fn a_follower_behind_compaction_catches_up_from_an_offered_snapshot() {
    let (_dirs, mut nodes) = three_nodes_led_by_node_1();
    for i in 0..30 {
        let data = format!("v{i}").into_bytes();
        nodes[0].raw.propose(data, Vec::new()).unwrap();
    }
    settle_cut_off(&mut nodes, 3);
    let st = nodes[0].raw.status();
    let (index, term) = (st.applied, st.hard_state.term);
    assert!(index > 30 && nodes[2].raw.status().last_index < index);
    nodes[0].engine.compact_to(REGION, index + 1).unwrap();
    assert_eq!(nodes[0].log.on_truncated(index, term), None, "none offered");

    let catch_up = |nodes: &mut Vec<Node>| {
        for _ in 0..10 {
            nodes[0].raw.tick(); // heartbeats reach the follower, its reply shows the gap
            settle(nodes);
        }
    };
    catch_up(&mut nodes);
    assert_eq!(nodes[2].installed, None);
    assert_eq!(nodes[0].log.take_snapshot_request(), Some(index));
    catch_up(&mut nodes);
    assert_eq!(
        nodes[0].log.take_snapshot_request(),
        None,
        "asked again, but a generation is under way"
    );
    nodes[0].log.abandon_snapshot();
    assert_eq!(
        nodes[0].log.take_snapshot_request(),
        Some(index),
        "failed: anew"
    );

    let snapshot = |index: u64| Snapshot {
        data: Bytes::from_static(b"state machine at the applied index"),
        metadata: Some(SnapshotMetadata {
            conf_state: Some(ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            }),
            index,
            term,
        }),
    };
    // One older than the truncated log would leave the follower short: not sent.
    assert_eq!(nodes[0].log.offer_snapshot(snapshot(index - 1)), None);
    catch_up(&mut nodes);
    assert_eq!(nodes[2].installed, None);
    assert_eq!(nodes[0].log.take_snapshot_request(), Some(index));

    let replaced = nodes[0].log.offer_snapshot(snapshot(index));
    assert_eq!(replaced, Some(snapshot(index - 1)), "its files may go");
    catch_up(&mut nodes);
    assert_eq!(
        nodes[2].installed,
        Some((index, b"state machine at the applied index".to_vec()))
    );
    nodes[0].raw.propose(b"after".to_vec(), Vec::new()).unwrap();
    settle(&mut nodes);
    assert_eq!(nodes[2].applied.last().unwrap().data.as_ref(), b"after");
    assert_eq!(nodes[2].raw.status().last_index, index + 1);
    let first = nodes[2].engine.span(REGION).map(|s| s.first);
    assert_eq!(first, Some(index + 1));
    assert_eq!(
        nodes[0].log.on_truncated(index + 1, term),
        Some(snapshot(index)),
        "truncation past the offered snapshot retires it"
    );
}
