//! Hibernation and store liveness: idle regions stop ticking on every store; a request or
//! a message wakes only its region; a region asleep when its leader's store stops or is cut
//! off still elects (store liveness wakes it); a dead store keeps no region awake, a live
//! follower that is behind (a stalled disk) does.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use flotilla::proto::commandpb::SplitRequest;
use flotilla::raft::Role;
use flotilla::store::{Fault, Liveness, ReadRequest, ReadResponse, Store};
use flotilla::testkit::cluster::*;
use flotilla::{RegionId, StoreId};

/// Splits the first region into `n` regions at keys "k01".."k{n-1}", each led; their ids
/// in key order. Region `i` holds the keys from "k{i}" (region 0 everything below "k01").
fn split_into(c: &Cluster, n: u64) -> Vec<RegionId> {
    let ids = c.split_first_region(n, |i| format!("k{i:02}"));
    for &r in &ids {
        c.wait_leader(r);
    }
    ids
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:02}-x").into_bytes()
}

fn all_asleep(c: &Cluster) -> bool {
    c.running().all(|s| s.ticking_regions() == 0)
}

fn wait_all_asleep(c: &Cluster) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !all_asleep(c) {
        if std::time::Instant::now() > deadline {
            let awake: Vec<String> = c
                .running()
                .flat_map(|s| {
                    s.regions().into_iter().filter_map(move |r| {
                        let st = answer(s.region_status(r.region_id())).ok()?;
                        (!st.hibernated)
                            .then(|| format!("{} on {}: {:?}", r.id, st.peer.store_id, st.role))
                    })
                })
                .collect();
            panic!("regions still awake: {awake:?}\n{}", c.describe());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (term, commit) of every region on every running store.
fn positions(c: &Cluster, regions: &[RegionId]) -> Vec<(u64, u64)> {
    c.running()
        .flat_map(|s| {
            regions.iter().map(move |&r| {
                let st = answer(s.region_status(r)).expect("status");
                (st.term, st.commit_index)
            })
        })
        .collect()
}

#[test]
fn idle_regions_sleep_everywhere_and_a_request_wakes_only_its_region() {
    let c = Cluster::start(3);
    let regions = split_into(&c, 10);
    wait_all_asleep(&c);
    for s in c.running() {
        for &r in &regions {
            assert!(answer(s.region_status(r)).unwrap().hibernated, "{r}");
        }
    }
    // Asleep, nothing moves: no elections, no heartbeats advancing anything.
    let before = positions(&c, &regions);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(positions(&c, &regions), before);
    assert!(all_asleep(&c));
    // A write wakes its own region and no other.
    c.must_put(regions[4], &key(4), b"v");
    for s in c.running() {
        assert!(s.ticking_regions() <= 1, "only the written region woke");
    }
    c.wait_applied_everywhere(&key(4), Some(b"v"));
    wait_all_asleep(&c);
    // So does a read (served by a read-index round: waking voids the lease; the partition
    // test below shows a cut-off old leader serves nothing).
    match c.must_read(
        regions[4],
        ReadRequest::Get {
            key: Bytes::from(key(4)),
        },
    ) {
        ReadResponse::Value(v) => assert_eq!(v.as_deref(), Some(&b"v"[..])),
        other => panic!("{other:?}"),
    }
    wait_all_asleep(&c);
}

/// With every region asleep, the store leading them stops: the others mark it down, wake
/// the regions it led, elect and serve. The dead store then keeps none of them awake (its
/// peers are disregarded). Back, it is caught up and everything sleeps again.
#[test]
fn sleeping_regions_elect_when_their_leaders_store_stops_and_a_dead_store_keeps_none_awake() {
    let mut c = Cluster::start(3);
    let regions = split_into(&c, 10);
    wait_all_asleep(&c);
    let gone = c.leader_store(FIRST_REGION);
    c.stop(gone);
    for (i, &r) in regions.iter().enumerate() {
        c.must_put(r, &key(i), b"after");
    }
    for s in c.running() {
        assert!(
            s.peer_store_liveness().contains(&(gone, Liveness::Down)),
            "{:?}",
            s.peer_store_liveness()
        );
    }
    wait_all_asleep(&c);
    c.restart(gone);
    for i in 0..regions.len() {
        c.wait_applied_everywhere(&key(i), Some(b"after"));
    }
    wait_until("every store is live again everywhere", || {
        c.running().all(|s| {
            s.peer_store_liveness()
                .iter()
                .all(|(_, l)| *l == Liveness::Live)
        })
    });
    wait_all_asleep(&c);
}

/// The leaders' store is cut off while every region sleeps: the majority side elects and
/// serves; the old leaders serve nothing stale; healed, everyone follows the new leaders
/// and the writes are everywhere.
#[test]
fn sleeping_regions_elect_on_the_majority_side_of_a_partition() {
    let c = Cluster::start(3);
    let regions = split_into(&c, 6);
    c.must_put(regions[2], &key(2), b"before");
    c.wait_applied_everywhere(&key(2), Some(b"before"));
    wait_all_asleep(&c);
    let cut_off = c.leader_store(regions[2]);
    let majority: HashSet<StoreId> = (1..=3).map(StoreId).filter(|&s| s != cut_off).collect();
    let cut = c.net.add_fault(Fault::Partition(vec![
        HashSet::from([cut_off]),
        majority.clone(),
    ]));
    let leader_among = |r: RegionId| -> Option<&Store> {
        majority
            .iter()
            .map(|&s| c.store(s))
            .find(|s| answer(s.region_status(r)).is_ok_and(|st| st.role == Role::Leader))
    };
    wait_until("the majority elects in every region", || {
        regions.iter().all(|&r| leader_among(r).is_some())
    });
    let leader = leader_among(regions[2]).unwrap();
    let epoch = answer(leader.region_status(regions[2]))
        .unwrap()
        .region
        .epoch
        .unwrap();
    answer(leader.propose(regions[2], epoch, put(&key(2), b"during")))
        .expect("the majority serves");
    // The old leader cannot confirm a read: it never answers with the old value.
    let stale = answer(c.store(cut_off).read(
        regions[2],
        epoch,
        ReadRequest::Get {
            key: Bytes::from(key(2)),
        },
    ));
    assert!(stale.is_err(), "the cut-off store served {stale:?}");
    c.net.remove_fault(cut);
    c.wait_applied_everywhere(&key(2), Some(b"during"));
    wait_until("the old leader follows", || {
        answer(c.store(cut_off).region_status(regions[2])).is_ok_and(|st| st.role != Role::Leader)
    });
    wait_all_asleep(&c);
}

/// A sleeping leader whose followers' stores both go down has no quorum left: told of
/// the stores going down, it wakes, and check-quorum deposes it — it does not go on
/// claiming leadership in its sleep.
#[test]
fn a_sleeping_leader_left_without_a_quorum_steps_down() {
    let mut c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    wait_all_asleep(&c);
    let leader = c.leader_store(FIRST_REGION);
    for s in (1..=3).map(StoreId).filter(|&s| s != leader) {
        c.stop(s);
    }
    wait_until("the lone leader steps down", || {
        answer(c.store(leader).region_status(FIRST_REGION)).is_ok_and(|st| st.role != Role::Leader)
    });
}

/// Log GC rounds visit only ticking regions (their cost follows the active regions): a
/// region compacts its log as it falls asleep instead, with no round at all.
#[test]
fn a_region_compacts_its_log_as_it_falls_asleep() {
    use flotilla::storage::log_gc::GcPolicy;
    let c = Cluster::start_with(3, |s| {
        let mut cfg = test_config(s);
        cfg.log_gc = GcPolicy {
            max_follower_lag: 10,
            min_entries: 5,
        };
        cfg.log_gc_interval = Duration::from_secs(3600);
        cfg
    });
    c.must_put(FIRST_REGION, b"warm", b"up");
    let first_index = |s: &Store| answer(s.region_status(FIRST_REGION)).unwrap().first_index;
    let before: Vec<u64> = c.running().map(first_index).collect();
    for i in 0..50 {
        c.must_put(FIRST_REGION, format!("k{i:02}").as_bytes(), b"v");
    }
    wait_all_asleep(&c);
    wait_until("every replica compacted as it fell asleep", || {
        c.running()
            .zip(&before)
            .all(|(s, b)| first_index(s) > b + 40)
    });
}

/// A follower whose disk stalls is alive (its store answers pings) but behind: its
/// region's leader must stay awake until it catches up, then everything sleeps.
#[test]
fn a_live_follower_behind_on_a_stalled_disk_keeps_its_leader_awake() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"1");
    wait_all_asleep(&c);
    let leader = c.wait_leader(FIRST_REGION);
    let slow = StoreId(a_follower(&leader).store_id);
    c.nodes[slow.get() as usize - 1].disk.stall();
    c.must_put(FIRST_REGION, b"k", b"2");
    std::thread::sleep(Duration::from_millis(600));
    let leader_store = c.store(StoreId(leader.peer.store_id));
    assert!(
        !answer(leader_store.region_status(FIRST_REGION))
            .unwrap()
            .hibernated,
        "a live follower is behind"
    );
    assert!(
        leader_store
            .peer_store_liveness()
            .contains(&(slow, Liveness::Live))
    );
    c.nodes[slow.get() as usize - 1].disk.release();
    c.wait_applied_everywhere(b"k", Some(b"2"));
    wait_all_asleep(&c);
}

fn tick_all(stores: &mut [Store]) {
    for s in stores.iter() {
        s.tick();
    }
    drive(stores);
}

/// A mass wake is spread over ticks: a store that finds a peer store down tells the
/// regions it affects at most `max_wakes_per_tick` per tick. Stepped, so ticks are exact.
#[test]
fn a_mass_wake_is_spread_over_ticks() {
    use flotilla::store::InProcessNetwork;
    const PER_TICK: usize = 2;
    let net = InProcessNetwork::new(7);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, |id| {
        let mut cfg = test_config(id);
        cfg.hibernation.max_wakes_per_tick = PER_TICK;
        cfg
    });
    let leader_of = |stores: &mut [Store], r: RegionId| -> Option<usize> {
        let mut statuses: Vec<_> = stores.iter().map(|s| s.region_status(r)).collect();
        drive(stores);
        statuses.iter_mut().position(|st| {
            st.try_take()
                .and_then(|r| r.ok())
                .is_some_and(|st| st.role == Role::Leader)
        })
    };
    let mut ticks = 0;
    let leader = loop {
        tick_all(&mut stores);
        ticks += 1;
        if let Some(l) = leader_of(&mut stores, FIRST_REGION) {
            break l;
        }
        assert!(ticks < 500, "no leader");
    };
    let regions = 10u64;
    let splits: Vec<SplitRequest> = (1..regions)
        .map(|i| SplitRequest {
            split_key: Bytes::from(format!("k{i:02}")),
            new_region_id: 100 + i,
            new_peer_ids: (1..=3).map(|s| 1000 + i * 10 + s).collect(),
        })
        .collect();
    let epoch = stores[0].regions()[0].epoch.unwrap();
    let mut split = stores[leader].split(FIRST_REGION, epoch, splits);
    drive(&mut stores);
    split.try_take().expect("answered").expect("split");
    // Every region elects, then all sleep.
    let ids: Vec<RegionId> = std::iter::once(FIRST_REGION)
        .chain((1..regions).map(|i| RegionId(100 + i)))
        .collect();
    let mut ticks = 0;
    let leaders = loop {
        let leaders: Vec<Option<usize>> = ids.iter().map(|&r| leader_of(&mut stores, r)).collect();
        if leaders.iter().all(Option::is_some) && stores.iter().all(|s| s.ticking_regions() == 0) {
            break leaders;
        }
        tick_all(&mut stores);
        ticks += 1;
        assert!(ticks < 1000, "regions never settled: leaders {leaders:?}");
    };
    // The store leading most regions goes away; one survivor is watched.
    let gone = (0..3)
        .max_by_key(|&s| leaders.iter().filter(|&&l| l == Some(s)).count())
        .unwrap();
    let led = leaders.iter().filter(|&&l| l == Some(gone)).count();
    assert!(led >= 4, "{leaders:?}");
    let store = stores.remove(gone);
    net.unregister(store.id());
    drop(store);
    let mut awake = Vec::new();
    while stores[0].ticking_regions() < led {
        tick_all(&mut stores);
        awake.push(stores[0].ticking_regions());
        assert!(awake.len() < 200, "the survivors never woke: {awake:?}");
    }
    let first = awake.iter().position(|&n| n > 0).unwrap();
    let window = &awake[first.saturating_sub(1)..];
    assert!(
        window.windows(2).all(|w| w[1] <= w[0] + PER_TICK),
        "more than {PER_TICK} wakes in a tick: {awake:?}"
    );
    assert!(window.len() > led / PER_TICK, "{awake:?}");
}

/// A follower woken by anything but its leader (here a request it can only refuse) wakes
/// its sleeping leader at once, so the leader heartbeats before the follower's election
/// timer could run out. Stepped, with no tick after the request: only the WAKE_UP signal
/// can wake the leader.
#[test]
fn a_woken_follower_wakes_its_sleeping_leader() {
    use flotilla::store::InProcessNetwork;
    let net = InProcessNetwork::new(3);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, test_config);
    let asleep = |stores: &mut [Store], i: usize| {
        let mut st = stores[i].region_status(FIRST_REGION);
        drive(stores);
        st.try_take().unwrap().unwrap().hibernated
    };
    let mut ticks = 0;
    while !stores.iter().all(|s| s.ticking_regions() == 0) {
        tick_all(&mut stores);
        ticks += 1;
        assert!(ticks < 1000, "the region never slept");
    }
    let leader = (0..3)
        .find(|&i| {
            let mut st = stores[i].region_status(FIRST_REGION);
            drive(&mut stores);
            st.try_take().unwrap().unwrap().role == Role::Leader
        })
        .expect("a leader");
    let follower = (leader + 1) % 3;
    assert!(asleep(&mut stores, leader) && asleep(&mut stores, follower));
    let epoch = stores[follower].regions()[0].epoch.unwrap();
    let mut refused = stores[follower].read(
        FIRST_REGION,
        epoch,
        ReadRequest::Get {
            key: Bytes::from_static(b"k"),
        },
    );
    drive(&mut stores);
    assert!(matches!(
        refused.try_take(),
        Some(Err(flotilla::region::RegionError::NotLeader { .. }))
    ));
    assert!(
        !asleep(&mut stores, follower),
        "the request woke the follower"
    );
    assert!(!asleep(&mut stores, leader), "the follower woke its leader");
}
