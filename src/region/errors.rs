//! The region-level errors: one typed enum shared by the store, the embedding API and the
//! wire, so a client can act on each (retry elsewhere, refresh its cache, back off).

use std::time::Duration;

use thiserror::Error;

use crate::proto::metapb::{Peer, Region};
use crate::{RegionId, StoreId};

/// Why a request to a region failed. Every variant tells the caller what to do next.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RegionError {
    /// This replica is not the leader; `leader` is the one it knows of, if any.
    #[error("region {region}: not the leader (leader {})", leader_text(.leader))]
    NotLeader {
        /// The region asked.
        region: RegionId,
        /// The leader this replica knows of.
        leader: Option<Peer>,
    },
    /// No replica of the region on this store (never created, or destroyed).
    #[error("region {region} not found on this store")]
    RegionNotFound {
        /// The region asked.
        region: RegionId,
    },
    /// The request was routed with an epoch the region has moved past (split, merge,
    /// membership change); `current` holds the regions now covering its range.
    #[error("epoch does not match: the current regions are {}", regions_text(.current))]
    EpochNotMatch {
        /// The regions now covering the request's range, newest epoch each.
        current: Vec<Region>,
    },
    /// A key outside the region's range.
    #[error("key {} is not in region {region} [{}, {})", hex(.key), hex(.start_key), hex(.end_key))]
    KeyNotInRegion {
        /// The key.
        key: Vec<u8>,
        /// The region asked.
        region: RegionId,
        /// The region's first key.
        start_key: Vec<u8>,
        /// The region's end key (exclusive; empty: unbounded).
        end_key: Vec<u8>,
    },
    /// The store pushes back (a full mailbox, too many pending proposal bytes, a WAL
    /// behind); retry after `backoff`.
    #[error("server is busy ({reason}); retry after {backoff:?}")]
    ServerIsBusy {
        /// What is full.
        reason: BusyReason,
        /// A suggested wait before retrying.
        backoff: Duration,
    },
    /// The command was overtaken: its log entry was replaced by another leader's. It was
    /// not applied.
    #[error("region {region}: stale command (its log entry was replaced)")]
    StaleCommand {
        /// The region asked.
        region: RegionId,
    },
    /// The proposal or read was dropped: it was not applied, except for
    /// `DroppedReason::Unanswered`, whose outcome is unknown.
    #[error("region {region}: proposal dropped: {reason}")]
    ProposalDropped {
        /// The region asked.
        region: RegionId,
        /// Why.
        reason: DroppedReason,
    },
    /// The request was meant for another store.
    #[error("request for store {requested} reached store {actual}")]
    StoreNotMatch {
        /// The store the request named.
        requested: StoreId,
        /// This store.
        actual: StoreId,
    },
    /// The request itself is malformed (an empty or oversized key or value, an inverted
    /// range, split keys out of order); retrying it unchanged fails the same way.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The command's encoding exceeds the entry size limit.
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    EntryTooLarge {
        /// The command's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl RegionError {
    /// A short name of the error's kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RegionError::NotLeader { .. } => "not_leader",
            RegionError::RegionNotFound { .. } => "region_not_found",
            RegionError::EpochNotMatch { .. } => "epoch_not_match",
            RegionError::KeyNotInRegion { .. } => "key_not_in_region",
            RegionError::ServerIsBusy { .. } => "server_is_busy",
            RegionError::StaleCommand { .. } => "stale_command",
            RegionError::ProposalDropped { .. } => "proposal_dropped",
            RegionError::StoreNotMatch { .. } => "store_not_match",
            RegionError::InvalidRequest { .. } => "invalid_request",
            RegionError::EntryTooLarge { .. } => "entry_too_large",
        }
    }
}

/// What is full when a store answers `ServerIsBusy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BusyReason {
    /// The region's mailbox holds its capacity.
    #[error("region mailbox full")]
    MailboxFull,
    /// The region's proposals not yet applied hold too many bytes.
    #[error("too many pending proposal bytes in the region")]
    RegionPendingBytes,
    /// The store's proposals not yet applied hold too many bytes.
    #[error("too many pending proposal bytes in the store")]
    StorePendingBytes,
    /// The raft log writer is behind.
    #[error("the raft log writer is behind")]
    WalBehind,
}

/// Why a proposal or read was dropped before it could take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DroppedReason {
    /// A leader transfer is in progress: proposals wait for the new leader.
    #[error("a leader transfer is in progress")]
    LeaderTransferring,
    /// A membership change is still pending.
    #[error("a membership change is pending")]
    ConfChangePending,
    /// The membership change was refused by the consensus core.
    #[error("membership change refused: {0}")]
    ConfChangeRejected(String),
    /// The leader transfer names a peer that cannot lead (not a member, or a learner).
    #[error("peer {0} cannot take over leadership")]
    InvalidTransferTarget(u64),
    /// The region's replica on this store is being destroyed.
    #[error("the region's replica is being removed")]
    PeerDestroyed,
    /// The store is shutting down (or stopped on a fatal error).
    #[error("the store is stopping")]
    StoreStopping,
    /// The runtime let go of the request without answering it (a bug, or a crash path);
    /// whether it took effect is unknown to this replica.
    #[error("the request was dropped unanswered")]
    Unanswered,
}

fn leader_text(leader: &Option<Peer>) -> String {
    match leader {
        Some(p) => format!("peer {} on store {}", p.id, p.store_id),
        None => "unknown".to_string(),
    }
}

fn regions_text(regions: &[Region]) -> String {
    let ids: Vec<String> = regions.iter().map(|r| r.id.to_string()).collect();
    format!("[{}]", ids.join(", "))
}

/// A key as lowercase hex, for messages.
pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
