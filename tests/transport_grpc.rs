//! Store-to-store gRPC over 127.0.0.1: batches in order, refusals (another cluster, an
//! unreachable or unknown store, a full queue), reconnection, snapshots in chunks and
//! hostile snapshot streams; then whole stores replicating over it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla::proto::commandpb::{Op, Put, WriteCommand, op};
use flotilla::proto::metapb::Peer;
use flotilla::proto::transportpb::store_transport_client::StoreTransportClient;
use flotilla::proto::transportpb::{Heartbeat, RaftMessage, RaftMessageBatch, SnapshotChunk};
use flotilla::raft::Role;
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::storage::snapshot::SnapshotBounds;
use flotilla::store::{
    BatchReceiver, Engines, ReadRequest, ReadResponse, RunMode, Store, StoreConfig, Transport,
    TransportError, bootstrap_region,
};
use flotilla::testkit::cluster::first_region;
use flotilla::testkit::cluster::wait_until;
use flotilla::transport::{
    CLUSTER_ID_HEADER, FROM_STORE_HEADER, GrpcTransport, GrpcTransportConfig, StaticResolver,
    TransportService,
};
use flotilla::{RegionId, StoreId};
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio_stream::wrappers::TcpListenerStream;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A received snapshot: its message, its directory's name, its files by name.
type ReceivedSnapshot = (RaftMessage, String, BTreeMap<String, Vec<u8>>);

/// Records what arrives; refuses snapshots when told to.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<RaftMessageBatch>>,
    snapshots: Mutex<Vec<ReceivedSnapshot>>,
    refuse_snapshots: bool,
    /// What every snapshot may stage (`None`: no bound).
    bounds: Option<SnapshotBounds>,
}

impl BatchReceiver for Recorder {
    fn receive(&self, batch: RaftMessageBatch) {
        self.batches.lock().push(batch);
    }

    fn receive_snapshot(&self, message: RaftMessage, files: &Path) -> std::io::Result<()> {
        if self.refuse_snapshots {
            return Err(std::io::Error::other("refused by the test"));
        }
        let mut read = BTreeMap::new();
        for entry in std::fs::read_dir(files)? {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            read.insert(name, std::fs::read(&path)?);
        }
        let dir = files.file_name().unwrap().to_string_lossy().into_owned();
        self.snapshots.lock().push((message, dir, read));
        Ok(())
    }

    fn snapshot_bounds(&self, _: &RaftMessage) -> Option<SnapshotBounds> {
        self.bounds
    }
}

impl Recorder {
    fn batch_count(&self) -> usize {
        self.batches.lock().len()
    }
}

fn config(cluster: u64, store: u64) -> GrpcTransportConfig {
    let mut c = GrpcTransportConfig::new(cluster, StoreId(store));
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c
}

/// A store's gRPC server on its own runtime: dropping it is the store's process dying
/// (every connection closes at once).
struct Server {
    addr: SocketAddr,
    runtime: Option<Runtime>,
    _staging: tempfile::TempDir,
}

impl Server {
    fn start(config: GrpcTransportConfig, receiver: Arc<dyn BatchReceiver>) -> Server {
        Server::start_at("127.0.0.1:0".parse().unwrap(), config, receiver)
    }

    fn start_at(
        addr: SocketAddr,
        config: GrpcTransportConfig,
        receiver: Arc<dyn BatchReceiver>,
    ) -> Server {
        let runtime = runtime();
        let staging = tempfile::tempdir().unwrap();
        let service =
            TransportService::new(config, receiver, staging.path().join("incoming")).unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Server {
            addr,
            runtime: Some(runtime),
            _staging: staging,
        }
    }

    fn staging(&self) -> std::path::PathBuf {
        self._staging.path().join("incoming")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A batch from `from` to `to` marked with `mark` (as its one folded heartbeat's region).
fn batch(from: u64, to: u64, mark: u64) -> RaftMessageBatch {
    RaftMessageBatch {
        from_store: from,
        to_store: to,
        heartbeats: vec![Heartbeat {
            region_id: mark,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn marks(r: &Recorder) -> Vec<u64> {
    r.batches
        .lock()
        .iter()
        .map(|b| b.heartbeats[0].region_id)
        .collect()
}

fn transport_to(
    rt: &Runtime,
    config: GrpcTransportConfig,
    stores: &[(u64, SocketAddr)],
) -> GrpcTransport {
    let resolver = StaticResolver::new(stores.iter().map(|(s, a)| (StoreId(*s), a.to_string())));
    GrpcTransport::new(config, Arc::new(resolver), rt.handle().clone())
}

#[test]
fn batches_reach_the_addressed_store_in_order() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let transport = transport_to(&rt, config(7, 1), &[(2, server.addr)]);
    assert!(!transport.is_connected(StoreId(2)), "nothing sent yet");
    for i in 0..500 {
        transport.send(batch(1, 2, i)).expect("queued");
    }
    wait_until("500 batches", || recorder.batch_count() == 500);
    assert_eq!(marks(&recorder), (0..500).collect::<Vec<_>>());
    assert!(transport.is_connected(StoreId(2)));
}

#[test]
fn a_store_of_another_cluster_is_refused_and_gets_nothing() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let resolver = CountingResolver::to(server.addr);
    let transport = GrpcTransport::new(config(8, 1), resolver.clone(), rt.handle().clone());
    // The refusal takes the link down: sends are then refused at once.
    wait_until("the refusal", || {
        matches!(
            transport.send(batch(1, 2, 0)),
            Err(TransportError::Unreachable(StoreId(2)))
        )
    });
    let first = resolver.lookups.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(recorder.batch_count(), 0);
    // A refusal backs off as a failed connection does (20 ms doubling to 200 ms: about
    // 8 attempts in 1.2 s), not as a broken stream, which retries at the shortest wait.
    let attempts = resolver.lookups.load(std::sync::atomic::Ordering::SeqCst) - first;
    assert!(attempts <= 20, "{attempts} attempts in 1.2 s");
}

#[test]
fn a_batch_naming_another_sender_than_its_stream_is_dropped() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let transport = transport_to(&rt, config(7, 1), &[(2, server.addr)]);
    transport.send(batch(3, 2, 1)).unwrap();
    transport.send(batch(1, 2, 2)).unwrap();
    wait_until("the honest batch", || recorder.batch_count() == 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(marks(&recorder), vec![2]);
}

#[test]
fn an_unreachable_store_is_reported_and_nothing_queues_without_bound() {
    let rt = runtime();
    let dead = dead_address();
    let mut c = config(7, 1);
    c.queue_batches = 8;
    let transport = transport_to(&rt, c, &[(2, dead)]);
    let mut queued = 0;
    for i in 0..1000 {
        match transport.send(batch(1, 2, i)) {
            Ok(()) => queued += 1,
            Err(TransportError::Full(StoreId(2)) | TransportError::Unreachable(StoreId(2))) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(queued <= 8, "{queued} batches queued past a bound of 8");
    wait_until("the store reported unreachable", || {
        matches!(
            transport.send(batch(1, 2, 0)),
            Err(TransportError::Unreachable(StoreId(2)))
        )
    });
    // A store with no known address is unreachable too.
    wait_until("store 9 reported unreachable", || {
        matches!(
            transport.send(batch(1, 9, 0)),
            Err(TransportError::Unreachable(StoreId(9)))
        )
    });
}

/// A store that dies and comes back (here at a new address, which the resolver learns)
/// gets batches again: the link reconnects by itself.
#[test]
fn the_link_comes_back_with_the_store() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let resolver = Arc::new(StaticResolver::new([(StoreId(2), server.addr.to_string())]));
    let transport = GrpcTransport::new(config(7, 1), resolver.clone(), rt.handle().clone());
    transport.send(batch(1, 2, 1)).unwrap();
    wait_until("the first batch", || recorder.batch_count() == 1);
    drop(server);
    wait_until("the store reported unreachable", || {
        matches!(
            transport.send(batch(1, 2, 0)),
            Err(TransportError::Unreachable(_))
        )
    });
    assert!(!transport.is_connected(StoreId(2)));
    let again = Arc::new(Recorder::default());
    let moved = Server::start(config(7, 2), again.clone());
    resolver.set(StoreId(2), moved.addr.to_string());
    wait_until("batches flowing again", || {
        let _ = transport.send(batch(1, 2, 2));
        again.batch_count() > 0
    });
    assert!(marks(&again).iter().all(|m| *m == 2));
    assert!(transport.is_connected(StoreId(2)));
}

/// A link to a store that is gone tries again only when there is something to send: a
/// store that left the cluster, or that nothing talks to any more, costs no connection
/// attempts (nor "store link down" lines) while nothing is sent to it; a batch sent later
/// makes the link try at once.
#[test]
fn a_link_with_nothing_to_send_does_not_reconnect() {
    let rt = runtime();
    let dead = dead_address();
    let resolver = CountingResolver::to(dead);
    let transport = GrpcTransport::new(config(7, 1), resolver.clone(), rt.handle().clone());
    let attempts = || resolver.lookups.load(std::sync::atomic::Ordering::SeqCst);
    wait_until("the store reported unreachable", || {
        matches!(
            transport.send(batch(1, 2, 0)),
            Err(TransportError::Unreachable(StoreId(2)))
        )
    });
    let before = attempts();
    // Backing off 20 ms doubling to 200 ms, a link that kept trying would make about 6
    // attempts in this second.
    std::thread::sleep(Duration::from_secs(1));
    let idle = attempts() - before;
    assert!(idle <= 1, "{idle} connection attempts with nothing to send");
    wait_until("an attempt for the next batch", || {
        let _ = transport.send(batch(1, 2, 1));
        attempts() > before + idle
    });
}

fn snapshot_message(to_store: u64) -> RaftMessage {
    RaftMessage {
        region_id: 5,
        from_peer: Some(Peer {
            id: 11,
            store_id: 1,
            role: 0,
        }),
        to_peer: Some(Peer {
            id: 12,
            store_id: to_store,
            role: 0,
        }),
        ..Default::default()
    }
}

/// A snapshot directory with a file of 2.5 chunks, an empty one and a small one.
fn snapshot_dir(root: &Path, chunk: usize) -> (std::path::PathBuf, BTreeMap<String, Vec<u8>>) {
    let dir = root.join("snap-5-42");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = BTreeMap::new();
    files.insert(
        "chunk-000000".to_string(),
        (0..chunk * 5 / 2)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    files.insert("empty".to_string(), Vec::new());
    files.insert("meta".to_string(), b"summary".to_vec());
    for (name, data) in &files {
        std::fs::write(dir.join(name), data).unwrap();
    }
    (dir, files)
}

#[test]
fn a_snapshot_arrives_whole_in_chunks_and_its_staging_goes() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let mut c = config(7, 1);
    c.snapshot_chunk_bytes = 1024;
    c.snapshot_rate_bytes = Some(1 << 20);
    let transport = transport_to(&rt, c, &[(2, server.addr)]);
    let root = tempfile::tempdir().unwrap();
    let (dir, files) = snapshot_dir(root.path(), 1024);
    // Called from a thread outside the runtime, as the store's snapshot worker does.
    for _ in 0..2 {
        transport
            .send_snapshot(snapshot_message(2), &dir)
            .expect("sent");
    }
    // From inside a runtime it would block a thread the runtime needs: refused.
    assert!(matches!(
        rt.block_on(async { transport.send_snapshot(snapshot_message(2), &dir) }),
        Err(TransportError::SnapshotRefused { .. })
    ));
    let got = recorder.snapshots.lock().clone();
    assert_eq!(got.len(), 2);
    for (message, name, received) in got {
        assert_eq!(message, snapshot_message(2));
        assert_eq!(name, "snap-5-42");
        assert_eq!(received, files);
    }
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
}

#[test]
fn a_refused_snapshot_is_reported_not_retried_forever() {
    let rt = runtime();
    let recorder = Arc::new(Recorder {
        refuse_snapshots: true,
        ..Default::default()
    });
    let server = Server::start(config(7, 2), recorder);
    let transport = transport_to(&rt, config(7, 1), &[(2, server.addr)]);
    let root = tempfile::tempdir().unwrap();
    let (dir, _) = snapshot_dir(root.path(), 100);
    let err = transport
        .send_snapshot(snapshot_message(2), &dir)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::SnapshotRefused {
                store: StoreId(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
    // No store there at all: unreachable, after the configured retries.
    let dead = dead_address();
    let transport = transport_to(&rt, config(7, 1), &[(2, dead)]);
    assert_eq!(
        transport.send_snapshot(snapshot_message(2), &dir),
        Err(TransportError::Unreachable(StoreId(2)))
    );
}

/// A resolver that counts the lookups: one per connection attempt.
struct CountingResolver {
    address: String,
    lookups: std::sync::atomic::AtomicUsize,
}

impl CountingResolver {
    /// Every store at `address`.
    fn to(address: impl ToString) -> Arc<CountingResolver> {
        Arc::new(CountingResolver {
            address: address.to_string(),
            lookups: Default::default(),
        })
    }
}

/// An address nobody listens on.
fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl flotilla::transport::Resolve for CountingResolver {
    fn resolve(&self, _: StoreId) -> Option<String> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(self.address.clone())
    }

    fn known_stores(&self) -> Vec<(StoreId, String)> {
        Vec::new()
    }
}

/// A snapshot send to an unreachable store makes exactly one attempt and the configured
/// retries, then reports the store unreachable.
#[test]
fn a_snapshot_send_gives_up_after_its_retries() {
    let rt = runtime();
    let dead = dead_address();
    let resolver = CountingResolver::to(dead);
    let mut c = config(7, 1);
    c.snapshot_retries = 2;
    let transport = GrpcTransport::new(c, resolver.clone(), rt.handle().clone());
    let root = tempfile::tempdir().unwrap();
    let (dir, _) = snapshot_dir(root.path(), 100);
    assert_eq!(
        transport.send_snapshot(snapshot_message(2), &dir),
        Err(TransportError::Unreachable(StoreId(2)))
    );
    assert_eq!(
        resolver.lookups.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // A refusal that another attempt cannot change is not retried.
    let refusing = Server::start(
        config(7, 2),
        Arc::new(Recorder {
            refuse_snapshots: true,
            ..Default::default()
        }),
    );
    let resolver = CountingResolver::to(refusing.addr);
    let mut c = config(7, 1);
    c.snapshot_retries = 2;
    let transport = GrpcTransport::new(c, resolver.clone(), rt.handle().clone());
    assert!(matches!(
        transport.send_snapshot(snapshot_message(2), &dir),
        Err(TransportError::SnapshotRefused { .. })
    ));
    assert_eq!(
        resolver.lookups.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// Sends `chunks` as one snapshot call identified as `(cluster, store 1)`.
fn raw_snapshot_call(
    rt: &Runtime,
    addr: SocketAddr,
    cluster: u64,
    chunks: Vec<SnapshotChunk>,
) -> Result<(), tonic::Status> {
    rt.block_on(snapshot_call(addr, cluster, tokio_stream::iter(chunks)))
}

/// A snapshot call from store 1 of `cluster` whose chunks are `chunks`.
async fn snapshot_call(
    addr: SocketAddr,
    cluster: u64,
    chunks: impl tokio_stream::Stream<Item = SnapshotChunk> + Send + 'static,
) -> Result<(), tonic::Status> {
    let mut client = StoreTransportClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(chunks);
    request
        .metadata_mut()
        .insert(CLUSTER_ID_HEADER, cluster.to_string().parse().unwrap());
    request
        .metadata_mut()
        .insert(FROM_STORE_HEADER, "1".parse().unwrap());
    client.snapshot(request).await.map(|_| ())
}

/// A snapshot call to cluster 7 that sends what the returned sender is given, when it is.
fn held_snapshot_call(
    rt: &Runtime,
    addr: SocketAddr,
) -> (
    tokio::sync::mpsc::Sender<SnapshotChunk>,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
    let call = rt.spawn(snapshot_call(
        addr,
        7,
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    (tx, call)
}

/// The chunk that ends a snapshot stream.
fn done() -> SnapshotChunk {
    SnapshotChunk {
        done: true,
        ..Default::default()
    }
}

fn chunk(first: bool, file: &str, data: &[u8]) -> SnapshotChunk {
    SnapshotChunk {
        message: first.then(|| snapshot_message(2)),
        dir_name: if first {
            "snap-5-42".into()
        } else {
            String::new()
        },
        file_name: file.into(),
        data: Bytes::copy_from_slice(data),
        done: false,
    }
}

#[test]
fn hostile_snapshot_streams_are_refused_and_leave_nothing() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let server = Server::start(config(7, 2), recorder.clone());
    let cases: Vec<(&str, u64, Vec<SnapshotChunk>, tonic::Code)> = vec![
        (
            "another cluster",
            8,
            vec![chunk(true, "meta", b"x")],
            tonic::Code::FailedPrecondition,
        ),
        ("no chunk", 7, vec![], tonic::Code::InvalidArgument),
        (
            "cut short (no last chunk)",
            7,
            vec![chunk(true, "meta", b"x")],
            tonic::Code::InvalidArgument,
        ),
        (
            "no message",
            7,
            vec![SnapshotChunk {
                message: None,
                ..chunk(true, "meta", b"x")
            }],
            tonic::Code::InvalidArgument,
        ),
        (
            "a directory escaping staging",
            7,
            vec![SnapshotChunk {
                dir_name: "../evil".into(),
                ..chunk(true, "meta", b"x")
            }],
            tonic::Code::InvalidArgument,
        ),
        (
            "a file escaping its directory",
            7,
            vec![chunk(true, "meta", b"x"), chunk(false, "../../evil", b"x")],
            tonic::Code::InvalidArgument,
        ),
        (
            "a file sent twice",
            7,
            vec![
                chunk(true, "a", b"1"),
                chunk(false, "b", b"2"),
                chunk(false, "a", b"3"),
            ],
            tonic::Code::InvalidArgument,
        ),
    ];
    for (what, cluster, chunks, code) in cases {
        let status = raw_snapshot_call(&rt, server.addr, cluster, chunks).unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    // A snapshot addressed to a peer on another store is refused by the store.
    let misaddressed = SnapshotChunk {
        message: Some(snapshot_message(3)),
        ..chunk(true, "meta", b"x")
    };
    let recorder_store = Arc::new(RefusingForeign);
    let strict = Server::start(config(7, 2), recorder_store);
    assert_eq!(
        raw_snapshot_call(&rt, strict.addr, 7, vec![misaddressed, done()])
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
    assert!(recorder.snapshots.lock().is_empty());
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
    // The server still serves.
    raw_snapshot_call(
        &rt,
        server.addr,
        7,
        vec![chunk(true, "meta", b"ok"), done()],
    )
    .unwrap();
    assert_eq!(recorder.snapshots.lock().len(), 1);
}

/// Refuses snapshots for another store, as a store does.
struct RefusingForeign;

impl BatchReceiver for RefusingForeign {
    fn receive(&self, _: RaftMessageBatch) {}

    fn receive_snapshot(&self, message: RaftMessage, _: &Path) -> std::io::Result<()> {
        if message.to_peer.is_none_or(|p| p.store_id != 2) {
            return Err(std::io::Error::other(
                "a snapshot for a peer on another store",
            ));
        }
        Ok(())
    }
}

#[test]
fn snapshots_beyond_the_receive_limit_are_refused_while_one_is_taken() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let mut c = config(7, 2);
    c.max_snapshot_receives = 1;
    let server = Server::start(c, recorder.clone());
    let addr = server.addr;
    // One snapshot call stays open: its first chunk sent, the rest held back.
    let (hold_tx, open) = held_snapshot_call(&rt, addr);
    rt.block_on(hold_tx.send(chunk(true, "meta", b"held")))
        .unwrap();
    // The held call has its slot once its staging directory exists.
    wait_until("the held call staged", || {
        std::fs::read_dir(server.staging()).unwrap().count() == 1
    });
    let busy = raw_snapshot_call(&rt, addr, 7, vec![chunk(true, "meta", b"x")]).unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted);
    // A store's own send meets the same refusal and retries until the slot is free.
    let mut sender_config = config(7, 1);
    sender_config.snapshot_retries = 20;
    let transport = transport_to(&rt, sender_config, &[(2, addr)]);
    let root = tempfile::tempdir().unwrap();
    let (dir, files) = snapshot_dir(root.path(), 100);
    let retried = std::thread::spawn(move || transport.send_snapshot(snapshot_message(2), &dir));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        recorder.snapshots.lock().len(),
        0,
        "refused while the slot is held"
    );
    rt.block_on(hold_tx.send(done())).unwrap();
    drop(hold_tx);
    rt.block_on(open)
        .unwrap()
        .expect("the held snapshot completes");
    retried.join().unwrap().expect("the retry got the slot");
    let got = recorder.snapshots.lock().clone();
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|(_, _, received)| *received == files));
    raw_snapshot_call(&rt, addr, 7, vec![chunk(true, "meta", b"y"), done()]).expect("a slot again");
    assert_eq!(recorder.snapshots.lock().len(), 3);
}

/// A stream sending more files or bytes than its message announced is ended before the
/// excess is written, and leaves nothing; one within the bounds is taken.
#[test]
fn a_snapshot_stream_past_its_announced_bounds_is_refused() {
    let rt = runtime();
    let recorder = Arc::new(Recorder {
        bounds: Some(SnapshotBounds { files: 2, bytes: 8 }),
        ..Recorder::default()
    });
    let server = Server::start(config(7, 2), recorder.clone());
    let cases = [
        (
            "a third file",
            vec![
                chunk(true, "a", b"1"),
                chunk(false, "b", b"2"),
                chunk(false, "c", b""),
                done(),
            ],
        ),
        (
            "a ninth byte",
            vec![
                chunk(true, "a", b"1234"),
                chunk(false, "a", b"56789"),
                done(),
            ],
        ),
    ];
    for (what, chunks) in cases {
        let status = raw_snapshot_call(&rt, server.addr, 7, chunks).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(status.message().contains("announced"), "{what}: {status:?}");
    }
    assert!(recorder.snapshots.lock().is_empty());
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
    raw_snapshot_call(
        &rt,
        server.addr,
        7,
        vec![
            chunk(true, "a", b"1234"),
            chunk(false, "b", b"5678"),
            done(),
        ],
    )
    .expect("within the bounds");
    assert_eq!(recorder.snapshots.lock().len(), 1);
}

/// A snapshot announcing more bytes than the disk has free is refused before anything is
/// staged (RESOURCE_EXHAUSTED: the sender may try again once there is room); one that fits
/// is taken.
#[test]
fn a_snapshot_larger_than_the_free_disk_is_refused_before_staging() {
    let rt = runtime();
    let recorder = Arc::new(Recorder {
        bounds: Some(SnapshotBounds {
            files: 2,
            bytes: u64::MAX / 2,
        }),
        ..Recorder::default()
    });
    let server = Server::start(config(7, 2), recorder.clone());
    let status = raw_snapshot_call(&rt, server.addr, 7, vec![chunk(true, "a", b"1234"), done()])
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("do not fit"), "{status:?}");
    assert!(recorder.snapshots.lock().is_empty());
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);

    let fits = Arc::new(Recorder {
        bounds: Some(SnapshotBounds { files: 2, bytes: 8 }),
        ..Recorder::default()
    });
    let server = Server::start(config(7, 3), fits.clone());
    raw_snapshot_call(&rt, server.addr, 7, vec![chunk(true, "a", b"1234"), done()]).expect("fits");
    assert_eq!(fits.snapshots.lock().len(), 1);
}

/// A sender trickling small chunks, each well inside the idle timeout, is ended once its
/// call averages under the least rate, and its slot goes to the next.
#[test]
fn a_trickling_snapshot_call_is_ended_and_frees_its_slot() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let mut c = config(7, 2);
    c.max_snapshot_receives = 1;
    c.snapshot_idle_timeout = Duration::from_millis(300);
    c.snapshot_least_rate_bytes = 1 << 20;
    let server = Server::start(c, recorder.clone());
    let addr = server.addr;
    let (tx, trickling) = held_snapshot_call(&rt, addr);
    let sender = rt.spawn(async move {
        let mut first = true;
        // One byte every 50 ms, for up to 10 s: far under 1 MiB a second.
        for _ in 0..200 {
            if tx.send(chunk(first, "meta", b"t")).await.is_err() {
                break;
            }
            first = false;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let status = rt
        .block_on(trickling)
        .unwrap()
        .expect_err("a trickling call ends");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("least"), "{status:?}");
    rt.block_on(sender).unwrap();
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
    raw_snapshot_call(&rt, addr, 7, vec![chunk(true, "meta", b"y"), done()]).expect("a slot again");
    assert_eq!(recorder.snapshots.lock().len(), 1);
}

/// A snapshot call that stops sending is ended after the idle timeout: its slot and its
/// staging are given back.
#[test]
fn a_stalled_snapshot_call_is_ended_and_frees_its_slot() {
    let rt = runtime();
    let recorder = Arc::new(Recorder::default());
    let mut c = config(7, 2);
    c.max_snapshot_receives = 1;
    c.snapshot_idle_timeout = Duration::from_millis(300);
    let server = Server::start(c, recorder.clone());
    let addr = server.addr;
    let (hold_tx, stalled) = held_snapshot_call(&rt, addr);
    rt.block_on(hold_tx.send(chunk(true, "meta", b"stalls")))
        .unwrap();
    let status = rt
        .block_on(stalled)
        .unwrap()
        .expect_err("a stalled call ends");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    drop(hold_tx);
    assert_eq!(std::fs::read_dir(server.staging()).unwrap().count(), 0);
    // A call that never sends its first chunk is ended the same way.
    let (silent_tx, silent) = held_snapshot_call(&rt, addr);
    let status = rt
        .block_on(silent)
        .unwrap()
        .expect_err("a silent call ends");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    drop(silent_tx);
    raw_snapshot_call(&rt, addr, 7, vec![chunk(true, "meta", b"y"), done()]).expect("a slot again");
    assert_eq!(recorder.snapshots.lock().len(), 1);
}

fn put(key: &str, value: &str) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.to_string()),
            })),
        }],
    }
}

/// Three stores elect, replicate and serve over gRPC; a learner added on a fourth, empty
/// store catches up by a snapshot streamed to it.
#[test]
fn stores_replicate_and_send_snapshots_over_grpc() {
    use flotilla::proto::metapb::PeerRole;
    use flotilla::store::PeerChange;
    let rt = runtime();
    let root = tempfile::tempdir().unwrap();
    // Listeners first: each store's transport must know every address.
    let listeners: Vec<_> = (0..4)
        .map(|_| {
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        })
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let resolver = Arc::new(StaticResolver::new(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (StoreId(i as u64 + 1), a.to_string())),
    ));
    let mut stores = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let engines = Engines::new(
            Arc::new(MemRaftLog::new()),
            Arc::new(MemKvEngine::new()),
            root.path().join(format!("snap-{id}")),
        );
        // The fourth store starts empty.
        if id <= 3 {
            bootstrap_region(&engines, &first_region(3)).unwrap();
        }
        let transport = GrpcTransport::new(config(7, id), resolver.clone(), rt.handle().clone());
        let store = Store::open(
            StoreConfig::new(StoreId(id)),
            engines,
            Arc::new(transport),
            RunMode::Threads,
        )
        .unwrap();
        let service = TransportService::new(
            config(7, id),
            store.receiver(),
            root.path().join(format!("incoming-{id}")),
        )
        .unwrap();
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        stores.push(store);
    }
    let region = RegionId(1);
    let mut leader = None;
    wait_until("a leader", || {
        leader = stores.iter().position(|s| {
            s.region_status(region)
                .wait()
                .is_ok_and(|st| st.role == Role::Leader)
        });
        leader.is_some()
    });
    let leader = &stores[leader.unwrap()];
    let epoch = leader
        .region_status(region)
        .wait()
        .unwrap()
        .region
        .epoch
        .unwrap();
    for i in 0..20 {
        leader
            .propose(region, epoch, put(&format!("k{i}"), &format!("v{i}")))
            .wait()
            .expect("write");
    }
    let read = leader
        .read(
            region,
            epoch,
            ReadRequest::Get {
                key: Bytes::from("k7"),
            },
        )
        .wait()
        .expect("read");
    assert_eq!(read, ReadResponse::Value(Some(Bytes::from("v7"))));
    let applied = leader.region_status(region).wait().unwrap().applied_index;
    // Every replica applies the writes (they travel only over gRPC).
    for s in &stores[..3] {
        wait_until("the writes applied everywhere", || {
            s.region_status(region)
                .wait()
                .is_ok_and(|st| st.applied_index >= applied)
        });
    }
    let learner = Peer {
        id: 4,
        store_id: 4,
        role: PeerRole::Learner as i32,
    };
    leader
        .change_peers(region, epoch, vec![PeerChange::AddLearner(learner)])
        .wait()
        .expect("learner added");
    // The new peer has no log to catch up from: only the snapshot brings it the region.
    wait_until("the learner caught up", || {
        stores[3]
            .region_status(region)
            .wait()
            .is_ok_and(|st| st.applied_index >= applied && st.region.peers.len() == 4)
    });
    assert!(stores[3].region_for_key(b"k7").is_some());
    assert_eq!(
        std::fs::read_dir(root.path().join("incoming-4"))
            .unwrap()
            .count(),
        0,
        "the staged snapshot went once handed over"
    );
    // A message announcing no snapshot may stage nothing: the store bounds the stream
    // before any file is written, not only once it is handed over.
    let status = raw_snapshot_call(
        &rt,
        addrs[3],
        7,
        vec![
            SnapshotChunk {
                message: Some(snapshot_message(4)),
                ..chunk(true, "meta", b"x")
            },
            done(),
        ],
    )
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("announced"), "{status:?}");
    for s in stores {
        s.shutdown();
    }
}
