//! Typed errors of the consensus core. Nothing in the core panics on message content:
//! anything malformed becomes `RaftError::InvalidMessage`.

use std::sync::Arc;

use thiserror::Error;

/// Errors of a `LogStorage` implementation.
#[derive(Debug, Error, Clone)]
pub enum StorageError {
    /// The index lies before the first one still held: it was compacted into the snapshot.
    #[error("requested index is compacted")]
    Compacted,
    /// The index (or a range's end) lies beyond the last index.
    #[error("requested index is beyond the last index")]
    Unavailable,
    /// A snapshot to install is older than the one held, or one to create is not newer.
    #[error("snapshot is older than the existing one")]
    SnapshotOutOfDate,
    /// No snapshot can be handed out yet (it is still being generated); the leader asks again
    /// later.
    #[error("snapshot is being generated; retry later")]
    SnapshotTemporarilyUnavailable,
    /// An append would leave a hole between the last index and its first entry.
    #[error("an append at index {index} leaves a gap after the last index {last}")]
    LogGap {
        /// First index of the refused append.
        index: u64,
        /// The log's last index.
        last: u64,
    },
    /// On restart, `Config::applied` is beyond the last stored index: the log is missing
    /// entries the state machine says it applied.
    #[error("applied index {applied} is beyond the last log index {last}")]
    AppliedBeyondLog {
        /// The applied index the node was configured with.
        applied: u64,
        /// The last index the log holds.
        last: u64,
    },
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
    /// This node is not the leader (and, for a read or transfer, knows no leader to forward it
    /// to).
    #[error("this node is not the leader (leader hint {leader})")]
    NotLeader {
        /// The leader this node knows of (0: none); the request may succeed there.
        leader: u64,
    },
    /// Proposals wait while the leader hands leadership over.
    #[error("a leader transfer to {transferee} is in progress")]
    LeaderTransferInProgress {
        /// The node taking over.
        transferee: u64,
    },
    /// The leader's uncommitted payload bytes would exceed `Config::max_uncommitted_size`.
    #[error("uncommitted log bytes would exceed {limit}")]
    UncommittedSizeLimit {
        /// The limit, in payload bytes.
        limit: u64,
    },
    /// An earlier conf change is not applied yet; one is in flight at a time.
    #[error("a configuration change is still pending (index {pending_index})")]
    ConfChangePending {
        /// Index of the conf-change entry not yet applied.
        pending_index: u64,
    },
    /// The change conflicts with whether the configuration is joint.
    #[error("configuration change is not allowed: {0}")]
    ConfChangeRejected(ConfChangeRejection),
    /// The transfer target is not a member, or is a learner.
    #[error("cannot transfer leadership to {target}: {reason}")]
    InvalidTransferTarget {
        /// The requested transferee.
        target: u64,
        /// Why it cannot lead.
        reason: &'static str,
    },
}

/// Why a membership change cannot be proposed now.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeRejection {
    /// A change was proposed while the configuration is joint; only leaving it is allowed.
    #[error("the configuration is joint; leave it first")]
    JointPending,
    /// Leaving the joint configuration (an empty `ConfChangeV2`) was proposed outside one.
    #[error("the configuration is not joint; there is nothing to leave")]
    NotJoint,
}

/// Why a call into the consensus core failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftError {
    /// A proposal, read, conf change or leader transfer was refused, changing nothing; the
    /// reason says why.
    #[error("proposal dropped: {0}")]
    ProposalDropped(DropReason),
    /// A proposal batch held no entries.
    #[error("a proposal needs at least one entry")]
    EmptyProposal,
    /// `RawNode::campaign` did not start an election.
    #[error("campaign refused: {0}")]
    CampaignRefused(#[from] super::core::CampaignRefusal),
    /// A proposed entry's payload exceeds `Config::max_entry_size`; no entry of the batch is
    /// appended.
    #[error("entry of {size} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge {
        /// Payload bytes of the offending entry.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// A message from the network is malformed, local-only, or impossible given our state;
    /// it is refused and changes nothing.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// `Config::validate` refused the configuration.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A conf-change entry does not decode, or a change (or a stored or snapshot
    /// `ConfState`) is inconsistent with the configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// Reading the log from `LogStorage` failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The core's result type; the error defaults to `RaftError`.
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
