//! Typed errors of the consensus core. Nothing in the core panics on message content:
//! anything malformed becomes `RaftError::InvalidMessage`.

use std::sync::Arc;

use thiserror::Error;

/// Errors of a `LogStorage` implementation.
#[derive(Debug, Error, Clone)]
pub enum StorageError {
    #[error("requested index is compacted")]
    Compacted,
    #[error("requested index is beyond the last index")]
    Unavailable,
    #[error("snapshot is older than the existing one")]
    SnapshotOutOfDate,
    #[error("snapshot is being generated; retry later")]
    SnapshotTemporarilyUnavailable,
    #[error("an append at index {index} leaves a gap after the last index {last}")]
    LogGap { index: u64, last: u64 },
    #[error("applied index {applied} is beyond the last log index {last}")]
    AppliedBeyondLog { applied: u64, last: u64 },
    /// The log store itself failed (I/O, corruption); the source says how.
    #[error("log storage failed: {0}")]
    Backend(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Wraps a failure of the log store's own machinery.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Backend(Arc::new(e))
    }
}

/// Two backend failures are equal only if they are the same failure.
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        use StorageError::*;
        match (self, other) {
            (Compacted, Compacted)
            | (Unavailable, Unavailable)
            | (SnapshotOutOfDate, SnapshotOutOfDate)
            | (SnapshotTemporarilyUnavailable, SnapshotTemporarilyUnavailable) => true,
            (LogGap { index: a, last: b }, LogGap { index: c, last: d }) => (a, b) == (c, d),
            (
                AppliedBeyondLog {
                    applied: a,
                    last: b,
                },
                AppliedBeyondLog {
                    applied: c,
                    last: d,
                },
            ) => (a, b) == (c, d),
            (Backend(a), Backend(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for StorageError {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_are_equal_only_to_themselves() {
        let a = StorageError::backend(std::io::Error::other("disk"));
        let b = StorageError::backend(std::io::Error::other("disk"));
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        assert_ne!(a, StorageError::Compacted);
        let gap = StorageError::LogGap { index: 5, last: 2 };
        assert_eq!(gap, StorageError::LogGap { index: 5, last: 2 });
        assert_ne!(gap, StorageError::LogGap { index: 5, last: 3 });
        let ahead = StorageError::AppliedBeyondLog {
            applied: 3,
            last: 2,
        };
        assert_eq!(
            ahead,
            StorageError::AppliedBeyondLog {
                applied: 3,
                last: 2
            }
        );
        assert_ne!(
            ahead,
            StorageError::AppliedBeyondLog {
                applied: 4,
                last: 2
            }
        );
        assert_eq!(StorageError::Unavailable, StorageError::Unavailable);
        assert_ne!(StorageError::Unavailable, StorageError::SnapshotOutOfDate);
    }
}
