//! Helpers shared by the integration tests (each test binary uses what it needs).
#![allow(dead_code, unused_imports)]

pub mod http;
pub mod log_model;
pub mod prometheus;
pub mod raft;
pub mod threads;
