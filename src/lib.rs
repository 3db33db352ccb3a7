pub mod metapb {
    //! Cluster metadata types generated from proto/meta.proto (regions, peers, epochs).
    include!(concat!(env!("OUT_DIR"), "/metapb.rs"));
}
pub mod raft;
pub mod storage;
