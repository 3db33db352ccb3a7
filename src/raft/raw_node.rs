//! The API a store drives: feed input, take a `Ready`, act on it, acknowledge.
//!
//! ```text
//! loop {
//!     node.tick() / node.step(msg) / node.propose(..) / node.read_index(..)
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         send(rd.messages)                         // at once, in parallel with the write
//!         write(rd.snapshot, rd.entries, rd.hard_state)   // may be batched with other groups
//!         // ...once durable:
//!         send(rd.persisted_messages)
//!         if let Some((index, term)) = rd.persisted_up_to() { node.on_persisted(index, term) }
//!         apply(rd.committed_entries); node.on_applied(last applied index)
//!     }
//! }
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::confchange;
use super::config::Config;
use super::core::{CampaignKind, Raft, Role, SnapshotRequest, SnapshotRequestRefusal, SoftState};
use super::errors::{RaftError, Result};
use super::message::{is_local, msg_type};
use super::progress::{ProgressState, SnapshotStatus};
use super::read_only::ReadState;
use super::storage::{LogStorage, snapshot_index};
use crate::proto::raftpb::{ConfChangeV2, ConfState, Entry, HardState, Message, Snapshot};

/// Everything the application must do after feeding input to the node.
#[derive(Debug, Default, Clone, PartialEq)]
#[must_use = "a Ready carries entries to persist and messages to send"]
pub struct Ready {
    /// Leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed: persist with the entries.
    pub hard_state: Option<HardState>,
    /// Confirmed reads: serve each once `index` is applied.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads requested on this node that will never be confirmed: answer each
    /// with an error at once. Both this node's own reads when it stops leading, and reads it
    /// forwarded that their leader dropped when it stepped down (if that leader's rejection
    /// arrives; a lost one leaves the read to the application's timeout).
    pub dropped_reads: Vec<Vec<u8>>,
    /// Entries to append to the log (replacing any suffix from their first index).
    pub entries: Vec<Entry>,
    /// A snapshot to persist and apply before `entries`. Once `on_persisted` covers it, the
    /// node counts it as applied: acknowledge it only once the state machine holds it (or
    /// is marked to finish installing it after a crash).
    pub snapshot: Option<Snapshot>,
    /// Messages that may be sent at once, before the write completes.
    pub messages: Vec<Message>,
    /// Messages to send only after this Ready's writes (and all earlier ones) are durable.
    /// A message addressed to this node itself must be stepped back into it.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// The write must be fsynced before `persisted_messages` go out: it holds entries, a
    /// snapshot, or a new term or vote. A commit-index change alone need not be synced.
    pub must_sync: bool,
}

impl Ready {
    /// The (index, term) to acknowledge with `on_persisted` once this Ready is written.
    pub fn persisted_up_to(&self) -> Option<(u64, u64)> {
        if let Some(e) = self.entries.last() {
            return Some((e.index, e.term));
        }
        let meta = self.snapshot.as_ref()?.metadata.as_ref()?;
        Some((meta.index, meta.term))
    }
}

/// A follower's replication state as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Highest index known to be in the follower's log.
    pub matched: u64,
    /// Index of the next entry to send it.
    pub next_idx: u64,
    /// Probing, pipelining, or waiting for a snapshot.
    pub state: ProgressState,
    /// A learner receives the log but does not vote.
    pub is_learner: bool,
    /// Append messages sent to it and not yet acknowledged.
    pub inflight_msgs: usize,
    /// Encoded entry bytes of those messages.
    pub inflight_bytes: u64,
}

/// A node's state at one moment, for monitoring and tests (`RawNode::status`).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Term, vote and commit index, whether persisted yet or not.
    pub hard_state: HardState,
    /// Leader and role.
    pub soft_state: SoftState,
    /// Highest index the application reported applied.
    pub applied: u64,
    /// Index of the last log entry, persisted or not.
    pub last_index: u64,
    /// Highest index durable on this node.
    pub persisted_index: u64,
    /// Membership as of the last conf change applied (or snapshot installed).
    pub conf_state: ConfState,
    /// Leader only.
    pub progress: BTreeMap<u64, ProgressStatus>,
    /// Leader: the node a transfer is under way to.
    pub lead_transferee: Option<u64>,
    /// Whether the group may stop ticking (`RawNode::is_quiescent`).
    pub quiescent: bool,
    /// Leader: reads may be answered from the lease, without a heartbeat round.
    pub lease_valid: bool,
    /// Leader: payload bytes of its uncommitted entries (0 when not leading).
    pub uncommitted_bytes: u64,
    /// A snapshot this node asked for, until it restores one (`RawNode::request_snapshot`).
    pub requested_snapshot: Option<SnapshotRequest>,
}

/// The store's handle on one Raft node: feed it ticks, messages and proposals, take a
/// `Ready`, persist and send what it says, then acknowledge with `on_persisted` and `on_applied`.
pub struct RawNode<S: LogStorage> {
    raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
}

impl<S: LogStorage> RawNode<S> {
    /// Creates a follower from `cfg` and what `store` holds (hard state, configuration, log).
    /// Fails on an invalid `cfg` or inconsistent stored state.
    pub fn new(cfg: Config, store: S) -> Result<Self> {
        let raft = Raft::new(cfg, store)?;
        let prev_hard = raft.hard_state();
        let prev_soft = raft.soft_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
        })
    }

    /// Read access to the state machine, for tests and diagnostics.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The log storage the node reads.
    pub fn store(&self) -> &S {
        &self.raft.log.store
    }

    /// Advances the logical clock by one tick: elections, heartbeats, check-quorum, leases
    /// and transfer timeouts all count ticks.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (pre-vote first if configured). Refused while this node is
    /// inside a leader's lease (with check-quorum: it heard from a leader within the
    /// election timeout, or restarted less than one ago), since its own vote could elect
    /// a second leader while the first still serves lease reads. A group created in this
    /// process (`NodeStart::Created`, e.g. by a split) has no boot guard and may campaign
    /// at once, until it hears from a leader.
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raft.hup(CampaignKind::Requested)?)
    }

    /// Proposes one entry; returns its index.
    pub fn propose(&mut self, data: impl Into<Bytes>, context: Vec<u8>) -> Result<u64> {
        self.raft.propose_batch([(data.into(), context)])
    }

    /// Proposes entries (data, context) as one append; returns the last index.
    pub fn propose_batch<D: Into<Bytes>>(
        &mut self,
        batch: impl IntoIterator<Item = (D, Vec<u8>)>,
    ) -> Result<u64> {
        self.raft.propose_batch(batch)
    }

    /// Proposes a membership change (a V1 `ConfChange` converts with `.into()`). An empty
    /// `ConfChangeV2` leaves a joint configuration.
    pub fn propose_conf_change(&mut self, cc: impl Into<ConfChangeV2>) -> Result<u64> {
        self.raft.propose_conf_change(cc.into())
    }

    /// Applies a committed conf-change entry; returns the new configuration.
    pub fn apply_conf_change(&mut self, entry: &Entry) -> Result<ConfState> {
        let cc = confchange::decode_entry(entry)?;
        self.raft.apply_conf_change(&cc)
    }

    /// Feeds a message from the network. Local-only message types are refused.
    pub fn step(&mut self, m: Message) -> Result<()> {
        let t = msg_type(&m)?;
        if is_local(t) {
            return Err(RaftError::InvalidMessage(format!("{t:?} is local-only")));
        }
        self.raft.step(m)
    }

    /// Requests a linearizable read; the answer arrives as a `ReadState` with this context.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        self.raft.read_index(ctx)
    }

    /// Hands leadership to `to`: the leader catches it up, then sends it `TimeoutNow`, refusing
    /// proposals meanwhile; abandoned after an election timeout. A follower forwards the request
    /// to its leader; naming the leader itself cancels a pending transfer.
    pub fn transfer_leader(&mut self, to: u64) -> Result<()> {
        self.raft.transfer_leader(to)
    }

    /// This replica's applied state is gone (its data was lost), though its log and vote
    /// stand: it asks its leader for a snapshot. From now until it restores one, it hands
    /// out no committed entry (the snapshot covers them) and does not campaign (it still
    /// votes, on its log). The request goes once the log ends in the leader's term, for a
    /// snapshot at the log's last index or later, so restoring it drops no entry this node
    /// acknowledged; from then on the node appends nothing, and it asks again with each
    /// heartbeat until a snapshot arrives. Refused on a leader.
    pub fn request_snapshot(&mut self) -> std::result::Result<(), SnapshotRequestRefusal> {
        self.raft.request_snapshot()
    }

    /// How sending a snapshot to `to` ended. The leader resumes probing `to` once it answers:
    /// past the snapshot after `Finished`, from its last known match after `Failed`.
    pub fn report_snapshot(&mut self, to: u64, status: SnapshotStatus) {
        self.raft.report_snapshot(to, status);
    }

    /// The transport could not reach `to`: the leader stops pipelining to it and probes,
    /// one append at a time.
    pub fn report_unreachable(&mut self, to: u64) {
        self.raft.report_unreachable(to);
    }

    /// The index of a snapshot the core has taken and not yet handed out (`ready` will).
    pub fn snapshot_to_hand_out(&self) -> Option<u64> {
        self.raft
            .log
            .unstable
            .next_snapshot()
            .map(|s| s.metadata.as_ref().map_or(0, |m| m.index))
    }

    /// Whether `ready` has anything to hand out (or a read round to start).
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_soft
            || r.hard_state() != self.prev_hard
            || !r.read_states.is_empty()
            || !r.dropped_reads.is_empty()
            || !r.msgs.is_empty()
            || !r.persisted_msgs.is_empty()
            || r.log.unstable.next_snapshot().is_some()
            || r.log.unstable.has_next_entries()
            || (r.log.has_next_committed_entries() && r.requested_snapshot.is_none())
            || r.needs_read_round()
    }

    /// Takes everything there is to do. Entries and snapshot handed out here are not handed
    /// out again; acknowledge them with `on_persisted`. A storage error reading committed
    /// entries is returned with nothing taken (`has_ready` stays true): the log cannot be
    /// read, and retrying will not help until the storage is fixed.
    pub fn ready(&mut self) -> Result<Ready> {
        self.raft.flush_read_round();
        let r = &mut self.raft;
        // Entries committed before a snapshot was asked for are covered by it.
        let committed_entries = match r.requested_snapshot {
            None => r.log.take_committed_entries()?,
            Some(_) => Vec::new(),
        };
        let mut rd = Ready {
            committed_entries,
            ..Ready::default()
        };
        let soft = r.soft_state();
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hard = r.hard_state();
        if hard != self.prev_hard {
            rd.must_sync = hard.term != self.prev_hard.term || hard.vote != self.prev_hard.vote;
            rd.hard_state = Some(hard);
            self.prev_hard = hard;
        }
        rd.read_states = std::mem::take(&mut r.read_states);
        rd.dropped_reads = std::mem::take(&mut r.dropped_reads);
        rd.snapshot = r.log.unstable.next_snapshot().cloned();
        rd.entries = r.log.unstable.next_entries().to_vec();
        r.log.unstable.accept_in_progress();
        rd.must_sync |= !rd.entries.is_empty() || rd.snapshot.is_some();
        rd.messages = std::mem::take(&mut r.msgs);
        rd.persisted_messages = std::mem::take(&mut r.persisted_msgs);
        Ok(rd)
    }

    /// The log is durable up to `(index, term)` (as given by `Ready::persisted_up_to`).
    /// Acknowledgements may be batched: one call covers every earlier Ready.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        let snapshot = self.raft.log.unstable.snapshot.as_deref();
        let pending_snapshot = snapshot.map(snapshot_index);
        if self.raft.log.unstable.stable_to(index, term) {
            if let Some(si) = pending_snapshot
                && self.raft.log.unstable.snapshot.is_none()
            {
                // The durable snapshot is the applied state up to its index.
                self.raft.applied_to(si);
            }
            self.raft.self_persisted();
        }
    }

    /// The application has applied committed entries up to `index`.
    pub fn on_applied(&mut self, index: u64) {
        self.raft.applied_to(index);
    }

    /// Gives back the room of buffers that hold nothing now (entries not yet durable, the
    /// leader's in-flight windows and read queues, the votes of an election that is over):
    /// for a group that goes quiet, since a store keeps thousands of groups and most of
    /// them asleep. Changes no state.
    pub fn shrink_buffers(&mut self) {
        self.raft.shrink_buffers();
    }

    /// Whether the group may stop ticking (hibernate): see `Raft::is_quiescent`.
    pub fn is_quiescent(&self) -> bool {
        self.raft.is_quiescent()
    }

    /// `is_quiescent` with the followers `absent` names disregarded while the rest still
    /// form a quorum; see `Raft::is_quiescent_ignoring`.
    pub fn is_quiescent_ignoring(&self, absent: impl Fn(u64) -> bool) -> bool {
        self.raft.is_quiescent_ignoring(absent)
    }

    /// Call when the ticks given to the group fell behind real time (they were lost or
    /// are late): the leader's lease, which is counted in ticks, may have run out unseen.
    /// See `Raft::void_lease`.
    pub fn void_lease(&mut self) {
        self.raft.void_lease();
    }

    /// Call before ticking a group again after it stopped ticking; see `Raft::wake`.
    pub fn wake(&mut self) {
        self.raft.wake();
    }

    /// The node's state now; `progress` is filled only on the leader.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == Role::Leader {
            r.tracker
                .progress
                .iter()
                .map(|(&id, pr)| {
                    let st = ProgressStatus {
                        matched: pr.matched,
                        next_idx: pr.next_idx,
                        state: pr.state,
                        is_learner: pr.is_learner,
                        inflight_msgs: pr.inflights.count(),
                        inflight_bytes: pr.inflights.bytes(),
                    };
                    (id, st)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied: r.log.applied,
            last_index: r.log.last_index(),
            persisted_index: r.log.persisted_index(),
            conf_state: r.tracker.config.to_conf_state(),
            progress,
            lead_transferee: r.lead_transferee(),
            quiescent: r.is_quiescent(),
            lease_valid: r.lease_valid(),
            uncommitted_bytes: r.uncommitted_size(),
            requested_snapshot: r.requested_snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeStart;
    use crate::raft::storage::MemStorage;

    /// Persists and applies everything a lone voter has to do.
    fn drain(raw: &mut RawNode<MemStorage>, storage: &MemStorage) {
        while raw.has_ready() {
            let rd = raw.ready().expect("ready");
            if let Some(hs) = rd.hard_state {
                storage.wl().set_hard_state(hs);
            }
            storage.wl().append(&rd.entries).expect("append");
            if let Some(last) = rd.entries.last() {
                raw.on_persisted(last.index, last.term);
            }
            if let Some(last) = rd.committed_entries.last() {
                raw.on_applied(last.index);
            }
            for m in rd.persisted_messages {
                raw.step(m).expect("step its own durable vote");
            }
        }
    }

    /// A group gone quiet keeps none of the room its last burst needed: not its log's
    /// entries awaiting persistence, not its leader's window of uncommitted bytes.
    #[test]
    fn a_quiet_group_gives_back_the_room_of_its_last_burst() {
        let storage = MemStorage::with_voters(&[1]);
        let mut cfg = Config::new(1);
        cfg.start = NodeStart::Created;
        let mut raw = RawNode::new(cfg, storage.clone()).expect("raw node");
        raw.campaign().expect("campaign");
        drain(&mut raw, &storage);
        assert_eq!(raw.raft.role, Role::Leader);
        for i in 0..50u8 {
            raw.propose(vec![i; 16], Vec::new()).expect("propose");
        }
        drain(&mut raw, &storage);
        let r = &raw.raft;
        assert!(r.log.unstable.entries.capacity() > 0);
        let uncommitted_room =
            |r: &Raft<MemStorage>| r.leader.as_ref().map(|l| l.uncommitted.capacity());
        assert!(uncommitted_room(r) > Some(0));
        assert!(r.tracker.progress.room() > 1);
        let before = (r.term, r.log.committed, r.log.last_index());
        raw.shrink_buffers();
        let r = &raw.raft;
        assert_eq!(r.log.unstable.entries.capacity(), 0);
        assert_eq!(uncommitted_room(r), Some(0));
        assert_eq!(r.tracker.progress.room(), 1);
        assert_eq!(before, (r.term, r.log.committed, r.log.last_index()));
    }

    /// A candidate's votes are state (its tally): shrinking keeps them. A node whose election
    /// is over keeps none.
    #[test]
    fn shrinking_keeps_a_candidates_votes_and_drops_an_elections_that_is_over() {
        let storage = MemStorage::with_voters(&[1, 2, 3]);
        let mut cfg = Config::new(1);
        cfg.start = NodeStart::Created;
        cfg.pre_vote = false;
        let mut raw = RawNode::new(cfg, storage.clone()).expect("raw node");
        raw.campaign().expect("campaign");
        drain(&mut raw, &storage);
        assert_eq!(raw.raft.role, Role::Candidate);
        raw.shrink_buffers();
        let term = raw.raft.term;
        let mut granted = crate::raft::message::msg(
            crate::proto::raftpb::MessageType::MsgRequestVoteResponse,
            1,
            term,
        );
        granted.from = 2;
        raw.step(granted).expect("step the vote");
        assert_eq!(
            raw.raft.role,
            Role::Leader,
            "its own vote and 2's make a quorum"
        );
        assert!(
            raw.raft.tracker.vote_slots() > 0,
            "the tally's room outlives it"
        );
        raw.shrink_buffers();
        assert_eq!(raw.raft.tracker.vote_slots(), 0);
        assert_eq!(raw.raft.role, Role::Leader);
    }
}
