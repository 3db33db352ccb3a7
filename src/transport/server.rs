//! The receiving side: the tonic service a store's server mounts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, watch};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot_stream::{StageError, StagedFiles, check_name, under_least_rate};
use super::{CLUSTER_ID_HEADER, FROM_STORE_HEADER, GrpcTransportConfig};
use crate::StoreId;
use crate::proto::transportpb::store_transport_server::{StoreTransport, StoreTransportServer};
use crate::proto::transportpb::{RaftDone, RaftMessageBatch, SnapshotChunk, SnapshotDone};
use crate::store::BatchReceiver;

/// Store-to-store gRPC, the receiving side: batches go to the store's `BatchReceiver`;
/// snapshots are staged under a directory of their own, then handed to it.
#[derive(Clone)]
pub struct TransportService {
    inner: Arc<Inner>,
    /// Once it reads true (or its sender is gone), open batch streams end, so a server's
    /// graceful shutdown is not held up by peers' never-ending streams.
    closing: Option<watch::Receiver<bool>>,
}

struct Inner {
    config: GrpcTransportConfig,
    receiver: Arc<dyn BatchReceiver>,
    staging: PathBuf,
    receives: Arc<Semaphore>,
    next_stage: AtomicU64,
}

impl TransportService {
    /// A service for the store `config.store_id`, whose batches go to `receiver`.
    /// Snapshots are staged under `staging`, which is emptied now (what an earlier run
    /// left there was never handed over).
    pub fn new(
        config: GrpcTransportConfig,
        receiver: Arc<dyn BatchReceiver>,
        staging: PathBuf,
    ) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&staging)?;
        let receives = Arc::new(Semaphore::new(config.max_snapshot_receives.max(1)));
        Ok(TransportService {
            inner: Arc::new(Inner {
                config,
                receiver,
                staging,
                receives,
                next_stage: AtomicU64::new(0),
            }),
            closing: None,
        })
    }

    /// Ends every batch stream once `closing` reads true: the server is shutting down and
    /// its peers should stop sending (they reconnect with backoff). Call before serving.
    pub fn close_streams_on(mut self, closing: watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    /// The service, ready to mount on a tonic server, with the configured message limit.
    pub fn into_server(self) -> StoreTransportServer<TransportService> {
        let limit = self.inner.config.max_message_bytes;
        StoreTransportServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// The calling store, if the call comes from this cluster.
    fn caller(&self, md: &MetadataMap) -> Result<StoreId, Status> {
        let number = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Status::invalid_argument(format!("missing or bad {key} metadata")))
        };
        let cluster = number(CLUSTER_ID_HEADER)?;
        if cluster != self.inner.config.cluster_id {
            metrics::counter!("flotilla_transport_refused_calls_total", "reason" => "cluster")
                .increment(1);
            return Err(Status::failed_precondition(format!(
                "a call from cluster {cluster} to a store of cluster {}",
                self.inner.config.cluster_id
            )));
        }
        Ok(StoreId(number(FROM_STORE_HEADER)?))
    }
}

#[tonic::async_trait]
impl StoreTransport for TransportService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<RaftDone>, Status> {
        let from = self.caller(request.metadata())?;
        let mut stream = request.into_inner();
        let mut closing = self.closing.clone();
        loop {
            let batch = tokio::select! {
                batch = stream.message() => batch?,
                () = closed(&mut closing) => None,
            };
            let Some(batch) = batch else { break };
            if batch.from_store != from.get() {
                // Forged or misrouted: the stream's caller speaks only for itself.
                metrics::counter!("flotilla_transport_misrouted_batches_total").increment(1);
                continue;
            }
            self.inner.receiver.receive(batch);
        }
        Ok(Response::new(RaftDone {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotDone>, Status> {
        self.caller(request.metadata())?;
        let slot = self
            .inner
            .receives
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted("this store takes no more snapshots at the moment")
            })?;
        let started = std::time::Instant::now();
        let mut stream = request.into_inner();
        let idle = self.inner.config.snapshot_idle_timeout;
        let first = next_chunk(&mut stream, idle)
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let message = first
            .message
            .clone()
            .ok_or_else(|| Status::invalid_argument("a snapshot stream without its message"))?;
        let dir_name = check_name(&first.dir_name)
            .map_err(stage_status)?
            .to_string();
        let stage = Stage(
            self.inner.staging.join(
                self.inner
                    .next_stage
                    .fetch_add(1, Ordering::Relaxed)
                    .to_string(),
            ),
        );
        let dir = stage.0.join(&dir_name);
        let bounds = self.inner.receiver.snapshot_bounds(&message);
        let mut staged = blocking(move || StagedFiles::create(dir, bounds)).await?;
        let least_rate = self.inner.config.least_snapshot_rate();
        let mut received = first.data.len() as u64;
        let mut chunk = first;
        while !chunk.done {
            staged = blocking(move || staged.take(&chunk.file_name, &chunk.data).map(|()| staged))
                .await?;
            chunk = next_chunk(&mut stream, idle).await?.ok_or_else(|| {
                Status::invalid_argument("the snapshot stream ended before its last chunk")
            })?;
            received = received.saturating_add(chunk.data.len() as u64);
            let elapsed = started.elapsed();
            if under_least_rate(elapsed, received, idle, least_rate) {
                return Err(Status::deadline_exceeded(format!(
                    "the snapshot came slower than the least {least_rate} bytes a second \
                     ({received} bytes in {} ms)",
                    elapsed.as_millis()
                )));
            }
        }
        let (dir, bytes) = blocking(move || staged.finish()).await?;
        let receiver = self.inner.receiver.clone();
        // The staging and the receive slot go with the copy: a caller hanging up while
        // the store copies the files removes neither under it.
        tokio::task::spawn_blocking(move || {
            let taken = receiver.receive_snapshot(message, &dir);
            drop((stage, slot));
            taken
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(format!("snapshot not taken: {e}")))?;
        metrics::counter!("flotilla_transport_snapshots_total", "dir" => "received", "outcome" => "ok")
            .increment(1);
        metrics::counter!("flotilla_transport_snapshot_bytes_total", "dir" => "received")
            .increment(bytes);
        Ok(Response::new(SnapshotDone {}))
    }
}

/// The next chunk of a snapshot stream, unless none comes within `idle`.
async fn next_chunk(
    stream: &mut Streaming<SnapshotChunk>,
    idle: std::time::Duration,
) -> Result<Option<SnapshotChunk>, Status> {
    tokio::time::timeout(idle, stream.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("no snapshot chunk for {} ms", idle.as_millis()))
        })?
}

/// A staging directory, removed however its call ends.
struct Stage(PathBuf);

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs staging file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StageError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(stage_status)
}

fn stage_status(e: StageError) -> Status {
    match e {
        StageError::Invalid(why) => Status::invalid_argument(why),
        StageError::Io(e) => Status::internal(format!("staging the snapshot: {e}")),
        e @ StageError::NoRoom { .. } => Status::resource_exhausted(e.to_string()),
    }
}

/// Resolves once `closing` reads true or its sender is gone; never without one.
async fn closed(closing: &mut Option<watch::Receiver<bool>>) {
    match closing {
        Some(rx) => {
            let _ = rx.wait_for(|&closing| closing).await;
        }
        None => std::future::pending().await,
    }
}
