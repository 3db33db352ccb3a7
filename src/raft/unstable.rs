//! Entries (and at most one snapshot) that the core holds until the store reports them
//! durable. Entries handed out in a Ready are "in progress": they are not handed out again,
//! but stay readable here until `stable_to` confirms them.

use super::storage::snapshot_index;
use crate::proto::raftpb::{Entry, Snapshot};

#[derive(Debug, Default)]
pub struct Unstable {
    /// Boxed: a snapshot is rare, and every replica of a store holds an `Unstable`.
    pub snapshot: Option<Box<Snapshot>>,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]`.
    pub offset: u64,
    snapshot_in_progress: bool,
    /// Entries below this index have been handed out for persistence.
    offset_in_progress: u64,
}

impl Unstable {
    pub fn new(offset: u64) -> Self {
        Unstable {
            offset,
            offset_in_progress: offset,
            ..Default::default()
        }
    }

    fn pending_snapshot_index(&self) -> Option<u64> {
        self.snapshot.as_deref().map(snapshot_index)
    }

    /// First index, known only when a snapshot is pending.
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.pending_snapshot_index().map(|i| i + 1)
    }

    pub fn maybe_last_index(&self) -> Option<u64> {
        if !self.entries.is_empty() {
            return Some(self.offset + self.entries.len() as u64 - 1);
        }
        self.pending_snapshot_index()
    }

    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let meta = self.snapshot.as_ref()?.metadata.as_ref()?;
            return (meta.index == index).then_some(meta.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    pub fn has_next_entries(&self) -> bool {
        self.offset_in_progress < self.offset + self.entries.len() as u64
    }

    /// Entries not yet handed out for persistence.
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start.min(self.entries.len())..]
    }

    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress {
            None
        } else {
            self.snapshot.as_deref()
        }
    }

    /// Marks everything currently held as handed out.
    pub fn accept_in_progress(&mut self) {
        self.offset_in_progress = self.offset + self.entries.len() as u64;
        self.snapshot_in_progress = self.snapshot.is_some();
    }

    /// The store made entries up to `(index, term)` durable. Ignored if the log has since
    /// been overwritten at `index` (the newer entries will be acknowledged by a later call).
    /// Returns whether anything became stable.
    pub fn stable_to(&mut self, index: u64, term: u64) -> bool {
        // A pending snapshot at or below `index` was written before these entries.
        let snap_done = self
            .pending_snapshot_index()
            .is_some_and(|si| si <= index && self.snapshot_in_progress);
        if snap_done && self.maybe_term(index) == Some(term) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
        if self.snapshot.is_some() || index < self.offset {
            return snap_done && self.snapshot.is_none();
        }
        if self.maybe_term(index) != Some(term) || index >= self.offset_in_progress {
            return false;
        }
        let n = (index + 1 - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = index + 1;
        // Give memory back after a burst, without reallocating on every acknowledgement.
        let keep = self.entries.len().max(64);
        if self.entries.capacity() > 4 * keep {
            self.entries.shrink_to(keep);
        }
        true
    }

    pub fn restore(&mut self, snap: Snapshot) {
        let index = snapshot_index(&snap);
        self.entries.clear();
        self.offset = index + 1;
        self.offset_in_progress = self.offset;
        self.snapshot = Some(Box::new(snap));
        self.snapshot_in_progress = false;
    }

    /// Appends `ents`, replacing any held suffix they overlap. The caller guarantees
    /// `ents[0].index` is at most `last + 1` and above the committed index.
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let from = first.index;
        let end = self.offset + self.entries.len() as u64;
        if from == end {
            self.entries.extend_from_slice(ents);
        } else if from <= self.offset {
            // Replaces everything held; earlier entries are in storage.
            self.offset = from;
            self.offset_in_progress = from;
            self.entries = ents.to_vec();
        } else {
            self.entries.truncate((from - self.offset) as usize);
            self.entries.extend_from_slice(ents);
            self.offset_in_progress = self.offset_in_progress.min(from);
        }
    }

    /// Gives back the room of an empty entry buffer.
    pub fn shrink_buffers(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Entries in `[low, high)`; the caller checks the bounds.
    pub fn slice(&self, low: u64, high: u64) -> &[Entry] {
        &self.entries[(low - self.offset) as usize..(high - self.offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb::SnapshotMetadata;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn shrinking_gives_back_the_room_of_what_became_stable() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1), ent(7, 1)]);
        u.accept_in_progress();
        assert!(u.stable_to(7, 1));
        assert!(u.entries.capacity() > 0, "kept until asked");
        u.shrink_buffers();
        assert_eq!(u.entries.capacity(), 0);
        assert_eq!(u.maybe_last_index(), None);
        assert_eq!(u.offset, 8, "state unchanged");
    }

    #[test]
    fn stable_to_needs_matching_term_and_handed_out_entries() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1)]);
        assert!(!u.stable_to(5, 1), "not yet handed out");
        u.accept_in_progress();
        assert!(u.next_entries().is_empty());
        assert!(!u.stable_to(6, 2), "term mismatch is ignored");
        assert!(u.stable_to(5, 1));
        assert_eq!(u.offset, 6);
        assert_eq!(u.maybe_last_index(), Some(6));
    }

    #[test]
    fn truncate_inside_in_progress_rewinds_progress() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1), ent(7, 1)]);
        u.accept_in_progress();
        u.truncate_and_append(&[ent(6, 2)]);
        assert_eq!(u.next_entries(), &[ent(6, 2)]);
        // The stale ack for (7, 1) must not stabilise anything past the overwrite.
        assert!(!u.stable_to(7, 1));
        assert!(u.stable_to(5, 1));
        assert_eq!(u.entries, vec![ent(6, 2)]);
        // An overwrite further in keeps exactly the entries before it.
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1), ent(7, 1), ent(8, 1), ent(9, 1)]);
        u.truncate_and_append(&[ent(8, 2)]);
        assert_eq!(u.entries, vec![ent(5, 1), ent(6, 1), ent(7, 1), ent(8, 2)]);
    }

    /// An acknowledgement below what is held, or of a snapshot not handed out yet or of
    /// another term, stabilises nothing and says so.
    #[test]
    fn stale_or_premature_acks_stabilise_nothing() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1)]);
        u.accept_in_progress();
        assert!(u.stable_to(5, 1));
        assert!(!u.stable_to(4, 1), "below the held entries");
        assert!(!u.stable_to(5, 1), "already stable");

        let snapshot = |term| Snapshot {
            data: Default::default(),
            metadata: Some(SnapshotMetadata {
                index: 10,
                term,
                conf_state: None,
            }),
        };
        let mut u = Unstable::new(1);
        u.restore(snapshot(3));
        assert!(!u.stable_to(10, 3), "the snapshot was not handed out yet");
        assert!(u.next_snapshot().is_some(), "and is still to be handed out");
        u.accept_in_progress();
        assert!(!u.stable_to(10, 2), "another term");
        assert!(u.snapshot.is_some());
        assert!(u.stable_to(10, 3));
        assert!(u.snapshot.is_none());
    }

    /// After a burst the buffer gives its memory back; a buffer of ordinary size is kept,
    /// so acknowledgements do not reallocate.
    #[test]
    fn a_burst_gives_its_memory_back_once_acknowledged() {
        let fill = |u: &mut Unstable, n: u64| {
            let ents: Vec<Entry> = (u.offset..u.offset + n).map(|i| ent(i, 1)).collect();
            u.truncate_and_append(&ents);
            u.accept_in_progress();
        };
        let mut u = Unstable::new(1);
        fill(&mut u, 10_000);
        assert!(u.stable_to(10_000, 1));
        assert!(u.entries.capacity() <= 4 * 64, "{}", u.entries.capacity());

        // Exactly four times what the shrink keeps, and below: kept as it is.
        for cap in [200, 4 * 64] {
            let mut u = Unstable::new(1);
            u.entries = Vec::with_capacity(cap);
            fill(&mut u, 10);
            let before = u.entries.capacity();
            assert!(u.stable_to(5, 1));
            assert_eq!(u.entries.capacity(), before, "capacity {cap}");
        }
    }

    #[test]
    fn snapshot_then_entries_are_acked_together() {
        let mut u = Unstable::new(1);
        let meta = SnapshotMetadata {
            index: 10,
            term: 3,
            conf_state: None,
        };
        u.restore(Snapshot {
            data: Default::default(),
            metadata: Some(meta),
        });
        u.truncate_and_append(&[ent(11, 3)]);
        assert_eq!(u.maybe_term(10), Some(3));
        assert_eq!(u.maybe_first_index(), Some(11));
        u.accept_in_progress();
        assert!(u.stable_to(11, 3));
        assert!(u.snapshot.is_none());
        assert!(u.entries.is_empty());
    }
}
