//! A whole cluster in one process: `stores` servers on 127.0.0.1 (ports picked by the
//! system), their data in a temporary directory or one given, the key space split into
//! `regions` regions at start. What `flotilla playground` and `flotilla bench --embedded`
//! run, and what the end-to-end tests start.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::{CheckedConfig, ServerConfig};
use super::node::{Node, NodeError};
use crate::proto::commandpb::SplitRequest;
use crate::raft::Role;
use crate::region::RegionError;
use crate::store::RegionStatus;
use crate::{RegionId, StoreId};

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

impl PlaygroundOptions {
    /// Refuses a layout no playground can have.
    fn check(&self) -> Result<(), PlaygroundError> {
        if self.stores == 0 || self.regions == 0 || self.regions > MAX_REGIONS {
            return Err(PlaygroundError::Options(format!(
                "{} stores and {} regions: at least 1 of each, at most 65,536 regions",
                self.stores, self.regions
            )));
        }
        Ok(())
    }
}

/// One region per four-hex-digit split key.
const MAX_REGIONS: usize = 0x1_0000;

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
    /// One per store, in id order; `None` while stopped.
    nodes: Vec<Option<Node>>,
    /// Each store's configuration, its addresses the ones first bound, for restarts.
    configs: Vec<CheckedConfig>,
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
        options.check()?;
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
        let mut configs = Vec::new();
        for (i, (grpc, status)) in listeners.into_iter().enumerate() {
            let store_id = i as u64 + 1;
            let address = |l: &std::net::TcpListener| {
                l.local_addr()
                    .map(|a| a.to_string())
                    .map_err(|source| PlaygroundError::Io {
                        what: "reading a listener's address",
                        source,
                    })
            };
            let config = ServerConfig {
                store_id,
                data_dir: data_dir.join(format!("store-{store_id}")),
                initial_stores: initial.join(","),
                listen_addr: address(&grpc)?,
                status_addr: address(&status)?,
                advertise_addr: String::new(),
                ..options.base.clone()
            }
            .check()?;
            configs.push(config.clone());
            nodes.push(Some(Node::start_on(config, grpc, status)?));
        }
        let playground = Playground {
            nodes,
            configs,
            data_dir,
            _temporary: temporary,
        };
        playground.split_first_region(options.regions, options.stores)?;
        Ok(playground)
    }

    /// Waits for the first region's leader and, unless the key space is already split (a
    /// restarted playground) or one region is asked for, splits it through that leader.
    fn split_first_region(&self, regions: usize, stores: usize) -> Result<(), PlaygroundError> {
        let first = RegionId(1);
        let leader = || {
            self.nodes().find_map(|node| {
                let status = node.store().region_status(first).wait().ok()?;
                (status.role == Role::Leader).then_some((node, status))
            })
        };
        let split = |(node, status): (&Node, RegionStatus)| {
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
            node.store().split(first, epoch, splits).wait().map(drop)
        };
        split_once_led(READY_WITHIN, leader, split)
    }

    /// The running servers, in store id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// The server of `store`, unless it is stopped.
    pub fn node(&self, store: StoreId) -> Option<&Node> {
        self.nodes.get(Self::index(store)?)?.as_ref()
    }

    fn index(store: StoreId) -> Option<usize> {
        usize::try_from(store.get()).ok()?.checked_sub(1)
    }

    /// Every store's gRPC endpoint, `host:port`, in store id order (stopped ones too:
    /// they come back at the same address).
    pub fn endpoints(&self) -> Vec<String> {
        self.configs
            .iter()
            .map(|c| c.listen_addr().to_string())
            .collect()
    }

    /// Stops one store gracefully; its data stays for `restart_store`.
    pub fn stop_store(&mut self, store: StoreId) {
        if let Some(node) = Self::index(store).and_then(|i| self.nodes.get_mut(i)?.take()) {
            node.shutdown();
        }
    }

    /// Starts a stopped store again, at its addresses, on its data.
    pub fn restart_store(&mut self, store: StoreId) -> Result<(), PlaygroundError> {
        let Some(i) = Self::index(store).filter(|&i| i < self.nodes.len()) else {
            return Err(PlaygroundError::Options(format!("no store {store}")));
        };
        if self.nodes[i].is_none() {
            self.nodes[i] = Some(Node::start(self.configs[i].clone())?);
        }
        Ok(())
    }

    /// Where the stores keep their data.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Stops every store gracefully (and removes a temporary data directory).
    pub fn shutdown(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown();
        }
    }
}

/// How long a starting playground waits for its first region's leader and split.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Looks for a leader every 50 ms until one splits the key space; a split refused because
/// leadership moved in between is asked again at the next look. Gives up after `within`.
fn split_once_led<L>(
    within: Duration,
    mut leader: impl FnMut() -> Option<L>,
    mut split: impl FnMut(L) -> Result<(), RegionError>,
) -> Result<(), PlaygroundError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = leader() {
            match split(found) {
                Ok(()) => return Ok(()),
                Err(RegionError::NotLeader { .. }) => {}
                Err(e) => {
                    return Err(PlaygroundError::NotReady(format!(
                        "splitting the key space: {e}"
                    )));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(PlaygroundError::NotReady(format!(
                "no leader split the first region within {} ms",
                within.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_needs_a_store_and_a_region_and_at_most_one_region_per_split_key() {
        let layout = |stores, regions| {
            PlaygroundOptions {
                stores,
                regions,
                ..PlaygroundOptions::default()
            }
            .check()
        };
        for (stores, regions) in [(0, 1), (1, 0), (3, MAX_REGIONS + 1)] {
            assert!(
                matches!(layout(stores, regions), Err(PlaygroundError::Options(_))),
                "{stores} stores, {regions} regions"
            );
        }
        for (stores, regions) in [(1, 1), (3, 16), (3, MAX_REGIONS)] {
            assert!(layout(stores, regions).is_ok(), "{stores}, {regions}");
        }
    }

    fn not_leader() -> RegionError {
        RegionError::NotLeader {
            region: RegionId(1),
            leader: None,
        }
    }

    #[test]
    fn a_first_region_without_a_leader_is_not_ready_at_the_deadline() {
        let started = Instant::now();
        let mut looks = 0;
        let result = split_once_led(
            Duration::from_millis(150),
            || {
                looks += 1;
                None::<()>
            },
            |()| panic!("split without a leader"),
        );
        assert!(
            matches!(result, Err(PlaygroundError::NotReady(_))),
            "{result:?}"
        );
        assert!(started.elapsed() > Duration::from_millis(150));
        assert!((2..=5).contains(&looks), "looked {looks} times in 150 ms");
    }

    #[test]
    fn a_split_refused_because_leadership_moved_looks_for_the_leader_again() {
        let mut answers = vec![Ok(()), Err(not_leader()), Err(not_leader())];
        let mut looks = 0;
        let result = split_once_led(
            READY_WITHIN,
            || {
                looks += 1;
                Some(looks)
            },
            |look| {
                assert_eq!(look, 4 - answers.len(), "each split asks the latest look");
                answers.pop().unwrap()
            },
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!((looks, answers.len()), (3, 0));
    }

    #[test]
    fn a_split_refused_until_the_deadline_or_for_another_reason_is_not_ready() {
        let started = Instant::now();
        let mut refused = 0;
        let result = split_once_led(
            Duration::from_millis(100),
            || Some(()),
            |()| {
                refused += 1;
                Err(not_leader())
            },
        );
        assert!(
            matches!(result, Err(PlaygroundError::NotReady(_))),
            "{result:?}"
        );
        assert!(started.elapsed() > Duration::from_millis(100));
        assert!(
            (2..=4).contains(&refused),
            "asked {refused} times in 100 ms"
        );

        let mut splits = 0;
        let result = split_once_led(
            READY_WITHIN,
            || Some(()),
            |()| {
                splits += 1;
                Err(RegionError::RegionNotFound {
                    region: RegionId(1),
                })
            },
        );
        assert!(
            matches!(result, Err(PlaygroundError::NotReady(_))),
            "{result:?}"
        );
        assert_eq!(splits, 1, "only a moved leadership is asked again");
    }
}
