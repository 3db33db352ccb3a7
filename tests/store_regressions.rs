//! Bugs the whole-store simulator found (src/testkit/store_sim), each replayed as a
//! scenario on stores stepped by the test and named after what it broke.

use bytes::Bytes;
use flotilla::StoreId;
use flotilla::proto::commandpb::{Op, Put, WriteCommand, op};
use flotilla::proto::raftpb::HardState;
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{LogWriteBatch, RaftLogStore};
use flotilla::store::bootstrap_region;
use flotilla::testkit::cluster::*;

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
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    {
        let mut store = open_stepped(&node, test_config(StoreId(1)));
        elect_stepped(&mut store);
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
