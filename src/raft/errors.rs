//! Typed errors of the consensus core. Nothing in the core panics on message content:
//! anything malformed becomes `RaftError::InvalidMessage`.

use thiserror::Error;

/// Errors of a `LogStorage` implementation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("requested index is compacted")]
    Compacted,
    #[error("requested index is beyond the last index")]
    Unavailable,
    #[error("snapshot is older than the existing one")]
    SnapshotOutOfDate,
    #[error("snapshot is being generated; retry later")]
    SnapshotTemporarilyUnavailable,
    #[error("log storage: {0}")]
    Other(String),
}

/// Why a proposal (or read, conf change, transfer) was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DropReason {
    #[error("this node is not the leader (leader hint {leader})")]
    NotLeader { leader: u64 },
    #[error("a leader transfer to {transferee} is in progress")]
    LeaderTransferInProgress { transferee: u64 },
    #[error("uncommitted log bytes would exceed {limit}")]
    UncommittedSizeLimit { limit: u64 },
    #[error("a configuration change is still pending (index {pending_index})")]
    ConfChangePending { pending_index: u64 },
    #[error("configuration change is not allowed: {0}")]
    ConfChangeRejected(ConfChangeRejection),
    #[error("cannot transfer leadership to {target}: {reason}")]
    InvalidTransferTarget { target: u64, reason: &'static str },
}

/// Why a membership change cannot be proposed now.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeRejection {
    #[error("the configuration is joint; leave it first")]
    JointPending,
    #[error("the configuration is not joint; there is nothing to leave")]
    NotJoint,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftError {
    #[error("proposal dropped: {0}")]
    ProposalDropped(DropReason),
    #[error("a proposal needs at least one entry")]
    EmptyProposal,
    #[error("campaign refused: {0}")]
    CampaignRefused(#[from] super::core::CampaignRefusal),
    #[error("entry of {size} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge { size: u64, max: u64 },
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = RaftError> = std::result::Result<T, E>;

pub(crate) fn invalid(msg: impl Into<String>) -> RaftError {
    RaftError::InvalidMessage(msg.into())
}
