//! The WAL writer: many regions' write tasks merged into one log write and at most one
//! fsync; held messages sent after the write, batched per store; every region told what is
//! durable; a failed write stops the store and acknowledges nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam::channel::{self, Sender};
use parking_lot::Mutex;

use flotilla::proto::metapb::{Peer, Region, RegionEpoch};
use flotilla::proto::raftpb::{ConfState, Entry, HardState, Message, MessageType};
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::proto::transportpb::RaftMessageBatch;
use flotilla::raft::LogStorage;
use flotilla::raft::StorageError;
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{LogError, LogSpan, RaftLogStore, RegionLog};
use flotilla::store::{
    FailStop, HeldMessages, LogStart, Persisted, Transport, TransportError, WalWriter,
    WalWriterConfig, WriteNotifier, WriteOutcome, WriteTask,
};
use flotilla::testkit::hooked_log::{HookedLog, WriteHook};
use flotilla::{PeerId, RegionId, StoreId};

/// A log that counts writes and fsyncs, can be told to fail, and notes whether any
/// message had left before a write.
type CountingLog = HookedLog<Counting>;

#[derive(Default)]
struct Counting {
    writes: AtomicUsize,
    syncs: AtomicUsize,
    fail: AtomicBool,
    wire: Mutex<Option<Arc<Wire>>>,
    sent_before_a_write: AtomicBool,
}

impl WriteHook for Counting {
    fn before_write(&self, sync: SyncMode) -> Result<(), LogError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(LogError::Engine(raft_engine::Error::Io(
                std::io::Error::other("injected write failure"),
            )));
        }
        if let Some(wire) = &*self.wire.lock()
            && !wire.sent.lock().is_empty()
        {
            self.sent_before_a_write.store(true, Ordering::SeqCst);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        if sync == SyncMode::Sync {
            self.syncs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    Persisted(RegionId, u64, Option<(u64, u64)>),
    Unreachable(RegionId, PeerId),
}

#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<Notice>>>);

impl WriteNotifier for Notices {
    fn persisted(&self, region: RegionId, p: Persisted) {
        assert_eq!(
            p.retired_snapshot, None,
            "no snapshot offered in these tests"
        );
        self.0.lock().push(Notice::Persisted(region, p.id, p.up_to));
    }
    fn unreachable(&self, region: RegionId, to: PeerId) {
        self.0.lock().push(Notice::Unreachable(region, to));
    }
}

#[derive(Default)]
struct Wire {
    sent: Mutex<Vec<RaftMessageBatch>>,
    down: Mutex<Vec<u64>>,
}

impl Transport for Wire {
    fn send(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
        if self.down.lock().contains(&batch.to_store) {
            return Err(TransportError::Unreachable(StoreId(batch.to_store)));
        }
        self.sent.lock().push(batch);
        Ok(())
    }

    fn send_snapshot(
        &self,
        m: flotilla::proto::transportpb::RaftMessage,
        _: &std::path::Path,
    ) -> Result<(), TransportError> {
        let store = StoreId(m.to_peer.map_or(0, |p| p.store_id));
        Err(TransportError::Unreachable(store))
    }
}

struct Fixture {
    log: Arc<CountingLog>,
    notices: Notices,
    wire: Arc<Wire>,
    fail_stop: FailStop,
    tasks: Option<Sender<WriteTask>>,
    writer: WalWriter<Notices>,
    region_logs: Vec<Arc<RegionLog>>,
}

impl Fixture {
    fn new(regions: u64, config: WalWriterConfig) -> Self {
        let log = Arc::new(CountingLog::default());
        let notices = Notices::default();
        let wire = Arc::new(Wire::default());
        *log.wire.lock() = Some(wire.clone());
        let fail_stop = FailStop::new();
        let (tx, rx) = channel::unbounded();
        let writer = WalWriter::new(
            StoreId(1),
            log.clone(),
            rx,
            notices.clone(),
            wire.clone(),
            fail_stop.clone(),
            config,
        );
        let region_logs = (1..=regions)
            .map(|r| {
                Arc::new(RegionLog::new(
                    RegionId(r),
                    log.clone(),
                    RaftLocalState::default(),
                    (0, 0),
                    ConfState {
                        voters: vec![r * 10 + 1],
                        ..Default::default()
                    },
                    1 << 20,
                ))
            })
            .collect();
        Fixture {
            log,
            notices,
            wire,
            fail_stop,
            tasks: Some(tx),
            writer,
            region_logs,
        }
    }

    fn region_log(&self, region: u64) -> Arc<RegionLog> {
        self.region_logs[region as usize - 1].clone()
    }

    /// Region `region`'s entries `first..=last` at term 1, with the matching state.
    fn append(&self, region: u64, first: u64, last: u64, sync: SyncMode, id: u64) -> WriteTask {
        let entries: Vec<Entry> = (first..=last)
            .map(|index| Entry {
                term: 1,
                index,
                data: vec![region as u8; 100].into(),
                ..Default::default()
            })
            .collect();
        WriteTask {
            log: self.region_log(region),
            start: LogStart::Continue,
            entries,
            state: Some(RaftLocalState {
                hard_state: Some(HardState {
                    term: 1,
                    vote: region * 10 + 1,
                    commit: 0,
                }),
                last_index: last,
                last_term: 0,
            }),
            sync,
            persisted: Some((last, 1)),
            held: None,
            id,
            compact_to: None,
            charge: None,
        }
    }

    fn send(&self, task: WriteTask) {
        self.tasks.as_ref().unwrap().send(task).unwrap();
    }

    fn notices(&self) -> Vec<Notice> {
        self.notices.0.lock().clone()
    }
}

fn region_meta(id: u64) -> Region {
    Region {
        id,
        start_key: vec![id as u8],
        end_key: vec![id as u8 + 1],
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: Vec::new(),
    }
}

fn peer(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        ..Default::default()
    }
}

fn ack(from: u64, to: u64, index: u64) -> Message {
    Message {
        msg_type: MessageType::MsgAppendResponse as i32,
        from,
        to,
        term: 1,
        index,
        ..Default::default()
    }
}

/// Region `r`'s peer on store 1 (id r*10+2) acknowledging index 1..=`index` to its peers
/// `(suffix, store)` (ids r*10+suffix).
fn held_acks(r: u64, index: u64, to: &[(u64, u64)]) -> HeldMessages {
    HeldMessages {
        region: Arc::new(region_meta(r)),
        from: peer(r * 10 + 2, 1),
        messages: to
            .iter()
            .map(|&(suffix, store)| {
                let id = r * 10 + suffix;
                (peer(id, store), ack(r * 10 + 2, id, index))
            })
            .collect(),
    }
}

const NOW: Duration = Duration::ZERO;

#[test]
fn a_hundred_regions_tasks_become_one_write_and_one_fsync() {
    let mut f = Fixture::new(100, WalWriterConfig::default());
    for r in 1..=100 {
        let sync = if r % 2 == 0 {
            SyncMode::Sync
        } else {
            SyncMode::NoSync
        };
        f.send(f.append(r, 1, 3, sync, r + 1000));
    }
    let WriteOutcome::Written(stats) = f.writer.write_once(NOW) else {
        panic!("no write");
    };
    assert_eq!(
        (stats.tasks, stats.regions, stats.entries, stats.synced),
        (100, 100, 300, true)
    );
    assert!(stats.bytes > 0);
    assert_eq!(f.log.writes.load(Ordering::SeqCst), 1);
    assert_eq!(f.log.syncs.load(Ordering::SeqCst), 1);
    let expected: Vec<Notice> = (1..=100)
        .map(|r| Notice::Persisted(RegionId(r), r + 1000, Some((3, 1))))
        .collect();
    assert_eq!(f.notices(), expected);
    for r in 1..=100 {
        assert_eq!(f.log.span(RegionId(r)), Some(LogSpan { first: 1, last: 3 }));
        // The region's log serves what was written.
        let log = f.region_log(r);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.entries(1, 4, u64::MAX).unwrap().len(), 3);
    }
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Idle);
}

/// A task's charge counts its bytes against the store's bound on unwritten entries while
/// the task is queued or being written, and is given back once the writer is done — or
/// once a failed write dropped it.
#[test]
fn a_tasks_charge_lasts_until_the_writer_is_done_with_it() {
    let gauge = std::sync::Arc::new(flotilla::store::Gauge::default());
    let mut f = Fixture::new(2, WalWriterConfig::default());
    for r in 1..=2 {
        let mut task = f.append(r, 1, 3, SyncMode::Sync, r);
        task.charge = Some(flotilla::store::Charge::new(&gauge, 300));
        f.send(task);
    }
    assert_eq!(gauge.bytes(), 600, "queued tasks count");
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert_eq!(gauge.bytes(), 0, "written tasks no longer count");
    f.log.fail.store(true, Ordering::SeqCst);
    let mut task = f.append(1, 4, 4, SyncMode::Sync, 3);
    task.charge = Some(flotilla::store::Charge::new(&gauge, 100));
    f.send(task);
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Failed);
    assert_eq!(gauge.bytes(), 0, "a failed write releases its tasks too");
}

#[test]
fn a_write_nobody_needs_synced_is_not_fsynced() {
    let mut f = Fixture::new(2, WalWriterConfig::default());
    f.send(f.append(1, 1, 1, SyncMode::NoSync, 1));
    f.send(f.append(2, 1, 1, SyncMode::NoSync, 2));
    let WriteOutcome::Written(stats) = f.writer.write_once(NOW) else {
        panic!("no write");
    };
    assert!(!stats.synced);
    assert_eq!(f.log.syncs.load(Ordering::SeqCst), 0);
    assert_eq!(f.log.writes.load(Ordering::SeqCst), 1);
}

#[test]
fn only_writes_a_region_acts_on_are_told_to_it() {
    let mut f = Fixture::new(4, WalWriterConfig::default());
    for r in 1..=4 {
        f.send(f.append(r, 1, 3, SyncMode::Sync, 1));
    }
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    f.notices.0.lock().clear();
    let state = |commit| {
        Some(RaftLocalState {
            hard_state: Some(HardState {
                term: 1,
                vote: 0,
                commit,
            }),
            last_index: 3,
            last_term: 1,
        })
    };
    // A new commit index alone, with an acknowledgement for another store: nothing for
    // the region to do once it is written; the message still leaves.
    f.send(WriteTask {
        state: state(3),
        held: Some(held_acks(1, 3, &[(3, 3)])),
        ..WriteTask::new(f.region_log(1), 2)
    });
    // A compaction alone.
    f.send(WriteTask {
        compact_to: Some(2),
        ..WriteTask::new(f.region_log(2), 2)
    });
    // A state write holding a message to the region's own peer (a candidate's vote).
    f.send(WriteTask {
        state: state(3),
        held: Some(held_acks(3, 3, &[(2, 1)])),
        ..WriteTask::new(f.region_log(3), 2)
    });
    // A log reset (a destroyed replica's, waited on before its tombstone is written).
    f.send(WriteTask {
        start: LogStart::Reset { index: 0, term: 0 },
        state: state(0),
        sync: SyncMode::Sync,
        ..WriteTask::new(f.region_log(4), 2)
    });
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert_eq!(
        f.notices(),
        vec![
            Notice::Persisted(RegionId(3), 2, None),
            Notice::Persisted(RegionId(4), 2, None),
        ]
    );
    let sent = f.wire.sent.lock();
    assert!(
        sent.iter()
            .any(|b| b.to_store == 3 && b.messages.iter().any(|m| m.region_id == 1)),
        "the untold task's message to store 3 was sent: {sent:?}"
    );
}

#[test]
fn held_messages_leave_after_the_write_one_batch_per_store() {
    let mut f = Fixture::new(50, WalWriterConfig::default());
    for r in 1..=50 {
        let mut task = f.append(r, 1, 2, SyncMode::Sync, r);
        task.held = Some(held_acks(r, 2, &[(1, 2), (3, 3)]));
        f.send(task);
    }
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert!(!f.log.sent_before_a_write.load(Ordering::SeqCst));
    // A later write finds the messages of the first one sent.
    f.send(f.append(1, 3, 3, SyncMode::Sync, 99));
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert!(f.log.sent_before_a_write.load(Ordering::SeqCst));
    let sent = f.wire.sent.lock();
    assert_eq!(sent.len(), 2, "one batch per destination store");
    for batch in sent.iter() {
        assert_eq!(batch.from_store, 1);
        assert_eq!(batch.messages.len(), 50);
        let regions: Vec<u64> = batch.messages.iter().map(|m| m.region_id).collect();
        assert_eq!(regions, (1..=50).collect::<Vec<_>>());
    }
}

#[test]
fn an_unreachable_store_is_reported_for_each_region_that_wrote_to_it() {
    let mut f = Fixture::new(2, WalWriterConfig::default());
    f.wire.down.lock().push(3);
    for r in 1..=2 {
        let mut task = f.append(r, 1, 1, SyncMode::Sync, r);
        task.held = Some(held_acks(r, 1, &[(3, 3)]));
        f.send(task);
    }
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    let notices = f.notices();
    assert!(notices.contains(&Notice::Unreachable(RegionId(1), PeerId(13))));
    assert!(notices.contains(&Notice::Unreachable(RegionId(2), PeerId(23))));
    assert_eq!(
        notices
            .iter()
            .filter(|n| matches!(n, Notice::Persisted(..)))
            .count(),
        2,
        "the write itself succeeded"
    );
}

#[test]
fn a_failed_write_stops_the_store_and_acknowledges_nothing() {
    let mut f = Fixture::new(3, WalWriterConfig::default());
    f.log.fail.store(true, Ordering::SeqCst);
    for r in 1..=3 {
        let mut task = f.append(r, 1, 1, SyncMode::Sync, r);
        task.held = Some(held_acks(r, 1, &[(1, 2)]));
        f.send(task);
    }
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Failed);
    assert!(f.fail_stop.is_tripped());
    assert!(
        f.fail_stop
            .reason()
            .unwrap()
            .contains("injected write failure"),
        "{:?}",
        f.fail_stop.reason()
    );
    assert!(f.notices().is_empty(), "nothing acknowledged");
    assert!(f.wire.sent.lock().is_empty(), "no held message sent");
    assert_eq!(
        f.region_log(1).last_index(),
        0,
        "the region's log did not move"
    );
    // The disk coming back does not restart the writer: the store has stopped.
    f.log.fail.store(false, Ordering::SeqCst);
    f.send(f.append(1, 1, 1, SyncMode::Sync, 9));
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Failed);
    assert_eq!(f.log.writes.load(Ordering::SeqCst), 0);
    assert!(f.notices().is_empty());
}

#[test]
fn a_refused_batch_is_fail_stop_too() {
    let mut f = Fixture::new(1, WalWriterConfig::default());
    f.send(f.append(1, 1, 3, SyncMode::Sync, 1));
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    f.notices.0.lock().clear();
    // A hole: entries 5..=5 after 3.
    f.send(f.append(1, 5, 5, SyncMode::Sync, 2));
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Failed);
    assert!(f.fail_stop.is_tripped());
    assert!(f.notices().is_empty());
}

#[test]
fn the_byte_bound_splits_writes_and_keeps_each_regions_order() {
    // Each task holds 3 entries of about 100 bytes: two fit under 700 bytes, three do not.
    let mut f = Fixture::new(
        2,
        WalWriterConfig {
            max_batch_bytes: 700,
        },
    );
    f.send(f.append(1, 1, 3, SyncMode::Sync, 1));
    f.send(f.append(2, 1, 3, SyncMode::Sync, 2));
    f.send(f.append(1, 4, 6, SyncMode::Sync, 3));
    f.send(f.append(2, 4, 6, SyncMode::Sync, 4));
    f.send(f.append(1, 7, 9, SyncMode::Sync, 5));
    let mut writes = Vec::new();
    while let WriteOutcome::Written(stats) = f.writer.write_once(NOW) {
        writes.push(stats.tasks);
    }
    assert_eq!(writes, vec![2, 2, 1]);
    let ids: Vec<u64> = f
        .notices()
        .iter()
        .map(|n| match n {
            Notice::Persisted(_, id, _) => *id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(f.log.span(RegionId(1)), Some(LogSpan { first: 1, last: 9 }));
    assert_eq!(f.log.span(RegionId(2)), Some(LogSpan { first: 1, last: 6 }));
    assert_eq!(f.log.writes.load(Ordering::SeqCst), 3);
}

#[test]
fn two_tasks_of_one_region_in_one_write_apply_in_order() {
    let mut f = Fixture::new(1, WalWriterConfig::default());
    f.send(f.append(1, 1, 5, SyncMode::Sync, 1));
    // The next round overwrote from 4 (a new leader's entries) and went on to 6.
    let mut second = f.append(1, 4, 6, SyncMode::Sync, 2);
    for e in &mut second.entries {
        e.term = 2;
    }
    second.persisted = Some((6, 2));
    f.send(second);
    let WriteOutcome::Written(stats) = f.writer.write_once(NOW) else {
        panic!("no write");
    };
    assert_eq!((stats.tasks, stats.regions), (2, 1));
    let terms: Vec<u64> = (1..=6)
        .map(|i| f.log.entry(RegionId(1), i).unwrap().unwrap().term)
        .collect();
    assert_eq!(terms, vec![1, 1, 1, 2, 2, 2]);
    assert_eq!(f.region_log(1).term(5).unwrap(), 2);
}

#[test]
fn a_reset_task_replaces_the_log() {
    let mut f = Fixture::new(1, WalWriterConfig::default());
    f.send(f.append(1, 1, 5, SyncMode::Sync, 1));
    f.writer.write_once(NOW);
    // A snapshot at 10 installed: the log starts over, empty, after index 10.
    f.send(WriteTask {
        log: f.region_log(1),
        start: LogStart::Reset { index: 10, term: 3 },
        entries: Vec::new(),
        state: Some(RaftLocalState {
            hard_state: Some(HardState {
                term: 3,
                vote: 0,
                commit: 10,
            }),
            last_index: 10,
            last_term: 0,
        }),
        sync: SyncMode::Sync,
        persisted: Some((10, 3)),
        held: None,
        id: 2,
        compact_to: None,
        charge: None,
    });
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert_eq!(
        f.log.span(RegionId(1)),
        Some(LogSpan {
            first: 11,
            last: 10
        })
    );
    assert_eq!(f.log.entry(RegionId(1), 3).unwrap(), None);
    // The region's log restarts after the snapshot too: the old entries are gone from its
    // cache, and the snapshot's term answers for its index.
    let log = f.region_log(1);
    assert_eq!((log.first_index(), log.last_index()), (11, 10));
    assert_eq!(log.term(10).unwrap(), 3);
    assert_eq!(log.term(3), Err(StorageError::Compacted));
}

#[test]
fn the_writer_reports_closed_once_every_sender_is_gone() {
    let mut f = Fixture::new(1, WalWriterConfig::default());
    f.send(f.append(1, 1, 1, SyncMode::Sync, 1));
    f.tasks = None;
    assert!(matches!(f.writer.write_once(NOW), WriteOutcome::Written(_)));
    assert_eq!(f.writer.write_once(NOW), WriteOutcome::Closed);
    assert_eq!(
        f.writer.write_once(Duration::from_millis(10)),
        WriteOutcome::Closed
    );
}

/// Over raft-engine on disk: a thousand regions' tasks become one synced write, and a
/// reopened log holds every region's entries and state.
#[test]
fn a_thousand_regions_written_together_survive_a_reopen() {
    use flotilla::storage::raft_log::{RaftLogConfig, RaftLogEngine};
    const REGIONS: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Arc::new(RaftLogEngine::open(&RaftLogConfig::new(dir.path())).unwrap());
        let (tx, rx) = channel::unbounded();
        let mut writer = WalWriter::new(
            StoreId(1),
            engine.clone(),
            rx,
            Notices::default(),
            Arc::new(Wire::default()),
            FailStop::new(),
            WalWriterConfig::default(),
        );
        for r in 1..=REGIONS {
            let log = Arc::new(RegionLog::new(
                RegionId(r),
                engine.clone(),
                RaftLocalState::default(),
                (0, 0),
                ConfState::default(),
                1 << 20,
            ));
            let entries: Vec<Entry> = (1..=2)
                .map(|index| Entry {
                    term: 1,
                    index,
                    data: vec![r as u8; 64].into(),
                    ..Default::default()
                })
                .collect();
            tx.send(WriteTask {
                log,
                start: LogStart::Continue,
                entries,
                state: Some(RaftLocalState {
                    hard_state: Some(HardState {
                        term: 1,
                        vote: 1,
                        commit: 1,
                    }),
                    last_index: 2,
                    last_term: 0,
                }),
                sync: SyncMode::Sync,
                persisted: Some((2, 1)),
                held: None,
                id: r,
                compact_to: None,
                charge: None,
            })
            .unwrap();
        }
        raft_engine::take_perf_context();
        let WriteOutcome::Written(stats) = writer.write_once(NOW) else {
            panic!("no write");
        };
        assert_eq!(
            (stats.tasks, stats.regions, stats.entries),
            (1000, 1000, 2000)
        );
        assert!(stats.synced);
        assert!(raft_engine::take_perf_context().log_sync_duration > Duration::ZERO);
    }
    let engine = RaftLogEngine::open(&RaftLogConfig::new(dir.path())).unwrap();
    let recovered = engine.recover().unwrap();
    assert_eq!(recovered.len(), REGIONS as usize);
    for (region, state) in recovered {
        assert_eq!(state.last_index, 2);
        assert_eq!(engine.span(region), Some(LogSpan { first: 1, last: 2 }));
        let e = engine.entry(region, 2).unwrap().unwrap();
        assert_eq!(e.data.as_ref(), &[region.get() as u8; 64][..]);
    }
}
