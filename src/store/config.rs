//! Settings of a store's runtime.

use std::time::Duration;

use super::batch::BatchConfig;
use super::flow::FlowLimits;
use super::wal_writer::WalWriterConfig;
use crate::StoreId;
use crate::storage::log_gc::GcPolicy;

/// Raft timing and limits every region of the store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// The store timer's period: one tick of every active region. Default 100 ms.
    pub tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    /// Default 10.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats. Default 2.
    pub heartbeat_ticks: usize,
    /// Bytes of entries in one append message at most. Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower at most. Default 256.
    pub max_inflight_msgs: usize,
    /// Bytes of one command at most; a larger one gets `EntryTooLarge`. Default 8 MiB.
    pub max_entry_size: u64,
    /// Bytes of each region's recent entries kept in memory for replication. Default 1 MiB.
    pub entry_cache_bytes: u64,
    /// Bytes of committed entries one round hands a region's apply at most (at least one
    /// entry): a region with a long backlog to apply goes on in later rounds instead of
    /// making one huge apply batch while the other regions wait. Default 16 MiB.
    pub max_committed_bytes_per_round: u64,
    /// Ticks an FSM catches up at most after a slow round. Default 4.
    pub max_catch_up_ticks: u32,
    /// How long a raft poller holds plain heartbeats (and their responses) for the rounds
    /// behind it, so that one batch per peer store carries every region's: what a tick's
    /// thousands of regions send travels together. Anything else leaves at the end of its
    /// round. A store run stepped holds nothing. Default 50 ms (half a tick: a heartbeat
    /// is late by at most that, well inside the election timeout).
    pub heartbeat_hold: Duration,
    /// Mixed into every replica's election-timer randomness (which is otherwise fixed by
    /// region and peer ids, so elections replay). Default 0; the simulator varies it per
    /// seed.
    pub seed: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_entry_size: 8 << 20,
            entry_cache_bytes: 1 << 20,
            max_committed_bytes_per_round: 16 << 20,
            max_catch_up_ticks: 4,
            heartbeat_hold: Duration::from_millis(50),
            seed: 0,
        }
    }
}

/// How idle regions sleep, and how a store watches its peer stores so that a sleeping
/// region still elects when its leader's store falls silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HibernationSettings {
    /// Ticks a leader's region must be quiescent (everyone has everything, nothing pending;
    /// peers on down stores disregarded) before it sleeps — stops ticking, its followers
    /// with it. `None`: regions never sleep. Default `Some(10)`.
    pub idle_ticks: Option<u32>,
    /// Ticks between the store's pings to each store holding peers of its regions.
    /// Default 5.
    pub ping_ticks: u32,
    /// A peer store heard from (any batch counts) in none of this many ticks is down: the
    /// sleeping regions whose leader lives there wake and elect. Default 20.
    pub down_after_ticks: u32,
    /// Regions told of a peer store going down or coming back, per tick at most, so a mass
    /// wake is spread over ticks instead of flooding the pollers and the network.
    /// Default 256.
    pub max_wakes_per_tick: usize,
}

impl Default for HibernationSettings {
    fn default() -> Self {
        HibernationSettings {
            idle_ticks: Some(10),
            ping_ticks: 5,
            down_after_ticks: 20,
            max_wakes_per_tick: 256,
        }
    }
}

/// Settings of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// This store's id in the cluster.
    pub store_id: StoreId,
    /// Raft timing and limits.
    pub raft: RaftSettings,
    /// The raft pollers (peer FSMs).
    pub raft_pollers: BatchConfig,
    /// The apply pollers (apply FSMs).
    pub apply_pollers: BatchConfig,
    /// The WAL writer.
    pub wal: WalWriterConfig,
    /// Bytes of KV writes one apply batch gathers before it writes them (it writes at
    /// least one entry). Default 4 MiB.
    pub max_apply_batch_bytes: usize,
    /// Bytes of one batch of a range delete (a range is never cleared in one batch).
    /// Default 1 MiB.
    pub delete_range_batch_bytes: usize,
    /// Bytes of one snapshot chunk file. Default 1 MiB.
    pub snapshot_chunk_bytes: u64,
    /// Bounds on what the store holds in flight (`ServerIsBusy` past them).
    pub flow: FlowLimits,
    /// How often the store runs raft log GC. Default 10 s.
    pub log_gc_interval: Duration,
    /// How far a GC round compacts each region's log (the storage layer's policy).
    pub log_gc: GcPolicy,
    /// Idle regions sleeping, and peer store liveness.
    pub hibernation: HibernationSettings,
}

impl StoreConfig {
    /// Defaults for the store `store_id`.
    pub fn new(store_id: StoreId) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pollers = |n: usize| BatchConfig {
            pollers: n.max(1),
            ..BatchConfig::default()
        };
        StoreConfig {
            store_id,
            raft: RaftSettings::default(),
            raft_pollers: pollers(cores.div_ceil(2)),
            apply_pollers: pollers(cores.div_ceil(2)),
            wal: WalWriterConfig::default(),
            max_apply_batch_bytes: 4 << 20,
            delete_range_batch_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 20,
            flow: FlowLimits::default(),
            log_gc_interval: Duration::from_secs(10),
            log_gc: GcPolicy::default(),
            hibernation: HibernationSettings::default(),
        }
    }
}
