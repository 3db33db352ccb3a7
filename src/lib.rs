pub mod raft;
pub mod storage;
