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

/// Acts on a region error from `peer` about `region`: the cache learns from it; returns
/// the next step.
pub(super) fn on_region_error(
    cache: &mut RegionCache,
    region: u64,
    peer: &Peer,
    error: &RegionError,
) -> Next {
    match error {
        // A hint pointing back at the peer just asked is no hint: wait for an election.
        RegionError::NotLeader {
            leader: Some(leader),
            ..
        } if leader.id != peer.id => {
            cache.set_leader(region, Some(*leader));
            Next::Now
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
        // The store no longer holds it (moved, or removed), or its range changed.
        RegionError::RegionNotFound { .. } | RegionError::KeyNotInRegion { .. } => {
            cache.evict(region);
            Next::After(Duration::ZERO)
        }
        RegionError::StoreNotMatch { .. } => {
            cache.set_leader(region, None);
            Next::After(Duration::ZERO)
        }
        RegionError::ServerIsBusy { backoff, .. } => Next::After(*backoff),
        // Not applied: another leader's entry took its place.
        RegionError::StaleCommand { .. } => Next::After(Duration::ZERO),
        RegionError::ProposalDropped { reason, .. } => match reason {
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
    let transport = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    );
    if !transport {
        return Next::Fail;
    }
    if effect == Effect::Read || never_sent(status) {
        Next::After(Duration::ZERO)
    } else {
        Next::Indeterminate
    }
}

/// Whether the call certainly never reached a server: the connection was refused (or
/// never made) before anything was sent.
fn never_sent(status: &tonic::Status) -> bool {
    if status.message().starts_with(super::NOT_CONNECTED) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
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
        assert_eq!(on_region_error(&mut c, 1, &peer(1), &hint), Next::Now);
        assert_eq!(c.locate(b"k").unwrap().leader, Some(peer(2)));
        // The same hint from the peer it names: no hint.
        assert_eq!(
            on_region_error(&mut c, 1, &peer(2), &hint),
            Next::After(Duration::ZERO)
        );
        assert_eq!(c.locate(b"k").unwrap().leader, None);

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
        assert_eq!(on_region_error(&mut c, 1, &peer(1), &stale), Next::Now);
        assert_eq!(c.locate(b"z").unwrap().region.id, 2);

        let gone = RegionError::RegionNotFound { region: r };
        assert_eq!(
            on_region_error(&mut c, 2, &peer(4), &gone),
            Next::After(Duration::ZERO)
        );
        assert!(c.locate(b"z").is_none());

        let busy = RegionError::ServerIsBusy {
            reason: BusyReason::MailboxFull,
            backoff: Duration::from_millis(70),
        };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &busy),
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
            assert_eq!(on_region_error(&mut c, 1, &peer(1), &dropped(reason)), next);
        }
        let invalid = RegionError::InvalidRequest {
            reason: "empty key".into(),
        };
        assert_eq!(on_region_error(&mut c, 1, &peer(1), &invalid), Next::Fail);
        let stale_command = RegionError::StaleCommand { region: r };
        assert_eq!(
            on_region_error(&mut c, 1, &peer(1), &stale_command),
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
        let bad = tonic::Status::invalid_argument("malformed");
        assert_eq!(classify_status(&bad, Effect::Read), Next::Fail);
        assert_eq!(
            classify_status(&tonic::Status::internal("bug"), Effect::Write),
            Next::Fail
        );
    }
}
