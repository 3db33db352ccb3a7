//! Apply is exactly-once across crashes, even for the one command written in several
//! batches: a range delete. One store, one voter, stepped on the test thread; the KV
//! engine crashes keeping every possible prefix of its unsynced writes, the store
//! restarts and replays the log, and the data must be exactly what one application of
//! each command leaves.

use std::sync::Arc;

use bytes::Bytes;
use flotilla::StoreId;
use flotilla::proto::commandpb::{CompareAndSwap, Delete, DeleteRange, Op, Put, WriteCommand, op};
use flotilla::storage::kv::{Keyspace, KvEngine, KvRead};
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::store::{InProcessNetwork, RunMode, Store, WriteResponse, bootstrap_region};
use flotilla::testkit::cluster::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn op(o: op::Op) -> Op {
    Op { op: Some(o) }
}

fn open(node: &Node) -> Store {
    open_with(node, |_| {})
}

fn open_with(node: &Node, configure: impl FnOnce(&mut flotilla::store::StoreConfig)) -> Store {
    let mut cfg = test_config(StoreId(1));
    cfg.delete_range_batch_bytes = 256;
    configure(&mut cfg);
    open_stepped(node, cfg)
}

fn elect(store: &mut Store) {
    elect_stepped(store);
}

fn write(store: &mut Store, ops: Vec<Op>) {
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut r = store.propose(FIRST_REGION, epoch, WriteCommand { ops });
    store.run_until_idle();
    r.try_take().expect("answered").expect("applied");
}

/// Proposes the commands in one round, so they share one entry; returns their answers.
fn write_round(store: &mut Store, commands: Vec<Vec<Op>>) -> Vec<WriteResponse> {
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut responses: Vec<_> = commands
        .into_iter()
        .map(|ops| store.propose(FIRST_REGION, epoch, WriteCommand { ops }))
        .collect();
    store.run_until_idle();
    responses.iter_mut().map(answer_now).collect()
}

fn data(kv: &MemKvEngine) -> Vec<(Bytes, Bytes)> {
    kv.scan(Keyspace::Data, b"", None, false)
        .map(|p| p.unwrap())
        .collect()
}

/// Runs the scenario, crashing the KV engine keeping `kept` unsynced batches; returns how
/// many there were and the data after the restart.
fn run(kept: usize) -> (usize, Vec<(Bytes, Bytes)>) {
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut store = open(&node);
    elect(&mut store);
    let puts = (0..200)
        .map(|i| {
            op(op::Op::Put(Put {
                key: Bytes::from(format!("r{i:03}")),
                value: b("v"),
            }))
        })
        .collect();
    write(&mut store, puts);
    node.kv.persist().unwrap();
    // One entry of three commands, the range delete first in the third: a crash in its
    // middle resumes at its position counted over the entry's commands. Replaying the
    // first two again would not be harmless: k would end "b".
    let answers = write_round(
        &mut store,
        vec![
            vec![
                op(op::Op::Put(Put {
                    key: b("q"),
                    value: b("before"),
                })),
                op(op::Op::CompareAndSwap(CompareAndSwap {
                    key: b("k"),
                    expected: Some(b("a")),
                    new_value: Some(b("b")),
                })),
            ],
            vec![op(op::Op::CompareAndSwap(CompareAndSwap {
                key: b("k"),
                expected: None,
                new_value: Some(b("a")),
            }))],
            vec![
                op(op::Op::DeleteRange(DeleteRange {
                    start_key: b("r010"),
                    end_key: b("r190"),
                })),
                op(op::Op::CompareAndSwap(CompareAndSwap {
                    key: b("r100"),
                    expected: None,
                    new_value: Some(b("after")),
                })),
                op(op::Op::Delete(Delete { key: b("r000") })),
            ],
        ],
    );
    assert!(
        answers.iter().all(|a| a.index == answers[0].index),
        "one entry: {answers:?}"
    );
    let unsynced = node.kv.unsynced_batches();
    node.kv.cut_power();
    store.shutdown();
    node.kv.crash_keeping(kept);
    node.log.crash();
    let mut store = open(&node);
    elect(&mut store);
    store.run_until_idle();
    let after = data(&node.kv);
    store.shutdown();
    (unsynced, after)
}

#[test]
fn a_range_delete_is_applied_exactly_once_whatever_prefix_of_it_a_crash_keeps() {
    let mut expected: Vec<(Bytes, Bytes)> = vec![(b("k"), b("a")), (b("q"), b("before"))];
    expected.extend((1..10).map(|i| (Bytes::from(format!("r{i:03}")), b("v"))));
    expected.push((b("r100"), b("after")));
    expected.extend((190..200).map(|i| (Bytes::from(format!("r{i:03}")), b("v"))));
    expected.sort();
    let (unsynced, _) = run(usize::MAX);
    assert!(
        unsynced >= 4,
        "the range delete took {unsynced} batches: bound not exercised"
    );
    for kept in 0..=unsynced {
        let (_, after) = run(kept);
        assert_eq!(
            after, expected,
            "crash keeping {kept} of {unsynced} unsynced batches"
        );
    }
}

/// A KV engine whose writes fail once `broken` is set (a dying disk).
struct Failing {
    inner: MemKvEngine,
    broken: std::sync::atomic::AtomicBool,
}

impl KvRead for Failing {
    fn get(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<Bytes>, flotilla::storage::kv::KvError> {
        self.inner.get(ks, key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> flotilla::storage::kv::KvIter<'a> {
        self.inner.scan(ks, start, end, reverse)
    }
}

impl KvEngine for Failing {
    type View = <MemKvEngine as KvEngine>::View;

    fn write(
        &self,
        batch: &flotilla::storage::kv::KvWriteBatch,
    ) -> Result<(), flotilla::storage::kv::KvError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(flotilla::storage::kv::KvError::Engine(Box::new(
                std::io::Error::other("disk gone"),
            )));
        }
        self.inner.write(batch)
    }

    fn view(&self) -> Self::View {
        self.inner.view()
    }

    fn persist(&self) -> Result<(), flotilla::storage::kv::KvError> {
        self.inner.persist()
    }
}

#[test]
fn a_failed_apply_write_stops_the_store_and_answers_what_waits() {
    let kv = Arc::new(Failing {
        inner: MemKvEngine::new(),
        broken: false.into(),
    });
    let log = Arc::new(MemRaftLog::new());
    let dir = tempfile::tempdir().unwrap();
    let engines = flotilla::store::Engines::new(log, kv.clone(), dir.path());
    bootstrap_region(&engines, &first_region(1)).unwrap();
    let net = InProcessNetwork::new(1);
    let mut store = Store::open(
        test_config(StoreId(1)),
        engines,
        Arc::new(net.clone()),
        RunMode::Stepped,
    )
    .unwrap();
    net.register(StoreId(1), store.receiver());
    elect(&mut store);
    write(
        &mut store,
        vec![op(op::Op::Put(Put {
            key: b("a"),
            value: b("1"),
        }))],
    );
    kv.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
    let put = |k: &str| WriteCommand {
        ops: vec![op(op::Op::Put(Put {
            key: b(k),
            value: b("2"),
        }))],
    };
    let mut in_log = store.propose(FIRST_REGION, epoch, put("a"));
    // Steps stop once nothing is left to do: a stopped store does not spin.
    store.run_until_idle();
    assert!(
        store.failure().unwrap().contains("KV write failed"),
        "{:?}",
        store.failure()
    );
    // The write reached the log: whether it is applied somewhere is unknown.
    assert!(matches!(
        in_log.try_take(),
        Some(Err(flotilla::region::RegionError::ProposalDropped {
            reason: flotilla::region::DroppedReason::Unanswered,
            ..
        }))
    ));
    // Later requests are refused at once.
    let mut later = store.propose(FIRST_REGION, epoch, put("b"));
    assert!(matches!(
        later.try_take(),
        Some(Err(flotilla::region::RegionError::ProposalDropped {
            reason: flotilla::region::DroppedReason::StoreStopping,
            ..
        }))
    ));
    for _ in 0..10 {
        store.tick();
    }
    assert_eq!(
        store.run_until_idle(),
        0,
        "a stopped store has nothing to run"
    );
}

/// Log GC drops entries only once what they hold is durable in the KV engine: a crash
/// right after a GC round (the KV engine losing whatever was not persisted) still finds
/// every applied write, and the log starts where the apply state says.
#[test]
fn log_gc_drops_entries_only_once_what_they_hold_is_durable() {
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut store = open_with(&node, |cfg| {
        cfg.log_gc = flotilla::storage::log_gc::GcPolicy {
            max_follower_lag: 0,
            min_entries: 1,
        };
    });
    elect(&mut store);
    for i in 0..30 {
        write(
            &mut store,
            vec![op(op::Op::Put(Put {
                key: Bytes::from(format!("k{i:02}")),
                value: b("v"),
            }))],
        );
    }
    store.log_gc();
    store.run_until_idle();
    let mut status = store.region_status(FIRST_REGION);
    store.run_until_idle();
    let first = status.try_take().unwrap().unwrap().first_index;
    assert!(first > 30, "the log was compacted (first index {first})");
    // A later synced write makes the compaction durable too (the log is written in order).
    write(
        &mut store,
        vec![op(op::Op::Put(Put {
            key: b("later"),
            value: b("v"),
        }))],
    );
    node.kv.cut_power();
    store.shutdown();
    node.kv.crash();
    node.log.crash();
    let mut store = open_with(&node, |_| {});
    elect(&mut store);
    store.run_until_idle();
    let keys = data(&node.kv).len();
    assert_eq!(
        keys, 31,
        "every write survives the crash, those before the GC included"
    );
    store.shutdown();
}

/// Apply does not sync the KV engine, but a graceful shutdown does: a crash right after it
/// loses nothing, so the next open has nothing to replay.
#[test]
fn a_shutdown_makes_what_was_applied_durable() {
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut store = open(&node);
    elect(&mut store);
    write(
        &mut store,
        vec![op(op::Op::Put(Put {
            key: b("k"),
            value: b("v"),
        }))],
    );
    assert!(node.kv.unsynced_batches() > 0, "apply does not sync");
    store.shutdown();
    node.kv.crash();
    assert_eq!(data(&node.kv), [(b("k"), b("v"))]);
}

/// The regions a split creates are durable once their peers start: a crash right after
/// (the KV engine losing whatever was not persisted, the raft log keeping what it synced,
/// the new region's entries included) finds the new region's state to start from. Before,
/// the split's writes went unsynced; a store whose new region's log survived the crash but
/// whose state did not later read entries that never existed and stopped (found by the
/// whole-store simulator once another change moved its interleavings).
#[test]
fn a_split_is_durable_before_its_new_regions_start() {
    use flotilla::proto::commandpb::SplitRequest;
    use flotilla::storage::region_meta::region_state;
    let node = Node::new();
    bootstrap_region(&engines(&node), &first_region(1)).unwrap();
    let mut store = open(&node);
    elect(&mut store);
    let region = store.region(FIRST_REGION).unwrap();
    let mut split = store.split(
        FIRST_REGION,
        region.epoch.unwrap(),
        vec![SplitRequest {
            split_key: b("m"),
            new_region_id: 2,
            new_peer_ids: vec![101],
        }],
    );
    store.run_until_idle();
    answer_now(&mut split);
    let mut node = node;
    node.store = Some(store);
    node.crash_keeping(0, 0);
    let state = region_state(node.kv.as_ref(), flotilla::RegionId(2)).unwrap();
    assert!(state.is_some(), "the new region's state survives the crash");
    let first = region_state(node.kv.as_ref(), FIRST_REGION)
        .unwrap()
        .unwrap();
    assert_eq!(
        first.region.unwrap().end_key,
        b"m".to_vec(),
        "and the split region's own"
    );
}
