//! One running `flotilla server`: a store on disk engines, its gRPC server (the KV and
//! admin services, store-to-store transport, reflection) and its status HTTP server, on an
//! async runtime of its own; started from a checked configuration and stopped gracefully.
//!
//! The data directory holds `identity.toml` (cluster and store id, written before
//! anything else), `raft/` (the raft log), `kv/` (the KV engine), `snap/` (snapshot
//! files) and `incoming/` (snapshots being received). A directory of another cluster or
//! store is refused, and so is one holding files but no identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

use super::config::{CheckedConfig, InitialStores};
use super::status::{self, NodeInfo};
use super::{AdminService, KvService, NOT_EXECUTED};
use crate::proto::metapb::{Peer, PeerRole, Region};
use crate::storage::fjall_kv::FjallKvEngine;
use crate::storage::kv::KvError;
use crate::storage::raft_log::{LogError, RaftLogEngine};
use crate::storage::region_meta::all_region_states;
use crate::store::{BootstrapError, Engines, RunMode, Store, StoreError, bootstrap_region};
use crate::transport::{GrpcTransport, StaticResolver, TransportService};

/// The file naming the cluster and store a data directory belongs to.
pub const IDENTITY_FILE: &str = "identity.toml";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or directory of the data directory could not be read or written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data directory belongs to another cluster or store, or is not a store's.
    #[error("data directory {dir}: {reason}")]
    Identity {
        /// The data directory.
        dir: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// An address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The raft log would not open.
    #[error("the raft log: {0}")]
    Log(#[from] LogError),
    /// The KV engine would not open.
    #[error("the KV engine: {0}")]
    Kv(#[from] KvError),
    /// The first region could not be written.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The store would not open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> NodeError {
    let path = path.to_path_buf();
    move |source| NodeError::Io { path, what, source }
}

/// What `identity.toml` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    cluster_id: u64,
    store_id: u64,
}

/// Checks that `dir` belongs to `want`, or makes it so if it is new (missing or empty):
/// the identity is written durably before any engine creates a file there.
fn claim_data_dir(dir: &Path, want: Identity) -> Result<(), NodeError> {
    let refuse = |reason: String| NodeError::Identity {
        dir: dir.to_path_buf(),
        reason,
    };
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: Identity = toml::from_str(&text)
                .map_err(|e| refuse(format!("{IDENTITY_FILE} is damaged: {e}")))?;
            if found != want {
                return Err(refuse(format!(
                    "it belongs to store {} of cluster {}, not store {} of cluster {}",
                    found.store_id, found.cluster_id, want.store_id, want.cluster_id
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_error(dir, "creating the data directory"))?;
            // A crash while the identity was being written leaves only its temporary file.
            let tmp = path.with_extension("tmp");
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&tmp, "removing")(e)),
            }
            let mut entries = std::fs::read_dir(dir).map_err(io_error(dir, "listing"))?;
            if entries.next().is_some() {
                return Err(refuse(format!(
                    "it holds files but no {IDENTITY_FILE}: not a flotilla store's directory"
                )));
            }
            let text = toml::to_string(&want).unwrap_or_default();
            write_durably(&path, text.as_bytes())
        }
        Err(e) => Err(io_error(&path, "reading")(e)),
    }
}

/// Writes a file whole or not at all: a temporary file, synced, renamed over, the
/// directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp, "creating"))?;
    file.write_all(bytes).map_err(io_error(&tmp, "writing"))?;
    file.sync_all().map_err(io_error(&tmp, "syncing"))?;
    std::fs::rename(&tmp, path).map_err(io_error(path, "renaming into place"))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "syncing"))
}

/// The cluster's first region: the whole key space, one voter on each initial store,
/// its peer ids the store ids. Every initial store derives the same one from the same list.
pub fn first_region(initial_stores: &InitialStores) -> Region {
    Region {
        id: 1,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: None,
        peers: initial_stores
            .keys()
            .map(|store| Peer {
                id: store.get(),
                store_id: store.get(),
                role: PeerRole::Voter as i32,
            })
            .collect(),
    }
}

/// A running server. Dropping it shuts it down as `shutdown` does.
pub struct Node {
    store: Arc<Store>,
    runtime: Option<Runtime>,
    grpc_addr: SocketAddr,
    status_addr: SocketAddr,
    closing: watch::Sender<bool>,
    /// Set when shutting down: the KV and admin services refuse new calls.
    refusing: Arc<AtomicBool>,
    /// KV and admin calls running: a stop waits for them (a call let in just before the
    /// stop may not have reached the store yet).
    running: Arc<AtomicUsize>,
    servers: Vec<JoinHandle<()>>,
    grace: Duration,
    /// How long a stop waits for its leaderships to move.
    hand_off_within: Duration,
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    std::net::TcpListener::bind(addr).map_err(|source| NodeError::Listen { addr, source })
}

impl Node {
    /// Starts a node listening where its configuration says.
    pub fn start(config: CheckedConfig) -> Result<Node, NodeError> {
        let grpc = bind(config.listen_addr())?;
        let status = bind(config.status_addr())?;
        Node::start_on(config, grpc, status)
    }

    /// Starts a node on listeners already bound (a playground binds them first, to learn
    /// the ports it lists as initial stores).
    pub fn start_on(
        config: CheckedConfig,
        grpc: std::net::TcpListener,
        status: std::net::TcpListener,
    ) -> Result<Node, NodeError> {
        let c = config.config();
        let store_id = config.store_id();
        let dir = c.data_dir.clone();
        claim_data_dir(
            &dir,
            Identity {
                cluster_id: c.cluster_id,
                store_id: store_id.get(),
            },
        )?;
        // Installed before the store records anything.
        let _ = status::prometheus();
        let engines = Engines::new(
            Arc::new(RaftLogEngine::open(&config.raft_log_config())?),
            Arc::new(FjallKvEngine::open(&config.kv_config())?),
            dir.join("snap"),
        );
        // A store holding no region at all was never bootstrapped (a removed replica
        // leaves a tombstone): the first region is written the same way on every initial
        // store. Writing it is one durable batch, so a crash leaves it whole or absent.
        if all_region_states(engines.kv.as_ref())?.is_empty() {
            bootstrap_region(&engines, &first_region(config.initial_stores()))?;
            tracing::info!(store = %store_id, "bootstrapped the first region");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(c.pools.grpc_threads)
            .thread_name(format!("grpc-{store_id}"))
            .enable_all()
            .build()
            .map_err(io_error(&dir, "starting the async runtime"))?;
        let advertise = if c.advertise_addr.is_empty() {
            grpc.local_addr()
                .map_err(io_error(&dir, "reading the listener's address"))?
                .to_string()
        } else {
            c.advertise_addr.clone()
        };
        let mut addresses = config.initial_stores().clone();
        addresses.insert(store_id, advertise.clone());
        let resolver = Arc::new(StaticResolver::new(addresses));
        let transport = GrpcTransport::new(
            config.transport_config(),
            resolver.clone(),
            runtime.handle().clone(),
        );
        let store_config = config.store_config();
        // A transfer takes a round trip once its target has the log; the core gives up one
        // that stalls (its target gone too) after an election timeout.
        let hand_off_within = store_config.raft.tick_interval
            * u32::try_from(store_config.raft.election_ticks * 2).unwrap_or(u32::MAX);
        let store = Arc::new(Store::open(
            store_config,
            engines,
            Arc::new(transport),
            RunMode::Threads,
        )?);
        let (closing, closing_rx) = watch::channel(false);
        let incoming = dir.join("incoming");
        let transport_service = TransportService::new(
            config.transport_config(),
            store.receiver(),
            incoming.clone(),
        )
        .map_err(io_error(
            &incoming,
            "preparing the snapshot staging directory",
        ))?
        .close_streams_on(closing_rx.clone());
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::CLIENT_API_DESCRIPTOR)
            .build_v1()
            .map_err(|e| NodeError::Io {
                path: dir.clone(),
                what: "building the reflection service",
                source: std::io::Error::other(e),
            })?;
        let grpc_addr = grpc
            .local_addr()
            .map_err(io_error(&dir, "reading the listener's address"))?;
        let status_addr = status
            .local_addr()
            .map_err(io_error(&dir, "reading the listener's address"))?;
        let _entered = runtime.enter();
        let grpc = listener(grpc, grpc_addr)?;
        let status = listener(status, status_addr)?;
        let refusing = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let gate = {
            let refusing = refusing.clone();
            move |request: tonic::Request<()>| {
                // SeqCst with the stop's store and its read of `running`: a call counted
                // after the stop read none running sees the refusal.
                if refusing.load(Ordering::SeqCst) {
                    Err(tonic::Status::unavailable(format!(
                        "{NOT_EXECUTED}: the server is stopping"
                    )))
                } else {
                    Ok(request)
                }
            }
        };
        let kv = KvService::new(store.clone(), c.limits.max_scan_pairs).into_server();
        let admin = AdminService::new(store.clone())
            .with_directory(resolver.clone())
            .into_server();
        let grpc_server = tonic::transport::Server::builder()
            .add_service(transport_service.into_server())
            .add_service(Counted::new(
                InterceptedService::new(kv, gate.clone()),
                &running,
            ))
            .add_service(Counted::new(InterceptedService::new(admin, gate), &running))
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc).map(no_delay),
                closed(closing_rx.clone()),
            );
        let status_router = status::router(
            store.clone(),
            NodeInfo {
                cluster_id: c.cluster_id,
                advertise_addr: advertise,
            },
            refusing.clone(),
        );
        let status_server =
            axum::serve(status, status_router).with_graceful_shutdown(closed(closing_rx));
        let servers = vec![
            runtime.spawn(async move {
                if let Err(e) = grpc_server.await {
                    tracing::error!(error = %e, "the gRPC server failed");
                }
            }),
            runtime.spawn(async move {
                if let Err(e) = status_server.await {
                    tracing::error!(error = %e, "the status server failed");
                }
            }),
            // Histograms are summarized over a window the recorder rolls on upkeep.
            runtime.spawn(async {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    if let Some(handle) = status::prometheus() {
                        handle.run_upkeep();
                    }
                }
            }),
        ];
        drop(_entered);
        tracing::info!(store = %store_id, grpc = %grpc_addr, status = %status_addr, "serving");
        Ok(Node {
            store,
            runtime: Some(runtime),
            grpc_addr,
            status_addr,
            closing,
            refusing,
            running,
            servers,
            grace: config.shutdown_grace(),
            hand_off_within,
        })
    }

    /// The store this node runs.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the status HTTP server listens on.
    pub fn status_addr(&self) -> SocketAddr {
        self.status_addr
    }

    /// Stops gracefully. New KV and admin calls are refused at once as UNAVAILABLE
    /// "not executed" (a client sends them elsewhere, writes included), while the calls
    /// already let in and the writes already taken get up to the configured grace to
    /// finish and commit — the store-to-store traffic still flows. The store hands its
    /// leaderships to the others (waiting up to the grace, at most two election timeouts).
    /// Then the servers close, and the store stops: requests still waiting are answered
    /// with a typed error, the WAL writer writes what it was given, the KV engine is made
    /// durable. Callable from inside an async runtime too.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking on the node's runtime from inside another one would panic: stop
            // from a thread of its own (this thread waits, as a drop must).
            std::thread::scope(|s| {
                s.spawn(|| self.stop_outside_any_runtime());
            });
        } else {
            self.stop_outside_any_runtime();
        }
    }

    fn stop_outside_any_runtime(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // 1. New client calls are refused, untouched, so clients send them elsewhere;
        //    the store-to-store traffic goes on, so the writes taken can still commit.
        self.refusing.store(true, Ordering::SeqCst);
        let drained = drain(self.grace, || {
            in_flight(
                self.running.load(Ordering::SeqCst),
                self.store.unanswered_proposal_bytes(),
            )
        });
        match drained {
            Drained::Idle => {}
            Drained::GraceOver => tracing::warn!(
                grace = ?self.grace,
                "stopping with calls or writes still in flight: the grace ran out; \
                 the store answers them with an error"
            ),
        }
        // 2. Leaderships go to the other stores while the transport still runs, so their
        //    regions need not wait an election timeout for a leader.
        let handed = self
            .store
            .hand_off_leaderships(self.grace.min(self.hand_off_within));
        if handed.still_leading.is_empty() {
            tracing::info!(
                regions = handed.led,
                moved_on = handed.moved_on,
                "leaderships handed off"
            );
        } else {
            tracing::warn!(
                led = handed.led,
                still_leading = handed.still_leading.len(),
                "stopping while still leading: those regions elect after a timeout"
            );
        }
        // 3. The servers stop: peers' streams end, connections close.
        let _ = self.closing.send(true);
        let servers = std::mem::take(&mut self.servers);
        runtime.block_on(async move {
            // The upkeep task never ends; the two servers end once their calls have.
            let mut servers = servers.into_iter();
            let (grpc, status) = (servers.next(), servers.next());
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                for server in [grpc, status].into_iter().flatten() {
                    let _ = server.await;
                }
            })
            .await;
        });
        // 4. The store: what still waits is answered, the WAL writer finishes, the KV
        //    engine is made durable. With the runtime still up: the snapshot worker may
        //    be sending on it.
        self.store.shutdown();
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// How a stop's wait for the work in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Nothing was in flight any more.
    Idle,
    /// The grace ran out first.
    GraceOver,
}

/// Waits while `busy` says work is in flight, for at most `grace`, looking every 10 ms.
fn drain(grace: Duration, busy: impl Fn() -> bool) -> Drained {
    let deadline = Instant::now() + grace;
    loop {
        if !busy() {
            return Drained::Idle;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Drained::GraceOver;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// Work a stop waits for: a KV or admin call running (a call let in may not have reached
/// the store yet, and a read holds no proposal), or a write taken and not yet answered
/// (its caller may have given up on the call, the write still commits).
fn in_flight(running_calls: usize, unanswered_proposal_bytes: u64) -> bool {
    running_calls > 0 || unanswered_proposal_bytes > 0
}

/// A service whose running calls are counted (from before its interceptor runs until
/// its answer is ready), so a stop can wait for them.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    running: Arc<AtomicUsize>,
}

impl<S> Counted<S> {
    fn new(inner: S, running: &Arc<AtomicUsize>) -> Self {
        Counted {
            inner,
            running: running.clone(),
        }
    }
}

/// One running call; counted out when dropped, however the call ends.
struct RunningCall(Arc<AtomicUsize>);

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Counted<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        self.running.fetch_add(1, Ordering::SeqCst);
        let call = RunningCall(self.running.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answered = answer.await;
            drop(call);
            answered
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn listener(
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, NodeError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|source| NodeError::Listen { addr, source })
}

/// Small replies leave at once: without it, Nagle's algorithm holds a reply behind the
/// peer's delayed acknowledgement (40 ms on Linux). The builder's own `tcp_nodelay` covers
/// only listeners it binds itself.
fn no_delay(
    accepted: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = accepted?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resolves once the node is closing.
async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|&closing| closing).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service answering each call when the test says so.
    #[derive(Clone, Default)]
    struct Held(Arc<parking_lot::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>>);

    impl tonic::codegen::Service<tonic::codegen::http::Request<()>> for Held {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = tonic::codegen::BoxFuture<(), std::convert::Infallible>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: tonic::codegen::http::Request<()>) -> Self::Future {
            let (answer, answered) = tokio::sync::oneshot::channel();
            self.0.lock().push(answer);
            Box::pin(async move {
                let _ = answered.await;
                Ok(())
            })
        }
    }

    /// A stop waits for the calls a counted service runs: counted from the call until its
    /// answer is ready, however it ends.
    #[test]
    fn a_counted_service_counts_its_calls_until_answered() {
        use tonic::codegen::Service as _;
        let running = Arc::new(AtomicUsize::new(0));
        let held = Held::default();
        let mut service = Counted::new(held.clone(), &running);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let request = || tonic::codegen::http::Request::new(());
        let first = service.call(request());
        let second = service.call(request());
        assert_eq!(running.load(Ordering::SeqCst), 2);
        let answers: Vec<_> = std::mem::take(&mut *held.0.lock());
        for answer in answers {
            let _ = answer.send(());
        }
        rt.block_on(first).unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 1);
        drop(second);
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "a dropped call counts out"
        );
        let mut ready = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(service.poll_ready(&mut ready).is_ready());
    }

    /// A stop waits for a call or a write in flight, each on its own, and for nothing
    /// else.
    #[test]
    fn a_stop_waits_for_any_call_or_write_in_flight() {
        assert!(!in_flight(0, 0));
        assert!(
            in_flight(1, 0),
            "a call running, a read say, holds no proposal"
        );
        assert!(
            in_flight(0, 1),
            "a write whose caller gave up still commits"
        );
        assert!(in_flight(3, 128));
    }

    /// The stop's wait ends as soon as nothing is in flight, and when the grace runs out
    /// if something still is — never before.
    #[test]
    fn a_stop_waits_until_idle_or_the_grace_is_over() {
        assert_eq!(drain(Duration::from_secs(60), || false), Drained::Idle);

        let busy = Arc::new(AtomicBool::new(true));
        let polls = AtomicUsize::new(0);
        let clearer = {
            let busy = busy.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                busy.store(false, Ordering::SeqCst);
            })
        };
        let drained = drain(Duration::from_secs(60), || {
            polls.fetch_add(1, Ordering::SeqCst);
            busy.load(Ordering::SeqCst)
        });
        clearer.join().unwrap();
        assert_eq!(drained, Drained::Idle, "waited for the work to finish");
        assert!(
            polls.load(Ordering::SeqCst) >= 2,
            "looked again after waiting"
        );

        let grace = Duration::from_millis(50);
        let started = Instant::now();
        assert_eq!(drain(grace, || true), Drained::GraceOver);
        assert!(started.elapsed() >= grace, "the whole grace was given");
    }

    #[test]
    fn accepted_connections_send_without_delay() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(!accepted.nodelay().unwrap(), "the default is Nagle's");
            assert!(no_delay(Ok(accepted)).unwrap().nodelay().unwrap());
        });
    }

    /// An identity that cannot be read, or a leftover temporary file that cannot be
    /// removed (here each is a directory), is an I/O failure naming what was being done:
    /// never taken for a directory without an identity.
    #[test]
    fn a_data_dir_whose_identity_cannot_be_read_or_cleared_is_an_io_failure() {
        let want = Identity {
            cluster_id: 1,
            store_id: 1,
        };
        let unreadable = tempfile::tempdir().unwrap();
        std::fs::create_dir(unreadable.path().join(IDENTITY_FILE)).unwrap();
        match claim_data_dir(unreadable.path(), want) {
            Err(NodeError::Io {
                what: "reading", ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let stuck = tempfile::tempdir().unwrap();
        let leftover = stuck.path().join(IDENTITY_FILE).with_extension("tmp");
        std::fs::create_dir(&leftover).unwrap();
        match claim_data_dir(stuck.path(), want) {
            Err(NodeError::Io {
                what: "removing",
                path,
                ..
            }) if path == leftover => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_region_is_the_whole_key_space_with_a_voter_per_store() {
        let stores: InitialStores = [
            (crate::StoreId(3), "c:1".to_string()),
            (crate::StoreId(1), "a:1".to_string()),
        ]
        .into_iter()
        .collect();
        let region = first_region(&stores);
        assert_eq!(
            (region.id, region.start_key.len(), region.end_key.len()),
            (1, 0, 0)
        );
        let peers: Vec<(u64, u64)> = region.peers.iter().map(|p| (p.id, p.store_id)).collect();
        assert_eq!(peers, vec![(1, 1), (3, 3)]);
        assert!(
            region
                .peers
                .iter()
                .all(|p| p.role == PeerRole::Voter as i32)
        );
    }
}
