//! Flow control: past a bound on what a store holds in flight, proposals get
//! `ServerIsBusy` with a backoff instead of queueing without end — and once the store
//! catches up, they are taken again by themselves (no flag left stuck). One store, one
//! voter, stepped on the test thread so the test decides when the writer and apply run.

use flotilla::StoreId;
use flotilla::region::{BusyReason, RegionError};
use flotilla::store::{FlowLimits, Response, Store, WriteResponse, bootstrap_region};
use flotilla::testkit::cluster::*;

fn open(limits: FlowLimits) -> (Node, Store) {
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut cfg = test_config(StoreId(1));
    cfg.flow = limits;
    let mut store = open_stepped(&node, cfg);
    elect_stepped(&mut store);
    (node, store)
}

/// Proposes a put of `bytes` bytes and lets the raft poller take it (not the writer).
fn propose(store: &mut Store, key: &str, bytes: usize) -> Response<WriteResponse> {
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let value = vec![b'x'; bytes];
    let r = store.propose(FIRST_REGION, epoch, put(key.as_bytes(), &value));
    store.step_raft();
    r
}

fn busy(r: &mut Response<WriteResponse>) -> Option<BusyReason> {
    match r.try_take() {
        Some(Err(RegionError::ServerIsBusy { reason, backoff })) => {
            assert!(!backoff.is_zero(), "a busy answer suggests a backoff");
            Some(reason)
        }
        _ => None,
    }
}

#[test]
fn a_writer_behind_pushes_proposals_back_until_it_catches_up() {
    let (_node, mut store) = open(FlowLimits {
        wal_pending_bytes: 1024,
        ..FlowLimits::default()
    });
    let mut first = propose(&mut store, "a", 4096);
    assert!(first.try_take().is_none(), "taken, waiting for the writer");
    let mut second = propose(&mut store, "b", 10);
    assert_eq!(busy(&mut second), Some(BusyReason::WalBehind));
    store.run_until_idle();
    assert!(first.try_take().unwrap().is_ok());
    // Caught up: taken again, no flag left behind.
    let mut third = propose(&mut store, "c", 10);
    store.run_until_idle();
    assert!(third.try_take().unwrap().is_ok());
}

#[test]
fn a_region_with_too_many_uncommitted_bytes_pushes_proposals_back() {
    let (_node, mut store) = open(FlowLimits {
        region_uncommitted_bytes: 1000,
        ..FlowLimits::default()
    });
    let mut first = propose(&mut store, "a", 600);
    let mut second = propose(&mut store, "b", 600);
    assert_eq!(busy(&mut second), Some(BusyReason::RegionPendingBytes));
    store.run_until_idle();
    assert!(first.try_take().unwrap().is_ok());
    let mut third = propose(&mut store, "c", 600);
    store.run_until_idle();
    assert!(third.try_take().unwrap().is_ok());
}

#[test]
fn a_store_with_too_many_unanswered_proposal_bytes_pushes_proposals_back() {
    let (_node, mut store) = open(FlowLimits {
        store_pending_bytes: 1000,
        ..FlowLimits::default()
    });
    let mut first = propose(&mut store, "a", 600);
    let mut second = propose(&mut store, "b", 600);
    assert!(second.try_take().is_none(), "under the bound when it came");
    let mut third = propose(&mut store, "c", 10);
    assert_eq!(busy(&mut third), Some(BusyReason::StorePendingBytes));
    store.run_until_idle();
    assert!(first.try_take().unwrap().is_ok());
    assert!(second.try_take().unwrap().is_ok());
    let mut fourth = propose(&mut store, "d", 10);
    store.run_until_idle();
    assert!(fourth.try_take().unwrap().is_ok());
}

#[test]
fn a_backlog_to_apply_goes_on_round_after_round_without_a_wake() {
    use flotilla::store::batch::PollOutcome;
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut cfg = test_config(StoreId(1));
    // One committed entry per round.
    cfg.raft.max_committed_bytes_per_round = 1;
    let mut store = open_stepped(&node, cfg);
    elect_stepped(&mut store);
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    // A round's proposals share an entry: one round each makes five entries, written
    // together.
    let mut writes: Vec<_> = (0..5)
        .map(|i| {
            let w = store.propose(FIRST_REGION, epoch, put(format!("k{i}").as_bytes(), b"v"));
            store.step_raft();
            w
        })
        .collect();
    store.step_wal();
    // Nothing but the raft poller runs: the persisted entries commit, and the peer stays
    // scheduled while its core has committed entries left to hand out.
    let mut rounds = 0;
    while matches!(store.step_raft(), Some(PollOutcome::Handled(n)) if n > 0) {
        rounds += 1;
        assert!(rounds < 100, "the raft poller never goes idle");
    }
    assert!(rounds >= 5, "one entry per round: {rounds} rounds");
    while matches!(store.step_apply(), Some(PollOutcome::Handled(n)) if n > 0) {}
    for (i, w) in writes.iter_mut().enumerate() {
        assert!(
            matches!(w.try_take(), Some(Ok(_))),
            "write {i} is applied without another wake"
        );
    }
}
