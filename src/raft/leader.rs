//! The leader side: proposals, replication (per-follower progress, pipelining, fast
//! backtracking, snapshots), heartbeats and read rounds, leases, leader transfer, and
//! membership changes.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;

use super::confchange::{self, Changer};
use super::config::limit;
use super::core::{LeaderState, Raft, Role};
use super::errors::{ConfChangeRejection, DropReason, RaftError, Result, StorageError, invalid};
use super::log::ReplicaLog;
use super::message::msg;
use super::progress::{Progress, ProgressMap, ProgressState, SnapshotStatus, TrackerConfig};
use super::quorum::VoteResult;
use super::read_only::ReadState;
use super::storage::{LogStorage, snapshot_index};
use crate::proto::raftpb::{ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType};

/// Whether a proposal counts against the uncommitted-size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SizeLimit {
    Enforce,
    Ignore,
}

/// What `send_append` does when the follower lacks no entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmptyAppend {
    /// Send an empty append anyway: it carries the commit index (and probes).
    Send,
    Skip,
}

impl LeaderState {
    /// Drops a pending transfer; proposals are accepted again. A TimeoutNow already sent
    /// keeps lease reads off for the term (`timeout_now_sent`).
    pub(super) fn cancel_transfer(&mut self) {
        self.transferee = None;
        self.transfer_elapsed = 0;
    }
}

impl<S: LogStorage> Raft<S> {
    pub(super) fn step_leader(&mut self, m: Message, t: MessageType) -> Result<()> {
        if !self.tracker.progress.contains_key(&m.from)
            && !matches!(
                t,
                MessageType::MsgReadIndex | MessageType::MsgTransferLeader
            )
        {
            return Ok(()); // Not a member (any more): nothing to track.
        }
        match t {
            MessageType::MsgAppendResponse => self.handle_append_response(&m)?,
            MessageType::MsgHeartbeatResponse => self.handle_heartbeat_response(&m)?,
            MessageType::MsgReadIndex => self.handle_read_index(m.from, m.context),
            MessageType::MsgTransferLeader => self.handle_transfer_leader(m.transferee)?,
            _ => {}
        }
        Ok(())
    }

    // ---- proposals --------------------------------------------------------------------

    fn check_can_propose(&self) -> Result<()> {
        if self.role != Role::Leader {
            return Err(RaftError::ProposalDropped(DropReason::NotLeader {
                leader: self.leader_id,
            }));
        }
        if let Some(transferee) = self.lead_transferee() {
            return Err(RaftError::ProposalDropped(
                DropReason::LeaderTransferInProgress { transferee },
            ));
        }
        Ok(())
    }

    /// Appends a batch of normal entries (data, context); returns the last index.
    pub(crate) fn propose_batch<D: Into<Bytes>>(
        &mut self,
        batch: impl IntoIterator<Item = (D, Vec<u8>)>,
    ) -> Result<u64> {
        self.check_can_propose()?;
        let max = limit(self.cfg.max_entry_size);
        let mut ents = Vec::new();
        for (data, context) in batch {
            let data = data.into();
            if data.len() as u64 > max {
                return Err(RaftError::EntryTooLarge {
                    size: data.len() as u64,
                    max,
                });
            }
            // A normal entry: the default type.
            ents.push(Entry {
                data,
                context,
                ..Default::default()
            });
        }
        if ents.is_empty() {
            return Err(RaftError::EmptyProposal);
        }
        let last = self.append_entries(ents, SizeLimit::Enforce)?;
        self.bcast_append();
        Ok(last)
    }

    pub(crate) fn propose_conf_change(&mut self, cc: ConfChangeV2) -> Result<u64> {
        self.check_can_propose()?;
        let pending_index = self.pending_conf_index();
        if pending_index > self.log.applied {
            return Err(RaftError::ProposalDropped(DropReason::ConfChangePending {
                pending_index,
            }));
        }
        let joint = self.tracker.config.voters.is_joint();
        let leave = confchange::is_leave_joint(&cc);
        if joint && !leave {
            return Err(RaftError::ProposalDropped(DropReason::ConfChangeRejected(
                ConfChangeRejection::JointPending,
            )));
        }
        if !joint && leave {
            return Err(RaftError::ProposalDropped(DropReason::ConfChangeRejected(
                ConfChangeRejection::NotJoint,
            )));
        }
        let e = Entry {
            entry_type: EntryType::EntryConfChangeV2 as i32,
            data: cc.encode_to_vec().into(),
            ..Default::default()
        };
        let index = self.append_entries(vec![e], SizeLimit::Enforce)?;
        if let Some(l) = self.leader.as_mut() {
            l.pending_conf_index = index;
        }
        self.bcast_append();
        Ok(index)
    }

    /// Assigns term and indices and appends to our log, within the uncommitted-size limit
    /// unless told to ignore it (the no-op and the automatic leave-joint entry must always
    /// go in).
    pub(super) fn append_entries(
        &mut self,
        mut ents: Vec<Entry>,
        limit_to: SizeLimit,
    ) -> Result<u64> {
        let size = ReplicaLog::<S>::payload_size(&ents);
        let max = limit(self.cfg.max_uncommitted_size);
        let Some(l) = self.leader.as_mut() else {
            return Err(RaftError::ProposalDropped(DropReason::NotLeader {
                leader: self.leader_id,
            }));
        };
        if limit_to == SizeLimit::Enforce
            && l.uncommitted_size > 0
            && size > 0
            && l.uncommitted_size.saturating_add(size) > max
        {
            return Err(RaftError::ProposalDropped(
                DropReason::UncommittedSizeLimit { limit: max },
            ));
        }
        let mut index = self.log.last_index();
        for e in ents.iter_mut() {
            index += 1;
            e.term = self.term;
            e.index = index;
        }
        l.uncommitted.push_back((index, size));
        l.uncommitted_size += size;
        self.log.append(&ents);
        Ok(index)
    }

    /// Advances the commit index from the quorum's matched indices.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let quorum = self.tracker.committed();
        if !self.log.maybe_commit(quorum, self.term) {
            return false;
        }
        let committed = self.log.committed;
        let Some(l) = self.leader.as_mut() else {
            return true;
        };
        while let Some(&(index, size)) = l.uncommitted.front() {
            if index > committed {
                break;
            }
            l.uncommitted.pop_front();
            l.uncommitted_size -= size;
        }
        // Reads that waited for the term's first commit are handled again (any still early
        // go back to waiting).
        for (ctx, from) in std::mem::take(&mut l.read_only.awaiting_commit) {
            self.handle_read_index(from, ctx);
        }
        true
    }

    /// Our own persistence acts as our acknowledgement.
    pub(super) fn self_persisted(&mut self) {
        let persisted = self.log.persisted_index();
        if self.role != Role::Leader {
            return;
        }
        let updated = self
            .tracker
            .progress
            .get_mut(&self.id)
            .is_some_and(|pr| pr.maybe_update(persisted));
        if updated && self.maybe_commit() {
            self.bcast_append();
        }
    }

    // ---- replication ------------------------------------------------------------------

    /// Sends every follower what it lacks, and at least the commit index.
    pub(super) fn bcast_append(&mut self) {
        self.send_append_to_peers(EmptyAppend::Send);
    }

    fn send_append_to_peers(&mut self, empty: EmptyAppend) {
        let ids: Vec<u64> = self
            .tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in ids {
            self.send_append(id, empty);
        }
    }

    /// Sends entries (or a snapshot) to `to` if its window allows; returns whether a
    /// message went out. Empty appends carry the commit index (and probe in `Probe`).
    pub(super) fn send_append(&mut self, to: u64, empty: EmptyAppend) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        let prev = next - 1;
        let (log_term, ents) = match (
            self.log.term(prev),
            self.log
                .entries_from(next, limit(self.cfg.max_size_per_msg)),
        ) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                return self.send_snapshot(to, prev);
            }
            _ => return false,
        };
        if ents.is_empty() && empty == EmptyAppend::Skip {
            return false;
        }
        let (count, bytes) = (ents.len(), ReplicaLog::<S>::encoded_size(&ents));
        let last = ents.last().map_or(prev, |e| e.index);
        let mut m = msg(MessageType::MsgAppend, to, self.term);
        m.index = prev;
        m.log_term = log_term;
        m.entries = ents;
        m.commit = self.log.committed;
        self.send(m);
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_entries(last, count, bytes);
        }
        true
    }

    /// Sends `to` a snapshot at index `at_least` or later, if one is ready (the storage
    /// starts making one otherwise; a later attempt finds it).
    fn send_snapshot(&mut self, to: u64, at_least: u64) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if !pr.recent_active {
            return false;
        }
        let snap = match self.log.snapshot(at_least) {
            Ok(s) => s,
            Err(_) => return false, // Being generated, or unavailable: retried later.
        };
        let index = snapshot_index(&snap);
        if index == 0 || index < at_least {
            return false;
        }
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        let mut m = msg(MessageType::MsgSnapshot, to, self.term);
        m.snapshot = Some(snap);
        self.send(m);
        true
    }

    fn handle_append_response(&mut self, m: &Message) -> Result<()> {
        let last_index = self.log.last_index();
        if !m.reject && m.index > last_index {
            return Err(invalid(format!(
                "ack of index {} beyond last index {last_index}",
                m.index
            )));
        }
        // A follower asks at its last index, in this leader's term: this log holds it.
        if m.reject && m.request_snapshot > last_index {
            return Err(invalid(format!(
                "snapshot request at {} beyond last index {last_index}",
                m.request_snapshot
            )));
        }
        let from = m.from;
        let next_probe = if m.reject && m.log_term > 0 {
            self.log.find_conflict_by_term(m.reject_hint, m.log_term).0
        } else {
            m.reject_hint
        };
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        pr.committed_index = pr.committed_index.max(m.commit);
        if m.reject && m.request_snapshot > 0 {
            // The follower's applied state is gone: it needs a snapshot at or past the
            // index it names, whatever its log holds. One on its way already is left to
            // finish (`report_snapshot` resumes); asked past what this leader applied (it
            // has not learned that commit yet), no snapshot that recent can be made. The
            // follower asks again either way.
            let sending = pr.state == ProgressState::Snapshot;
            if !sending && m.request_snapshot <= self.log.applied {
                pr.become_probe();
                self.send_snapshot(from, m.request_snapshot);
            }
            return Ok(());
        }
        if m.reject {
            if pr.maybe_decr_to(m.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, EmptyAppend::Send);
            }
            return Ok(());
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= self.log.first_index() => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.send_append(from, EmptyAppend::Send);
        }
        while self.send_append(from, EmptyAppend::Skip) {}
        if self.lead_transferee() == Some(from) && matched == self.log.last_index() {
            self.send_timeout_now(from);
        }
        Ok(())
    }

    // ---- heartbeats, reads and the lease ----------------------------------------------

    /// Broadcasts a heartbeat round; its acknowledgements confirm leadership for every read
    /// that joined it and renew the lease.
    pub(super) fn bcast_heartbeat(&mut self) {
        let now = self.now;
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let round = l.read_only.start_round(now);
        let committed = self.log.committed;
        let targets: Vec<(u64, u64)> = self
            .tracker
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, pr)| (*id, pr.matched.min(committed)))
            .collect();
        for (to, commit) in targets {
            let mut m = msg(MessageType::MsgHeartbeat, to, self.term);
            m.commit = commit;
            m.read_round = round;
            self.send(m);
        }
        self.on_read_round_acked();
    }

    /// Starts a round if reads are waiting for one; called once per Ready so that all reads
    /// that arrived in between share it.
    pub(super) fn flush_read_round(&mut self) {
        if self.needs_read_round() {
            self.bcast_heartbeat();
        }
    }

    /// Leader: reads wait for a heartbeat round that has not been sent yet.
    pub(super) fn needs_read_round(&self) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|l| l.read_only.needs_round())
    }

    fn last_sent_round(&self) -> u64 {
        self.leader
            .as_ref()
            .map_or(0, |l| l.read_only.last_sent_round())
    }

    fn handle_heartbeat_response(&mut self, m: &Message) -> Result<()> {
        if m.read_round > self.last_sent_round() {
            return Err(invalid(format!(
                "ack of read round {} that was never sent",
                m.read_round
            )));
        }
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return Ok(());
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        pr.read_round = pr.read_round.max(m.read_round);
        pr.committed_index = pr.committed_index.max(m.commit);
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last_index {
            self.send_append(m.from, EmptyAppend::Send);
        }
        self.on_read_round_acked();
        Ok(())
    }

    fn on_read_round_acked(&mut self) {
        let round = self
            .tracker
            .quorum_read_round(self.id, self.last_sent_round());
        let lease = (self.cfg.election_tick - self.cfg.lease_margin_ticks) as u64;
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        if let Some(sent) = l.read_only.sent_tick(round) {
            l.lease_until = l.lease_until.max(sent + lease);
        }
        for read in l.read_only.release(round) {
            self.respond_read(read.from, read.ctx, read.index);
        }
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Whether the leader may answer reads from its lease without a round.
    pub fn lease_valid(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| {
            l.transferee.is_none() && !l.timeout_now_sent && self.now < l.lease_until
        }) && self.lease_reads()
            && self.committed_in_current_term()
    }

    pub(super) fn handle_read_index(&mut self, from: u64, ctx: Vec<u8>) {
        let index = self.log.committed;
        // A single voter's round is acknowledged as it starts: no special case needed.
        let at_once = self.lease_valid();
        let in_term = self.committed_in_current_term();
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        if !in_term {
            // Our commit index may lag the true one until our no-op commits.
            l.read_only.awaiting_commit.push((ctx, from));
        } else if at_once {
            self.respond_read(from, ctx, index);
        } else {
            l.read_only.push(ctx, from, index);
        }
    }

    fn respond_read(&mut self, from: u64, ctx: Vec<u8>, index: u64) {
        if from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: ctx,
            });
        } else {
            let mut m = msg(MessageType::MsgReadIndexResponse, from, self.term);
            m.index = index;
            m.context = ctx;
            self.send(m);
        }
    }

    // ---- leader transfer --------------------------------------------------------------

    pub(super) fn handle_transfer_leader(&mut self, target: u64) -> Result<()> {
        if target == self.id {
            // Asking to keep the lead cancels a pending transfer.
            self.cancel_transfer();
            return Ok(());
        }
        let refuse = |reason| {
            RaftError::ProposalDropped(DropReason::InvalidTransferTarget { target, reason })
        };
        let Some(pr) = self.tracker.progress.get(&target) else {
            return Err(refuse("not a member"));
        };
        if pr.is_learner {
            return Err(refuse("a learner cannot lead"));
        }
        let caught_up = pr.matched == self.log.last_index();
        let Some(l) = self.leader.as_mut() else {
            return Err(RaftError::ProposalDropped(DropReason::NotLeader {
                leader: self.leader_id,
            }));
        };
        if l.transferee == Some(target) {
            return Ok(());
        }
        // The transfer must finish within one election timeout or it is abandoned.
        l.transfer_elapsed = 0;
        l.transferee = Some(target);
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, EmptyAppend::Send);
        }
        Ok(())
    }

    /// Drops a pending transfer (see `LeaderState::cancel_transfer`).
    pub(super) fn cancel_transfer(&mut self) {
        if let Some(l) = self.leader.as_mut() {
            l.cancel_transfer();
        }
    }

    fn send_timeout_now(&mut self, to: u64) {
        if let Some(l) = self.leader.as_mut() {
            l.timeout_now_sent = true;
        }
        self.send(msg(MessageType::MsgTimeoutNow, to, self.term));
    }

    // ---- snapshots and reachability ---------------------------------------------------

    pub(crate) fn report_snapshot(&mut self, to: u64, status: SnapshotStatus) {
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return;
        };
        if self.role != Role::Leader || pr.state != ProgressState::Snapshot {
            return;
        }
        if status == SnapshotStatus::Failed {
            pr.pending_snapshot = 0;
        }
        // A snapshot the follower asked for at an index it had matched already: its log
        // matches there once it lands, so replication goes on from there (its answer to
        // the snapshot would not move its match, and so would not unpause a probe).
        if status == SnapshotStatus::Finished && pr.matched >= pr.pending_snapshot {
            pr.become_probe();
            pr.become_replicate();
            return;
        }
        // Wait for the follower's append response (or the next heartbeat) before sending.
        pr.become_probe();
        pr.probe_sent = true;
    }

    pub(crate) fn report_unreachable(&mut self, to: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.tracker.progress.get_mut(&to)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    // ---- membership -------------------------------------------------------------------

    /// Applies a committed conf change (called by the application when it applies the
    /// entry) and returns the new configuration.
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        let (config, progress) = Changer::new(&self.tracker, self.log.last_index()).change(cc)?;
        Ok(self.switch_to_config(config, progress))
    }

    fn switch_to_config(&mut self, config: TrackerConfig, progress: ProgressMap) -> ConfState {
        self.tracker.config = config;
        self.tracker.progress = progress;
        let cs = self.tracker.config.to_conf_state();
        if self.role != Role::Leader {
            return cs;
        }
        if !self.promotable() {
            // Removed (or demoted): stop leading; the others elect among themselves.
            self.become_follower(self.term, 0);
            return cs;
        }
        if self
            .lead_transferee()
            .is_some_and(|t| !self.tracker.is_voter(t))
        {
            self.cancel_transfer();
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            self.send_append_to_peers(EmptyAppend::Skip);
        }
        cs
    }

    /// The application applied up to `index`. A leader in an auto-leave joint configuration
    /// proposes leaving it once the entry that entered it is applied.
    pub(crate) fn applied_to(&mut self, index: u64) {
        self.log.applied_to(index);
        let cfg = &self.tracker.config;
        if self.role == Role::Leader
            && cfg.voters.is_joint()
            && cfg.auto_leave
            && self.pending_conf_index() <= self.log.applied
        {
            // An empty ConfChangeV2, which encodes to no bytes, leaves the joint config.
            let leave = Entry {
                entry_type: EntryType::EntryConfChangeV2 as i32,
                ..Default::default()
            };
            if let Ok(index) = self.append_entries(vec![leave], SizeLimit::Ignore) {
                if let Some(l) = self.leader.as_mut() {
                    l.pending_conf_index = index;
                }
                self.bcast_append();
            }
        }
    }

    /// Real time passed that the tick clock did not see (the store's ticks fell behind
    /// it): the lease is void, and so is any lease a round already sent could grant.
    /// Timers and the followers' activity stand (unlike `wake`).
    pub(crate) fn void_lease(&mut self) {
        // Jumping the clock by an election timeout expires every earlier round's lease.
        self.now += self.cfg.election_tick as u64;
        if let Some(l) = self.leader.as_mut() {
            l.lease_until = 0;
        }
    }

    /// The store resumes ticking after a pause (hibernation). Real time passed that the tick
    /// clock did not see, so the lease — and any lease a round sent before the pause could
    /// grant — is void; timers restart, and a leader does not count the pause against its
    /// followers in the next quorum check.
    pub(crate) fn wake(&mut self) {
        self.void_lease();
        self.election_elapsed = 0;
        if let Some(l) = self.leader.as_mut() {
            l.heartbeat_elapsed = 0;
            for pr in self.tracker.progress.values_mut() {
                pr.recent_active = true;
            }
        }
    }

    /// Leader: everyone has everything and nothing is pending. Follower: a leader is known
    /// and was heard from within the election timeout, and no snapshot it asked for is
    /// awaited (it must go on asking). A quiescent group may stop ticking (call `wake`
    /// before ticking it again).
    pub fn is_quiescent(&self) -> bool {
        self.is_quiescent_ignoring(|_| false)
    }

    /// `is_quiescent`, with the leader disregarding the followers `absent` names (peers on
    /// stores known to be down), as long as the others — itself included — still form a
    /// quorum: a dead peer must not keep the group awake, and a leader that lost its
    /// quorum must stay awake so that check-quorum deposes it.
    pub fn is_quiescent_ignoring(&self, absent: impl Fn(u64) -> bool) -> bool {
        match (self.role, self.leader.as_ref()) {
            (Role::Leader, Some(l)) => {
                let last = self.log.last_index();
                let committed = self.log.committed;
                let up_to_date = |id: u64, pr: &Progress| {
                    id == self.id || (pr.matched == last && pr.committed_index == committed)
                };
                let present: HashMap<u64, bool> = self
                    .tracker
                    .progress
                    .keys()
                    .filter(|&&id| id == self.id || !absent(id))
                    .map(|&id| (id, true))
                    .collect();
                committed == last
                    && self.log.persisted_index() == last
                    && l.transferee.is_none()
                    && l.read_only.is_empty()
                    && l.pending_conf_index <= self.log.applied
                    && self
                        .tracker
                        .progress
                        .iter()
                        .all(|(&id, pr)| up_to_date(id, pr) || (id != self.id && absent(id)))
                    && self.tracker.config.voters.vote_result(&present) == VoteResult::Won
            }
            (Role::Follower, _) => {
                self.leader_id != 0
                    && self.election_elapsed < self.cfg.election_tick
                    && self.requested_snapshot.is_none()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb::HardState;
    use crate::raft::config::{Config, NodeStart};
    use crate::raft::core::CampaignKind;
    use crate::raft::inflights::Inflights;
    use crate::raft::storage::MemStorage;

    /// Leader 1 of {1, 2, 3} in term 2 over entries 1..=10 of term 1, the first `compacted`
    /// of them in a snapshot; its no-op is 11. What it sent while winning is dropped.
    fn leader(compacted: u64) -> Raft<MemStorage> {
        let store = MemStorage::with_voters(&[1, 2, 3]);
        {
            let mut s = store.wl();
            let ents: Vec<Entry> = (1..=10)
                .map(|index| Entry {
                    index,
                    term: 1,
                    ..Default::default()
                })
                .collect();
            s.append(&ents).unwrap();
            s.set_hard_state(HardState {
                term: 1,
                vote: 0,
                commit: 10,
            });
            if compacted > 0 {
                let cs = ConfState {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                };
                s.create_snapshot(compacted, cs, Bytes::new()).unwrap();
            }
        }
        let mut cfg = Config::new(1);
        cfg.start = NodeStart::Created;
        let mut r = Raft::new(cfg, store).unwrap();
        r.hup(CampaignKind::Transfer).unwrap();
        for from in [1, 2] {
            r.step(reply(MessageType::MsgRequestVoteResponse, from, r.term))
                .unwrap();
        }
        assert_eq!((r.role, r.term, r.log.last_index()), (Role::Leader, 2, 11));
        r.msgs.clear();
        r.persisted_msgs.clear();
        r
    }

    fn reply(t: MessageType, from: u64, term: u64) -> Message {
        let mut m = msg(t, 1, term);
        m.from = from;
        m
    }

    fn ack(from: u64, index: u64) -> Message {
        let mut m = reply(MessageType::MsgAppendResponse, from, 2);
        m.index = index;
        m
    }

    fn rejection(from: u64, index: u64, hint: u64, hint_term: u64) -> Message {
        let mut m = ack(from, index);
        (m.reject, m.reject_hint, m.log_term) = (true, hint, hint_term);
        m
    }

    fn sent_to(r: &Raft<MemStorage>, to: u64) -> Vec<Message> {
        r.msgs.iter().filter(|m| m.to == to).cloned().collect()
    }

    /// A follower that cannot name the term at its hint (its log there is compacted) still
    /// says where its log ends: probing resumes right there, not at the start of the log.
    #[test]
    fn a_rejection_without_a_hint_term_probes_from_the_hinted_index() {
        let mut r = leader(0);
        r.step(rejection(2, 10, 6, 0)).unwrap();
        let sent = sent_to(&r, 2);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].index, sent[0].log_term), (6, 1));
        // With a term, the leader skips to the last of its entries not above that term.
        let mut r = leader(0);
        r.step(rejection(2, 10, 6, 1)).unwrap();
        assert_eq!(sent_to(&r, 2)[0].index, 6);
    }

    /// A rejection while replicating means the optimistic window was wrong: the follower
    /// goes back to probing from its match.
    #[test]
    fn a_rejection_sends_a_replicating_follower_back_to_probing() {
        let mut r = leader(0);
        r.step(ack(2, 11)).unwrap();
        assert_eq!(r.tracker.progress[&2].state, ProgressState::Replicate);
        r.propose_batch([(Bytes::from_static(b"x"), Vec::new())])
            .unwrap();
        r.propose_batch([(Bytes::from_static(b"y"), Vec::new())])
            .unwrap();
        assert_eq!(r.tracker.progress[&2].next_idx, 14);
        r.msgs.clear();
        r.step(rejection(2, 12, 11, 2)).unwrap();
        let pr = &r.tracker.progress[&2];
        assert_eq!((pr.state, pr.next_idx), (ProgressState::Probe, 12));
        assert_eq!(sent_to(&r, 2).len(), 1, "one probe");
    }

    /// A late acknowledgement of an entry the leader no longer has does not end the wait for
    /// a snapshot: the follower still needs it, and a second one is not sent.
    #[test]
    fn an_ack_below_the_log_keeps_a_follower_waiting_for_its_snapshot() {
        let mut r = leader(8);
        r.tracker.progress.get_mut(&3).unwrap().become_snapshot(8);
        r.step(ack(3, 6)).unwrap();
        let pr = &r.tracker.progress[&3];
        assert_eq!((pr.state, pr.matched), (ProgressState::Snapshot, 6));
        assert_eq!(pr.pending_snapshot, 8);
        assert!(sent_to(&r, 3).is_empty(), "{:?}", sent_to(&r, 3));
        // Acknowledging the snapshot resumes replication from it.
        r.step(ack(3, 8)).unwrap();
        let pr = &r.tracker.progress[&3];
        assert_eq!((pr.state, pr.matched), (ProgressState::Replicate, 8));
        assert_eq!(sent_to(&r, 3)[0].index, 8);
    }

    /// A heartbeat answer frees a slot of a full window (the pipeline may have stalled on a
    /// lost acknowledgement), never one of a window with room: its appends are in flight.
    #[test]
    fn a_heartbeat_answer_frees_a_window_slot_only_when_the_window_is_full() {
        let mut r = leader(0);
        r.step(ack(2, 11)).unwrap();
        r.tracker.progress.get_mut(&2).unwrap().inflights = Inflights::new(2, u64::MAX);
        let in_flight = |r: &Raft<MemStorage>| r.tracker.progress[&2].inflights.count();
        let heartbeat_answer = || reply(MessageType::MsgHeartbeatResponse, 2, 2);
        r.propose_batch([(Bytes::from_static(b"x"), Vec::new())])
            .unwrap();
        assert_eq!(in_flight(&r), 1);
        r.step(heartbeat_answer()).unwrap();
        assert_eq!(in_flight(&r), 1, "room left: nothing freed");
        r.propose_batch([(Bytes::from_static(b"y"), Vec::new())])
            .unwrap();
        assert_eq!(in_flight(&r), 2);
        r.step(heartbeat_answer()).unwrap();
        assert_eq!(in_flight(&r), 1, "a full window gives one slot back");
    }

    /// An unreachable follower stops the optimistic pipeline and is probed; one waiting for a
    /// snapshot keeps waiting (the transport reports that transfer on its own).
    #[test]
    fn an_unreachable_follower_is_probed_unless_a_snapshot_is_on_its_way() {
        let mut r = leader(8);
        r.step(ack(2, 11)).unwrap();
        assert_eq!(r.tracker.progress[&2].state, ProgressState::Replicate);
        r.report_unreachable(2);
        assert_eq!(r.tracker.progress[&2].state, ProgressState::Probe);
        r.tracker.progress.get_mut(&3).unwrap().become_snapshot(8);
        r.report_unreachable(3);
        let pr = &r.tracker.progress[&3];
        assert_eq!(
            (pr.state, pr.pending_snapshot),
            (ProgressState::Snapshot, 8)
        );
    }

    /// A snapshot report is about a transfer in progress: for a follower not waiting for one
    /// (a late or duplicated report) it changes nothing.
    #[test]
    fn a_snapshot_report_for_a_follower_not_waiting_for_one_changes_nothing() {
        let mut r = leader(8);
        r.step(ack(2, 11)).unwrap();
        for status in [SnapshotStatus::Finished, SnapshotStatus::Failed] {
            r.report_snapshot(2, status);
            let pr = &r.tracker.progress[&2];
            assert_eq!((pr.state, pr.next_idx), (ProgressState::Replicate, 12));
        }
    }

    /// An acknowledgement of the last read round sent counts; one of a round not sent yet
    /// is forged or corrupt, and refused.
    #[test]
    fn an_ack_of_the_last_round_sent_counts_and_of_the_next_is_refused() {
        let mut r = leader(0);
        r.bcast_heartbeat();
        r.bcast_heartbeat();
        let sent = r.last_sent_round();
        let answer = |round| {
            let mut m = reply(MessageType::MsgHeartbeatResponse, 2, 2);
            m.read_round = round;
            m
        };
        let early = r.step(answer(sent + 1));
        assert!(
            matches!(early, Err(RaftError::InvalidMessage(_))),
            "{early:?}"
        );
        assert_eq!(r.tracker.progress[&2].read_round, 0);
        r.step(answer(sent)).unwrap();
        assert_eq!(r.tracker.progress[&2].read_round, sent);
    }
}
