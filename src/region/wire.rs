//! Region errors on the wire (`kvpb::RegionError`): the server encodes them, the client
//! decodes them, and nothing is lost either way, so a client acts on the same typed error
//! an embedder gets.

use std::time::Duration;

use super::errors::{BusyReason, DroppedReason, RegionError};
use crate::proto::kvpb;
use crate::proto::kvpb::region_error::Error as Kind;
use crate::{RegionId, StoreId};

impl From<&RegionError> for kvpb::RegionError {
    fn from(e: &RegionError) -> Self {
        let kind = match e {
            RegionError::NotLeader { region, leader } => Kind::NotLeader(kvpb::NotLeader {
                region_id: region.get(),
                leader: *leader,
            }),
            RegionError::RegionNotFound { region } => Kind::RegionNotFound(kvpb::RegionNotFound {
                region_id: region.get(),
            }),
            RegionError::EpochNotMatch { current } => Kind::EpochNotMatch(kvpb::EpochNotMatch {
                current_regions: current.clone(),
            }),
            RegionError::KeyNotInRegion {
                key,
                region,
                start_key,
                end_key,
            } => Kind::KeyNotInRegion(kvpb::KeyNotInRegion {
                key: key.clone().into(),
                region_id: region.get(),
                start_key: start_key.clone().into(),
                end_key: end_key.clone().into(),
            }),
            RegionError::ServerIsBusy { reason, backoff } => {
                let reason = match reason {
                    BusyReason::MailboxFull => kvpb::BusyReason::MailboxFull,
                    BusyReason::RegionPendingBytes => kvpb::BusyReason::RegionPendingBytes,
                    BusyReason::StorePendingBytes => kvpb::BusyReason::StorePendingBytes,
                    BusyReason::WalBehind => kvpb::BusyReason::WalBehind,
                };
                Kind::ServerIsBusy(kvpb::ServerIsBusy {
                    reason: reason as i32,
                    backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                })
            }
            RegionError::StaleCommand { region } => Kind::StaleCommand(kvpb::StaleCommand {
                region_id: region.get(),
            }),
            RegionError::ProposalDropped { region, reason } => {
                let (reason, detail, peer_id) = match reason {
                    DroppedReason::LeaderTransferring => {
                        (kvpb::DroppedReason::LeaderTransferring, String::new(), 0)
                    }
                    DroppedReason::ConfChangePending => {
                        (kvpb::DroppedReason::ConfChangePending, String::new(), 0)
                    }
                    DroppedReason::ConfChangeRejected(why) => {
                        (kvpb::DroppedReason::ConfChangeRejected, why.clone(), 0)
                    }
                    DroppedReason::InvalidTransferTarget(peer) => (
                        kvpb::DroppedReason::InvalidTransferTarget,
                        String::new(),
                        *peer,
                    ),
                    DroppedReason::PeerDestroyed => {
                        (kvpb::DroppedReason::PeerDestroyed, String::new(), 0)
                    }
                    DroppedReason::StoreStopping => {
                        (kvpb::DroppedReason::StoreStopping, String::new(), 0)
                    }
                    DroppedReason::Unanswered => {
                        (kvpb::DroppedReason::Unanswered, String::new(), 0)
                    }
                };
                Kind::ProposalDropped(kvpb::ProposalDropped {
                    region_id: region.get(),
                    reason: reason as i32,
                    detail,
                    peer_id,
                })
            }
            RegionError::StoreNotMatch { requested, actual } => {
                Kind::StoreNotMatch(kvpb::StoreNotMatch {
                    requested_store_id: requested.get(),
                    actual_store_id: actual.get(),
                })
            }
            RegionError::InvalidRequest { reason } => Kind::InvalidRequest(kvpb::InvalidRequest {
                reason: reason.clone(),
            }),
            RegionError::EntryTooLarge { size, limit } => {
                Kind::EntryTooLarge(kvpb::EntryTooLarge {
                    size: *size,
                    limit: *limit,
                })
            }
        };
        kvpb::RegionError {
            message: e.to_string(),
            error: Some(kind),
        }
    }
}

/// A wire region error that names no kind this build knows (a newer server, or a
/// damaged message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a region error of unknown kind: {message}")]
pub struct UnknownRegionError {
    /// The error's text as the server wrote it.
    pub message: String,
}

impl TryFrom<kvpb::RegionError> for RegionError {
    type Error = UnknownRegionError;

    fn try_from(e: kvpb::RegionError) -> Result<Self, Self::Error> {
        let unknown = || UnknownRegionError {
            message: e.message.clone(),
        };
        let Some(kind) = e.error.clone() else {
            return Err(unknown());
        };
        Ok(match kind {
            Kind::NotLeader(n) => RegionError::NotLeader {
                region: RegionId(n.region_id),
                leader: n.leader,
            },
            Kind::RegionNotFound(n) => RegionError::RegionNotFound {
                region: RegionId(n.region_id),
            },
            Kind::EpochNotMatch(n) => RegionError::EpochNotMatch {
                current: n.current_regions,
            },
            Kind::KeyNotInRegion(k) => RegionError::KeyNotInRegion {
                key: k.key.to_vec(),
                region: RegionId(k.region_id),
                start_key: k.start_key.to_vec(),
                end_key: k.end_key.to_vec(),
            },
            Kind::ServerIsBusy(b) => RegionError::ServerIsBusy {
                reason: match kvpb::BusyReason::try_from(b.reason) {
                    Ok(kvpb::BusyReason::MailboxFull) => BusyReason::MailboxFull,
                    Ok(kvpb::BusyReason::RegionPendingBytes) => BusyReason::RegionPendingBytes,
                    Ok(kvpb::BusyReason::StorePendingBytes) => BusyReason::StorePendingBytes,
                    Ok(kvpb::BusyReason::WalBehind) => BusyReason::WalBehind,
                    Ok(kvpb::BusyReason::Unspecified) | Err(_) => return Err(unknown()),
                },
                backoff: Duration::from_millis(b.backoff_ms),
            },
            Kind::StaleCommand(s) => RegionError::StaleCommand {
                region: RegionId(s.region_id),
            },
            Kind::ProposalDropped(d) => RegionError::ProposalDropped {
                region: RegionId(d.region_id),
                reason: match kvpb::DroppedReason::try_from(d.reason) {
                    Ok(kvpb::DroppedReason::LeaderTransferring) => {
                        DroppedReason::LeaderTransferring
                    }
                    Ok(kvpb::DroppedReason::ConfChangePending) => DroppedReason::ConfChangePending,
                    Ok(kvpb::DroppedReason::ConfChangeRejected) => {
                        DroppedReason::ConfChangeRejected(d.detail)
                    }
                    Ok(kvpb::DroppedReason::InvalidTransferTarget) => {
                        DroppedReason::InvalidTransferTarget(d.peer_id)
                    }
                    Ok(kvpb::DroppedReason::PeerDestroyed) => DroppedReason::PeerDestroyed,
                    Ok(kvpb::DroppedReason::StoreStopping) => DroppedReason::StoreStopping,
                    Ok(kvpb::DroppedReason::Unanswered) => DroppedReason::Unanswered,
                    Ok(kvpb::DroppedReason::Unspecified) | Err(_) => return Err(unknown()),
                },
            },
            Kind::StoreNotMatch(s) => RegionError::StoreNotMatch {
                requested: StoreId(s.requested_store_id),
                actual: StoreId(s.actual_store_id),
            },
            Kind::InvalidRequest(i) => RegionError::InvalidRequest { reason: i.reason },
            Kind::EntryTooLarge(t) => RegionError::EntryTooLarge {
                size: t.size,
                limit: t.limit,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::{Peer, Region, RegionEpoch};

    fn every_error() -> Vec<RegionError> {
        let region = RegionId(7);
        let peer = Peer {
            id: 3,
            store_id: 2,
            role: 0,
        };
        let r = Region {
            id: 7,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 2,
                version: 5,
            }),
            peers: vec![peer],
        };
        let mut all = vec![
            RegionError::NotLeader {
                region,
                leader: Some(peer),
            },
            RegionError::NotLeader {
                region,
                leader: None,
            },
            RegionError::RegionNotFound { region },
            RegionError::EpochNotMatch {
                current: vec![r.clone(), Region { id: 8, ..r }],
            },
            RegionError::KeyNotInRegion {
                key: b"z".to_vec(),
                region,
                start_key: b"a".to_vec(),
                end_key: b"m".to_vec(),
            },
            RegionError::StaleCommand { region },
            RegionError::StoreNotMatch {
                requested: StoreId(1),
                actual: StoreId(2),
            },
            RegionError::InvalidRequest {
                reason: "empty key".into(),
            },
            RegionError::EntryTooLarge {
                size: 9 << 20,
                limit: 8 << 20,
            },
        ];
        for reason in [
            BusyReason::MailboxFull,
            BusyReason::RegionPendingBytes,
            BusyReason::StorePendingBytes,
            BusyReason::WalBehind,
        ] {
            all.push(RegionError::ServerIsBusy {
                reason,
                backoff: Duration::from_millis(25),
            });
        }
        for reason in [
            DroppedReason::LeaderTransferring,
            DroppedReason::ConfChangePending,
            DroppedReason::ConfChangeRejected("not a member".into()),
            DroppedReason::InvalidTransferTarget(9),
            DroppedReason::PeerDestroyed,
            DroppedReason::StoreStopping,
            DroppedReason::Unanswered,
        ] {
            all.push(RegionError::ProposalDropped { region, reason });
        }
        all
    }

    #[test]
    fn every_region_error_survives_the_wire() {
        for e in every_error() {
            let wire = kvpb::RegionError::from(&e);
            assert_eq!(wire.message, e.to_string());
            let bytes = prost::Message::encode_to_vec(&wire);
            let back: kvpb::RegionError = prost::Message::decode(bytes.as_slice()).unwrap();
            assert_eq!(RegionError::try_from(back), Ok(e));
        }
    }

    #[test]
    fn a_wire_error_of_no_known_kind_is_refused_not_guessed() {
        let none = kvpb::RegionError {
            message: "from the future".into(),
            error: None,
        };
        assert_eq!(
            RegionError::try_from(none),
            Err(UnknownRegionError {
                message: "from the future".into()
            })
        );
        let busy = kvpb::RegionError {
            message: String::new(),
            error: Some(Kind::ServerIsBusy(kvpb::ServerIsBusy {
                reason: 99,
                backoff_ms: 1,
            })),
        };
        assert!(RegionError::try_from(busy).is_err());
        let dropped = kvpb::RegionError {
            message: String::new(),
            error: Some(Kind::ProposalDropped(kvpb::ProposalDropped {
                reason: 0,
                ..Default::default()
            })),
        };
        assert!(RegionError::try_from(dropped).is_err());
    }
}
