//! The store's raft log over raft-engine: batched multi-region writes, recovery, suffix
//! replacement, refused writes, and the `LogStorage` view with its cache.

use std::sync::Arc;

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::proto::raftpb::{ConfState, Entry, HardState};
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::raft::{LogStorage, MemStorage, StorageError};
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::storage::raft_log::{
    LogError, LogSpan, LogWriteBatch, RaftLogConfig, RaftLogEngine, RaftLogStore, RegionLog,
};
use flotilla::storage::{MemDurability, SyncMode};

fn ents(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            index,
            term,
            data: Bytes::from(format!("e{index}t{term}")),
            ..Default::default()
        })
        .collect()
}

/// Entries `first..=last` at term 1, each carrying `len` bytes of `fill(index)`.
fn sized_ents(first: u64, last: u64, len: usize, fill: impl Fn(u64) -> u8) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            index,
            term: 1,
            data: Bytes::from(vec![fill(index); len]),
            ..Default::default()
        })
        .collect()
}

fn state(term: u64, commit: u64, last_index: u64) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term,
            vote: 1,
            commit,
        }),
        last_index,
        last_term: 0,
    }
}

fn span(first: u64, last: u64) -> Option<LogSpan> {
    Some(LogSpan { first, last })
}

/// The first and last index of the region's entries, if it has any.
fn entry_range(log: &dyn RaftLogStore, region: u64) -> Option<(u64, u64)> {
    log.span(RegionId(region))?.entries()
}

fn open(dir: &std::path::Path) -> RaftLogEngine {
    RaftLogEngine::open(&RaftLogConfig::new(dir)).expect("open raft log")
}

#[test]
fn many_regions_in_one_batch_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let mut batch = LogWriteBatch::default();
        for region in 1..=100u64 {
            batch
                .append(RegionId(region), &ents(1, region % 7 + 1, 2))
                .unwrap();
            batch.put_state(RegionId(region), &state(2, 1, region % 7 + 1));
        }
        assert_eq!(
            (batch.region_count(), batch.entry_count()),
            (100, (1..=100u64).map(|r| r % 7 + 1).sum::<u64>() as usize)
        );
        assert!(!batch.is_empty());
        assert!(log.write(&mut batch, SyncMode::Sync).unwrap() > 0);
        assert!(batch.is_empty());
    }
    let log = open(dir.path());
    let regions = log.recover().unwrap();
    assert_eq!(regions.len(), 100);
    for (region, st) in regions {
        let last = region.get() % 7 + 1;
        assert_eq!(st, state(2, 1, last), "region {region}");
        assert_eq!(
            log.entries(region, 1, last + 1, u64::MAX).unwrap(),
            ents(1, last, 2)
        );
    }
}

fn replaces_the_suffix(log: &dyn RaftLogStore) {
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(9), &ents(1, 10, 1)).unwrap();
    batch.put_state(RegionId(9), &state(1, 0, 10));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    batch.append(RegionId(9), &ents(6, 8, 2)).unwrap();
    batch.put_state(RegionId(9), &state(2, 0, 8));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    check_replaced_suffix(log);
}

fn check_replaced_suffix(log: &dyn RaftLogStore) {
    assert_eq!(log.span(RegionId(9)), span(1, 8));
    let got = log.entries(RegionId(9), 1, 9, u64::MAX).unwrap();
    let mut want = ents(1, 5, 1);
    want.extend(ents(6, 8, 2));
    assert_eq!(got, want);
}

type BuildBatch = fn(&mut LogWriteBatch) -> Result<(), LogError>;

fn refuses_holes_and_overwrites_of_compacted_entries(log: &dyn RaftLogStore) {
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(1), &ents(1, 5, 1)).unwrap();
    batch.put_state(RegionId(1), &state(1, 0, 5));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    assert_eq!(log.compact_to(RegionId(1), 3).unwrap(), 2);
    assert_eq!(log.span(RegionId(1)), span(3, 5));

    for bad in [ents(2, 4, 2), ents(7, 8, 2)] {
        let mut batch = LogWriteBatch::default();
        batch.append(RegionId(2), &ents(1, 1, 1)).unwrap(); // another region in the same batch
        batch.put_state(RegionId(2), &state(1, 0, 1));
        batch.append(RegionId(1), &bad).unwrap();
        batch.put_state(RegionId(1), &state(2, 0, bad.last().unwrap().index));
        assert!(matches!(
            log.write(&mut batch, SyncMode::NoSync),
            Err(LogError::InvalidWrite {
                region: RegionId(1),
                ..
            })
        ));
        assert_eq!(
            log.span(RegionId(2)),
            None,
            "nothing of a refused batch is written"
        );
    }
    // Entries without a state naming their last index, or a state that names another.
    let unstated = |b: &mut LogWriteBatch| b.append(RegionId(1), &ents(6, 6, 2));
    let misstated = |b: &mut LogWriteBatch| {
        b.append(RegionId(1), &ents(6, 6, 2))?;
        b.put_state(RegionId(1), &state(2, 0, 7));
        Ok(())
    };
    for build in [unstated, misstated] {
        let mut batch = LogWriteBatch::default();
        build(&mut batch).unwrap();
        assert!(matches!(
            log.write(&mut batch, SyncMode::NoSync),
            Err(LogError::InvalidWrite {
                region: RegionId(1),
                ..
            })
        ));
        assert_eq!(log.span(RegionId(1)), span(3, 5));
    }
    // Operations earlier in the same batch count: a compaction raises the floor, an
    // append moves the end.
    let compacted_then_below = |b: &mut LogWriteBatch| {
        b.compact_to(RegionId(1), 4);
        b.append(RegionId(1), &ents(3, 3, 2))?;
        b.put_state(RegionId(1), &state(2, 0, 3));
        Ok(())
    };
    let hole_after_append = |b: &mut LogWriteBatch| {
        b.append(RegionId(1), &ents(6, 6, 2))?;
        b.append(RegionId(1), &ents(8, 8, 2))?;
        b.put_state(RegionId(1), &state(2, 0, 8));
        Ok(())
    };
    let emptied_then_hole = |b: &mut LogWriteBatch| {
        b.compact_to(RegionId(1), 6);
        b.append(RegionId(1), &ents(7, 7, 2))?;
        b.put_state(RegionId(1), &state(2, 0, 7));
        Ok(())
    };
    let compacted_past_the_end = |b: &mut LogWriteBatch| {
        b.compact_to(RegionId(1), 9);
        b.append(RegionId(1), &ents(9, 9, 2))?;
        b.put_state(RegionId(1), &state(2, 0, 9));
        Ok(())
    };
    let cases: [BuildBatch; 4] = [
        compacted_then_below,
        hole_after_append,
        emptied_then_hole,
        compacted_past_the_end,
    ];
    for build in cases {
        let mut batch = LogWriteBatch::default();
        build(&mut batch).unwrap();
        assert!(matches!(
            log.write(&mut batch, SyncMode::NoSync),
            Err(LogError::InvalidWrite {
                region: RegionId(1),
                ..
            })
        ));
        assert_eq!(log.span(RegionId(1)), span(3, 5));
    }
    let mut batch = LogWriteBatch::default();
    batch.compact_to(RegionId(1), 4);
    batch.append(RegionId(1), &ents(4, 6, 2)).unwrap();
    batch.put_state(RegionId(1), &state(2, 0, 6));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    assert_eq!(log.span(RegionId(1)), span(4, 6));

    // Not consecutive.
    let mut gap = ents(6, 7, 2);
    gap[1].index = 9;
    assert!(LogWriteBatch::default().append(RegionId(1), &gap).is_err());

    // A snapshot at 10 resets the log and appends after it.
    let mut batch = LogWriteBatch::default();
    batch.reset(RegionId(1));
    batch.put_state(RegionId(1), &state(3, 10, 12));
    batch.append(RegionId(1), &ents(11, 12, 3)).unwrap();
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(log.span(RegionId(1)), span(11, 12));
    // Compacting all of it leaves an empty log that continues after 12.
    assert_eq!(log.compact_to(RegionId(1), 13).unwrap(), 2);
    assert_eq!(log.span(RegionId(1)), span(13, 12));
    let err = log.entries(RegionId(1), 12, 13, u64::MAX).unwrap_err();
    assert!(err.to_string().contains("empty, next index 13"), "{err}");
    assert_eq!(log.entries(RegionId(1), 13, 13, u64::MAX).unwrap(), vec![]);
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(1), &ents(13, 13, 3)).unwrap();
    batch.put_state(RegionId(1), &state(3, 10, 13));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(log.span(RegionId(1)), span(13, 13));
}

/// The same operations through `RegionLog` (log store + cache) and `MemStorage` must
/// read back identically through the core's `LogStorage` trait.
fn region_log_reads_like_mem_storage(engine: Arc<dyn RaftLogStore>) {
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    // A small cache (about eight of these entries), so reads mix cached and on-disk
    // entries.
    let region = RegionLog::new(
        RegionId(5),
        engine.clone(),
        RaftLocalState::default(),
        (0, 0),
        cs.clone(),
        100,
    );
    let mem = MemStorage::new();
    mem.wl().set_conf_state(cs);

    let write = |entries: Vec<Entry>, hs: HardState| {
        let mut batch = LogWriteBatch::default();
        batch.append(RegionId(5), &entries).unwrap();
        let last = entries.last().unwrap().index;
        let local = RaftLocalState {
            hard_state: Some(hs),
            last_index: last,
            last_term: 0,
        };
        batch.put_state(RegionId(5), &local);
        engine.write(&mut batch, SyncMode::Sync).unwrap();
        region.on_written(&entries, &local);
        mem.wl().append(&entries).unwrap();
        mem.wl().set_hard_state(hs);
    };
    write(
        ents(1, 20, 1),
        HardState {
            term: 1,
            vote: 1,
            commit: 10,
        },
    );
    write(
        ents(15, 25, 2),
        HardState {
            term: 2,
            vote: 2,
            commit: 14,
        },
    );
    check_same(&region, &mem);

    engine.compact_to(RegionId(5), 8).unwrap();
    assert_eq!(region.on_truncated(7, 1), None);
    mem.wl().compact(7).unwrap();
    check_same(&region, &mem);
    assert_eq!(region.term(6), Err(StorageError::Compacted));
    assert_eq!(region.entries(7, 9, u64::MAX), Err(StorageError::Compacted));
}

/// The shared suite: the raft-engine log and the in-memory log behave the same.
/// A snapshot install resets region 20's log (the old entries beyond the snapshot go
/// too) and writes the new state and the entries after it in the same batch; region 21
/// is removed altogether.
fn resets_for_a_snapshot_and_removes_a_region(log: &dyn RaftLogStore) {
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(20), &ents(1, 30, 1)).unwrap();
    batch.put_state(RegionId(20), &state(1, 30, 30));
    batch.append(RegionId(21), &ents(1, 3, 1)).unwrap();
    batch.put_state(RegionId(21), &state(1, 3, 3));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    batch.reset(RegionId(20));
    batch.put_state(RegionId(20), &state(2, 15, 17));
    batch.append(RegionId(20), &ents(16, 17, 2)).unwrap();
    batch.reset(RegionId(21));
    batch.compact_to(RegionId(21), 2); // a compaction of a removed log does not bring it back
    log.write(&mut batch, SyncMode::Sync).unwrap();
    batch.compact_to(RegionId(21), 3);
    log.write(&mut batch, SyncMode::Sync).unwrap();
    check_reset(log);
}

fn check_reset(log: &dyn RaftLogStore) {
    assert_eq!(log.span(RegionId(20)), span(16, 17));
    assert_eq!(
        log.entries(RegionId(20), 16, 18, u64::MAX).unwrap(),
        ents(16, 17, 2)
    );
    assert_eq!(log.entry(RegionId(20), 5).unwrap(), None);
    assert_eq!(
        log.local_state(RegionId(20)).unwrap(),
        Some(state(2, 15, 17))
    );
    assert_eq!(
        (
            log.span(RegionId(21)),
            log.local_state(RegionId(21)).unwrap()
        ),
        (None, None)
    );
    let listed: Vec<RegionId> = log.recover().unwrap().into_iter().map(|(r, _)| r).collect();
    assert!(
        listed.contains(&RegionId(20)) && !listed.contains(&RegionId(21)),
        "{listed:?}"
    );
}

/// Byte limits: entries come back consecutive from `low`, within the limit (at least one),
/// and as many as fit exactly, on both logs; the raft-engine log reads in chunks, so some
/// ranges cross chunk boundaries.
fn reads_keep_the_byte_limit(log: &dyn RaftLogStore) {
    let all = ents(1, 200, 1);
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(60), &all).unwrap();
    batch.put_state(RegionId(60), &state(1, 0, 200));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    let size = |e: &[Entry]| -> u64 {
        e.iter()
            .map(|e| prost::Message::encoded_len(e) as u64)
            .sum()
    };
    for (low, n) in [(1u64, 1usize), (1, 3), (10, 60), (60, 10), (100, 101)] {
        let want = &all[low as usize - 1..low as usize - 1 + n];
        let exact = size(want);
        for max in [exact, exact + 1] {
            let got = log.entries(RegionId(60), low, 201, max).unwrap();
            assert_eq!(got.as_slice(), want, "low {low} max {max}");
        }
        let got = log.entries(RegionId(60), low, 201, exact - 1).unwrap();
        let expected = if n == 1 { want } else { &want[..n - 1] };
        assert_eq!(got.as_slice(), expected, "low {low} one byte short");
    }
}

/// Reads outside a region's log (inverted, huge, below, beyond, no log at all) are the
/// same error on both logs, never a panic or a huge allocation.
fn reads_outside_the_log_are_errors(log: &dyn RaftLogStore) {
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(40), &ents(3, 6, 1)).unwrap();
    batch.put_state(RegionId(40), &state(1, 0, 6));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(log.span(RegionId(40)), span(3, 6));
    let outside = [(5, 4), (2, 4), (3, 8), (0, u64::MAX), (3, u64::MAX), (8, 8)];
    for (low, high) in outside {
        assert!(
            matches!(
                log.entries(RegionId(40), low, high, u64::MAX),
                Err(LogError::OutOfRange {
                    region: RegionId(40),
                    ..
                })
            ),
            "entries({low}, {high})"
        );
    }
    for (low, high) in [(3, 3), (7, 7)] {
        assert_eq!(
            log.entries(RegionId(40), low, high, u64::MAX).unwrap(),
            vec![]
        );
    }
    assert_eq!(
        log.entries(RegionId(40), 3, 7, 0).unwrap(),
        ents(3, 3, 1),
        "at least one"
    );
    assert!(matches!(
        log.entries(RegionId(41), 1, 1, u64::MAX),
        Err(LogError::OutOfRange {
            region: RegionId(41),
            ..
        })
    ));
    assert_eq!(log.entry(RegionId(40), 3).unwrap(), ents(3, 3, 1).pop());
    assert_eq!(log.entry(RegionId(40), 6).unwrap(), ents(6, 6, 1).pop());
    assert_eq!(log.entry(RegionId(40), 2).unwrap(), None);
    assert_eq!(log.entry(RegionId(40), 7).unwrap(), None);
    assert_eq!(log.entry(RegionId(41), 1).unwrap(), None);
}

/// A reset later in a batch erases what the batch wrote before it, states included; and
/// indices at or beyond 2^62 (which open would refuse) are refused at write.
fn reset_after_state_and_out_of_range_indices(log: &dyn RaftLogStore) {
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(50), &ents(1, 5, 1)).unwrap();
    batch.put_state(RegionId(50), &state(1, 0, 5));
    batch.reset(RegionId(50));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(
        (
            log.span(RegionId(50)),
            log.local_state(RegionId(50)).unwrap()
        ),
        (None, None)
    );
    assert!(
        !log.recover()
            .unwrap()
            .iter()
            .any(|(r, _)| *r == RegionId(50))
    );
    // The region can start anew with a state alone.
    batch.put_state(RegionId(50), &state(2, 0, 9));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(log.span(RegionId(50)), span(10, 9));

    let huge = 1u64 << 62;
    let mut batch = LogWriteBatch::default();
    batch.put_state(RegionId(51), &state(1, 0, huge));
    assert!(matches!(
        log.write(&mut batch, SyncMode::Sync),
        Err(LogError::InvalidWrite {
            region: RegionId(51),
            ..
        })
    ));
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(51), &ents(huge, huge, 1)).unwrap();
    batch.put_state(RegionId(51), &state(1, 0, huge));
    assert!(matches!(
        log.write(&mut batch, SyncMode::Sync),
        Err(LogError::InvalidWrite {
            region: RegionId(51),
            ..
        })
    ));
    assert_eq!(log.span(RegionId(51)), None);
    assert_eq!(log.entry(RegionId(50), u64::MAX).unwrap(), None);
}

fn suite(log: Arc<dyn RaftLogStore>) {
    reads_keep_the_byte_limit(log.as_ref());
    reads_outside_the_log_are_errors(log.as_ref());
    reset_after_state_and_out_of_range_indices(log.as_ref());
    replaces_the_suffix(log.as_ref());
    resets_for_a_snapshot_and_removes_a_region(log.as_ref());
    refuses_holes_and_overwrites_of_compacted_entries(log.as_ref());
    region_log_reads_like_mem_storage(log);
}

#[test]
fn suite_on_raft_engine_and_its_results_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    suite(Arc::new(open(dir.path())));
    let reopened = open(dir.path());
    assert_eq!(
        reopened.repairs(),
        &[],
        "nothing to repair after clean writes"
    );
    check_replaced_suffix(&reopened);
    check_reset(&reopened);
}

#[test]
fn suite_on_the_in_memory_log_and_a_crash_drops_unsynced_writes() {
    suite(Arc::new(MemRaftLog::new()));
    let log = MemRaftLog::new();
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(3), &ents(1, 4, 1)).unwrap();
    batch.put_state(RegionId(3), &state(1, 4, 4));
    let bytes: u64 = ents(1, 4, 1)
        .iter()
        .map(|e| prost::Message::encoded_len(e) as u64)
        .sum();
    assert_eq!(batch.entry_bytes(), bytes);
    assert_eq!(log.write(&mut batch, SyncMode::Sync).unwrap() as u64, bytes);
    batch.append(RegionId(3), &ents(5, 6, 1)).unwrap();
    batch.put_state(RegionId(3), &state(1, 6, 6));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    batch.append(RegionId(3), &ents(7, 7, 1)).unwrap();
    batch.put_state(RegionId(3), &state(1, 6, 7));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    assert_eq!(log.span(RegionId(3)), span(1, 7));
    log.crash_keeping(1);
    assert_eq!(
        log.span(RegionId(3)),
        span(1, 6),
        "the first unsynced write survived, not the second"
    );
    assert_eq!(log.local_state(RegionId(3)).unwrap(), Some(state(1, 6, 6)));
    log.crash();
    assert_eq!(
        log.span(RegionId(3)),
        span(1, 6),
        "a crash keeps what survived the last one"
    );
    batch.append(RegionId(3), &ents(7, 8, 2)).unwrap();
    batch.put_state(RegionId(3), &state(2, 6, 8));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    log.crash();
    assert_eq!(log.span(RegionId(3)), span(1, 6));
    assert!(matches!(
        log.entries(RegionId(3), 5, 8, u64::MAX),
        Err(LogError::OutOfRange {
            region: RegionId(3),
            ..
        })
    ));
}

/// A volatile log reads and writes as the others, keeps no second copy for a crash, and a
/// crash (like the process's end) loses every region's log, synced or not.
#[test]
fn a_volatile_in_memory_log_passes_the_suite_and_a_crash_loses_everything() {
    suite(Arc::new(MemRaftLog::with_durability(
        MemDurability::Volatile,
    )));
    let log = MemRaftLog::with_durability(MemDurability::Volatile);
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(3), &ents(1, 4, 1)).unwrap();
    batch.put_state(RegionId(3), &state(1, 4, 4));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    batch.append(RegionId(3), &ents(5, 6, 1)).unwrap();
    batch.put_state(RegionId(3), &state(1, 4, 6));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    assert_eq!(log.span(RegionId(3)), span(1, 6));
    assert_eq!(log.local_state(RegionId(3)).unwrap(), Some(state(1, 4, 6)));
    log.crash_keeping(1);
    assert_eq!(log.span(RegionId(3)), None, "nothing was kept for a crash");
    assert_eq!(log.local_state(RegionId(3)).unwrap(), None);
    assert_eq!(log.recover().unwrap(), Vec::new());
    batch.append(RegionId(3), &ents(1, 2, 2)).unwrap();
    batch.put_state(RegionId(3), &state(2, 2, 2));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(
        log.span(RegionId(3)),
        span(1, 2),
        "it runs on after the crash"
    );
}

/// A crash at the instant the power is cut: writes after it fail (synced or not), and the
/// crash keeps what was durable at the cut; then the log takes writes again.
#[test]
fn the_in_memory_log_refuses_writes_once_its_power_is_cut() {
    let log = MemRaftLog::new();
    let r = RegionId(3);
    let mut batch = LogWriteBatch::default();
    batch.append(r, &ents(1, 4, 1)).unwrap();
    batch.put_state(r, &state(1, 4, 4));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    log.cut_power();
    let mut batch = LogWriteBatch::default();
    batch.append(r, &ents(5, 6, 1)).unwrap();
    batch.put_state(r, &state(1, 4, 6));
    assert!(log.write(&mut batch, SyncMode::Sync).is_err());
    assert_eq!(log.span(r), span(1, 4), "a failed write changes nothing");
    log.crash();
    assert_eq!(log.span(r), span(1, 4));
    let mut batch = LogWriteBatch::default();
    batch.append(r, &ents(5, 6, 1)).unwrap();
    batch.put_state(r, &state(1, 4, 6));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    assert_eq!(log.span(r), span(1, 6), "the power is back after the crash");
}

fn check_same(a: &impl LogStorage, b: &impl LogStorage) {
    assert_eq!(a.initial_state().unwrap(), b.initial_state().unwrap());
    let (first, last) = (b.first_index(), b.last_index());
    assert_eq!((a.first_index(), a.last_index()), (first, last));
    for i in first - 1..=last + 1 {
        assert_eq!(a.term(i), b.term(i), "term({i})");
    }
    for lo in first..=last {
        for hi in lo..=last + 1 {
            for max in [0, 40, 200, u64::MAX] {
                assert_eq!(
                    a.entries(lo, hi, max),
                    b.entries(lo, hi, max),
                    "entries({lo}, {hi}, {max})"
                );
            }
        }
    }
    assert_eq!(
        a.entries(first, last + 2, u64::MAX),
        Err(StorageError::Unavailable)
    );
}

/// Writes 20 batches of ten 100-byte entries into small log files (several of them).
fn fill_small_files(dir: &std::path::Path) -> RaftLogConfig {
    let mut cfg = RaftLogConfig::new(dir);
    cfg.target_file_size = 4096;
    let log = RaftLogEngine::open(&cfg).unwrap();
    for i in 0..20u64 {
        let mut batch = LogWriteBatch::default();
        let e = sized_ents(i * 10 + 1, i * 10 + 10, 100, |index| index as u8);
        batch.append(RegionId(1), &e).unwrap();
        batch.put_state(RegionId(1), &state(1, i * 10 + 10, i * 10 + 10));
        log.write(&mut batch, SyncMode::Sync).unwrap();
    }
    cfg
}

fn log_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    files.sort();
    files
}

fn damage(path: &std::path::Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let pos = at(bytes.len());
    for b in &mut bytes[pos..pos + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_torn_tail_is_cut_off_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fill_small_files(dir.path());
    let files = log_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    damage(files.last().unwrap(), |len| len - 20);
    let log = RaftLogEngine::open(&cfg).expect("tail damage is tolerated");
    let (_, last) = entry_range(&log, 1).unwrap();
    assert!(
        (150..200).contains(&last),
        "lost only the damaged tail: last {last}"
    );
    let got = log.entries(RegionId(1), 1, last + 1, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, last);
    assert!(
        got.iter()
            .all(|e| e.data.iter().all(|&b| b == e.index as u8)),
        "surviving entries intact"
    );
}

#[test]
fn damage_in_the_middle_refuses_to_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fill_small_files(dir.path());
    let files = log_files(dir.path());
    let victim = &files[1];
    damage(victim, |len| len / 2);
    let err = RaftLogEngine::open(&cfg)
        .err()
        .expect("corruption in a sealed file is fatal")
        .to_string();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "error should name {name}: {err}");
}

/// Small files and a low purge threshold. Region 2 writes 60 entries early (more than
/// raft-engine would quietly rewrite itself); region 1 then writes 400 entries into many
/// files. Returns the directory, the log and how many files it has.
fn pinning_layout() -> (tempfile::TempDir, RaftLogEngine, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RaftLogConfig::new(dir.path());
    cfg.target_file_size = 4096;
    cfg.purge_threshold = 8192;
    let log = RaftLogEngine::open(&cfg).unwrap();
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(2), &ents(1, 60, 1)).unwrap();
    batch.put_state(RegionId(2), &state(1, 60, 60));
    log.write(&mut batch, SyncMode::Sync).unwrap();
    for i in 0..40u64 {
        let big = sized_ents(i * 10 + 1, i * 10 + 10, 200, |_| 1);
        batch.append(RegionId(1), &big).unwrap();
        batch.put_state(RegionId(1), &state(1, i * 10 + 10, i * 10 + 10));
        log.write(&mut batch, SyncMode::Sync).unwrap();
    }
    let files = log_files(dir.path()).len();
    (dir, log, files)
}

#[test]
fn purge_names_regions_pinning_old_files_and_compacting_them_frees_the_files() {
    let (dir, log, files_before) = pinning_layout();
    // Region 1 applied and compacted everything; region 2 did not.
    log.compact_to(RegionId(1), 400).unwrap();
    let mut pinning = Vec::new();
    for _ in 0..3 {
        pinning = log.purge_expired_files().unwrap();
        if !pinning.is_empty() {
            break;
        }
    }
    assert_eq!(
        pinning,
        vec![RegionId(2)],
        "region 2's old entries keep the oldest file alive"
    );
    log.compact_to(RegionId(2), 61).unwrap();
    log.purge_expired_files().unwrap();
    let files_after = log_files(dir.path()).len();
    assert!(
        files_after < files_before / 2,
        "files {files_before} -> {files_after}"
    );
}

#[test]
fn gc_round_force_compacts_pinning_regions_and_frees_files() {
    use flotilla::storage::log_gc::{GcInput, GcPolicy, run_gc};
    let (dir, log, files_before) = pinning_layout();
    // Region 1 is fully applied and durable; region 2 applied 60 but a follower is at 3.
    let input = |region| {
        let first_index = log.span(region)?.first;
        Some(match region {
            RegionId(1) => GcInput {
                region,
                durable_applied: 400,
                slowest_follower: None,
                first_index,
            },
            _ => GcInput {
                region,
                durable_applied: 60,
                slowest_follower: Some(3),
                first_index,
            },
        })
    };
    let policy = GcPolicy {
        max_follower_lag: 1_000,
        min_entries: 1,
    };
    // Purge names region 2 (60 old entries pin the oldest file): it is force-compacted
    // past its follower, who will need a snapshot. Region 1 is compacted regularly.
    let done = run_gc(&log, &policy, &[RegionId(1), RegionId(2)], input).unwrap();
    let got: Vec<(u64, u64, bool)> = done
        .iter()
        .map(|(r, d)| (r.get(), d.compact_to, d.strands_follower))
        .collect();
    assert_eq!(got, [(1, 401, false), (2, 61, true)]);
    assert_eq!(
        entry_range(&log, 2),
        None,
        "all of region 2's entries are gone"
    );
    // Without the pinning, the same follower would have held region 2 back.
    let regular = policy.regular(&GcInput {
        region: RegionId(2),
        durable_applied: 60,
        slowest_follower: Some(3),
        first_index: 1,
    });
    assert_eq!(regular.map(|d| d.compact_to), Some(4));
    let files_after = log_files(dir.path()).len();
    assert!(
        files_after < files_before / 2,
        "files {files_before} -> {files_after}"
    );
}

/// Writes straight into raft-engine, as a damaged or foreign log would hold it.
fn raw_write(dir: &std::path::Path, build: impl FnOnce(&mut raft_engine::LogBatch)) {
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let engine = raft_engine::Engine::open(cfg).unwrap();
    let mut lb = raft_engine::LogBatch::default();
    build(&mut lb);
    engine.write(&mut lb, true).unwrap();
}

fn wal(entries: &[Entry]) -> Vec<flotilla::storage::wal_entry::WalEntry> {
    entries
        .iter()
        .map(flotilla::storage::wal_entry::WalEntry::from_entry)
        .collect()
}

/// Entries without a state were never part of an accepted write: opening removes them
/// and the region is not listed.
#[test]
fn entries_without_a_state_are_removed_on_open() {
    use flotilla::storage::wal_entry::WalEntryExt;
    let dir = tempfile::tempdir().unwrap();
    raw_write(dir.path(), |lb| {
        lb.add_entries::<WalEntryExt>(7, &wal(&ents(1, 5, 1)))
            .unwrap();
    });
    let log = open(dir.path());
    assert_eq!(
        log.repairs(),
        &[flotilla::storage::raft_log::LogRepair::Orphaned {
            region: RegionId(7)
        }]
    );
    assert_eq!(log.span(RegionId(7)), None);
    assert!(log.recover().unwrap().is_empty());
    drop(log);
    assert!(open(dir.path()).recover().unwrap().is_empty());
}

/// A state that names entries the engine does not hold refuses to open, naming the region.
#[test]
fn recorded_entries_that_are_missing_refuse_to_open() {
    use flotilla::storage::wal_entry::WalEntryExt;
    use prost::Message as _;
    refuses_as_corrupt(8, |lb| {
        lb.add_entries::<WalEntryExt>(8, &wal(&ents(1, 5, 1)))
            .unwrap();
        let st = state(1, 0, 9).encode_to_vec();
        lb.put(8, b"raft_local_state".to_vec(), st).unwrap();
        lb.put(8, b"log_first_index".to_vec(), 1u64.to_le_bytes().to_vec())
            .unwrap();
    });
}

/// A log holding what `build` writes straight into raft-engine refuses to open with
/// `LogError::Corrupt` naming `region`.
fn refuses_as_corrupt(region: u64, build: impl FnOnce(&mut raft_engine::LogBatch)) {
    let dir = tempfile::tempdir().unwrap();
    raw_write(dir.path(), build);
    match RaftLogEngine::open(&RaftLogConfig::new(dir.path())) {
        Err(LogError::Corrupt { region: r, .. }) if r == RegionId(region) => {}
        Err(e) => panic!("expected corruption of region {region}, got {e}"),
        Ok(_) => panic!("opened a log whose records of region {region} are damaged"),
    }
}

/// Damaged records (a first index of the wrong size, a last index out of range) refuse
/// to open with the region named, instead of panicking.
#[test]
fn damaged_records_refuse_to_open() {
    use prost::Message as _;
    let cases: [(&[u8], Vec<u8>, u64); 4] = [
        (b"log_first_index", vec![1, 2, 3], 0),
        (b"log_first_index", 1u64.to_le_bytes().to_vec(), u64::MAX),
        (b"log_first_index", 0u64.to_le_bytes().to_vec(), 5),
        (b"log_first_index", 9u64.to_le_bytes().to_vec(), 5),
    ];
    for (key, value, last) in cases {
        refuses_as_corrupt(9, |lb| {
            let st = state(1, 0, last).encode_to_vec();
            lb.put(9, b"raft_local_state".to_vec(), st).unwrap();
            lb.put(9, key.to_vec(), value).unwrap();
        });
    }
}

/// raft-engine drops the last file whole when its header does not read back (a file torn
/// while being created holds nothing else); with acknowledged batches behind a damaged
/// header, the log refuses to open and names the file.
#[test]
fn a_damaged_header_in_front_of_written_data_is_named_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fill_small_files(dir.path());
    let files = log_files(dir.path());
    let last = files.last().unwrap();
    damage(last, |_| 0);
    match RaftLogEngine::open(&cfg) {
        Err(LogError::CorruptFile { file, .. }) => assert_eq!(&file, last),
        Err(e) => panic!("unexpected error {e}"),
        Ok(log) => panic!(
            "opened with entries up to {:?}: the last file's batches were dropped",
            entry_range(&log, 1)
        ),
    }
}

/// The same with a single small batch right behind the damaged header: the check looks
/// at everything after the header, not only past a generous margin.
#[test]
fn a_damaged_header_in_front_of_one_small_batch_is_named_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let mut batch = LogWriteBatch::default();
        batch.append(RegionId(1), &ents(1, 1, 1)).unwrap();
        batch.put_state(RegionId(1), &state(1, 0, 1));
        log.write(&mut batch, SyncMode::Sync).unwrap();
    }
    let files = log_files(dir.path());
    assert_eq!(files.len(), 1);
    let written = std::fs::read(&files[0]).unwrap();
    let data_end = written.iter().rposition(|&b| b != 0).unwrap();
    assert!(
        data_end < 400,
        "one small batch: data ends at byte {data_end}"
    );
    damage(&files[0], |_| 0);
    match RaftLogEngine::open(&RaftLogConfig::new(dir.path())) {
        Err(LogError::CorruptFile { file, .. }) => assert_eq!(file, files[0]),
        Err(e) => panic!("unexpected error {e}"),
        Ok(log) => panic!(
            "opened with entries {:?}: the batch behind the header was dropped",
            entry_range(&log, 1)
        ),
    }
}

/// Only raft-engine's own files are checked: anything else an operator leaves in the
/// directory does not stop the log from opening.
#[test]
fn other_files_in_the_log_directory_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let mut batch = LogWriteBatch::default();
        batch.append(RegionId(1), &ents(1, 3, 1)).unwrap();
        batch.put_state(RegionId(1), &state(1, 0, 3));
        log.write(&mut batch, SyncMode::Sync).unwrap();
    }
    // Longer than a log file's header, so a header check would find "data" behind it.
    let notes = "moved here from the old disk; keep until the migration is verified.\n";
    std::fs::write(dir.path().join("NOTES.txt"), notes.repeat(8)).unwrap();
    let log = open(dir.path());
    assert_eq!(entry_range(&log, 1), Some((1, 3)));
}

/// Bytes flipped anywhere in a sealed file: the log refuses to open, or it opens and every
/// entry reads back intact or fails as `CorruptFile` naming the file (damage inside entry
/// data, which raft-engine checks only when it reads it). Never a panic, an abort (a
/// damaged alignment field made raft-engine allocate exabytes), another error, or wrong
/// data.
#[test]
fn damage_anywhere_in_a_sealed_file_is_named_or_harmless() {
    let probe = tempfile::tempdir().unwrap();
    fill_small_files(probe.path());
    let len = std::fs::metadata(&log_files(probe.path())[1])
        .unwrap()
        .len() as usize;
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for at in (0..len - 16).step_by(61) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fill_small_files(dir.path());
        let victim = log_files(dir.path())[1].clone();
        damage(&victim, |_| at);
        let named = |file: &std::path::Path| file == victim;
        let outcome = match RaftLogEngine::open(&cfg) {
            Err(LogError::CorruptFile { file, .. }) if named(&file) => "refused to open",
            Err(e) => panic!("damage at {at}: unexpected error {e}"),
            Ok(log) => {
                let (_, last) = entry_range(&log, 1).unwrap();
                match log.entries(RegionId(1), 1, last + 1, u64::MAX) {
                    Ok(got) => {
                        assert_eq!(got.len() as u64, last, "damage at {at}");
                        assert!(
                            got.iter()
                                .all(|e| e.data.iter().all(|&b| b == e.index as u8)),
                            "damage at {at}: wrong data read back"
                        );
                        "read back intact"
                    }
                    Err(LogError::CorruptFile { file, .. }) if named(&file) => {
                        // One entry at a time, the damage is named too, never read as
                        // an entry outside the log.
                        let one = |i| log.entry(RegionId(1), i);
                        let named_one = (1..=last).any(|i| match one(i) {
                            Ok(Some(e)) => {
                                assert!(e.data.iter().all(|&b| b == i as u8), "damage at {at}");
                                false
                            }
                            Err(LogError::CorruptFile { file, .. }) => named(&file),
                            other => panic!("damage at {at}: entry {i} read as {other:?}"),
                        });
                        assert!(named_one, "damage at {at}: no single entry read names it");
                        "named at read"
                    }
                    Err(e) => panic!("damage at {at}: unexpected read error {e}"),
                }
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("{outcomes:?}");
    assert!(outcomes.contains_key("refused to open"), "{outcomes:?}");
    assert!(outcomes.contains_key("named at read"), "{outcomes:?}");
}

/// Entries and a state but no first-index record: nothing says which entries belong to the
/// log, so it refuses to open rather than guess (or drop them).
#[test]
fn a_missing_first_index_record_with_entries_refuses_to_open() {
    use flotilla::storage::wal_entry::WalEntryExt;
    use prost::Message as _;
    refuses_as_corrupt(12, |lb| {
        lb.add_entries::<WalEntryExt>(12, &wal(&ents(1, 5, 1)))
            .unwrap();
        let st = state(1, 0, 5).encode_to_vec();
        lb.put(12, b"raft_local_state".to_vec(), st).unwrap();
    });
}

/// Reads racing compactions of the same region see entries or `OutOfRange`, never a
/// corruption error: the read path re-checks the span when the engine read fails.
#[test]
fn reads_racing_compactions_see_entries_or_out_of_range() {
    let (_dir, log) = region_with_entries(3000);
    race(
        &log,
        |log| {
            let Some(s) = log.span(RegionId(1)) else {
                return;
            };
            let end = (s.first + 50).min(s.last + 1);
            let reads = [
                log.entries(RegionId(1), s.first, end, u64::MAX).map(|_| ()),
                log.entry(RegionId(1), s.first).map(|_| ()),
            ];
            for r in reads {
                match r {
                    Ok(()) | Err(LogError::OutOfRange { .. }) => {}
                    Err(e) => panic!("read while compacting: {e}"),
                }
            }
        },
        |log| {
            for to in (2..=3001).step_by(7) {
                log.compact_to(RegionId(1), to).unwrap();
            }
        },
    );
}

/// Region 1 with entries `1..=last`, in a fresh log.
fn region_with_entries(last: u64) -> (tempfile::TempDir, Arc<RaftLogEngine>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(1), &ents(1, last, 1)).unwrap();
    batch.put_state(RegionId(1), &state(1, 0, last));
    log.write(&mut batch, SyncMode::NoSync).unwrap();
    (dir, log)
}

/// Runs `read` in a loop on another thread while `write` runs here (once the reader has
/// started), then checks the reader did read.
fn race(
    log: &Arc<RaftLogEngine>,
    read: impl Fn(&RaftLogEngine) + Send + 'static,
    write: impl FnOnce(&RaftLogEngine),
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (log, done, reads) = (log.clone(), done.clone(), reads.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                read(&log);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while reads.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    write(log);
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}

/// `batch_compression_threshold` reaches raft-engine: 0 never compresses, a small one
/// compresses a large, repetitive batch.
#[test]
fn the_compression_threshold_is_honoured() {
    let size_with = |threshold: u64| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RaftLogConfig::new(dir.path());
        cfg.batch_compression_threshold = threshold;
        let log = RaftLogEngine::open(&cfg).unwrap();
        let mut batch = LogWriteBatch::default();
        let e = sized_ents(1, 64, 4096, |_| 7);
        batch.append(RegionId(1), &e).unwrap();
        batch.put_state(RegionId(1), &state(1, 0, 64));
        // raft-engine says how many bytes the batch took in the log.
        log.write(&mut batch, SyncMode::Sync).unwrap() as u64
    };
    let (never, small) = (size_with(0), size_with(1024));
    assert!(never > 256 << 10, "uncompressed: {never} bytes");
    assert!(small < never / 4, "compressed: {small} of {never} bytes");
}

/// Reads of entries that a concurrent write keeps (appends after them, a compaction below
/// them) always succeed: the span narrowed during a write still covers them.
#[test]
fn reads_of_entries_a_write_keeps_never_fail() {
    let (_dir, log) = region_with_entries(100);
    race(
        &log,
        |log| {
            let got = log.entries(RegionId(1), 90, 100, u64::MAX);
            assert_eq!(got.map(|e| e.len()).ok(), Some(10), "a kept entry failed");
        },
        |log| {
            let mut batch = LogWriteBatch::default();
            for last in 101..=2000u64 {
                batch.append(RegionId(1), &ents(last, last, 1)).unwrap();
                batch.put_state(RegionId(1), &state(1, 0, last));
                if last % 10 == 0 {
                    batch.compact_to(RegionId(1), 80);
                }
                log.write(&mut batch, SyncMode::NoSync).unwrap();
            }
        },
    );
}

/// A state without a first-index record and without entries is an empty log right after
/// its last index (the one case where the record may be absent).
#[test]
fn a_state_alone_is_an_empty_log_after_its_last_index() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    raw_write(dir.path(), |lb| {
        let st = state(1, 0, 30).encode_to_vec();
        lb.put(13, b"raft_local_state".to_vec(), st).unwrap();
    });
    let log = open(dir.path());
    assert_eq!(log.span(RegionId(13)), span(31, 30));
    assert_eq!(log.repairs(), &[]);
}

/// `SyncMode` decides whether raft-engine fsyncs the write (its perf context counts the
/// time spent syncing on the writing thread).
#[test]
fn sync_mode_decides_whether_the_write_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let write = |index: u64, sync: SyncMode| {
        let mut batch = LogWriteBatch::default();
        batch.append(RegionId(1), &ents(index, index, 1)).unwrap();
        batch.put_state(RegionId(1), &state(1, 0, index));
        raft_engine::take_perf_context();
        log.write(&mut batch, sync).unwrap();
        raft_engine::take_perf_context().log_sync_duration
    };
    assert_eq!(write(1, SyncMode::NoSync), std::time::Duration::ZERO);
    assert!(write(2, SyncMode::Sync) > std::time::Duration::ZERO);
}

/// Damage inside entry data that open's repair reads (it rewrites the last recorded entry
/// to cut what lies beyond) is named by file, like damage found by any other read.
#[test]
fn damage_found_by_opens_repair_is_named() {
    use flotilla::storage::wal_entry::WalEntryExt;
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    {
        // Small files, so the damaged batch sits in a sealed one (damage in the last file
        // is cut like a torn write).
        let cfg = raft_engine::Config {
            dir: dir.path().to_string_lossy().into_owned(),
            target_file_size: raft_engine::ReadableSize(1024),
            ..Default::default()
        };
        let engine = raft_engine::Engine::open(cfg).unwrap();
        let mut lb = raft_engine::LogBatch::default();
        // Region 14 holds 5..=12 but its records end the log at 10: open cuts 11..=12 by
        // writing entry 10 again, which it reads first.
        lb.add_entries::<WalEntryExt>(14, &wal(&ents(5, 12, 1)))
            .unwrap();
        let st = state(1, 0, 10).encode_to_vec();
        lb.put(14, b"raft_local_state".to_vec(), st).unwrap();
        let first = u64::to_le_bytes(5).to_vec();
        lb.put(14, b"log_first_index".to_vec(), first).unwrap();
        engine.write(&mut lb, true).unwrap();
        for i in 1..=4u64 {
            let e = sized_ents(i, i, 600, |_| b'f');
            lb.add_entries::<WalEntryExt>(15, &wal(&e)).unwrap();
            let st = state(1, 0, i).encode_to_vec();
            lb.put(15, b"raft_local_state".to_vec(), st).unwrap();
            let first = u64::to_le_bytes(1).to_vec();
            lb.put(15, b"log_first_index".to_vec(), first).unwrap();
            engine.write(&mut lb, true).unwrap();
        }
    }
    let files = log_files(dir.path());
    assert!(files.len() > 1, "{files:?}");
    let file = files[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"e10t1")
        .expect("entry 10's data");
    bytes[at + 1] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    match RaftLogEngine::open(&RaftLogConfig::new(dir.path())) {
        Err(LogError::CorruptFile { file: named, .. }) => assert_eq!(named, file),
        Err(e) => panic!("unexpected error {e}"),
        Ok(log) => panic!("opened over damaged entry data: {:?}", log.repairs()),
    }
}

/// What open removes, and how it says so, for entries raft-engine holds outside the
/// recorded span: below it, above it, and around an empty log.
#[test]
fn open_repairs_name_what_they_removed() {
    use flotilla::storage::raft_log::LogRepair::{AboveLast, BelowFirst};
    use flotilla::storage::wal_entry::WalEntryExt;
    use prost::Message as _;
    // (entries held, recorded first, recorded last, expected span, expected repairs)
    let cases = [
        (
            (1, 10),
            5,
            10,
            span(5, 10),
            vec![BelowFirst {
                region: RegionId(14),
                from: 1,
            }],
        ),
        (
            (5, 12),
            5,
            10,
            span(5, 10),
            vec![AboveLast {
                region: RegionId(14),
                to: 12,
            }],
        ),
        (
            (1, 20),
            21,
            20,
            span(21, 20),
            vec![BelowFirst {
                region: RegionId(14),
                from: 1,
            }],
        ),
        (
            (15, 21),
            21,
            20,
            span(21, 20),
            vec![AboveLast {
                region: RegionId(14),
                to: 21,
            }],
        ),
    ];
    for ((from, to), first, last, want_span, want_repairs) in cases {
        let dir = tempfile::tempdir().unwrap();
        raw_write(dir.path(), |lb| {
            lb.add_entries::<WalEntryExt>(14, &wal(&ents(from, to, 1)))
                .unwrap();
            let st = state(1, 0, last).encode_to_vec();
            lb.put(14, b"raft_local_state".to_vec(), st).unwrap();
            lb.put(
                14,
                b"log_first_index".to_vec(),
                u64::to_le_bytes(first).to_vec(),
            )
            .unwrap();
        });
        let log = open(dir.path());
        let case = format!("held {from}..={to}, recorded {first}..={last}");
        assert_eq!(log.span(RegionId(14)), want_span, "{case}");
        assert_eq!(log.repairs(), want_repairs.as_slice(), "{case}");
        if let Some((f, l)) = want_span.and_then(|s| s.entries()) {
            assert_eq!(
                log.entries(RegionId(14), f, l + 1, u64::MAX).unwrap(),
                ents(f, l, 1)
            );
        }
        drop(log);
        assert_eq!(open(dir.path()).repairs(), &[], "{case}: repaired for good");
    }
}

/// A last file torn while it was being created (its header damaged, nothing behind it) is
/// what raft-engine drops on its own: the log opens with everything before it.
#[test]
fn a_last_file_torn_at_creation_is_dropped_and_the_log_opens() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fill_small_files(dir.path());
    let files = log_files(dir.path());
    let last = files.last().unwrap();
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    let seq: u64 = name.trim_end_matches(".raftlog").parse().unwrap();
    let torn = dir.path().join(format!("{:016}.raftlog", seq + 1));
    let mut bytes = b"RAFT-LOG-FILE-HEADER-9986".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&torn, bytes).unwrap();
    let log = RaftLogEngine::open(&cfg).expect("a torn new file is dropped");
    assert_eq!(entry_range(&log, 1), Some((1, 200)));
}

/// `RegionLog`'s own bookkeeping: its region, the configuration it reports, inverted reads,
/// and its snapshot slot — an offer at the same index replaces the offered one (handed
/// back for its files to go), an older offer is handed back itself, and a truncation
/// retires the offered snapshot only once the log starts past it.
#[test]
fn region_log_bookkeeping_and_snapshot_slot() {
    use flotilla::proto::raftpb::{Snapshot, SnapshotMetadata};
    let engine: Arc<dyn RaftLogStore> = Arc::new(MemRaftLog::new());
    let region = RegionLog::new(
        RegionId(5),
        engine.clone(),
        RaftLocalState::default(),
        (0, 0),
        ConfState::default(),
        1 << 20,
    );
    assert_eq!(region.region(), RegionId(5));
    let cs = ConfState {
        voters: vec![1, 2],
        ..Default::default()
    };
    region.set_conf_state(cs.clone());
    assert_eq!(region.initial_state().unwrap().conf_state, cs);

    let mut batch = LogWriteBatch::default();
    batch.append(RegionId(5), &ents(1, 12, 1)).unwrap();
    let local = state(1, 12, 12);
    batch.put_state(RegionId(5), &local);
    engine.write(&mut batch, SyncMode::Sync).unwrap();
    region.on_written(&ents(1, 12, 1), &local);
    assert_eq!(
        region.entries(10, 9, u64::MAX),
        Err(StorageError::Unavailable)
    );

    let snap = |index: u64, data: &'static [u8]| Snapshot {
        data: Bytes::from_static(data),
        metadata: Some(SnapshotMetadata {
            conf_state: Some(cs.clone()),
            index,
            term: 1,
        }),
    };
    assert_eq!(region.offer_snapshot(snap(10, b"a")), None);
    assert_eq!(region.offer_snapshot(snap(10, b"b")), Some(snap(10, b"a")));
    assert_eq!(region.offer_snapshot(snap(9, b"c")), Some(snap(9, b"c")));
    assert_eq!(region.snapshot(10).unwrap(), snap(10, b"b"));
    assert_eq!(
        region.on_truncated(10, 1),
        None,
        "it still covers the truncated log"
    );
    assert_eq!(region.on_truncated(11, 1), Some(snap(10, b"b")));
}

/// A request the core makes while a snapshot is being generated is served by the
/// snapshot offered (if it is recent enough): the store is not asked to generate the same
/// snapshot again. One that needs a newer snapshot still gets its own generation.
#[test]
fn an_offered_snapshot_serves_the_requests_made_while_it_was_generated() {
    use flotilla::proto::raftpb::{Snapshot, SnapshotMetadata};
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn RaftLogStore> =
        Arc::new(RaftLogEngine::open(&RaftLogConfig::new(dir.path())).unwrap());
    let region = RegionLog::new(
        RegionId(5),
        engine,
        RaftLocalState::default(),
        (20, 1),
        ConfState::default(),
        1 << 20,
    );
    let snap = |index: u64| Snapshot {
        metadata: Some(SnapshotMetadata {
            index,
            term: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        region.snapshot(0),
        Err(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert_eq!(region.take_snapshot_request(), Some(20));
    // Asked again while the first generation runs.
    assert_eq!(
        region.snapshot(0),
        Err(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert_eq!(region.offer_snapshot(snap(25)), None);
    assert_eq!(
        region.take_snapshot_request(),
        None,
        "served by the one offered"
    );
    assert_eq!(region.snapshot(0).unwrap(), snap(25));
    // A request past what is held still starts a generation.
    assert_eq!(
        region.snapshot(30),
        Err(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert_eq!(region.take_snapshot_request(), Some(30));
    assert_eq!(
        region.snapshot(31),
        Err(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert_eq!(region.offer_snapshot(snap(30)), Some(snap(25)));
    assert_eq!(region.take_snapshot_request(), Some(31), "not served by 30");
}
