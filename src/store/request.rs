//! What an embedder asks of a region and what it gets back.

use bytes::Bytes;

use super::apply::eval::OpOutcome;
use super::responder::RequestKind;
use crate::proto::metapb::{Peer, Region};
use crate::proto::raftpb::ConfChangeType;
use crate::raft::Role;
use crate::{PeerId, RegionId};

/// A read of one region's data, served linearizably by its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// One key's value.
    Get {
        /// The key (in the region's range).
        key: Bytes,
    },
    /// Several keys' values, from one consistent view.
    BatchGet {
        /// The keys (each in the region's range).
        keys: Vec<Bytes>,
    },
    /// Pairs in `[start, end)`, bounded by the region's range: a scan never returns
    /// another region's keys, and the caller goes on in the next region.
    Scan {
        /// The first key (in the region's range).
        start: Bytes,
        /// The end (exclusive); None, or past the region's end, stops at the region's end.
        end: Option<Bytes>,
        /// At most this many pairs (0: no limit).
        limit: usize,
        /// Ascending or descending key order.
        order: ScanOrder,
    },
}

/// The order of a scan's pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOrder {
    /// Ascending keys.
    Forward,
    /// Descending keys: from the end of the range down to `start`.
    Reverse,
}

/// The answer to a `ReadRequest`, shaped like it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResponse {
    /// `Get`: the value, None if the key is absent.
    Value(Option<Bytes>),
    /// `BatchGet`: the values in the order of the keys asked.
    Values(Vec<Option<Bytes>>),
    /// `Scan`: the pairs in the order asked.
    Pairs(Vec<(Bytes, Bytes)>),
}

/// A write command applied: where it sits in the region's log and what each operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResponse {
    /// The log index of the command.
    pub index: u64,
    /// One outcome per operation, in order (CompareAndSwap: swapped or the value found).
    pub outcomes: Vec<OpOutcome>,
}

/// A split applied: the region and the regions split from it, in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitResponse {
    /// Every region of the old range after the split, in key order (the first is the
    /// region that was split).
    pub regions: Vec<Region>,
}

/// One replica's view of its region.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionStatus {
    /// The region as this replica has applied it.
    pub region: Region,
    /// This replica.
    pub peer: Peer,
    /// Its role in the current term.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<Peer>,
    /// The current term.
    pub term: u64,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The highest index applied to the KV engine.
    pub applied_index: u64,
    /// The first index still in the region's raft log (log GC moves it).
    pub first_index: u64,
    /// Whether the replica sleeps (hibernation: it does not tick until woken).
    pub hibernated: bool,
    /// Whether the replica waits for a snapshot it asked for: its data was void when the
    /// store opened (`storage::snapshot::recover`), and it applies nothing until then.
    pub awaiting_snapshot: bool,
}

/// One membership change of a region. Promoting a learner is `AddVoter` of the learner,
/// demoting a voter `AddLearner` of the voter. Several changes in one request go through
/// joint consensus (left automatically); a voter cannot be removed in a joint change —
/// demote it first, remove the learner after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// Add the peer as a voter, or promote it if it is a learner.
    AddVoter(Peer),
    /// Add the peer as a learner (it receives the log, does not vote), or demote it if it
    /// is a voter.
    AddLearner(Peer),
    /// Remove the peer; its replica destroys itself once it applies the change.
    Remove(Peer),
}

impl PeerChange {
    /// The peer the change is about.
    pub fn peer(&self) -> Peer {
        match *self {
            PeerChange::AddVoter(p) | PeerChange::AddLearner(p) | PeerChange::Remove(p) => p,
        }
    }

    pub(crate) fn change_type(&self) -> ConfChangeType {
        match self {
            PeerChange::AddVoter(_) => ConfChangeType::AddNode,
            PeerChange::AddLearner(_) => ConfChangeType::AddLearnerNode,
            PeerChange::Remove(_) => ConfChangeType::RemoveNode,
        }
    }
}

/// A membership change applied: the region with its new peers and epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePeersResponse {
    /// The region after the change.
    pub region: Region,
}

/// Whether a hand-off request starts a hand-off or asks a replica already in one to give
/// its transfer up for another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOffAsk {
    Start,
    Again,
}

/// How a replica's part in a hand-off of its leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOffEnd {
    /// It did not lead when asked.
    NotLeader,
    /// It led, and leads no more.
    Moved,
    /// It leads, and no voter on a store not known down (nor tried already) can take over.
    NoTarget,
    /// Its transfer to this peer was given up: the core's election timeout passed first,
    /// or another hand-off asked for a new target.
    Stalled(PeerId),
}

impl RequestKind for HandOffEnd {
    const NAME: &'static str = "hand_off";
}

/// How `Store::hand_off_leaderships` ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandOff {
    /// Regions this store led when asked.
    pub led: usize,
    /// Transfers given up for another target: not finished within their share of the
    /// wait, or abandoned by the core.
    pub moved_on: usize,
    /// Regions it may still lead: no peer could take over, the transfers did not finish
    /// in time, or the region did not answer.
    pub still_leading: Vec<RegionId>,
}

impl RequestKind for WriteResponse {
    const NAME: &'static str = "write";
}

impl RequestKind for ReadResponse {
    const NAME: &'static str = "read";
}

impl RequestKind for SplitResponse {
    const NAME: &'static str = "split";
}

impl RequestKind for ChangePeersResponse {
    const NAME: &'static str = "change_peers";
}

impl RequestKind for RegionStatus {
    const NAME: &'static str = "status";
}

/// A leader transfer answers nothing but whether it started.
impl RequestKind for () {
    const NAME: &'static str = "transfer_leader";
}
