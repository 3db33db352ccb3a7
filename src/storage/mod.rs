//! Storage: one raft-engine log for every region of a store (`raft_log`, with the adapter
//! raft-engine's protobuf v2 entry trait needs in `wal_entry`), and the KV engine (`kv`:
//! the trait; `fjall_kv` on disk; `mem_kv` in memory with explicit durability), region
//! snapshots (`snapshot`), region and apply state (`region_meta`) and log GC (`log_gc`).

pub mod fjall_kv;
mod journaled;
pub mod kv;
pub mod log_gc;
pub mod mem_kv;
pub mod mem_log;
pub mod raft_log;
pub mod region_meta;
pub mod snapshot;
pub mod wal_entry;
