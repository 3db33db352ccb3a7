//! Whole stores over the in-process network: three stores elect a leader for the first
//! region, replicate and apply writes, serve linearizable reads, refuse what does not fit
//! (follower, stale epoch, foreign key), split, hand leadership over and restart. The
//! restart and stop-under-load tests run each store on threads per role, again on one
//! thread (`RunMode::OneThread`), and with the three stores on one thread
//! (`RunMode::Shared`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::proto::commandpb::{
    CompareAndSwap, Delete, DeleteRange, Op, SplitRequest, WriteCommand, op,
};
use flotilla::proto::metapb::RegionEpoch;
use flotilla::raft::Role;
use flotilla::region::RegionError;
use flotilla::store::apply::eval::OpOutcome;
use flotilla::store::{ReadRequest, ReadResponse, RunMode, ScanOrder, SharedRunner};
use flotilla::testkit::cluster::*;
use flotilla::{PeerId, RegionId, StoreId};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::CompareAndSwap(CompareAndSwap {
                key: b(key),
                expected: expected.map(b),
                new_value: new.map(b),
            })),
        }],
    }
}

fn scan(start: &str, end: Option<&str>, limit: usize, order: ScanOrder) -> ReadRequest {
    ReadRequest::Scan {
        start: b(start),
        end: end.map(b),
        limit,
        order,
    }
}

fn pairs(r: ReadResponse) -> Vec<(String, String)> {
    match r {
        ReadResponse::Pairs(p) => p
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect(),
        other => panic!("a scan answered {other:?}"),
    }
}

#[test]
fn three_stores_replicate_writes_and_serve_reads_from_the_leader() {
    let c = Cluster::start(3);
    for i in 0..50 {
        let key = format!("k{i:02}");
        c.must_put(FIRST_REGION, key.as_bytes(), format!("v{i}").as_bytes());
    }
    assert_eq!(c.must_get(FIRST_REGION, b"k07"), Some(b("v7")));
    assert_eq!(c.must_get(FIRST_REGION, b"nope"), None);
    // Every replica applied every write.
    c.wait_applied_everywhere(b"k49", Some(b"v49"));
    let got = pairs(c.must_read(
        FIRST_REGION,
        scan("k10", Some("k13"), 0, ScanOrder::Forward),
    ));
    assert_eq!(
        got,
        vec![
            ("k10".into(), "v10".into()),
            ("k11".into(), "v11".into()),
            ("k12".into(), "v12".into())
        ]
    );
    let got = pairs(c.must_read(FIRST_REGION, scan("k40", None, 2, ScanOrder::Reverse)));
    assert_eq!(
        got,
        vec![("k49".into(), "v49".into()), ("k48".into(), "v48".into())]
    );
    let values = c.must_read(
        FIRST_REGION,
        ReadRequest::BatchGet {
            keys: vec![b("k01"), b("zz"), b("k02")],
        },
    );
    assert_eq!(
        values,
        ReadResponse::Values(vec![Some(b("v1")), None, Some(b("v2"))])
    );
}

#[test]
fn compare_and_swap_is_decided_at_apply() {
    let c = Cluster::start(3);
    let r = c.must_write(FIRST_REGION, cas("x", None, Some("1")));
    assert_eq!(r.outcomes, vec![OpOutcome::Swapped]);
    let r = c.must_write(FIRST_REGION, cas("x", None, Some("2")));
    assert_eq!(
        r.outcomes,
        vec![OpOutcome::Mismatch {
            current: Some(b("1"))
        }]
    );
    let r = c.must_write(FIRST_REGION, cas("x", Some("1"), None));
    assert_eq!(r.outcomes, vec![OpOutcome::Swapped]);
    assert_eq!(c.must_get(FIRST_REGION, b"x"), None);
    c.wait_applied_everywhere(b"x", None);
}

#[test]
fn requests_that_do_not_fit_get_typed_errors_and_change_nothing() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"a", b"1");
    let leader = c.wait_leader(FIRST_REGION);
    let epoch = leader.region.epoch.unwrap();
    let follower = (1..=3)
        .map(StoreId)
        .find(|s| s.get() != leader.peer.store_id)
        .unwrap();
    // A follower answers NotLeader, naming the leader.
    let store = c.store(follower);
    match answer(store.read(FIRST_REGION, epoch, ReadRequest::Get { key: b("a") })) {
        Err(RegionError::NotLeader {
            leader: Some(l), ..
        }) => assert_eq!(l.id, leader.peer.id),
        other => panic!("a follower read answered {other:?}"),
    }
    match answer(store.propose(FIRST_REGION, epoch, put(b"a", b"2"))) {
        Err(RegionError::NotLeader { .. }) => {}
        other => panic!("a follower write answered {other:?}"),
    }
    let store = c.store(StoreId(leader.peer.store_id));
    // A stale version is refused.
    let stale = RegionEpoch {
        version: epoch.version - 1,
        ..epoch
    };
    assert!(matches!(
        answer(store.propose(FIRST_REGION, stale, put(b"a", b"3"))),
        Err(RegionError::EpochNotMatch { .. })
    ));
    assert!(matches!(
        answer(store.read(FIRST_REGION, stale, ReadRequest::Get { key: b("a") })),
        Err(RegionError::EpochNotMatch { .. })
    ));
    // An empty key, an unknown region.
    assert!(matches!(
        answer(store.propose(FIRST_REGION, epoch, put(b"", b"3"))),
        Err(RegionError::KeyNotInRegion { .. } | RegionError::InvalidRequest { .. })
    ));
    assert!(matches!(
        answer(store.propose(RegionId(99), epoch, put(b"a", b"3"))),
        Err(RegionError::RegionNotFound {
            region: RegionId(99)
        })
    ));
    assert_eq!(c.must_get(FIRST_REGION, b"a"), Some(b("1")));
}

#[test]
fn a_split_starts_the_new_region_on_every_store_and_both_serve() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"apple", b"1");
    c.must_put(FIRST_REGION, b"pear", b"2");
    let leader = c.wait_leader(FIRST_REGION);
    let old_epoch = leader.region.epoch.unwrap();
    let store = c.store(StoreId(leader.peer.store_id));
    let split = SplitRequest {
        split_key: b("m"),
        new_region_id: 2,
        new_peer_ids: vec![4, 5, 6],
    };
    let regions = answer(store.split(FIRST_REGION, old_epoch, vec![split]))
        .expect("split")
        .regions;
    assert_eq!(regions.len(), 2);
    assert_eq!(
        (
            regions[0].start_key.as_slice(),
            regions[0].end_key.as_slice()
        ),
        (&b""[..], &b"m"[..])
    );
    assert_eq!(
        (
            regions[1].start_key.as_slice(),
            regions[1].end_key.as_slice()
        ),
        (&b"m"[..], &b""[..])
    );
    let region2 = RegionId(2);
    // The data stayed where it was: each region reads its half.
    assert_eq!(c.must_get(region2, b"pear"), Some(b("2")));
    assert_eq!(c.must_get(FIRST_REGION, b"apple"), Some(b("1")));
    c.must_put(region2, b"zebra", b"3");
    assert_eq!(c.must_get(region2, b"zebra"), Some(b("3")));
    // The old epoch and the other half's keys are refused.
    assert!(matches!(
        answer(store.propose(FIRST_REGION, old_epoch, put(b"b", b"x"))),
        Err(RegionError::EpochNotMatch { .. })
    ));
    let epoch1 = c.epoch(FIRST_REGION);
    let leader1 = c.store(c.leader_store(FIRST_REGION));
    assert!(matches!(
        answer(leader1.propose(FIRST_REGION, epoch1, put(b"pear", b"x"))),
        Err(RegionError::KeyNotInRegion { .. })
    ));
    // A scan of region 1 stops at its end, though keys follow.
    let got = pairs(c.must_read(FIRST_REGION, scan("a", None, 0, ScanOrder::Forward)));
    assert_eq!(got, vec![("apple".into(), "1".into())]);
    // Every store knows both regions.
    for s in c.running() {
        let ids: Vec<u64> = s.regions().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2], "store {}", s.id());
        assert_eq!(s.region_for_key(b"q").map(|r| r.id), Some(2));
    }
}

#[test]
fn leadership_moves_where_it_is_sent() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    let leader = c.wait_leader(FIRST_REGION);
    let target = leader
        .region
        .peers
        .iter()
        .find(|p| p.id != leader.peer.id)
        .unwrap();
    let epoch = leader.region.epoch.unwrap();
    answer(c.store(StoreId(leader.peer.store_id)).transfer_leader(
        FIRST_REGION,
        epoch,
        PeerId(target.id),
    ))
    .expect("transfer started");
    let target_store = c.store(StoreId(target.store_id));
    wait_until("transfer never completed", || {
        answer(target_store.region_status(FIRST_REGION))
            .unwrap()
            .role
            == Role::Leader
    });
    c.must_put(FIRST_REGION, b"k", b"w");
    assert_eq!(c.must_get(FIRST_REGION, b"k"), Some(b("w")));
}

#[test]
fn a_range_delete_clears_its_range_in_bounded_batches() {
    let c = Cluster::start_with(3, |s| {
        let mut cfg = test_config(s);
        cfg.delete_range_batch_bytes = 64;
        cfg
    });
    let mut ops = Vec::new();
    for i in 0..200 {
        ops.push(Op {
            op: Some(op::Op::Put(flotilla::proto::commandpb::Put {
                key: Bytes::from(format!("r{i:03}")),
                value: b("v"),
            })),
        });
    }
    c.must_write(FIRST_REGION, WriteCommand { ops });
    // Writes before and after the range delete in one command, a CAS seeing its effect.
    let command = WriteCommand {
        ops: vec![
            Op {
                op: Some(op::Op::Put(flotilla::proto::commandpb::Put {
                    key: b("q"),
                    value: b("before"),
                })),
            },
            Op {
                op: Some(op::Op::DeleteRange(DeleteRange {
                    start_key: b("r010"),
                    end_key: b("r190"),
                })),
            },
            Op {
                op: Some(op::Op::CompareAndSwap(CompareAndSwap {
                    key: b("r100"),
                    expected: None,
                    new_value: Some(b("after")),
                })),
            },
            Op {
                op: Some(op::Op::Delete(Delete { key: b("r000") })),
            },
        ],
    };
    let r = c.must_write(FIRST_REGION, command);
    assert_eq!(r.outcomes[2], OpOutcome::Swapped);
    let left = pairs(c.must_read(FIRST_REGION, scan("r", Some("s"), 0, ScanOrder::Forward)));
    let keys: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected: Vec<String> = (1..10).map(|i| format!("r{i:03}")).collect();
    expected.push("r100".into());
    expected.extend((190..200).map(|i| format!("r{i:03}")));
    assert_eq!(keys, expected);
    assert_eq!(c.must_get(FIRST_REGION, b"q"), Some(b("before")));
    c.wait_applied_everywhere(b"r050", None);
    c.wait_applied_everywhere(b"r100", Some(b"after"));
}

#[test]
fn a_restarted_store_keeps_its_data_and_rejoins() {
    restarted_store_keeps_its_data_and_rejoins(RunMode::Threads);
}

#[test]
fn a_restarted_store_on_one_thread_keeps_its_data_and_rejoins() {
    restarted_store_keeps_its_data_and_rejoins(RunMode::OneThread);
}

/// The three stores take turns on one thread; the stopped one leaves it (the other two
/// go on there), and the restarted one joins it again.
#[test]
fn a_restarted_store_sharing_a_thread_keeps_its_data_and_rejoins() {
    restarted_store_keeps_its_data_and_rejoins(RunMode::Shared(shared_runner("shared-rejoin")));
}

fn shared_runner(name: &str) -> SharedRunner {
    SharedRunner::spawn(name).expect("the shared thread")
}

/// A shared thread lives while a store runs on it or a handle is kept, and ends once
/// neither is left.
#[test]
fn a_shared_thread_ends_once_its_stores_have_stopped_and_its_handles_are_gone() {
    let name = "shared-ending";
    let runner = shared_runner(name);
    let running = || {
        common::threads::thread_names(std::process::id())
            .iter()
            .any(|n| n == name)
    };
    let mut c = Cluster::start_in(RunMode::Shared(runner.clone()), 3);
    c.must_put(FIRST_REGION, b"k", b"v");
    drop(runner);
    for s in (1..=3).map(StoreId) {
        assert!(
            running(),
            "the thread ended while store {s} still ran on it"
        );
        c.stop(s);
    }
    // The cluster keeps the mode (a handle) to restart its stores with.
    assert!(
        running(),
        "the thread ended while the cluster held a handle"
    );
    drop(c);
    wait_until("the shared thread ends", || !running());
}

/// A store stopped while its disk holds a log write up writes the WAL tasks queued behind
/// that write before `shutdown` returns: a write proposed during the stall is in the log,
/// and the lone voter applies it once it is back.
fn a_stopped_store_writes_what_its_log_had_queued(mode: RunMode) {
    let mut c = Cluster::start_in(mode, 1);
    c.must_put(FIRST_REGION, b"warm", b"up");
    let store = StoreId(1);
    let epoch = c.epoch(FIRST_REGION);
    let disk = c.nodes[0].disk.clone();
    disk.stall();
    // The first write's log write waits at the disk.
    let _first = c
        .store(store)
        .propose(FIRST_REGION, epoch, put(b"a", b"va"));
    std::thread::sleep(Duration::from_millis(200));
    // The second comes behind it (on threads, the raft poller takes it meanwhile).
    let _second = c
        .store(store)
        .propose(FIRST_REGION, epoch, put(b"b", b"vb"));
    std::thread::sleep(Duration::from_millis(200));
    let stopped = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            c.store(store).shutdown();
            stopped.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !stopped.load(Ordering::SeqCst),
            "shutdown returned while a log write was held up"
        );
        disk.release();
    });
    c.stop(store);
    c.restart(store);
    assert_eq!(c.must_get(FIRST_REGION, b"b").as_deref(), Some(&b"vb"[..]));
}

#[test]
fn a_stopped_store_writes_what_its_log_writer_had_queued() {
    a_stopped_store_writes_what_its_log_had_queued(RunMode::Threads);
}

#[test]
fn a_stopped_store_on_one_thread_writes_what_its_log_had_queued() {
    a_stopped_store_writes_what_its_log_had_queued(RunMode::OneThread);
}

#[test]
fn a_stopped_store_sharing_a_thread_writes_what_its_log_had_queued() {
    a_stopped_store_writes_what_its_log_had_queued(RunMode::Shared(shared_runner("shared-queued")));
}

/// A shared thread with nothing to do blocks until something comes: over a second with
/// the stores idle (their timers still tick), it uses a small part of that second's CPU,
/// where a thread that spun would use most of it.
#[test]
fn an_idle_shared_thread_blocks() {
    let name = "shared-idle";
    let c = Cluster::start_in(RunMode::Shared(shared_runner(name)), 3);
    c.must_put(FIRST_REGION, b"k", b"v");
    let cpu =
        || common::threads::thread_cpu(std::process::id(), name).expect("the shared thread runs");
    let (before, started) = (cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu() - before;
    let elapsed = started.elapsed();
    assert!(
        used < elapsed / 4,
        "the idle shared thread used {used:?} of CPU in {elapsed:?}"
    );
    drop(c);
}

/// The shared thread wakes when a store has work, not at its idle wait's end (half a
/// second): twenty writes one after another take far less than that wait each. No
/// heartbeat is held back, so no held message cuts the thread's waits short.
#[test]
fn a_shared_thread_wakes_when_a_store_has_work() {
    let c = Cluster::start_in_with(RunMode::Shared(shared_runner("shared-wakes")), 3, |store| {
        let mut config = test_config(store);
        config.raft.heartbeat_hold = Duration::ZERO;
        config
    });
    c.must_put(FIRST_REGION, b"warm", b"up");
    let started = Instant::now();
    for i in 0..20 {
        c.must_put(FIRST_REGION, format!("k{i}").as_bytes(), b"v");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "twenty writes took {took:?}");
}

fn restarted_store_keeps_its_data_and_rejoins(mode: RunMode) {
    let mut c = Cluster::start_in(mode, 3);
    c.must_put(FIRST_REGION, b"k1", b"v1");
    let leader = c.leader_store(FIRST_REGION);
    c.stop(leader);
    // The other two elect a leader and go on.
    c.must_put(FIRST_REGION, b"k2", b"v2");
    c.restart(leader);
    c.must_put(FIRST_REGION, b"k3", b"v3");
    c.wait_applied_everywhere(b"k1", Some(b"v1"));
    c.wait_applied_everywhere(b"k2", Some(b"v2"));
    c.wait_applied_everywhere(b"k3", Some(b"v3"));
}

/// Ticks stepped stores until one leads the first region; its index.
fn stepped_leader(stores: &mut [flotilla::store::Store]) -> usize {
    for _ in 0..200 {
        for s in stores.iter() {
            s.tick();
        }
        drive(stores);
        let mut statuses: Vec<_> = stores
            .iter()
            .map(|s| s.region_status(FIRST_REGION))
            .collect();
        drive(stores);
        let leader = statuses
            .iter_mut()
            .position(|r| answer_now(r).role == Role::Leader);
        if let Some(l) = leader {
            return l;
        }
    }
    panic!("no leader after 200 ticks");
}

#[test]
fn stepped_stores_run_whole_on_the_test_thread() {
    use flotilla::store::InProcessNetwork;
    let net = InProcessNetwork::new(7);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, test_config);
    let leader = stepped_leader(&mut stores);
    let epoch = stores[leader].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut response = stores[leader].propose(FIRST_REGION, epoch, put(b"k", b"v"));
    assert!(
        response.try_take().is_none(),
        "nothing happens until the store is stepped"
    );
    drive(&mut stores);
    assert_eq!(
        response.try_take().unwrap().unwrap().outcomes,
        vec![OpOutcome::Done]
    );
    use flotilla::storage::kv::{Keyspace, KvRead};
    for n in &nodes {
        assert_eq!(n.kv.get(Keyspace::Data, b"k").unwrap(), Some(b("v")));
    }
    // A round's writes share one entry, each decided on its own, in order.
    let mut round: Vec<_> = [
        cas("x", None, Some("1")),
        cas("x", None, Some("2")),
        cas("x", Some("1"), Some("3")),
    ]
    .into_iter()
    .map(|c| stores[leader].propose(FIRST_REGION, epoch, c))
    .collect();
    drive(&mut stores);
    let answers: Vec<_> = round.iter_mut().map(answer_now).collect();
    assert!(answers.iter().all(|a| a.index == answers[0].index));
    let outcomes: Vec<_> = answers.into_iter().map(|a| a.outcomes).collect();
    assert_eq!(
        outcomes,
        vec![
            vec![OpOutcome::Swapped],
            vec![OpOutcome::Mismatch {
                current: Some(b("1"))
            }],
            vec![OpOutcome::Swapped],
        ]
    );
    for n in &nodes {
        assert_eq!(n.kv.get(Keyspace::Data, b"x").unwrap(), Some(b("3")));
    }
}

#[test]
fn membership_changes_demote_promote_and_remove_a_peer() {
    use flotilla::proto::metapb::PeerRole;
    use flotilla::store::PeerChange;
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"1");
    let leader = c.wait_leader(FIRST_REGION);
    let other = a_follower(&leader);
    let store = c.store(StoreId(leader.peer.store_id));
    let change = |ch: PeerChange| {
        let epoch = c.epoch(FIRST_REGION);
        answer(store.change_peers(FIRST_REGION, epoch, vec![ch])).expect("membership change")
    };
    let demoted = change(PeerChange::AddLearner(other)).region;
    let role = |r: &flotilla::proto::metapb::Region| {
        r.peers.iter().find(|p| p.id == other.id).map(|p| p.role)
    };
    assert_eq!(role(&demoted), Some(PeerRole::Learner as i32));
    assert_eq!(
        demoted.epoch.unwrap().conf_ver,
        leader.region.epoch.unwrap().conf_ver + 1
    );
    // The learner still receives the log.
    c.must_put(FIRST_REGION, b"k", b"2");
    c.wait_applied_everywhere(b"k", Some(b"2"));
    let promoted = change(PeerChange::AddVoter(other)).region;
    assert_eq!(role(&promoted), Some(PeerRole::Voter as i32));
    // A stale epoch is refused before anything is proposed.
    assert!(matches!(
        answer(store.change_peers(
            FIRST_REGION,
            leader.region.epoch.unwrap(),
            vec![PeerChange::Remove(other)]
        )),
        Err(RegionError::EpochNotMatch { .. })
    ));
    // So is one peer named twice in a change, and removing the leader itself.
    let epoch = c.epoch(FIRST_REGION);
    assert!(matches!(
        answer(store.change_peers(
            FIRST_REGION,
            epoch,
            vec![PeerChange::Remove(other), PeerChange::Remove(other)]
        )),
        Err(RegionError::InvalidRequest { .. })
    ));
    assert!(matches!(
        answer(store.change_peers(FIRST_REGION, epoch, vec![PeerChange::Remove(leader.peer)])),
        Err(RegionError::InvalidRequest { .. })
    ));
    let removed = change(PeerChange::Remove(other)).region;
    assert_eq!(removed.peers.len(), 2);
    // Two voters go on; every store's view of the region that still holds a peer agrees.
    c.must_put(FIRST_REGION, b"k", b"3");
    assert_eq!(c.must_get(FIRST_REGION, b"k"), Some(b("3")));
    for p in &removed.peers {
        let st = answer(c.store(StoreId(p.store_id)).region_status(FIRST_REGION)).unwrap();
        assert_eq!(st.region.peers.len(), 2);
    }
}

/// Requests in flight when their leader's store stops are answered all the same: each
/// response resolves, none hangs, none is answered twice (a response resolves once).
#[test]
fn every_request_is_answered_when_the_leader_stops_under_load() {
    every_request_answered_when_the_leader_stops_under_load(RunMode::Threads);
}

#[test]
fn every_request_is_answered_when_a_leader_on_one_thread_stops_under_load() {
    every_request_answered_when_the_leader_stops_under_load(RunMode::OneThread);
}

#[test]
fn every_request_is_answered_when_a_leader_sharing_a_thread_stops_under_load() {
    every_request_answered_when_the_leader_stops_under_load(RunMode::Shared(shared_runner(
        "shared-stop",
    )));
}

fn every_request_answered_when_the_leader_stops_under_load(mode: RunMode) {
    let mut c = Cluster::start_in(mode, 3);
    c.must_put(FIRST_REGION, b"warm", b"up");
    let leader = c.leader_store(FIRST_REGION);
    let epoch = c.epoch(FIRST_REGION);
    let mut responses = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        responses.push(
            c.store(leader)
                .propose(FIRST_REGION, epoch, put(key.as_bytes(), b"v")),
        );
    }
    c.stop(leader);
    let mut applied = Vec::new();
    let mut failed = 0;
    for (i, r) in responses.into_iter().enumerate() {
        match answer(r) {
            Ok(_) => applied.push(format!("k{i}")),
            Err(
                RegionError::ProposalDropped { .. }
                | RegionError::NotLeader { .. }
                | RegionError::StaleCommand { .. },
            ) => failed += 1,
            Err(e) => panic!("unexpected answer {e}"),
        }
    }
    assert_eq!(applied.len() + failed, 200);
    // What was answered as applied survives the leader's loss.
    for key in &applied {
        assert_eq!(
            c.must_get(FIRST_REGION, key.as_bytes()),
            Some(b("v")),
            "{key}"
        );
    }
    c.must_put(FIRST_REGION, b"after", b"stop");
}

/// Marks store `store`'s replica of region 1 (the store stopped) as an install a crash
/// interrupted, naming a snapshot whose files are gone: the store voids it on open.
fn void_on_next_open(c: &Cluster, store: StoreId, region: flotilla::proto::metapb::Region) {
    use flotilla::proto::storagepb::{PeerState, RegionLocalState, SnapshotSummary};
    use flotilla::storage::kv::{KvEngine, KvWriteBatch};
    use flotilla::storage::region_meta::put_region_state;
    let kv = &c.nodes[store.get() as usize - 1].kv;
    let mut batch = KvWriteBatch::default();
    put_region_state(
        &mut batch,
        &RegionLocalState {
            region: Some(region),
            state: PeerState::Applying as i32,
            applying: Some(SnapshotSummary {
                index: 1_000,
                term: 1_000,
                ..Default::default()
            }),
        },
    );
    kv.write(&batch).unwrap();
    kv.persist().unwrap();
}

/// A crash in the middle of a snapshot install whose files are then lost leaves a region
/// whose data the store voids when it opens (its range cleared, its state `Applying` with
/// no snapshot). Its replica starts all the same with its log and vote, asks its leader for
/// a snapshot, applies nothing until it installs one, and follows the log after.
#[test]
fn a_replica_whose_data_was_voided_on_restart_is_rebuilt_from_a_snapshot_it_asks_for() {
    use flotilla::proto::storagepb::PeerState;
    use flotilla::storage::kv::{Keyspace, KvRead};
    use flotilla::storage::region_meta::region_state;
    let mut c = Cluster::start(3);
    for i in 0..50 {
        c.must_put(FIRST_REGION, format!("k{i:02}").as_bytes(), b"v");
    }
    c.wait_applied_everywhere(b"k49", Some(b"v"));
    let third = StoreId(3);
    let region = c.store(third).region(FIRST_REGION).unwrap();
    c.stop(third);
    void_on_next_open(&c, third, region);
    let kv = c.nodes[2].kv.clone();

    // Voided on open: while no snapshot can reach it, it waits and applies nothing.
    c.must_put(FIRST_REGION, b"while", b"down");
    let held = c.net.add_fault(flotilla::store::Fault::DropType(
        flotilla::proto::raftpb::MessageType::MsgSnapshot,
    ));
    c.restart(third);
    assert_eq!(kv.scan(Keyspace::Data, b"", None, false).count(), 0);
    let status = answer(c.store(third).region_status(FIRST_REGION)).unwrap();
    assert!(status.awaiting_snapshot);
    c.must_put(FIRST_REGION, b"still", b"waiting");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(kv.scan(Keyspace::Data, b"", None, false).count(), 0);
    // Rebuilt by a snapshot the leader makes for it.
    c.net.remove_fault(held);
    c.wait_applied_everywhere(b"while", Some(b"down"));
    c.wait_applied_everywhere(b"k00", Some(b"v"));
    let data = kv.scan(Keyspace::Data, b"", None, false).count();
    assert_eq!(data, 52);
    let state = region_state(kv.as_ref(), FIRST_REGION).unwrap().unwrap();
    assert_eq!(state.state, PeerState::Normal as i32);
    let status = answer(c.store(third).region_status(FIRST_REGION)).unwrap();
    assert!(!status.awaiting_snapshot);
    // And it follows the log again.
    c.must_put(FIRST_REGION, b"after", b"rebuilt");
    c.wait_applied_everywhere(b"after", Some(b"rebuilt"));
}

/// The same, with the region asleep when the voided replica comes back: it cannot
/// campaign (the way a restarted replica wakes a sleeping leader), so it signals its peers
/// to wake, and the leader hears its request.
#[test]
fn a_voided_replica_wakes_its_sleeping_region_to_be_rebuilt() {
    use flotilla::proto::storagepb::PeerState;
    use flotilla::storage::region_meta::region_state;
    let mut c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    c.wait_applied_everywhere(b"k", Some(b"v"));
    let asleep = |c: &Cluster, store: u64| {
        answer(c.store(StoreId(store)).region_status(FIRST_REGION)).is_ok_and(|st| st.hibernated)
    };
    wait_until("the region sleeps", || (1..=3).all(|s| asleep(&c, s)));
    let third = StoreId(3);
    let region = c.store(third).region(FIRST_REGION).unwrap();
    c.stop(third);
    void_on_next_open(&c, third, region);
    let kv = c.nodes[2].kv.clone();
    assert!(asleep(&c, 1) && asleep(&c, 2), "still asleep");
    c.restart(third);
    c.wait_applied_everywhere(b"k", Some(b"v"));
    let state = region_state(kv.as_ref(), FIRST_REGION).unwrap().unwrap();
    assert_eq!(state.state, PeerState::Normal as i32);
}

/// Voided while its region removed it: it never applies its removal (it applies nothing
/// until a snapshot), and the leader no longer talks to it; its calls for a snapshot are
/// answered with a tombstone, so it ends, and the region can take the store back.
#[test]
fn a_voided_replica_the_region_removed_meanwhile_ends() {
    use flotilla::proto::metapb::{Peer, PeerRole};
    use flotilla::proto::storagepb::PeerState;
    use flotilla::storage::region_meta::region_state;
    use flotilla::store::PeerChange;
    let mut c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    c.wait_applied_everywhere(b"k", Some(b"v"));
    let third = StoreId(3);
    let region = c.store(third).region(FIRST_REGION).unwrap();
    let gone = *region.peers.iter().find(|p| p.store_id == 3).unwrap();
    c.stop(third);
    void_on_next_open(&c, third, region);
    let change = |c: &Cluster, ch: PeerChange| {
        c.on_leader(FIRST_REGION, |s, epoch| {
            s.change_peers(FIRST_REGION, epoch, vec![ch])
        })
    };
    change(&c, PeerChange::Remove(gone));
    c.restart(third);
    let kv = c.nodes[2].kv.clone();
    wait_until("the voided, removed replica lives on", || {
        region_state(kv.as_ref(), FIRST_REGION)
            .unwrap()
            .is_some_and(|s| s.state == PeerState::Tombstone as i32)
    });
    let returning = Peer {
        id: 30,
        store_id: 3,
        role: PeerRole::Learner as i32,
    };
    change(&c, PeerChange::AddLearner(returning));
    c.wait_applied_everywhere(b"k", Some(b"v"));
    let st = answer(c.store(third).region_status(FIRST_REGION)).unwrap();
    assert_eq!(st.peer.id, 30);
}

/// A peer added on a store that holds nothing of the region is created by the leader's
/// first message, receives the region by snapshot (generated from the leader's applied
/// state, sent as files, installed, its log reset), then follows the log; promoted, it
/// votes; and the region goes on when an old peer is removed.
#[test]
fn a_peer_added_on_an_empty_store_catches_up_by_snapshot() {
    use flotilla::proto::metapb::{Peer, PeerRole};
    use flotilla::store::PeerChange;
    let c = Cluster::start_spare(3, 1, test_config);
    for i in 0..100 {
        c.must_put(FIRST_REGION, format!("k{i:03}").as_bytes(), b"v");
    }
    let newcomer = Peer {
        id: 4,
        store_id: 4,
        role: PeerRole::Learner as i32,
    };
    let change = |ch: PeerChange| {
        c.on_leader(FIRST_REGION, |s, epoch| {
            s.change_peers(FIRST_REGION, epoch, vec![ch])
        })
    };
    change(PeerChange::AddLearner(newcomer));
    c.wait_applied_everywhere(b"k099", Some(b"v"));
    // The learner follows the log after its snapshot.
    c.must_put(FIRST_REGION, b"after", b"snapshot");
    c.wait_applied_everywhere(b"after", Some(b"snapshot"));
    let st = answer(c.store(StoreId(4)).region_status(FIRST_REGION)).unwrap();
    assert_eq!(
        st.region.peers.len(),
        4,
        "the new peer knows the region from its snapshot"
    );
    assert!(c.store(StoreId(4)).region_for_key(b"k050").is_some());
    // It came by snapshot: the leader generated one; the newcomer's copy went once installed.
    let leader_store = c.leader_store(FIRST_REGION);
    let files = |store: u64, sub: &str| {
        std::fs::read_dir(c.nodes[store as usize - 1].dir.path().join(sub))
            .unwrap()
            .count()
    };
    assert!(files(leader_store.get(), "generated") >= 1);
    assert_eq!(files(4, "received"), 0);
    change(PeerChange::AddVoter(newcomer));
    // Remove one of the original voters that does not lead.
    let leader = c.wait_leader(FIRST_REGION);
    let old = *leader
        .region
        .peers
        .iter()
        .find(|p| p.id != leader.peer.id && p.id != 4)
        .unwrap();
    change(PeerChange::Remove(old));
    c.must_put(FIRST_REGION, b"last", b"write");
    assert_eq!(c.must_get(FIRST_REGION, b"last"), Some(b("write")));
    let st = answer(c.store(StoreId(4)).region_status(FIRST_REGION)).unwrap();
    assert_eq!(st.region.peers.len(), 3);
}

/// A removed peer ends: by applying its removal, or — when the leader stopped talking to
/// it before it learned the change committed — by the tombstone message a current
/// replica answers its campaign with. Its region becomes a tombstone on its store, its data
/// is cleared, stale messages do not bring it back; re-added under a new id, it is created
/// again and catches up by snapshot.
#[test]
fn a_removed_peer_is_destroyed_and_can_be_added_back() {
    use flotilla::proto::metapb::{Peer, PeerRole};
    use flotilla::proto::storagepb::PeerState;
    use flotilla::storage::kv::{Keyspace, KvRead};
    use flotilla::storage::region_meta::region_state;
    use flotilla::store::PeerChange;
    let c = Cluster::start(3);
    for i in 0..20 {
        c.must_put(FIRST_REGION, format!("k{i:02}").as_bytes(), b"v");
    }
    c.wait_applied_everywhere(b"k19", Some(b"v"));
    let leader = c.wait_leader(FIRST_REGION);
    let victim = a_follower(&leader);
    let change = |ch: PeerChange| {
        c.on_leader(FIRST_REGION, |s, epoch| {
            s.change_peers(FIRST_REGION, epoch, vec![ch])
        })
    };
    change(PeerChange::Remove(victim));
    let store = StoreId(victim.store_id);
    let gone = || {
        matches!(
            answer(c.store(store).region_status(FIRST_REGION)),
            Err(RegionError::RegionNotFound { .. })
        )
    };
    wait_until("the removed peer lives on", gone);
    let node = &c.nodes[victim.store_id as usize - 1];
    // The data is cleared after the tombstone: wait for the apply delegate to finish.
    wait_until("the removed region's data stays", || {
        node.kv.get(Keyspace::Data, b"k00").unwrap().is_none()
    });
    let state = region_state(node.kv.as_ref(), FIRST_REGION)
        .unwrap()
        .unwrap();
    assert_eq!(state.state, PeerState::Tombstone as i32);
    assert_eq!(
        node.kv.scan(Keyspace::Data, b"", None, false).count(),
        0,
        "every key of the region is cleared"
    );
    assert!(c.store(store).region_for_key(b"k05").is_none());
    // Its log is dropped, its term and vote kept: a replica re-added under its old id
    // must never vote twice in a term.
    {
        use flotilla::storage::raft_log::RaftLogStore;
        let kept = node.log.local_state(FIRST_REGION).unwrap().expect("kept");
        assert_eq!((kept.last_index, kept.last_term), (0, 0));
        let hard = kept.hard_state.expect("the hard state is kept");
        assert_eq!(hard.commit, 0);
        assert!(hard.term >= leader.term, "{hard:?}");
        let span = node.log.span(FIRST_REGION);
        assert!(span.and_then(|s| s.entries()).is_none(), "{span:?}");
    }
    // The leader's heartbeats and the old peer's own traffic do not bring it back.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(gone());
    // Re-added under a new id, at a newer membership: created again, filled by snapshot.
    let returning = Peer {
        id: 9,
        store_id: victim.store_id,
        role: PeerRole::Learner as i32,
    };
    change(PeerChange::AddLearner(returning));
    c.wait_applied_everywhere(b"k19", Some(b"v"));
    let st = answer(c.store(store).region_status(FIRST_REGION)).unwrap();
    assert_eq!(st.peer.id, 9);
}

/// A peer cut off while its removal commits never applies it: it learns its end from the
/// tombstone message a current replica answers its campaign with, once the partition heals.
#[test]
fn a_peer_that_missed_its_removal_learns_it_from_a_tombstone_message() {
    use flotilla::store::{Fault, PeerChange};
    use std::collections::HashSet;
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    c.wait_applied_everywhere(b"k", Some(b"v"));
    let leader = c.wait_leader(FIRST_REGION);
    let victim = a_follower(&leader);
    let others: HashSet<StoreId> = (1..=3)
        .map(StoreId)
        .filter(|s| s.get() != victim.store_id)
        .collect();
    let cut = c.net.add_fault(Fault::Partition(vec![
        others,
        HashSet::from([StoreId(victim.store_id)]),
    ]));
    c.on_leader(FIRST_REGION, |s, epoch| {
        s.change_peers(FIRST_REGION, epoch, vec![PeerChange::Remove(victim)])
    });
    // Still there, cut off, with the old membership.
    let store = StoreId(victim.store_id);
    let st = answer(c.store(store).region_status(FIRST_REGION)).unwrap();
    assert_eq!(st.region.peers.len(), 3);
    c.net.remove_fault(cut);
    wait_until("the removed peer lives on", || {
        answer(c.store(store).region_status(FIRST_REGION)).is_err()
    });
    c.must_put(FIRST_REGION, b"k", b"w");
    assert_eq!(c.must_get(FIRST_REGION, b"k"), Some(b("w")));
}

/// Log GC: each store compacts a region's log up to what it applied, recording the
/// truncation durably first; a follower that was away past the compacted log catches up by
/// snapshot; a store restarted after GC serves from its truncated log.
#[test]
fn log_gc_compacts_and_a_follower_behind_it_catches_up_by_snapshot() {
    use flotilla::storage::log_gc::GcPolicy;
    let mut c = Cluster::start_with(3, |s| {
        let mut cfg = test_config(s);
        cfg.log_gc = GcPolicy {
            max_follower_lag: 10,
            min_entries: 5,
        };
        // Rounds run when the test says.
        cfg.log_gc_interval = std::time::Duration::from_secs(3600);
        cfg
    });
    c.must_put(FIRST_REGION, b"warm", b"up");
    let leader = c.leader_store(FIRST_REGION);
    let away = (1..=3).map(StoreId).find(|&s| s != leader).unwrap();
    c.stop(away);
    for i in 0..50 {
        c.must_put(FIRST_REGION, format!("k{i:02}").as_bytes(), b"v");
    }
    let first_index = |c: &Cluster, s: StoreId| {
        answer(c.store(s).region_status(FIRST_REGION))
            .unwrap()
            .first_index
    };
    let before = first_index(&c, leader);
    for s in c.running() {
        s.log_gc();
    }
    wait_until("log GC never compacted the leader's log", || {
        first_index(&c, leader) > before + 40
    });
    c.restart(away);
    c.wait_applied_everywhere(b"k49", Some(b"v"));
    let generated = std::fs::read_dir(
        c.nodes[leader.get() as usize - 1]
            .dir
            .path()
            .join("generated"),
    )
    .unwrap()
    .count();
    assert!(
        generated >= 1,
        "the returning follower was caught up by snapshot"
    );
    // A store restarted after GC builds its log from the truncation its apply state holds.
    c.stop(leader);
    c.restart(leader);
    c.must_put(FIRST_REGION, b"after", b"restart");
    c.wait_applied_everywhere(b"after", Some(b"restart"));
    assert!(first_index(&c, leader) > before + 40);
    assert_eq!(c.must_get(FIRST_REGION, b"k00"), Some(b("v")));
}

/// A move with joint consensus: a learner on a spare store is promoted and a voter demoted
/// in one change. While joint, both halves must agree — with the new half cut off the
/// joint state cannot be left, and a leader store restarted then comes back joint (its
/// region's roles rebuild the core's configuration). Healed, the core leaves the joint
/// state by itself; the demoted learner is then removed and destroys itself.
#[test]
fn a_joint_change_moves_a_voter_and_outlives_a_restart_while_joint() {
    use flotilla::proto::metapb::{Peer, PeerRole, Region};
    use flotilla::store::{Fault, PeerChange};
    use std::collections::HashSet;
    use std::time::Duration;
    let mut c = Cluster::start_spare(3, 1, test_config);
    c.must_put(FIRST_REGION, b"k", b"1");
    let newcomer = Peer {
        id: 4,
        store_id: 4,
        role: PeerRole::Learner as i32,
    };
    c.on_leader(FIRST_REGION, |s, epoch| {
        s.change_peers(FIRST_REGION, epoch, vec![PeerChange::AddLearner(newcomer)])
    });
    c.wait_applied_everywhere(b"k", Some(b"1"));
    let leader = c.wait_leader(FIRST_REGION);
    let store_of = |p: &Peer| StoreId(p.store_id);
    let others: Vec<Peer> = leader
        .region
        .peers
        .iter()
        .filter(|p| p.id != leader.peer.id && p.id != newcomer.id)
        .copied()
        .collect();
    let (demoted, kept) = (others[0], others[1]);
    let leader_store = store_of(&leader.peer);
    // The old half (leader, demoted, kept) commits the change with the leader and the
    // demoted voter; the new half (leader, kept, newcomer) then has only the leader.
    let cut = c.net.add_fault(Fault::Partition(vec![
        HashSet::from([leader_store, store_of(&demoted)]),
        HashSet::from([store_of(&kept), StoreId(4)]),
    ]));
    let entered = answer(c.store(leader_store).change_peers(
        FIRST_REGION,
        leader.region.epoch.unwrap(),
        vec![
            PeerChange::AddVoter(newcomer),
            PeerChange::AddLearner(demoted),
        ],
    ))
    .expect("entering the joint state")
    .region;
    let role = |r: &Region, p: &Peer| {
        r.peers
            .iter()
            .find(|q| q.id == p.id)
            .and_then(|q| PeerRole::try_from(q.role).ok())
    };
    assert_eq!(role(&entered, &newcomer), Some(PeerRole::IncomingVoter));
    assert_eq!(role(&entered, &demoted), Some(PeerRole::DemotingVoter));
    assert_eq!(role(&entered, &kept), Some(PeerRole::Voter));
    // Another change waits for the joint state to be left.
    assert!(
        answer(c.store(leader_store).change_peers(
            FIRST_REGION,
            entered.epoch.unwrap(),
            vec![PeerChange::Remove(demoted)],
        ))
        .is_err()
    );
    c.stop(leader_store);
    c.restart(leader_store);
    let joint_on = |c: &Cluster, s: StoreId| {
        answer(c.store(s).region_status(FIRST_REGION))
            .is_ok_and(|st| role(&st.region, &newcomer) == Some(PeerRole::IncomingVoter))
    };
    wait_until("the restarted store is joint", || {
        joint_on(&c, leader_store)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        joint_on(&c, leader_store) && joint_on(&c, store_of(&demoted)),
        "the new half is cut off: the joint state cannot be left"
    );
    c.net.remove_fault(cut);
    let settled = |c: &Cluster| {
        (1..=4).map(StoreId).all(|s| {
            answer(c.store(s).region_status(FIRST_REGION)).is_ok_and(|st| {
                role(&st.region, &newcomer) == Some(PeerRole::Voter)
                    && role(&st.region, &demoted) == Some(PeerRole::Learner)
                    && st.region.epoch.unwrap().conf_ver == entered.epoch.unwrap().conf_ver + 1
            })
        })
    };
    wait_until("every replica left the joint state", || settled(&c));
    c.must_put(FIRST_REGION, b"k", b"2");
    c.wait_applied_everywhere(b"k", Some(b"2"));
    let removed = c
        .on_leader(FIRST_REGION, |s, epoch| {
            s.change_peers(FIRST_REGION, epoch, vec![PeerChange::Remove(demoted)])
        })
        .region;
    assert_eq!(removed.peers.len(), 3);
    wait_until("the removed learner is destroyed", || {
        answer(c.store(store_of(&demoted)).region_status(FIRST_REGION)).is_err()
    });
    c.must_put(FIRST_REGION, b"k", b"3");
    assert_eq!(c.must_get(FIRST_REGION, b"k"), Some(b("3")));
}

/// A write whose entry is exactly the size limit is taken; one byte more is refused with
/// `EntryTooLarge` naming both, and changes nothing. The size is the whole entry's: the
/// command wrapped as a one-write batch with the region and epoch it was checked against.
#[test]
fn a_write_up_to_the_entry_size_limit_is_taken_and_one_byte_more_is_not() {
    use flotilla::proto::commandpb::{RaftCommand, WriteBatch, raft_command};
    use flotilla::store::bootstrap_region;
    use prost::Message as _;
    let node = Node::new();
    let region = first_region(1);
    bootstrap_region(&engines(&node), &region).unwrap();
    let entry_size = |value_len: usize| {
        RaftCommand {
            region_id: region.id,
            epoch: region.epoch,
            body: Some(raft_command::Body::Writes(WriteBatch {
                commands: vec![put(b"k", &vec![b'v'; value_len])],
            })),
        }
        .encoded_len() as u64
    };
    let limit = entry_size(300);
    let mut cfg = test_config(StoreId(1));
    cfg.raft.max_entry_size = limit;
    let mut store = open_stepped(&node, cfg);
    elect_stepped(&mut store);
    let epoch = region.epoch.unwrap();
    let mut fits = store.propose(FIRST_REGION, epoch, put(b"k", &[b'v'; 300]));
    let mut over = store.propose(FIRST_REGION, epoch, put(b"k", &[b'w'; 301]));
    store.run_until_idle();
    answer_now(&mut fits);
    match over.try_take() {
        Some(Err(RegionError::EntryTooLarge { size, limit: l })) => {
            assert_eq!((size, l), (entry_size(301), limit));
        }
        other => panic!("one byte over the limit answered {other:?}"),
    }
    let mut read = store.read(FIRST_REGION, epoch, ReadRequest::Get { key: b("k") });
    store.run_until_idle();
    match answer_now(&mut read) {
        ReadResponse::Value(v) => assert_eq!(v, Some(Bytes::from(vec![b'v'; 300]))),
        other => panic!("read answered {other:?}"),
    }
}

/// A write taken in a round whose later messages depose the leader (here the vote request
/// of the peer it hands leadership to) is answered `NotLeader` at the round's end, not
/// proposed and not left unanswered.
#[test]
fn a_write_taken_in_the_round_that_deposes_the_leader_gets_not_leader() {
    use flotilla::store::InProcessNetwork;
    let net = InProcessNetwork::new(11);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, test_config);
    let leader = stepped_leader(&mut stores);
    let to = (leader + 1) % 3;
    let epoch = stores[leader].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut started = stores[leader].transfer_leader(FIRST_REGION, epoch, PeerId(to as u64 + 1));
    stores[leader].run_until_idle();
    answer_now(&mut started);
    // Queued before the vote request the transferee is about to send.
    let mut write = stores[leader].propose(FIRST_REGION, epoch, put(b"k", b"v"));
    stores[to].run_until_idle();
    assert!(write.try_take().is_none(), "not taken yet");
    stores[leader].run_until_idle();
    match write.try_take() {
        Some(Err(RegionError::NotLeader { .. })) => {}
        other => panic!("the write answered {other:?}"),
    }
    drive(&mut stores);
}

/// New region ids are the caller's until placement allocates them: a split naming one this
/// store already holds is refused before it reaches the log.
#[test]
fn a_split_naming_a_region_the_store_holds_is_refused() {
    let c = Cluster::start(3);
    let ids = c.split_first_region(2, |i| format!("m{i}"));
    let (kept, other) = (ids[0], ids[1]);
    let reused = SplitRequest {
        split_key: b("c"),
        new_region_id: other.0,
        new_peer_ids: vec![41, 42, 43],
    };
    let epoch = c.epoch(kept);
    let store = c.store(c.leader_store(kept));
    match answer(store.split(kept, epoch, vec![reused])) {
        Err(RegionError::InvalidRequest { .. }) => {}
        other => panic!("a split reusing a region id answered {other:?}"),
    }
    assert_eq!(c.epoch(kept), epoch, "nothing changed");
}

/// A store that stops answers the reads still waiting on its leaders with `StoreStopping`
/// (here a new leader's read, which waits for the first commit of its term).
#[test]
fn a_read_waiting_when_its_store_stops_gets_store_stopping() {
    use flotilla::region::DroppedReason;
    use flotilla::store::InProcessNetwork;
    let net = InProcessNetwork::new(13);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, test_config);
    let old = stepped_leader(&mut stores);
    let (new, third) = ((old + 1) % 3, (old + 2) % 3);
    let epoch = stores[old].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut started = stores[old].transfer_leader(FIRST_REGION, epoch, PeerId(new as u64 + 1));
    stores[old].run_until_idle();
    answer_now(&mut started);
    stores[new].run_until_idle(); // campaigns
    stores[old].run_until_idle(); // votes
    stores[third].run_until_idle();
    stores[new].run_until_idle(); // leads; its term's first entry is not committed yet
    let mut status = stores[new].region_status(FIRST_REGION);
    let mut read = stores[new].read(FIRST_REGION, epoch, ReadRequest::Get { key: b("k") });
    stores[new].run_until_idle();
    assert_eq!(answer_now(&mut status).role, Role::Leader);
    assert!(
        read.try_take().is_none(),
        "waits for its term's first commit"
    );
    stores.remove(new).shutdown();
    match read.try_take() {
        Some(Err(RegionError::ProposalDropped {
            reason: DroppedReason::StoreStopping,
            ..
        })) => {}
        other => panic!("the waiting read answered {other:?}"),
    }
}

/// Steps each store one poller at a time (raft, WAL, apply) until `response` is
/// answered, looking at it after every step.
fn step_until_answered<T>(
    stores: &mut [flotilla::store::Store],
    response: &mut flotilla::store::Response<T>,
) -> flotilla::store::RegionResult<T> {
    for _ in 0..10_000 {
        for s in stores.iter_mut() {
            for step in 0..3 {
                match step {
                    0 => drop(s.step_raft()),
                    1 => drop(s.step_wal()),
                    _ => drop(s.step_apply()),
                }
                if let Some(answer) = response.try_take() {
                    return answer;
                }
            }
        }
    }
    panic!("never answered");
}

/// Three stepped stores on `nodes` with a leader of region 1, asked (not yet stepped) to
/// split it at "m" into region 2 with peers 21–23: the stores, the leader's index, the
/// region's epoch before the split, and the split's answer to come.
fn stepped_split(
    net: &flotilla::store::InProcessNetwork,
    nodes: &[Node],
    config: impl Fn(StoreId) -> flotilla::store::StoreConfig,
) -> (
    Vec<flotilla::store::Store>,
    usize,
    RegionEpoch,
    flotilla::store::Response<flotilla::store::SplitResponse>,
) {
    let mut stores = stepped_stores(net, nodes, config);
    let leader = stepped_leader(&mut stores);
    let epoch = stores[leader].region(FIRST_REGION).unwrap().epoch.unwrap();
    let split = stores[leader].split(
        FIRST_REGION,
        epoch,
        vec![SplitRequest {
            split_key: b("m"),
            new_region_id: 2,
            new_peer_ids: vec![21, 22, 23],
        }],
    );
    (stores, leader, epoch, split)
}

/// A write proposed in the same round as a split, with the epoch from before it, passes
/// the proposal's checks (the split is not applied yet) and is refused where it is
/// applied, after the split: `EpochNotMatch`, with nothing written.
#[test]
fn a_write_behind_a_split_in_the_log_is_refused_at_apply() {
    let net = flotilla::store::InProcessNetwork::new(17);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, leader, epoch, mut split) = stepped_split(&net, &nodes, test_config);
    let mut write = stores[leader].propose(FIRST_REGION, epoch, put(b"a", b"v"));
    drive(&mut stores);
    assert_eq!(answer_now(&mut split).regions.len(), 2);
    match write.try_take() {
        Some(Err(RegionError::EpochNotMatch { current })) => {
            // The region holding the key, at the epoch the split gave it.
            assert_eq!(current[0].epoch.unwrap().version, epoch.version + 1);
        }
        other => panic!("the write answered {other:?}"),
    }
    let new_epoch = stores[leader].region(FIRST_REGION).unwrap().epoch.unwrap();
    let mut read = stores[leader].read(FIRST_REGION, new_epoch, ReadRequest::Get { key: b("a") });
    drive(&mut stores);
    assert_eq!(answer_now(&mut read), ReadResponse::Value(None));
}

/// A split is answered once the new region runs on the store that answers: whoever
/// asked finds it there at once (`flotilla ctl region show` right after `region split`
/// was answered "region not found" while the new peer was still being started). Each
/// store is stepped one poller at a time, and the answer looked at after every step.
#[test]
fn the_split_answer_comes_after_the_new_region_runs_on_the_leader_store() {
    let net = flotilla::store::InProcessNetwork::new(23);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, leader, _, mut split) = stepped_split(&net, &nodes, test_config);
    let new_region = RegionId(2);
    let answered = step_until_answered(&mut stores, &mut split).expect("split");
    assert_eq!(answered.regions[1].id, new_region.get());
    assert!(
        stores[leader].region(new_region).is_some(),
        "answered before the new region was recorded"
    );
    // Routed to the new peer (an unknown region is refused at once, unanswered by it).
    let mut status = stores[leader].region_status(new_region);
    assert!(
        !matches!(
            status.try_take(),
            Some(Err(RegionError::RegionNotFound { .. }))
        ),
        "answered before the new region's peer was started"
    );
    drive(&mut stores);
    assert_eq!(answer_now(&mut status).region.id, new_region.get());
}

/// A membership change was answered with the apply batch, before the leader's peer took
/// it in: a request routed at once with the new epoch found the old one there and was
/// refused `EpochNotMatch` (`tests/server_api.rs` failed so in a CI run). Each store is
/// stepped one poller at a time, and the answer looked at after every step.
#[test]
fn a_membership_change_is_answered_once_the_leader_took_it_in() {
    use flotilla::store::PeerChange;
    let net = flotilla::store::InProcessNetwork::new(29);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let mut stores = stepped_stores(&net, &nodes, test_config);
    let leader = stepped_leader(&mut stores);
    let region = stores[leader].region(FIRST_REGION).unwrap();
    let follower = *region
        .peers
        .iter()
        .find(|p| p.store_id != leader as u64 + 1)
        .unwrap();
    let mut removed = stores[leader].change_peers(
        FIRST_REGION,
        region.epoch.unwrap(),
        vec![PeerChange::Remove(follower)],
    );
    let answered = step_until_answered(&mut stores, &mut removed).expect("change peers");
    let here = stores[leader].region(FIRST_REGION).unwrap();
    assert_eq!(
        here.epoch, answered.region.epoch,
        "answered before the leader took the change in"
    );
}

/// A store that stops mid-round drops the split answer it held for the peer then and
/// there — its outcome unknown — rather than keeping it until shutdown. Every applied
/// entry is written at once here (a 1-byte apply batch), and the leader's KV engine loses
/// power after the split is committed: the write after the split's entry fails.
#[test]
fn a_store_stopped_mid_round_drops_a_split_answer_it_held_at_once() {
    use flotilla::region::DroppedReason;
    let net = flotilla::store::InProcessNetwork::new(29);
    let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let (mut stores, leader, _, mut split) = stepped_split(&net, &nodes, |id| {
        let mut cfg = test_config(id);
        cfg.max_apply_batch_bytes = 1;
        cfg
    });
    // Everything but the leader's apply, until nothing moves: the split is committed.
    for _ in 0..50 {
        for (i, s) in stores.iter_mut().enumerate() {
            s.step_raft();
            s.step_wal();
            if i != leader {
                s.step_apply();
            }
        }
    }
    assert!(split.try_take().is_none(), "not applied on the leader yet");
    nodes[leader].kv.cut_power();
    stores[leader].step_apply();
    assert!(stores[leader].failure().is_some(), "the store stopped");
    match split.try_take() {
        Some(Err(RegionError::ProposalDropped {
            reason: DroppedReason::Unanswered,
            ..
        })) => {}
        other => panic!("the split answered {other:?} before shutdown"),
    }
}

/// The apply poller publishes the applied index for the peer to read when it next runs;
/// it sends the peer a message only when a read waits for that index, so a write with no
/// read waiting costs the peer no extra visit, and a waiting read is served by the raft
/// round right after the apply round that reached its index.
#[test]
fn apply_wakes_the_peer_only_for_a_read_waiting_on_its_index() {
    use flotilla::store::batch::PollOutcome;
    let node = Node::new();
    let mut store = lone_stepped_leader(&node);
    let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();

    // A write committed, not yet applied, and a read of its key confirmed meanwhile.
    let mut write = store.propose(FIRST_REGION, epoch, put(b"k", b"1"));
    settle_all_but_apply(&mut store);
    let mut read = store.read(FIRST_REGION, epoch, ReadRequest::Get { key: b("k") });
    settle_all_but_apply(&mut store);
    assert!(write.try_take().is_none(), "not applied yet");
    assert!(read.try_take().is_none(), "waits for the write's index");
    assert!(matches!(store.step_apply(), Some(PollOutcome::Handled(_))));
    let index = answer_now(&mut write).index;
    assert!(
        read.try_take().is_none(),
        "served by the peer, not by apply"
    );
    assert!(
        matches!(store.step_raft(), Some(PollOutcome::Handled(_))),
        "told: a read waits"
    );
    assert_eq!(answer_now(&mut read), ReadResponse::Value(Some(b("1"))));

    // A write with no read waiting: applied, and the peer is not visited for it.
    let mut second = store.propose(FIRST_REGION, epoch, put(b"k", b"2"));
    settle_all_but_apply(&mut store);
    assert!(matches!(store.step_apply(), Some(PollOutcome::Handled(_))));
    let second_index = answer_now(&mut second).index;
    assert!(second_index > index);
    assert_eq!(store.step_raft(), Some(PollOutcome::Empty), "not told");
    // It reads the index when it next runs.
    let mut status = store.region_status(FIRST_REGION);
    store.run_until_idle();
    assert_eq!(answer_now(&mut status).applied_index, second_index);
}

/// Three one-thread stores without hibernation (waking alone voids a lease), ticking
/// every `tick`.
fn awake_one_thread_cluster(tick: std::time::Duration) -> Cluster {
    Cluster::start_in_with(RunMode::OneThread, 3, move |s| {
        let mut cfg = test_config(s);
        cfg.raft.tick_interval = tick;
        cfg.hibernation.idle_ticks = None;
        cfg
    })
}

/// The first region's leader, after `k` = 1 is written: its store, status and epoch.
fn leader_after_first_write(c: &Cluster) -> (StoreId, flotilla::store::RegionStatus, RegionEpoch) {
    c.must_put(FIRST_REGION, b"k", b"1");
    let status = c.wait_leader(FIRST_REGION);
    let epoch = status.region.epoch.unwrap();
    (StoreId(status.peer.store_id), status, epoch)
}

/// Cuts every message to `old` (the first region's leader), blocks its store's one thread
/// in the WAL write of a proposal, and waits until the other two have elected a new
/// leader and taken `k` = 2. Returns the epoch.
fn stall_leader_until_replaced(
    c: &Cluster,
    old: StoreId,
    status: &flotilla::store::RegionStatus,
) -> RegionEpoch {
    use flotilla::store::Fault;
    use std::time::Duration;
    let epoch = status.region.epoch.unwrap();
    let others: Vec<StoreId> = (1..=3).map(StoreId).filter(|&s| s != old).collect();
    for &o in &others {
        c.net.add_fault(Fault::DropLink { from: o, to: old });
    }
    c.nodes[old.get() as usize - 1].disk.stall();
    let _stuck = c
        .store(old)
        .propose(FIRST_REGION, epoch, put(b"k", b"stuck"));
    // (The stalled store answers nothing: only the others are asked.)
    let (new, epoch) = loop {
        let elected = others.iter().find_map(|&s| {
            answer(c.store(s).region_status(FIRST_REGION))
                .ok()
                .filter(|st| st.role == Role::Leader && st.term > status.term)
                .map(|st| (s, st.region.epoch.unwrap()))
        });
        if let Some(found) = elected {
            break found;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    answer(c.store(new).propose(FIRST_REGION, epoch, put(b"k", b"2"))).unwrap();
    epoch
}

fn assert_not_stale(got: &Option<Result<ReadResponse, RegionError>>) {
    assert!(
        !matches!(got, Some(Ok(ReadResponse::Value(Some(v)))) if v == &b("1")),
        "a stale read from an outlived lease: {got:?}"
    );
}

/// A leader whose thread stalls past its lease — here its disk blocks the store's one
/// thread; a paused process or a starved poller does the same — answers no read from
/// that lease once it runs again. Meanwhile the other two elected a new leader and took a
/// write; their messages to the old leader are lost, so only its own clock can tell it.
/// Its ticks cannot: the timer's pile up to the catch-up cap, and a round handles
/// requests before ticks. Without the real-time check the read came back with the value
/// from before the new leader's write.
#[test]
fn a_leader_stalled_past_its_lease_serves_no_stale_read() {
    use std::time::Duration;
    let c = awake_one_thread_cluster(Duration::from_millis(20));
    let (old, status, epoch) = leader_after_first_write(&c);
    let get = || ReadRequest::Get { key: b("k") };
    // A read from the old leader; its heartbeat round gives it a lease if it had none.
    assert_eq!(
        answer(c.store(old).read(FIRST_REGION, epoch, get())),
        Ok(ReadResponse::Value(Some(b("1"))))
    );
    let epoch = stall_leader_until_replaced(&c, old, &status);
    // Well past the old leader's lease in real time.
    std::thread::sleep(Duration::from_millis(400));
    let mut read = c.store(old).read(FIRST_REGION, epoch, get());
    c.nodes[old.get() as usize - 1].disk.release();
    assert_not_stale(&read.wait_for(Duration::from_secs(5)));
    c.net.clear_faults();
}

/// The same stall, but the read comes after the round that took the timer's piled-up
/// ticks: the replica took ticks a moment ago, so the read-side check passes, and the
/// ticks (four at most) leave the lease counted in ticks alive. That round saw that its
/// ticks cover less time than passed since the last ones, and voided the lease.
#[test]
fn a_leader_whose_ticks_were_lost_serves_no_stale_read_after_it_catches_up() {
    use std::time::Duration;
    // Ticks long enough that the read lands well inside the tick after the catch-up.
    let tick = Duration::from_millis(50);
    let c = awake_one_thread_cluster(tick);
    let (old, status, _) = leader_after_first_write(&c);
    // A lease comes from heartbeat rounds (a new leader has none): let a few go.
    std::thread::sleep(tick * 6);
    let epoch = stall_leader_until_replaced(&c, old, &status);
    std::thread::sleep(tick * 8);
    c.nodes[old.get() as usize - 1].disk.release();
    // Answered in a round that also took the piled-up ticks (requests go first), so the
    // read below is handled in a later round.
    answer(c.store(old).region_status(FIRST_REGION)).unwrap();
    let mut read = c
        .store(old)
        .read(FIRST_REGION, epoch, ReadRequest::Get { key: b("k") });
    assert_not_stale(&read.wait_for(Duration::from_secs(5)));
    c.net.clear_faults();
}

/// A leader cut off from its followers answers reads from its lease while the lease
/// lasts: no heartbeat round could confirm one. The replica must note each round that
/// takes ticks; a replica that did not would find its ticks stale and void the lease
/// on every read. The machine may stall past the lease once (then the read fails
/// safely): a few tries. (Ticks of 50 ms: heartbeats every 100 ms, a lease of 400 ms.)
#[test]
fn a_leader_cut_off_inside_its_lease_reads_from_it() {
    use flotilla::store::Fault;
    use std::time::Duration;
    let c = awake_one_thread_cluster(Duration::from_millis(50));
    let mut outcomes = Vec::new();
    for attempt in 0..3 {
        let value = format!("v{attempt}");
        c.must_put(FIRST_REGION, b"k", value.as_bytes());
        let status = c.wait_leader(FIRST_REGION);
        let leader = StoreId(status.peer.store_id);
        let epoch = status.region.epoch.unwrap();
        // A lease comes from heartbeat rounds (a new leader has none): let a few go.
        std::thread::sleep(Duration::from_millis(300));
        for o in (1..=3).map(StoreId).filter(|&s| s != leader) {
            c.net.add_fault(Fault::DropLink {
                from: o,
                to: leader,
            });
        }
        let got = c
            .store(leader)
            .read(FIRST_REGION, epoch, ReadRequest::Get { key: b("k") })
            .wait_for(Duration::from_secs(3));
        c.net.clear_faults();
        if got == Some(Ok(ReadResponse::Value(Some(b(&value))))) {
            return;
        }
        outcomes.push(got);
    }
    panic!("no read served from the lease: {outcomes:?}");
}

/// Three stores, the first region split into `n` (region i from the key `{prefix}{i:03}`),
/// each led by store 1's replica, all asleep.
fn sleeping_regions_led_by_store_1(n: u64, prefix: &'static str) -> (Cluster, Vec<RegionId>) {
    let c = Cluster::start(3);
    let regions = c.split_first_region(n, |i| format!("{prefix}{i:03}"));
    lead_all_on(&c, &regions, StoreId(1));
    wait_until("every region sleeps", || {
        c.running().all(|s| s.ticking_regions() == 0)
    });
    (c, regions)
}

/// Moves the leadership of each of `regions` to `to`'s replica.
fn lead_all_on(c: &Cluster, regions: &[RegionId], to: StoreId) {
    for &region in regions {
        wait_until("the leadership moves", || {
            let status = c.wait_leader(region);
            if status.peer.store_id == to.get() {
                return true;
            }
            let Some(target) = status.region.peers.iter().find(|p| p.store_id == to.get()) else {
                panic!("no peer of {region} on {to}");
            };
            let _ = answer(c.store(StoreId(status.peer.store_id)).transfer_leader(
                region,
                status.region.epoch.unwrap(),
                PeerId(target.id),
            ));
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        });
    }
}

/// Which store's replica of `region` says it leads, asking each running store once (no
/// waiting: a leader elected after a timeout is not there yet).
fn leader_now(c: &Cluster, region: RegionId) -> Option<StoreId> {
    c.running()
        .find(|s| answer(s.region_status(region)).is_ok_and(|st| st.role == Role::Leader))
        .map(|s| s.id())
}

/// A store about to stop hands every leadership it holds to the others, sleeping regions
/// included (woken for it), and returns once they have moved: right after, each region
/// has a leader on another store, without an election timeout's wait, and takes writes.
#[test]
fn a_stopping_store_hands_its_leaderships_away() {
    use std::time::Duration;
    let (c, regions) = sleeping_regions_led_by_store_1(6, "h");
    let handed = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(10));
    assert_eq!(handed.led, regions.len(), "{handed:?}");
    assert_eq!(handed.still_leading, Vec::<RegionId>::new());
    assert_eq!(
        handed.moved_on, 0,
        "every first target took over in its share"
    );
    for &region in &regions {
        let now = leader_now(&c, region);
        assert!(
            matches!(now, Some(s) if s != StoreId(1)),
            "{region} led by {now:?}"
        );
    }
    // Asked again, it leads nothing.
    let again = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(10));
    assert_eq!((again.led, again.still_leading.len()), (0, 0));
    // Region i holds the keys from `h{i:03}` (the first one those before `h001`).
    for (i, &region) in regions.iter().enumerate() {
        c.must_put(region, format!("h{i:03}-k").as_bytes(), b"v");
    }
}

/// The target is a voter on a store not known down: with a store stopped (and known down
/// here), every leadership goes to the one left.
#[test]
fn a_hand_off_passes_over_a_store_known_down() {
    use std::time::Duration;
    let mut c = Cluster::start(3);
    let regions = c.split_first_region(4, |i| format!("d{i:03}"));
    lead_all_on(&c, &regions, StoreId(1));
    c.stop(StoreId(3));
    wait_until("store 3 is known down", || {
        c.store(StoreId(1))
            .peer_store_liveness()
            .contains(&(StoreId(3), flotilla::store::Liveness::Down))
    });
    let handed = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(10));
    assert_eq!((handed.led, handed.still_leading.len()), (regions.len(), 0));
    for &region in &regions {
        assert_eq!(leader_now(&c, region), Some(StoreId(2)), "{region}");
    }
}

/// A target that never takes over — its store is live (its pings arrive) but nothing
/// reaches it — is given up (here by the core, after an election timeout; else after a
/// third of the wait), and the next voter is asked.
#[test]
fn a_hand_off_moves_on_from_a_target_that_does_not_take_over() {
    use flotilla::store::Fault;
    use std::time::Duration;
    // Caught up alike, the voter with the lower id is tried first: store 2's.
    let (c, regions) = sleeping_regions_led_by_store_1(3, "t");
    c.net.add_fault(Fault::DropLink {
        from: StoreId(1),
        to: StoreId(2),
    });
    let handed = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(6));
    assert_eq!(
        (handed.led, handed.moved_on, handed.still_leading.len()),
        (regions.len(), regions.len(), 0),
        "{handed:?}"
    );
    for &region in &regions {
        assert_eq!(leader_now(&c, region), Some(StoreId(3)), "{region}");
    }
    c.net.clear_faults();
}

/// A region with no voter to take over (a single-voter region) is reported still led,
/// at once.
#[test]
fn a_lone_voter_has_no_one_to_hand_off_to() {
    use std::time::Duration;
    let c = Cluster::start(1);
    c.must_put(FIRST_REGION, b"k", b"v");
    let started = std::time::Instant::now();
    let handed = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(30));
    assert_eq!(handed.led, 1);
    assert_eq!(handed.still_leading, vec![FIRST_REGION]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait for a transfer that never started"
    );
}

/// A voter the leader cannot reach (its store stopped, not yet known down: the transport
/// says it is unreachable, and the leader probes it) is passed over for one it replicates
/// to, though its peer id comes first: no transfer has to be given up.
#[test]
fn a_hand_off_prefers_a_voter_it_replicates_to() {
    use std::time::Duration;
    let mut c = Cluster::start_with(3, |s| {
        let mut cfg = test_config(s);
        // Store 2 stays "live" here for the whole test.
        cfg.hibernation.down_after_ticks = 100_000;
        cfg
    });
    let regions = c.split_first_region(3, |i| format!("p{i:03}"));
    lead_all_on(&c, &regions, StoreId(1));
    c.stop(StoreId(2));
    // A write to each region meets store 2 unreachable.
    for (i, &region) in regions.iter().enumerate() {
        c.must_put(region, format!("p{i:03}-k").as_bytes(), b"v");
    }
    let handed = c
        .store(StoreId(1))
        .hand_off_leaderships(Duration::from_secs(9));
    assert_eq!(
        (handed.led, handed.moved_on, handed.still_leading.len()),
        (regions.len(), 0, 0),
        "{handed:?}"
    );
    for &region in &regions {
        assert_eq!(leader_now(&c, region), Some(StoreId(3)), "{region}");
    }
}
