//! The consensus core: a pure, deterministic Raft state machine (no I/O, no clock, no
//! threads). The store drives it through `RawNode`: feed ticks, messages and proposals,
//! take a `Ready`, persist and send what it says, acknowledge. Inspection goes through
//! `RawNode::status` (or the read-only accessors of `RawNode::raft`).
//!
//! The modules are private; this list is the API.

mod confchange;
mod config;
mod core;
mod errors;
mod inflights;
mod leader;
mod log;
pub(crate) mod message;
mod progress;
mod quorum;
mod raw_node;
mod read_only;
pub(crate) mod rng;
pub(crate) mod storage;
mod unstable;

/// Decodes a conf-change entry (V1 or V2) into a `ConfChangeV2`.
pub use confchange::{decode_entry as decode_conf_change, next_conf_state};
pub use config::{Config, NodeStart, ReadOnlyOption};
pub use core::{
    CampaignKind, CampaignRefusal, Raft, Role, SnapshotRequest, SnapshotRequestRefusal, SoftState,
};
pub use errors::{ConfChangeRejection, DropReason, RaftError, Result, StorageError};
pub use log::ReplicaLog;
pub use progress::{ProgressState, SnapshotStatus};
pub use raw_node::{ProgressStatus, RawNode, Ready, Status};
pub use read_only::ReadState;
pub use storage::{
    LogStorage, MemStorage, MemStorageCore, RaftState, StorageResult, entry_size, limit_size,
};
