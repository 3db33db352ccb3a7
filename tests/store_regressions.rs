//! Bugs the whole-store simulator found (src/testkit/store_sim), and one a review of the
//! code found, each replayed as a scenario on stores stepped by the test and named after
//! what it broke.

use std::sync::Arc;

use bytes::Bytes;
use flotilla::proto::commandpb::{Op, Put, SplitRequest, WriteCommand, op};
use flotilla::proto::metapb::{Peer, PeerRole};
use flotilla::proto::raftpb::HardState;
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{LogWriteBatch, RaftLogStore};
use flotilla::store::batch::PollOutcome;
use flotilla::store::{
    Fault, InProcessNetwork, PeerChange, ReadRequest, ReadResponse, Response, RunMode,
    SnapshotSteps, SplitResponse, Store, WriteOutcome, bootstrap_region,
};
use flotilla::testkit::cluster::*;
use flotilla::{RegionId, StoreId};

fn put(key: &str, value: &str) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })),
        }],
    }
}

/// A crash between a snapshot install (durable in the KV engine) and the log reset after
/// it — or an empty peer's recorded vote under a region a split later created — leaves a
/// region whose log ends before its applied state. The store resets the log to start at
/// the applied state, keeping the recorded term and vote, and the region serves; before,
/// its first append was refused and the store stopped.
#[test]
fn a_log_ending_before_the_applied_state_is_reset_there_keeping_its_vote() {
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    // The log as an empty peer left it: a term and a vote, no entry.
    let recorded = RaftLocalState {
        hard_state: Some(HardState {
            term: 7,
            vote: 1,
            commit: 0,
        }),
        last_index: 0,
        last_term: 0,
    };
    let mut batch = LogWriteBatch::default();
    batch.put_state(FIRST_REGION, &recorded);
    node.log.write(&mut batch, SyncMode::Sync).unwrap();

    let mut store = open_stepped(&node, test_config(StoreId(1)));
    // The bootstrap's apply state starts the log at index 5, term 5.
    let local = node.log.local_state(FIRST_REGION).unwrap().unwrap();
    assert_eq!((local.last_index, local.last_term), (5, 5));
    let hard = local.hard_state.unwrap();
    assert_eq!((hard.term, hard.vote), (7, 1), "the vote is kept");

    elect_stepped(&mut store);
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut written = store.propose(FIRST_REGION, epoch, put("a", "1"));
    store.run_until_idle();
    assert_eq!(
        answer_now(&mut written).index,
        7,
        "an entry after the election's"
    );
    assert!(store.failure().is_none(), "{:?}", store.failure());
    let after = node.log.local_state(FIRST_REGION).unwrap().unwrap();
    assert!(
        after.hard_state.unwrap().term > 7,
        "elected past the kept term"
    );
}

/// A log already at or past the applied state is left as it was.
#[test]
fn a_log_at_its_applied_state_is_not_reset() {
    let node = Node::new();
    {
        let mut store = lone_stepped_leader(&node);
        let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
        let mut written = store.propose(FIRST_REGION, epoch, put("a", "1"));
        store.run_until_idle();
        answer_now(&mut written);
        store.shutdown();
    }
    let before = node.log.local_state(FIRST_REGION).unwrap().unwrap();
    let store = open_stepped(&node, test_config(StoreId(1)));
    assert_eq!(node.log.local_state(FIRST_REGION).unwrap(), Some(before));
    assert!(
        node.log
            .entry(FIRST_REGION, before.last_index)
            .unwrap()
            .is_some()
    );
    drop(store);
}

/// Runs the given stores a round at a time (their snapshot tasks too, unless held)
/// until none has work left. Messages to other stores land in their mailboxes; those
/// stores do nothing until stepped.
fn settle(stores: &mut [Store], which: &[usize], snapshots: SnapshotSteps) {
    loop {
        let mut progressed = false;
        for &i in which {
            progressed |= stores[i].step_round(snapshots);
        }
        if !progressed {
            return;
        }
    }
}

/// A store holding nothing yet, stepped, on `net`.
fn open_empty(net: &InProcessNetwork, node: &Node, id: StoreId) -> Store {
    let store = Store::open(
        test_config(id),
        engines(node),
        Arc::new(net.clone()),
        RunMode::Stepped,
    )
    .unwrap();
    net.register(id, store.receiver());
    store
}

/// Splits region 1 at "m" on `leader` (region 2, peer ids 100 past region 1's).
fn split_at_m(leader: &Store) -> Response<SplitResponse> {
    let region = leader.region(FIRST_REGION).unwrap();
    leader.split(
        FIRST_REGION,
        region.epoch.unwrap(),
        vec![SplitRequest {
            split_key: Bytes::from_static(b"m"),
            new_region_id: 2,
            new_peer_ids: region.peers.iter().map(|p| p.id + 100).collect(),
        }],
    )
}

/// Stores 1 and 2 hold region 1; store 3 holds an empty learner of it whose snapshot's
/// view the leader took before the region split at "m", and an empty learner of the new
/// region 2, created by that region's leader. Returns the stores and the leader's index.
fn learners_waiting_across_a_split(net: &InProcessNetwork, nodes: &[Node]) -> (Vec<Store>, usize) {
    let mut stores = stepped_stores(net, &nodes[..2], test_config);
    stores.push(open_empty(net, &nodes[2], StoreId(3)));
    let l = elect_among(&mut stores, &[0, 1], 0);
    let region = stores[l].region(FIRST_REGION).unwrap();

    // A learner on store 3: its empty peer is created and asks for a snapshot, whose view
    // the leader takes now; the files are not made and sent yet.
    let learner = Peer {
        id: 10,
        store_id: 3,
        role: PeerRole::Learner as i32,
    };
    let mut added = stores[l].change_peers(
        FIRST_REGION,
        region.epoch.unwrap(),
        vec![PeerChange::AddLearner(learner)],
    );
    settle(&mut stores, &[0, 1], SnapshotSteps::Hold);
    answer_now(&mut added);
    for _ in 0..10 {
        for s in &stores[..2] {
            s.tick();
        }
        settle(&mut stores, &[0, 1], SnapshotSteps::Hold);
        settle(&mut stores, &[2], SnapshotSteps::Hold);
    }

    // The split, applied on stores 1 and 2; the new region elects and reaches store 3.
    let mut split = split_at_m(&stores[l]);
    settle(&mut stores, &[0, 1], SnapshotSteps::Hold);
    answer_now(&mut split);
    settle(&mut stores, &[2], SnapshotSteps::Hold);
    assert!(
        stores[2].region(RegionId(2)).is_none(),
        "store 3's peer of region 2 is an empty one"
    );
    (stores, l)
}

/// The snapshot taken before the split arrives: store 3's replica of region 1 is born
/// from it and applies the split, whose new region already has an empty peer there. That
/// stopped the store; now the empty peer stays, and its region's leader fills it with a
/// snapshot.
#[test]
fn a_split_beside_its_new_regions_empty_peer_leaves_the_peer_to_a_snapshot() {
    let net = InProcessNetwork::new(1);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, _) = learners_waiting_across_a_split(&net, &nodes);
    for _ in 0..50 {
        settle(&mut stores, &[0, 1, 2], SnapshotSteps::Run);
        for s in &stores {
            s.tick();
        }
    }
    assert!(stores[2].failure().is_none(), "{:?}", stores[2].failure());
    let here = stores[2].region(FIRST_REGION).expect("region 1 on store 3");
    assert_eq!(here.end_key, b"m".to_vec(), "it applied the split");
    let new = stores[2]
        .region(RegionId(2))
        .expect("region 2 filled by a snapshot");
    assert_eq!(new.start_key, b"m".to_vec());
}

/// Both snapshots reach store 3 before it takes either: region 1's from before the
/// split (the whole key space) and region 2's ([m, end)). Both were accepted and
/// installed, and the store held overlapping regions; now the first one taken holds its
/// range until it installs, and the other waits for the leader to send it again.
#[test]
fn two_snapshots_accepted_together_never_install_overlapping_regions() {
    let net = InProcessNetwork::new(1);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, _) = learners_waiting_across_a_split(&net, &nodes);
    // Store 3 answers the leaders but installs nothing (its apply delegates do not run):
    // both snapshots are taken, neither installs.
    for _ in 0..30 {
        for s in &stores[..2] {
            s.tick();
        }
        settle(&mut stores, &[0, 1], SnapshotSteps::Run);
        // A peer whose Ready waits for its install is not polled again meanwhile: the
        // poller goes idle (it spun before).
        let mut idle = false;
        for _ in 0..1_000 {
            let raft = matches!(stores[2].step_raft(), Some(PollOutcome::Handled(n)) if n > 0);
            let wal = matches!(stores[2].step_wal(), Some(WriteOutcome::Written(_)));
            if !raft && !wal {
                idle = true;
                break;
            }
        }
        assert!(
            idle,
            "store 3's raft poller spins while a snapshot waits to install"
        );
    }
    settle(&mut stores, &[2], SnapshotSteps::Run);
    let held = stores[2].regions();
    assert_eq!(held.len(), 1, "one snapshot installed: {held:?}");
    for _ in 0..50 {
        settle(&mut stores, &[0, 1, 2], SnapshotSteps::Run);
        for s in &stores {
            s.tick();
        }
        assert_disjoint(&stores[2].regions());
    }
    assert!(stores[2].failure().is_none(), "{:?}", stores[2].failure());
    assert_eq!(stores[2].regions().len(), 2);
}

/// Found by the simulator (seed 23,598): store 3's replica of region 1, born from a
/// snapshot taken before the region split at "m", applied the split while region 2's
/// empty peer already ran there: it wrote region 2's state ([m, end)) but left that range
/// out of the store's map. Region 2 split again at "t" on the other stores; region 3's
/// snapshot ([t, end)) passed the overlap check and installed, and after a crash the store
/// opened holding overlapping regions 2 and 3. The range a split wrote is now held until
/// the empty peer is filled: region 3 waits for region 2's snapshot.
#[test]
fn a_split_written_beside_an_empty_peer_holds_its_range_until_the_peer_is_filled() {
    let net = InProcessNetwork::new(1);
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, l) = learners_waiting_across_a_split(&net, &nodes);
    // Region 2's replica on store 3 hears nothing from its region for now.
    let cut = net.add_fault(Fault::DropRegionTo {
        region: RegionId(2),
        to: StoreId(3),
    });
    run_rounds(&mut stores, 20);
    let here = stores[2]
        .region(FIRST_REGION)
        .expect("store 3's region 1 is filled");
    assert_eq!(here.end_key, b"m".to_vec(), "and applied the split");
    assert!(stores[2].region(RegionId(2)).is_none());

    let region2 = stores[l].region(RegionId(2)).unwrap();
    let mut split = stores[l].split(
        RegionId(2),
        region2.epoch.unwrap(),
        vec![SplitRequest {
            split_key: Bytes::from_static(b"t"),
            new_region_id: 3,
            new_peer_ids: region2.peers.iter().map(|p| p.id + 100).collect(),
        }],
    );
    run_rounds(&mut stores, 20);
    answer_now(&mut split);
    assert!(stores[2].failure().is_none(), "{:?}", stores[2].failure());
    assert!(
        stores[2].region(RegionId(3)).is_none(),
        "region 3 waits on store 3 for region 2's range"
    );

    // A crash now leaves a store that opens with no overlapping regions.
    nodes[2].store = stores.pop();
    nodes[2].crash_keeping(usize::MAX, usize::MAX);
    stores.push(open_empty(&net, &nodes[2], StoreId(3)));
    assert_disjoint(&stores[2].regions());

    // Healed: region 2's replica is filled, then region 3's.
    net.remove_fault(cut);
    run_rounds(&mut stores, 40);
    assert!(stores[2].failure().is_none(), "{:?}", stores[2].failure());
    let held = stores[2].regions();
    assert_disjoint(&held);
    let ranges: Vec<(&[u8], &[u8])> = held
        .iter()
        .map(|r| (r.start_key.as_slice(), r.end_key.as_slice()))
        .collect();
    assert_eq!(
        ranges,
        [
            (&b""[..], &b"m"[..]),
            (&b"m"[..], &b"t"[..]),
            (&b"t"[..], &b""[..])
        ]
    );
}

/// Regions in key order that do not overlap.
fn assert_disjoint(held: &[flotilla::proto::metapb::Region]) {
    for pair in held.windows(2) {
        assert!(
            !pair[0].end_key.is_empty() && pair[0].end_key <= pair[1].start_key,
            "overlapping regions: {held:?}"
        );
    }
}

/// Steps every store, snapshot workers included, ticking them `rounds` times.
fn run_rounds(stores: &mut [Store], rounds: usize) {
    let all: Vec<usize> = (0..stores.len()).collect();
    for _ in 0..rounds {
        settle(stores, &all, SnapshotSteps::Run);
        for s in stores.iter() {
            s.tick();
        }
    }
    settle(stores, &all, SnapshotSteps::Run);
}

/// A snapshot the leader made for one learner (store 3) was handed to a learner added
/// after a split (store 4): the replica born from it applied the split, whose new region
/// has no peer on store 4, and the store stopped. The leader now makes a snapshot naming
/// every current member, and a follower refuses one that does not name it.
#[test]
fn a_learner_added_after_a_split_gets_a_snapshot_naming_it() {
    let net = InProcessNetwork::new(1);
    let nodes: Vec<Node> = (0..4).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes[..2], test_config);
    for (i, node) in nodes.iter().enumerate().skip(2) {
        stores.push(open_empty(&net, node, StoreId(i as u64 + 1)));
    }
    let l = elect_among(&mut stores, &[0, 1], 0);
    let add_learner = |stores: &mut [Store], id: u64, store: u64| {
        let epoch = stores[l].region(FIRST_REGION).unwrap().epoch.unwrap();
        let peer = Peer {
            id,
            store_id: store,
            role: PeerRole::Learner as i32,
        };
        let mut added =
            stores[l].change_peers(FIRST_REGION, epoch, vec![PeerChange::AddLearner(peer)]);
        run_rounds(stores, 20);
        answer_now(&mut added);
    };
    add_learner(&mut stores, 10, 3);
    assert!(stores[2].region(FIRST_REGION).is_some(), "store 3 filled");

    let mut split = split_at_m(&stores[l]);
    run_rounds(&mut stores, 5);
    answer_now(&mut split);

    add_learner(&mut stores, 20, 4);
    run_rounds(&mut stores, 20);
    assert!(stores[3].failure().is_none(), "{:?}", stores[3].failure());
    let here = stores[3].region(FIRST_REGION).expect("store 4 filled");
    assert_eq!(here.end_key, b"m".to_vec());
    assert!(here.peers.iter().any(|p| p.id == 20));
    assert!(
        stores[3].region(RegionId(2)).is_none(),
        "no peer of region 2 there"
    );
}

/// Stores 1-3 of region 1, store 3's replica removed: it applies its removal and crashes
/// at once, before its peer resets its log, keeping every write it made (its region state
/// is checked at that instant). Returns the stores still running and the leader's index
/// among them; store 3 is down, its engines in `nodes[2]`.
fn crash_as_the_removal_applies(
    net: &InProcessNetwork,
    nodes: &mut [Node],
    before: impl FnOnce(&mut [Store], usize),
) -> (Vec<Store>, usize) {
    use flotilla::proto::storagepb::PeerState;
    use flotilla::storage::region_meta::{apply_state, region_state};
    let mut stores = stepped_stores(net, nodes, test_config);
    let l = elect_among(&mut stores, &[0, 1], 0);
    before(&mut stores, l);
    // Store 3 catches up.
    run_rounds(&mut stores, 3);
    let region = stores[l].region(FIRST_REGION).unwrap();
    let third = *region.peers.iter().find(|p| p.store_id == 3).unwrap();
    let mut removed = stores[l].change_peers(
        FIRST_REGION,
        region.epoch.unwrap(),
        vec![PeerChange::Remove(third)],
    );
    // Stores 1 and 2 commit and apply it; the leader's last messages to store 3 carry the
    // entry and its commit. Store 3 then takes one step at a time (no answer from the
    // leader comes in between), and the moment its KV engine has applied the change, its
    // region state must already say so, and it crashes, every write it made kept.
    settle(&mut stores, &[0, 1], SnapshotSteps::Run);
    answer_now(&mut removed);
    let mut status = stores[l].region_status(FIRST_REGION);
    settle(&mut stores, &[l], SnapshotSteps::Run);
    let removal = answer_now(&mut status).applied_index;
    let kv3 = nodes[2].kv.clone();
    let state_here = || region_state(kv3.as_ref(), FIRST_REGION).unwrap().unwrap();
    let applied_here = || {
        apply_state(kv3.as_ref(), FIRST_REGION)
            .unwrap()
            .unwrap()
            .applied_index
    };
    let mut crashed = false;
    for step in 0..60 {
        let s = &mut stores[2];
        match step % 3 {
            0 => drop(s.step_raft()),
            1 => drop(s.step_wal()),
            _ => drop(s.step_apply()),
        }
        if applied_here() >= removal {
            let state = state_here();
            assert_eq!(
                state.state,
                PeerState::Tombstone as i32,
                "in the same batch"
            );
            assert!(!state.region.unwrap().peers.iter().any(|p| p.store_id == 3));
            crashed = true;
            break;
        }
    }
    assert!(crashed, "store 3 never applied its removal");
    nodes[2].store = stores.pop();
    nodes[2].crash_keeping(usize::MAX, usize::MAX);
    assert_eq!(state_here().state, PeerState::Tombstone as i32);
    (stores, l)
}

/// A replica applying its own removal wrote the region without a peer on its store,
/// as a normal region; a crash before the peer destroyed it left a store that would not
/// open ("region 1 has no peer on store 3"). The removal now makes the replica a tombstone
/// in the batch that applies it.
#[test]
fn a_crash_right_after_a_replica_applies_its_removal_leaves_a_store_that_opens() {
    let net = InProcessNetwork::new(1);
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    crash_as_the_removal_applies(&net, &mut nodes, |_, _| {});
    let reopened = Store::open(
        test_config(StoreId(3)),
        engines(&nodes[2]),
        Arc::new(net.clone()),
        RunMode::Stepped,
    )
    .expect("the store opens");
    assert!(reopened.region(FIRST_REGION).is_none());
}

/// Found by the simulator (seed 25,028): after a crash between a replica applying its
/// removal (a tombstone) and its peer's log reset, the old log stayed; when the region
/// re-added the store under a new peer id, the new empty peer took that log for its own
/// (a commit index it never applied, entries compacted away below) and the store stopped
/// on its first Ready ("requested index is compacted"). The store now finishes such a
/// destroy when it opens: the log is reset (term and vote kept) and the data no region
/// holds is cleared.
#[test]
fn a_replica_re_added_after_a_crash_interrupted_its_removal_starts_from_no_log() {
    use flotilla::storage::kv::{Keyspace, KvRead};
    let net = InProcessNetwork::new(1);
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, l) = crash_as_the_removal_applies(&net, &mut nodes, |stores, l| {
        let epoch = stores[l].region(FIRST_REGION).unwrap().epoch.unwrap();
        for i in 0..3 {
            let mut written = stores[l].propose(FIRST_REGION, epoch, put(&format!("k{i}"), "v"));
            run_rounds(stores, 2);
            answer_now(&mut written);
        }
    });
    let before = nodes[2].log.local_state(FIRST_REGION).unwrap().unwrap();
    assert!(before.last_index > 0, "the crash kept the old log");
    assert!(before.hard_state.unwrap().commit > 0);
    let data_here = |node: &Node| {
        node.kv
            .scan(Keyspace::Data, b"", None, false)
            .map(|pair| pair.unwrap().0)
            .collect::<Vec<_>>()
    };
    assert_eq!(data_here(&nodes[2]).len(), 3, "the crash kept the data");

    stores.push(open_empty(&net, &nodes[2], StoreId(3)));
    let after = nodes[2].log.local_state(FIRST_REGION).unwrap().unwrap();
    assert_eq!(
        (
            after.last_index,
            after.last_term,
            after.hard_state.unwrap().commit
        ),
        (0, 0, 0),
        "the log is reset"
    );
    assert_eq!(
        after.hard_state.unwrap().term,
        before.hard_state.unwrap().term
    );
    assert_eq!(
        after.hard_state.unwrap().vote,
        before.hard_state.unwrap().vote
    );
    let span = nodes[2].log.span(FIRST_REGION);
    assert!(span.and_then(|s| s.entries()).is_none(), "{span:?}");
    assert!(data_here(&nodes[2]).is_empty(), "the data is cleared");

    // More writes, then the region takes store 3 back under a new peer id: its empty peer
    // is filled by a snapshot and serves.
    let epoch = stores[l].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut written = stores[l].propose(FIRST_REGION, epoch, put("k3", "v"));
    run_rounds(&mut stores, 2);
    answer_now(&mut written);
    let learner = Peer {
        id: 50,
        store_id: 3,
        role: PeerRole::Learner as i32,
    };
    let epoch = stores[l].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut added =
        stores[l].change_peers(FIRST_REGION, epoch, vec![PeerChange::AddLearner(learner)]);
    run_rounds(&mut stores, 20);
    answer_now(&mut added);
    assert!(stores[2].failure().is_none(), "{:?}", stores[2].failure());
    let here = stores[2].region(FIRST_REGION).expect("store 3 filled");
    assert!(here.peers.iter().any(|p| p.id == 50));
    assert_eq!(data_here(&nodes[2]).len(), 4);
}

/// A crash between a destroyed peer's log reset and its tombstone left a normal region
/// whose KV engine applied entries its log no longer holds; the store refused to open
/// ("applied index 9 is beyond the last log index 8"). Its log now starts after what it
/// applied, the apply state's truncation point moved there first.
#[test]
fn a_log_reset_before_its_tombstone_leaves_a_region_that_starts_after_what_it_applied() {
    use flotilla::storage::region_meta::apply_state;
    let node = Node::new();
    let applied = {
        let mut store = lone_stepped_leader(&node);
        let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
        for i in 0..3 {
            let mut written = store.propose(FIRST_REGION, epoch, put(&format!("k{i}"), "v"));
            store.run_until_idle();
            answer_now(&mut written);
        }
        store.shutdown();
        apply_state(node.kv.as_ref(), FIRST_REGION)
            .unwrap()
            .unwrap()
    };
    assert!(applied.applied_index > applied.truncated_index);
    // What a destroy writes first: the log dropped, the hard state kept.
    let kept = node.log.local_state(FIRST_REGION).unwrap().unwrap();
    let mut batch = LogWriteBatch::default();
    batch.reset(FIRST_REGION);
    batch.put_state(
        FIRST_REGION,
        &RaftLocalState {
            hard_state: Some(HardState {
                commit: 0,
                ..kept.hard_state.unwrap()
            }),
            last_index: 0,
            last_term: 0,
        },
    );
    node.log.write(&mut batch, SyncMode::Sync).unwrap();

    let mut store = open_stepped(&node, test_config(StoreId(1)));
    let now = apply_state(node.kv.as_ref(), FIRST_REGION)
        .unwrap()
        .unwrap();
    assert_eq!(now.truncated_index, applied.applied_index);
    assert_eq!(now.applied_index, applied.applied_index);
    let local = node.log.local_state(FIRST_REGION).unwrap().unwrap();
    assert_eq!(local.last_index, applied.applied_index);
    assert_eq!(
        local.hard_state.unwrap().vote,
        kept.hard_state.unwrap().vote
    );
    elect_stepped(&mut store);
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let key = Bytes::from_static(b"k2");
    let mut read = store.read(FIRST_REGION, epoch, ReadRequest::Get { key });
    store.run_until_idle();
    assert_eq!(
        answer_now(&mut read),
        ReadResponse::Value(Some(Bytes::from_static(b"v")))
    );
}

/// The store among `candidates` leading region 1 once they are ticked, with a term above
/// `above`.
fn elect_among(stores: &mut [Store], candidates: &[usize], above: u64) -> usize {
    for _ in 0..300 {
        for &i in candidates {
            stores[i].tick();
        }
        settle(stores, candidates, SnapshotSteps::Run);
        for &i in candidates {
            let mut status = stores[i].region_status(FIRST_REGION);
            settle(stores, &[i], SnapshotSteps::Run);
            let status = answer_now(&mut status);
            if status.role == flotilla::raft::Role::Leader && status.term > above {
                return i;
            }
        }
    }
    panic!("no leader among {candidates:?}");
}

/// A leader proposes a write and is cut off once its followers have the entry; one of
/// them is elected and commits it, and compacts its log past it. Healed, the deposed
/// leader catches up by snapshot. The snapshot does not tell whether the entry at the
/// write's index was the write, so the write's outcome is unknown — it drops unanswered.
/// It was answered `StaleCommand` (not applied) by the first entry after the snapshot,
/// though the new leader had applied it (found reading the code; a client retrying on
/// that answer writes twice).
#[test]
fn a_deposed_leaders_proposal_a_snapshot_covers_is_left_unknown() {
    use flotilla::region::{DroppedReason, RegionError};
    use flotilla::storage::log_gc::GcPolicy;
    use flotilla::store::Fault;
    use std::collections::HashSet;
    let net = InProcessNetwork::new(1);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, |s| {
        let mut cfg = test_config(s);
        cfg.log_gc = GcPolicy {
            max_follower_lag: 10,
            min_entries: 5,
        };
        cfg
    });
    let all = [0, 1, 2];
    let old = elect_among(&mut stores, &all, 0);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let (term, write_index) = {
        let mut status = stores[old].region_status(FIRST_REGION);
        settle(&mut stores, &[old], SnapshotSteps::Run);
        let status = answer_now(&mut status);
        // The write's entry follows the term's first one, applied by now.
        (status.term, status.applied_index + 1)
    };

    // The write reaches the followers' mailboxes; then the old leader is cut off.
    let epoch = stores[old].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut write = stores[old].propose(FIRST_REGION, epoch, put("w", "1"));
    settle(&mut stores, &[old], SnapshotSteps::Run);
    let alone: HashSet<StoreId> = [StoreId(old as u64 + 1)].into();
    let rest: HashSet<StoreId> = others.iter().map(|&i| StoreId(i as u64 + 1)).collect();
    let cut = net.add_fault(Fault::Partition(vec![alone, rest]));
    settle(&mut stores, &others, SnapshotSteps::Run);

    // A new leader commits it (with its own entries after it) and compacts past it.
    let new = elect_among(&mut stores, &others, term);
    let epoch = stores[new].region(FIRST_REGION).unwrap().epoch.unwrap();
    for i in 0..30 {
        let mut more = stores[new].propose(FIRST_REGION, epoch, put(&format!("k{i}"), "v"));
        settle(&mut stores, &others, SnapshotSteps::Run);
        answer_now(&mut more);
    }
    let mut got = stores[new].read(
        FIRST_REGION,
        epoch,
        ReadRequest::Get {
            key: Bytes::from("w"),
        },
    );
    settle(&mut stores, &others, SnapshotSteps::Run);
    assert_eq!(
        answer_now(&mut got),
        ReadResponse::Value(Some(Bytes::from("1"))),
        "the new leader applied the write"
    );
    for &i in &others {
        stores[i].log_gc();
    }
    settle(&mut stores, &others, SnapshotSteps::Run);
    let mut status = stores[new].region_status(FIRST_REGION);
    settle(&mut stores, &[new], SnapshotSteps::Run);
    assert!(
        answer_now(&mut status).first_index > write_index + 5,
        "compacted past the write"
    );
    assert!(
        write.try_take().is_none(),
        "the cut-off leader cannot answer it"
    );

    // Healed: the old leader steps down, takes a snapshot and applies what follows it.
    net.remove_fault(cut);
    let mut outcome = None;
    for _ in 0..100 {
        for s in &stores {
            s.tick();
        }
        settle(&mut stores, &all, SnapshotSteps::Run);
        outcome = outcome.or_else(|| write.try_take());
        let mut status = stores[old].region_status(FIRST_REGION);
        settle(&mut stores, &[old], SnapshotSteps::Run);
        if answer_now(&mut status).first_index > write_index + 5 {
            break;
        }
    }
    let mut after = stores[new].propose(FIRST_REGION, epoch, put("after", "1"));
    for _ in 0..20 {
        settle(&mut stores, &all, SnapshotSteps::Run);
        for s in &stores {
            s.tick();
        }
    }
    answer_now(&mut after);
    match outcome.or_else(|| write.try_take()) {
        Some(Err(RegionError::ProposalDropped {
            reason: DroppedReason::Unanswered,
            ..
        })) => {}
        other => panic!("the write's outcome is unknown, not {other:?}"),
    }
    for s in &stores {
        assert!(s.failure().is_none(), "{:?}", s.failure());
    }
}
