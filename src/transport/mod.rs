//! Store-to-store gRPC: the network implementation of the store's `Transport`.
//!
//! The store batches its own traffic (`store::Outbound`: one `RaftMessageBatch` per
//! destination store per round, heartbeats folded); this module only carries the batches.
//!
//! - `GrpcTransport` (the sending side): one long-lived client stream per peer store,
//!   opened on first use and reopened with backoff after it breaks. `send` never blocks:
//!   it queues the batch on that store's bounded queue, or refuses it (`Full`, or
//!   `Unreachable` while the store cannot be reached), so the regions hear at once that
//!   their messages were lost instead of waiting behind a dead connection. Snapshots go
//!   on calls of their own, in chunks, with bounded concurrency, an optional rate limit
//!   and retries.
//! - `TransportService` (the receiving side): the tonic service a store's server mounts;
//!   it hands batches to the store's `BatchReceiver` and takes snapshots into a staging
//!   directory before the store copies them in.
//! - `Resolve` / `StaticResolver`: where each store listens.
//!
//! Every call names its cluster and sending store in its metadata; a call from another
//! cluster is refused before anything it carries is read.

mod client;
mod server;
mod snapshot_stream;

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;

use crate::StoreId;

pub use client::GrpcTransport;
pub use server::TransportService;

/// The metadata key naming the caller's cluster.
pub const CLUSTER_ID_HEADER: &str = "flotilla-cluster-id";
/// The metadata key naming the calling store.
pub const FROM_STORE_HEADER: &str = "flotilla-from-store";

/// Where stores listen: `host:port` of a store's gRPC server.
pub trait Resolve: Send + Sync + 'static {
    /// The address of `store`, if known.
    fn resolve(&self, store: StoreId) -> Option<String>;

    /// Every store whose address is known, in id order (what a client is told so it can
    /// reach stores it was not given).
    fn known_stores(&self) -> Vec<(StoreId, String)>;
}

/// Addresses from configuration (placement will resolve them later). Addresses can be
/// changed while in use: a connection picks up the new one when it next reconnects.
#[derive(Debug, Default)]
pub struct StaticResolver {
    addresses: RwLock<HashMap<StoreId, String>>,
}

impl StaticResolver {
    /// A resolver knowing these stores.
    pub fn new(addresses: impl IntoIterator<Item = (StoreId, String)>) -> Self {
        StaticResolver {
            addresses: RwLock::new(addresses.into_iter().collect()),
        }
    }

    /// Sets (or replaces) a store's address.
    pub fn set(&self, store: StoreId, address: String) {
        self.addresses.write().insert(store, address);
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, store: StoreId) -> Option<String> {
        self.addresses.read().get(&store).cloned()
    }

    fn known_stores(&self) -> Vec<(StoreId, String)> {
        let mut all: Vec<_> = self
            .addresses
            .read()
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        all.sort();
        all
    }
}

/// Settings of the gRPC transport, both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTransportConfig {
    /// The cluster this store belongs to: calls naming another are refused.
    pub cluster_id: u64,
    /// This store.
    pub store_id: StoreId,
    /// Batches queued for one peer store before `send` refuses with `Full`. Default 1024.
    pub queue_batches: usize,
    /// How long a connection attempt may take. Default 2 s.
    pub connect_timeout: Duration,
    /// The wait before the first reconnection; it doubles after each failure up to
    /// `max_backoff`. Default 100 ms.
    pub min_backoff: Duration,
    /// Default 5 s.
    pub max_backoff: Duration,
    /// Bytes of a snapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot bytes sent per second to all stores together; `None` is unlimited (the
    /// default).
    pub snapshot_rate_bytes: Option<u64>,
    /// Snapshots this store sends at once; more wait. Default 4.
    pub max_snapshot_sends: usize,
    /// Snapshots this store receives at once; more are refused (RESOURCE_EXHAUSTED) and
    /// their senders retry. Default 4.
    pub max_snapshot_receives: usize,
    /// Further attempts at a snapshot whose send failed. Default 3.
    pub snapshot_retries: u32,
    /// How long a received snapshot's call may go without a chunk before it is ended
    /// (DEADLINE_EXCEEDED), so a stalled or paused sender does not hold a receive slot for
    /// ever. It must exceed one chunk's time at the senders' rate limit. Default 60 s.
    pub snapshot_idle_timeout: Duration,
    /// The least rate, in bytes per second, a received snapshot must average once its call
    /// is `snapshot_idle_timeout` old; a call slower than that is ended (DEADLINE_EXCEEDED),
    /// so a sender trickling a chunk just inside each idle timeout does not hold a receive
    /// slot for ever. 0 checks no rate. With a `snapshot_rate_bytes`, at most half of one
    /// send's share of it is asked (`least_snapshot_rate`). Default 64 KiB/s.
    pub snapshot_least_rate_bytes: u64,
    /// Largest message either side accepts (a batch or a chunk). Default 64 MiB.
    pub max_message_bytes: usize,
}

/// Bytes of a snapshot chunk unless configured otherwise.
pub const DEFAULT_SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

impl GrpcTransportConfig {
    /// Defaults for `store_id` in `cluster_id`.
    pub fn new(cluster_id: u64, store_id: StoreId) -> Self {
        GrpcTransportConfig {
            cluster_id,
            store_id,
            queue_batches: 1024,
            connect_timeout: Duration::from_secs(2),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            snapshot_chunk_bytes: DEFAULT_SNAPSHOT_CHUNK_BYTES,
            snapshot_rate_bytes: None,
            max_snapshot_sends: 4,
            max_snapshot_receives: 4,
            snapshot_retries: 3,
            snapshot_idle_timeout: Duration::from_secs(60),
            snapshot_least_rate_bytes: 64 << 10,
            max_message_bytes: 64 << 20,
        }
    }

    /// The least rate a received snapshot is held to: `snapshot_least_rate_bytes`, at most
    /// half of one send's share of `snapshot_rate_bytes` (the stores of a cluster normally
    /// share their limits), so a rate-limited sender is never ended for keeping to its
    /// limit.
    pub fn least_snapshot_rate(&self) -> u64 {
        match self.snapshot_rate_bytes {
            None => self.snapshot_least_rate_bytes,
            Some(rate) => {
                let share = rate / self.max_snapshot_sends.max(1) as u64;
                self.snapshot_least_rate_bytes.min(share / 2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As configured without a rate limit; with one, at most half of one send's share.
    #[test]
    fn the_least_snapshot_rate_stays_under_a_rate_limited_senders_share() {
        let least = |rate: Option<u64>, sends: usize, least: u64| {
            let mut c = GrpcTransportConfig::new(1, StoreId(1));
            c.snapshot_rate_bytes = rate;
            c.max_snapshot_sends = sends;
            c.snapshot_least_rate_bytes = least;
            c.least_snapshot_rate()
        };
        assert_eq!(least(None, 4, 4321), 4321);
        assert_eq!(least(None, 4, 0), 0);
        // 1 MiB/s over 4 sends: 256 KiB/s each, half of it 128 KiB/s, over 64 KiB/s.
        assert_eq!(least(Some(1 << 20), 4, 64 << 10), 64 << 10);
        // 100 KiB/s over 4 sends: 25 KiB/s each, half of it 12.5 KiB/s.
        assert_eq!(least(Some(100 << 10), 4, 64 << 10), 12_800);
        assert_eq!(least(Some(100 << 10), 1, 64 << 10), 51_200);
        assert_eq!(least(Some(1 << 20), 4, 0), 0);
        assert_eq!(
            GrpcTransportConfig::new(1, StoreId(1)).least_snapshot_rate(),
            64 << 10
        );
    }

    #[test]
    fn a_static_resolver_lists_its_stores_in_id_order_and_takes_new_addresses() {
        let resolver = StaticResolver::new([
            (StoreId(3), "c:3".to_string()),
            (StoreId(1), "a:1".to_string()),
        ]);
        assert_eq!(resolver.resolve(StoreId(1)).as_deref(), Some("a:1"));
        assert_eq!(resolver.resolve(StoreId(2)), None);
        resolver.set(StoreId(2), "b:2".to_string());
        resolver.set(StoreId(3), "c:30".to_string());
        assert_eq!(
            resolver.known_stores(),
            vec![
                (StoreId(1), "a:1".to_string()),
                (StoreId(2), "b:2".to_string()),
                (StoreId(3), "c:30".to_string()),
            ]
        );
    }
}
