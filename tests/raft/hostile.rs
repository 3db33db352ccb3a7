//! Random, malformed and out-of-range messages fed to nodes in every role: the core must
//! never panic, and whatever it refuses it refuses with a typed error.

use flotilla::proto::raftpb::{ConfState, Entry, Message, Snapshot, SnapshotMetadata};
use flotilla::raft::{RaftError, Role};
use flotilla::testkit::Rng;
use flotilla::testkit::raft_sim::cluster::Cluster;

/// A message with every field drawn at random from small ranges around interesting values
/// (so some are valid, most are odd) plus occasional extremes.
fn random_message(rng: &mut Rng, to: u64) -> Message {
    let mut pick = |small: u64| -> u64 {
        match rng.range(0, 20) {
            0 => u64::MAX,
            1 => u64::MAX / 2,
            2 => 0,
            _ => rng.range(0, small),
        }
    };
    let msg_type = pick(22) as i32;
    let term = pick(12);
    let index = pick(20);
    let mut m = Message {
        msg_type,
        to: if pick(10) == 0 { 9 } else { to },
        from: pick(5),
        term,
        log_term: pick(12),
        index,
        commit: pick(20),
        reject: pick(2) == 1,
        reject_hint: pick(20),
        read_round: pick(6),
        ..Default::default()
    };
    let n = pick(4).min(4);
    for i in 0..n {
        m.entries.push(Entry {
            index: if pick(5) == 0 {
                pick(30)
            } else {
                index.wrapping_add(i + 1)
            },
            term: pick(12),
            entry_type: pick(4) as i32,
            data: vec![1; pick(8) as usize % 64].into(),
            context: Vec::new(),
        });
    }
    if pick(4) == 0 {
        let voters: Vec<u64> = (0..pick(4) % 5).map(|_| pick(6)).collect();
        let learners: Vec<u64> = (0..pick(3) % 3).map(|_| pick(6)).collect();
        let meta = SnapshotMetadata {
            conf_state: if pick(5) == 0 {
                None
            } else {
                Some(ConfState {
                    voters,
                    learners,
                    auto_leave: pick(3) == 0,
                    ..Default::default()
                })
            },
            index: pick(30),
            term: pick(12),
        };
        m.snapshot = Some(Snapshot {
            data: Default::default(),
            metadata: Some(meta),
        });
    }
    m
}

#[test]
fn random_messages_never_panic_and_errors_are_typed() {
    let mut rng = Rng::new(0xF1071);
    let mut refused = 0u64;
    for round in 0..40 {
        let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.check_quorum = round % 2 == 0);
        c.tick_all(12);
        c.stabilize();
        for i in 0..5 {
            if let Some(l) = c.leader() {
                let _ = c.propose(l, format!("x{i}").as_bytes());
            }
        }
        for _ in 0..500 {
            let to = rng.range(1, 4);
            let m = random_message(&mut rng, to);
            let Some(raw) = c.nodes.get_mut(&to).and_then(|n| n.raw.as_mut()) else {
                continue;
            };
            match raw.step(m) {
                Ok(()) => {}
                Err(
                    RaftError::InvalidMessage(_)
                    | RaftError::InvalidConfChange(_)
                    | RaftError::ProposalDropped(_),
                ) => refused += 1,
                Err(e) => panic!("unexpected error kind: {e:?}"),
            }
            // Output produced in response must itself be processable.
            c.process_ready(to);
            if rng.chance(20) {
                c.tick(to);
            }
        }
    }
    assert!(
        refused > 1000,
        "most random messages are malformed: {refused}"
    );
}

#[test]
fn refused_messages_change_nothing() {
    let fresh = || {
        let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.check_quorum = false);
        c.elect(1);
        c.propose(1, b"a").unwrap();
        c
    };
    let mut c = fresh();
    let before = c.node(2).raw().status();
    let mut rng = Rng::new(7);
    let mut refused = 0;
    for _ in 0..3000 {
        let m = random_message(&mut rng, 2);
        let raw = c.raw_mut(2);
        let had_ready = raw.has_ready();
        if let Err(e) = raw.step(m.clone()) {
            refused += 1;
            let raw = c.node(2).raw();
            assert_eq!(
                raw.has_ready(),
                had_ready,
                "refused {m:?} ({e}) produced output"
            );
            let after = raw.status();
            assert_eq!(after.hard_state, before.hard_state);
            assert_eq!(after.last_index, before.last_index);
            assert_eq!(after.conf_state, before.conf_state);
        } else {
            // Accepted messages may change state; restore a clean follower for the next one.
            c = fresh();
        }
    }
    assert!(refused > 500);
    assert_eq!(c.node(2).raw().raft().role(), Role::Follower);
}
