//! Helpers shared by the integration tests (each test binary uses what it needs).
#![allow(dead_code)]

pub mod log_model;
