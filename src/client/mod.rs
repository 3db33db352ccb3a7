//! A Rust client of a flotilla cluster that speaks only the wire protocol (proto/kv.proto,
//! proto/admin.proto), as a program in any other language would.
//!
//! It caches regions by key range with the leader last heard of (`cache.rs`), sends each
//! request to that leader with the region's id and epoch, and acts on the typed region
//! error when the guess was wrong (`retry.rs`): a new leader or new regions go into the
//! cache and the request goes again at once; a busy or leaderless region is retried after
//! a backoff; every operation has a deadline. Operations over several regions (BatchGet,
//! Scan, DeleteRange) are split by region and their results merged.
//!
//! A write is retried only when it certainly did not take effect (a region error saying
//! so, or a connection that was never made); one whose outcome is unknown — its call
//! broke or timed out after it was sent — fails with `ClientError::Indeterminate`, never
//! silently sent twice.

pub mod bench;
mod cache;
mod retry;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
// Tokio's clock (the system's, unless a test pauses it), so retries and deadlines can be
// tested in virtual time.
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::proto::adminpb::{self, admin_client::AdminClient};
use crate::proto::commandpb::{self, op};
use crate::proto::kvpb::{self, kv_client::KvClient};
use crate::proto::metapb::{Peer, Region};
use crate::region::{RegionError, check_key};
use crate::storage::region_meta::contains_key;
use crate::{RegionId, StoreId};

pub use crate::store::ScanOrder;
pub use cache::{CachedRegion, RegionCache};
use retry::{Effect, Next, classify_status, on_region_error};

/// How a failed connection's status begins: the call was never sent.
const NOT_CONNECTED: &str = "could not connect";

/// Retries at once (the cache just learned where to go) before the client waits anyway.
const QUICK_RETRIES: u32 = 8;

/// How a client connects and how long it tries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Some of the cluster's stores, `host:port`; the others are learned from them.
    pub endpoints: Vec<String>,
    /// How long one operation may take, retries included. Default 10 s.
    pub timeout: Duration,
    /// How long one call may take. Default 3 s.
    pub rpc_timeout: Duration,
    /// How long connecting to a store may take. Default 1 s.
    pub connect_timeout: Duration,
    /// The first wait before a retry; it doubles up to `max_backoff`. Default 20 ms.
    pub min_backoff: Duration,
    /// Default 1 s.
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// Defaults for these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A region-level failure retrying cannot fix (an invalid request, an entry too
    /// large, a refused membership change...).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A write whose outcome is unknown: its call broke or timed out after it was sent,
    /// or the store could not tell (`ProposalDropped(Unanswered)`). It may have been
    /// applied; it was not retried, so it was not applied twice.
    #[error("the write's outcome is unknown: {0}")]
    Indeterminate(String),
    /// The deadline passed while retrying.
    #[error("gave up after {elapsed:?}: {last}")]
    DeadlineExceeded {
        /// How long it tried.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// No store could be reached, or none knows where a key or region is.
    #[error("no store could be reached: {0}")]
    Unavailable(String),
    /// A call refused by the server for a reason retrying cannot fix.
    #[error("the server refused the call: {0}")]
    Rpc(tonic::Status),
    /// The server answered something this client cannot read.
    #[error("malformed answer from the server: {0}")]
    Protocol(String),
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expectation held; the new value is in place.
    Swapped,
    /// The expectation failed; the value found (`None`: absent).
    Mismatch(Option<Bytes>),
}

/// Which region a request goes to.
#[derive(Debug, Clone)]
enum Target<'a> {
    /// The one holding this key.
    Key(&'a [u8]),
    /// The one holding the keys just before this one (empty: the last region); `from`
    /// bounds a lookup.
    Before { end: &'a [u8], from: &'a [u8] },
    /// The region with this id.
    Id(u64),
}

/// A cluster client. Cheap to clone; clones share the caches and connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    cache: Mutex<RegionCache>,
    /// Store id → address, learned from each endpoint's StoreStatus.
    stores: Mutex<BTreeMap<StoreId, String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Addresses whose last call got no answer (no reply in time, no connection), and
    /// when: see `peer_in_turn`.
    unanswered: Mutex<HashMap<String, Instant>>,
}

/// How long a store whose call got no answer is tried after the others when a request's
/// leader is unknown (unless it answers a call meanwhile).
const UNANSWERED_FOR: Duration = Duration::from_secs(10);

/// Where one try of a request goes.
struct Try {
    region: CachedRegion,
    peer: Peer,
    address: String,
}

impl Client {
    /// A client of the cluster the endpoints belong to. It asks each endpoint which store
    /// it is; at least one must answer.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Unavailable("no endpoints given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                cache: Mutex::default(),
                stores: Mutex::default(),
                channels: Mutex::default(),
                unanswered: Mutex::default(),
            }),
        };
        client.learn_stores().await?;
        Ok(client)
    }

    /// The stores known, with their addresses.
    pub fn stores(&self) -> Vec<(StoreId, String)> {
        self.inner
            .stores
            .lock()
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    }

    /// Regions the client has cached.
    pub fn cached_regions(&self) -> usize {
        self.inner.cache.lock().len()
    }

    /// Asks every endpoint which store it is. Fails only if none answers.
    async fn learn_stores(&self) -> Result<(), ClientError> {
        let mut last = String::new();
        for endpoint in self.inner.config.endpoints.clone() {
            match self.store_status_at(&endpoint).await {
                Ok(status) => {
                    let mut stores = self.inner.stores.lock();
                    // The address this client reached a store at wins over the one
                    // another store knows it by.
                    stores.insert(StoreId(status.store_id), endpoint);
                    for known in status.known_stores {
                        stores
                            .entry(StoreId(known.store_id))
                            .or_insert(known.address);
                    }
                }
                Err(e) => last = format!("{endpoint}: {e}"),
            }
        }
        if self.inner.stores.lock().is_empty() {
            return Err(ClientError::Unavailable(last));
        }
        Ok(())
    }

    async fn channel(&self, address: &str) -> Result<Channel, tonic::Status> {
        if let Some(channel) = self.inner.channels.lock().get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("{address}: {e}")))?
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            tonic::Status::unavailable(format!("{NOT_CONNECTED} to {address}: {e}"))
        })?;
        self.inner
            .channels
            .lock()
            .insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    fn forget_channel(&self, address: &str) {
        self.inner.channels.lock().remove(address);
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.config.rpc_timeout);
        request
    }

    async fn kv(&self, address: &str) -> Result<KvClient<Channel>, tonic::Status> {
        Ok(KvClient::new(self.channel(address).await?)
            .max_decoding_message_size(crate::server::MAX_REQUEST_BYTES)
            .max_encoding_message_size(crate::server::MAX_REQUEST_BYTES))
    }

    async fn admin(&self, address: &str) -> Result<AdminClient<Channel>, tonic::Status> {
        Ok(AdminClient::new(self.channel(address).await?))
    }

    /// The status of the store at `address`.
    pub async fn store_status_at(
        &self,
        address: &str,
    ) -> Result<adminpb::StoreStatusResponse, ClientError> {
        let mut admin = self.admin(address).await.map_err(ClientError::Rpc)?;
        let answer = self
            .with_deadline(admin.store_status(self.request(adminpb::StoreStatusRequest {})))
            .await?;
        answer.map(|r| r.into_inner()).map_err(ClientError::Rpc)
    }

    /// The regions the store at `address` holds, with its replica's view of each.
    pub async fn regions_at(&self, address: &str) -> Result<Vec<adminpb::RegionInfo>, ClientError> {
        let mut admin = self.admin(address).await.map_err(ClientError::Rpc)?;
        let answer = self
            .with_deadline(admin.list_regions(self.request(adminpb::ListRegionsRequest {})))
            .await?;
        answer
            .map(|r| r.into_inner().regions)
            .map_err(ClientError::Rpc)
    }

    async fn with_deadline<F: std::future::Future>(&self, f: F) -> Result<F::Output, ClientError> {
        tokio::time::timeout(self.inner.config.rpc_timeout, f)
            .await
            .map_err(|_| ClientError::DeadlineExceeded {
                elapsed: self.inner.config.rpc_timeout,
                last: "no answer".into(),
            })
    }

    fn address_of(&self, store: u64) -> Option<String> {
        self.inner.stores.lock().get(&StoreId(store)).cloned()
    }

    /// Finds the region for `target` (cache first, else asking the stores), and the peer
    /// to send to: the leader if known, else the peers in turn.
    async fn target(&self, target: &Target<'_>, attempt: u32) -> Result<Try, ClientError> {
        let mut cached = self.cached(target);
        if cached.is_none() {
            self.look_up(target).await?;
            cached = self.cached(target);
        }
        let Some(region) = cached else {
            return Err(ClientError::Unavailable(format!(
                "no store knows a region for {target:?}"
            )));
        };
        let peers = &region.region.peers;
        if peers.is_empty() {
            return Err(ClientError::Protocol(format!(
                "region {} has no peers",
                region.region.id
            )));
        }
        let peer = match region.leader {
            Some(leader) => leader,
            None => self.peer_in_turn(peers, attempt),
        };
        let address = match self.address_of(peer.store_id) {
            Some(a) => a,
            None => {
                // A store the endpoints did not name: ask them again (it may have just
                // answered), else go through any endpoint, which redirects.
                let _ = self.learn_stores().await;
                match self.address_of(peer.store_id) {
                    Some(a) => a,
                    None => self.any_address(attempt),
                }
            }
        };
        Ok(Try {
            region,
            peer,
            address,
        })
    }

    /// With no leader known, the peers in turn, passing over those on stores whose last
    /// call got no answer lately (unless all are): a stopped or paused store then costs
    /// a call's timeout to the first request that meets it, not to every request after.
    fn peer_in_turn(&self, peers: &[Peer], attempt: u32) -> Peer {
        let answering: Vec<Peer> = peers
            .iter()
            .copied()
            .filter(|p| {
                !self
                    .address_of(p.store_id)
                    .is_some_and(|a| self.unanswered(&a))
            })
            .collect();
        let turn = if answering.is_empty() {
            peers
        } else {
            &answering
        };
        turn[attempt as usize % turn.len()]
    }

    /// Whether the last call to `address` got no answer, within `UNANSWERED_FOR`.
    fn unanswered(&self, address: &str) -> bool {
        self.inner
            .unanswered
            .lock()
            .get(address)
            .is_some_and(|at| at.elapsed() < UNANSWERED_FOR)
    }

    fn any_address(&self, attempt: u32) -> String {
        let stores = self.inner.stores.lock();
        let addresses: Vec<&String> = stores.values().collect();
        addresses[attempt as usize % addresses.len()].clone()
    }

    fn cached(&self, target: &Target<'_>) -> Option<CachedRegion> {
        let cache = self.inner.cache.lock();
        match target {
            Target::Key(key) => cache.locate(key).cloned(),
            Target::Before { end, .. } => cache.locate_before(end).cloned(),
            Target::Id(id) => cache.by_id(*id).cloned(),
        }
    }

    /// The stores' addresses in the order a look-up asks them: those whose last call got
    /// an answer (or none lately) first, as one that gave none may cost a timeout.
    fn lookup_order(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self.inner.stores.lock().values().cloned().collect();
        addresses.sort_by_cached_key(|a| self.unanswered(a));
        addresses
    }

    /// Asks the stores where a target is, caching what they answer.
    async fn look_up(&self, target: &Target<'_>) -> Result<(), ClientError> {
        let addresses = self.lookup_order();
        let mut last = String::from("no store answered");
        let mut answered = 0;
        let asked = addresses.len();
        for address in addresses {
            let found = match target {
                Target::Key(key) => self.route_at(&address, key).await,
                Target::Before { end, from } => self.route_range_at(&address, from, end).await,
                Target::Id(id) => self.show_region_at(&address, *id).await,
            };
            match found {
                Ok(routes) if !routes.is_empty() => {
                    let mut cache = self.inner.cache.lock();
                    for (region, leader) in routes {
                        cache.insert(region, leader);
                    }
                    return Ok(());
                }
                Ok(_) => answered += 1,
                Err(e) => last = format!("{address}: {e}"),
            }
        }
        match target {
            // Every store answered, none holds it: it does not exist.
            Target::Id(id) if answered == asked => Err(RegionError::RegionNotFound {
                region: RegionId(*id),
            }
            .into()),
            _ if answered == asked => Err(ClientError::Unavailable(format!(
                "no store holds a region for {target:?}"
            ))),
            _ => Err(ClientError::Unavailable(last)),
        }
    }

    async fn route_at(
        &self,
        address: &str,
        key: &[u8],
    ) -> Result<Vec<(Region, Option<Peer>)>, tonic::Status> {
        let mut kv = self.kv(address).await?;
        let request = self.request(kvpb::RouteRequest {
            key: Bytes::copy_from_slice(key),
        });
        let route = kv.route(request).await?.into_inner().route;
        Ok(route
            .and_then(|r| Some((r.region?, r.leader)))
            .into_iter()
            .collect())
    }

    async fn route_range_at(
        &self,
        address: &str,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<(Region, Option<Peer>)>, tonic::Status> {
        let mut kv = self.kv(address).await?;
        let request = self.request(kvpb::RouteRangeRequest {
            start_key: Bytes::copy_from_slice(start),
            end_key: Bytes::copy_from_slice(end),
        });
        let routes = kv.route_range(request).await?.into_inner().routes;
        Ok(routes
            .into_iter()
            .filter_map(|r| Some((r.region?, r.leader)))
            .collect())
    }

    async fn show_region_at(
        &self,
        address: &str,
        id: u64,
    ) -> Result<Vec<(Region, Option<Peer>)>, tonic::Status> {
        let mut admin = self.admin(address).await?;
        let request = self.request(adminpb::ShowRegionRequest { region_id: id });
        let info = admin.show_region(request).await?.into_inner().info;
        Ok(info
            .and_then(|i| Some((i.region?, i.leader)))
            .into_iter()
            .collect())
    }

    /// Runs one request against `target` until it succeeds, fails for good, or the
    /// deadline passes. `call` makes one attempt at the region and address it is given;
    /// it may answer `Ok((None, None))` for "this region does not fit the request" (the
    /// caller regroups), which `run` returns as `Ok(None)` without retrying.
    async fn run<T, F, Fut>(
        &self,
        target: Target<'_>,
        effect: Effect,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: std::future::Future<Output = Result<(Option<kvpb::RegionError>, T), tonic::Status>>,
    {
        let started = Instant::now();
        let config = &self.inner.config;
        let mut backoff = config.min_backoff;
        let mut attempt = 0u32;
        // Retries without a wait since the last wait: bounded, so two stores pointing at
        // each other cannot spin.
        let mut quick = 0u32;
        let mut last = String::from("no attempt finished");
        loop {
            let remaining = config.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(ClientError::DeadlineExceeded {
                    elapsed: started.elapsed(),
                    last,
                });
            }
            let found = tokio::time::timeout(remaining, self.target(&target, attempt)).await;
            let next = match found {
                Err(_) => {
                    last = format!("looking up {target:?}: no answer in time");
                    continue;
                }
                Ok(Err(ClientError::Unavailable(e))) => {
                    last = e;
                    Next::After(Duration::ZERO)
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(t)) => {
                    let region_id = t.region.region.id;
                    let address = t.address.clone();
                    let attempt_at = Attempt {
                        address: t.address,
                        context: kvpb::Context {
                            region_id,
                            region_epoch: t.region.region.epoch,
                        },
                        region: t.region.region,
                    };
                    let remaining = config.timeout.saturating_sub(started.elapsed());
                    let answer = match tokio::time::timeout(remaining, call(attempt_at)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(tonic::Status::deadline_exceeded(
                            "the operation's deadline passed during a call",
                        )),
                    };
                    if answer.is_ok() {
                        self.inner.unanswered.lock().remove(&address);
                    }
                    match answer {
                        Ok((None, value)) => return Ok(value),
                        Ok((Some(error), _)) => {
                            let error = RegionError::try_from(error)
                                .map_err(|e| ClientError::Protocol(e.message))?;
                            let next = on_region_error(
                                &mut self.inner.cache.lock(),
                                region_id,
                                &t.peer,
                                &error,
                                effect,
                            );
                            last = error.to_string();
                            match next {
                                Next::Fail => return Err(error.into()),
                                Next::Indeterminate => {
                                    return Err(ClientError::Indeterminate(last));
                                }
                                next => next,
                            }
                        }
                        Err(status) => {
                            let next = classify_status(&status, effect);
                            if next != Next::Fail {
                                // The store may be gone: forget its leadership and its
                                // connection; the next try goes to another peer.
                                self.forget_channel(&address);
                                self.inner.cache.lock().set_leader(region_id, None);
                                self.inner
                                    .unanswered
                                    .lock()
                                    .insert(address.clone(), Instant::now());
                            }
                            last = format!("{address}: {}", status.message());
                            match next {
                                Next::Fail => return Err(ClientError::Rpc(status)),
                                Next::Indeterminate => {
                                    return Err(ClientError::Indeterminate(last));
                                }
                                next => next,
                            }
                        }
                    }
                }
            };
            attempt += 1;
            let wait = match next {
                Next::Now if quick < QUICK_RETRIES => {
                    quick += 1;
                    continue;
                }
                Next::After(at_least) => backoff.max(at_least),
                _ => backoff,
            };
            quick = 0;
            if started.elapsed() + wait >= config.timeout {
                return Err(ClientError::DeadlineExceeded {
                    elapsed: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }

    /// The value of `key`, if present (a linearizable read).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let key = key.into();
        self.run(Target::Key(&key), Effect::Read, |a| {
            let request = self.request(kvpb::GetRequest {
                context: Some(a.context),
                key: key.clone(),
            });
            async move {
                let r = self.kv(&a.address).await?.get(request).await?.into_inner();
                Ok((r.region_error, r.found.then_some(r.value)))
            }
        })
        .await
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (key, value) = (key.into(), value.into());
        self.run(Target::Key(&key), Effect::Write, |a| {
            let request = self.request(kvpb::PutRequest {
                context: Some(a.context),
                key: key.clone(),
                value: value.clone(),
            });
            async move {
                let r = self.kv(&a.address).await?.put(request).await?.into_inner();
                Ok((r.region_error, ()))
            }
        })
        .await
    }

    /// Removes `key` (present or not).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        let key = key.into();
        self.run(Target::Key(&key), Effect::Write, |a| {
            let request = self.request(kvpb::DeleteRequest {
                context: Some(a.context),
                key: key.clone(),
            });
            async move {
                let r = self
                    .kv(&a.address)
                    .await?
                    .delete(request)
                    .await?
                    .into_inner();
                Ok((r.region_error, ()))
            }
        })
        .await
    }

    /// If `key`'s value is `expected` (`None`: absent), sets it to `new_value` (`None`:
    /// deletes it).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
    ) -> Result<CasOutcome, ClientError> {
        let key = key.into();
        self.run(Target::Key(&key), Effect::Write, |a| {
            let request = self.request(kvpb::CompareAndSwapRequest {
                context: Some(a.context),
                key: key.clone(),
                expected: expected.clone(),
                new_value: new_value.clone(),
            });
            async move {
                let r = self
                    .kv(&a.address)
                    .await?
                    .compare_and_swap(request)
                    .await?
                    .into_inner();
                let outcome = if r.swapped {
                    CasOutcome::Swapped
                } else {
                    CasOutcome::Mismatch(r.current)
                };
                Ok((r.region_error, outcome))
            }
        })
        .await
    }

    /// The values of `keys` that are present, in the order asked: each region's keys are
    /// read in one call, the regions in parallel. Keys whose region split under them are
    /// grouped again by the regions the cache then knows.
    pub async fn batch_get(&self, keys: Vec<Bytes>) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let mut found: HashMap<Bytes, Bytes> = HashMap::new();
        let mut pending = keys.clone();
        let started = Instant::now();
        while !pending.is_empty() {
            if started.elapsed() >= self.inner.config.timeout {
                return Err(ClientError::DeadlineExceeded {
                    elapsed: started.elapsed(),
                    last: "regrouping a batch get's keys".into(),
                });
            }
            let mut by_region: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
            for key in pending.drain(..) {
                let region = self.target(&Target::Key(&key), 0).await?.region.region.id;
                by_region.entry(region).or_default().push(key);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, group) in by_region {
                let client = self.clone();
                tasks.spawn(async move { (client.batch_get_in_region(&group).await, group) });
            }
            while let Some(done) = tasks.join_next().await {
                let (answer, group) =
                    done.map_err(|e| ClientError::Protocol(format!("a batch get task: {e}")))?;
                match answer? {
                    Some(pairs) => found.extend(pairs),
                    None => pending.extend(group),
                }
            }
        }
        Ok(keys
            .into_iter()
            .filter_map(|k| found.get(&k).map(|v| (k.clone(), v.clone())))
            .collect())
    }

    /// Keys believed to share one region, read in one call; `None` if the region (as the
    /// cache now knows it) does not hold them all.
    async fn batch_get_in_region(
        &self,
        keys: &[Bytes],
    ) -> Result<Option<Vec<(Bytes, Bytes)>>, ClientError> {
        self.run(Target::Key(&keys[0]), Effect::Read, |a| {
            let fits = keys.iter().all(|k| contains_key(&a.region, k));
            let request = self.request(kvpb::BatchGetRequest {
                context: Some(a.context),
                keys: keys.to_vec(),
            });
            async move {
                if !fits {
                    return Ok((None, None));
                }
                let r = self
                    .kv(&a.address)
                    .await?
                    .batch_get(request)
                    .await?
                    .into_inner();
                let pairs = r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
                Ok((r.region_error, Some(pairs)))
            }
        })
        .await
    }

    /// Up to `limit` pairs of `[start, end)` (`end` empty: to the end of the key space),
    /// ascending, or with `Order::Reverse` descending from the end; region by region.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        order: ScanOrder,
    ) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        scan_in_parts(start, end, limit, order, |from, to, want| async move {
            self.scan_part(&from, &to, want, order).await
        })
        .await
    }

    /// One call of a scan: the pairs of `[start, end)` inside the region the scan is at
    /// (holding `start` forward, the keys before `end` in reverse).
    async fn scan_part(
        &self,
        start: &[u8],
        end: &[u8],
        want: usize,
        order: ScanOrder,
    ) -> Result<ScanPart, ClientError> {
        let target = match order {
            ScanOrder::Forward => Target::Key(start),
            ScanOrder::Reverse => Target::Before { end, from: start },
        };
        self.run(target, Effect::Read, |a| {
            // The server takes a start inside the region; it bounds the end itself.
            let lo = start.max(a.region.start_key.as_slice());
            let request = self.request(kvpb::ScanRequest {
                context: Some(a.context),
                start_key: Bytes::copy_from_slice(lo),
                end_key: Bytes::copy_from_slice(end),
                limit: u32::try_from(want).unwrap_or(u32::MAX),
                reverse: order == ScanOrder::Reverse,
            });
            async move {
                let r = self.kv(&a.address).await?.scan(request).await?.into_inner();
                // A full answer may stop before the range's end; so may one from a server
                // naming no limit (0), read on rather than skip what it left out.
                let more = r.pairs.len() >= r.limit as usize;
                let pairs = r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
                Ok((
                    r.region_error,
                    ScanPart {
                        region: a.region,
                        pairs,
                        more,
                    },
                ))
            }
        })
        .await
    }

    /// Deletes every key of `[start, end)` (`end` empty: to the end of the key space),
    /// region by region: not atomic across regions.
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), ClientError> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        let mut cursor = start.to_vec();
        loop {
            let region_end = self
                .run(Target::Key(&cursor), Effect::Write, |a| {
                    // Within the region: its end bounds the range.
                    let region_end = a.region.end_key.clone();
                    let hi = if end.is_empty()
                        || (!region_end.is_empty() && region_end.as_slice() < end)
                    {
                        region_end.clone()
                    } else {
                        end.to_vec()
                    };
                    let request = self.request(kvpb::DeleteRangeRequest {
                        context: Some(a.context),
                        start_key: Bytes::from(cursor.clone()),
                        end_key: Bytes::from(hi),
                    });
                    async move {
                        let r = self
                            .kv(&a.address)
                            .await?
                            .delete_range(request)
                            .await?
                            .into_inner();
                        Ok((r.region_error, region_end))
                    }
                })
                .await?;
            if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(());
            }
            cursor = region_end;
        }
    }

    /// Operations applied atomically in the one region holding all their keys, one
    /// result each. Keys in more than one region are refused (`KeyNotInRegion`).
    pub async fn batch_write(
        &self,
        ops: Vec<commandpb::Op>,
    ) -> Result<Vec<kvpb::OpResult>, ClientError> {
        let Some(first) = ops.first().and_then(op_key) else {
            return Ok(Vec::new());
        };
        let keys: Vec<Bytes> = ops.iter().filter_map(op_key).collect();
        self.run(Target::Key(&first), Effect::Write, |a| {
            // Sent nowhere if the caller's operations span regions.
            let outside = keys.iter().find_map(|k| check_key(k, &a.region).err());
            let request = self.request(kvpb::BatchWriteRequest {
                context: Some(a.context),
                ops: ops.clone(),
            });
            async move {
                if let Some(error) = outside {
                    return Ok((Some((&error).into()), Vec::new()));
                }
                let r = self
                    .kv(&a.address)
                    .await?
                    .batch_write(request)
                    .await?
                    .into_inner();
                Ok((r.region_error, r.results))
            }
        })
        .await
    }

    /// The region holding `key`, with its leader as last heard.
    pub async fn locate(&self, key: &[u8]) -> Result<CachedRegion, ClientError> {
        Ok(self.target(&Target::Key(key), 0).await?.region)
    }

    /// A region's leader's view of it.
    pub async fn show_region(&self, region: RegionId) -> Result<adminpb::RegionInfo, ClientError> {
        self.run(Target::Id(region.get()), Effect::Read, |a| {
            let request = self.request(adminpb::ShowRegionRequest {
                region_id: a.context.region_id,
            });
            async move {
                let r = self
                    .admin(&a.address)
                    .await?
                    .show_region(request)
                    .await?
                    .into_inner();
                // Only the leader's view will do: a follower's sends the client on.
                let error = r.region_error.or_else(|| {
                    let info = r.info.as_ref()?;
                    (info.role != adminpb::Role::Leader as i32).then(|| {
                        (&RegionError::NotLeader {
                            region,
                            leader: info.leader,
                        })
                            .into()
                    })
                });
                Ok((error, r.info.unwrap_or_default()))
            }
        })
        .await
    }

    /// Splits a region at `keys` (in order); the new regions' and peers' ids are the
    /// next ones after the largest any store reports (until placement allocates them).
    /// Returns the regions of the old range, the split one first.
    pub async fn split(
        &self,
        region: RegionId,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Region>, ClientError> {
        let (mut next_region, mut next_peer) = self.next_ids().await?;
        let info = self.show_region(region).await?;
        let peers = info.region.map_or(0, |r| r.peers.len() as u64);
        let splits: Vec<adminpb::SplitKey> = keys
            .into_iter()
            .map(|key| {
                let split = adminpb::SplitKey {
                    split_key: key,
                    new_region_id: next_region,
                    new_peer_ids: (next_peer..next_peer + peers).collect(),
                };
                next_region += 1;
                next_peer += peers;
                split
            })
            .collect();
        let regions = self
            .run(Target::Id(region.get()), Effect::Write, |a| {
                let request = self.request(adminpb::SplitRequest {
                    context: Some(a.context),
                    splits: splits.clone(),
                });
                async move {
                    let r = self
                        .admin(&a.address)
                        .await?
                        .split(request)
                        .await?
                        .into_inner();
                    Ok((r.region_error, r.regions))
                }
            })
            .await?;
        let mut cache = self.inner.cache.lock();
        for r in &regions {
            cache.insert(r.clone(), None);
        }
        Ok(regions)
    }

    /// Ids for new regions and peers: past the largest any store reports, and peer ids
    /// also past a floor from the clock (microseconds since 1970), so the id of a peer
    /// removed since — which no store reports any more — is never handed out again.
    /// Until placement allocates ids, two admins in the same microsecond could collide.
    async fn next_ids(&self) -> Result<(u64, u64), ClientError> {
        let floor = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let (mut region, mut peer) = (0, floor);
        for (_, address) in self.stores() {
            for info in self.regions_at(&address).await? {
                if let Some(r) = info.region {
                    region = region.max(r.id);
                    peer = r.peers.iter().map(|p| p.id).fold(peer, u64::max);
                }
            }
        }
        Ok((region + 1, peer + 1))
    }

    /// A peer id no store has seen, for a membership change (until placement allocates
    /// them).
    pub async fn next_peer_id(&self) -> Result<u64, ClientError> {
        Ok(self.next_ids().await?.1)
    }

    /// Starts moving a region's leadership to one of its peers.
    pub async fn transfer_leader(&self, region: RegionId, to_peer: u64) -> Result<(), ClientError> {
        self.run(Target::Id(region.get()), Effect::Write, |a| {
            let request = self.request(adminpb::TransferLeaderRequest {
                context: Some(a.context),
                to_peer_id: to_peer,
            });
            async move {
                let r = self
                    .admin(&a.address)
                    .await?
                    .transfer_leader(request)
                    .await?
                    .into_inner();
                Ok((r.region_error, ()))
            }
        })
        .await
    }

    /// Changes a region's membership (several changes at once go through joint
    /// consensus). Returns the region after the change.
    pub async fn change_peers(
        &self,
        region: RegionId,
        changes: Vec<adminpb::PeerChange>,
    ) -> Result<Region, ClientError> {
        let region = self
            .run(Target::Id(region.get()), Effect::Write, |a| {
                let request = self.request(adminpb::ChangePeersRequest {
                    context: Some(a.context),
                    changes: changes.clone(),
                });
                async move {
                    let r = self
                        .admin(&a.address)
                        .await?
                        .change_peers(request)
                        .await?
                        .into_inner();
                    Ok((r.region_error, r.region.unwrap_or_default()))
                }
            })
            .await?;
        self.inner.cache.lock().insert(region.clone(), None);
        Ok(region)
    }
}

/// One try of a request: where it goes and what it names.
struct Attempt {
    /// The store's address.
    address: String,
    /// The region and epoch the request names.
    context: kvpb::Context,
    /// The region as cached.
    region: Region,
}

/// A scan's loop over its parts: up to `limit` pairs of `[start, end)` in `order`, each
/// part read by `fetch(from, to, want)` — at most `want` pairs of `[from, to)` within one
/// region (the region holding `from` forward, the keys just before `to` in reverse) —
/// asking each time for no more than what is still missing.
async fn scan_in_parts<F, Fut>(
    start: &[u8],
    end: &[u8],
    limit: usize,
    order: ScanOrder,
    mut fetch: F,
) -> Result<Vec<(Bytes, Bytes)>, ClientError>
where
    F: FnMut(Vec<u8>, Vec<u8>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<ScanPart, ClientError>>,
{
    let mut pairs = Vec::new();
    if !end.is_empty() && start >= end {
        return Ok(pairs);
    }
    // Forward, the cursor is the next key to read; in reverse, the end of what is left.
    let mut cursor = match order {
        ScanOrder::Forward => start.to_vec(),
        ScanOrder::Reverse => end.to_vec(),
    };
    while pairs.len() < limit {
        let want = limit - pairs.len();
        let part = match order {
            ScanOrder::Forward => fetch(cursor.clone(), end.to_vec(), want).await?,
            ScanOrder::Reverse => fetch(start.to_vec(), cursor.clone(), want).await?,
        };
        let last = part.pairs.last().map(|(k, _)| k.to_vec());
        pairs.extend(part.pairs);
        cursor = match (part.more, last) {
            // Cut short by the limit: on from the last key.
            (true, Some(mut last)) => {
                if order == ScanOrder::Forward {
                    last.push(0);
                }
                last
            }
            // The region's part is done: on to the next region, if the range goes on.
            _ => match order {
                ScanOrder::Forward => {
                    let region_end = part.region.end_key;
                    if region_end.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                        break;
                    }
                    region_end
                }
                ScanOrder::Reverse => {
                    let region_start = part.region.start_key;
                    if region_start.as_slice() <= start {
                        break;
                    }
                    region_start
                }
            },
        };
    }
    // A server answering more than it was asked for is cut back to the limit.
    pairs.truncate(limit);
    Ok(pairs)
}

/// One call's part of a scan.
struct ScanPart {
    /// The region it read.
    region: Region,
    pairs: Vec<(Bytes, Bytes)>,
    /// Cut short by the limit: the region may hold more of the range.
    more: bool,
}

/// The key an operation touches first.
fn op_key(op: &commandpb::Op) -> Option<Bytes> {
    Some(match op.op.as_ref()? {
        op::Op::Put(p) => p.key.clone(),
        op::Op::Delete(d) => d.key.clone(),
        op::Op::DeleteRange(d) => d.start_key.clone(),
        op::Op::CompareAndSwap(c) => c.key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::RegionEpoch;
    use crate::region::BusyReason;

    /// Peer `10 + store` on `store`.
    fn peer(store: u64) -> Peer {
        Peer {
            id: 10 + store,
            store_id: store,
            role: 0,
        }
    }

    /// A client that already knows region 1 (the whole key space, with peers on
    /// `stores`) and the addresses of stores 1–3, so trying a request needs no network.
    fn client_knowing(stores: &[u64], leader: Option<u64>, min: u64, max: u64) -> Client {
        let mut config = ClientConfig::new(Vec::<String>::new());
        config.min_backoff = Duration::from_millis(min);
        config.max_backoff = Duration::from_millis(max);
        config.timeout = Duration::from_secs(1);
        let region = Region {
            id: 1,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: stores.iter().copied().map(peer).collect(),
        };
        let mut cache = RegionCache::default();
        cache.insert(region, leader.map(peer));
        let addresses = (1..=3).map(|s| (StoreId(s), format!("store-{s}")));
        Client {
            inner: Arc::new(Inner {
                config,
                cache: Mutex::new(cache),
                stores: Mutex::new(addresses.collect()),
                channels: Mutex::default(),
                unanswered: Mutex::default(),
            }),
        }
    }

    fn region_error(error: RegionError) -> Option<kvpb::RegionError> {
        Some((&error).into())
    }

    fn not_leader(leader: Option<u64>) -> Option<kvpb::RegionError> {
        region_error(RegionError::NotLeader {
            region: RegionId(1),
            leader: leader.map(peer),
        })
    }

    type Answer = Result<(Option<kvpb::RegionError>, u32), tonic::Status>;

    /// Runs a read whose `n`th try (from 0) gets `answer(n)`; returns what `run`
    /// returned and, per try, the milliseconds since the first try and the address.
    async fn run_tries(
        client: &Client,
        answer: impl Fn(usize) -> Answer,
    ) -> (Result<u32, ClientError>, Vec<(u128, String)>) {
        let first = Instant::now();
        let mut tries = Vec::new();
        let result = client
            .run(Target::Key(b"k"), Effect::Read, |a: Attempt| {
                tries.push((first.elapsed().as_millis(), a.address));
                std::future::ready(answer(tries.len() - 1))
            })
            .await;
        (result, tries)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_at_once_are_bounded_then_the_client_waits() {
        let client = client_knowing(&[1, 2, 3], Some(1), 300, 1000);
        // Each answer names the other peer as leader: a hint worth following at once.
        let (result, tries) = run_tries(&client, |n| match n {
            9 => Ok((None, 7)),
            n => Ok((not_leader(Some(2 + n as u64 % 2)), 0)),
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        let times: Vec<u128> = tries.iter().map(|t| t.0).collect();
        assert_eq!(times, [0, 0, 0, 0, 0, 0, 0, 0, 0, 300]);
        let addresses: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(addresses[..3], ["store-1", "store-2", "store-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_leader_the_peers_are_tried_in_turn_with_a_doubling_backoff() {
        let client = client_knowing(&[1, 2, 3], None, 20, 80);
        let (result, tries) = run_tries(&client, |n| match n {
            5 => Ok((None, 1)),
            _ => Ok((not_leader(None), 0)),
        })
        .await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(
            tries,
            [
                (0, "store-1".to_string()),
                (20, "store-2".to_string()),
                (60, "store-3".to_string()),
                (140, "store-1".to_string()),
                (220, "store-2".to_string()),
                (300, "store-3".to_string()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_server_is_waited_for_as_long_as_it_asks() {
        let client = client_knowing(&[1, 2, 3], Some(2), 20, 1000);
        let (result, tries) = run_tries(&client, |n| match n {
            0 => Ok((
                region_error(RegionError::ServerIsBusy {
                    reason: BusyReason::MailboxFull,
                    backoff: Duration::from_millis(150),
                }),
                0,
            )),
            _ => Ok((None, 2)),
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        let times: Vec<u128> = tries.iter().map(|t| t.0).collect();
        assert_eq!(times, [0, 150]);
        assert_eq!(tries[1].1, "store-2", "a busy leader is still the leader");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_call_forgets_the_connection_and_the_leader() {
        let client = client_knowing(&[1, 2, 3], Some(1), 20, 1000);
        let lazy = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        client
            .inner
            .channels
            .lock()
            .insert("store-1".to_string(), lazy);
        let (result, tries) = run_tries(&client, |n| match n {
            0 => Err(tonic::Status::unavailable("connection reset")),
            _ => Ok((None, 3)),
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        let addresses: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(addresses, ["store-1", "store-3"]);
        assert!(client.inner.channels.lock().is_empty());
        assert_eq!(client.cached(&Target::Id(1)).unwrap().leader, None);
    }

    /// A store that gave no answer is passed over by later requests whose leader is
    /// unknown, until it answers a call or `UNANSWERED_FOR` has passed.
    #[tokio::test(start_paused = true)]
    async fn a_store_that_gave_no_answer_is_tried_after_the_others_for_a_while() {
        let client = client_knowing(&[1, 2, 3], None, 20, 1000);
        let (result, tries) = run_tries(&client, |n| match n {
            0 => Err(tonic::Status::deadline_exceeded("no answer in time")),
            _ => Ok((None, 5)),
        })
        .await;
        assert_eq!(result.unwrap(), 5);
        let addresses: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            addresses,
            ["store-1", "store-3"],
            "the turn among the others"
        );
        // The next request's turn is among stores 2 and 3 too.
        let (_, tries) = run_tries(&client, |_| Ok((None, 6))).await;
        assert_eq!(tries[0].1, "store-2");
        // store-2 gives no answer now: the next try goes to store-3, the one left; then
        // store-3 gives none either, all three are marked, and the turn runs over all.
        let (_, tries) = run_tries(&client, |n| match n {
            0 => Err(tonic::Status::unavailable("connection refused")),
            _ => Ok((None, 7)),
        })
        .await;
        let addresses: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(addresses, ["store-2", "store-3"]);
        let (_, tries) = run_tries(&client, |n| match n {
            0 => Err(tonic::Status::unavailable("connection refused")),
            _ => Ok((None, 8)),
        })
        .await;
        let addresses: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            addresses,
            ["store-3", "store-2"],
            "all marked: the turn is kept"
        );
        // An answer clears a mark: store-2 answered last, so it is trusted again.
        let (_, tries) = run_tries(&client, |_| Ok((None, 9))).await;
        assert_eq!(tries[0].1, "store-2");
        // Look-ups ask the stores with a mark last.
        assert_eq!(client.lookup_order(), ["store-2", "store-1", "store-3"]);
        // An old mark counts for nothing.
        tokio::time::advance(UNANSWERED_FOR).await;
        assert_eq!(client.lookup_order(), ["store-1", "store-2", "store-3"]);
        let (_, tries) = run_tries(&client, |_| Ok((None, 10))).await;
        assert_eq!(tries[0].1, "store-1");
    }

    /// A mark lasts `UNANSWERED_FOR` exactly.
    #[tokio::test(start_paused = true)]
    async fn a_mark_ends_when_its_time_is_up() {
        let client = client_knowing(&[1, 2, 3], None, 20, 1000);
        let marked = Instant::now();
        let _ = run_tries(&client, |n| match n {
            0 => Err(tonic::Status::deadline_exceeded("no answer in time")),
            _ => Ok((None, 5)),
        })
        .await;
        let almost = UNANSWERED_FOR - Duration::from_millis(1) - marked.elapsed();
        tokio::time::advance(almost).await;
        assert_eq!(client.lookup_order(), ["store-2", "store-3", "store-1"]);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(client.lookup_order(), ["store-1", "store-2", "store-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_at_the_deadline_with_the_last_failure() {
        let client = client_knowing(&[1, 2, 3], None, 100, 400);
        let (result, tries) = run_tries(&client, |_| Ok((not_leader(None), 0))).await;
        // Waits of 100, 200, 400, 400 ms; the next would end past the 1 s deadline.
        let times: Vec<u128> = tries.iter().map(|t| t.0).collect();
        assert_eq!(times, [0, 100, 300, 700]);
        match result {
            Err(ClientError::DeadlineExceeded { elapsed, last }) => {
                assert_eq!(elapsed, Duration::from_millis(700));
                assert!(last.contains("leader"), "{last}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_try_goes_to_the_leader_or_else_to_each_peer_in_turn() {
        let led = client_knowing(&[1, 2, 3], Some(2), 20, 1000);
        let leaderless = client_knowing(&[1, 2, 3], None, 20, 1000);
        for attempt in 0..4 {
            let to_leader = led.target(&Target::Key(b"k"), attempt).await.unwrap();
            assert_eq!(
                (to_leader.address.as_str(), to_leader.peer),
                ("store-2", peer(2))
            );
            let in_turn = leaderless
                .target(&Target::Key(b"k"), attempt)
                .await
                .unwrap();
            let store = 1 + attempt as u64 % 3;
            assert_eq!(in_turn.address, format!("store-{store}"));
            assert_eq!(in_turn.peer, peer(store));
        }
    }

    #[tokio::test]
    async fn a_peer_on_a_store_of_unknown_address_is_reached_through_each_known_store() {
        let client = client_knowing(&[9], None, 20, 1000);
        let mut addresses = Vec::new();
        for attempt in 0..4 {
            let t = client.target(&Target::Key(b"k"), attempt).await.unwrap();
            assert_eq!(t.peer, peer(9));
            addresses.push(t.address);
        }
        assert_eq!(addresses, ["store-1", "store-2", "store-3", "store-1"]);
    }

    /// Keys b d f h | n p r in two regions split at "m", served at most 3 per call (or,
    /// `honest` false, every key of the region whatever was asked); records each call's
    /// (from, to, want).
    struct FakeScans {
        honest: bool,
        calls: Vec<(String, String, usize)>,
    }

    impl FakeScans {
        const KEYS: [&'static str; 7] = ["b", "d", "f", "h", "n", "p", "r"];
        const CAP: usize = 3;

        fn fetch(&mut self, from: &[u8], to: &[u8], want: usize, order: ScanOrder) -> ScanPart {
            self.calls.push((text(from), text(to), want));
            let split = b"m".as_slice();
            // Forward: the region holding `from`; reverse: the one holding keys before `to`.
            let first = match order {
                ScanOrder::Forward => from < split,
                ScanOrder::Reverse => !to.is_empty() && to <= split,
            };
            let (lo, hi): (&[u8], &[u8]) = if first { (b"", split) } else { (split, b"") };
            let inside = |k: &[u8]| {
                k >= from.max(lo) && (to.is_empty() || k < to) && (hi.is_empty() || k < hi)
            };
            let mut keys: Vec<&str> = Self::KEYS
                .into_iter()
                .filter(|k| inside(k.as_bytes()))
                .collect();
            if order == ScanOrder::Reverse {
                keys.reverse();
            }
            let served = if self.honest {
                want.min(Self::CAP)
            } else {
                keys.len()
            };
            keys.truncate(served);
            ScanPart {
                region: Region {
                    start_key: lo.to_vec(),
                    end_key: hi.to_vec(),
                    ..Region::default()
                },
                more: keys.len() >= served,
                pairs: keys
                    .into_iter()
                    .map(|k| (Bytes::from(k), Bytes::from_static(b"v")))
                    .collect(),
            }
        }

        async fn scan(
            &mut self,
            start: &str,
            end: &str,
            limit: usize,
            order: ScanOrder,
        ) -> Vec<String> {
            let scans = std::cell::RefCell::new(self);
            let pairs = scan_in_parts(start.as_bytes(), end.as_bytes(), limit, order, |f, t, w| {
                let part = scans.borrow_mut().fetch(&f, &t, w, order);
                std::future::ready(Ok(part))
            })
            .await
            .unwrap();
            pairs.into_iter().map(|(k, _)| text(&k)).collect()
        }
    }

    fn text(key: &[u8]) -> String {
        String::from_utf8_lossy(key).into_owned()
    }

    fn calls(expected: &[(&str, &str, usize)]) -> Vec<(String, String, usize)> {
        expected
            .iter()
            .map(|(f, t, w)| (f.to_string(), t.to_string(), *w))
            .collect()
    }

    #[tokio::test]
    async fn a_scan_asks_each_part_for_what_is_still_missing_and_stops_at_the_limit() {
        let mut fake = FakeScans {
            honest: true,
            calls: Vec::new(),
        };
        // Forward: 3 (the cap), then the 1 left in the first region, then 1 from the next.
        let got = fake.scan("", "", 5, ScanOrder::Forward).await;
        assert_eq!(got, ["b", "d", "f", "h", "n"]);
        assert_eq!(
            fake.calls,
            calls(&[("", "", 5), ("f\0", "", 2), ("m", "", 1)])
        );
        // Reverse from the end, down to "c": the second region's keys, then the first's.
        fake.calls.clear();
        let got = fake.scan("c", "", 4, ScanOrder::Reverse).await;
        assert_eq!(got, ["r", "p", "n", "h"]);
        assert_eq!(
            fake.calls,
            calls(&[("c", "", 4), ("c", "n", 1), ("c", "m", 1)])
        );
        // The range ends before the limit: the end of the range, not of the key space.
        fake.calls.clear();
        let got = fake.scan("c", "o", 10, ScanOrder::Forward).await;
        assert_eq!(got, ["d", "f", "h", "n"]);
        assert_eq!(
            fake.calls,
            calls(&[("c", "o", 10), ("h\0", "o", 7), ("m", "o", 7)])
        );
        // Nothing asked, nothing fetched.
        fake.calls.clear();
        assert!(fake.scan("", "", 0, ScanOrder::Forward).await.is_empty());
        assert!(fake.scan("p", "c", 5, ScanOrder::Forward).await.is_empty());
        assert!(fake.calls.is_empty());
    }

    #[tokio::test]
    async fn a_server_answering_more_than_asked_is_cut_back_to_the_limit() {
        let mut fake = FakeScans {
            honest: false,
            calls: Vec::new(),
        };
        let got = fake.scan("", "", 2, ScanOrder::Forward).await;
        assert_eq!(got, ["b", "d"]);
        assert_eq!(fake.calls, calls(&[("", "", 2)]));
    }
}
