//! The server's configuration: a TOML file (every field optional, each with a documented
//! default) that command-line flags override, checked as a whole before anything starts
//! so a bad value is refused with the name of its field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::StoreId;
use crate::storage::fjall_kv::KvConfig;
use crate::storage::raft_log::RaftLogConfig;
use crate::store::StoreConfig;
use crate::transport::{DEFAULT_SNAPSHOT_CHUNK_BYTES, GrpcTransportConfig};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (an unknown field, a wrong type).
    #[error("the configuration file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's account, naming the field and line.
        message: String,
    },
    /// A field's value is out of range or malformed.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field, as written in the file (`raft.election_ticks`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid<T>(field: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        field,
        reason: reason.into(),
    })
}

/// Everything `flotilla server` is configured by. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The cluster this store belongs to; its data directory and every peer must agree.
    /// Default 1.
    pub cluster_id: u64,
    /// This store's id, unique in the cluster, not 0. Required.
    pub store_id: u64,
    /// Where the store keeps its raft log, KV data and snapshots. Default `flotilla-data`.
    pub data_dir: PathBuf,
    /// The gRPC address served to clients and peer stores. Default `127.0.0.1:20160`.
    pub listen_addr: String,
    /// The address this store gives for itself (to clients, in StoreStatus, and in
    /// /status); empty means `listen_addr`. Peers reach it at its `initial_stores` address.
    /// Default empty.
    pub advertise_addr: String,
    /// The status HTTP address (/metrics, /status, /health). Default `127.0.0.1:20180`.
    pub status_addr: String,
    /// The stores that start the cluster, `id=host:port` separated by commas, this store
    /// among them. Every initial store must be given the same list: together they create
    /// the first region, the whole key space, one replica on each. Required.
    pub initial_stores: String,
    /// The log filter (`error`, `warn`, `info`, `debug`, `trace`, or a `tracing` directive
    /// such as `flotilla=debug`). Default `info`.
    pub log_level: String,
    /// Raft timing and limits.
    pub raft: RaftSection,
    /// Idle regions sleeping, and peer store liveness.
    pub hibernation: HibernationSection,
    /// Thread pools.
    pub pools: PoolsSection,
    /// Bounds on requests and snapshots.
    pub limits: LimitsSection,
    /// The engines on disk.
    pub storage: StorageSection,
}

/// `[raft]`: timing and limits every region of the store uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// The store timer's period in milliseconds. Default 100.
    pub tick_interval_ms: u64,
    /// Ticks without a leader before a follower campaigns. Default 10.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats; less than `election_ticks`. Default 2.
    pub heartbeat_ticks: usize,
    /// Bytes of one command at most. Default 8 MiB.
    pub max_entry_bytes: u64,
    /// Bytes of entries in one append message at most. Default 1 MiB.
    pub max_append_bytes: u64,
    /// Append messages in flight to one follower at most. Default 256.
    pub max_inflight_msgs: usize,
}

/// `[hibernation]`: idle regions sleeping, and how peer stores are watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HibernationSection {
    /// Ticks a region must be idle before it sleeps; 0 means regions never sleep.
    /// Default 10.
    pub idle_ticks: u32,
    /// Ticks between pings to each peer store. Default 5.
    pub ping_ticks: u32,
    /// Ticks of silence after which a peer store is down. Default 20.
    pub down_after_ticks: u32,
}

/// `[pools]`: thread pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolsSection {
    /// Raft poller threads; 0 means half the cores, at least 1. Default 0.
    pub raft_pollers: usize,
    /// Apply poller threads; 0 means half the cores, at least 1. Default 0.
    pub apply_pollers: usize,
    /// Threads of the async runtime serving gRPC and HTTP. Default 2.
    pub grpc_threads: usize,
}

/// `[limits]`: bounds on requests and snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Pairs one scan returns at most, whatever it asks for. Default 10,000.
    pub max_scan_pairs: usize,
    /// Snapshots sent at once. Default 4.
    pub max_snapshot_sends: usize,
    /// Snapshots received at once; more are refused and retried by their senders.
    /// Default 4.
    pub max_snapshot_receives: usize,
    /// Snapshot bytes sent per second to all peers together; 0 means unlimited.
    /// Default 0.
    pub snapshot_rate_bytes: u64,
    /// How long a snapshot being received may go without a chunk before its call is
    /// ended, in milliseconds; with a `snapshot_rate_bytes`, at least twice the time of
    /// `max_snapshot_sends` 1 MiB chunks at that rate. Default 60,000.
    pub snapshot_idle_timeout_ms: u64,
    /// The least rate, in bytes a second, a snapshot being received must average once its
    /// call is `snapshot_idle_timeout_ms` old (a slower call is ended, so a trickling
    /// sender cannot hold a receive slot); 0 checks no rate. With a `snapshot_rate_bytes`,
    /// at most half of one send's share of that rate is asked. Default 65,536.
    pub snapshot_least_rate_bytes: u64,
    /// Bytes of the store's proposals taken and not yet answered; past it a write gets
    /// ServerIsBusy. Default 256 MiB.
    pub pending_write_bytes: u64,
    /// How long a shutdown waits for in-flight requests before closing anyway, in
    /// milliseconds. Default 5,000.
    pub shutdown_grace_ms: u64,
}

/// `[storage]`: the engines on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Raft log files rotate at this size. Default 128 MiB.
    pub wal_file_bytes: u64,
    /// The KV engine's block cache. Default 32 MiB.
    pub kv_cache_bytes: u64,
    /// The KV engine's memtable size. Default 64 MiB.
    pub kv_memtable_bytes: u64,
    /// Milliseconds between raft log GC rounds. Default 10,000.
    pub log_gc_interval_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cluster_id: 1,
            store_id: 0,
            data_dir: PathBuf::from("flotilla-data"),
            listen_addr: "127.0.0.1:20160".into(),
            advertise_addr: String::new(),
            status_addr: "127.0.0.1:20180".into(),
            initial_stores: String::new(),
            log_level: "info".into(),
            raft: RaftSection::default(),
            hibernation: HibernationSection::default(),
            pools: PoolsSection::default(),
            limits: LimitsSection::default(),
            storage: StorageSection::default(),
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_interval_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_entry_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

impl Default for HibernationSection {
    fn default() -> Self {
        HibernationSection {
            idle_ticks: 10,
            ping_ticks: 5,
            down_after_ticks: 20,
        }
    }
}

impl Default for PoolsSection {
    fn default() -> Self {
        PoolsSection {
            raft_pollers: 0,
            apply_pollers: 0,
            grpc_threads: 2,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_scan_pairs: super::DEFAULT_MAX_SCAN_PAIRS,
            max_snapshot_sends: 4,
            max_snapshot_receives: 4,
            snapshot_rate_bytes: 0,
            snapshot_idle_timeout_ms: 60_000,
            snapshot_least_rate_bytes: 64 << 10,
            pending_write_bytes: 256 << 20,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            wal_file_bytes: 128 << 20,
            kv_cache_bytes: 32 << 20,
            kv_memtable_bytes: 64 << 20,
            log_gc_interval_ms: 10_000,
        }
    }
}

/// The stores that start a cluster: id → address, in id order.
pub type InitialStores = BTreeMap<StoreId, String>;

/// Parses `1=host:port,2=host:port`: ids not 0 and distinct, addresses `host:port` and
/// distinct.
pub fn parse_initial_stores(list: &str) -> Result<InitialStores, ConfigError> {
    const FIELD: &str = "initial_stores";
    let mut stores = InitialStores::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, address)) = item.split_once('=') else {
            return invalid(FIELD, format!("`{item}` is not `id=host:port`"));
        };
        let id: u64 = match id.trim().parse() {
            Ok(id) if id != 0 => id,
            _ => return invalid(FIELD, format!("`{id}` is not a store id (a number, not 0)")),
        };
        let address = address.trim();
        check_host_port(FIELD, address)?;
        if stores.values().any(|a| a == address) {
            return invalid(FIELD, format!("{address} is given to two stores"));
        }
        if stores.insert(StoreId(id), address.to_string()).is_some() {
            return invalid(FIELD, format!("store {id} is listed twice"));
        }
    }
    if stores.is_empty() {
        return invalid(
            FIELD,
            "no stores given: expected `1=host:port,2=host:port,…`",
        );
    }
    Ok(stores)
}

fn check_host_port(field: &'static str, address: &str) -> Result<(), ConfigError> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => invalid(field, format!("`{address}` is not `host:port`")),
    }
}

fn check_socket_addr(field: &'static str, address: &str) -> Result<SocketAddr, ConfigError> {
    address.parse().or_else(|_| {
        invalid(
            field,
            format!("`{address}` is not an IP address with a port (e.g. 127.0.0.1:20160)"),
        )
    })
}

/// A configuration whose values have been checked, with what they parse to.
#[derive(Debug, Clone)]
pub struct CheckedConfig {
    config: ServerConfig,
    listen: SocketAddr,
    status: SocketAddr,
    initial_stores: InitialStores,
}

impl ServerConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text; fields it leaves out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }

    /// The configuration as TOML (every field, defaults included).
    pub fn to_toml(&self) -> String {
        // Every field is a plain scalar or table, which TOML always represents.
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every field, naming the first one that is wrong.
    pub fn check(self) -> Result<CheckedConfig, ConfigError> {
        if self.cluster_id == 0 {
            return invalid("cluster_id", "must not be 0");
        }
        if self.store_id == 0 {
            return invalid("store_id", "required, and not 0");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        let listen = check_socket_addr("listen_addr", &self.listen_addr)?;
        if !self.advertise_addr.is_empty() {
            check_host_port("advertise_addr", &self.advertise_addr)?;
        }
        let status = check_socket_addr("status_addr", &self.status_addr)?;
        if status == listen && listen.port() != 0 {
            return invalid("status_addr", "must differ from listen_addr");
        }
        let initial_stores = parse_initial_stores(&self.initial_stores)?;
        if !initial_stores.contains_key(&StoreId(self.store_id)) {
            return invalid(
                "initial_stores",
                format!(
                    "store {} is not among them; a store joins an existing cluster only \
                     through placement, which is not built yet",
                    self.store_id
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid(
                "log_level",
                format!("`{}` is not a log filter", self.log_level),
            );
        }
        self.raft.check()?;
        self.hibernation.check()?;
        self.limits.check()?;
        self.storage.check()?;
        if self.pools.grpc_threads == 0 {
            return invalid("pools.grpc_threads", "must be at least 1");
        }
        Ok(CheckedConfig {
            config: self,
            listen,
            status,
            initial_stores,
        })
    }
}

impl RaftSection {
    fn check(&self) -> Result<(), ConfigError> {
        if self.tick_interval_ms == 0 {
            return invalid("raft.tick_interval_ms", "must be at least 1");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("raft.heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid(
                "raft.election_ticks",
                format!(
                    "{} must be more than heartbeat_ticks ({})",
                    self.election_ticks, self.heartbeat_ticks
                ),
            );
        }
        if self.max_entry_bytes == 0 {
            return invalid("raft.max_entry_bytes", "must be at least 1");
        }
        if self.max_inflight_msgs == 0 {
            return invalid("raft.max_inflight_msgs", "must be at least 1");
        }
        Ok(())
    }
}

impl HibernationSection {
    fn check(&self) -> Result<(), ConfigError> {
        if self.ping_ticks == 0 {
            return invalid("hibernation.ping_ticks", "must be at least 1");
        }
        if self.down_after_ticks <= self.ping_ticks {
            return invalid(
                "hibernation.down_after_ticks",
                format!(
                    "{} must be more than ping_ticks ({}): a store would be down between two \
                     pings",
                    self.down_after_ticks, self.ping_ticks
                ),
            );
        }
        Ok(())
    }
}

impl LimitsSection {
    /// The shortest idle timeout a receiver may have (1 ms when snapshots are not
    /// rate-limited): the chunks of all the sends a sender runs at once share its rate, so
    /// a stream may wait that many chunks' time between two of its own; twice that leaves
    /// room. (Every store of a cluster normally has the same limits.)
    fn least_snapshot_idle_timeout_ms(&self) -> u64 {
        if self.snapshot_rate_bytes == 0 {
            return 1;
        }
        let chunk_ms = (DEFAULT_SNAPSHOT_CHUNK_BYTES as u64)
            .saturating_mul(1000)
            .saturating_mul(self.max_snapshot_sends as u64)
            / self.snapshot_rate_bytes;
        chunk_ms.saturating_mul(2).max(1)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.max_scan_pairs == 0 {
            return invalid("limits.max_scan_pairs", "must be at least 1");
        }
        if self.max_snapshot_sends == 0 {
            return invalid("limits.max_snapshot_sends", "must be at least 1");
        }
        if self.max_snapshot_receives == 0 {
            return invalid("limits.max_snapshot_receives", "must be at least 1");
        }
        let least_idle_ms = self.least_snapshot_idle_timeout_ms();
        if self.snapshot_idle_timeout_ms < least_idle_ms {
            return invalid(
                "limits.snapshot_idle_timeout_ms",
                format!(
                    "must be at least {least_idle_ms}: twice a snapshot chunk's time at \
                     snapshot_rate_bytes with max_snapshot_sends sharing it"
                ),
            );
        }
        if self.pending_write_bytes == 0 {
            return invalid("limits.pending_write_bytes", "must be at least 1");
        }
        Ok(())
    }
}

impl StorageSection {
    fn check(&self) -> Result<(), ConfigError> {
        if self.wal_file_bytes < 1 << 20 {
            return invalid("storage.wal_file_bytes", "must be at least 1 MiB");
        }
        if self.kv_memtable_bytes < 1 << 20 {
            return invalid("storage.kv_memtable_bytes", "must be at least 1 MiB");
        }
        if self.log_gc_interval_ms == 0 {
            return invalid("storage.log_gc_interval_ms", "must be at least 1");
        }
        Ok(())
    }
}

impl CheckedConfig {
    /// The configuration as given.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This store.
    pub fn store_id(&self) -> StoreId {
        StoreId(self.config.store_id)
    }

    /// The gRPC address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The status HTTP address to listen on.
    pub fn status_addr(&self) -> SocketAddr {
        self.status
    }

    /// The initial stores and their addresses.
    pub fn initial_stores(&self) -> &InitialStores {
        &self.initial_stores
    }

    /// The store runtime's settings.
    pub fn store_config(&self) -> StoreConfig {
        let c = &self.config;
        let mut store = StoreConfig::new(self.store_id());
        store.raft.tick_interval = Duration::from_millis(c.raft.tick_interval_ms);
        store.raft.election_ticks = c.raft.election_ticks;
        store.raft.heartbeat_ticks = c.raft.heartbeat_ticks;
        store.raft.max_entry_size = c.raft.max_entry_bytes;
        store.raft.max_size_per_msg = c.raft.max_append_bytes;
        store.raft.max_inflight_msgs = c.raft.max_inflight_msgs;
        store.hibernation.idle_ticks = Some(c.hibernation.idle_ticks).filter(|&t| t > 0);
        store.hibernation.ping_ticks = c.hibernation.ping_ticks;
        store.hibernation.down_after_ticks = c.hibernation.down_after_ticks;
        if c.pools.raft_pollers > 0 {
            store.raft_pollers.pollers = c.pools.raft_pollers;
        }
        if c.pools.apply_pollers > 0 {
            store.apply_pollers.pollers = c.pools.apply_pollers;
        }
        store.flow.store_pending_bytes = c.limits.pending_write_bytes;
        store.log_gc_interval = Duration::from_millis(c.storage.log_gc_interval_ms);
        store
    }

    /// The gRPC transport's settings.
    pub fn transport_config(&self) -> GrpcTransportConfig {
        let c = &self.config;
        let mut transport = GrpcTransportConfig::new(c.cluster_id, self.store_id());
        transport.max_snapshot_sends = c.limits.max_snapshot_sends;
        transport.max_snapshot_receives = c.limits.max_snapshot_receives;
        transport.snapshot_rate_bytes = Some(c.limits.snapshot_rate_bytes).filter(|&b| b > 0);
        transport.snapshot_idle_timeout = Duration::from_millis(c.limits.snapshot_idle_timeout_ms);
        transport.snapshot_least_rate_bytes = c.limits.snapshot_least_rate_bytes;
        transport
    }

    /// The raft log's settings, in `<data_dir>/raft`.
    pub fn raft_log_config(&self) -> RaftLogConfig {
        let mut log = RaftLogConfig::new(self.config.data_dir.join("raft"));
        log.target_file_size = self.config.storage.wal_file_bytes;
        log
    }

    /// The KV engine's settings, in `<data_dir>/kv`.
    pub fn kv_config(&self) -> KvConfig {
        let mut kv = KvConfig::new(self.config.data_dir.join("kv"));
        kv.cache_bytes = self.config.storage.kv_cache_bytes;
        kv.memtable_bytes = self.config.storage.kv_memtable_bytes;
        kv
    }

    /// How long a shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.config.limits.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ServerConfig {
        ServerConfig {
            store_id: 2,
            initial_stores: "1=127.0.0.1:1, 2=127.0.0.1:2,3=localhost:3".into(),
            ..ServerConfig::default()
        }
    }

    fn refused_field(config: ServerConfig) -> &'static str {
        match config.check() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a refused field, got {other:?}"),
        }
    }

    #[test]
    fn defaults_with_the_required_fields_pass() {
        let checked = valid().check().unwrap();
        assert_eq!(checked.config(), &valid());
        assert_eq!(checked.initial_stores().len(), 3);
        assert_eq!(checked.initial_stores()[&StoreId(3)], "localhost:3");
        let store = checked.store_config();
        assert_eq!(store.store_id, StoreId(2));
        assert_eq!(store.raft.tick_interval, Duration::from_millis(100));
        assert_eq!(store.hibernation.idle_ticks, Some(10));
        assert_eq!(checked.transport_config().snapshot_rate_bytes, None);
        assert_eq!(checked.shutdown_grace(), Duration::from_secs(5));
        // 0 pollers: the store's own default (at least one).
        let default = StoreConfig::new(StoreId(2));
        assert_eq!(store.raft_pollers.pollers, default.raft_pollers.pollers);
        assert_eq!(store.apply_pollers.pollers, default.apply_pollers.pollers);
        assert!(store.raft_pollers.pollers >= 1);
    }

    /// A rate-limited sender's chunks take their time: the idle timeout must leave twice
    /// the time of one chunk per concurrent send at that rate.
    #[test]
    fn the_snapshot_idle_timeout_leaves_room_for_rate_limited_chunks() {
        let with = |rate: u64, sends: usize, idle_ms: u64| {
            let mut config = valid();
            config.limits.snapshot_rate_bytes = rate;
            config.limits.max_snapshot_sends = sends;
            config.limits.snapshot_idle_timeout_ms = idle_ms;
            config.check().map(drop)
        };
        // 1 MiB/s, 4 sends: a stream's chunk may wait 4 s, so 8 s at least.
        assert!(with(1 << 20, 4, 8_000).is_ok());
        assert!(matches!(
            with(1 << 20, 4, 7_999),
            Err(ConfigError::Invalid {
                field: "limits.snapshot_idle_timeout_ms",
                ..
            })
        ));
        assert!(with(1 << 20, 1, 2_000).is_ok());
        assert!(with(1 << 20, 1, 1_999).is_err());
        assert!(with(2 << 20, 1, 1_000).is_ok());
        assert!(with(2 << 20, 1, 999).is_err());
        // Unlimited, any timeout of at least 1 ms; a huge rate, too.
        assert!(with(0, 4, 1).is_ok());
        assert!(with(0, 4, 0).is_err());
        assert!(with(u64::MAX, 4, 1).is_ok());
    }

    #[test]
    fn pool_sizes_and_limits_reach_the_store_and_transport() {
        let mut config = valid();
        config.pools.raft_pollers = 3;
        config.pools.apply_pollers = 5;
        config.limits.max_snapshot_sends = 7;
        config.limits.max_snapshot_receives = 9;
        config.limits.snapshot_idle_timeout_ms = 1500;
        config.limits.snapshot_least_rate_bytes = 4321;
        config.limits.pending_write_bytes = 1234;
        config.limits.shutdown_grace_ms = 250;
        config.storage.log_gc_interval_ms = 60_000;
        config.raft.max_append_bytes = 4096;
        config.raft.max_inflight_msgs = 8;
        let checked = config.check().unwrap();
        let store = checked.store_config();
        assert_eq!(
            (store.raft_pollers.pollers, store.apply_pollers.pollers),
            (3, 5)
        );
        assert_eq!(store.flow.store_pending_bytes, 1234);
        assert_eq!(store.log_gc_interval, Duration::from_secs(60));
        assert_eq!(
            (store.raft.max_size_per_msg, store.raft.max_inflight_msgs),
            (4096, 8)
        );
        let transport = checked.transport_config();
        assert_eq!(
            (
                transport.max_snapshot_sends,
                transport.max_snapshot_receives
            ),
            (7, 9)
        );
        assert_eq!(transport.snapshot_idle_timeout, Duration::from_millis(1500));
        assert_eq!(transport.snapshot_least_rate_bytes, 4321);
        assert_eq!(checked.shutdown_grace(), Duration::from_millis(250));
    }

    #[test]
    fn a_file_sets_what_it_names_and_keeps_the_rest() {
        let config = ServerConfig::from_toml(
            r#"
            store_id = 1
            initial_stores = "1=127.0.0.1:7000"
            [raft]
            election_ticks = 20
            [hibernation]
            idle_ticks = 0
            [limits]
            snapshot_rate_bytes = 1048576
            "#,
        )
        .unwrap();
        assert_eq!(config.raft.election_ticks, 20);
        assert_eq!(config.raft.heartbeat_ticks, 2);
        let checked = config.check().unwrap();
        assert_eq!(checked.store_config().hibernation.idle_ticks, None);
        assert_eq!(
            checked.transport_config().snapshot_rate_bytes,
            Some(1 << 20)
        );
    }

    #[test]
    fn a_file_is_read_and_its_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flotilla.toml");
        std::fs::write(&path, "store_id = 4\n").unwrap();
        assert_eq!(ServerConfig::from_file(&path).unwrap().store_id, 4);
        std::fs::write(&path, "store_id = [").unwrap();
        match ServerConfig::from_file(&path) {
            Err(ConfigError::Parse { path: named, .. }) => assert_eq!(named, path),
            other => panic!("a malformed file: {other:?}"),
        }
        let missing = dir.path().join("missing.toml");
        match ServerConfig::from_file(&missing) {
            Err(ConfigError::Read { path: named, .. }) => assert_eq!(named, missing),
            other => panic!("a missing file: {other:?}"),
        }
    }

    #[test]
    fn the_written_defaults_read_back_the_same() {
        let config = valid();
        assert_eq!(ServerConfig::from_toml(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn an_unknown_field_or_a_wrong_type_is_refused_with_its_name() {
        for (text, named) in [
            ("stor_id = 1", "stor_id"),
            ("[raft]\nelection_tick = 3", "election_tick"),
            ("store_id = \"one\"", "store_id"),
        ] {
            let err = ServerConfig::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn every_bad_value_names_its_field() {
        type Change = Box<dyn Fn(&mut ServerConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("cluster_id", Box::new(|c| c.cluster_id = 0)),
            ("store_id", Box::new(|c| c.store_id = 0)),
            ("data_dir", Box::new(|c| c.data_dir = PathBuf::new())),
            (
                "listen_addr",
                Box::new(|c| c.listen_addr = "localhost".into()),
            ),
            (
                "advertise_addr",
                Box::new(|c| c.advertise_addr = "host".into()),
            ),
            (
                "status_addr",
                Box::new(|c| c.status_addr = "1.2.3.4".into()),
            ),
            (
                "status_addr",
                Box::new(|c| c.status_addr = c.listen_addr.clone()),
            ),
            ("initial_stores", Box::new(|c| c.initial_stores.clear())),
            ("initial_stores", Box::new(|c| c.store_id = 9)),
            ("log_level", Box::new(|c| c.log_level = "[=".into())),
            (
                "raft.tick_interval_ms",
                Box::new(|c| c.raft.tick_interval_ms = 0),
            ),
            (
                "raft.heartbeat_ticks",
                Box::new(|c| c.raft.heartbeat_ticks = 0),
            ),
            (
                "raft.election_ticks",
                Box::new(|c| c.raft.election_ticks = 2),
            ),
            (
                "raft.max_entry_bytes",
                Box::new(|c| c.raft.max_entry_bytes = 0),
            ),
            (
                "raft.max_inflight_msgs",
                Box::new(|c| c.raft.max_inflight_msgs = 0),
            ),
            (
                "hibernation.ping_ticks",
                Box::new(|c| c.hibernation.ping_ticks = 0),
            ),
            (
                "hibernation.down_after_ticks",
                Box::new(|c| c.hibernation.down_after_ticks = 5),
            ),
            ("pools.grpc_threads", Box::new(|c| c.pools.grpc_threads = 0)),
            (
                "limits.max_scan_pairs",
                Box::new(|c| c.limits.max_scan_pairs = 0),
            ),
            (
                "limits.max_snapshot_sends",
                Box::new(|c| c.limits.max_snapshot_sends = 0),
            ),
            (
                "limits.max_snapshot_receives",
                Box::new(|c| c.limits.max_snapshot_receives = 0),
            ),
            (
                "limits.snapshot_idle_timeout_ms",
                Box::new(|c| c.limits.snapshot_idle_timeout_ms = 0),
            ),
            (
                "limits.snapshot_idle_timeout_ms",
                Box::new(|c| c.limits.snapshot_rate_bytes = 10_000),
            ),
            (
                "limits.pending_write_bytes",
                Box::new(|c| c.limits.pending_write_bytes = 0),
            ),
            (
                "storage.wal_file_bytes",
                Box::new(|c| c.storage.wal_file_bytes = 1000),
            ),
            (
                "storage.kv_memtable_bytes",
                Box::new(|c| c.storage.kv_memtable_bytes = 1000),
            ),
            (
                "storage.log_gc_interval_ms",
                Box::new(|c| c.storage.log_gc_interval_ms = 0),
            ),
        ];
        for (field, change) in cases {
            let mut config = valid();
            change(&mut config);
            assert_eq!(refused_field(config), field);
        }
    }

    #[test]
    fn the_smallest_sizes_allowed_pass() {
        let mut config = valid();
        config.storage.wal_file_bytes = 1 << 20;
        config.storage.kv_memtable_bytes = 1 << 20;
        let checked = config.check().unwrap();
        assert_eq!(checked.raft_log_config().target_file_size, 1 << 20);
        assert_eq!(checked.kv_config().memtable_bytes, 1 << 20);
    }

    #[test]
    fn malformed_initial_store_lists_are_refused() {
        for list in [
            "1",
            "0=127.0.0.1:1",
            "x=127.0.0.1:1",
            "1=127.0.0.1",
            "1=:80",
            "1=h:99999",
            "1=h:1,1=h:2",
            "1=h:1,2=h:1",
            " , ",
        ] {
            assert!(
                matches!(
                    parse_initial_stores(list),
                    Err(ConfigError::Invalid {
                        field: "initial_stores",
                        ..
                    })
                ),
                "{list}"
            );
        }
    }
}
