//! The sending side: one link per peer store, each a bounded queue drained by a task that
//! keeps one client stream open to that store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::snapshot_stream::{self, RateLimiter};
use super::{CLUSTER_ID_HEADER, FROM_STORE_HEADER, GrpcTransportConfig, Resolve};
use crate::StoreId;
use crate::proto::transportpb::store_transport_client::StoreTransportClient;
use crate::proto::transportpb::{RaftMessage, RaftMessageBatch};
use crate::store::{Transport, TransportError};

/// Store-to-store gRPC, the sending side (see the module's documentation).
/// `send_snapshot` blocks until the files are sent: call it from a plain thread (the
/// store's snapshot worker does), never from inside an async runtime, where it refuses.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: GrpcTransportConfig,
    resolver: Arc<dyn Resolve>,
    runtime: Handle,
    links: Mutex<HashMap<StoreId, Link>>,
    snapshot_sends: Arc<Semaphore>,
    snapshot_rate: Option<Arc<RateLimiter>>,
}

/// Where a link stands; `send` refuses at once while it is `Down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum LinkState {
    /// Not connected: on first use, or after a failure's backoff until something is sent
    /// and a stream opens. Batches queue.
    Connecting = 0,
    /// A stream is open.
    Up = 1,
    /// The last attempt failed; the link waits out its backoff (then `Connecting`).
    Down = 2,
}

impl LinkState {
    fn load(cell: &AtomicU8) -> LinkState {
        match cell.load(Ordering::Acquire) {
            1 => LinkState::Up,
            2 => LinkState::Down,
            _ => LinkState::Connecting,
        }
    }

    fn store(self, cell: &AtomicU8) {
        cell.store(self as u8, Ordering::Release);
    }
}

#[derive(Clone)]
struct Link {
    queue: mpsc::Sender<RaftMessageBatch>,
    state: Arc<AtomicU8>,
}

impl GrpcTransport {
    /// A transport whose links run on `runtime` and find stores through `resolver`.
    /// Links open on first use.
    pub fn new(config: GrpcTransportConfig, resolver: Arc<dyn Resolve>, runtime: Handle) -> Self {
        let snapshot_sends = Arc::new(Semaphore::new(config.max_snapshot_sends.max(1)));
        let snapshot_rate = config
            .snapshot_rate_bytes
            .map(|rate| Arc::new(RateLimiter::new(rate)));
        GrpcTransport {
            inner: Arc::new(Inner {
                config,
                resolver,
                runtime,
                links: Mutex::default(),
                snapshot_sends,
                snapshot_rate,
            }),
        }
    }

    /// Whether batches to `store` currently flow: a stream to it is open.
    pub fn is_connected(&self, store: StoreId) -> bool {
        self.inner
            .links
            .lock()
            .get(&store)
            .is_some_and(|l| LinkState::load(&l.state) == LinkState::Up)
    }

    fn link(&self, to: StoreId) -> Link {
        let mut links = self.inner.links.lock();
        if let Some(link) = links.get(&to) {
            return link.clone();
        }
        let (queue, rx) = mpsc::channel(self.inner.config.queue_batches.max(1));
        let link = Link {
            queue,
            state: Arc::new(AtomicU8::new(LinkState::Connecting as u8)),
        };
        // The task holds no reference to the transport: dropping the transport closes the
        // queue, which ends the task.
        self.inner.runtime.spawn(run_link(
            to,
            rx,
            link.state.clone(),
            self.inner.resolver.clone(),
            self.inner.config.clone(),
        ));
        links.insert(to, link.clone());
        link
    }
}

impl Transport for GrpcTransport {
    fn send(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
        let to = StoreId(batch.to_store);
        let link = self.link(to);
        if LinkState::load(&link.state) == LinkState::Down {
            metrics::counter!("flotilla_transport_dropped_batches_total", "reason" => "unreachable")
                .increment(1);
            return Err(TransportError::Unreachable(to));
        }
        link.queue.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("flotilla_transport_dropped_batches_total", "reason" => "full")
                    .increment(1);
                TransportError::Full(to)
            }
            mpsc::error::TrySendError::Closed(_) => TransportError::Unreachable(to),
        })
    }

    fn send_snapshot(&self, message: RaftMessage, files: &Path) -> Result<(), TransportError> {
        let to = StoreId(message.to_peer.map_or(0, |p| p.store_id));
        if Handle::try_current().is_ok() {
            // Blocking a runtime's thread on that runtime's own I/O can deadlock it.
            return Err(TransportError::SnapshotRefused {
                store: to,
                reason: "send_snapshot blocks: call it from a thread outside any async runtime"
                    .into(),
            });
        }
        let inner = &self.inner;
        let mut backoff = inner.config.min_backoff;
        let mut attempt = 0;
        loop {
            let send = snapshot_stream::send(
                &inner.config,
                inner.resolver.as_ref(),
                to,
                message.clone(),
                files,
                &inner.snapshot_sends,
                inner.snapshot_rate.clone(),
            );
            let result = inner.runtime.block_on(send);
            match result {
                Ok(bytes) => {
                    metrics::counter!("flotilla_transport_snapshots_total", "dir" => "sent", "outcome" => "ok")
                        .increment(1);
                    metrics::counter!("flotilla_transport_snapshot_bytes_total", "dir" => "sent")
                        .increment(bytes);
                    return Ok(());
                }
                Err(e) if e.is_retryable() && attempt < inner.config.snapshot_retries => {
                    tracing::info!(to = %to, error = %e, attempt, "snapshot send failed, retrying");
                    attempt += 1;
                    std::thread::sleep(backoff);
                    backoff = next_backoff(backoff, inner.config.max_backoff);
                }
                Err(e) => {
                    metrics::counter!("flotilla_transport_snapshots_total", "dir" => "sent", "outcome" => "failed")
                        .increment(1);
                    return Err(e.into_transport_error(to));
                }
            }
        }
    }
}

/// Adds the caller's identity to a call.
pub(super) fn identify<T>(
    request: &mut tonic::Request<T>,
    config: &GrpcTransportConfig,
) -> Result<(), tonic::Status> {
    let md = request.metadata_mut();
    for (key, value) in [
        (CLUSTER_ID_HEADER, config.cluster_id),
        (FROM_STORE_HEADER, config.store_id.get()),
    ] {
        let value = value
            .to_string()
            .parse()
            .map_err(|_| tonic::Status::internal("unencodable metadata"))?;
        md.insert(key, value);
    }
    Ok(())
}

/// A channel to `to`, or why there is none.
pub(super) async fn connect(
    to: StoreId,
    resolver: &dyn Resolve,
    config: &GrpcTransportConfig,
) -> Result<Channel, String> {
    let address = resolver
        .resolve(to)
        .ok_or_else(|| format!("no address for store {to}"))?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address:?} of store {to}: {e}"))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // A paused or vanished peer is noticed even while nothing is sent.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to store {to} at {address}: {e}"))
}

/// How one stream ended.
enum LinkEnd {
    /// The transport is gone: the link ends.
    Closed,
    /// The stream could not open or broke; `connected` if it had opened.
    Broken { connected: bool, reason: String },
}

/// The link's task: keeps a stream open to `to`, reopening it with backoff once there is
/// something to send.
async fn run_link(
    to: StoreId,
    mut rx: mpsc::Receiver<RaftMessageBatch>,
    state: Arc<AtomicU8>,
    resolver: Arc<dyn Resolve>,
    config: GrpcTransportConfig,
) {
    let mut backoff = config.min_backoff;
    let mut first = None;
    loop {
        let ended = stream_once(to, &mut rx, &mut first, &state, resolver.as_ref(), &config);
        match ended.await {
            LinkEnd::Closed => return,
            LinkEnd::Broken { connected, reason } => {
                LinkState::Down.store(&state);
                if connected {
                    backoff = config.min_backoff;
                }
                tracing::info!(to = %to, %reason, retry_in = ?backoff, "store link down");
                // Whatever waited for the broken stream is stale by the time one reopens.
                let stale = usize::from(first.take().is_some())
                    + std::iter::from_fn(|| rx.try_recv().ok()).count();
                metrics::counter!("flotilla_transport_dropped_batches_total", "reason" => "broken")
                    .increment(stale as u64);
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff, config.max_backoff);
                // Reconnect for something to send: a store that left the cluster, or that
                // nothing talks to any more, costs no attempts (nor log lines) until then.
                LinkState::Connecting.store(&state);
                match rx.recv().await {
                    Some(batch) => first = Some(batch),
                    None => return,
                }
            }
        }
    }
}

/// One stream to `to`: `first`, taken once the stream is open, goes before what the queue
/// holds.
async fn stream_once(
    to: StoreId,
    rx: &mut mpsc::Receiver<RaftMessageBatch>,
    first: &mut Option<RaftMessageBatch>,
    state: &AtomicU8,
    resolver: &dyn Resolve,
    config: &GrpcTransportConfig,
) -> LinkEnd {
    let channel = match connect(to, resolver, config).await {
        Ok(channel) => channel,
        Err(reason) => {
            metrics::counter!("flotilla_transport_connects_total", "outcome" => "failed")
                .increment(1);
            return LinkEnd::Broken {
                connected: false,
                reason,
            };
        }
    };
    metrics::counter!("flotilla_transport_connects_total", "outcome" => "ok").increment(1);
    let (call_tx, call_rx) = mpsc::channel(64);
    let mut request = tonic::Request::new(ReceiverStream::new(call_rx));
    if let Err(status) = identify(&mut request, config) {
        return LinkEnd::Broken {
            connected: false,
            reason: status.message().to_string(),
        };
    }
    let mut client = StoreTransportClient::new(channel)
        .max_encoding_message_size(config.max_message_bytes)
        .max_decoding_message_size(config.max_message_bytes);
    // The call runs on its own task so a full stream never stops this one from noticing
    // that the call has ended.
    let mut call = tokio::spawn(async move { client.raft(request).await });
    LinkState::Up.store(state);
    if let Some(batch) = first.take() {
        // A call already over is read on the first turn below.
        let _ = call_tx.send(batch).await;
    }
    loop {
        tokio::select! {
            biased;
            ended = &mut call => {
                // A refusal (another cluster) is a failure to connect: it backs off as
                // one, rather than retrying at the shortest wait forever.
                let mut connected = true;
                let reason = match ended {
                    Ok(Ok(_)) => "the store closed the stream".to_string(),
                    Ok(Err(status)) => {
                        if status.code() == tonic::Code::FailedPrecondition {
                            connected = false;
                            tracing::warn!(to = %to, reason = status.message(), "store refused this store's stream");
                        }
                        format!("{}: {}", status.code(), status.message())
                    }
                    Err(e) => format!("stream task ended: {e}"),
                };
                return LinkEnd::Broken { connected, reason };
            }
            next = rx.recv() => match next {
                None => {
                    call.abort();
                    return LinkEnd::Closed;
                }
                Some(batch) => {
                    if call_tx.send(batch).await.is_err() {
                        // The call is over; its end is read on the next turn.
                        continue;
                    }
                }
            }
        }
    }
}

/// The wait after another failure: twice the last, up to `max`.
fn next_backoff(last: Duration, max: Duration) -> Duration {
    (last * 2).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let max = Duration::from_millis(500);
        assert_eq!(
            next_backoff(Duration::from_millis(100), max),
            Duration::from_millis(200)
        );
        assert_eq!(next_backoff(Duration::from_millis(300), max), max);
        assert_eq!(next_backoff(max, max), max);
    }

    #[test]
    fn a_link_state_reads_back_as_stored() {
        let cell = AtomicU8::new(0);
        assert_eq!(LinkState::load(&cell), LinkState::Connecting);
        for state in [LinkState::Up, LinkState::Down, LinkState::Connecting] {
            state.store(&cell);
            assert_eq!(LinkState::load(&cell), state);
        }
    }
}
