//! What a store finishes at open, before any region starts, of the destroys a crash
//! interrupted.
//!
//! A replica's removal, applied here, makes the region a tombstone in the apply batch;
//! the peer then resets its log, and only after that does the apply delegate clear the
//! region's data (`peer/destroy.rs`). A crash between those steps leaves, under a
//! tombstone, the old replica's log, its data, or both. A peer of the region created
//! here later (the region re-added this store) would take the old log for its own: a
//! commit index it never applied, entries it cannot read from the start (the store
//! stopped on its first Ready; simulator seed 25,028). The data only wastes room (a
//! snapshot clears its range before it installs) but is never reclaimed otherwise.

use super::context::ended_local_state;
use super::engines::Engines;
use super::runtime::StoreError;
use crate::proto::metapb::Region;
use crate::proto::storagepb::{PeerState, RegionLocalState};
use crate::storage::SyncMode;
use crate::storage::kv::clear_data_range;
use crate::storage::raft_log::LogWriteBatch;
use crate::storage::region_meta::end_bound;

/// What `finish_interrupted_destroys` found to finish.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Tombstoned regions whose log was still there, now reset.
    pub logs_reset: usize,
    /// Data keys no region here holds, now deleted.
    pub keys_cleared: u64,
}

/// Resets the log of every tombstoned region that still has one (keeping its term and
/// vote, as `destroy` does; one synced write for all of them), then deletes the data no
/// region here holds (outside every region not a tombstone) in batches of about
/// `batch_bytes`. `states` are every region state the KV engine holds.
pub(crate) fn finish_interrupted_destroys(
    engines: &Engines,
    states: &[RegionLocalState],
    batch_bytes: usize,
) -> Result<Finished, StoreError> {
    let mut finished = Finished::default();
    let log = &engines.log;
    let mut batch = LogWriteBatch::default();
    for state in states {
        let Some(region) = state.region.as_ref() else {
            continue;
        };
        if state.state != PeerState::Tombstone as i32 {
            continue;
        }
        let id = region.region_id();
        let Some(recorded) = log.local_state(id)? else {
            continue;
        };
        let ended = ended_local_state(recorded.hard_state.unwrap_or_default());
        if recorded == ended && log.span(id).and_then(|s| s.entries()).is_none() {
            continue;
        }
        tracing::warn!(region = %id, last_index = recorded.last_index, "a tombstoned region's log outlived a crash: reset");
        batch.reset(id);
        batch.put_state(id, &ended);
        finished.logs_reset += 1;
    }
    if !batch.is_empty() {
        log.write(&mut batch, SyncMode::Sync)?;
    }
    let mut held: Vec<&Region> = states
        .iter()
        .filter(|s| s.state != PeerState::Tombstone as i32)
        .filter_map(|s| s.region.as_ref())
        .collect();
    held.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let kv = engines.kv.as_ref();
    let view = kv.read_view();
    // The start of the data not yet looked at (None: past the last key).
    let mut from: Option<&[u8]> = Some(&[]);
    for region in held {
        let Some(start) = from else { break };
        if start < region.start_key.as_slice() {
            finished.keys_cleared += clear_data_range(
                view.as_ref(),
                |b| kv.write_batch(b),
                start,
                Some(&region.start_key),
                batch_bytes,
            )?;
        }
        from = end_bound(region).map(|end| end.max(start));
    }
    if let Some(start) = from {
        finished.keys_cleared += clear_data_range(
            view.as_ref(),
            |b| kv.write_batch(b),
            start,
            None,
            batch_bytes,
        )?;
    }
    if finished.keys_cleared > 0 {
        tracing::warn!(
            keys = finished.keys_cleared,
            "data no region holds (a destroy a crash interrupted): cleared"
        );
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::RegionId;
    use crate::proto::metapb::Peer;
    use crate::proto::raftpb::{Entry, HardState};
    use crate::proto::storagepb::RaftLocalState;
    use crate::storage::kv::{Keyspace, KvEngine, KvRead, KvWriteBatch};
    use crate::storage::mem_kv::MemKvEngine;
    use crate::storage::mem_log::MemRaftLog;
    use crate::storage::raft_log::RaftLogStore;
    use crate::storage::region_meta::{normal_state, tombstone_state};

    struct Fixture {
        engines: Engines,
        log: Arc<MemRaftLog>,
        kv: Arc<MemKvEngine>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(MemRaftLog::new());
        let kv = Arc::new(MemKvEngine::new());
        let engines = Engines::new(log.clone(), kv.clone(), dir.path());
        Fixture {
            engines,
            log,
            kv,
            _dir: dir,
        }
    }

    fn region(id: u64, start: &str, end: &str) -> Region {
        Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            peers: vec![Peer {
                id: id * 10,
                store_id: 1,
                role: 0,
            }],
            ..Default::default()
        }
    }

    /// A log of entries 6..=8 at term 3, committed to 8, voted for peer 7.
    fn write_log(log: &MemRaftLog, id: u64) -> RaftLocalState {
        let id = RegionId(id);
        let entries: Vec<Entry> = (6..=8)
            .map(|index| Entry {
                index,
                term: 3,
                ..Default::default()
            })
            .collect();
        let state = RaftLocalState {
            hard_state: Some(HardState {
                term: 3,
                vote: 7,
                commit: 8,
            }),
            last_index: 8,
            last_term: 3,
        };
        let mut batch = LogWriteBatch::default();
        batch.append(id, &entries).unwrap();
        batch.put_state(id, &state);
        log.write(&mut batch, SyncMode::Sync).unwrap();
        state
    }

    fn data_keys(kv: &MemKvEngine) -> Vec<String> {
        kv.scan(Keyspace::Data, b"", None, false)
            .map(|pair| String::from_utf8(pair.unwrap().0.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_tombstones_log_is_reset_once_keeping_its_term_and_vote() {
        let f = fixture();
        let kept = write_log(&f.log, 1);
        write_log(&f.log, 2);
        let states = [
            tombstone_state(region(1, "", "m")),
            normal_state(region(2, "m", "")),
        ];
        let finished = finish_interrupted_destroys(&f.engines, &states, 1024).unwrap();
        assert_eq!(finished.logs_reset, 1);
        let reset = f.log.local_state(RegionId(1)).unwrap().unwrap();
        assert_eq!(reset, ended_local_state(kept.hard_state.unwrap()));
        assert_eq!(reset.hard_state.unwrap().vote, 7, "the vote is kept");
        assert!(f.log.span(RegionId(1)).and_then(|s| s.entries()).is_none());
        // The normal region's log is its own.
        assert_eq!(f.log.local_state(RegionId(2)).unwrap(), Some(kept));
        assert_eq!(
            f.log.span(RegionId(2)).and_then(|s| s.entries()),
            Some((6, 8))
        );
        // Finished once: the next open writes nothing.
        let again = finish_interrupted_destroys(&f.engines, &states, 1024).unwrap();
        assert_eq!(again.logs_reset, 0);
    }

    #[test]
    fn a_tombstone_whose_log_was_only_compacted_is_reset_too() {
        let f = fixture();
        write_log(&f.log, 1);
        let mut batch = LogWriteBatch::default();
        batch.compact_to(RegionId(1), 9);
        f.log.write(&mut batch, SyncMode::Sync).unwrap();
        assert!(f.log.span(RegionId(1)).and_then(|s| s.entries()).is_none());
        let states = [tombstone_state(region(1, "", ""))];
        let finished = finish_interrupted_destroys(&f.engines, &states, 1024).unwrap();
        assert_eq!(finished.logs_reset, 1);
        assert_eq!(
            f.log.local_state(RegionId(1)).unwrap().unwrap().last_index,
            0
        );
    }

    #[test]
    fn data_outside_every_held_region_is_cleared_in_batches() {
        let f = fixture();
        let mut batch = KvWriteBatch::default();
        for key in ["a", "b", "c1", "c2", "c3", "d", "f", "g", "x", "z"] {
            batch.put(Keyspace::Data, key.as_bytes().to_vec(), b"v".to_vec());
        }
        f.kv.write(&batch).unwrap();
        // Held: [b, c1) and [d, g) (two regions back to back, given out of order) and
        // [x, ...); a tombstone over [c1, d) holds nothing.
        let states = [
            normal_state(region(3, "f", "g")),
            normal_state(region(1, "b", "c1")),
            tombstone_state(region(4, "c1", "d")),
            normal_state(region(2, "d", "f")),
            normal_state(region(5, "x", "")),
        ];
        let finished = finish_interrupted_destroys(&f.engines, &states, 1).unwrap();
        assert_eq!(finished.keys_cleared, 5);
        assert_eq!(finished.logs_reset, 0);
        assert_eq!(data_keys(&f.kv), ["b", "d", "f", "x", "z"]);
    }

    #[test]
    fn with_no_region_held_all_data_goes_and_with_one_over_everything_none() {
        let f = fixture();
        let mut batch = KvWriteBatch::default();
        for key in ["\0", "a", "zz"] {
            batch.put(Keyspace::Data, key.as_bytes().to_vec(), b"v".to_vec());
        }
        f.kv.write(&batch).unwrap();
        let all = [normal_state(region(1, "", ""))];
        let kept = finish_interrupted_destroys(&f.engines, &all, 1024).unwrap();
        assert_eq!(kept.keys_cleared, 0);
        assert_eq!(data_keys(&f.kv).len(), 3);
        let none = [tombstone_state(region(1, "", ""))];
        let cleared = finish_interrupted_destroys(&f.engines, &none, 1024).unwrap();
        assert_eq!(cleared.keys_cleared, 3);
        assert!(data_keys(&f.kv).is_empty());
    }
}
