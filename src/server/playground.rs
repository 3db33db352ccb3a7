//! A whole cluster in one process: `stores` servers on 127.0.0.1 (ports picked by the
//! system), their data in a temporary directory or one given, the key space split into
//! `regions` regions at start. What `flotilla playground` and `flotilla bench --embedded`
//! run, and what the end-to-end tests start.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::ServerConfig;
use super::node::{Node, NodeError};
use crate::RegionId;
use crate::proto::commandpb::SplitRequest;
use crate::raft::Role;
use crate::region::RegionError;

/// How a playground is laid out.
#[derive(Debug, Clone)]
pub struct PlaygroundOptions {
    /// Stores (servers), at least 1. Default 3.
    pub stores: usize,
    /// Regions the key space is split into at start, at least 1. Default 16.
    pub regions: usize,
    /// Where the stores keep their data (`store-<id>` each); `None`: a temporary directory
    /// removed when the playground stops. Default `None`.
    pub data_dir: Option<PathBuf>,
    /// The configuration every store starts from (ids, addresses and data directories are
    /// the playground's).
    pub base: ServerConfig,
}

impl Default for PlaygroundOptions {
    fn default() -> Self {
        PlaygroundOptions {
            stores: 3,
            regions: 16,
            data_dir: None,
            base: ServerConfig::default(),
        }
    }
}

/// Why a playground could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaygroundError {
    /// The options are out of range.
    #[error("invalid playground options: {0}")]
    Options(String),
    /// A store's configuration was refused.
    #[error(transparent)]
    Config(#[from] super::ConfigError),
    /// A store would not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Listening or the temporary directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The first region found no leader, or could not be split, in time.
    #[error("the cluster did not come up: {0}")]
    NotReady(String),
}

/// A running playground.
pub struct Playground {
    nodes: Vec<Node>,
    data_dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

/// The key the key space is split at between regions `i` and `i + 1` of `regions`:
/// four hex digits evenly spaced over `0000`..`ffff`, so keys that are hex strings or hashes
/// spread over every region (and words land by their first letters).
pub fn split_key(i: usize, regions: usize) -> Vec<u8> {
    let boundary = (i as u64 + 1) * 0x1_0000 / regions as u64;
    format!("{boundary:04x}").into_bytes()
}

impl Playground {
    /// Starts the stores, waits for the first region's leader and splits the key space
    /// (only when it is a single region: a restarted playground keeps its regions).
    pub fn start(options: PlaygroundOptions) -> Result<Playground, PlaygroundError> {
        if options.stores == 0 || options.regions == 0 || options.regions > 0x1_0000 {
            return Err(PlaygroundError::Options(format!(
                "{} stores and {} regions: at least 1 of each, at most 65,536 regions",
                options.stores, options.regions
            )));
        }
        let (temporary, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("flotilla-playground-")
                    .tempdir()
                    .map_err(|source| PlaygroundError::Io {
                        what: "creating a temporary directory",
                        source,
                    })?;
                let path = tmp.path().to_path_buf();
                (Some(tmp), path)
            }
        };
        let bind = || {
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| PlaygroundError::Io {
                what: "listening on 127.0.0.1",
                source,
            })
        };
        let mut listeners = Vec::new();
        for _ in 0..options.stores {
            listeners.push((bind()?, bind()?));
        }
        let mut initial = Vec::new();
        for (i, (grpc, _)) in listeners.iter().enumerate() {
            let addr = grpc.local_addr().map_err(|source| PlaygroundError::Io {
                what: "reading a listener's address",
                source,
            })?;
            initial.push(format!("{}={addr}", i + 1));
        }
        let mut nodes = Vec::new();
        for (i, (grpc, status)) in listeners.into_iter().enumerate() {
            let store_id = i as u64 + 1;
            let config = ServerConfig {
                store_id,
                data_dir: data_dir.join(format!("store-{store_id}")),
                initial_stores: initial.join(","),
                // The listeners are bound already; these only pass the check.
                listen_addr: "127.0.0.1:0".into(),
                status_addr: "127.0.0.1:0".into(),
                advertise_addr: String::new(),
                ..options.base.clone()
            }
            .check()?;
            nodes.push(Node::start_on(config, grpc, status)?);
        }
        let playground = Playground {
            nodes,
            data_dir,
            _temporary: temporary,
        };
        playground.split_first_region(options.regions, options.stores)?;
        Ok(playground)
    }

    fn split_first_region(&self, regions: usize, stores: usize) -> Result<(), PlaygroundError> {
        let first = RegionId(1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self.nodes.iter().find_map(|node| {
                let status = node.store().region_status(first).wait().ok()?;
                (status.role == Role::Leader).then_some((node, status))
            });
            let Some((node, status)) = leader else {
                if Instant::now() > deadline {
                    return Err(PlaygroundError::NotReady(
                        "no leader for the first region within 30 s".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let single = status.region.start_key.is_empty() && status.region.end_key.is_empty();
            if regions == 1 || !single {
                return Ok(());
            }
            let epoch = status.region.epoch.unwrap_or_default();
            // Region k (2..=regions) gets id k and peer ids (k-1)·stores + 1 ..: the first
            // region's peers are 1..=stores, so no id repeats.
            let splits = (2..=regions as u64)
                .map(|k| SplitRequest {
                    split_key: split_key(k as usize - 2, regions).into(),
                    new_region_id: k,
                    new_peer_ids: (0..stores as u64)
                        .map(|i| (k - 1) * stores as u64 + i + 1)
                        .collect(),
                })
                .collect();
            match node.store().split(first, epoch, splits).wait() {
                Ok(_) => return Ok(()),
                // Leadership moved between the status and the split: ask again.
                Err(RegionError::NotLeader { .. }) if Instant::now() < deadline => continue,
                Err(e) => {
                    return Err(PlaygroundError::NotReady(format!(
                        "splitting the key space: {e}"
                    )));
                }
            }
        }
    }

    /// The servers.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The stores' gRPC endpoints, `host:port`, in store id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.grpc_addr().to_string())
            .collect()
    }

    /// Where the stores keep their data.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Stops every store gracefully (and removes a temporary data directory).
    pub fn shutdown(self) {
        for node in self.nodes {
            node.shutdown();
        }
    }
}
