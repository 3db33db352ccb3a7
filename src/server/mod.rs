//! What a store serves to clients over gRPC.
//!
//! - `KvService` (proto/kv.proto): reads and writes by region and epoch, with region
//!   errors typed in the response; routing as the store knows it.
//! - `AdminService` (proto/admin.proto): the store's regions and status; split, leader
//!   transfer and membership changes.
//!
//! Being built (see the README's status table): status HTTP, configuration and the
//! `flotilla server` command.

mod admin;
mod answer;
mod kv;

pub use admin::AdminService;
pub use kv::{DEFAULT_MAX_SCAN_PAIRS, KvService};
