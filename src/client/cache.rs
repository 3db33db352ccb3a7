//! The client's region cache: the regions it has learned, by key range, each with the
//! leader it last heard of. A newer epoch replaces whatever it overlaps; an older one is
//! ignored, so a slow answer cannot undo a newer one.

use std::collections::BTreeMap;

use crate::proto::metapb::{Peer, Region, RegionEpoch};
use crate::region::{overlaps_range, succession};
use crate::storage::region_meta::contains_key;

/// A region as the client knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRegion {
    /// The region (range, epoch, peers).
    pub region: Region,
    /// The leader last heard of; `None`: unknown, try the peers in turn.
    pub leader: Option<Peer>,
}

/// Regions by start key; they never overlap.
#[derive(Debug, Default)]
pub struct RegionCache {
    by_start: BTreeMap<Vec<u8>, CachedRegion>,
}

fn epoch(r: &Region) -> RegionEpoch {
    r.epoch.unwrap_or_default()
}

impl RegionCache {
    /// The region holding `key`, if known.
    pub fn locate(&self, key: &[u8]) -> Option<&CachedRegion> {
        let (_, cached) = self.by_start.range(..=key.to_vec()).next_back()?;
        contains_key(&cached.region, key).then_some(cached)
    }

    /// The region holding the keys just before `end` (`end` empty: the last region), if
    /// known: the one whose range ends at or after `end` and starts before it.
    pub fn locate_before(&self, end: &[u8]) -> Option<&CachedRegion> {
        let cached = if end.is_empty() {
            self.by_start.values().next_back()?
        } else {
            self.by_start.range(..end.to_vec()).next_back()?.1
        };
        let r = &cached.region;
        let reaches = if end.is_empty() {
            r.end_key.is_empty()
        } else {
            r.end_key.is_empty() || r.end_key.as_slice() >= end
        };
        reaches.then_some(cached)
    }

    /// The cached region with this id.
    pub fn by_id(&self, id: u64) -> Option<&CachedRegion> {
        self.by_start.values().find(|c| c.region.id == id)
    }

    /// Learns a region: it replaces the cached regions it overlaps unless one of them is
    /// newer by `succession` (then it is ignored). The leader is kept when the region is
    /// the same one at the same membership.
    pub fn insert(&mut self, region: Region, leader: Option<Peer>) {
        let overlapping: Vec<Vec<u8>> = self
            .by_start
            .iter()
            .filter(|(_, c)| overlaps_range(&c.region, &region.start_key, &region.end_key))
            .map(|(k, _)| k.clone())
            .collect();
        let mut leader = leader;
        for key in &overlapping {
            let old = &self.by_start[key];
            let (new_epoch, old_epoch) = (epoch(&region), epoch(&old.region));
            if succession(&new_epoch) < succession(&old_epoch) {
                return;
            }
            if leader.is_none() && old.region.id == region.id && new_epoch == old_epoch {
                leader = old.leader;
            }
        }
        for key in overlapping {
            self.by_start.remove(&key);
        }
        let leader = leader.filter(|l| region.peers.iter().any(|p| p.id == l.id));
        self.by_start
            .insert(region.start_key.clone(), CachedRegion { region, leader });
    }

    /// Records the leader of a cached region (ignored if the region or the peer is not
    /// the cached one's).
    pub fn set_leader(&mut self, region_id: u64, leader: Option<Peer>) {
        if let Some(cached) = self
            .by_start
            .values_mut()
            .find(|c| c.region.id == region_id)
        {
            cached.leader = leader.filter(|l| cached.region.peers.iter().any(|p| p.id == l.id));
        }
    }

    /// Forgets a region (it moved, or the store asked no longer holds it).
    pub fn evict(&mut self, region_id: u64) {
        self.by_start.retain(|_, c| c.region.id != region_id);
    }

    /// Regions cached.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
        Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: vec![peer(id * 10 + 1), peer(id * 10 + 2)],
        }
    }

    fn peer(id: u64) -> Peer {
        Peer {
            id,
            store_id: id % 10,
            role: 0,
        }
    }

    fn ids(cache: &RegionCache) -> Vec<u64> {
        cache.by_start.values().map(|c| c.region.id).collect()
    }

    #[test]
    fn keys_find_the_region_whose_range_holds_them() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, "", "b", 2), None);
        cache.insert(region(2, "b", "d", 2), None);
        cache.insert(region(3, "f", "", 2), None);
        let at = |k: &str| cache.locate(k.as_bytes()).map(|c| c.region.id);
        assert_eq!(at(""), Some(1));
        assert_eq!(at("a"), Some(1));
        assert_eq!(at("b"), Some(2));
        assert_eq!(at("c"), Some(2));
        assert_eq!(at("d"), None, "a gap");
        assert_eq!(at("e"), None);
        assert_eq!(at("f"), Some(3));
        assert_eq!(at("zzz"), Some(3));
        let before = |k: &str| cache.locate_before(k.as_bytes()).map(|c| c.region.id);
        assert_eq!(before(""), Some(3));
        assert_eq!(before("b"), Some(1));
        assert_eq!(before("c"), Some(2));
        assert_eq!(before("d"), Some(2));
        assert_eq!(before("e"), None, "a gap");
        assert_eq!(before("g"), Some(3));
        assert_eq!(
            cache.by_id(2).map(|c| c.region.start_key.clone()),
            Some(b"b".to_vec())
        );
    }

    #[test]
    fn a_newer_region_replaces_what_it_overlaps_and_an_older_one_is_ignored() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, "", "", 1), Some(peer(11)));
        // The split's halves, newer: the whole-range region goes.
        cache.insert(region(1, "", "m", 2), None);
        assert_eq!(ids(&cache), vec![1]);
        assert_eq!(cache.locate(b"x").map(|c| c.region.id), None);
        cache.insert(region(2, "m", "", 2), Some(peer(21)));
        assert_eq!(ids(&cache), vec![1, 2]);
        // A late answer from before the split changes nothing.
        cache.insert(region(1, "", "", 1), Some(peer(12)));
        assert_eq!(ids(&cache), vec![1, 2]);
        assert_eq!(cache.locate(b"a").unwrap().region.end_key, b"m");
        // The leader is kept for the same region at the same epoch, and only a member.
        cache.set_leader(2, Some(peer(22)));
        cache.insert(region(2, "m", "", 2), None);
        assert_eq!(cache.locate(b"z").unwrap().leader, Some(peer(22)));
        cache.set_leader(2, Some(peer(99)));
        assert_eq!(cache.locate(b"z").unwrap().leader, None);
        cache.evict(2);
        assert_eq!(ids(&cache), vec![1]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn adjacent_regions_do_not_overlap_either_way_and_nested_ones_do() {
        let mut cache = RegionCache::default();
        assert!(cache.is_empty());
        assert_eq!(cache.len(), 0);
        cache.insert(region(2, "m", "", 2), None);
        assert!(!cache.is_empty());
        // Ends where the cached one starts: both stay.
        cache.insert(region(1, "", "m", 2), None);
        assert_eq!(ids(&cache), vec![1, 2]);
        assert_eq!(cache.len(), 2);

        // Inside the first: it replaces it.
        cache.insert(region(3, "c", "e", 2), None);
        assert_eq!(ids(&cache), vec![3, 2]);
    }

    #[test]
    fn a_leader_that_is_not_a_peer_of_the_region_is_not_believed() {
        let mut cache = RegionCache::default();
        cache.insert(region(4, "x", "", 3), Some(peer(99)));
        assert_eq!(cache.locate(b"y").unwrap().leader, None);
        cache.insert(region(4, "x", "", 4), Some(peer(41)));
        assert_eq!(cache.locate(b"y").unwrap().leader, Some(peer(41)));
    }

    #[test]
    fn a_membership_change_alone_is_newer_too() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, "", "", 3), Some(peer(11)));
        let mut changed = region(1, "", "", 3);
        changed.epoch = Some(RegionEpoch {
            conf_ver: 2,
            version: 3,
        });
        cache.insert(changed.clone(), None);
        assert_eq!(cache.locate(b"a").unwrap().region.epoch, changed.epoch);
        assert_eq!(
            cache.locate(b"a").unwrap().leader,
            None,
            "a new membership forgets the leader"
        );
    }

    #[test]
    fn a_fresh_leader_hint_at_the_same_epoch_replaces_the_cached_leader() {
        let mut cache = RegionCache::default();
        cache.insert(region(1, "", "", 2), Some(peer(11)));
        cache.insert(region(1, "", "", 2), Some(peer(12)));
        assert_eq!(cache.locate(b"a").unwrap().leader, Some(peer(12)));
    }
}
