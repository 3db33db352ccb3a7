#![deny(missing_docs)]
//! flotilla: a Multi-Raft storage engine. One store (a process) hosts thousands of Raft
//! groups, the regions, each replicating one key range; all of a store's regions share one
//! batched write-ahead log, so one write and one fsync persist many groups' entries.
//!
//! - `allocator` (feature `mimalloc`, default): the allocator the `flotilla` binary and the
//!   store bench run on, and `use_mimalloc!` to install it.
//! - `ids`: typed region, peer and store ids, so that one cannot be passed for another.
//! - `proto`: the types generated from `proto/`: Raft messages, cluster metadata, on-disk
//!   records.
//! - `raft`: the consensus core, a pure deterministic Raft state machine driven through
//!   `RawNode` (no I/O, clock or threads of its own).
//! - `storage`: the shared raft log, the KV engine, region snapshots, region and apply
//!   state, and log GC.
//! - `region`: the typed region errors every request can get back, the epoch table, key
//!   checks, splits.
//! - `store`: the store runtime and the embedding API (`store::Store`): the batch system,
//!   the peer and apply FSMs, the group-commit WAL writer, outbound batching with folded
//!   heartbeats and the in-process network, the ticker, responders; writes, linearizable
//!   reads, splits, membership changes with snapshots between stores, leader transfer.
//! - `transport`: store-to-store gRPC (`GrpcTransport` sends, `TransportService`
//!   receives), the network implementation of the store's `Transport`.
//! - `server`: `flotilla server` — the KV and admin gRPC services, status HTTP, the
//!   configuration, a running `Node`, the `Playground`.
//! - `client`: a Rust client speaking only the wire protocol: region and leader caches,
//!   retries with backoff, operations split across regions.
//! - `testkit`: test harnesses (the Raft simulator, a seeded `Rng`, the store cluster,
//!   the linearizability checker); not part of the embedding API.
//!
//! Not built yet: placement; region merge.

#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod client;
pub mod ids;
pub mod proto;
pub mod raft;
pub mod region;
pub mod server;
pub mod storage;
pub mod store;
pub mod testkit;
pub mod transport;

pub use ids::{PeerId, RegionId, StoreId};
