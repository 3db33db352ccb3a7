//! The consensus core running over the real raft log: three nodes, each with its own
//! raft-engine directory, elect a leader, replicate, then restart from disk and carry on.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use flotilla::raft::pb::{ConfState, Entry, Message};
use flotilla::raft::{Config, RawNode, Role};
use flotilla::storage::pb::RaftLocalState;
use flotilla::storage::raft_log::{
    LogWriteBatch, RaftLogConfig, RaftLogEngine, RaftLogStore, RegionLog,
};

const REGION: u64 = 1;

struct Node {
    raw: RawNode<Arc<RegionLog>>,
    log: Arc<RegionLog>,
    engine: Arc<RaftLogEngine>,
    applied: Vec<Entry>,
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
    }
}

/// Handles one Ready: a synced write of entries + state, then the acknowledgements.
fn handle_ready(n: &mut Node, out: &mut VecDeque<Message>) -> bool {
    if !n.raw.has_ready() {
        return false;
    }
    let mut rd = n.raw.ready();
    let ack = rd.persisted_up_to();
    out.extend(std::mem::take(&mut rd.messages));
    // The state as of the last write, advanced by this Ready.
    let st = n.raw.status();
    let mut local = RaftLocalState {
        hard_state: Some(st.hard_state),
        last_index: st.persisted_index,
    };
    if let Some(hs) = rd.hard_state {
        local.hard_state = Some(hs);
    }
    if let Some(last) = rd.entries.last() {
        local.last_index = last.index;
    }
    let mut batch = LogWriteBatch::default();
    batch.append(REGION, &rd.entries).unwrap();
    batch.put_state(REGION, &local);
    n.engine.write(&mut batch, rd.must_sync).unwrap();
    n.log.on_written(&rd.entries, &local);
    if let Some((index, term)) = ack {
        n.raw.on_persisted(index, term);
    }
    out.extend(rd.persisted_messages);
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
    for _ in 0..1000 {
        let mut msgs = VecDeque::new();
        let mut busy = false;
        for n in nodes.iter_mut() {
            busy |= handle_ready(n, &mut msgs);
        }
        busy |= !msgs.is_empty();
        for m in msgs {
            let to = (m.to - 1) as usize;
            nodes[to].raw.step(m).unwrap();
        }
        if !busy {
            return;
        }
    }
    panic!("did not settle");
}

#[test]
fn core_replicates_over_raft_engine_and_restarts_from_disk() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start(i as u64 + 1, dirs[i].path(), 0))
        .collect();
    nodes[0].raw.campaign();
    settle(&mut nodes);
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
    nodes[1].raw.campaign();
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
