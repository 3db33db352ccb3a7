//! The Raft state machine: roles, terms, elections and the follower side of replication.
//! The leader side lives in `leader.rs`. Everything here is deterministic: time is `tick`,
//! randomness comes from the node's seeded generator, and output is queued messages.

use std::collections::VecDeque;

use super::confchange;
use super::config::{Config, NodeStart, ReadOnlyOption, limit};
use super::errors::{DropReason, RaftError, Result, invalid};
use super::leader::SizeLimit;
use super::log::ReplicaLog;
use super::message::{TRANSFER_CONTEXT, msg, validate};
use super::progress::ProgressTracker;
use super::quorum::VoteResult;
use super::read_only::{ReadOnly, ReadState};
use super::rng::Rng;
use super::storage::LogStorage;
use crate::proto::raftpb::{EntryType, HardState, Message, MessageType};

/// A node's part in its group's current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows the leader of the term, if it knows one. Every node starts here.
    Follower,
    /// Polling the voters for term + 1 without raising its term or vote (pre-vote), so a
    /// partitioned node cannot disturb the group.
    PreCandidate,
    /// Raised its term, voted for itself and asks the others for votes.
    Candidate,
    /// Won the election of the current term: takes proposals and decides what commits.
    Leader,
}

/// Why a node starts an election. Each kind decides which safety checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignKind {
    /// The election timer fired: no leader was heard from for a randomized timeout.
    Timeout,
    /// The application asked (`RawNode::campaign`). Refused while this node is inside a
    /// leader's lease: its own vote would break the quorum that lease rests on.
    Requested,
    /// The leader asked us to take over (`TimeoutNow`): no pre-vote, and the vote request
    /// is marked so that voters set their leases aside (the leader gave its lease up).
    Transfer,
}

/// Why a campaign was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CampaignRefusal {
    /// This node already leads the current term.
    #[error("this node is already the leader")]
    AlreadyLeader,
    /// This node is a learner or not in the configuration.
    #[error("this node is not a voter")]
    NotVoter,
    /// A committed conf change is not applied yet: votes would be counted against the wrong
    /// configuration.
    #[error("a committed configuration change is not applied yet")]
    UnappliedConfChange,
    /// A `Requested` campaign while check-quorum keeps this node inside a leader's lease, or
    /// inside the boot guard after a restart.
    #[error("this node is inside the lease of leader {leader} (0: the boot guard after a restart)")]
    InLease {
        /// The leader whose lease holds (0: the boot guard).
        leader: u64,
    },
    /// This node asked for a snapshot (its applied state is gone) and has not restored
    /// one: as leader it would serve that lost state.
    #[error("this node waits for the snapshot it asked for")]
    AwaitingSnapshot,
}

/// A snapshot a node asked for (`RawNode::request_snapshot`), until it restores one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotRequest {
    /// Not sent yet: the request goes once the log ends in the current leader's term
    /// (that leader then holds every entry of it). Meanwhile the node appends as usual.
    Waiting,
    /// Sent for a snapshot at `at` (the log's last index then) or later: the node appends
    /// nothing more until it restores one, which so drops no entry it acknowledged.
    Sent {
        /// The index the snapshot must reach.
        at: u64,
    },
}

/// Why `RawNode::request_snapshot` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRequestRefusal {
    /// A leader has no one to ask; it must step down first.
    #[error("a leader cannot ask for a snapshot")]
    Leader,
}

/// Volatile state the application may want to observe (not persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of in the current term (0: none).
    pub leader_id: u64,
    /// This node's role in the current term.
    pub role: Role,
}

/// What a node keeps only while it leads. `become_leader` creates it and every other
/// transition drops it, so a step-down cannot leave any of it behind.
pub(super) struct LeaderState {
    /// The node a transfer is under way to.
    pub(super) transferee: Option<u64>,
    /// Ticks since the pending transfer began; abandoned after an election timeout. Its own
    /// timer, so that transfer requests cannot postpone the check-quorum deadline.
    pub(super) transfer_elapsed: usize,
    /// Index of the last conf change appended; no new one until it is applied.
    pub(super) pending_conf_index: u64,
    /// Payload bytes of the uncommitted entries, with their indices, and their sum.
    pub(super) uncommitted: VecDeque<(u64, u64)>,
    pub(super) uncommitted_size: u64,
    /// Reads waiting for a heartbeat round (or for the first commit of the term).
    pub(super) read_only: ReadOnly,
    pub(super) heartbeat_elapsed: usize,
    /// Reads may be served locally before this tick.
    pub(super) lease_until: u64,
    /// A TimeoutNow went out this term. It may arrive arbitrarily late, even after the
    /// transfer was abandoned, and its forced campaign ignores followers' leases, so no
    /// lease read is safe for the rest of the term.
    pub(super) timeout_now_sent: bool,
}

impl LeaderState {
    fn shrink_buffers(&mut self) {
        self.uncommitted.shrink_to_fit();
        self.read_only.shrink_buffers();
    }

    fn new(pending_conf_index: u64) -> Self {
        LeaderState {
            transferee: None,
            transfer_elapsed: 0,
            pending_conf_index,
            uncommitted: VecDeque::new(),
            uncommitted_size: 0,
            read_only: ReadOnly::new(),
            heartbeat_elapsed: 0,
            lease_until: 0,
            timeout_now_sent: false,
        }
    }
}

/// One node of a Raft group: the pure state machine `RawNode` drives. Its public methods
/// only read state; every change goes through `RawNode`.
pub struct Raft<S: LogStorage> {
    pub(crate) id: u64,
    pub(crate) term: u64,
    pub(crate) vote: u64,
    pub(crate) log: ReplicaLog<S>,
    pub(crate) tracker: ProgressTracker,
    pub(crate) role: Role,
    pub(crate) leader_id: u64,
    /// Present exactly while this node leads (`role == Leader`).
    pub(super) leader: Option<Box<LeaderState>>,
    pub(crate) read_states: Vec<ReadState>,
    /// Contexts of this node's own reads that were queued when it stopped leading: they
    /// will never be confirmed, and the application answers each with an error.
    pub(crate) dropped_reads: Vec<Vec<u8>>,
    /// Messages that may be sent at once.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may only be sent once everything handed out for persistence so far is
    /// durable (votes, append acknowledgements): `Ready::persisted_messages`.
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) election_elapsed: usize,
    randomized_election_timeout: usize,
    /// Ticks since the node started; the leader's lease clock.
    pub(crate) now: u64,
    /// With check-quorum, a freshly started node refuses votes for one election timeout:
    /// it may have acknowledged a leader (granting it a lease) before a restart.
    boot_guard: bool,
    /// A snapshot this node asked for (`request_snapshot`), until it restores one.
    /// Meanwhile it hands out no committed entry (the snapshot covers them) and does not
    /// campaign.
    pub(crate) requested_snapshot: Option<SnapshotRequest>,
    rng: Rng,
    pub(crate) cfg: Config,
}

impl<S: LogStorage> Raft<S> {
    /// Gives back the room of buffers that hold nothing now (see `RawNode::shrink_buffers`).
    pub(crate) fn shrink_buffers(&mut self) {
        self.log.unstable.shrink_buffers();
        self.tracker.progress.shrink_buffers();
        if !matches!(self.role, Role::PreCandidate | Role::Candidate) {
            self.tracker.drop_votes();
        }
        if let Some(l) = self.leader.as_mut() {
            l.shrink_buffers();
        }
    }
}

impl<S: LogStorage> Raft<S> {
    pub(crate) fn new(cfg: Config, store: S) -> Result<Self> {
        cfg.validate()?;
        let state = store.initial_state()?;
        let log = ReplicaLog::new(store, cfg.applied, limit(cfg.max_committed_size_per_ready))?;
        let mut tracker =
            ProgressTracker::new(cfg.max_inflight_msgs, limit(cfg.max_inflight_bytes));
        let (config, progress) =
            confchange::restore(&tracker, &state.conf_state, log.last_index())?;
        tracker.config = config;
        tracker.progress = progress;
        let mut r = Raft {
            id: cfg.id,
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            log,
            tracker,
            role: Role::Follower,
            leader_id: 0,
            leader: None,
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            election_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            now: 0,
            boot_guard: cfg.check_quorum && cfg.start == NodeStart::Restarted,
            requested_snapshot: None,
            rng: Rng::new(cfg.seed ^ cfg.id.rotate_left(32)),
            cfg,
        };
        r.become_follower(r.term, 0);
        Ok(r)
    }

    /// This node's id in the group.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Whom this node voted for in the current term (0: nobody).
    pub fn vote(&self) -> u64 {
        self.vote
    }

    /// Follower, pre-candidate, candidate or leader.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of in the current term (0: none).
    pub fn leader_id(&self) -> u64 {
        self.leader_id
    }

    /// The log: its indices, terms and commit and apply cursors.
    pub fn log(&self) -> &ReplicaLog<S> {
        &self.log
    }

    /// Reads confirmed since the last `Ready` took them.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Term, vote and commit index: what `Ready::hard_state` hands out to persist.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Leader and role; `Ready::soft_state` reports each change.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            role: self.role,
        }
    }

    /// The configuration the node was created with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A snapshot this node asked for, until it restores one (`RawNode::request_snapshot`).
    pub fn requested_snapshot(&self) -> Option<SnapshotRequest> {
        self.requested_snapshot
    }

    /// A voter may campaign; learners and removed nodes may not.
    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    /// Queues a message to send at once. Every message leaves through here or
    /// `send_persisted`, stamped with our id; it carries our term unless it is a forwarded
    /// request, which stays term-less so that a leader of a newer term still answers it.
    pub(super) fn send(&mut self, m: Message) {
        let m = self.stamp(m);
        self.msgs.push(m);
    }

    /// Queues a message that claims durability of our log or vote: it goes out only after
    /// the Ready that persists it (`Ready::persisted_messages`).
    pub(super) fn send_persisted(&mut self, m: Message) {
        let m = self.stamp(m);
        self.persisted_msgs.push(m);
    }

    fn stamp(&self, mut m: Message) -> Message {
        m.from = self.id;
        let forwarded = matches!(
            MessageType::try_from(m.msg_type),
            Ok(MessageType::MsgReadIndex | MessageType::MsgTransferLeader)
        );
        if m.term == 0 && !forwarded {
            m.term = self.term;
        }
        m
    }

    // ---- roles ------------------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = 0;
            // A request's index was chosen against the last leader's log: it is chosen
            // again once the log ends in the new leader's term.
            if let Some(SnapshotRequest::Sent { .. }) = self.requested_snapshot {
                self.requested_snapshot = Some(SnapshotRequest::Waiting);
            }
        }
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.randomized_election_timeout = self.rng.range(
            self.cfg.election_tick as u64,
            2 * self.cfg.election_tick as u64,
        ) as usize;
        self.tracker.reset_votes();
        let next = self.log.last_index() + 1;
        for pr in self.tracker.progress.values_mut() {
            let learner = pr.is_learner;
            *pr = super::progress::Progress::new(
                next,
                self.tracker.max_inflight,
                self.tracker.max_inflight_bytes,
                learner,
            );
        }
        let Some(mut leader) = self.leader.take() else {
            return;
        };
        // Reads that will never be confirmed: our own come back in the Ready; a follower
        // that forwarded one is told, so it can fail it at once instead of timing out.
        for (ctx, from) in leader.read_only.clear() {
            if from == self.id {
                self.dropped_reads.push(ctx);
            } else {
                let mut m = msg(MessageType::MsgReadIndexResponse, from, 0);
                m.reject = true;
                m.context = ctx;
                self.send(m);
            }
        }
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader_id;
    }

    fn become_pre_candidate(&mut self) {
        // Neither the term nor the vote changes: a pre-vote round disturbs nobody.
        self.role = Role::PreCandidate;
        self.leader_id = 0;
        self.tracker.reset_votes();
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        let persisted = self.log.persisted_index();
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.matched = persisted;
            pr.become_replicate();
        }
        // Conf changes proposed by an earlier leader may be uncommitted; wait for them.
        self.leader = Some(Box::new(LeaderState::new(self.log.last_index())));
        // The no-op (an empty normal entry) lets this leader commit (and so learn)
        // everything before it.
        let noop = crate::proto::raftpb::Entry::default();
        // Forced past the uncommitted-size limit, it cannot fail.
        let _ = self.append_entries(vec![noop], SizeLimit::Ignore);
    }

    // ---- time -------------------------------------------------------------------------

    pub(crate) fn tick(&mut self) {
        self.now += 1;
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.boot_guard = false;
        }
        // A node waiting for a snapshot it asked for cannot campaign: its timer runs on
        // (it votes as any follower that has not heard from a leader).
        let may_campaign = self.promotable() && self.requested_snapshot.is_none();
        if may_campaign && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            // A refusal (unapplied conf change) is retried at the next timeout.
            let _ = self.hup(CampaignKind::Timeout);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.tracker.quorum_active(self.id) {
                self.become_follower(self.term, 0);
                return;
            }
        }
        let (election_tick, heartbeat_tick) = (self.cfg.election_tick, self.cfg.heartbeat_tick);
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        if l.transferee.is_some() {
            l.transfer_elapsed += 1;
            if l.transfer_elapsed >= election_tick {
                // A transfer that did not finish within an election timeout is abandoned.
                l.cancel_transfer();
            }
        }
        l.heartbeat_elapsed += 1;
        if l.heartbeat_elapsed >= heartbeat_tick {
            l.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    /// Leader: the node a transfer is under way to.
    pub fn lead_transferee(&self) -> Option<u64> {
        self.leader.as_ref().and_then(|l| l.transferee)
    }

    /// Leader: the index of the last membership change it appended (0 when not leading).
    pub fn pending_conf_index(&self) -> u64 {
        self.leader.as_ref().map_or(0, |l| l.pending_conf_index)
    }

    /// Leader: payload bytes of its uncommitted entries (0 when not leading).
    pub fn uncommitted_size(&self) -> u64 {
        self.leader.as_ref().map_or(0, |l| l.uncommitted_size)
    }

    /// Ticks without a leader after which this node campaigns; redrawn from
    /// `[election_tick, 2*election_tick)` whenever it becomes follower, candidate or leader.
    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    // ---- elections --------------------------------------------------------------------

    /// Starts an election of the given kind (pre-vote first if configured, except for a
    /// transfer), or says why not.
    pub(crate) fn hup(&mut self, kind: CampaignKind) -> Result<(), CampaignRefusal> {
        if self.role == Role::Leader {
            return Err(CampaignRefusal::AlreadyLeader);
        }
        if !self.promotable() {
            return Err(CampaignRefusal::NotVoter);
        }
        if self.has_unapplied_conf_change() {
            return Err(CampaignRefusal::UnappliedConfChange);
        }
        if self.requested_snapshot.is_some() {
            return Err(CampaignRefusal::AwaitingSnapshot);
        }
        if kind == CampaignKind::Requested && self.in_lease() {
            return Err(CampaignRefusal::InLease {
                leader: self.leader_id,
            });
        }
        if self.cfg.pre_vote && kind != CampaignKind::Transfer {
            self.campaign_pre_vote();
        } else {
            self.campaign(kind);
        }
        Ok(())
    }

    /// A node that has not applied a committed conf change may count votes with the wrong
    /// configuration, so it waits.
    fn has_unapplied_conf_change(&self) -> bool {
        // Below the first index lies a snapshot, whose configuration is already ours.
        let lo = (self.log.applied + 1).max(self.log.first_index());
        let hi = self.log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.log.slice(lo, hi, u64::MAX) {
            Ok(ents) => ents
                .iter()
                .any(|e| e.entry_type != EntryType::EntryNormal as i32),
            Err(_) => true,
        }
    }

    fn vote_request(&self, t: MessageType, to: u64, term: u64, kind: CampaignKind) -> Message {
        let mut m = msg(t, to, term);
        m.index = self.log.last_index();
        m.log_term = self.log.last_term();
        if kind == CampaignKind::Transfer {
            m.context = TRANSFER_CONTEXT.to_vec();
        }
        m
    }

    fn campaign_pre_vote(&mut self) {
        self.become_pre_candidate();
        if self.tracker.record_vote(self.id, true) == VoteResult::Won {
            self.campaign(CampaignKind::Timeout);
            return;
        }
        let term = self.term + 1;
        for id in self.tracker.voter_ids() {
            if id != self.id {
                let kind = CampaignKind::Timeout;
                let m = self.vote_request(MessageType::MsgRequestPreVote, id, term, kind);
                self.send(m);
            }
        }
    }

    fn campaign(&mut self, kind: CampaignKind) {
        self.become_candidate();
        // Our own vote counts only once it is durable: it comes back as a message after the
        // Ready that persists it.
        let own = msg(MessageType::MsgRequestVoteResponse, self.id, self.term);
        self.send_persisted(own);
        for id in self.tracker.voter_ids() {
            if id != self.id {
                let m = self.vote_request(MessageType::MsgRequestVote, id, self.term, kind);
                self.send(m);
            }
        }
    }

    /// Recently heard from a leader (or just started) with check-quorum: votes are refused.
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.leader_id != 0 || self.boot_guard)
            && self.election_elapsed < self.cfg.election_tick
    }

    fn handle_vote_request(&mut self, m: &Message, t: MessageType) {
        let pre = t == MessageType::MsgRequestPreVote;
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader_id == 0)
            || (pre && m.term > self.term);
        let resp_type = if pre {
            MessageType::MsgRequestPreVoteResponse
        } else {
            MessageType::MsgRequestVoteResponse
        };
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            // Answer with the candidate's term: a pre-vote grant must not look stale to it.
            let resp = msg(resp_type, m.from, m.term);
            if pre {
                self.send(resp);
            } else {
                self.election_elapsed = 0;
                self.vote = m.from;
                self.send_persisted(resp);
            }
        } else {
            let mut resp = msg(resp_type, m.from, self.term);
            resp.reject = true;
            self.send(resp);
        }
    }

    fn handle_vote_response(&mut self, m: &Message) {
        match self.tracker.record_vote(m.from, !m.reject) {
            VoteResult::Won if self.role == Role::PreCandidate => {
                self.campaign(CampaignKind::Timeout)
            }
            VoteResult::Won => {
                self.become_leader();
                self.bcast_append();
            }
            VoteResult::Lost => self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
    }

    // ---- step -------------------------------------------------------------------------

    /// Feeds a message from the network.
    pub(crate) fn step(&mut self, m: Message) -> Result<()> {
        let t = validate(&m, self.id)?;
        self.check_against_state(&m, t)?;
        if m.term > self.term {
            if matches!(
                t,
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            ) {
                let force = m.context == TRANSFER_CONTEXT;
                if !force && self.in_lease() {
                    return Ok(());
                }
            }
            let keep_term = t == MessageType::MsgRequestPreVote
                || (t == MessageType::MsgRequestPreVoteResponse && !m.reject);
            if !keep_term {
                let from_leader = matches!(
                    t,
                    MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
                );
                self.become_follower(m.term, if from_leader { m.from } else { 0 });
            }
        } else if m.term != 0 && m.term < self.term {
            self.step_stale(&m, t);
            return Ok(());
        }
        match t {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                self.handle_vote_request(&m, t);
                Ok(())
            }
            // A read we forwarded was dropped by its leader (it stepped down), whatever
            // our role now.
            MessageType::MsgReadIndexResponse if m.reject => {
                self.dropped_reads.push(m.context);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m, t),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m, t),
                Role::Follower => self.step_follower(m, t),
            },
        }
    }

    /// Checks that need our state, done before anything changes (even the term), so that a
    /// refused message leaves no trace.
    fn check_against_state(&self, m: &Message, t: MessageType) -> Result<()> {
        match t {
            // A leader sends min(our acknowledged match, its commit): never beyond our log.
            MessageType::MsgHeartbeat if m.commit > self.log.last_index() => Err(invalid(format!(
                "heartbeat commit {} beyond last index {}",
                m.commit,
                self.log.last_index()
            ))),
            MessageType::MsgSnapshot => {
                let meta = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref());
                let cs = meta.and_then(|m| m.conf_state.clone()).unwrap_or_default();
                confchange::restore(&self.tracker, &cs, 0)
                    .map(|_| ())
                    .map_err(|e| invalid(format!("snapshot configuration: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// A message from an older term.
    fn step_stale(&mut self, m: &Message, t: MessageType) {
        match t {
            // A stale leader (partitioned, or removed from the group) learns the newer term
            // and steps down. With pre-vote and check-quorum nothing else would tell it.
            MessageType::MsgAppend | MessageType::MsgHeartbeat => {
                self.send(msg(MessageType::MsgAppendResponse, m.from, self.term));
            }
            MessageType::MsgRequestPreVote => {
                let mut resp = msg(MessageType::MsgRequestPreVoteResponse, m.from, self.term);
                resp.reject = true;
                self.send(resp);
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message, t: MessageType) -> Result<()> {
        let my_response = if self.role == Role::PreCandidate {
            MessageType::MsgRequestPreVoteResponse
        } else {
            MessageType::MsgRequestVoteResponse
        };
        match t {
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot => {
                // A leader of our term exists.
                self.become_follower(m.term, m.from);
                self.step_follower(m, t)
            }
            _ if t == my_response => {
                self.handle_vote_response(&m);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message, t: MessageType) -> Result<()> {
        match t {
            MessageType::MsgAppend => {
                self.heard_from_leader(m.from);
                self.handle_append(m);
            }
            MessageType::MsgHeartbeat => {
                self.heard_from_leader(m.from);
                self.handle_heartbeat(m)?;
            }
            MessageType::MsgSnapshot => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m)?;
            }
            MessageType::MsgTimeoutNow => {
                // Refused only if we cannot lead (removed, or a conf change to apply first).
                let _ = self.hup(CampaignKind::Transfer);
            }
            MessageType::MsgReadIndexResponse if m.from == self.leader_id => {
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: m.context,
                });
            }
            // Nothing else is for a follower. That includes a MsgReadIndex or
            // MsgTransferLeader forwarded by a node that took us for the leader: forwarding
            // it again could bounce it between stale nodes, so it is dropped (the requester
            // retries).
            _ => {}
        }
        Ok(())
    }

    fn heard_from_leader(&mut self, leader: u64) {
        self.election_elapsed = 0;
        self.leader_id = leader;
    }

    /// Asks for a snapshot (see `SnapshotRequest`); a request made already stands.
    pub(crate) fn request_snapshot(&mut self) -> Result<(), SnapshotRequestRefusal> {
        if self.role == Role::Leader {
            return Err(SnapshotRequestRefusal::Leader);
        }
        if self.requested_snapshot.is_none() {
            self.requested_snapshot = Some(SnapshotRequest::Waiting);
        }
        self.send_snapshot_request();
        Ok(())
    }

    /// Sends the request to the leader, once the log ends in its term; again if it went
    /// already (it or the snapshot may have been lost). It travels as a rejected append
    /// response.
    fn send_snapshot_request(&mut self) {
        if self.leader_id == 0 || self.role != Role::Follower {
            return;
        }
        let at = match self.requested_snapshot {
            None => return,
            Some(SnapshotRequest::Sent { at }) => at,
            Some(SnapshotRequest::Waiting) => {
                if self.log.last_term() != self.term {
                    return;
                }
                let at = self.log.last_index();
                self.requested_snapshot = Some(SnapshotRequest::Sent { at });
                at
            }
        };
        let mut resp = msg(MessageType::MsgAppendResponse, self.leader_id, self.term);
        resp.reject = true;
        resp.index = at;
        resp.reject_hint = at;
        resp.commit = self.log.committed;
        resp.request_snapshot = at;
        self.send(resp);
    }

    fn handle_append(&mut self, m: Message) {
        if let Some(SnapshotRequest::Sent { at }) = self.requested_snapshot {
            // The log up to `at` is this leader's: acknowledged again (once durable), as
            // an earlier acknowledgement may have been lost and the leader may need ours
            // to commit up to `at` before it can make the snapshot.
            let mut ack = msg(MessageType::MsgAppendResponse, m.from, self.term);
            ack.index = at;
            ack.commit = self.log.committed;
            self.send_persisted(ack);
            return self.send_snapshot_request();
        }
        let mut resp = msg(MessageType::MsgAppendResponse, m.from, self.term);
        if m.index < self.log.committed {
            resp.index = self.log.committed;
        } else if let Some(last) = self
            .log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            resp.index = last;
        } else {
            // Tell the leader where our log may match so it can skip a whole term at once.
            let probe = m.index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, m.log_term);
            resp.index = m.index;
            resp.reject = true;
            resp.reject_hint = hint_index;
            resp.log_term = hint_term;
        }
        resp.commit = self.log.committed;
        self.send_persisted(resp);
    }

    fn handle_heartbeat(&mut self, m: Message) -> Result<()> {
        self.log.commit_to(m.commit);
        // A request waiting for this leader's term at the log's end goes with the first
        // heartbeat after that append (whose acknowledgement has gone by then); one sent
        // is sent again each round, as it or the snapshot may have been lost.
        self.send_snapshot_request();
        let mut resp = msg(MessageType::MsgHeartbeatResponse, m.from, self.term);
        resp.read_round = m.read_round;
        resp.commit = self.log.committed;
        self.send(resp);
        Ok(())
    }

    fn handle_snapshot(&mut self, m: Message) -> Result<()> {
        let mut resp = msg(MessageType::MsgAppendResponse, m.from, self.term);
        let snap = m.snapshot.unwrap_or_default();
        resp.index = if self.restore(snap)? {
            self.log.last_index()
        } else {
            self.log.committed
        };
        resp.commit = self.log.committed;
        self.send_persisted(resp);
        Ok(())
    }

    /// Installs a snapshot if it is newer than what we have; false if it was stale (or
    /// already covered by our log, in which case only the commit index moves). One this
    /// node asked for is installed once it reaches the request's index, even over a log
    /// that holds that index: the state the log was applied to is gone.
    fn restore(&mut self, snap: crate::proto::raftpb::Snapshot) -> Result<bool> {
        let meta = snap.metadata.clone().unwrap_or_default();
        match self.requested_snapshot {
            Some(SnapshotRequest::Sent { at }) if meta.index < at => return Ok(false),
            Some(SnapshotRequest::Sent { .. }) => {}
            _ if meta.index <= self.log.committed => return Ok(false),
            _ if self.log.match_term(meta.index, meta.term) => {
                self.log.commit_to(meta.index);
                return Ok(false);
            }
            _ => {}
        }
        // A node added after the snapshot was taken is not in its configuration; it learns
        // of its membership from the conf-change entries that follow.
        let cs = meta.conf_state.clone().unwrap_or_default();
        let (config, progress) = confchange::restore(&self.tracker, &cs, meta.index)?;
        self.log.restore(snap);
        self.tracker.config = config;
        self.tracker.progress = progress;
        self.requested_snapshot = None;
        Ok(true)
    }

    // ---- local requests ---------------------------------------------------------------

    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        match self.role {
            Role::Leader => {
                self.handle_read_index(self.id, ctx);
                Ok(())
            }
            Role::Follower if self.leader_id != 0 => {
                let mut m = msg(MessageType::MsgReadIndex, self.leader_id, 0);
                m.context = ctx;
                self.send(m);
                Ok(())
            }
            _ => Err(RaftError::ProposalDropped(DropReason::NotLeader {
                leader: self.leader_id,
            })),
        }
    }

    pub(crate) fn transfer_leader(&mut self, to: u64) -> Result<()> {
        match self.role {
            Role::Leader => self.handle_transfer_leader(to),
            Role::Follower if self.leader_id != 0 => {
                // The sender is always us; the target travels in its own field.
                let mut m = msg(MessageType::MsgTransferLeader, self.leader_id, 0);
                m.transferee = to;
                self.send(m);
                Ok(())
            }
            _ => Err(RaftError::ProposalDropped(DropReason::NotLeader {
                leader: self.leader_id,
            })),
        }
    }

    /// Whether the lease-read fast path is configured.
    pub(super) fn lease_reads(&self) -> bool {
        self.cfg.read_only_option == ReadOnlyOption::LeaseBased
    }
}
