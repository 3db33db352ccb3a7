//! What the store's FSMs send each other: the peer's mailbox (network messages, requests,
//! WAL and apply completions), the apply delegate's, and the store's.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use super::flow::Charge;
use super::liveness::Liveness;
use super::request::{
    ChangePeersResponse, HandOffAsk, HandOffEnd, PeerChange, ReadRequest, ReadResponse,
    RegionStatus, SplitResponse, WriteResponse,
};
use super::responder::Responder;
use super::wal_writer::Persisted;
use crate::proto::commandpb::{RaftCommand, SplitRequest, WriteCommand};
use crate::proto::metapb::{Region, RegionEpoch};
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::SnapshotSummary;
use crate::proto::transportpb::RaftMessage;
use crate::raft::SnapshotStatus;
use crate::region::RegionError;
use crate::storage::raft_log::RegionLog;
use crate::{PeerId, StoreId};

/// A command to propose through the region's log.
#[derive(Debug)]
pub(crate) enum Command {
    /// Data operations, applied atomically.
    Write {
        /// The operations.
        command: WriteCommand,
        /// Answered once applied.
        responder: Responder<WriteResponse>,
    },
    /// Change the region's membership (several changes: joint consensus).
    ChangePeers {
        /// The changes.
        changes: Vec<PeerChange>,
        /// Answered once applied.
        responder: Responder<ChangePeersResponse>,
    },
    /// Split the region at these keys.
    Split {
        /// One request per new region, in key order.
        splits: Vec<SplitRequest>,
        /// Answered once applied.
        responder: Responder<SplitResponse>,
    },
}

impl Command {
    /// Answers the command with an error.
    pub(crate) fn fail(self, error: RegionError) {
        match self {
            Command::Write { responder, .. } => responder.fail(error),
            Command::Split { responder, .. } => responder.fail(error),
            Command::ChangePeers { responder, .. } => responder.fail(error),
        }
    }
}

/// A proposal's answer, of the type its command wants.
#[derive(Debug)]
pub(crate) enum ProposalResponder {
    /// The writes of one entry, in its order.
    Writes(Vec<Responder<WriteResponse>>),
    Split(Responder<SplitResponse>),
    ChangePeers(Responder<ChangePeersResponse>),
}

impl ProposalResponder {
    pub(crate) fn fail(self, error: RegionError) {
        match self {
            ProposalResponder::Writes(rs) => {
                for r in rs {
                    r.fail(error.clone());
                }
            }
            ProposalResponder::Split(r) => r.fail(error),
            ProposalResponder::ChangePeers(r) => r.fail(error),
        }
    }
}

/// A command in the log, waiting for the verdict on its entry: applied if the entry at
/// `index` is of `term`, stale once an entry of a later term is committed at or after
/// `index`. A peer's proposals queue in (term, index) order: its term only grows.
#[derive(Debug)]
pub(crate) struct Proposal {
    pub index: u64,
    pub term: u64,
    pub responder: ProposalResponder,
    /// The command the entry encodes, kept as proposed (writes only): the entry with this
    /// term and index is the one this leader proposed, so apply takes the command from
    /// here instead of decoding the bytes the leader just encoded. Replicas without the
    /// proposal (followers, a restarted store) decode.
    pub command: Option<RaftCommand>,
    /// The proposal's bytes, counted against the store's bound until it is answered.
    pub _charge: Charge,
}

/// Drops unanswered (outcome unknown) the proposals of `queue` that a snapshot at
/// `(term, index)` covers: they were decided by entries this replica never saw, and the
/// snapshot does not tell whether theirs was among them.
pub(crate) fn drop_covered_proposals(queue: &mut VecDeque<Proposal>, at: (u64, u64)) {
    while queue.pop_front_if(|p| (p.term, p.index) <= at).is_some() {}
}

/// A command routed with `epoch`.
#[derive(Debug)]
pub(crate) struct ProposeMsg {
    pub epoch: Option<RegionEpoch>,
    pub command: Command,
}

/// A read routed with `epoch`.
#[derive(Debug)]
pub(crate) struct ReadMsg {
    pub epoch: Option<RegionEpoch>,
    pub request: ReadRequest,
    pub responder: Responder<ReadResponse>,
}

/// Hand leadership to the region's peer `to` (routed with `epoch`).
#[derive(Debug)]
pub(crate) struct TransferLeaderMsg {
    pub epoch: Option<RegionEpoch>,
    pub to: PeerId,
    pub responder: Responder<()>,
}

/// The peer FSM's mailbox. Large payloads are boxed: an idle region's mailbox keeps a
/// block of message slots allocated, so the enum's size is memory per replica.
#[derive(Debug)]
pub(crate) enum PeerMsg {
    /// From another store's replica of the region.
    Raft(Box<RaftMessage>),
    Propose(Box<ProposeMsg>),
    Read(Box<ReadMsg>),
    TransferLeader(Box<TransferLeaderMsg>),
    /// Hand leadership to the best placed voter, if this replica leads (the store is
    /// about to stop); answered when the leadership has moved or the transfer is given
    /// up. Asked again while a transfer waits, the replica gives it up for another target.
    HandOff(HandOffAsk, Box<Responder<HandOffEnd>>),
    /// The WAL writer made a write task durable.
    Persisted(Box<Persisted>),
    /// The transport could not reach this peer.
    Unreachable(PeerId),
    /// The apply delegate applied entries that changed the region, or that a waiting
    /// read needs (otherwise it only publishes the applied index: `AppliedProgress`).
    Applied(Box<ApplyResult>),
    /// Start an election now (a region just split off a leader's region).
    Campaign,
    /// How sending a snapshot to `to` ended.
    SnapshotStatus {
        to: PeerId,
        status: SnapshotStatus,
    },
    /// Compact the region's log as far as the pass allows.
    LogGc(GcPass),
    /// Report the replica's state.
    Status(Box<Responder<RegionStatus>>),
    /// A store holding a peer of the region went down or came back (store liveness).
    StoreLiveness {
        store: StoreId,
        liveness: Liveness,
    },
}

impl PeerMsg {
    /// Whether handling the message needs the region ticking: requests do; a Raft
    /// message wakes it itself, knowing who sent it; the runtime's own reports do not.
    pub(crate) fn needs_region_awake(&self) -> bool {
        match self {
            PeerMsg::Propose(_)
            | PeerMsg::Read(_)
            | PeerMsg::TransferLeader(_)
            | PeerMsg::Campaign => true,
            PeerMsg::Raft(_)
            | PeerMsg::Persisted(_)
            | PeerMsg::Unreachable(_)
            | PeerMsg::Applied(_)
            | PeerMsg::SnapshotStatus { .. }
            | PeerMsg::LogGc(_)
            | PeerMsg::Status(_)
            | PeerMsg::HandOff(..)
            | PeerMsg::StoreLiveness { .. } => false,
        }
    }

    /// Answers the request the message carries, if any, with `error` (the message could
    /// not be delivered).
    pub(crate) fn fail(self, error: RegionError) {
        match self {
            PeerMsg::Propose(m) => m.command.fail(error),
            PeerMsg::Read(m) => m.responder.fail(error),
            PeerMsg::TransferLeader(m) => m.responder.fail(error),
            PeerMsg::Status(responder) => responder.fail(error),
            PeerMsg::HandOff(_, responder) => responder.fail(error),
            PeerMsg::Raft(_)
            | PeerMsg::Persisted(_)
            | PeerMsg::Unreachable(_)
            | PeerMsg::Applied(_)
            | PeerMsg::Campaign
            | PeerMsg::SnapshotStatus { .. }
            | PeerMsg::LogGc(_)
            | PeerMsg::StoreLiveness { .. } => {}
        }
    }
}

/// What an apply round did to one region.
#[derive(Debug)]
pub(crate) struct ApplyResult {
    /// The last entry applied: (index, term).
    pub applied: (u64, u64),
    /// Changes to the region's metadata, in log order.
    pub changes: Vec<RegionChange>,
}

/// A change to the region's metadata made at apply.
#[derive(Debug)]
pub(crate) enum RegionChange {
    /// The region was split: `region` is the region itself with its new range and epoch,
    /// `created` the new regions whose peers this store must start (a new region already
    /// known here — a tombstone — is left alone). `answer` is the proposer's, told once
    /// the new regions run here, so whoever asked for the split finds them on this store.
    Split {
        region: Region,
        created: Vec<Region>,
        answer: Option<(Responder<SplitResponse>, SplitResponse)>,
    },
    /// A membership change: the region with its new peers, and the entry the core applies.
    /// `answer` is the proposer's, told once this replica took the change in, so a request
    /// routed with the new epoch finds it here.
    ConfChange {
        region: Region,
        entry: Entry,
        answer: Option<(Responder<ChangePeersResponse>, ChangePeersResponse)>,
    },
    /// A snapshot was installed (durably): the region as the snapshot describes it.
    SnapshotInstalled { region: Region },
    /// The region's apply state durably records its log truncated after `index` (of
    /// `term`): the entries up to it may go.
    LogTruncated { index: u64, term: u64 },
}

/// Committed entries for the apply delegate, with the proposals they may answer.
#[derive(Debug)]
pub(crate) struct ApplyTask {
    pub entries: Vec<Entry>,
    /// Proposals up to the last entry in (term, index) order.
    pub proposals: Vec<Proposal>,
}

/// A received snapshot to install: its summary, and `files` where its files are (not yet
/// verified).
#[derive(Debug)]
pub(crate) struct InstallMsg {
    pub summary: SnapshotSummary,
    pub files: PathBuf,
}

/// The apply FSM's mailbox.
#[derive(Debug)]
pub(crate) enum ApplyMsg {
    Apply(Box<ApplyTask>),
    /// Take a read view at the applied index and have the region's snapshot generated.
    Snapshot {
        log: Arc<RegionLog>,
    },
    /// The peer was removed: mark the region a tombstone, clear its data, stop.
    Destroy,
    /// Record the log as truncated after `index` (of `term`), durably (log GC).
    CompactLog {
        index: u64,
        term: u64,
    },
    /// Install a received snapshot (boxed: see `PeerMsg`).
    Install(Box<InstallMsg>),
}

/// The store FSM's mailbox.
#[derive(Debug)]
pub(crate) enum StoreMsg {
    /// A message for a region this store has no peer of.
    RaftMessage(Box<RaftMessage>),
    /// Run a round of raft log GC.
    LogGc,
    /// One store timer tick: liveness of peer stores, pings, rate-limited wakes.
    Tick,
    /// A store marked down was heard from again.
    StoreBack(StoreId),
}

/// How a region's log GC round compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcPass {
    /// Keep what a follower not too far behind still needs.
    Regular,
    /// The region's old entries pin old log files: compact all that is applied.
    Forced,
}
#[cfg(test)]
mod tests {
    use super::*;

    /// An idle region's mailboxes each keep one block of 31 message slots allocated
    /// (crossbeam's unbounded channel), so message size is memory per replica: large
    /// payloads travel boxed.
    #[test]
    fn mailbox_messages_stay_small() {
        assert!(std::mem::size_of::<PeerMsg>() <= 24);
        assert!(std::mem::size_of::<ApplyMsg>() <= 24);
    }
}
