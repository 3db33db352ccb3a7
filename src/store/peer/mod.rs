//! The peer FSM: one region's replica on this store — its Raft core, its metadata, and the
//! proposals and reads waiting on it. `handle` is one `match` that dispatches; the logic
//! lives per concern: `propose` (commands into the log), `read` (linearizable reads),
//! `ready` (what the core hands out: messages, writes, committed entries) and `applied`
//! (what the apply delegate reports back).

mod applied;
mod destroy;
mod hand_off;
mod hibernate;
mod log_gc;
mod propose;
mod read;
mod ready;
mod snapshot;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::apply::AppliedProgress;
use super::batch::Fsm;
use super::context::PollContext;
use super::msg::{PeerMsg, Proposal, ProposeMsg, ReadMsg, TransferLeaderMsg};
use super::request::RegionStatus;
use super::responder::Responder;
use super::wal_writer::Persisted;
use crate::proto::metapb::{Peer, Region, RegionEpoch};
use crate::proto::raftpb::MessageType;
use crate::proto::storagepb::RaftApplyState;
use crate::proto::transportpb::RaftMessage;
use crate::raft::LogStorage;
use crate::raft::{DropReason, RaftError, RawNode, Role};
use crate::region::{BusyReason, CommandKind, DroppedReason, RegionError, check_epoch};
use crate::storage::raft_log::RegionLog;
use crate::{PeerId, RegionId};

use hibernate::{Sleep, WakeCause};
use read::ReadQueue;

/// One region's replica on this store.
pub(crate) struct PeerFsm {
    /// The region as this replica has applied it (range, epoch, peers); the store's range
    /// index holds the same copy.
    region: Arc<Region>,
    /// This replica.
    peer: Peer,
    raw: RawNode<Arc<RegionLog>>,
    log: Arc<RegionLog>,
    /// Last index of the log as handed to the WAL writer, and its entry's term.
    last_index: u64,
    last_term: u64,
    /// Highest index the apply delegate has applied, as last read from `progress` (or
    /// set by a snapshot this replica installed).
    applied_index: u64,
    /// Where the apply delegate publishes the applied index.
    progress: Arc<AppliedProgress>,
    /// Peers met in messages that the region's peer list does not name, at most
    /// `MAX_CACHED_PEERS` (a list: it is short, and empty in most regions); those the
    /// list comes to name leave it.
    peer_cache: Vec<Peer>,
    /// Commands of this round, proposed together at its end.
    round: Vec<propose::RoundCommand>,
    /// Proposed, waiting for their entries to commit, in (term, index) order.
    proposals: VecDeque<Proposal>,
    reads: ReadQueue,
    /// The next write task's id.
    next_write_id: u64,
    /// A snapshot being installed, and the rest of its Ready.
    installing: Option<Box<snapshot::HeldInstall>>,
    /// Whether the replica is alive or on its way out (see `destroy.rs`).
    life: Life,
    /// Whether it ticks (see `hibernate.rs`).
    sleep: Sleep,
    /// The (role, asleep) this replica is counted under in `flotilla_store_regions`.
    counted: Option<(Role, bool)>,
    /// A heartbeat a read waits on arrived: its response leaves at once.
    answer_now: bool,
    /// When this replica last took ticks, started or woke: its core's tick clock (the
    /// lease's) is current as of then (see `read.rs`, `LeaseClock`).
    ticked_at: Instant,
    /// A hand-off of the leadership under way (see `hand_off.rs`).
    hand_off: Option<Box<hand_off::HandOffState>>,
}

/// A replica's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Alive,
    /// Removed: waiting for the write task that drops its raft log to be durable, so that
    /// a peer of the region created here later never reads the old log.
    Ending {
        log_reset: u64,
    },
    /// Gone: the FSM leaves the store after this round.
    Ended,
}

impl Fsm for PeerFsm {
    type Message = PeerMsg;
}

impl PeerFsm {
    pub(crate) fn new(
        region: Arc<Region>,
        peer: Peer,
        raw: RawNode<Arc<RegionLog>>,
        log: Arc<RegionLog>,
        (last_index, last_term): (u64, u64),
        apply: &RaftApplyState,
        progress: Arc<AppliedProgress>,
    ) -> Self {
        PeerFsm {
            region,
            peer,
            raw,
            log,
            last_index,
            last_term,
            applied_index: apply.applied_index,
            progress,
            peer_cache: Vec::new(),
            round: Vec::new(),
            proposals: VecDeque::new(),
            reads: ReadQueue::default(),
            next_write_id: 1,
            installing: None,
            life: Life::Alive,
            sleep: Sleep::Awake { idle_ticks: 0 },
            counted: None,
            answer_now: false,
            ticked_at: Instant::now(),
            hand_off: None,
        }
    }

    pub(crate) fn region_id(&self) -> RegionId {
        self.region.region_id()
    }

    /// Handles one message of the mailbox.
    pub(crate) fn handle(&mut self, msg: PeerMsg, ctx: &mut PollContext) {
        if self.life != Life::Alive {
            return self.handle_ending(msg, ctx);
        }
        // What was applied since this replica last ran (no message tells it).
        self.take_in_applied(ctx);
        if msg.needs_region_awake() {
            self.wake(WakeCause::Other, ctx);
        }
        match msg {
            PeerMsg::Raft(m) => self.on_raft_message(*m, ctx),
            PeerMsg::Propose(m) => {
                let ProposeMsg { epoch, command } = *m;
                self.on_propose(epoch.as_ref(), command, ctx);
            }
            PeerMsg::Read(m) => {
                let ReadMsg {
                    epoch,
                    request,
                    responder,
                } = *m;
                self.on_read(epoch.as_ref(), request, responder, ctx);
            }
            PeerMsg::TransferLeader(m) => {
                let TransferLeaderMsg {
                    epoch,
                    to,
                    responder,
                } = *m;
                self.on_transfer_leader(epoch.as_ref(), to, responder);
            }
            PeerMsg::Persisted(p) => self.on_persisted(*p, ctx),
            PeerMsg::Unreachable(to) => self.raw.report_unreachable(to.get()),
            PeerMsg::Applied(result) => self.on_applied(*result, ctx),
            PeerMsg::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::debug!(region = self.region.id, error = %e, "campaign refused");
                }
            }
            PeerMsg::Status(responder) => responder.respond(Ok(self.status())),
            PeerMsg::HandOff(ask, responder) => self.on_hand_off(ask, *responder, ctx),
            PeerMsg::SnapshotStatus { to, status } => self.raw.report_snapshot(to.get(), status),
            PeerMsg::LogGc(pass) => self.on_log_gc(pass, ctx),
            PeerMsg::StoreLiveness { store, liveness } => {
                self.on_store_liveness(store, liveness, ctx);
            }
        }
    }

    /// The end of this FSM's round: proposals of the round go into the log together, then
    /// whatever the core has to hand out.
    pub(crate) fn finish_round(&mut self, ticks: u32, ctx: &mut PollContext) {
        if self.life != Life::Alive {
            return;
        }
        // A round may bring ticks alone: what was applied since is taken in before the
        // core ticks (its quiescence and elections read the applied index).
        self.take_in_applied(ctx);
        // A tick counted before the region fell asleep is dropped with it.
        let ticks = if self.is_asleep() { 0 } else { ticks };
        if ticks > 0 {
            self.took_ticks(ticks, ctx);
        }
        for _ in 0..ticks {
            self.raw.tick();
        }
        self.call_for_snapshot(ticks, ctx);
        self.propose_pending(ctx);
        self.handle_ready(ctx);
        self.check_hand_off();
        self.request_snapshot(ctx);
        self.maybe_sleep(ticks, ctx);
        self.count_state();
    }

    /// Moves this replica's count in `flotilla_store_regions{role, hibernated}` to its
    /// state now.
    fn count_state(&mut self) {
        let now = (self.raw.raft().role(), self.is_asleep());
        if self.counted == Some(now) {
            return;
        }
        if let Some(before) = self.counted.replace(now) {
            region_gauge(before).decrement(1.0);
        }
        region_gauge(now).increment(1.0);
    }

    /// Whether the peer was removed and leaves the store.
    pub(crate) fn is_destroyed(&self) -> bool {
        self.life == Life::Ended
    }

    /// Whether the core has more to hand out than one round took.
    /// Not while a snapshot installs: that Ready waits for the install, whose report
    /// schedules the peer again (a poller would otherwise spin on it all along).
    pub(crate) fn has_ready(&self) -> bool {
        self.installing.is_none() && self.raw.has_ready()
    }

    fn on_raft_message(&mut self, m: RaftMessage, ctx: &mut PollContext) {
        if m.is_tombstone {
            return self.on_tombstone(&m, ctx);
        }
        if self.answered_as_removed(&m, ctx) {
            return;
        }
        let mut snapshot = None;
        if m.message
            .as_ref()
            .is_some_and(|msg| msg.msg_type == MessageType::MsgSnapshot as i32)
        {
            match self.accept_snapshot(&m, ctx) {
                Some(region) => snapshot = Some(region),
                None => return,
            }
        }
        if m.to_peer.is_none_or(|p| p.id != self.peer.id) {
            // For another replica of the region on this store (an older or newer one).
            tracing::debug!(region = m.region_id, "message for another peer id dropped");
            return;
        }
        if let (Some(h), Some(from)) = (m.hibernation, m.from_peer) {
            return self.on_hibernation(from, h, ctx);
        }
        let Some(message) = m.message else { return };
        self.answer_now |= m.answer_now;
        let heartbeat = self.is_asleep() && self.is_idle_heartbeat(&message);
        if !heartbeat {
            let cause = if message.from == self.raw.raft().leader_id() {
                WakeCause::Leader
            } else {
                WakeCause::Other
            };
            self.wake(cause, ctx);
        }
        // Remember where a peer the region's list does not name yet lives (a new peer's
        // first messages), as the message itself claims it, boundedly. The listed peers
        // need no copy: most regions never hold one.
        if let Some(from) = m.from_peer
            && from.store_id != 0
            && from.id == message.from
            && !self.region.peers.iter().any(|p| p.id == from.id)
        {
            match self.peer_cache.iter().position(|p| p.id == from.id) {
                Some(at) => self.peer_cache[at] = from,
                None if self.peer_cache.len() < MAX_CACHED_PEERS => self.peer_cache.push(from),
                None => {}
            }
        }
        let snapshot_index = message
            .snapshot
            .as_ref()
            .and_then(|s| s.metadata.as_ref())
            .map(|m| m.index);
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(region = m.region_id, error = %e, "raft message refused");
        }
        // Taken by the core: its range is held here from now on, until it installs.
        if let Some(region) = snapshot
            && self.raw.snapshot_to_hand_out().is_some()
            && self.raw.snapshot_to_hand_out() == snapshot_index
        {
            ctx.shared.meta.lock().reserve_install(region);
        }
        if heartbeat {
            self.wake_if_not_quiescent(ctx);
        }
    }

    fn on_persisted(&mut self, p: Persisted, ctx: &PollContext) {
        if let Some(retired) = p.retired_snapshot {
            self.retire_snapshot(&retired, ctx);
        }
        if let Some((index, term)) = p.up_to {
            self.raw.on_persisted(index, term);
        }
        for m in p.own_messages {
            if let Err(e) = self.raw.step(m) {
                tracing::debug!(region = self.region.id, error = %e, "own message refused");
            }
        }
    }

    fn status(&self) -> RegionStatus {
        let raft = self.raw.raft();
        RegionStatus {
            region: Region::clone(&self.region),
            peer: self.peer,
            role: raft.role(),
            leader: self.leader(),
            term: raft.term(),
            commit_index: raft.hard_state().commit,
            applied_index: self.applied_index,
            first_index: self.log.first_index(),
            hibernated: self.is_asleep(),
            awaiting_snapshot: raft.requested_snapshot().is_some(),
        }
    }

    /// The region as now applied: this replica's copy, shared with the store's range index.
    fn set_region(&mut self, region: Region, ctx: &PollContext) {
        // A peer the list names now needs no copy (an unborn replica's, once its snapshot
        // lists them).
        self.peer_cache
            .retain(|cached| !region.peers.iter().any(|p| p.id == cached.id));
        let region = Arc::new(region);
        self.region = region.clone();
        ctx.shared.meta.lock().set(region);
    }

    pub(crate) fn stopping(&self) -> RegionError {
        RegionError::ProposalDropped {
            region: self.region_id(),
            reason: DroppedReason::StoreStopping,
        }
    }

    /// Answers what never reached the log, and every read, with `StoreStopping`.
    pub(crate) fn fail_waiting(&mut self) {
        for command in std::mem::take(&mut self.round) {
            command.fail(self.stopping());
        }
        let error = self.stopping();
        self.reads.fail_all(|| error.clone());
    }

    /// The peer with this id: from the region's peer list, else as met in a message.
    fn peer_by_id(&self, id: u64) -> Option<Peer> {
        self.region
            .peers
            .iter()
            .find(|p| p.id == id)
            .or_else(|| self.peer_cache.iter().find(|p| p.id == id))
            .copied()
    }

    /// The leader as this replica knows it.
    fn leader(&self) -> Option<Peer> {
        match self.raw.raft().leader_id() {
            0 => None,
            id => self.peer_by_id(id),
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft().role() == Role::Leader
    }

    fn not_leader(&self) -> RegionError {
        RegionError::NotLeader {
            region: self.region_id(),
            leader: self.leader(),
        }
    }

    /// The region error a refusal of the core becomes.
    fn refusal(&self, e: RaftError) -> RegionError {
        let region = self.region_id();
        let dropped = |reason| RegionError::ProposalDropped { region, reason };
        match e {
            RaftError::ProposalDropped(reason) => match reason {
                DropReason::NotLeader { .. } => self.not_leader(),
                DropReason::LeaderTransferInProgress { .. } => {
                    dropped(DroppedReason::LeaderTransferring)
                }
                DropReason::UncommittedSizeLimit { .. } => RegionError::ServerIsBusy {
                    reason: BusyReason::RegionPendingBytes,
                    backoff: BUSY_BACKOFF,
                },
                DropReason::ConfChangePending { .. } => dropped(DroppedReason::ConfChangePending),
                DropReason::ConfChangeRejected(r) => {
                    dropped(DroppedReason::ConfChangeRejected(r.to_string()))
                }
                DropReason::InvalidTransferTarget { target, .. } => {
                    dropped(DroppedReason::InvalidTransferTarget(target))
                }
            },
            RaftError::EntryTooLarge { size, max } => {
                RegionError::EntryTooLarge { size, limit: max }
            }
            other => RegionError::InvalidRequest {
                reason: other.to_string(),
            },
        }
    }

    fn on_transfer_leader(
        &mut self,
        epoch: Option<&RegionEpoch>,
        to: PeerId,
        responder: Responder<()>,
    ) {
        let checked = check_epoch(CommandKind::TransferLeader, epoch, &self.region)
            .and_then(|()| {
                if self.is_leader() {
                    Ok(())
                } else {
                    Err(self.not_leader())
                }
            })
            .and_then(|()| {
                self.raw
                    .transfer_leader(to.get())
                    .map_err(|e| self.refusal(e))
            });
        responder.respond(checked);
    }
}

/// Peers remembered from messages at most (a new peer is in the region's list once its
/// membership change applies).
const MAX_CACHED_PEERS: usize = 16;

/// The backoff suggested with `ServerIsBusy`.
const BUSY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

impl Drop for PeerFsm {
    /// A peer that goes away (its store stopping) answers what waits on it. Proposals in
    /// the log may still be applied by the other replicas: they drop unanswered (outcome
    /// unknown).
    fn drop(&mut self) {
        self.fail_waiting();
        if let Some(counted) = self.counted.take() {
            region_gauge(counted).decrement(1.0);
        }
    }
}

fn region_gauge((role, asleep): (Role, bool)) -> metrics::Gauge {
    let role = match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre_candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    };
    let hibernated = if asleep { "true" } else { "false" };
    metrics::gauge!("flotilla_store_regions", "role" => role, "hibernated" => hibernated)
}

#[cfg(test)]
mod tests {
    use super::MAX_CACHED_PEERS;
    use crate::StoreId;
    use crate::proto::metapb::{Peer, PeerRole};
    use crate::proto::raftpb::{Message, MessageType};
    use crate::proto::transportpb::{RaftMessage, RaftMessageBatch};
    use crate::store::PeerChange;
    use crate::testkit::cluster::*;

    /// A sender the region does not list is remembered where its message says it lives
    /// (its latest claim), at most `MAX_CACHED_PEERS` of them, until the region lists it; a
    /// listed sender is not copied.
    #[test]
    fn the_peer_cache_holds_unlisted_senders_only_and_boundedly() {
        let node = Node::new();
        let mut store = lone_stepped_leader(&node);
        let mut status = store.region_status(FIRST_REGION);
        store.run_until_idle();
        let status = answer_now(&mut status);
        let receiver = store.receiver();
        let send = |from: Peer| {
            let message = Message {
                msg_type: MessageType::MsgHeartbeatResponse as i32,
                from: from.id,
                to: status.peer.id,
                term: status.term,
                ..Default::default()
            };
            receiver.receive(RaftMessageBatch {
                from_store: from.store_id,
                to_store: 1,
                messages: vec![RaftMessage {
                    region_id: FIRST_REGION.get(),
                    from_peer: Some(from),
                    to_peer: Some(status.peer),
                    region_epoch: status.region.epoch,
                    message: Some(message),
                    ..Default::default()
                }],
                ..Default::default()
            });
        };
        let stranger = |i: u64, store_id: u64| Peer {
            id: 100 + i,
            store_id,
            role: 0,
        };
        let cached = |store: &crate::store::Store| {
            let shared = store.shared();
            let mailbox = shared.raft_router.mailbox(FIRST_REGION).unwrap();
            mailbox.inspect_resting(|p| p.peer_cache.clone()).unwrap()
        };

        send(status.peer);
        send(stranger(0, 2));
        send(stranger(1, 3));
        store.run_until_idle();
        assert_eq!(cached(&store), vec![stranger(0, 2), stranger(1, 3)]);
        // A newer claim replaces the old one in place.
        send(stranger(0, 4));
        store.run_until_idle();
        assert_eq!(cached(&store), vec![stranger(0, 4), stranger(1, 3)]);
        for i in 2..2 * MAX_CACHED_PEERS as u64 {
            send(stranger(i, 2));
        }
        store.run_until_idle();
        let kept = cached(&store);
        assert_eq!(kept.len(), MAX_CACHED_PEERS);
        assert_eq!(
            kept[MAX_CACHED_PEERS - 1],
            stranger(MAX_CACHED_PEERS as u64 - 1, 2)
        );

        // Once the region lists a cached peer, the copy goes.
        let learner = Peer {
            role: PeerRole::Learner as i32,
            ..stranger(1, 3)
        };
        let epoch = status.region.epoch.unwrap();
        let mut added =
            store.change_peers(FIRST_REGION, epoch, vec![PeerChange::AddLearner(learner)]);
        store.run_until_idle();
        answer_now(&mut added);
        let kept = cached(&store);
        assert_eq!(kept.len(), MAX_CACHED_PEERS - 1);
        assert!(kept.iter().all(|p| p.id != learner.id), "{kept:?}");
    }

    /// A read whose index the apply delegate has published while a report of region
    /// changes is still on its way is not served (the peer has not made the changes the
    /// index covers) and does not spin: it is served once the report is handled.
    #[test]
    fn a_read_waits_for_a_change_report_on_its_way() {
        use crate::store::ReadRequest;
        use bytes::Bytes;
        let node = Node::new();
        let mut store = lone_stepped_leader(&node);
        let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
        let mut write = store.propose(FIRST_REGION, epoch, put(b"k", b"1"));
        settle_all_but_apply(&mut store);
        let get = || ReadRequest::Get {
            key: Bytes::from_static(b"k"),
        };
        let mut first = store.read(FIRST_REGION, epoch, get());
        settle_all_but_apply(&mut store);
        assert!(first.try_take().is_none(), "waits for the write");
        // As if the apply delegate had applied the write together with a change to the
        // region, and its report were still on its way.
        let progress = {
            let shared = store.shared();
            let mailbox = shared.raft_router.mailbox(FIRST_REGION).unwrap();
            mailbox.inspect_resting(|p| p.progress.clone()).unwrap()
        };
        let mut status = store.region_status(FIRST_REGION);
        settle_all_but_apply(&mut store);
        let committed = answer_now(&mut status).commit_index;
        progress.publish_with_changes(committed);
        // A second read, confirmed now, finds the index published: neither is served.
        let mut second = store.read(FIRST_REGION, epoch, get());
        settle_all_but_apply(&mut store);
        assert!(first.try_take().is_none() && second.try_take().is_none());
        // The report handled (here: by hand), then the apply delegate's real round.
        progress.changes_handled();
        assert!(matches!(
            store.step_apply(),
            Some(crate::store::batch::PollOutcome::Handled(_))
        ));
        store.run_until_idle();
        answer_now(&mut write);
        assert_eq!(
            answer_now(&mut first),
            crate::store::ReadResponse::Value(Some(Bytes::from_static(b"1")))
        );
        answer_now(&mut second);
    }

    /// A region whose rounds bring only ticks still takes in what its apply delegate
    /// published. A lone voter restarted after a crash that lost its applied state is
    /// elected by ticks alone and applies its log again in rounds that send it no
    /// message; its core counts the entries before its election pending until it learns
    /// they are applied, and only then lets the region sleep.
    #[test]
    fn ticks_alone_take_in_the_applied_index() {
        let node = Node::new();
        let mut store = lone_stepped_leader(&node);
        let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
        for i in 0..3u8 {
            let mut w = store.propose(FIRST_REGION, epoch, put(&[b'k', i], b"v"));
            store.run_until_idle();
            answer_now(&mut w);
        }
        let mut node = node;
        node.store = Some(store);
        node.crash_keeping(0, 0);

        let mut store = open_stepped(&node, test_config(StoreId(1)));
        let leads = |store: &crate::store::Store| {
            let shared = store.shared();
            let mailbox = shared.raft_router.mailbox(FIRST_REGION).unwrap();
            mailbox.inspect_resting(|p| p.is_leader()).unwrap()
        };
        for _ in 0..200 {
            store.tick();
            store.run_until_idle();
            if store.ticking_regions() == 0 {
                break;
            }
        }
        assert!(leads(&store));
        assert_eq!(store.ticking_regions(), 0, "asleep, by ticks alone");
    }
}
