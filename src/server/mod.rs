//! What a store serves, and `flotilla server` itself.
//!
//! - `KvService` (proto/kv.proto): reads and writes by region and epoch, with region
//!   errors typed in the response; routing as the store knows it.
//! - `AdminService` (proto/admin.proto): the store's regions and status; split, leader
//!   transfer and membership changes.
//! - `status`: the status HTTP server (/metrics, /status, /health).
//! - `ServerConfig`: the TOML configuration with its defaults and checks.
//! - `Node`: one running server — store, gRPC and status servers — started from a
//!   checked configuration and shut down gracefully.
//! - `playground`: a whole cluster of nodes in one process, its key space split.

mod admin;
mod answer;
pub mod config;
mod kv;
mod node;
pub mod playground;
pub mod status;

/// How the message of an UNAVAILABLE status begins when the server refused the call
/// before running it (it is stopping): a client may send it elsewhere, a write included.
pub const NOT_EXECUTED: &str = "not executed";

pub use admin::AdminService;
pub use config::{CheckedConfig, ConfigError, ServerConfig};
pub use kv::{DEFAULT_MAX_SCAN_PAIRS, KvService, MAX_REQUEST_BYTES};
pub use node::{IDENTITY_FILE, Node, NodeError, first_region};
