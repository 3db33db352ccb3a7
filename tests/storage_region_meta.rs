//! Region metadata and apply state in the meta keyspace, written with the data they
//! describe, and the durable applied index that bounds raft log GC.

use flotilla::RegionId;
use flotilla::proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use flotilla::proto::storagepb::{PeerState, RaftApplyState, RegionLocalState};
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{Keyspace, KvEngine, KvRead, KvWriteBatch};
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::region_meta::{
    ApplyTracker, all_region_states, apply_state, put_apply_state, put_region_state, region_state,
};

fn region(id: u64, start: &str, end: &str) -> RegionLocalState {
    let peers = (1..=3)
        .map(|s| Peer {
            id: id * 10 + s,
            store_id: s,
            role: PeerRole::Voter as i32,
        })
        .collect();
    let region = Region {
        id,
        start_key: start.as_bytes().to_vec(),
        end_key: end.as_bytes().to_vec(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers,
    };
    RegionLocalState {
        region: Some(region),
        state: PeerState::Normal as i32,
        applying: None,
    }
}

fn apply(index: u64) -> RaftApplyState {
    RaftApplyState {
        applied_index: index,
        applied_term: 1,
        truncated_index: 5,
        truncated_term: 5,
        partial_index: index + 1,
        partial_ops: 2,
    }
}

fn round_trip(kv: &impl KvEngine) {
    let mut b = KvWriteBatch::default();
    for (id, s, e) in [(300, "m", "t"), (2, "", "m"), (70_000, "t", "")] {
        put_region_state(&mut b, &region(id, s, e));
        put_apply_state(&mut b, RegionId(id), &apply(id));
    }
    kv.write(&b).unwrap();
    let ids: Vec<u64> = all_region_states(kv)
        .unwrap()
        .iter()
        .map(|s| s.region.as_ref().unwrap().id)
        .collect();
    assert_eq!(
        ids,
        [2, 300, 70_000],
        "ordered by id, apply states not listed"
    );
    assert_eq!(
        region_state(kv, RegionId(300)).unwrap(),
        Some(region(300, "m", "t"))
    );
    assert_eq!(
        apply_state(kv, RegionId(70_000)).unwrap(),
        Some(apply(70_000))
    );
    assert_eq!(apply_state(kv, RegionId(4)).unwrap(), None);

    // A corrupt record is a typed error, not a panic.
    let mut b = KvWriteBatch::default();
    let mut key = vec![b'r'];
    key.extend_from_slice(&9u64.to_be_bytes());
    key.push(2);
    b.put(Keyspace::Meta, key, vec![0xff, 0xff]);
    kv.write(&b).unwrap();
    assert!(apply_state(kv, RegionId(9)).is_err());
}

#[test]
fn states_round_trip_on_both_engines() {
    round_trip(&MemKvEngine::new());
    let dir = tempfile::tempdir().unwrap();
    round_trip(&FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap());
}

#[test]
fn data_and_apply_state_survive_or_vanish_together_and_gc_waits_for_persist() {
    let kv = MemKvEngine::new();
    let mut tracker = ApplyTracker::recovered([(RegionId(1), 5)]);
    let apply_entries = |kv: &MemKvEngine, tracker: &mut ApplyTracker, from: u64, to: u64| {
        let mut b = KvWriteBatch::default();
        for i in from..=to {
            b.put(Keyspace::Data, format!("k{i:03}"), format!("v{i}"));
        }
        put_apply_state(&mut b, RegionId(1), &apply(to));
        kv.write(&b).unwrap();
        tracker.on_written(RegionId(1), to);
    };
    apply_entries(&kv, &mut tracker, 6, 10);
    assert_eq!(
        tracker.durable_applied(RegionId(1)),
        5,
        "written is not durable"
    );
    tracker.persist(&kv).unwrap();
    assert_eq!(tracker.durable_applied(RegionId(1)), 10);

    apply_entries(&kv, &mut tracker, 11, 15);
    assert_eq!(
        tracker.durable_applied(RegionId(1)),
        10,
        "GC may not pass 10 yet"
    );
    kv.crash();
    // The data and the applied index went back together: replay resumes at 11.
    assert_eq!(
        apply_state(&kv, RegionId(1))
            .unwrap()
            .unwrap()
            .applied_index,
        10
    );
    assert_eq!(
        kv.get(Keyspace::Data, b"k010").unwrap().as_deref(),
        Some(&b"v10"[..])
    );
    assert_eq!(kv.get(Keyspace::Data, b"k011").unwrap(), None);
    let recovered = ApplyTracker::recovered([(
        RegionId(1),
        apply_state(&kv, RegionId(1))
            .unwrap()
            .unwrap()
            .applied_index,
    )]);
    assert_eq!(recovered.durable_applied(RegionId(1)), 10);
}

/// A region's range is `[start_key, end_key)`, an empty end key leaving it unbounded.
#[test]
fn region_ranges_include_the_start_and_exclude_the_end() {
    use flotilla::storage::region_meta::contains_key;
    let bounded = region(1, "b", "d").region.unwrap();
    let unbounded = region(2, "b", "").region.unwrap();
    let table: [(&[u8], bool, bool); 5] = [
        (b"a", false, false),
        (b"b", true, true),
        (b"c", true, true),
        (b"d", false, true),
        (b"zz", false, true),
    ];
    for (key, in_bounded, in_unbounded) in table {
        assert_eq!(contains_key(&bounded, key), in_bounded, "{key:?} in [b, d)");
        assert_eq!(
            contains_key(&unbounded, key),
            in_unbounded,
            "{key:?} in [b, ..)"
        );
    }
}

/// A region that left the store is forgotten: it no longer bounds log GC, and a later
/// persist does not bring its old written index back.
#[test]
fn a_forgotten_region_has_no_durable_index() {
    let kv = MemKvEngine::new();
    let mut tracker = ApplyTracker::recovered([(RegionId(1), 5), (RegionId(2), 7)]);
    tracker.on_written(RegionId(1), 9);
    tracker.forget(RegionId(1));
    tracker.persist(&kv).unwrap();
    assert_eq!(tracker.durable_applied(RegionId(1)), 0);
    assert_eq!(tracker.durable_applied(RegionId(2)), 7);
}
