//! Membership changes as a region applies them: the peer list after a committed
//! `ConfChangeV2`, decided from the region alone so every replica decides the same. The
//! new roles are read off the configuration the consensus core reaches with the same
//! change ([`next_conf_state`] runs the core's own arithmetic), so the region and the core
//! never disagree. A change the region refuses changes nothing — neither the region nor
//! the core's membership.
//!
//! One change is applied directly; several enter joint consensus (both halves vote),
//! which the core leaves by itself with an empty change once the leader applied the entry.
//! In the region a joint state shows in its peers' roles: `IncomingVoter` votes only in
//! the new half, `DemotingVoter` only in the old one and becomes a learner on leaving.

use super::epoch::{CommandKind, bumped, check_epoch};
use super::errors::RegionError;
use crate::proto::commandpb::ChangePeersContext;
use crate::proto::metapb::{Peer, PeerRole, Region};
use crate::proto::raftpb::{ConfChangeType, ConfChangeV2, ConfState};
use crate::raft::next_conf_state;

/// The region after `cc`, decided with the context it was proposed with (the peers it
/// adds and the epoch it was decided on). Leaving a joint state (an empty change the core
/// proposes by itself) needs no context.
pub fn change_peers(
    region: &Region,
    cc: &ConfChangeV2,
    context: &ChangePeersContext,
) -> Result<Region, RegionError> {
    let leaving_joint = cc.changes.is_empty();
    if !leaving_joint {
        if context.region_id != region.id {
            return Err(invalid(format!(
                "a membership change of region {} in region {}'s log",
                context.region_id, region.id
            )));
        }
        check_epoch(CommandKind::ChangePeers, context.epoch.as_ref(), region)?;
    }
    for (i, change) in cc.changes.iter().enumerate() {
        let id = change.node_id;
        if cc.changes[..i].iter().any(|c| c.node_id == id) {
            return Err(invalid(format!("peer {id} is named twice in one change")));
        }
        if change.change_type == ConfChangeType::RemoveNode as i32
            && !region.peers.iter().any(|p| p.id == id)
        {
            return Err(invalid(format!("peer {id} is not in the region")));
        }
    }
    let next = next_conf_state(&conf_state_of(region), cc).map_err(|e| invalid(e.to_string()))?;
    if !leaving_joint
        && !next.voters_outgoing.is_empty()
        && same_ids(&next.voters, &next.voters_outgoing)
    {
        // Nothing in the region's roles could say it is joint, so a restart could not
        // rebuild the core's configuration: learners change one at a time.
        return Err(invalid(
            "a joint change must change the voters; change learners one at a time".into(),
        ));
    }
    let mut out = region.clone();
    out.peers.clear();
    for p in &region.peers {
        if let Some(role) = role_in(&next, p.id)? {
            out.peers.push(Peer {
                role: role as i32,
                ..*p
            });
        }
    }
    for change in &cc.changes {
        let id = change.node_id;
        let Some(role) = role_in(&next, id)? else {
            continue;
        };
        if out.peers.iter().any(|p| p.id == id) {
            continue;
        }
        let peer = context.peers.iter().find(|p| p.id == id).ok_or_else(|| {
            invalid(format!(
                "the change adds peer {id} without naming its store"
            ))
        })?;
        // Against the region before the change too: a store whose peer this change removes
        // still holds it until that peer learns it (one region id, one peer per store).
        check_new_peer(region, peer)?;
        check_new_peer(&out, peer)?;
        out.peers.push(Peer {
            role: role as i32,
            ..*peer
        });
    }
    out.epoch = Some(bumped(
        CommandKind::ChangePeers,
        region.epoch.unwrap_or_default(),
    ));
    Ok(out)
}

/// The core's configuration for the region's peers and their roles (on restart, and in a
/// snapshot). Inverse of the roles `change_peers` assigns.
pub fn conf_state_of(region: &Region) -> ConfState {
    let mut cs = ConfState::default();
    let joint = is_joint(region);
    for p in &region.peers {
        match PeerRole::try_from(p.role) {
            Ok(PeerRole::Voter) => {
                cs.voters.push(p.id);
                if joint {
                    cs.voters_outgoing.push(p.id);
                }
            }
            Ok(PeerRole::IncomingVoter) => cs.voters.push(p.id),
            Ok(PeerRole::DemotingVoter) => {
                cs.voters_outgoing.push(p.id);
                cs.learners_next.push(p.id);
            }
            // An unknown role (a newer version's) is safest as one that does not vote.
            Ok(PeerRole::Learner) | Err(_) => cs.learners.push(p.id),
        }
    }
    cs.auto_leave = joint;
    cs
}

/// Whether the region is between two memberships (joint consensus).
pub fn is_joint(region: &Region) -> bool {
    region.peers.iter().any(|p| {
        p.role == PeerRole::IncomingVoter as i32 || p.role == PeerRole::DemotingVoter as i32
    })
}

/// A peer's role in a configuration; `None` when it is no member.
fn role_in(cs: &ConfState, id: u64) -> Result<Option<PeerRole>, RegionError> {
    let joint = !cs.voters_outgoing.is_empty();
    let outgoing = cs.voters_outgoing.contains(&id);
    Ok(Some(if cs.voters.contains(&id) {
        if joint && !outgoing {
            PeerRole::IncomingVoter
        } else {
            PeerRole::Voter
        }
    } else if cs.learners_next.contains(&id) {
        PeerRole::DemotingVoter
    } else if cs.learners.contains(&id) {
        PeerRole::Learner
    } else if outgoing {
        // It would vote in the old half with no role the region can record.
        return Err(invalid(format!(
            "peer {id} is a voter: demote it to a learner before removing it in a joint change"
        )));
    } else {
        return Ok(None);
    }))
}

fn same_ids(a: &[u64], b: &[u64]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

fn invalid(reason: String) -> RegionError {
    RegionError::InvalidRequest { reason }
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
            &promote,
            &cc(ConfChangeType::AddLearnerNode, 1),
            &ChangePeersContext {
                epoch: promote.epoch,
                ..ctx(vec![])
            },
        )
        .unwrap();
        assert_eq!(roles(&demote), vec![(1, 1, l), (2, 2, v)]);
        // The core refuses a configuration without voters; so does the region.
        assert!(
            change_peers(
                &region(),
                &cc(ConfChangeType::AddLearnerNode, 1),
                &ctx(vec![])
            )
            .is_err()
        );
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
                cc(ConfChangeType::RemoveNode, 1).changes,
            ]
            .concat(),
            ..Default::default()
        };
        assert!(
            refused(joint, ctx(vec![peer(3, 3, PeerRole::Voter)])),
            "removing a voter in a joint change"
        );
        let twice = ConfChangeV2 {
            changes: [
                cc(ConfChangeType::AddNode, 2).changes,
                cc(ConfChangeType::AddLearnerNode, 2).changes,
            ]
            .concat(),
            ..Default::default()
        };
        assert!(refused(twice, ctx(vec![])), "one peer named twice");
        let swap_on_one_store = ConfChangeV2 {
            changes: [
                cc(ConfChangeType::RemoveNode, 2).changes,
                cc(ConfChangeType::AddNode, 3).changes,
            ]
            .concat(),
            ..Default::default()
        };
        assert!(
            refused(swap_on_one_store, ctx(vec![peer(3, 2, PeerRole::Voter)])),
            "a new peer on the store of a peer the same change removes"
        );
        let learners_only = ConfChangeV2 {
            changes: [
                cc(ConfChangeType::AddLearnerNode, 3).changes,
                cc(ConfChangeType::RemoveNode, 2).changes,
            ]
            .concat(),
            ..Default::default()
        };
        assert!(
            refused(learners_only, ctx(vec![peer(3, 3, PeerRole::Learner)])),
            "a joint change leaving the voters as they are"
        );
        assert!(
            refused(ConfChangeV2::default(), ctx(vec![])),
            "leaving a joint state the region is not in"
        );
        let mut unknown = cc(ConfChangeType::AddNode, 3);
        unknown.changes[0].change_type = 42;
        assert!(
            refused(unknown, ctx(vec![peer(3, 3, PeerRole::Voter)])),
            "an unknown type"
        );
    }

    fn joint(changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
        ConfChangeV2 {
            changes: changes
                .iter()
                .map(|&(t, id)| ConfChangeSingle {
                    change_type: t as i32,
                    node_id: id,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Three voters and a learner.
    fn four() -> Region {
        Region {
            peers: vec![
                peer(1, 1, PeerRole::Voter),
                peer(2, 2, PeerRole::Voter),
                peer(3, 3, PeerRole::Voter),
                peer(4, 4, PeerRole::Learner),
            ],
            ..region()
        }
    }

    /// A move: promote the learner and demote a voter together, then leave.
    #[test]
    fn a_joint_change_marks_incoming_and_demoting_voters_and_leaving_settles_them() {
        use PeerRole::*;
        let r = four();
        let entered = change_peers(
            &r,
            &joint(&[
                (ConfChangeType::AddNode, 4),
                (ConfChangeType::AddLearnerNode, 3),
            ]),
            &ctx(vec![]),
        )
        .unwrap();
        let want = |roles: [PeerRole; 4]| {
            (1..=4)
                .zip(roles)
                .map(|(id, role)| (id, id, role as i32))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            roles(&entered),
            want([Voter, Voter, DemotingVoter, IncomingVoter])
        );
        assert!(is_joint(&entered) && !is_joint(&r));
        assert_eq!(entered.epoch.unwrap().conf_ver, 5);
        let cs = conf_state_of(&entered);
        assert_eq!(
            (
                cs.voters,
                cs.voters_outgoing,
                cs.learners_next,
                cs.auto_leave
            ),
            (vec![1, 2, 4], vec![1, 2, 3], vec![3], true)
        );
        // Nothing else while joint; leaving needs no context.
        assert!(
            change_peers(
                &entered,
                &cc(ConfChangeType::RemoveNode, 3),
                &ChangePeersContext {
                    epoch: entered.epoch,
                    ..ctx(vec![])
                }
            )
            .is_err()
        );
        let left = change_peers(
            &entered,
            &ConfChangeV2::default(),
            &ChangePeersContext::default(),
        )
        .unwrap();
        assert_eq!(roles(&left), want([Voter, Voter, Learner, Voter]));
        assert!(!is_joint(&left));
        assert_eq!(left.epoch.unwrap().conf_ver, 6);
        let cs = conf_state_of(&left);
        assert!(cs.voters_outgoing.is_empty() && cs.learners_next.is_empty() && !cs.auto_leave);
    }

    fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
        ids.sort_unstable();
        ids
    }

    fn same_config(a: &ConfState, b: &ConfState) -> bool {
        sorted(a.voters.clone()) == sorted(b.voters.clone())
            && sorted(a.learners.clone()) == sorted(b.learners.clone())
            && sorted(a.voters_outgoing.clone()) == sorted(b.voters_outgoing.clone())
            && sorted(a.learners_next.clone()) == sorted(b.learners_next.clone())
            && a.auto_leave == b.auto_leave
    }

    /// Over random sequences of changes, whatever the region accepts, the configuration
    /// its roles describe is exactly the one the core reaches (so a restart rebuilds the
    /// core from the region), and whatever the core refuses the region refuses.
    #[test]
    fn the_regions_roles_always_describe_the_cores_configuration() {
        let types = [
            ConfChangeType::AddNode,
            ConfChangeType::AddLearnerNode,
            ConfChangeType::RemoveNode,
        ];
        let mut accepted = [0u32; 2];
        for seed in 0..200 {
            let mut rng = crate::testkit::Rng::new(seed);
            let mut r = four();
            for _ in 0..20 {
                let cc = if is_joint(&r) && rng.chance(70) {
                    ConfChangeV2::default()
                } else {
                    let n = rng.range(1, 4) as usize;
                    let pairs: Vec<_> = (0..n)
                        .map(|_| (types[rng.range(0, 3) as usize], rng.range(1, 7)))
                        .collect();
                    joint(&pairs)
                };
                let new_peers = (1..7).map(|id| peer(id, id, PeerRole::Voter)).collect();
                let context = ChangePeersContext {
                    region_id: r.id,
                    epoch: r.epoch,
                    peers: new_peers,
                };
                let core = next_conf_state(&conf_state_of(&r), &cc);
                if let Ok(next) = change_peers(&r, &cc, &context) {
                    let core = core.unwrap_or_else(|e| {
                        panic!("seed {seed}: the region took {cc:?} the core refused: {e}")
                    });
                    assert!(
                        same_config(&conf_state_of(&next), &core),
                        "seed {seed}: region {next:?} describes {:?}, the core has {core:?}",
                        conf_state_of(&next)
                    );
                    accepted[usize::from(cc.changes.is_empty())] += 1;
                    r = next;
                }
            }
        }
        // The walk must have exercised both kinds, or it checked little.
        assert!(accepted[0] > 100 && accepted[1] > 20, "{accepted:?}");
    }
}
