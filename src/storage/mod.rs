//! Storage: one raft-engine log for every region of a store (`raft_log`), with the adapter
//! raft-engine's protobuf v2 entry trait needs (`wal_entry`). The KV engine, region
//! snapshots and the in-memory simulation engines are still to come (issue 3).

pub mod pb {
    //! Wire types generated from proto/storage.proto.
    include!(concat!(env!("OUT_DIR"), "/storagepb.rs"));
}

pub mod raft_log;
pub mod wal_entry;
