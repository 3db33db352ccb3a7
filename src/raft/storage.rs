//! The core reads its persisted log through `LogStorage`; `MemStorage` is the in-memory
//! implementation used by tests, the simulator and benchmarks.

use std::cmp::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use prost::Message as _;

use super::errors::StorageError;
use crate::proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

/// Result of a `LogStorage` call.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// What a node finds on restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    /// Term, vote and commit index as last persisted.
    pub hard_state: HardState,
    /// The configuration as of the state machine's applied index.
    pub conf_state: ConfState,
}

/// Read access to the persisted part of one group's log. Entries that are not yet persisted
/// stay in the core (`Unstable`), so an implementation only ever sees durable data.
pub trait LogStorage {
    /// The hard state and configuration to start from; read when the node is created.
    fn initial_state(&self) -> StorageResult<RaftState>;
    /// Entries in `[low, high)`, stopping once `max_bytes` would be exceeded but always
    /// returning at least one entry.
    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>>;
    /// Term of `index`, valid from `first_index() - 1` (the snapshot's index) to `last_index()`.
    fn term(&self, index: u64) -> StorageResult<u64>;
    /// The first index held as an entry (snapshot index + 1). Answered from memory and
    /// infallible: a log whose bounds could not be read would look empty, and an empty log
    /// grants its vote to any candidate.
    fn first_index(&self) -> u64;
    /// Index of the last durable entry (the snapshot's index when none follows it);
    /// infallible for the same reason.
    fn last_index(&self) -> u64;
    /// A snapshot at index `request_index` or later, to send to a follower (one whose log
    /// ends before the leader's first entry, or that asked for one); a storage still making
    /// it answers `SnapshotTemporarilyUnavailable`.
    fn snapshot(&self, request_index: u64) -> StorageResult<Snapshot>;
}

/// A log shared between the core and the code that writes it (the store's WAL writer
/// updates a region's log while the core reads it).
impl<T: LogStorage + ?Sized> LogStorage for Arc<T> {
    fn initial_state(&self) -> StorageResult<RaftState> {
        (**self).initial_state()
    }
    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>> {
        (**self).entries(low, high, max_bytes)
    }
    fn term(&self, index: u64) -> StorageResult<u64> {
        (**self).term(index)
    }
    fn first_index(&self) -> u64 {
        (**self).first_index()
    }
    fn last_index(&self) -> u64 {
        (**self).last_index()
    }
    fn snapshot(&self, request_index: u64) -> StorageResult<Snapshot> {
        (**self).snapshot(request_index)
    }
}

/// The index a snapshot covers up to (0 if it has no metadata).
pub fn snapshot_index(s: &Snapshot) -> u64 {
    s.metadata.as_ref().map_or(0, |m| m.index)
}

/// Encoded size of an entry, the unit of every byte limit in the core.
pub fn entry_size(e: &Entry) -> u64 {
    e.encoded_len() as u64
}

/// Truncates `entries` so their total size stays within `max_bytes`, keeping at least one.
pub fn limit_size(entries: &mut Vec<Entry>, max_bytes: u64) {
    let mut budget = ByteBudget::new(max_bytes);
    let keep = entries.iter().take_while(|e| budget.take(e)).count();
    entries.truncate(keep);
}

/// Counts entry bytes against a limit the way every read of a log does: entries are taken
/// while their total (`entry_size`) stays within `max_bytes`, but the first is always
/// taken, so a read never comes back empty for want of bytes.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    max_bytes: u64,
    used: u64,
    taken: usize,
}

impl ByteBudget {
    pub(crate) fn new(max_bytes: u64) -> Self {
        ByteBudget {
            max_bytes,
            used: 0,
            taken: 0,
        }
    }

    /// Counts `e` if it fits (or is the first); false once the limit would be passed.
    pub(crate) fn take(&mut self, e: &Entry) -> bool {
        let used = self.used.saturating_add(entry_size(e));
        if used > self.max_bytes && self.taken > 0 {
            return false;
        }
        (self.used, self.taken) = (used, self.taken + 1);
        true
    }

    /// Bytes still within the limit.
    pub(crate) fn left(&self) -> u64 {
        self.max_bytes.saturating_sub(self.used)
    }
}

/// The state behind a `MemStorage`: hard state, configuration, the snapshot and the
/// entries after it.
#[derive(Debug, Default)]
pub struct MemStorageCore {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    snapshot_data: Bytes,
    /// Entries after the snapshot: `entries[0].index == snapshot_meta.index + 1`.
    entries: Vec<Entry>,
    /// Tests set this to make `snapshot()` report that generation is in progress.
    pub snapshot_unavailable: bool,
}

impl MemStorageCore {
    fn first_index(&self) -> u64 {
        self.snapshot_meta.index + 1
    }

    fn last_index(&self) -> u64 {
        self.snapshot_meta.index + self.entries.len() as u64
    }

    /// The term, vote and commit index persisted so far.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Persists a `Ready::hard_state`.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Sets the configuration a restarting node starts from (`RaftState::conf_state`).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Appends entries, replacing any existing suffix they overlap.
    pub fn append(&mut self, ents: &[Entry]) -> StorageResult<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            return Err(StorageError::LogGap {
                index: first.index,
                last: self.last_index(),
            });
        }
        // Entries at or below the snapshot are already covered by it.
        let skip = self.first_index().saturating_sub(first.index) as usize;
        let Some(ents) = ents.get(skip..).filter(|e| !e.is_empty()) else {
            return Ok(());
        };
        let keep = (ents[0].index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Replaces the log with a snapshot.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> StorageResult<()> {
        let meta = snap.metadata.unwrap_or_default();
        if meta.index < self.snapshot_meta.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.conf_state.clone().unwrap_or_default();
        self.entries.clear();
        self.snapshot_meta = meta;
        self.snapshot_data = snap.data;
        Ok(())
    }

    /// Records a snapshot of the state machine at `index` (≤ last index) and drops the
    /// entries it covers.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        cs: ConfState,
        data: impl Into<Bytes>,
    ) -> StorageResult<()> {
        if index <= self.snapshot_meta.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        let term = self.term(index)?;
        self.compact(index)?;
        // After compact(index) the entry at `index` is gone; the snapshot stands for it.
        self.snapshot_meta = SnapshotMetadata {
            conf_state: Some(cs),
            index,
            term,
        };
        self.snapshot_data = data.into();
        Ok(())
    }

    /// Drops entries up to and including `index` (keeping the term of `index` available).
    pub fn compact(&mut self, index: u64) -> StorageResult<()> {
        if index <= self.snapshot_meta.index {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        let term = self.term(index)?;
        let drop = (index - self.snapshot_meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot_meta.index = index;
        self.snapshot_meta.term = term;
        Ok(())
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        match index.cmp(&self.snapshot_meta.index) {
            Ordering::Less => Err(StorageError::Compacted),
            Ordering::Equal => Ok(self.snapshot_meta.term),
            Ordering::Greater => self
                .entries
                .get((index - self.first_index()) as usize)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable),
        }
    }
}

/// In-memory `LogStorage`; clones share the same log (one handle for the core, one for the
/// code that persists Ready output).
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    /// An empty log with no members (see `with_voters`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage bootstrapped with the given voters at index 0.
    pub fn with_voters(voters: &[u64]) -> Self {
        let s = Self::new();
        s.wl().conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        s
    }

    /// Shared read access; a poisoned lock is taken over, not propagated.
    pub fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access, for the code persisting Ready output; a poisoned lock is taken over.
    pub fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogStorage for MemStorage {
    fn initial_state(&self) -> StorageResult<RaftState> {
        let c = self.rl();
        Ok(RaftState {
            hard_state: c.hard_state,
            conf_state: c.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>> {
        let c = self.rl();
        if low < c.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > c.last_index() + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        let off = c.first_index();
        let mut ents = c.entries[(low - off) as usize..(high - off) as usize].to_vec();
        limit_size(&mut ents, max_bytes);
        Ok(ents)
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        self.rl().term(index)
    }

    fn first_index(&self) -> u64 {
        self.rl().first_index()
    }

    fn last_index(&self) -> u64 {
        self.rl().last_index()
    }

    fn snapshot(&self, _request_index: u64) -> StorageResult<Snapshot> {
        let c = self.rl();
        if c.snapshot_unavailable {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(Snapshot {
            data: c.snapshot_data.clone(),
            metadata: Some(c.snapshot_meta.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix_and_rejects_gaps() {
        let s = MemStorage::new();
        s.wl().append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.wl().append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(
            s.wl().append(&[ent(5, 2)]),
            Err(StorageError::LogGap { index: 5, last: 2 })
        );
    }

    #[test]
    fn byte_budget_takes_the_first_entry_and_then_what_fits() {
        let e = ent(1, 1);
        let size = entry_size(&e);
        let mut budget = ByteBudget::new(2 * size + 1);
        assert_eq!(budget.left(), 2 * size + 1);
        assert!(budget.take(&e) && budget.take(&e));
        assert_eq!(budget.left(), 1);
        assert!(!budget.take(&e), "a third entry passes the limit");
        assert_eq!(budget.left(), 1, "a refused entry is not counted");
        let mut none = ByteBudget::new(0);
        assert!(none.take(&e), "the first entry is always taken");
        assert!(!none.take(&e));
        assert_eq!(none.left(), 0);
    }

    #[test]
    fn compact_keeps_term_of_compacted_index() {
        let s = MemStorage::new();
        s.wl().append(&[ent(1, 1), ent(2, 2), ent(3, 3)]).unwrap();
        s.wl().compact(2).unwrap();
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 3, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 4, u64::MAX).unwrap(), vec![ent(3, 3)]);
        assert_eq!(s.entries(3, 3, u64::MAX).unwrap(), vec![], "an empty range");
        assert_eq!(s.entries(3, 5, u64::MAX), Err(StorageError::Unavailable));
        assert_eq!(s.entries(4, 3, u64::MAX), Err(StorageError::Unavailable));
        // Appending below the snapshot keeps only the part after it.
        s.wl().append(&[ent(2, 2), ent(3, 3), ent(4, 3)]).unwrap();
        assert_eq!(s.last_index(), 4);
    }

    #[test]
    fn entries_respect_byte_limit_but_return_one() {
        let s = MemStorage::new();
        s.wl().append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        let one = entry_size(&ent(1, 1));
        assert_eq!(s.entries(1, 4, 2 * one).unwrap().len(), 2);
    }

    #[test]
    fn an_older_snapshot_is_refused_the_same_one_again_is_not() {
        let s = MemStorage::new();
        let snap = |i| Snapshot {
            data: Bytes::new(),
            metadata: Some(SnapshotMetadata {
                index: i,
                term: 1,
                conf_state: None,
            }),
        };
        s.wl().apply_snapshot(snap(5)).unwrap();
        // The same snapshot again (installed, then a crash before it was acknowledged).
        s.wl().apply_snapshot(snap(5)).unwrap();
        assert_eq!(
            s.wl().apply_snapshot(snap(4)),
            Err(StorageError::SnapshotOutOfDate)
        );
        assert_eq!(s.first_index(), 6);
    }

    /// A log shared behind an `Arc` answers exactly as the log itself.
    #[test]
    fn a_shared_log_answers_as_the_log() {
        let s = MemStorage::new();
        s.wl().append(&[ent(1, 1), ent(2, 2), ent(3, 3)]).unwrap();
        s.wl().compact(2).unwrap();
        let shared = Arc::new(s.clone());
        assert_eq!(
            (shared.first_index(), shared.last_index()),
            (s.first_index(), s.last_index())
        );
        assert_eq!((shared.first_index(), shared.last_index()), (3, 3));
        assert_eq!(shared.term(2), s.term(2));
        assert_eq!(shared.entries(3, 4, u64::MAX), s.entries(3, 4, u64::MAX));
        assert_eq!(shared.initial_state(), s.initial_state());
        assert_eq!(shared.snapshot(3), s.snapshot(3));
    }
}
