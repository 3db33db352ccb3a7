//! The consensus core: a pure, deterministic Raft state machine (no I/O, no clock, no
//! threads). The store drives it through `RawNode`: feed ticks, messages and proposals,
//! take a `Ready`, persist and send what it says, acknowledge.

pub mod confchange;
pub mod config;
pub mod core;
pub mod errors;
pub mod inflights;
mod leader;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raw_node;
pub mod read_only;
pub mod rng;
pub mod sim;
pub mod storage;
pub mod unstable;

pub use config::{Config, NodeStart, ReadOnlyOption};
pub use core::{CampaignKind, CampaignRefusal, Raft, Role, SoftState};
pub use errors::{ConfChangeRejection, DropReason, RaftError, Result, StorageError};
pub use raw_node::{RawNode, Ready, Status};
pub use read_only::ReadState;
pub use storage::{LogStorage, MemStorage, RaftState};
