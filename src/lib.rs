pub mod proto;
pub mod raft;
pub mod storage;
