//! Three stores, many regions, clients reading, writing and compare-and-swapping while a
//! nemesis crashes and restarts stores (unsynced data lost), cuts one off, splits regions,
//! moves leaders and replaces a region's follower (removed, then a new peer added on its
//! store, which catches up by snapshot) — mostly where the clients' keys are led. Every client history goes through the linearizability checker; an
//! operation that timed out or was dropped unanswered has an unknown outcome. After the
//! faults heal, every key is read once more (so an acknowledged write that was lost shows
//! as a history that is not linearizable) and every request still waiting is answered.
//!
//! CI runs one round of `DEFAULT_SECS` seconds over `DEFAULT_REGIONS` regions with each
//! store's roles on threads of their own, one with each store on one thread
//! (`RunMode::OneThread`), and one with the three stores sharing one thread
//! (`RunMode::Shared`).
//! `FLOTILLA_LIN_SEEDS=N` runs N rounds (seeds 0..N, or from `FLOTILLA_LIN_FIRST_SEED`),
//! `FLOTILLA_LIN_SECS` and `FLOTILLA_LIN_REGIONS` change the round, `FLOTILLA_LIN_TRACE=1`
//! prints the faults. The seed fixes every
//! random choice of the clients and the nemesis; thread timing is not replayed, so a
//! failure's seed reruns the same schedule of faults, not the same interleaving.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::proto::commandpb::{CompareAndSwap, Delete, Op, SplitRequest, WriteCommand, op};
use flotilla::proto::metapb::{Peer, RegionEpoch};
use flotilla::raft::Role;
use flotilla::region::{DroppedReason, RegionError};
use flotilla::store::apply::eval::OpOutcome;
use flotilla::store::{
    Fault, PeerChange, ReadRequest, ReadResponse, Response, RunMode, SharedRunner,
};
use flotilla::testkit::Rng;
use flotilla::testkit::cluster::*;
use flotilla::testkit::linearizability::{KvInput, KvOutput, Recorder, check_kv};
use flotilla::{PeerId, RegionId, StoreId};

const DEFAULT_SECS: u64 = 8;

/// What reruns a seed's schedule.
fn replay(seed: u64, mode: &RunMode) -> String {
    let test = match mode {
        RunMode::OneThread => ONE_THREAD_TEST,
        RunMode::Shared(_) => SHARED_TEST,
        _ => THREADS_TEST,
    };
    format!(
        "FLOTILLA_LIN_SEEDS=1 FLOTILLA_LIN_FIRST_SEED={seed} cargo test --test store_linearizable -- --exact {test} --nocapture"
    )
}

const THREADS_TEST: &str =
    "client_histories_are_linearizable_under_crashes_partitions_splits_transfers_and_conf_changes";
const ONE_THREAD_TEST: &str = "client_histories_are_linearizable_with_each_store_on_one_thread";
const SHARED_TEST: &str = "client_histories_are_linearizable_with_the_stores_sharing_one_thread";
const DEFAULT_REGIONS: u64 = 1000;
const CLIENTS: u64 = 6;
const KEYS: u64 = 24;
/// How long a client waits for an answer before it calls the outcome unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The keys the clients use, spread over the regions.
fn keys(regions: u64) -> Vec<Bytes> {
    (0..KEYS)
        .map(|i| Bytes::from(format!("r{:05}-{i}", i * regions / KEYS)))
        .collect()
}

/// Whether an error says the operation did not take effect.
fn did_not_happen(e: &RegionError) -> bool {
    !matches!(
        e,
        RegionError::ProposalDropped {
            reason: DroppedReason::Unanswered,
            ..
        }
    )
}

struct World {
    cluster: RwLock<Cluster>,
    recorder: Recorder,
    stop: AtomicBool,
    /// Responses a client stopped waiting for: each must still be answered.
    abandoned: Mutex<Vec<Response<flotilla::store::WriteResponse>>>,
    next_region: AtomicU64,
    faults: Mutex<Vec<String>>,
    /// How the stores run (named in the replay command).
    mode: RunMode,
}

/// Finds a store whose replica of `key`'s region says it leads, and the epoch it knows.
/// When more than one says so (an old leader cut off has not noticed yet), `pick` chooses
/// among them — as clients with different caches would.
fn route(
    c: &Cluster,
    key: &[u8],
    pick: &mut impl FnMut(usize) -> usize,
) -> Option<(StoreId, RegionId, flotilla::proto::metapb::RegionEpoch)> {
    let mut leaders = Vec::new();
    for s in c.running() {
        let Some(region) = s.region_for_key(key) else {
            continue;
        };
        let id = region.region_id();
        if let Some(Ok(st)) = s.region_status(id).wait_for(Duration::from_secs(1))
            && st.role == Role::Leader
        {
            leaders.push((s.id(), id, st.region.epoch.unwrap_or_default()));
        }
    }
    if leaders.is_empty() {
        return None;
    }
    let i = pick(leaders.len());
    Some(leaders.swap_remove(i))
}

fn client(w: &World, client: u64, seed: u64, keys: &[Bytes]) {
    let mut rng = Rng::new(seed * 1000 + client);
    while !w.stop.load(Ordering::Acquire) {
        let key = keys[rng.range(0, keys.len() as u64) as usize].clone();
        let value = Bytes::from(format!("{client}-{}", rng.next_u64() % 1000));
        let input = match rng.range(0, 10) {
            0..4 => KvInput::Get(key.clone()),
            4..7 => KvInput::Put(key.clone(), value.clone()),
            7 => KvInput::Delete(key.clone()),
            _ => {
                let expected = if rng.chance(50) {
                    None
                } else {
                    Some(Bytes::from(format!(
                        "{}-{}",
                        rng.range(0, CLIENTS),
                        rng.next_u64() % 1000
                    )))
                };
                KvInput::Cas {
                    key: key.clone(),
                    expected,
                    new: Some(value.clone()),
                }
            }
        };
        let c = w.cluster.read().unwrap();
        let Some((store, region, epoch)) =
            route(&c, &key, &mut |n| rng.range(0, n as u64) as usize)
        else {
            drop(c);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let call = w.recorder.call(client, input.clone());
        match &input {
            KvInput::Get(k) => {
                let mut r = c
                    .store(store)
                    .read(region, epoch, ReadRequest::Get { key: k.clone() });
                drop(c);
                match r.wait_for(CLIENT_TIMEOUT) {
                    Some(Ok(ReadResponse::Value(v))) => {
                        w.recorder.returned(call, KvOutput::Value(v))
                    }
                    Some(Ok(other)) => panic!("seed {seed}: a get answered {other:?}"),
                    Some(Err(_)) => w.recorder.failed(call),
                    None => w.recorder.unknown(call),
                }
            }
            _ => {
                let mut r = c.store(store).propose(region, epoch, command(&input));
                drop(c);
                match r.wait_for(CLIENT_TIMEOUT) {
                    Some(Ok(done)) => {
                        let output = match (&input, &done.outcomes[..]) {
                            (KvInput::Cas { .. }, [OpOutcome::Swapped]) => KvOutput::Swapped,
                            (KvInput::Cas { .. }, [OpOutcome::Mismatch { current }]) => {
                                KvOutput::Mismatch(current.clone())
                            }
                            (_, [OpOutcome::Done]) => KvOutput::Done,
                            other => panic!(
                                "seed {seed}: {input:?} answered with outcomes {other:?}; rerun the \
                                 schedule: {}",
                                replay(seed, &w.mode)
                            ),
                        };
                        w.recorder.returned(call, output);
                    }
                    Some(Err(e)) if did_not_happen(&e) => w.recorder.failed(call),
                    Some(Err(_)) => w.recorder.unknown(call),
                    None => {
                        w.recorder.unknown(call);
                        w.abandoned.lock().unwrap().push(r);
                    }
                }
            }
        }
    }
}

fn command(input: &KvInput) -> WriteCommand {
    let op = match input.clone() {
        KvInput::Put(key, value) => op::Op::Put(flotilla::proto::commandpb::Put { key, value }),
        KvInput::Delete(key) => op::Op::Delete(Delete { key }),
        KvInput::Cas { key, expected, new } => op::Op::CompareAndSwap(CompareAndSwap {
            key,
            expected,
            new_value: new,
        }),
        KvInput::Get(_) => unreachable!("reads are not proposed"),
    };
    WriteCommand {
        ops: vec![Op { op: Some(op) }],
    }
}

/// Every second or so, one fault: a store crashed (unsynced data lost) and restarted, a
/// store cut off and healed, a split, a leader moved.
fn nemesis(w: &World, seed: u64, regions: u64, keys: &[Bytes]) {
    let mut rng = Rng::new(seed);
    while !w.stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(rng.range(300, 1200)));
        if w.stop.load(Ordering::Acquire) {
            break;
        }
        // Mostly the store leading a key the clients use: its proposals in flight are
        // the ones a fault can strand.
        let store = if rng.chance(70) {
            let key = &keys[rng.range(0, keys.len() as u64) as usize];
            let c = w.cluster.read().unwrap();
            route(&c, key, &mut |_| 0).map_or(StoreId(rng.range(1, 4)), |(s, _, _)| s)
        } else {
            StoreId(rng.range(1, 4))
        };
        let what = match rng.range(0, 5) {
            0 => {
                w.cluster.write().unwrap().crash(store);
                std::thread::sleep(Duration::from_millis(rng.range(100, 800)));
                w.cluster.write().unwrap().restart(store);
                format!("crash and restart store {store}")
            }
            1 => {
                let c = w.cluster.read().unwrap();
                let rest: HashSet<StoreId> = (1..=3).map(StoreId).filter(|&s| s != store).collect();
                let cut = c
                    .net
                    .add_fault(Fault::Partition(vec![HashSet::from([store]), rest]));
                drop(c);
                std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
                w.cluster.read().unwrap().net.remove_fault(cut);
                format!("cut off store {store}")
            }
            2 => {
                let c = w.cluster.read().unwrap();
                let at = Bytes::from(format!("r{:05}-5", rng.range(0, regions)));
                let id = w.next_region.fetch_add(1, Ordering::SeqCst);
                let Some((s, region, epoch)) = route(&c, &at, &mut |_| 0) else {
                    continue;
                };
                let split = SplitRequest {
                    split_key: at.clone(),
                    new_region_id: id,
                    new_peer_ids: (1..=3).map(|p| id * 10 + p).collect(),
                };
                let r = c
                    .store(s)
                    .split(region, epoch, vec![split])
                    .wait_for(CLIENT_TIMEOUT);
                format!(
                    "split region {region} at {at:?}: {:?}",
                    r.map(|r| r.map(|_| ()))
                )
            }
            3 => {
                let key = &keys[rng.range(0, keys.len() as u64) as usize];
                if rng.chance(50) {
                    replace_follower(w, key, &mut rng)
                } else {
                    demote_and_promote_jointly(w, key)
                }
            }
            _ => {
                let c = w.cluster.read().unwrap();
                let at = format!("r{:05}-0", rng.range(0, regions));
                let Some((s, region, epoch)) = route(&c, at.as_bytes(), &mut |_| 0) else {
                    continue;
                };
                let Ok(st) = answer(c.store(s).region_status(region)) else {
                    continue;
                };
                let others: Vec<_> = st
                    .region
                    .peers
                    .iter()
                    .filter(|p| p.id != st.peer.id)
                    .collect();
                let to = others[rng.range(0, others.len() as u64) as usize].id;
                let r = c
                    .store(s)
                    .transfer_leader(region, epoch, PeerId(to))
                    .wait_for(CLIENT_TIMEOUT);
                format!(
                    "move region {region}'s leader to peer {to}: {:?}",
                    r.map(|r| r.is_ok())
                )
            }
        };
        w.faults.lock().unwrap().push(what);
    }
}

/// Reads `key` once the faults healed, retrying (each attempt its own call) until one is
/// answered: regions may have split and leaders moved since a store last said.
fn final_read(
    c: &Cluster,
    recorder: &Recorder,
    key: &Bytes,
) -> (
    flotilla::testkit::linearizability::PendingCall,
    Option<Bytes>,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "{key:?} could not be read after healing"
        );
        let Some((store, region, epoch)) = route(c, key, &mut |_| 0) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let call = recorder.call(u64::MAX - 1, KvInput::Get(key.clone()));
        let read = c
            .store(store)
            .read(region, epoch, ReadRequest::Get { key: key.clone() })
            .wait_for(CLIENT_TIMEOUT);
        match read {
            Some(Ok(ReadResponse::Value(v))) => return (call, v),
            Some(Ok(other)) => panic!("a get answered {other:?}"),
            _ => {
                recorder.failed(call);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A membership change under load: a follower of `key`'s region is removed (its replica
/// destroys itself), then a new peer is added on its store, which catches up by snapshot.
/// The leader's store of `key`'s region, the region and its epoch there, and the other
/// peers (followers and learners); or why there is none to change peers with.
fn leader_and_others(
    c: &Cluster,
    key: &Bytes,
) -> Result<(StoreId, RegionId, RegionEpoch, Vec<Peer>), String> {
    let Some((s, region, epoch)) = route(c, key, &mut |_| 0) else {
        return Err("no leader to change peers with".into());
    };
    let Ok(st) = answer(c.store(s).region_status(region)) else {
        return Err("no status".into());
    };
    let others = st
        .region
        .peers
        .iter()
        .filter(|p| p.id != st.peer.id)
        .copied()
        .collect();
    Ok((s, region, epoch, others))
}

fn replace_follower(w: &World, key: &Bytes, rng: &mut Rng) -> String {
    let c = w.cluster.read().unwrap();
    let (s, region, epoch, followers) = match leader_and_others(&c, key) {
        Ok(found) => found,
        Err(why) => return why,
    };
    let old = followers[rng.range(0, followers.len() as u64) as usize];
    let removed = c
        .store(s)
        .change_peers(region, epoch, vec![PeerChange::Remove(old)])
        .wait_for(CLIENT_TIMEOUT);
    let Some(Ok(after)) = removed else {
        return format!("remove peer {} of region {region}: {removed:?}", old.id);
    };
    let new = Peer {
        id: w.next_region.fetch_add(1, Ordering::SeqCst),
        ..old
    };
    let added = c
        .store(s)
        .change_peers(
            region,
            after.region.epoch.unwrap_or_default(),
            vec![PeerChange::AddVoter(new)],
        )
        .wait_for(CLIENT_TIMEOUT);
    format!(
        "replace peer {} of region {region} on store {} by peer {}: {:?}",
        old.id,
        old.store_id,
        new.id,
        added.map(|r| r.map(|_| ()))
    )
}

/// Two changes through joint consensus: both followers of the key's region demoted to
/// learners in one change (the leader alone votes once the core leaves the joint state),
/// then both promoted back in another.
fn demote_and_promote_jointly(w: &World, key: &Bytes) -> String {
    let c = w.cluster.read().unwrap();
    let (s, region, epoch, followers) = match leader_and_others(&c, key) {
        Ok(found) => found,
        Err(why) => return why,
    };
    let demoted = c
        .store(s)
        .change_peers(
            region,
            epoch,
            followers
                .iter()
                .map(|&p| PeerChange::AddLearner(p))
                .collect(),
        )
        .wait_for(CLIENT_TIMEOUT);
    if !matches!(demoted, Some(Ok(_))) {
        return format!("demote the followers of region {region} jointly: {demoted:?}");
    }
    // The core leaves the joint state by itself; a change proposed before it has is
    // refused.
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let left = loop {
        match answer(c.store(s).region_status(region)) {
            Ok(st) if !flotilla::region::is_joint(&st.region) => break Some(st),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let Some(left) = left else {
        return format!("region {region} did not leave its joint state in time");
    };
    let promoted = c
        .store(s)
        .change_peers(
            region,
            left.region.epoch.unwrap_or_default(),
            followers.iter().map(|&p| PeerChange::AddVoter(p)).collect(),
        )
        .wait_for(CLIENT_TIMEOUT);
    format!(
        "demote and promote the followers {:?} of region {region} jointly: {:?}",
        followers.iter().map(|p| p.id).collect::<Vec<_>>(),
        promoted.map(|r| r.map(|_| ()))
    )
}

fn run_round(seed: u64, secs: u64, regions: u64, mode: RunMode) {
    let started = Instant::now();
    let c = Cluster::start_in(mode.clone(), 3);
    c.split_first_region(regions, |i| format!("r{i:05}"));
    let keys = keys(regions);
    for k in &keys {
        c.must_put(
            c.running()
                .next()
                .unwrap()
                .region_for_key(k)
                .unwrap()
                .region_id(),
            k,
            b"init",
        );
    }
    let w = World {
        cluster: RwLock::new(c),
        recorder: Recorder::default(),
        stop: AtomicBool::new(false),
        abandoned: Mutex::new(Vec::new()),
        next_region: AtomicU64::new(1_000_000),
        faults: Mutex::new(Vec::new()),
        mode,
    };
    // The initial writes are part of the history: recorded as done before anything else.
    for k in &keys {
        let call = w.recorder.call(
            u64::MAX,
            KvInput::Put(k.clone(), Bytes::from_static(b"init")),
        );
        w.recorder.returned(call, KvOutput::Done);
    }
    std::thread::scope(|s| {
        for client_id in 0..CLIENTS {
            let (w, keys) = (&w, &keys);
            s.spawn(move || client(w, client_id, seed, keys));
        }
        s.spawn(|| nemesis(&w, seed, regions, &keys));
        std::thread::sleep(Duration::from_secs(secs));
        w.stop.store(true, Ordering::Release);
    });
    // Heal: every store running, no fault; then read every key once more.
    {
        let mut c = w.cluster.write().unwrap();
        c.net.clear_faults();
        for s in (1..=3).map(StoreId) {
            if c.nodes[s.get() as usize - 1].store.is_none() {
                c.restart(s);
            }
        }
    }
    let c = w.cluster.read().unwrap();
    for k in &keys {
        let (call, v) = final_read(&c, &w.recorder, k);
        w.recorder.returned(call, KvOutput::Value(v));
    }
    // Every request a client gave up on is answered all the same (exactly once: a
    // response resolves once).
    for mut r in w.abandoned.lock().unwrap().drain(..) {
        assert!(
            r.wait_for(PATIENCE).is_some(),
            "seed {seed}: a request was never answered"
        );
    }
    let history = w.recorder.history();
    let faults = w.faults.lock().unwrap().clone();
    let unknown = history
        .iter()
        .filter(|op| op.outcome == flotilla::testkit::linearizability::Outcome::Unknown)
        .count();
    eprintln!(
        "seed {seed}: {} operations ({unknown} unknown, {} more failed and left out), {} faults, {:.1}s",
        history.len(),
        w.recorder.failures(),
        faults.len(),
        started.elapsed().as_secs_f64()
    );
    if std::env::var_os("FLOTILLA_LIN_TRACE").is_some() {
        eprintln!("faults: {faults:#?}");
    }
    if let Err(e) = check_kv(&history) {
        panic!(
            "seed {seed}: key {:?} is not linearizable: {:#?}\nfaults: {faults:#?}\nrerun the \
             schedule: {}",
            e.key,
            e.operations,
            replay(seed, &w.mode)
        );
    }
    drop(c);
    let mut c = w.cluster.write().unwrap();
    for s in (1..=3).map(StoreId) {
        c.stop(s);
        c.nodes[s.get() as usize - 1].check_last_terms();
    }
}

#[test]
fn client_histories_are_linearizable_under_crashes_partitions_splits_transfers_and_conf_changes() {
    run_rounds(RunMode::Threads);
}

#[test]
fn client_histories_are_linearizable_with_each_store_on_one_thread() {
    run_rounds(RunMode::OneThread);
}

#[test]
fn client_histories_are_linearizable_with_the_stores_sharing_one_thread() {
    run_rounds(RunMode::Shared(
        SharedRunner::spawn("stores").expect("the shared thread"),
    ));
}

fn run_rounds(mode: RunMode) {
    let seeds = env("FLOTILLA_LIN_SEEDS").unwrap_or(1);
    let first = env("FLOTILLA_LIN_FIRST_SEED").unwrap_or(0);
    let secs = env("FLOTILLA_LIN_SECS").unwrap_or(DEFAULT_SECS);
    let regions = env("FLOTILLA_LIN_REGIONS").unwrap_or(DEFAULT_REGIONS);
    for seed in first..first + seeds {
        run_round(seed, secs, regions, mode.clone());
    }
}
