//! Malformed batches from the network: a store must drop what no correct peer sends —
//! batches for another store, messages missing their parts or naming strangers, unknown
//! message types, protocol messages at a stale or zero term, stale tombstones, hibernation
//! signals from anyone, folded heartbeats for regions it does not hold — without a panic,
//! without a region's term running away, without creating a peer, and without losing or
//! changing data. Forged messages that are well formed (a real peer's id at the current
//! term) are the transport's to refuse (cluster id, later authentication), not tested here.
//!
//! `FLOTILLA_HOSTILE_SEEDS=N` runs N seeds (default 2); `FLOTILLA_HOSTILE_FIRST_SEED=S`
//! replays from seed S.

use bytes::Bytes;
use flotilla::proto::metapb::{Peer, RegionEpoch};
use flotilla::proto::raftpb::{Entry, Message, Snapshot, SnapshotMetadata};
use flotilla::proto::transportpb::{Heartbeat, Hibernation, RaftMessage, RaftMessageBatch};
use flotilla::testkit::Rng;
use flotilla::testkit::cluster::*;
use flotilla::{RegionId, StoreId};

/// Ids no region or peer of the test uses.
const STRANGER: u64 = 5_000;

/// What the test knows of one region when the barrage starts.
struct Target {
    id: RegionId,
    peers: Vec<Peer>,
    /// The lowest term any replica is at: protocol messages are forged below it.
    min_term: u64,
}

fn pick<T: Copy>(rng: &mut Rng, from: &[T]) -> T {
    from[rng.range(0, from.len() as u64) as usize]
}

fn bytes(rng: &mut Rng, max: u64) -> Bytes {
    (0..rng.range(0, max + 1))
        .map(|_| rng.next_u64() as u8)
        .collect()
}

/// A term no replica of the region is at or past (0 when every replica is at term 1).
fn stale_term(rng: &mut Rng, t: &Target) -> u64 {
    rng.range(0, t.min_term)
}

fn odd_u64(rng: &mut Rng) -> u64 {
    match rng.range(0, 4) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.range(0, 50),
        _ => rng.next_u64(),
    }
}

fn peer(rng: &mut Rng, t: &Target, store: StoreId) -> Option<Peer> {
    match rng.range(0, 10) {
        0 => None,
        1 => Some(Peer {
            id: STRANGER + rng.range(0, 5),
            store_id: rng.range(0, 6),
            role: rng.range(0, 8) as i32 - 2,
        }),
        2 => Some(Peer {
            id: 0,
            store_id: store.get(),
            role: 0,
        }),
        _ => Some(pick(rng, &t.peers)),
    }
}

fn epoch(rng: &mut Rng) -> Option<RegionEpoch> {
    rng.chance(80).then(|| RegionEpoch {
        // Never newer than what the regions have (a newer epoch is a claim a peer
        // makes; here it would be a forgery).
        conf_ver: rng.range(0, 2),
        version: rng.range(0, 2),
    })
}

fn message(rng: &mut Rng, t: &Target) -> Message {
    // Mostly real message types (0..=20), some no type has.
    let msg_type = rng.range(0, 26) as i32 - 2;
    let known = (0..=20).contains(&msg_type);
    Message {
        msg_type,
        to: pick(rng, &t.peers).id,
        from: pick(rng, &t.peers).id,
        // A message of no known type may claim any term: it must not be taken in.
        term: if known {
            stale_term(rng, t)
        } else {
            odd_u64(rng)
        },
        log_term: odd_u64(rng),
        index: odd_u64(rng),
        request_snapshot: odd_u64(rng),
        entries: (0..rng.range(0, 4))
            .map(|_| Entry {
                entry_type: rng.range(0, 5) as i32 - 1,
                term: odd_u64(rng),
                index: odd_u64(rng),
                data: bytes(rng, 40),
                context: bytes(rng, 8).to_vec(),
            })
            .collect(),
        commit: odd_u64(rng),
        snapshot: rng.chance(20).then(|| Snapshot {
            data: bytes(rng, 40),
            metadata: Some(SnapshotMetadata {
                index: odd_u64(rng),
                term: odd_u64(rng),
                ..Default::default()
            }),
        }),
        reject: rng.chance(50),
        reject_hint: odd_u64(rng),
        context: bytes(rng, 16).to_vec(),
        read_round: odd_u64(rng),
        transferee: odd_u64(rng),
    }
}

fn raft_message(rng: &mut Rng, targets: &[Target], store: StoreId) -> RaftMessage {
    let t = &targets[rng.range(0, targets.len() as u64) as usize];
    let region_id = match rng.range(0, 10) {
        0 => 0,
        1 | 2 => STRANGER + rng.range(0, 20),
        _ => t.id.get(),
    };
    RaftMessage {
        region_id,
        from_peer: peer(rng, t, store),
        to_peer: peer(rng, t, store),
        region_epoch: epoch(rng),
        message: rng.chance(90).then(|| message(rng, t)),
        start_key: bytes(rng, 4).to_vec(),
        end_key: bytes(rng, 4).to_vec(),
        is_tombstone: rng.chance(10),
        hibernation: rng.chance(20).then(|| Hibernation {
            signal: rng.range(0, 5) as i32 - 1,
            term: odd_u64(rng),
            last_index: odd_u64(rng),
        }),
        answer_now: rng.chance(50),
    }
}

fn heartbeat(rng: &mut Rng, targets: &[Target]) -> Heartbeat {
    let t = &targets[rng.range(0, targets.len() as u64) as usize];
    Heartbeat {
        region_id: if rng.chance(20) {
            STRANGER + rng.range(0, 20)
        } else {
            t.id.get()
        },
        from_peer: pick(rng, &t.peers).id,
        to_peer: if rng.chance(20) {
            STRANGER
        } else {
            pick(rng, &t.peers).id
        },
        term: stale_term(rng, t),
        commit: odd_u64(rng),
        read_round: odd_u64(rng),
        answer_now: rng.chance(50),
    }
}

fn batch(rng: &mut Rng, targets: &[Target], to: StoreId) -> RaftMessageBatch {
    RaftMessageBatch {
        from_store: match rng.range(0, 6) {
            0 => 0,
            1 => u64::MAX,
            2 => to.get(),
            _ => rng.range(1, 4),
        },
        // Now and then one meant for another store (or none).
        to_store: match rng.range(0, 10) {
            0 => 0,
            1 => to.get() % 3 + 1,
            _ => to.get(),
        },
        messages: (0..rng.range(0, 5))
            .map(|_| raft_message(rng, targets, to))
            .collect(),
        heartbeats: (0..rng.range(0, 4))
            .map(|_| heartbeat(rng, targets))
            .collect(),
        heartbeat_responses: (0..rng.range(0, 4))
            .map(|_| heartbeat(rng, targets))
            .collect(),
    }
}

fn run(seed: u64) {
    let replay = format!(
        "FLOTILLA_HOSTILE_SEEDS=1 FLOTILLA_HOSTILE_FIRST_SEED={seed} cargo test --test store_hostile"
    );
    let c = Cluster::start(3);
    let regions = c.split_first_region(4, |i| format!("k{i}"));
    let keys: Vec<(RegionId, String)> = regions
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, format!("k{i}-before")))
        .collect();
    for (region, key) in &keys {
        c.must_put(*region, key.as_bytes(), b"v");
    }
    let targets: Vec<Target> = regions
        .iter()
        .map(|&id| {
            let leader = c.wait_leader(id);
            let min_term = c
                .running()
                .filter_map(|s| answer(s.region_status(id)).ok())
                .map(|st| st.term)
                .min()
                .unwrap_or(0);
            Target {
                id,
                peers: leader.region.peers.clone(),
                min_term,
            }
        })
        .collect();
    let receivers: Vec<_> = (1..=3)
        .map(|s| (StoreId(s), c.store(StoreId(s)).receiver()))
        .collect();
    let mut rng = Rng::new(seed);
    for _ in 0..3_000 {
        let (store, receiver) = &receivers[rng.range(0, 3) as usize];
        receiver.receive(batch(&mut rng, &targets, *store));
    }
    // The stores serve every region as before: old data intact, new writes taken.
    for (region, key) in &keys {
        assert_eq!(
            c.must_get(*region, key.as_bytes()).as_deref(),
            Some(&b"v"[..]),
            "seed {seed}: {key} changed; replay: {replay}"
        );
        let after = format!("{key}-after");
        c.must_put(*region, after.as_bytes(), b"w");
        c.wait_applied_everywhere(after.as_bytes(), Some(b"w"));
    }
    for t in &targets {
        for s in c.running() {
            let st = answer(s.region_status(t.id)).expect("a replica of every region");
            assert!(
                st.term < t.min_term + 100,
                "seed {seed}: region {} ran to term {} (from {}); replay: {replay}",
                t.id,
                st.term,
                t.min_term
            );
        }
    }
    // No message made a peer of a region nobody created.
    for s in c.running() {
        for r in (0..20).map(|i| RegionId(STRANGER + i)).chain([RegionId(0)]) {
            assert!(
                s.region(r).is_none(),
                "seed {seed}: a malformed message created region {r}; replay: {replay}"
            );
        }
    }
}

#[test]
fn malformed_batches_change_nothing_and_break_nothing() {
    let seeds: u64 = std::env::var("FLOTILLA_HOSTILE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let first: u64 = std::env::var("FLOTILLA_HOSTILE_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + seeds {
        run(seed);
    }
}

/// A batch is for the store it names: one addressed to another store is dropped whole,
/// even a message its replicas would take in. Shown with a heartbeat at a higher term,
/// which a follower adopts when it does reach it.
#[test]
fn a_batch_for_another_store_is_dropped_whole() {
    let c = Cluster::start(3);
    let leader = c.wait_leader(FIRST_REGION);
    let follower = a_follower(&leader);
    let store = StoreId(follower.store_id);
    let term = answer(c.store(store).region_status(FIRST_REGION))
        .unwrap()
        .term;
    let bump = |to_store: u64| RaftMessageBatch {
        from_store: leader.peer.store_id,
        to_store,
        heartbeats: vec![Heartbeat {
            region_id: FIRST_REGION.get(),
            from_peer: leader.peer.id,
            to_peer: follower.id,
            term: term + 5,
            ..Default::default()
        }],
        ..Default::default()
    };
    let receiver = c.store(store).receiver();
    receiver.receive(bump(store.get() % 3 + 1));
    let status = answer(c.store(store).region_status(FIRST_REGION)).unwrap();
    assert_eq!(status.term, term, "a misrouted batch reached the replica");
    receiver.receive(bump(store.get()));
    wait_until("the follower takes the heartbeat's term", || {
        answer(c.store(store).region_status(FIRST_REGION)).is_ok_and(|s| s.term >= term + 5)
    });
}

/// Regression: a message for an unknown region claiming an inverted range (start after
/// end) panicked every store's raft poller while it looked for overlapping regions.
#[test]
fn a_message_claiming_an_inverted_range_creates_nothing_and_stops_nothing() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    for s in (1..=3).map(StoreId) {
        c.store(s).receiver().receive(RaftMessageBatch {
            from_store: s.get() % 3 + 1,
            to_store: s.get(),
            messages: vec![RaftMessage {
                region_id: STRANGER,
                from_peer: Some(Peer {
                    id: STRANGER + 1,
                    store_id: s.get() % 3 + 1,
                    role: 0,
                }),
                to_peer: Some(Peer {
                    id: STRANGER + 2,
                    store_id: s.get(),
                    role: 0,
                }),
                region_epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                message: Some(Message {
                    msg_type: flotilla::proto::raftpb::MessageType::MsgHeartbeat as i32,
                    to: STRANGER + 2,
                    from: STRANGER + 1,
                    term: 1,
                    ..Default::default()
                }),
                start_key: b"z".to_vec(),
                end_key: b"a".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    c.must_put(FIRST_REGION, b"k", b"w");
    c.wait_applied_everywhere(b"k", Some(b"w"));
    for s in c.running() {
        assert!(s.region(RegionId(STRANGER)).is_none());
    }
}

/// A snapshot's files addressed to a peer on another store are refused before they are
/// copied; the same files addressed here are taken in.
#[test]
fn a_snapshot_for_another_store_is_refused() {
    use flotilla::storage::kv::KvEngine;
    use flotilla::storage::mem_kv::MemKvEngine;
    use flotilla::storage::snapshot;

    let c = Cluster::start(3);
    let region = c.wait_leader(FIRST_REGION).region;
    let root = tempfile::tempdir().unwrap();
    let meta =
        snapshot::generate(&MemKvEngine::new().view(), &region, 1, 5, root.path(), 512).unwrap();
    let files = snapshot::snapshot_dir(root.path(), FIRST_REGION, 1, 5);
    let summary = snapshot::summary(&meta);
    // A Raft message carrying nothing but the summary: only the files' journey is under
    // test (no peer sends it, so it goes no further than the store).
    let to = |store: u64, summary: &flotilla::proto::storagepb::SnapshotSummary| RaftMessage {
        region_id: FIRST_REGION.get(),
        to_peer: Some(Peer {
            id: store,
            store_id: store,
            role: 0,
        }),
        message: Some(Message {
            snapshot: Some(flotilla::proto::raftpb::Snapshot {
                data: prost::Message::encode_to_vec(summary).into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let receiver = c.store(StoreId(1)).receiver();
    assert!(receiver.receive_snapshot(to(2, &summary), &files).is_err());
    // Files that are not what the summary describes are refused too (the core would take
    // the snapshot, and installing it would stop the store).
    let mut other = summary.clone();
    other.checksum ^= 1;
    assert!(receiver.receive_snapshot(to(1, &other), &files).is_err());
    let mut misnamed = summary.clone();
    misnamed.index += 1;
    assert!(receiver.receive_snapshot(to(1, &misnamed), &files).is_err());
    assert!(
        receiver
            .receive_snapshot(
                RaftMessage {
                    message: None,
                    ..to(1, &summary)
                },
                &files
            )
            .is_err(),
        "no summary"
    );
    receiver.receive_snapshot(to(1, &summary), &files).unwrap();
    c.must_put(FIRST_REGION, b"k", b"v");
}

/// A snapshot message whose files never came (here: no summary at all) is dropped before
/// the core sees it, even from the leader at its term: taken in, the replica would reset
/// its log to a snapshot it cannot install.
#[test]
fn a_snapshot_message_without_its_files_is_dropped() {
    let c = Cluster::start(3);
    c.must_put(FIRST_REGION, b"k", b"v");
    let leader = c.wait_leader(FIRST_REGION);
    let follower = a_follower(&leader);
    let store = StoreId(follower.store_id);
    c.store(store).receiver().receive(RaftMessageBatch {
        from_store: leader.peer.store_id,
        to_store: store.get(),
        messages: vec![RaftMessage {
            region_id: FIRST_REGION.get(),
            from_peer: Some(leader.peer),
            to_peer: Some(follower),
            region_epoch: leader.region.epoch,
            message: Some(Message {
                msg_type: flotilla::proto::raftpb::MessageType::MsgSnapshot as i32,
                to: follower.id,
                from: leader.peer.id,
                term: leader.term,
                snapshot: Some(Snapshot {
                    data: Bytes::new(),
                    metadata: Some(SnapshotMetadata {
                        index: leader.commit_index + 1_000,
                        term: leader.term,
                        conf_state: Some(flotilla::proto::raftpb::ConfState {
                            voters: leader.region.peers.iter().map(|p| p.id).collect(),
                            ..Default::default()
                        }),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    c.must_put(FIRST_REGION, b"k", b"w");
    c.wait_applied_everywhere(b"k", Some(b"w"));
}
