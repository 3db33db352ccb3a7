//! The Ready contract as an application sees it through `RawNode`: when there is something
//! to do, and which writes must be fsynced before the messages that depend on them go out.

use crate::common::raft::*;

/// A follower of leader 1 in term 5 holding `entries` (indexes 1..), all persisted.
fn follower_with(entries: u64) -> RawNode<MemStorage> {
    let mut n = lone_node(2, &[1, 2, 3], |_| {});
    let append = with(msg(MsgAppend, 1, 2, 5), |m| {
        m.entries = (1..=entries).map(|i| ent(i, 5)).collect();
    });
    n.step(append).unwrap();
    settle(&mut n);
    assert_eq!(n.raft().leader_id(), 1);
    n
}

/// A write must be synced when it holds entries, a snapshot, a new term or a new vote: each
/// of those is a promise to other nodes. A commit index alone is not (it can be learned
/// again from the leader), and syncing it would cost an fsync per heartbeat.
#[test]
fn a_ready_must_be_synced_exactly_when_it_holds_a_promise() {
    // Entries alone (term and vote unchanged).
    let mut n = follower_with(0);
    n.step(with(msg(MsgAppend, 1, 2, 5), |m| {
        m.entries = vec![ent(1, 5)]
    }))
    .unwrap();
    let rd = n.ready().unwrap();
    assert!(rd.hard_state.is_none() && rd.entries.len() == 1);
    assert!(rd.must_sync, "entries");

    // A snapshot alone.
    let mut n = follower_with(0);
    let snap = with(msg(MsgSnapshot, 1, 2, 5), |m| {
        m.snapshot = Some(snapshot_of(10, 5, &[1, 2, 3], &[]))
    });
    n.step(snap).unwrap();
    let rd = n.ready().unwrap();
    assert!(rd.snapshot.is_some() && rd.entries.is_empty());
    assert!(rd.must_sync, "a snapshot");

    // The commit index alone.
    let mut n = follower_with(2);
    n.step(with(msg(MsgHeartbeat, 1, 2, 5), |m| m.commit = 2))
        .unwrap();
    let rd = n.ready().unwrap();
    let hs = rd.hard_state.expect("the commit index moved");
    assert_eq!((hs.term, hs.vote, hs.commit), (5, 0, 2));
    assert!(rd.entries.is_empty() && rd.snapshot.is_none());
    assert!(!rd.must_sync, "a commit index alone");

    // A new term alone (no vote before, none after).
    let mut n = lone_node(2, &[1, 2, 3], |_| {});
    n.step(msg(MsgAppendResponse, 1, 2, 5)).unwrap();
    let rd = n.ready().unwrap();
    let hs = rd.hard_state.expect("the term moved");
    assert_eq!((hs.term, hs.vote), (5, 0));
    assert!(rd.entries.is_empty() && rd.snapshot.is_none());
    assert!(rd.must_sync, "a new term");

    // A new vote alone, in a term already persisted.
    settle(&mut n);
    n.step(msg(MsgRequestVote, 3, 2, 5)).unwrap();
    let rd = n.ready().unwrap();
    let hs = rd.hard_state.expect("the vote moved");
    assert_eq!((hs.term, hs.vote), (5, 3));
    assert!(rd.entries.is_empty() && rd.snapshot.is_none());
    assert!(rd.must_sync, "a new vote");
}

/// A pre-candidate that loses its pre-vote follows again in the same term: only its soft
/// state changes, with nothing to persist or send, and `has_ready` must still say so (an
/// application polling it would otherwise never learn the role change).
#[test]
fn a_role_change_alone_is_something_to_do() {
    let mut n = lone_node(1, &[1, 2, 3], |_| {});
    n.step(msg(MsgAppendResponse, 2, 1, 5)).unwrap();
    settle(&mut n);
    for _ in 0..timeout(&n) {
        n.tick();
    }
    assert_eq!(n.raft().role(), Role::PreCandidate);
    settle(&mut n);
    for from in [2, 3] {
        let refusal = with(msg(MsgRequestPreVoteResponse, from, 1, 5), |m| {
            m.reject = true
        });
        n.step(refusal).unwrap();
    }
    assert_eq!((n.raft().role(), n.raft().term()), (Role::Follower, 5));
    assert!(n.has_ready(), "only the role changed");
    let rd = n.ready().unwrap();
    assert!(rd.hard_state.is_none());
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert_eq!(rd.soft_state.map(|s| s.role), Some(Role::Follower));
}

/// `report_unreachable` through the API puts a replicating follower back to probing.
#[test]
fn an_unreachable_report_sends_the_follower_back_to_probing() {
    let mut c = elected3();
    c.propose(1, b"a").unwrap();
    c.stabilize();
    assert_eq!(pr(&c, 1, 2).state, ProgressState::Replicate);
    c.raw_mut(1).report_unreachable(2);
    assert_eq!(pr(&c, 1, 2).state, ProgressState::Probe);
    assert_eq!(pr(&c, 1, 3).state, ProgressState::Replicate);
}
