//! The log as the core sees it: durable entries in `LogStorage` followed by entries still
//! held in `Unstable`, plus the commit and apply cursors.

use super::errors::{Result, StorageError};
use super::storage::{LogStorage, entry_size, limit_size, snapshot_index};
use super::unstable::Unstable;
use crate::proto::raftpb::{Entry, Snapshot};

/// One node's log: the durable prefix in `LogStorage`, then the tail not yet persisted,
/// with the cursors `applied <= applying <= committed`.
pub struct ReplicaLog<S: LogStorage> {
    pub(crate) store: S,
    pub(crate) unstable: Unstable,
    pub(crate) committed: u64,
    /// Highest index handed to the application for applying.
    pub(crate) applying: u64,
    /// Highest index the application reported applied.
    pub(crate) applied: u64,
    max_applying_bytes: u64,
}

impl<S: LogStorage> ReplicaLog<S> {
    pub(crate) fn new(store: S, applied: u64, max_applying_bytes: u64) -> Result<Self> {
        let first = store.first_index();
        let last = store.last_index();
        // Whatever the snapshot covers is applied; applied entries are committed even if
        // the hard state's commit index was not persisted that far.
        let applied = applied.max(first.saturating_sub(1));
        if applied > last {
            return Err(StorageError::AppliedBeyondLog { applied, last }.into());
        }
        let committed = store
            .initial_state()?
            .hard_state
            .commit
            .clamp(applied, last);
        Ok(ReplicaLog {
            store,
            unstable: Unstable::new(last + 1),
            committed,
            applying: applied,
            applied,
            max_applying_bytes,
        })
    }

    /// The highest index known committed.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The highest index handed to the application for applying.
    pub fn applying(&self) -> u64 {
        self.applying
    }

    /// The highest index the application reported applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Index of the first entry still held: just after the snapshot, pending or stored.
    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.store.first_index(),
        }
    }

    /// Index of the last entry, persisted or not (the snapshot's index when none follows it).
    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.store.last_index(),
        }
    }

    /// Highest index known durable on this node.
    pub fn persisted_index(&self) -> u64 {
        match &self.unstable.snapshot {
            // Until the snapshot is durable, the old log below it is all we have, and it
            // may disagree with the snapshot: claim nothing at or above the snapshot.
            Some(_) => {
                let snap_index = self.unstable.offset - 1;
                let stored = self.store.last_index();
                stored.min(snap_index.saturating_sub(1))
            }
            None => self.unstable.offset - 1,
        }
    }

    /// Term of `index`, known from `first_index() - 1` (the snapshot's index) to
    /// `last_index()`: `Compacted` below, `Unavailable` above.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index().saturating_sub(1);
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        self.store.term(index)
    }

    /// Term of `index`, or 0 where it is not known.
    pub fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    /// Term of the last entry (0 for an empty log, or one whose last term cannot be read:
    /// a vote request carrying it only weakens the candidate).
    pub fn last_term(&self) -> u64 {
        self.term_or_zero(self.last_index())
    }

    /// Whether our entry at `index` has `term`: if so, our log matches the leader's up to it.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// §5.4.1: is a log ending at (last_index, term) at least as up to date as ours? Not
    /// when our last term cannot be read: taking it for 0 would grant a vote to a candidate
    /// whose log lacks our entries.
    pub(crate) fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        let ours = self.last_index();
        let Ok(our_term) = self.term(ours) else {
            return false;
        };
        term > our_term || (term == our_term && last_index >= ours)
    }

    /// Index of the first entry of `ents` that conflicts with (or extends) our log; 0 if
    /// every entry is already present.
    fn find_conflict(&self, ents: &[Entry]) -> u64 {
        ents.iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map_or(0, |e| e.index)
    }

    /// The largest `(i, term(i))` with `i <= index` and `term(i) <= term`: the leader may skip
    /// every index above it when probing (fast backtracking).
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Appends leader entries after `(index, log_term)` if our log matches there; returns
    /// the index of the last entry the message covers.
    pub(crate) fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            if conflict <= self.committed {
                // A correct leader never rewrites committed entries; refuse, never truncate.
                return None;
            }
            let start = (conflict - (index + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    pub(crate) fn append(&mut self, ents: &[Entry]) -> u64 {
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// Raises the commit index to `index` (never beyond our log), never lowers it.
    pub(crate) fn commit_to(&mut self, index: u64) {
        self.committed = self.committed.max(index.min(self.last_index()));
    }

    /// Commits `index` if it is from `term` (§5.4.2: only current-term entries are
    /// committed by counting replicas).
    pub(crate) fn maybe_commit(&mut self, index: u64, term: u64) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Entries in `[low, high)` within `max_bytes` (at least one).
    pub fn slice(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        if low == high {
            return Ok(Vec::new());
        }
        let split = self.unstable.offset;
        let mut out = if low < split {
            let stored = self.store.entries(low, high.min(split), max_bytes)?;
            if (stored.len() as u64) < high.min(split) - low {
                return Ok(stored);
            }
            stored
        } else {
            Vec::new()
        };
        // The part in the unstable tail: empty when the range ends before it.
        out.extend_from_slice(self.unstable.slice(low.max(split), high.max(split)));
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    pub(crate) fn entries_from(
        &self,
        low: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.slice(low, self.last_index() + 1, max_bytes)
    }

    pub(crate) fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(Snapshot::clone(s)),
            None => self.store.snapshot(request_index),
        }
    }

    /// The last index that may be handed out for applying: committed and durable here.
    fn apply_limit(&self) -> u64 {
        self.committed.min(self.persisted_index())
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        self.apply_limit() > self.applying && self.applying >= self.first_index().saturating_sub(1)
    }

    /// Hands out the next committed entries and advances `applying`.
    pub(crate) fn take_committed_entries(&mut self) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        let ents = self.slice(
            self.applying + 1,
            self.apply_limit() + 1,
            self.max_applying_bytes,
        )?;
        if let Some(last) = ents.last() {
            self.applying = last.index;
        }
        Ok(ents)
    }

    pub(crate) fn applied_to(&mut self, index: u64) {
        // Forward only, and never past what was handed out.
        if index <= self.applying {
            self.applied = self.applied.max(index);
        }
    }

    /// Replaces the log with a snapshot's state.
    pub(crate) fn restore(&mut self, snap: Snapshot) {
        let index = snapshot_index(&snap);
        self.committed = index;
        self.applying = self.applying.max(index);
        self.unstable.restore(snap);
    }

    /// Bytes of the payloads of `ents`, as counted against the uncommitted limit.
    pub(crate) fn payload_size(ents: &[Entry]) -> u64 {
        ents.iter().map(|e| e.data.len() as u64).sum()
    }

    /// Encoded size, for the inflight byte window.
    pub(crate) fn encoded_size(ents: &[Entry]) -> u64 {
        ents.iter().map(entry_size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::RaftError;
    use crate::raft::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn applied_beyond_the_log_is_refused() {
        let s = MemStorage::new();
        s.wl().append(&[ent(1, 1), ent(2, 1)]).unwrap();
        assert!(ReplicaLog::new(s.clone(), 2, u64::MAX).is_ok());
        assert!(matches!(
            ReplicaLog::new(s, 3, u64::MAX),
            Err(RaftError::Storage(StorageError::AppliedBeyondLog {
                applied: 3,
                last: 2
            }))
        ));
    }

    fn log_with(terms: &[u64]) -> ReplicaLog<MemStorage> {
        let s = MemStorage::new();
        let ents: Vec<_> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(i as u64 + 1, *t))
            .collect();
        s.wl().append(&ents).unwrap();
        ReplicaLog::new(s, 0, u64::MAX).unwrap()
    }

    #[test]
    fn maybe_append_truncates_uncommitted_conflict_only() {
        let mut log = log_with(&[1, 1, 1]);
        assert_eq!(log.maybe_append(1, 1, 3, &[ent(2, 2)]), Some(2));
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.committed, 2);
        // Conflicting with a committed entry: refused.
        assert_eq!(log.maybe_append(1, 1, 2, &[ent(2, 3)]), None);
        // Mismatch at the previous index.
        assert_eq!(log.maybe_append(2, 9, 2, &[ent(3, 3)]), None);
    }

    #[test]
    fn find_conflict_by_term_skips_higher_terms() {
        let log = log_with(&[1, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(5, 3), (3, 2));
        assert_eq!(log.find_conflict_by_term(5, 4), (5, 4));
        assert_eq!(log.find_conflict_by_term(9, 1), (1, 1));
        assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let mut log = log_with(&[1, 1]);
        log.append(&[ent(3, 2), ent(4, 2)]);
        let got = log.slice(2, 5, u64::MAX).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let one = entry_size(&ent(1, 1));
        assert_eq!(log.slice(1, 5, one * 3).unwrap().len(), 3);
        assert_eq!(log.slice(0, 2, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(log.slice(1, 6, u64::MAX), Err(StorageError::Unavailable));
    }

    #[test]
    fn committed_entries_wait_for_local_persistence() {
        let mut log = log_with(&[1]);
        log.append(&[ent(2, 1)]);
        log.commit_to(2);
        let got = log.take_committed_entries().unwrap();
        assert_eq!(
            got,
            vec![ent(1, 1)],
            "entry 2 is committed but not durable here"
        );
        log.unstable.accept_in_progress();
        log.unstable.stable_to(2, 1);
        log.store.wl().append(&[ent(2, 1)]).unwrap();
        assert_eq!(log.take_committed_entries().unwrap(), vec![ent(2, 1)]);
        assert!(!log.has_next_committed_entries());
    }

    #[test]
    fn applied_moves_forward_within_what_was_handed_out() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(3);
        assert_eq!(log.take_committed_entries().unwrap().len(), 3);
        log.applied_to(2);
        assert_eq!(log.applied, 2);
        log.applied_to(1);
        assert_eq!(log.applied, 2, "backwards");
        log.applied_to(4);
        assert_eq!(log.applied, 2, "beyond what was handed out");
        log.applied_to(3);
        assert_eq!(log.applied, 3);
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_with(&[1, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(5, 1));
        assert!(log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(1, 2));
    }
}
