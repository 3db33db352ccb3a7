//! Store liveness: whether each store holding peers of this store's regions is still
//! heard from. Time is counted in store ticks (the store FSM advances it), so a stepped
//! store and the simulator see the same decisions. Any batch from a store counts as
//! hearing it; the store pings every watched store every few ticks, so an idle pair of
//! stores still hears each other. A store not heard from for `down_after_ticks` is
//! down; hearing it again makes it live at once.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::StoreId;

/// What this store believes of a peer store (`live` or `down` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Heard from within the bound.
    Live,
    /// Silent past the bound: crashed, stopped, paused or cut off.
    Down,
}

#[derive(Debug, Clone, Copy)]
struct PeerStore {
    last_heard: u64,
    state: Liveness,
}

#[derive(Debug, Default)]
struct State {
    /// Store ticks so far.
    now: u64,
    peers: HashMap<StoreId, PeerStore>,
}

/// The liveness of peer stores, shared by the receiver (which hears them), the store FSM
/// (which ticks and pings) and the peers (which disregard down stores when deciding to
/// sleep).
#[derive(Debug, Default)]
pub(crate) struct StoreLiveness {
    state: RwLock<State>,
}

impl StoreLiveness {
    /// A batch came from `store`. Returns true when that brings a down store back.
    pub(crate) fn heard(&self, store: StoreId) -> bool {
        let mut s = self.state.write();
        let now = s.now;
        // Only stores `tick` watches are tracked (a sender's claimed id is not trusted to
        // add one): an unwatched store starts live when it is first watched anyway.
        let Some(peer) = s.peers.get_mut(&store) else {
            return false;
        };
        peer.last_heard = now;
        std::mem::replace(&mut peer.state, Liveness::Live) == Liveness::Down
    }

    /// One store tick: `watched` are the stores holding peers of local regions (a store
    /// seen for the first time starts live, heard now). Returns the stores that went down
    /// on this tick. Stores no longer watched are forgotten.
    pub(crate) fn tick(
        &self,
        watched: impl IntoIterator<Item = StoreId>,
        down_after_ticks: u32,
    ) -> Vec<StoreId> {
        let mut s = self.state.write();
        s.now += 1;
        let now = s.now;
        let mut peers = HashMap::new();
        for store in watched {
            let peer = s.peers.get(&store).copied().unwrap_or(PeerStore {
                last_heard: now,
                state: Liveness::Live,
            });
            peers.insert(store, peer);
        }
        let mut went_down = Vec::new();
        for (store, peer) in peers.iter_mut() {
            if peer.state == Liveness::Live
                && now.saturating_sub(peer.last_heard) >= u64::from(down_after_ticks.max(1))
            {
                peer.state = Liveness::Down;
                went_down.push(*store);
            }
        }
        went_down.sort_unstable();
        s.peers = peers;
        went_down
    }

    /// Whether `store` is known to be down (an unknown store is not).
    pub(crate) fn is_down(&self, store: StoreId) -> bool {
        self.state
            .read()
            .peers
            .get(&store)
            .is_some_and(|p| p.state == Liveness::Down)
    }

    /// Every watched store and what this store believes of it, by id.
    pub(crate) fn snapshot(&self) -> Vec<(StoreId, Liveness)> {
        let mut out: Vec<_> = self
            .state
            .read()
            .peers
            .iter()
            .map(|(&id, p)| (id, p.state))
            .collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S2: StoreId = StoreId(2);
    const S3: StoreId = StoreId(3);

    #[test]
    fn a_silent_store_goes_down_after_the_bound_and_comes_back_when_heard() {
        let l = StoreLiveness::default();
        assert!(l.tick([S2, S3], 3).is_empty(), "new stores start live");
        assert!(l.tick([S2, S3], 3).is_empty());
        assert!(!l.heard(S2));
        assert!(l.tick([S2, S3], 3).is_empty());
        assert_eq!(l.tick([S2, S3], 3), vec![S3], "3 ticks without S3");
        assert!(!l.is_down(S2) && l.is_down(S3));
        assert_eq!(l.tick([S2, S3], 3), vec![S2], "S3 down once, reported once");
        assert!(l.heard(S3), "hearing a down store brings it back");
        assert!(!l.heard(S3), "only once");
        assert_eq!(
            l.snapshot(),
            vec![(S2, Liveness::Down), (S3, Liveness::Live)]
        );
    }

    #[test]
    fn a_store_no_longer_watched_is_forgotten() {
        let l = StoreLiveness::default();
        l.tick([S2, S3], 2);
        l.tick([S2], 2);
        assert_eq!(l.snapshot(), vec![(S2, Liveness::Live)]);
        // Watched again later, it starts afresh (live, heard now).
        assert_eq!(l.tick([S2, S3], 2), vec![S2]);
        assert!(!l.is_down(S3));
    }

    /// A batch's sender id is only a claim: hearing from a store nobody watches records
    /// nothing (a stream of made-up ids cannot grow the table).
    #[test]
    fn a_store_not_watched_is_not_recorded_when_heard() {
        let l = StoreLiveness::default();
        l.tick([S2], 2);
        assert!(!l.heard(StoreId(77)));
        assert!(!l.heard(StoreId(u64::MAX)));
        assert_eq!(l.snapshot(), vec![(S2, Liveness::Live)]);
    }
}
