//! Ids of what a store manages. Each is its own type so a region id cannot be passed where
//! a peer id, a store id, a log index or a term is wanted; the compiler catches the swap.
//!
//! The consensus core (`crate::raft`) names its peers with plain `u64`s, as etcd-raft does:
//! a Raft node id is a `PeerId`, converted at the store's edge. The generated protobuf
//! types keep `u64` fields on the wire; `Region::region_id`, `Peer::peer_id` and
//! `Peer::store_id` read them as ids.

use std::fmt;

use crate::proto::metapb::{Peer, Region};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The id as the wire and the disk carry it.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A region: one Raft group replicating one key range, with a replica on several stores.
    RegionId
);
id_type!(
    /// One replica of a region; also its node id inside the region's Raft group. Unique
    /// across the cluster, so a removed replica's id is never reused.
    PeerId
);
id_type!(
    /// A store: one flotilla process with its raft log and KV engine.
    StoreId
);

impl Region {
    /// The region's id, typed.
    pub fn region_id(&self) -> RegionId {
        RegionId(self.id)
    }
}

impl Peer {
    /// This replica's id: also its node id in the region's Raft group.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.id)
    }

    /// The store that hosts this replica.
    pub fn store_id(&self) -> StoreId {
        StoreId(self.store_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_from_metadata_and_print_as_numbers() {
        let peer = Peer {
            id: 7,
            store_id: 3,
            ..Default::default()
        };
        let region = Region {
            id: 5,
            peers: vec![peer],
            ..Default::default()
        };
        assert_eq!(region.region_id(), RegionId(5));
        assert_eq!((peer.peer_id(), peer.store_id()), (PeerId(7), StoreId(3)));
        assert_eq!(format!("region {}", region.region_id()), "region 5");
        assert_eq!(RegionId(9).get(), 9);
    }
}
