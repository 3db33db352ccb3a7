//! Apply observers: what an embedding database registers (when it opens the store) to see
//! every command and admin change its regions apply — for secondary indexes, change data
//! capture, caches. Each region's events come in its log order, each once the KV batch
//! holding it is written and before its proposer is answered.
//!
//! Across a crash an event can come twice: KV writes are not synced on apply (the raft log
//! is the durable source), so entries applied before a crash but not yet durable in the
//! KV engine are applied — and observed — again on restart. `(region, index)` names an
//! event; an observer that must see each once remembers the last index it saw per region.

use super::apply::eval::OpOutcome;
use crate::RegionId;
use crate::proto::commandpb::WriteCommand;
use crate::proto::metapb::Region;

/// Sees what this store's regions apply. Called on an apply thread, in the middle of the
/// apply pipeline: it must be quick, must not block and must not panic (hand slow work to
/// a channel).
pub trait ApplyObserver: Send + Sync + 'static {
    /// One applied event.
    fn on_apply(&self, event: &ApplyEvent);
}

/// One thing a region applied, at a position of its log.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyEvent {
    /// The region.
    pub region: RegionId,
    /// The log entry's index (for a snapshot, the index it stands for).
    pub index: u64,
    /// The log entry's term.
    pub term: u64,
    /// What was applied.
    pub change: AppliedChange,
}

/// A write command applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedWrite {
    /// The command as proposed.
    pub command: WriteCommand,
    /// One outcome per operation (a CompareAndSwap that failed changed nothing).
    pub outcomes: Vec<OpOutcome>,
}

/// What a region applied.
#[derive(Debug, Clone, PartialEq)]
pub enum AppliedChange {
    /// The write commands of one entry (the writes of one proposal round), in order. A
    /// command refused at apply (a stale epoch, a key outside the region) changes nothing
    /// and is not among them; an entry none of whose commands applied is not observed.
    Writes {
        /// The commands applied.
        writes: Vec<AppliedWrite>,
    },
    /// The region split: the regions it became, itself first, in key order.
    Split {
        /// The regions after the split.
        regions: Vec<Region>,
    },
    /// A membership change (entering or leaving a joint state included): the region after.
    ChangePeers {
        /// The region with its new peers and epoch.
        region: Region,
    },
    /// The region's data was replaced by a snapshot: what an observer derived from the
    /// region's range is to be rebuilt from the KV engine.
    SnapshotInstalled {
        /// The region as the snapshot describes it.
        region: Region,
    },
    /// The replica was removed from this store: its data is cleared.
    Destroyed {
        /// The region as this replica last knew it.
        region: Region,
    },
}
