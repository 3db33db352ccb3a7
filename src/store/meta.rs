//! What a store knows of the regions it holds: each one's metadata by id, and their ranges
//! by start key, so a new peer is never created over a range a local region still covers
//! and a key finds its region.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use crate::proto::metapb::Region;
use crate::region::{is_valid_range, overlaps_range};
use crate::storage::region_meta::end_bound;
use crate::{RegionId, StoreId};

enum Count {
    Add,
    Remove,
}

/// The regions of one store. Ranges of initialized regions never overlap.
#[derive(Debug, Default)]
pub struct StoreMeta {
    /// Shared with the region's peer FSM (one copy of each region's metadata per store).
    regions: HashMap<RegionId, Arc<Region>>,
    /// Start key → region, for the regions whose range is known.
    by_start: BTreeMap<Vec<u8>, RegionId>,
    /// How many peers of the regions live on each store (this one included).
    peers_by_store: BTreeMap<StoreId, usize>,
    /// The store of each region's leader as this store's replica knows it (liveness
    /// changes go to the regions they concern).
    leaders: BTreeMap<RegionId, StoreId>,
    /// The regions that replicas here will be given but do not hold yet: snapshots taken
    /// by their cores, not yet installed, and the regions a split wrote to the engine
    /// for an empty peer that ran already (filled by a snapshot later). Their ranges
    /// count as held, so no overlapping region can be installed meanwhile.
    installing: BTreeMap<RegionId, Region>,
}

impl StoreMeta {
    /// Records `region` (new, or its range or epoch changed).
    pub fn set(&mut self, region: impl Into<Arc<Region>>) {
        let region = region.into();
        let id = region.region_id();
        self.installing.remove(&id);
        if let Some(old) = self.regions.get(&id)
            && self.by_start.get(&old.start_key) == Some(&id)
        {
            self.by_start.remove(&old.start_key);
        }
        self.by_start.insert(region.start_key.clone(), id);
        self.count_peers(&region, Count::Add);
        if let Some(old) = self.regions.insert(id, region) {
            self.count_peers(&old, Count::Remove);
        }
    }

    /// Forgets the region (destroyed, or merged away).
    pub fn remove(&mut self, id: RegionId) -> Option<Arc<Region>> {
        self.leaders.remove(&id);
        self.installing.remove(&id);
        let old = self.regions.remove(&id)?;
        if self.by_start.get(&old.start_key) == Some(&id) {
            self.by_start.remove(&old.start_key);
        }
        self.count_peers(&old, Count::Remove);
        Some(old)
    }

    fn count_peers(&mut self, region: &Region, count: Count) {
        for p in &region.peers {
            let store = StoreId(p.store_id);
            match count {
                Count::Add => *self.peers_by_store.entry(store).or_default() += 1,
                Count::Remove => {
                    if let Some(n) = self.peers_by_store.get_mut(&store) {
                        *n -= 1;
                        if *n == 0 {
                            self.peers_by_store.remove(&store);
                        }
                    }
                }
            }
        }
    }

    /// The stores holding peers of this store's regions (this store included).
    pub fn peer_stores(&self) -> impl Iterator<Item = StoreId> + '_ {
        self.peers_by_store.keys().copied()
    }

    /// Records where `region`'s leader is, as this store's replica knows it (`None`:
    /// unknown).
    pub fn set_leader(&mut self, region: RegionId, leader: Option<StoreId>) {
        match leader {
            Some(store) => self.leaders.insert(region, store),
            None => self.leaders.remove(&region),
        };
    }

    /// The regions a peer store going down concerns: those it leads (their replicas here
    /// must elect), and those this store leads with a peer there (a leader left without
    /// a quorum must notice). `here` is this store.
    pub fn regions_led_by_or_led_here_with_a_peer_on(
        &self,
        store: StoreId,
        here: StoreId,
    ) -> Vec<RegionId> {
        let mut out: Vec<RegionId> = self
            .leaders
            .iter()
            .filter(|&(_, &leader)| leader == store)
            .map(|(&r, _)| r)
            .collect();
        out.extend(self.led_here_with_a_peer_on(store, here));
        out
    }

    /// The regions this store (`here`) leads that have a peer on `store`.
    pub fn led_here_with_a_peer_on(&self, store: StoreId, here: StoreId) -> Vec<RegionId> {
        self.leaders
            .iter()
            .filter(|&(_, &leader)| leader == here)
            .filter_map(|(r, _)| self.regions.get(r))
            .filter(|r| r.peers.iter().any(|p| p.store_id == store.get()))
            .map(|r| r.region_id())
            .collect()
    }

    /// The region's metadata as this store last recorded it.
    pub fn region(&self, id: RegionId) -> Option<&Region> {
        self.regions.get(&id).map(|r| &**r)
    }

    /// Every region, in start-key order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.by_start
            .values()
            .filter_map(|id| self.regions.get(id).map(|r| &**r))
    }

    /// How many regions the store holds.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether the store holds no region.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region whose range holds `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<&Region> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        let region = self.regions.get(id)?;
        end_bound(region)
            .is_none_or(|end| key < end)
            .then_some(region)
    }

    /// Reserves the range of `region` for a snapshot its replica's core has taken, or
    /// for its empty replica beside the state a split wrote for it: until the region is
    /// set (installed) or removed, the range counts in `overlapping_or_installing`.
    pub fn reserve_install(&mut self, region: Region) {
        self.installing.insert(region.region_id(), region);
    }

    /// `overlapping`, and the regions whose snapshot installs overlap the range.
    pub fn overlapping_or_installing(&self, start: &[u8], end: &[u8]) -> Vec<RegionId> {
        let mut out = self.overlapping(start, end);
        for (id, region) in &self.installing {
            if !out.contains(id) && overlaps_range(region, start, end) {
                out.push(*id);
            }
        }
        out
    }

    /// The regions whose ranges overlap `[start, end)` (an empty `end`: unbounded; an
    /// inverted range, which a message may claim, overlaps nothing).
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<RegionId> {
        let mut out = Vec::new();
        if !is_valid_range(start, end) {
            return out;
        }
        // The region starting at or before `start` may reach into the range.
        if let Some(r) = self.region_for_key(start) {
            out.push(r.region_id());
        }
        let upper = if end.is_empty() {
            self.by_start.range(start.to_vec()..)
        } else {
            self.by_start.range(start.to_vec()..end.to_vec())
        };
        for (_, id) in upper {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_find_their_region_and_ranges_their_overlaps() {
        let mut m = StoreMeta::default();
        m.set(region(1, b"", b"g"));
        m.set(region(2, b"g", b"p"));
        m.set(region(3, b"t", b""));
        let at = |k: &[u8]| m.region_for_key(k).map(|r| r.id);
        assert_eq!(at(b""), Some(1));
        assert_eq!(at(b"f\xff"), Some(1));
        assert_eq!(at(b"g"), Some(2));
        assert_eq!(at(b"p"), None, "the gap [p, t) is no region's");
        assert_eq!(at(b"zzz"), Some(3));
        let ids = |v: Vec<RegionId>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(ids(m.overlapping(b"p", b"t")), Vec::<u64>::new());
        assert_eq!(ids(m.overlapping(b"p", b"t\x00")), vec![3]);
        assert_eq!(ids(m.overlapping(b"a", b"h")), vec![1, 2]);
        assert_eq!(ids(m.overlapping(b"h", b"")), vec![2, 3]);
        assert_eq!(ids(m.overlapping(b"g", b"g\x00")), vec![2]);
        // A range a hostile message claims, inverted, overlaps nothing (and panics not).
        assert_eq!(ids(m.overlapping(b"t", b"a")), Vec::<u64>::new());
    }

    /// Two snapshots accepted before either installs must not both be taken: the range
    /// of one whose core took it counts until it installs or its region goes.
    #[test]
    fn a_range_reserved_for_an_install_counts_until_it_installs_or_goes() {
        let ids = |v: Vec<RegionId>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
        let mut m = StoreMeta::default();
        m.set(region(1, b"", b"g"));
        m.reserve_install(region(2, b"k", b"p"));
        assert_eq!(ids(m.overlapping(b"m", b"n")), Vec::<u64>::new());
        assert_eq!(ids(m.overlapping_or_installing(b"m", b"n")), vec![2]);
        assert_eq!(ids(m.overlapping_or_installing(b"a", b"")), vec![1, 2]);
        assert_eq!(
            ids(m.overlapping_or_installing(b"p", b"")),
            Vec::<u64>::new()
        );
        // Installed: it counts as a region, once.
        m.set(region(2, b"k", b"m"));
        assert_eq!(ids(m.overlapping_or_installing(b"a", b"")), vec![1, 2]);
        assert_eq!(
            ids(m.overlapping_or_installing(b"m", b"p")),
            Vec::<u64>::new()
        );
        // A reservation whose region goes goes with it.
        m.reserve_install(region(3, b"t", b""));
        assert_eq!(ids(m.overlapping_or_installing(b"x", b"")), vec![3]);
        m.remove(RegionId(3));
        assert_eq!(
            ids(m.overlapping_or_installing(b"x", b"")),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_region_looked_up_by_id_is_the_one_last_recorded() {
        let mut m = StoreMeta::default();
        assert!(m.is_empty());
        assert_eq!(m.region(RegionId(1)), None);
        m.set(region(1, b"", b"m"));
        assert!(!m.is_empty());
        assert_eq!(m.region(RegionId(1)), Some(&region(1, b"", b"m")));
        m.remove(RegionId(1));
        assert!(m.is_empty());
        assert_eq!(m.region(RegionId(1)), None);
    }

    /// A region whose start key moves (a snapshot of another range, a merge) leaves no
    /// trace at its old start: a stale entry would hide the region that covers the key.
    #[test]
    fn a_moved_or_removed_region_leaves_no_stale_start_key() {
        let mut m = StoreMeta::default();
        m.set(region(1, b"a", b"m"));
        m.set(region(2, b"m", b"z"));
        // Region 2 moves its start to "p"; region 1 grows over [a, p).
        m.set(region(2, b"p", b"z"));
        m.set(region(1, b"a", b"p"));
        assert_eq!(m.region_for_key(b"n").map(|r| r.id), Some(1));
        // Region 2 goes; region 1 grows over the rest.
        m.remove(RegionId(2));
        m.set(region(1, b"a", b""));
        assert_eq!(m.region_for_key(b"q").map(|r| r.id), Some(1));
        let starts: Vec<u64> = m.regions().map(|r| r.id).collect();
        assert_eq!(starts, vec![1]);
    }

    #[test]
    fn a_split_moves_the_range_index_with_the_region() {
        let mut m = StoreMeta::default();
        m.set(region(1, b"", b""));
        m.set(region(1, b"", b"m"));
        m.set(region(2, b"m", b""));
        assert_eq!(m.region_for_key(b"z").map(|r| r.id), Some(2));
        assert_eq!(m.region_for_key(b"a").map(|r| r.id), Some(1));
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(RegionId(2)).map(|r| r.id), Some(2));
        assert_eq!(m.region_for_key(b"z"), None);
        assert_eq!(m.remove(RegionId(2)), None);
        let order: Vec<u64> = m.regions().map(|r| r.id).collect();
        assert_eq!(order, vec![1]);
    }

    #[test]
    fn peer_stores_follow_the_regions_peers_as_they_change() {
        use crate::proto::metapb::Peer;
        let with_peers = |id: u64, stores: &[u64]| Region {
            peers: stores
                .iter()
                .map(|&s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    ..Default::default()
                })
                .collect(),
            ..region(id, &[id as u8], &[id as u8 + 1])
        };
        let mut m = StoreMeta::default();
        let stores = |m: &StoreMeta| {
            let mut v: Vec<u64> = m.peer_stores().map(|s| s.get()).collect();
            v.sort_unstable();
            v
        };
        m.set(with_peers(1, &[1, 2, 3]));
        m.set(with_peers(2, &[1, 4]));
        assert_eq!(stores(&m), vec![1, 2, 3, 4]);
        // Region 1 is led here (store 1), region 2 from store 4.
        m.set_leader(RegionId(1), Some(StoreId(1)));
        m.set_leader(RegionId(2), Some(StoreId(4)));
        let here = StoreId(1);
        assert_eq!(
            m.regions_led_by_or_led_here_with_a_peer_on(StoreId(4), here),
            vec![RegionId(2)]
        );
        assert_eq!(
            m.regions_led_by_or_led_here_with_a_peer_on(StoreId(2), here),
            vec![RegionId(1)]
        );
        assert_eq!(
            m.led_here_with_a_peer_on(StoreId(3), here),
            vec![RegionId(1)]
        );
        // A membership change moves region 1's peer from store 3 to store 4.
        m.set(with_peers(1, &[1, 2, 4]));
        assert_eq!(stores(&m), vec![1, 2, 4]);
        assert!(m.led_here_with_a_peer_on(StoreId(3), here).is_empty());
        let mut on4 = m.regions_led_by_or_led_here_with_a_peer_on(StoreId(4), here);
        on4.sort_unstable();
        assert_eq!(on4, vec![RegionId(1), RegionId(2)]);
        m.remove(RegionId(2));
        assert!(m.regions_led_by_or_led_here_with_a_peer_on(StoreId(4), here) == vec![RegionId(1)]);
        assert_eq!(stores(&m), vec![1, 2, 4]);
        m.remove(RegionId(1));
        assert_eq!(stores(&m), Vec::<u64>::new());
    }
}
