//! Membership changes as a region applies them: the peer list after a committed
//! `ConfChangeV2`, decided from the region alone so every replica decides the same. A
//! change the region refuses (a stale epoch, an unknown peer) changes nothing — neither
//! the region nor the consensus core's membership.
//!
//! One change at a time for now (a simple change: at most one voter moves); joint changes
//! are refused when proposed.

use super::epoch::{CommandKind, bumped, check_epoch};
use super::errors::RegionError;
use crate::proto::commandpb::ChangePeersContext;
use crate::proto::metapb::{Peer, PeerRole, Region};
use crate::proto::raftpb::{ConfChangeType, ConfChangeV2};

/// The region after `cc`, decided with the context it was proposed with (the peers it
/// adds and the epoch it was decided on).
pub fn change_peers(
    region: &Region,
    cc: &ConfChangeV2,
    context: &ChangePeersContext,
) -> Result<Region, RegionError> {
    let invalid = |reason: String| RegionError::InvalidRequest { reason };
    if context.region_id != region.id {
        return Err(invalid(format!(
            "a membership change of region {} in region {}'s log",
            context.region_id, region.id
        )));
    }
    check_epoch(CommandKind::ChangePeers, context.epoch.as_ref(), region)?;
    let [change] = cc.changes.as_slice() else {
        return Err(invalid(format!(
            "{} changes in one entry: one membership change at a time",
            cc.changes.len()
        )));
    };
    let mut out = region.clone();
    let id = change.node_id;
    let position = out.peers.iter().position(|p| p.id == id);
    let role = match ConfChangeType::try_from(change.change_type) {
        Ok(ConfChangeType::AddNode) => PeerRole::Voter,
        Ok(ConfChangeType::AddLearnerNode) => PeerRole::Learner,
        Ok(ConfChangeType::RemoveNode) => {
            let at = position.ok_or_else(|| invalid(format!("peer {id} is not in the region")))?;
            out.peers.remove(at);
            out.epoch = Some(bumped(
                CommandKind::ChangePeers,
                region.epoch.unwrap_or_default(),
            ));
            return Ok(out);
        }
        Err(_) => {
            return Err(invalid(format!(
                "unknown change type {}",
                change.change_type
            )));
        }
    };
    match position {
        Some(at) => out.peers[at].role = role as i32,
        None => {
            let peer = context.peers.iter().find(|p| p.id == id).ok_or_else(|| {
                invalid(format!(
                    "the change adds peer {id} without naming its store"
                ))
            })?;
            check_new_peer(region, peer)?;
            out.peers.push(Peer {
                role: role as i32,
                ..*peer
            });
        }
    }
    out.epoch = Some(bumped(
        CommandKind::ChangePeers,
        region.epoch.unwrap_or_default(),
    ));
    Ok(out)
}

/// A new peer needs ids, and a store holding no other peer of the region.
pub fn check_new_peer(region: &Region, peer: &Peer) -> Result<(), RegionError> {
    let invalid = |reason: String| Err(RegionError::InvalidRequest { reason });
    if peer.id == 0 || peer.store_id == 0 {
        return invalid(format!(
            "peer {} on store {}: ids must not be 0",
            peer.id, peer.store_id
        ));
    }
    if let Some(other) = region
        .peers
        .iter()
        .find(|p| p.store_id == peer.store_id && p.id != peer.id)
    {
        return invalid(format!(
            "store {} already holds peer {} of region {}",
            peer.store_id, other.id, region.id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::RegionEpoch;
    use crate::proto::raftpb::ConfChangeSingle;

    fn peer(id: u64, store: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id: store,
            role: role as i32,
        }
    }

    fn region() -> Region {
        Region {
            id: 1,
            epoch: Some(RegionEpoch {
                conf_ver: 4,
                version: 2,
            }),
            peers: vec![peer(1, 1, PeerRole::Voter), peer(2, 2, PeerRole::Learner)],
            ..Default::default()
        }
    }

    fn cc(t: ConfChangeType, id: u64) -> ConfChangeV2 {
        ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: t as i32,
                node_id: id,
            }],
            ..Default::default()
        }
    }

    fn ctx(peers: Vec<Peer>) -> ChangePeersContext {
        ChangePeersContext {
            region_id: 1,
            epoch: region().epoch,
            peers,
        }
    }

    fn roles(r: &Region) -> Vec<(u64, u64, i32)> {
        r.peers.iter().map(|p| (p.id, p.store_id, p.role)).collect()
    }

    #[test]
    fn adds_promotes_demotes_and_removes_one_peer_bumping_conf_ver() {
        let (v, l) = (PeerRole::Voter as i32, PeerRole::Learner as i32);
        let add = change_peers(
            &region(),
            &cc(ConfChangeType::AddLearnerNode, 3),
            &ctx(vec![peer(3, 3, PeerRole::Learner)]),
        )
        .unwrap();
        assert_eq!(roles(&add), vec![(1, 1, v), (2, 2, l), (3, 3, l)]);
        assert_eq!(
            add.epoch,
            Some(RegionEpoch {
                conf_ver: 5,
                version: 2
            })
        );
        let promote =
            change_peers(&region(), &cc(ConfChangeType::AddNode, 2), &ctx(vec![])).unwrap();
        assert_eq!(roles(&promote), vec![(1, 1, v), (2, 2, v)]);
        let demote = change_peers(
            &region(),
            &cc(ConfChangeType::AddLearnerNode, 1),
            &ctx(vec![]),
        )
        .unwrap();
        assert_eq!(roles(&demote), vec![(1, 1, l), (2, 2, l)]);
        let remove =
            change_peers(&region(), &cc(ConfChangeType::RemoveNode, 2), &ctx(vec![])).unwrap();
        assert_eq!(roles(&remove), vec![(1, 1, v)]);
        assert_eq!(
            remove.epoch,
            Some(RegionEpoch {
                conf_ver: 5,
                version: 2
            })
        );
    }

    /// The role comes from the change, whatever the context says of the peer; a peer
    /// without ids is refused.
    #[test]
    fn a_new_peers_role_is_the_changes_and_its_ids_are_checked() {
        let learner = change_peers(
            &region(),
            &cc(ConfChangeType::AddLearnerNode, 3),
            &ctx(vec![peer(3, 3, PeerRole::Voter)]),
        )
        .unwrap();
        assert_eq!(learner.peers[2].role, PeerRole::Learner as i32);
        let voter = change_peers(
            &region(),
            &cc(ConfChangeType::AddNode, 3),
            &ctx(vec![peer(3, 3, PeerRole::Learner)]),
        )
        .unwrap();
        assert_eq!(voter.peers[2].role, PeerRole::Voter as i32);
        assert!(check_new_peer(&region(), &peer(0, 3, PeerRole::Voter)).is_err());
        assert!(check_new_peer(&region(), &peer(3, 0, PeerRole::Voter)).is_err());
        assert!(check_new_peer(&region(), &peer(3, 3, PeerRole::Voter)).is_ok());
    }

    #[test]
    fn a_change_the_region_cannot_take_is_refused() {
        let r = region();
        let refused = |c: ConfChangeV2, x: ChangePeersContext| change_peers(&r, &c, &x).is_err();
        let stale = ChangePeersContext {
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            ..ctx(vec![peer(3, 3, PeerRole::Voter)])
        };
        assert!(
            refused(cc(ConfChangeType::AddNode, 3), stale),
            "stale conf_ver"
        );
        let other = ChangePeersContext {
            region_id: 9,
            ..ctx(vec![peer(3, 3, PeerRole::Voter)])
        };
        assert!(
            refused(cc(ConfChangeType::AddNode, 3), other),
            "another region's change"
        );
        assert!(
            refused(cc(ConfChangeType::AddNode, 3), ctx(vec![])),
            "a new peer without its store"
        );
        assert!(
            refused(
                cc(ConfChangeType::AddNode, 3),
                ctx(vec![peer(3, 2, PeerRole::Voter)])
            ),
            "a second peer on one store"
        );
        assert!(
            refused(cc(ConfChangeType::RemoveNode, 7), ctx(vec![])),
            "removing a stranger"
        );
        let joint = ConfChangeV2 {
            changes: [
                cc(ConfChangeType::AddNode, 3).changes,
                cc(ConfChangeType::RemoveNode, 2).changes,
            ]
            .concat(),
            ..Default::default()
        };
        assert!(
            refused(joint, ctx(vec![peer(3, 3, PeerRole::Voter)])),
            "two changes at once"
        );
        assert!(
            refused(ConfChangeV2::default(), ctx(vec![])),
            "leaving a joint state"
        );
        let mut unknown = cc(ConfChangeType::AddNode, 3);
        unknown.changes[0].change_type = 42;
        assert!(
            refused(unknown, ctx(vec![peer(3, 3, PeerRole::Voter)])),
            "an unknown type"
        );
    }
}
