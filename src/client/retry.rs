//! What the client does after a failed try: one table from each typed region error, and
//! each gRPC failure, to the next step, updating the region cache with what the error
//! teaches (a new leader, the regions that replaced a stale one).

use std::time::Duration;

use super::cache::RegionCache;
use crate::proto::metapb::Peer;
use crate::region::{DroppedReason, RegionError};

/// What a request does: a read may be retried whatever happened to it, a write only when
/// it certainly did not take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    Read,
    Write,
}

/// The step after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again at once: the cache now says where to go.
    Now,
    /// Try again after at least this wait (the client's backoff may be longer).
    After(Duration),
    /// Give up: retrying cannot change the answer.
    Fail,
    /// Give up: a write that may have taken effect must not be sent again.
    Indeterminate,
}

/// Acts on a region error from `peer` about `region` for a request of `effect`: the cache
/// learns from it; returns the next step.
pub(super) fn on_region_error(
    cache: &mut RegionCache,
    region: u64,
    peer: &Peer,
    error: &RegionError,
    effect: Effect,
) -> Next {
    match error {
        // A hint pointing back at the peer just asked is no hint: wait for an election.
        RegionError::NotLeader {
            leader: Some(leader),
            ..
        } if leader.id != peer.id => {
            let known = cache
                .by_id(region)
                .is_some_and(|c| c.region.peers.iter().any(|p| p.id == leader.id));
            if known {
                cache.set_leader(region, Some(*leader));
                Next::Now
            } else {
                // A peer the cached membership lacks: the cache is behind a membership
                // change (reads and writes do not check conf_ver), so look the region up
                // again.
                cache.evict(region);
                Next::After(Duration::ZERO)
            }
        }
        RegionError::NotLeader { .. } => {
            cache.set_leader(region, None);
            Next::After(Duration::ZERO)
        }
        RegionError::EpochNotMatch { current } => {
            cache.evict(region);
            for r in current {
                cache.insert(r.clone(), None);
            }
            Next::Now
        }
        // The store no longer holds it (moved, or removed).
        RegionError::RegionNotFound { .. } => {
            cache.evict(region);
            Next::After(Duration::ZERO)
        }
        // At a matching epoch the range was the cached one: the request itself names a key
        // outside it, which no retry changes.
        RegionError::KeyNotInRegion { .. } => Next::Fail,
        RegionError::StoreNotMatch { .. } => {
            cache.set_leader(region, None);
            Next::After(Duration::ZERO)
        }
        RegionError::ServerIsBusy { backoff, .. } => Next::After(*backoff),
        // Not applied: another leader's entry took its place.
        RegionError::StaleCommand { .. } => Next::After(Duration::ZERO),
        RegionError::ProposalDropped { reason, .. } => match reason {
            // The store stopped with the request queued: a read just goes elsewhere.
            DroppedReason::Unanswered if effect == Effect::Read => {
                cache.set_leader(region, None);
                Next::After(Duration::ZERO)
            }
            DroppedReason::Unanswered => Next::Indeterminate,
            DroppedReason::LeaderTransferring
            | DroppedReason::ConfChangePending
            | DroppedReason::StoreStopping
            | DroppedReason::PeerDestroyed => {
                if matches!(
                    reason,
                    DroppedReason::StoreStopping | DroppedReason::PeerDestroyed
                ) {
                    cache.set_leader(region, None);
                }
                Next::After(Duration::ZERO)
            }
            DroppedReason::ConfChangeRejected(_) | DroppedReason::InvalidTransferTarget(_) => {
                Next::Fail
            }
        },
        RegionError::InvalidRequest { .. } | RegionError::EntryTooLarge { .. } => Next::Fail,
    }
}

/// The step after a call that failed as a whole (no answer, or a gRPC error).
pub(super) fn classify_status(status: &tonic::Status, effect: Effect) -> Next {
    use tonic::Code;
    if never_sent(status) {
        return Next::After(Duration::ZERO);
    }
    // The connection failed under the call (tonic reports some of those as INTERNAL,
    // with the transport's error as the source), or the call ran out of time.
    let transport = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    ) || transport_source(status);
    match (transport, effect) {
        (false, _) => Next::Fail,
        (true, Effect::Read) => Next::After(Duration::ZERO),
        (true, Effect::Write) => Next::Indeterminate,
    }
}

/// The errors under a status, its source first, then that one's source, and so on.
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

/// Whether the status comes from the connection (an HTTP/2 or I/O error under it).
fn transport_source(status: &tonic::Status) -> bool {
    causes(status).any(|e| e.is::<h2::Error>() || e.is::<std::io::Error>())
}

/// Whether the call certainly never ran: the connection was refused (or never made)
/// before anything was sent, hyper cancelled it while it was still queued for a
/// connection that closed, or a server refused it before running it (a stopping
/// server's answer, its stream refused, or a graceful GOAWAY that did not name it).
fn never_sent(status: &tonic::Status) -> bool {
    let message = status.message();
    if message.starts_with(super::NOT_CONNECTED)
        || (status.code() == tonic::Code::Unavailable
            && message.starts_with(crate::server::NOT_EXECUTED))
    {
        return true;
    }
    causes(status).any(never_ran_cause)
}

/// Whether one error under a status shows that its call never ran.
fn never_ran_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::ConnectionRefused
    {
        return true;
    }
    // hyper cancels a call still queued for a connection that closes before
    // taking it (or that was closed when it was queued): nothing was sent.
    if e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_canceled)
    {
        return true;
    }
    // A stream reset with REFUSED_STREAM was closed before any processing
    // (RFC 9113, section 8.7).
    if let Some(h2) = e.downcast_ref::<h2::Error>()
        && h2.is_reset()
        && h2.is_remote()
        && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
    {
        return true;
    }
    // A server closing gracefully sends GOAWAY naming the last stream it will run;
    // the streams after it fail with this error, unrun (RFC 9113, section 6.8).
    if let Some(h2) = e.downcast_ref::<h2::Error>()
        && h2.is_go_away()
        && h2.is_remote()
        && h2.reason() == Some(h2::Reason::NO_ERROR)
    {
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionId;
    use crate::proto::metapb::{Region, RegionEpoch};
    use crate::region::BusyReason;

    fn peer(id: u64) -> Peer {
        Peer {
            id,
            store_id: id,
            role: 0,
        }
    }

    fn cache() -> RegionCache {
        let mut cache = RegionCache::default();
        cache.insert(
            Region {
                id: 1,
                start_key: vec![],
                end_key: vec![],
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers: vec![peer(1), peer(2), peer(3)],
            },
            Some(peer(1)),
        );
        cache
    }

    #[test]
    fn each_region_error_has_its_step_and_teaches_the_cache() {
        let r = RegionId(1);
        let mut c = cache();
        let hint = RegionError::NotLeader {
            region: r,
            leader: Some(peer(2)),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &hint, Effect::Write),
            Next::Now
        );
        assert_eq!(c.locate(b"k").unwrap().leader, Some(peer(2)));
        // The same hint from the peer it names: no hint.
        assert_eq!(
            on_region_error(&mut c, 1, &peer(2), &hint, Effect::Write),
            Next::After(Duration::ZERO)
        );
        assert_eq!(c.locate(b"k").unwrap().leader, None);
        // A leader the cached membership lacks: the cache is stale, the region looked up.
        let stranger = RegionError::NotLeader {
            region: r,
            leader: Some(peer(7)),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &stranger, Effect::Read),
            Next::After(Duration::ZERO)
        );
        assert!(c.locate(b"k").is_none());
        c = cache();
        let outside = RegionError::KeyNotInRegion {
            key: b"z".to_vec(),
            region: r,
            start_key: vec![],
            end_key: b"m".to_vec(),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &outside, Effect::Read),
            Next::Fail
        );
        // A read dropped unanswered by a stopping store goes elsewhere; a write may have
        // landed.
        let unanswered = RegionError::ProposalDropped {
            region: r,
            reason: DroppedReason::Unanswered,
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &unanswered, Effect::Read),
            Next::After(Duration::ZERO)
        );
        assert_eq!(c.locate(b"k").unwrap().leader, None);
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &unanswered, Effect::Write),
            Next::Indeterminate
        );

        let split = vec![
            Region {
                id: 1,
                end_key: b"m".to_vec(),
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 2,
                }),
                peers: vec![peer(1)],
                ..Default::default()
            },
            Region {
                id: 2,
                start_key: b"m".to_vec(),
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 2,
                }),
                peers: vec![peer(4)],
                ..Default::default()
            },
        ];
        let stale = RegionError::EpochNotMatch { current: split };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &stale, Effect::Write),
            Next::Now
        );
        assert_eq!(c.locate(b"z").unwrap().region.id, 2);

        let gone = RegionError::RegionNotFound { region: r };
        assert_eq!(
            on_region_error(&mut c, 2, &peer(4), &gone, Effect::Read),
            Next::After(Duration::ZERO)
        );
        assert!(c.locate(b"z").is_none());

        let busy = RegionError::ServerIsBusy {
            reason: BusyReason::MailboxFull,
            backoff: Duration::from_millis(70),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &busy, Effect::Write),
            Next::After(Duration::from_millis(70))
        );
        let dropped = |reason| RegionError::ProposalDropped { region: r, reason };
        for (reason, next) in [
            (DroppedReason::Unanswered, Next::Indeterminate),
            (
                DroppedReason::LeaderTransferring,
                Next::After(Duration::ZERO),
            ),
            (DroppedReason::StoreStopping, Next::After(Duration::ZERO)),
            (DroppedReason::ConfChangeRejected("no".into()), Next::Fail),
            (DroppedReason::InvalidTransferTarget(9), Next::Fail),
        ] {
            assert_eq!(
                on_region_error(&mut c, 1, &peer(1), &dropped(reason), Effect::Write),
                next
            );
        }
        let invalid = RegionError::InvalidRequest {
            reason: "empty key".into(),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &invalid, Effect::Write),
            Next::Fail
        );
        let stale_command = RegionError::StaleCommand { region: r };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &stale_command, Effect::Write),
            Next::After(Duration::ZERO)
        );
    }

    #[test]
    fn a_write_whose_call_broke_is_indeterminate_unless_it_was_never_sent() {
        let broke = tonic::Status::unavailable("connection reset");
        assert_eq!(
            classify_status(&broke, Effect::Read),
            Next::After(Duration::ZERO)
        );
        assert_eq!(classify_status(&broke, Effect::Write), Next::Indeterminate);
        let timeout = tonic::Status::deadline_exceeded("late");
        assert_eq!(
            classify_status(&timeout, Effect::Write),
            Next::Indeterminate
        );
        let refused =
            tonic::Status::unavailable(format!("{}: refused", super::super::NOT_CONNECTED));
        assert_eq!(
            classify_status(&refused, Effect::Write),
            Next::After(Duration::ZERO)
        );
        let stopping = tonic::Status::unavailable(format!(
            "{}: the server is stopping",
            crate::server::NOT_EXECUTED
        ));
        assert_eq!(
            classify_status(&stopping, Effect::Write),
            Next::After(Duration::ZERO)
        );
        // A connection failing under the call, reported as INTERNAL with its cause.
        let with_source = |kind: std::io::ErrorKind| {
            let mut status = tonic::Status::internal("h2 protocol error");
            status.set_source(std::sync::Arc::new(std::io::Error::from(kind)));
            status
        };
        let reset = with_source(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            classify_status(&reset, Effect::Read),
            Next::After(Duration::ZERO)
        );
        assert_eq!(classify_status(&reset, Effect::Write), Next::Indeterminate);
        let refused_under = with_source(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_status(&refused_under, Effect::Write),
            Next::After(Duration::ZERO)
        );
        let bad = tonic::Status::invalid_argument("malformed");
        assert_eq!(classify_status(&bad, Effect::Read), Next::Fail);
        assert_eq!(
            classify_status(&tonic::Status::internal("bug"), Effect::Write),
            Next::Fail
        );
    }

    type ServerConnection = h2::server::Connection<tokio::net::TcpStream, bytes::Bytes>;

    /// What a client call gets from a server whose one connection `serve` handles.
    async fn status_of_a_call<F, Serve>(serve: F) -> tonic::Status
    where
        F: FnOnce(ServerConnection) -> Serve + Send + 'static,
        Serve: Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve(h2::server::handshake(socket).await.unwrap()).await;
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let mut kv = crate::proto::kvpb::kv_client::KvClient::new(channel);
        let status = kv
            .get(crate::proto::kvpb::GetRequest::default())
            .await
            .unwrap_err();
        server.abort();
        status
    }

    /// Drives a server connection until the client goes.
    async fn drain(mut connection: ServerConnection) {
        while let Some(Ok(_)) = connection.accept().await {}
    }

    /// A call to a server that answers its connection with GOAWAY naming no stream as
    /// run, and `reason`.
    async fn status_after_go_away(reason: h2::Reason) -> tonic::Status {
        status_of_a_call(move |mut connection| async move {
            connection.abrupt_shutdown(reason);
            drain(connection).await;
        })
        .await
    }

    /// A call whose stream the server resets with `reason`.
    async fn status_after_reset(reason: h2::Reason) -> tonic::Status {
        status_of_a_call(move |mut connection| async move {
            if let Some(Ok((_, mut respond))) = connection.accept().await {
                respond.send_reset(reason);
            }
            drain(connection).await;
        })
        .await
    }

    #[tokio::test]
    async fn only_a_graceful_go_away_means_the_call_never_ran() {
        let graceful = status_after_go_away(h2::Reason::NO_ERROR).await;
        assert!(never_sent(&graceful), "{graceful:?}");
        let broken = status_after_go_away(h2::Reason::INTERNAL_ERROR).await;
        assert!(!never_sent(&broken), "{broken:?}");
    }

    #[tokio::test]
    async fn only_a_refused_stream_means_a_reset_call_never_ran() {
        // RFC 9113, section 8.7: REFUSED_STREAM says the stream was closed before any
        // processing; any other reset may come after the call ran.
        let refused = status_after_reset(h2::Reason::REFUSED_STREAM).await;
        assert!(never_sent(&refused), "{refused:?}");
        for reason in [h2::Reason::CANCEL, h2::Reason::INTERNAL_ERROR] {
            let reset = status_after_reset(reason).await;
            assert!(!never_sent(&reset), "{reason:?}: {reset:?}");
        }
    }

    /// Whether hyper cancelled the call: it was still queued for a connection that
    /// closed before taking it.
    fn cancelled_by_hyper(status: &tonic::Status) -> bool {
        causes(status).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
        })
    }

    /// Three calls to a server that runs one stream at a time: the first is taken and
    /// left unanswered; the next two queue, one inside h2 waiting for a stream and one
    /// in hyper's queue behind it. Then the server closes with a graceful GOAWAY that
    /// names the first as run. Returns the first call's status and the other two.
    async fn calls_queued_at_a_go_away() -> (tonic::Status, Vec<tonic::Status>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (taken, first_taken) = tokio::sync::oneshot::channel::<()>();
        let (go_away, go_away_now) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::Builder::new()
                .max_concurrent_streams(1)
                .handshake::<_, bytes::Bytes>(socket)
                .await
                .unwrap();
            let first = connection.accept().await;
            let _ = taken.send(());
            tokio::select! {
                _ = async { while let Some(Ok(_)) = connection.accept().await {} } => {}
                _ = go_away_now => {}
            }
            connection.abrupt_shutdown(h2::Reason::NO_ERROR);
            drop(first);
            drain(connection).await;
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let call = || {
            let mut kv = crate::proto::kvpb::kv_client::KvClient::new(channel.clone());
            tokio::spawn(async move {
                kv.get(crate::proto::kvpb::GetRequest::default())
                    .await
                    .unwrap_err()
            })
        };
        let first = call();
        first_taken.await.unwrap();
        let queued = [call(), call()];
        // Both are queued well within this; an attempt where one was not yet is
        // retried by the caller.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = go_away.send(());
        let mut statuses = Vec::new();
        for call in queued {
            statuses.push(call.await.unwrap());
        }
        let first = first.await.unwrap();
        server.abort();
        (first, statuses)
    }

    #[tokio::test]
    async fn a_call_hyper_cancels_before_taking_it_never_ran() {
        // A call may not be queued yet when the server goes; a few attempts see hyper
        // cancel one.
        let mut cancelled = 0;
        for _ in 0..10 {
            let (first, queued) = calls_queued_at_a_go_away().await;
            assert!(!never_sent(&first), "the server took it: {first:?}");
            // The call waiting inside h2 fails as the dispatch task ends, which hyper
            // also says of calls it had sent: it stays indeterminate.
            for status in queued.iter().filter(|s| cancelled_by_hyper(s)) {
                assert!(never_sent(status), "{status:?}");
                cancelled += 1;
            }
            if cancelled > 0 {
                return;
            }
        }
        panic!("no attempt saw hyper cancel a queued call");
    }
}
