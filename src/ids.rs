//! Ids of what a store manages. Each is its own type so a region id cannot be passed where
//! a peer id, a store id, a log index or a term is wanted; the compiler catches the swap.
//!
//! The consensus core (`crate::raft`) names its peers with plain `u64`s, as etcd-raft does:
//! a Raft node id is a `PeerId`, converted at the store's edge. The generated protobuf
//! types keep `u64` fields on the wire; `Region::region_id`, `Peer::peer_id` and
//! `Peer::store_id` read them as ids.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Hashes ids for the maps keyed by them (the router's, the log's spans): ids need no
/// keyed or cryptographic hashing — a multiply and a fold spread them well, at a fraction
/// of SipHash's cost on every message's lookup.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// What a map keyed by ids hashes with.
pub(crate) type IdHashState = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

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

    /// Region ids spread over the hash space, whether hashed as a u64 or as bytes.
    #[test]
    fn region_id_hasher_spreads_ids() {
        let build = IdHashState::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000u64).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 10_000);
        let top_bits: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 56).collect();
        assert!(top_bits.len() > 200, "high bits vary: {}", top_bits.len());
        let bytes: std::collections::HashSet<u64> = (0..1000u32)
            .map(|i| {
                let mut h = build.build_hasher();
                h.write(&i.to_le_bytes());
                h.finish()
            })
            .collect();
        assert_eq!(bytes.len(), 1000);
    }

    /// hashbrown picks a bucket from a hash's low bits: they must spread both for ids in
    /// sequence and for ids that differ only in their high half.
    #[test]
    fn region_id_hasher_spreads_the_bucket_bits() {
        let build = IdHashState::default();
        let buckets = |ids: &mut dyn Iterator<Item = u64>| {
            ids.map(|id| build.hash_one(id) & 1023)
                .collect::<std::collections::HashSet<u64>>()
                .len()
        };
        // 10,000 draws into 1,024 buckets leave none empty when the bits are uniform.
        let sequential = buckets(&mut (0..10_000u64));
        assert!(
            sequential > 1000,
            "sequential ids fill {sequential} of 1024"
        );
        let high = buckets(&mut (0..1024u64).map(|k| k << 32));
        assert!(
            high > 600,
            "ids differing in the high half fill {high} of 1024"
        );
    }
}
