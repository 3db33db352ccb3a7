//! The applied index a region's apply delegate shares with its peer. Each apply round
//! publishes it here rather than messaging the peer: with a thousand busy regions, a
//! message per region per round was a sixth of the raft pollers' visits (12.1 per client
//! write, 10.0 without), each to read one number. The peer reads it whenever it runs
//! (each message it handles, each round's end, ticks alone included); it asks to be told
//! (by message) only while a read waits for an index not yet applied. Changes to the
//! region (a split, a membership change, an installed snapshot, a log truncation) are
//! still messages, and while one is on its way the peer does not read the index: it must
//! not take an index past a change before it has made the change (a core that counts a
//! membership change applied before it was given it could campaign under the old
//! membership; a read served from the old range after a split).

use std::sync::atomic::{AtomicU64, Ordering};

/// One region's applied index, written by its apply delegate and read by its peer.
///
/// All accesses are sequentially consistent, so each side's store followed by a load of
/// what the other side stores cannot both miss: a read cannot be left waiting for an
/// index that was reached (`publish` / `wait_for`), and the peer cannot take an index
/// published after a change report it has not handled (`publish_with_changes` /
/// `settled_applied`).
#[derive(Debug)]
pub(crate) struct AppliedProgress {
    /// Highest index applied and written to the KV engine: a read view taken after
    /// seeing it holds the writes up to it.
    applied: AtomicU64,
    /// The index a waiting read needs applied before the peer must run again; 0 when
    /// nothing waits.
    wanted: AtomicU64,
    /// Change reports sent to the peer and not yet handled by it.
    changes_in_flight: AtomicU64,
}

impl AppliedProgress {
    pub(crate) fn new(applied: u64) -> Self {
        AppliedProgress {
            applied: AtomicU64::new(applied),
            wanted: AtomicU64::new(0),
            changes_in_flight: AtomicU64::new(0),
        }
    }

    /// The apply delegate: entries up to `index` are applied and written, none of them
    /// changing the region. Returns whether the peer waits for this index and must be
    /// told.
    pub(crate) fn publish(&self, index: u64) -> bool {
        self.applied.fetch_max(index, Ordering::SeqCst);
        let wanted = self.wanted.load(Ordering::SeqCst);
        wanted != 0 && index >= wanted
    }

    /// The apply delegate: entries up to `index` are applied and written, some of them
    /// changing the region; it reports the changes to the peer, which calls
    /// `changes_handled` once it has made them.
    pub(crate) fn publish_with_changes(&self, index: u64) {
        self.changes_in_flight.fetch_add(1, Ordering::SeqCst);
        self.applied.fetch_max(index, Ordering::SeqCst);
    }

    /// The peer: the applied index, unless a change report is on its way (then None: the
    /// report brings its index).
    pub(crate) fn settled_applied(&self) -> Option<u64> {
        let applied = self.applied.load(Ordering::SeqCst);
        (self.changes_in_flight.load(Ordering::SeqCst) == 0).then_some(applied)
    }

    /// The peer has made the changes of one report.
    pub(crate) fn changes_handled(&self) {
        debug_assert!(
            self.changes_in_flight.load(Ordering::SeqCst) > 0,
            "a change report handled twice"
        );
        // Never below zero, whatever a caller does.
        let _ = self
            .changes_in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// The peer: it waits for `index` to be applied (None: for nothing). Returns whether
    /// `index` is applied already, in which case no message will come for it.
    pub(crate) fn wait_for(&self, index: Option<u64>) -> bool {
        let wanted = index.unwrap_or(0);
        // Written only when it changes: the apply thread reads this line every round.
        if self.wanted.load(Ordering::SeqCst) != wanted {
            self.wanted.store(wanted, Ordering::SeqCst);
        }
        index.is_some_and(|i| self.applied.load(Ordering::SeqCst) >= i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_told_only_when_what_it_waits_for_is_applied() {
        let p = AppliedProgress::new(5);
        assert_eq!(p.settled_applied(), Some(5));
        // Nothing waits: applying says nothing.
        assert!(!p.publish(6));
        assert_eq!(p.settled_applied(), Some(6));
        // A read waits for 8.
        assert!(!p.wait_for(Some(8)));
        assert!(!p.publish(7), "7 is short of 8");
        assert!(p.publish(8), "8 reached: tell the peer");
        assert!(p.publish(9), "past it, while it still waits");
        // The read served: nothing waits.
        assert!(!p.wait_for(None));
        assert!(!p.publish(10));
        assert_eq!(p.settled_applied(), Some(10));
    }

    #[test]
    fn waiting_for_an_index_applied_already_needs_no_message() {
        let p = AppliedProgress::new(5);
        assert!(p.wait_for(Some(5)));
        assert!(p.wait_for(Some(3)));
        assert!(!p.wait_for(Some(6)));
    }

    #[test]
    fn the_applied_index_never_goes_back() {
        let p = AppliedProgress::new(5);
        assert!(!p.publish(9));
        assert!(!p.publish(7));
        assert_eq!(p.settled_applied(), Some(9));
    }

    #[test]
    fn the_peer_takes_no_index_while_a_change_report_is_on_its_way() {
        let p = AppliedProgress::new(5);
        p.publish_with_changes(6);
        assert!(!p.publish(8));
        assert_eq!(p.settled_applied(), None, "the change at 6 is not made yet");
        p.publish_with_changes(9);
        p.changes_handled();
        assert_eq!(p.settled_applied(), None, "one report still on its way");
        p.changes_handled();
        assert_eq!(p.settled_applied(), Some(9));
        p.publish_with_changes(10);
        assert_eq!(p.settled_applied(), None);
        p.changes_handled();
        assert_eq!(p.settled_applied(), Some(10));
    }
}
