//! The leader's view of each peer (progress) and of the configuration (tracker).

use std::collections::{BTreeSet, HashMap};

use super::inflights::Inflights;
use super::quorum::{JointConfig, VoteResult};
use crate::proto::raftpb::ConfState;

/// How sending a snapshot to a follower ended, as the transport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received the whole snapshot.
    Finished,
    /// The send failed; the leader probes the follower from its last known match, and
    /// sends a new snapshot if what it needs is compacted.
    Failed,
}

/// How the leader replicates to one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// One append at a time until the follower's match point is found.
    Probe,
    /// Optimistic pipelining within the inflight window.
    Replicate,
    /// A snapshot is on its way; appends wait.
    Snapshot,
}

#[derive(Debug, Clone)]
pub struct Progress {
    pub matched: u64,
    pub next_idx: u64,
    pub state: ProgressState,
    /// Index of the snapshot being sent, in `Snapshot` state.
    pub pending_snapshot: u64,
    /// Heard from since the last quorum check.
    pub recent_active: bool,
    /// In `Probe`: an append is outstanding, send nothing more until it is answered.
    pub probe_sent: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
    /// The commit index the follower last reported (quiescence needs everyone caught up).
    pub committed_index: u64,
    /// Highest heartbeat read round the follower acknowledged.
    pub read_round: u64,
}

impl Progress {
    pub fn new(
        next_idx: u64,
        max_inflight: usize,
        max_inflight_bytes: u64,
        is_learner: bool,
    ) -> Self {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: true,
            probe_sent: false,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            is_learner,
            committed_index: 0,
            read_round: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        let after_snapshot =
            (self.state == ProgressState::Snapshot).then_some(self.pending_snapshot);
        self.reset_state(ProgressState::Probe);
        self.next_idx = match after_snapshot {
            Some(snap) => self.matched.max(snap) + 1,
            None => self.matched + 1,
        };
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// An acknowledgement up to `n`; false if stale.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = n > self.matched;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next_idx = self.next_idx.max(n + 1);
        updated
    }

    /// Records an append of entries ending at `last` (`bytes` of entries) just sent.
    pub fn sent_entries(&mut self, last: u64, count: usize, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next_idx = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// A rejection of the append after `rejected`; `hint` is where the follower's log may
    /// match. Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        if self.next_idx == 0 || self.next_idx - 1 != rejected {
            return false;
        }
        self.next_idx = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// Voters (possibly joint), learners, and the progress of every member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    pub learners: BTreeSet<u64>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<u64>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.voters.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }
}

/// Each peer's progress, ordered by peer id. A sorted vector: a region has a handful of
/// peers, and a B-tree's first node alone would take over a kilobyte per replica.
#[derive(Debug, Clone, Default)]
pub struct ProgressMap(Vec<(u64, Progress)>);

impl ProgressMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Peers the map has room for without growing.
    #[cfg(test)]
    pub fn room(&self) -> usize {
        self.0.capacity()
    }

    /// Gives back room: the map's beyond its peers, each in-flight window's beyond what it
    /// holds.
    pub fn shrink_buffers(&mut self) {
        self.0.shrink_to_fit();
        for (_, pr) in &mut self.0 {
            pr.inflights.shrink_buffers();
        }
    }

    fn position(&self, id: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id, |(k, _)| *k)
    }

    pub fn get(&self, id: &u64) -> Option<&Progress> {
        let at = self.position(*id).ok()?;
        Some(&self.0[at].1)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Progress> {
        let at = self.position(*id).ok()?;
        Some(&mut self.0[at].1)
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.position(*id).is_ok()
    }

    /// Sets `id`'s progress, returning the one it replaces.
    pub fn insert(&mut self, id: u64, progress: Progress) -> Option<Progress> {
        match self.position(id) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, progress)),
            Err(at) => {
                self.0.insert(at, (id, progress));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<Progress> {
        let at = self.position(*id).ok()?;
        Some(self.0.remove(at).1)
    }

    /// `id`'s progress, made by `new` if it has none.
    pub fn get_or_insert_with(&mut self, id: u64, new: impl FnOnce() -> Progress) -> &mut Progress {
        let at = match self.position(id) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (id, new()));
                at
            }
        };
        &mut self.0[at].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Progress)> {
        self.0.iter().map(|(id, pr)| (id, pr))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Progress)> {
        self.0.iter_mut().map(|(id, pr)| (&*id, pr))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|(id, _)| id)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.0.iter_mut().map(|(_, pr)| pr)
    }
}

/// `map[&id]` in tests: `id`'s progress; panics if it has none.
#[cfg(test)]
impl std::ops::Index<&u64> for ProgressMap {
    type Output = Progress;

    fn index(&self, id: &u64) -> &Progress {
        self.get(id).expect("no progress for the peer")
    }
}

#[derive(Debug, Clone)]
pub struct ProgressTracker {
    pub config: TrackerConfig,
    pub progress: ProgressMap,
    votes: HashMap<u64, bool>,
    pub max_inflight: usize,
    pub max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight: usize, max_inflight_bytes: u64) -> Self {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: ProgressMap::new(),
            votes: HashMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    pub fn is_voter(&self, id: u64) -> bool {
        self.config.voters.contains(id)
    }

    /// The highest index a quorum has durably matched.
    pub fn committed(&self) -> u64 {
        self.config
            .voters
            .committed_index(|id| self.progress.get(&id).map(|p| p.matched))
    }

    /// The highest read round a quorum acknowledged, counting `self_id` at `current_round`.
    pub fn quorum_read_round(&self, self_id: u64, current_round: u64) -> u64 {
        self.config.voters.committed_index(|id| {
            if id == self_id {
                Some(current_round)
            } else {
                self.progress.get(&id).map(|p| p.read_round)
            }
        })
    }

    /// Whether a quorum has been active since the last check; resets the flags of others.
    pub fn quorum_active(&mut self, self_id: u64) -> bool {
        let mut votes = HashMap::new();
        for (&id, pr) in self.progress.iter_mut() {
            if id == self_id {
                votes.insert(id, true);
                continue;
            }
            if !pr.is_learner {
                votes.insert(id, pr.recent_active);
            }
            pr.recent_active = false;
        }
        self.config.voters.vote_result(&votes) == VoteResult::Won
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Drops the votes of the last election and their room: only a campaigning node reads
    /// them, and each campaign starts from `reset_votes`.
    pub fn drop_votes(&mut self) {
        self.votes = HashMap::new();
    }

    /// Votes the tally holds or has room for.
    #[cfg(test)]
    pub(crate) fn vote_slots(&self) -> usize {
        self.votes.capacity()
    }

    /// Records a vote (the first one from each voter counts) and tallies.
    pub fn record_vote(&mut self, id: u64, granted: bool) -> VoteResult {
        self.votes.entry(id).or_insert(granted);
        self.config.voters.vote_result(&self.votes)
    }

    pub fn voter_ids(&self) -> BTreeSet<u64> {
        self.config.voters.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(state: ProgressState, matched: u64, next: u64) -> Progress {
        let mut p = Progress::new(next, 4, u64::MAX, false);
        p.state = state;
        p.matched = matched;
        p
    }

    #[test]
    fn shrinking_fits_the_map_to_its_peers_and_empties_idle_windows() {
        let mut map = ProgressMap::new();
        for id in 1..=3 {
            map.insert(id, pr(ProgressState::Replicate, 5, 6));
        }
        if let Some(p) = map.get_mut(&2) {
            p.inflights.add(6, 1);
            p.inflights.free_le(6);
        }
        map.shrink_buffers();
        assert_eq!(map.room(), 3);
        assert_eq!(map.get(&2).map(|p| p.inflights.room()), Some(0));
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn decr_in_replicate_falls_back_to_match() {
        let mut p = pr(ProgressState::Replicate, 5, 10);
        assert!(!p.maybe_decr_to(5, 5), "stale: at or below match");
        assert!(p.maybe_decr_to(9, 9));
        assert_eq!(p.next_idx, 6);
    }

    #[test]
    fn decr_in_probe_uses_hint_and_ignores_stale() {
        let mut p = pr(ProgressState::Probe, 0, 10);
        p.probe_sent = true;
        assert!(!p.maybe_decr_to(5, 0), "rejection of an older probe");
        assert!(p.maybe_decr_to(9, 3));
        assert_eq!(p.next_idx, 4);
        assert!(!p.probe_sent);
        let mut p = pr(ProgressState::Probe, 2, 10);
        assert!(p.maybe_decr_to(9, 0));
        assert_eq!(p.next_idx, 3, "never below match + 1");
    }

    #[test]
    fn an_ack_moves_next_past_it_and_never_back() {
        // A probe backed off to 5, then a delayed ack of 7 arrives: 7 is matched, so the
        // next append starts at 8, not at 7 again.
        let mut p = pr(ProgressState::Probe, 0, 5);
        assert!(p.maybe_update(7));
        assert_eq!((p.matched, p.next_idx), (7, 8));
        // An older ack changes neither.
        assert!(!p.maybe_update(6));
        assert_eq!((p.matched, p.next_idx), (7, 8));
        // In Replicate, next is already past what was sent; an ack below it keeps it there.
        let mut p = pr(ProgressState::Replicate, 3, 10);
        assert!(p.maybe_update(6));
        assert_eq!((p.matched, p.next_idx), (6, 10));
    }

    #[test]
    fn pause_rules_per_state() {
        let mut p = pr(ProgressState::Probe, 0, 1);
        assert!(!p.is_paused());
        p.sent_entries(5, 5, 10);
        assert!(p.is_paused());
        assert!(p.maybe_update(3));
        assert!(!p.is_paused());
        p.become_replicate();
        for i in 0..4 {
            p.sent_entries(4 + i, 1, 1);
        }
        assert!(p.is_paused());
        p.inflights.free_le(5);
        assert!(!p.is_paused());
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_idx, 21);
    }
}
