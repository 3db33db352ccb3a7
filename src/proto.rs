//! Every type generated from proto/, one module per protobuf package, so a reader finds
//! all wire and on-disk types in one place (as TiKV's kvproto does).

// Generated code: the .proto files document these types.
#[allow(missing_docs)]
pub mod raftpb {
    //! The consensus core's messages, entries, hard state and snapshots (proto/raft.proto).
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}

#[allow(missing_docs)]
pub mod metapb {
    //! Cluster metadata: regions, peers, epochs (proto/meta.proto).
    include!(concat!(env!("OUT_DIR"), "/metapb.rs"));
}

#[allow(missing_docs)]
pub mod storagepb {
    //! What storage writes to disk: raft log state, region and apply state, snapshot
    //! metadata (proto/storage.proto).
    include!(concat!(env!("OUT_DIR"), "/storagepb.rs"));
}

#[allow(missing_docs)]
pub mod transportpb {
    //! What stores send each other: batches of Raft messages with folded heartbeats
    //! (proto/transport.proto).
    include!(concat!(env!("OUT_DIR"), "/transportpb.rs"));
}

#[allow(missing_docs)]
pub mod commandpb {
    //! What region log entries carry: write commands, splits, membership change contexts
    //! (proto/command.proto).
    include!(concat!(env!("OUT_DIR"), "/commandpb.rs"));
}

#[allow(missing_docs)]
pub mod kvpb {
    //! The KV API a store serves to clients, with typed region errors (proto/kv.proto).
    include!(concat!(env!("OUT_DIR"), "/kvpb.rs"));
}

#[allow(missing_docs)]
pub mod adminpb {
    //! The admin API of a store: its regions and status, splits, leader transfers and
    //! membership changes (proto/admin.proto).
    include!(concat!(env!("OUT_DIR"), "/adminpb.rs"));
}

/// The encoded descriptors of kv.proto and admin.proto and the files they import, which
/// the server's gRPC reflection serves.
pub const CLIENT_API_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/client_api_descriptor.bin"));
