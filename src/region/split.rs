//! Splitting a region: pure metadata. The region keeps the range up to the first split
//! key; each new region takes the range from its key to the next (the last, to the old
//! end). Every region of the result gets the bumped epoch, and each new region has one
//! peer per peer of the old one, on the same store with the same role. No data moves:
//! all regions of a store share one keyspace. A region in a joint membership state is not
//! split.

use std::collections::HashSet;

use super::conf_change::is_joint;
use super::epoch::{CommandKind, bumped};
use super::errors::RegionError;
use crate::proto::commandpb::SplitRequest;
use crate::proto::metapb::{Peer, Region};
use crate::proto::storagepb::RaftApplyState;
use crate::storage::region_meta::end_bound;

/// Where the log of a region created by bootstrap or by a split starts: every replica
/// starts it at the same (index, term), with nothing before it to replicate. (An index
/// above zero keeps a peer created empty by a message — which starts at 0 — from looking
/// up to date: it needs a snapshot.)
pub const RAFT_INIT_INDEX: u64 = 5;
/// See `RAFT_INIT_INDEX`.
pub const RAFT_INIT_TERM: u64 = 5;

// Above zero, where an empty peer starts: checked when compiling.
const _: () = assert!(RAFT_INIT_INDEX > 0 && RAFT_INIT_TERM > 0);

/// The apply state a region created by bootstrap or a split starts with: applied and
/// truncated at the initial log position.
pub fn initial_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: RAFT_INIT_INDEX,
        applied_term: RAFT_INIT_TERM,
        truncated_index: RAFT_INIT_INDEX,
        truncated_term: RAFT_INIT_TERM,
        ..Default::default()
    }
}

/// The regions `region` becomes when split by `splits`: the region itself first, with its
/// shortened range, then one new region per request, in key order. Refused (changing
/// nothing) unless the keys rise strictly inside the region, and each request names a
/// fresh region id and one fresh, non-zero peer id per peer of the region.
pub fn split_region(region: &Region, splits: &[SplitRequest]) -> Result<Vec<Region>, RegionError> {
    let invalid = |reason: String| RegionError::InvalidRequest { reason };
    if splits.is_empty() {
        return Err(invalid("a split needs at least one key".into()));
    }
    if is_joint(region) {
        // The new regions would start joint too; the state is brief, so wait it out.
        return Err(invalid(format!(
            "region {} is changing membership (joint state): split once it is left",
            region.id
        )));
    }
    let mut ids: HashSet<u64> = HashSet::from([region.id]);
    let mut peer_ids: HashSet<u64> = region.peers.iter().map(|p| p.id).collect();
    let mut previous = region.start_key.as_slice();
    for s in splits {
        let key: &[u8] = &s.split_key;
        if key <= previous {
            return Err(invalid(format!(
                "split keys must rise strictly inside the region: {key:?} after {previous:?}"
            )));
        }
        if end_bound(region).is_some_and(|end| key >= end) {
            return Err(invalid(format!(
                "split key {key:?} is not inside region {}",
                region.id
            )));
        }
        previous = key;
        if s.new_region_id == 0 || !ids.insert(s.new_region_id) {
            return Err(invalid(format!(
                "new region id {} is zero or used twice",
                s.new_region_id
            )));
        }
        if s.new_peer_ids.len() != region.peers.len() {
            return Err(invalid(format!(
                "region {} has {} peers, the split names {} new peer ids",
                region.id,
                region.peers.len(),
                s.new_peer_ids.len()
            )));
        }
        for &p in &s.new_peer_ids {
            if p == 0 || !peer_ids.insert(p) {
                return Err(invalid(format!("new peer id {p} is zero or used twice")));
            }
        }
    }
    let epoch = Some(bumped(CommandKind::Split, region.epoch.unwrap_or_default()));
    let mut out = Vec::with_capacity(splits.len() + 1);
    out.push(Region {
        end_key: splits[0].split_key.to_vec(),
        epoch,
        ..region.clone()
    });
    for (i, s) in splits.iter().enumerate() {
        let end_key = splits
            .get(i + 1)
            .map_or_else(|| region.end_key.clone(), |next| next.split_key.to_vec());
        let peers = region
            .peers
            .iter()
            .zip(&s.new_peer_ids)
            .map(|(p, &id)| Peer { id, ..*p })
            .collect();
        out.push(Region {
            id: s.new_region_id,
            start_key: s.split_key.to_vec(),
            end_key,
            epoch,
            peers,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metapb::{PeerRole, RegionEpoch};

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"b".to_vec(),
            end_key: b"y".to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 7,
            }),
            peers: vec![
                Peer {
                    id: 11,
                    store_id: 1,
                    role: PeerRole::Voter as i32,
                },
                Peer {
                    id: 12,
                    store_id: 2,
                    role: PeerRole::Learner as i32,
                },
            ],
        }
    }

    fn split(key: &[u8], id: u64, peers: &[u64]) -> SplitRequest {
        SplitRequest {
            split_key: key.to_vec().into(),
            new_region_id: id,
            new_peer_ids: peers.to_vec(),
        }
    }

    #[test]
    fn a_split_hands_out_ranges_in_key_order_with_one_bumped_epoch() {
        let out = split_region(
            &region(),
            &[split(b"f", 2, &[21, 22]), split(b"m", 3, &[31, 32])],
        )
        .unwrap();
        let ranges: Vec<(u64, &[u8], &[u8])> = out
            .iter()
            .map(|r| (r.id, r.start_key.as_slice(), r.end_key.as_slice()))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (1, &b"b"[..], &b"f"[..]),
                (2, &b"f"[..], &b"m"[..]),
                (3, &b"m"[..], &b"y"[..])
            ]
        );
        for r in &out {
            assert_eq!(
                r.epoch,
                Some(RegionEpoch {
                    conf_ver: 3,
                    version: 8
                })
            );
        }
        assert_eq!(out[0].peers, region().peers);
        // New peers keep the store and role of the peer they stand beside.
        assert_eq!(out[2].peers[0].store_id, 1);
        assert_eq!(out[2].peers[1].id, 32);
        assert_eq!(out[2].peers[1].role, PeerRole::Learner as i32);
    }

    /// A region created by bootstrap or a split has applied exactly what its log was cut
    /// at: the initial position.
    #[test]
    fn a_new_region_starts_applied_and_truncated_at_the_initial_position() {
        let s = initial_apply_state();
        assert_eq!(
            (s.applied_index, s.applied_term),
            (RAFT_INIT_INDEX, RAFT_INIT_TERM)
        );
        assert_eq!(
            (s.truncated_index, s.truncated_term),
            (RAFT_INIT_INDEX, RAFT_INIT_TERM)
        );
        assert_eq!((s.partial_index, s.partial_ops), (0, 0));
    }

    #[test]
    fn an_unbounded_region_gives_its_last_new_region_no_end() {
        let r = Region {
            end_key: Vec::new(),
            ..region()
        };
        let out = split_region(&r, &[split(b"zz", 2, &[21, 22])]).unwrap();
        assert_eq!(out[1].end_key, Vec::<u8>::new());
        assert_eq!(out[0].end_key, b"zz".to_vec());
    }

    #[test]
    fn malformed_splits_are_refused_whole() {
        let r = region();
        let bad: Vec<(&str, Vec<SplitRequest>)> = vec![
            ("no keys", vec![]),
            ("key at the start", vec![split(b"b", 2, &[21, 22])]),
            ("key before the start", vec![split(b"a", 2, &[21, 22])]),
            ("key at the end", vec![split(b"y", 2, &[21, 22])]),
            (
                "keys not rising",
                vec![split(b"m", 2, &[21, 22]), split(b"f", 3, &[31, 32])],
            ),
            (
                "keys repeated",
                vec![split(b"m", 2, &[21, 22]), split(b"m", 3, &[31, 32])],
            ),
            ("region id zero", vec![split(b"m", 0, &[21, 22])]),
            ("the region's own id", vec![split(b"m", 1, &[21, 22])]),
            (
                "region id twice",
                vec![split(b"f", 2, &[21, 22]), split(b"m", 2, &[31, 32])],
            ),
            ("too few peer ids", vec![split(b"m", 2, &[21])]),
            ("too many peer ids", vec![split(b"m", 2, &[21, 22, 23])]),
            ("peer id zero", vec![split(b"m", 2, &[0, 22])]),
            ("an existing peer id", vec![split(b"m", 2, &[11, 22])]),
            (
                "peer id twice",
                vec![split(b"f", 2, &[21, 22]), split(b"m", 3, &[22, 32])],
            ),
        ];
        for (what, splits) in bad {
            assert!(
                matches!(
                    split_region(&r, &splits),
                    Err(RegionError::InvalidRequest { .. })
                ),
                "{what}"
            );
        }
    }
}
