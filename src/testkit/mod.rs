//! Test harnesses, not part of the embedding API: what the tests, the benches and
//! `flotilla sim` drive the code with. Nothing in the runtime depends on this module.
//!
//! - `raft_sim`: a seeded simulator of one Raft group with fault injection and safety
//!   invariants checked after every step; `raft_sim::cluster` is its in-memory cluster
//!   harness, which scenario tests use directly.
//! - `linearizability`: a checker for recorded client histories (Wing & Gong search with
//!   memoisation, key by key, unknown outcomes allowed) and a recorder for them.
//! - `cluster`: stores in one process over the in-memory engines and the in-process
//!   network, on threads or stepped; crash, restart, and client-like helpers.
//! - `store_sim`: a seeded simulator of whole stores stepped on one thread, with network,
//!   disk and process faults, clients checked for linearizability, and the runtime's
//!   invariants checked as it goes.
//! - `hooked_log`: the in-memory raft log behind a hook that can stall, fail or count
//!   writes.
//! - `Rng`: the small seeded generator the simulator and the randomized tests share.

pub mod cluster;
pub mod hooked_log;
pub mod linearizability;
pub mod raft_sim;
pub mod store_sim;

pub use crate::raft::rng::Rng;
