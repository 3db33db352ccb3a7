//! Integration tests of the Raft core (`flotilla::raft`), built as one test binary: a change
//! to the core is compiled and linked once, not once per file (the core is generic over its
//! log, so every test binary would otherwise generate its own copy of it).
//!
//! - `paper`: the safety rules of the Raft paper, one test per section;
//! - `election`, `reads`, `replication`, `snapshots`, `membership`, `transfer`,
//!   `quiescence`, `hibernation`, `messages`: one module per README feature, each asserting
//!   behaviour that breaks if its feature does;
//! - `hardening`, `regressions`: the bugs found by review, each named after what it broke;
//! - `ready`: the Ready contract (what to sync, when there is work) through `RawNode`;
//! - `hostile`: random and malformed messages in every role;
//! - `sim`: the randomized single-group simulator over many seeds.
//!
//! Run one module with `cargo test --test raft MODULE::`.

#[path = "../common/mod.rs"]
mod common;

mod election;
mod hardening;
mod hibernation;
mod hostile;
mod membership;
mod messages;
mod paper;
mod quiescence;
mod reads;
mod ready;
mod regressions;
mod replication;
mod sim;
mod snapshots;
mod transfer;
