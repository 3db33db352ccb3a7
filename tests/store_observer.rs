//! Apply observers: every store's observer sees its regions' applied writes and admin
//! changes in log order, each before the proposer's answer; replicas observe the same
//! sequence; a snapshot install and a destruction are observed; after a crash that lost
//! applied KV writes, the replay is observed again with the same (region, index).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flotilla::proto::commandpb::{CompareAndSwap, Op, WriteCommand, op};
use flotilla::proto::metapb::{Peer, PeerRole};
use flotilla::store::apply::eval::OpOutcome;
use flotilla::store::{AppliedChange, ApplyEvent, ApplyObserver, PeerChange};
use flotilla::testkit::cluster::*;
use flotilla::{RegionId, StoreId};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ApplyEvent>>,
}

impl ApplyObserver for Recorder {
    fn on_apply(&self, event: &ApplyEvent) {
        self.events.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn events(&self) -> Vec<ApplyEvent> {
        self.events.lock().unwrap().clone()
    }

    fn writes(&self, region: RegionId) -> Vec<(u64, WriteCommand, Vec<OpOutcome>)> {
        self.events()
            .into_iter()
            .filter(|e| e.region == region)
            .flat_map(|e| match e.change {
                AppliedChange::Writes { writes } => writes
                    .into_iter()
                    .map(|w| (e.index, w.command, w.outcomes))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

fn cas(key: &[u8], expected: Option<&[u8]>, value: &[u8]) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::CompareAndSwap(CompareAndSwap {
                key: Bytes::copy_from_slice(key),
                expected: expected.map(Bytes::copy_from_slice),
                new_value: Some(Bytes::copy_from_slice(value)),
            })),
        }],
    }
}

/// Per region, indices only rise.
fn in_log_order(events: &[ApplyEvent]) -> bool {
    let mut last: BTreeMap<RegionId, u64> = BTreeMap::new();
    events.iter().all(|e| {
        let prev = last.insert(e.region, e.index).unwrap_or(0);
        e.index > prev
    })
}

#[test]
fn observers_see_every_applied_change_in_order_on_every_replica() {
    let recorders: Vec<Arc<Recorder>> = (0..4).map(|_| Arc::default()).collect();
    let rec = recorders.clone();
    let c = Cluster::start_observed(3, 1, test_config, move |s| {
        vec![rec[s.get() as usize - 1].clone() as Arc<dyn ApplyObserver>]
    });
    let kinds = |r: &Recorder| -> Vec<&'static str> {
        r.events()
            .iter()
            .filter(|e| e.region == FIRST_REGION)
            .map(|e| match &e.change {
                AppliedChange::Writes { .. } => "write",
                AppliedChange::Split { .. } => "split",
                AppliedChange::ChangePeers { .. } => "change peers",
                AppliedChange::SnapshotInstalled { .. } => "snapshot",
                AppliedChange::Destroyed { .. } => "destroyed",
            })
            .collect()
    };
    let leader = c.leader_store(FIRST_REGION);
    let observed_on_leader = |index: u64| {
        recorders[leader.get() as usize - 1]
            .writes(FIRST_REGION)
            .iter()
            .any(|(i, _, _)| *i == index)
    };
    let done = c.must_write(FIRST_REGION, put(b"a", b"1"));
    assert!(
        observed_on_leader(done.index),
        "observed before the proposer is answered"
    );
    let failed = c.must_write(FIRST_REGION, cas(b"a", Some(b"0"), b"2"));
    assert!(matches!(failed.outcomes[0], OpOutcome::Mismatch { .. }));
    assert!(observed_on_leader(failed.index));
    c.must_write(FIRST_REGION, cas(b"a", Some(b"1"), b"2"));
    wait_until("every voter observed the writes", || {
        recorders[..3]
            .iter()
            .all(|r| r.writes(FIRST_REGION).len() == 3)
    });
    // Every replica observed the same writes, with the same outcomes, in log order.
    let writes = recorders[0].writes(FIRST_REGION);
    assert_eq!(writes.len(), 3);
    // What was proposed, key and value whole (apply moves them out of its own copy).
    let proposed = [
        put(b"a", b"1"),
        cas(b"a", Some(b"0"), b"2"),
        cas(b"a", Some(b"1"), b"2"),
    ];
    for ((_, command, _), proposed) in writes.iter().zip(&proposed) {
        assert_eq!(command, proposed);
    }
    for r in &recorders[1..3] {
        assert_eq!(r.writes(FIRST_REGION), writes);
    }
    // A split.
    let split = c.on_leader(FIRST_REGION, |s, epoch| {
        s.split(
            FIRST_REGION,
            epoch,
            vec![flotilla::proto::commandpb::SplitRequest {
                split_key: Bytes::from_static(b"m"),
                new_region_id: 2,
                new_peer_ids: vec![21, 22, 23],
            }],
        )
    });
    // A learner added on the spare store (it gets a snapshot), then removed.
    let learner = Peer {
        id: 4,
        store_id: 4,
        role: PeerRole::Learner as i32,
    };
    c.on_leader(FIRST_REGION, |s, epoch| {
        s.change_peers(FIRST_REGION, epoch, vec![PeerChange::AddLearner(learner)])
    });
    c.wait_applied_everywhere(b"a", Some(b"2"));
    // The install's event follows its data into the engine.
    wait_until("the learner observes its snapshot", || {
        kinds(&recorders[3]) == ["snapshot"]
    });
    c.on_leader(FIRST_REGION, |s, epoch| {
        s.change_peers(FIRST_REGION, epoch, vec![PeerChange::Remove(learner)])
    });
    wait_until("the learner is destroyed", || {
        recorders[3].events().iter().any(|e| {
            e.region == FIRST_REGION && matches!(e.change, AppliedChange::Destroyed { .. })
        })
    });
    wait_until("the voters observed the removal", || {
        recorders[..3]
            .iter()
            .all(|r| kinds(r).iter().filter(|k| **k == "change peers").count() == 2)
    });
    for r in &recorders[..3] {
        assert_eq!(
            kinds(r),
            vec![
                "write",
                "write",
                "write",
                "split",
                "change peers",
                "change peers"
            ]
        );
        assert!(in_log_order(&r.events()));
        let split_event = r
            .events()
            .into_iter()
            .find_map(|e| match e.change {
                AppliedChange::Split { regions } => Some(regions),
                _ => None,
            })
            .unwrap();
        assert_eq!(split_event, split.regions);
    }
    // The learner applies its removal before it is destroyed — unless it missed it and a
    // tombstone message destroyed it.
    let learner_saw = kinds(&recorders[3]);
    assert!(
        learner_saw == ["snapshot", "change peers", "destroyed"]
            || learner_saw == ["snapshot", "destroyed"],
        "{learner_saw:?}"
    );
    // The new region's replicas observe from their start.
    c.must_put(RegionId(2), b"x", b"y");
    wait_until("the new region's replicas observe its write", || {
        recorders[..3]
            .iter()
            .all(|r| r.writes(RegionId(2)).len() == 1)
    });
}

/// Applied KV writes are not synced: a crash can lose them, and the restarted store
/// applies those entries again — and its observers see them again, with the same
/// (region, index) and command, in order.
#[test]
fn entries_replayed_after_a_crash_are_observed_again_with_their_index() {
    let recorders: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::default()).collect();
    let rec = recorders.clone();
    let mut c = Cluster::start_observed(3, 0, test_config, move |s| {
        vec![rec[s.get() as usize - 1].clone() as Arc<dyn ApplyObserver>]
    });
    for i in 0..5 {
        c.must_put(FIRST_REGION, format!("k{i}").as_bytes(), b"v");
    }
    c.wait_applied_everywhere(b"k4", Some(b"v"));
    let victim = StoreId(1);
    let before = recorders[0].writes(FIRST_REGION);
    // Everything applied since the last sync is lost.
    c.crash(victim);
    let again = Arc::new(Recorder::default());
    c.nodes[0].observers = vec![again.clone() as Arc<dyn ApplyObserver>];
    c.restart(victim);
    c.wait_applied_everywhere(b"k4", Some(b"v"));
    let replayed = again.writes(FIRST_REGION);
    assert!(!replayed.is_empty(), "the lost writes were applied again");
    assert!(in_log_order(&again.events()));
    for w in &replayed {
        assert!(before.contains(w), "{w:?} is one observed before the crash");
    }
}
