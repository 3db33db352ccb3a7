//! The quiescence hooks the store's hibernation builds on.

use crate::common::raft::*;

#[test]
fn settled_group_is_quiescent_and_a_proposal_ends_it() {
    let mut c = lease_cluster();
    c.propose(1, b"a").unwrap();
    c.tick_all(2); // a heartbeat round tells followers the final commit index
    for id in [1, 2, 3] {
        assert!(c.node(id).raw().is_quiescent(), "node {id}");
    }
    c.raw_mut(1).propose(b"b".to_vec(), Vec::new()).unwrap();
    assert!(!c.node(1).raw().is_quiescent(), "an uncommitted proposal");
    c.stabilize();
    c.tick_all(2);
    assert!(c.node(1).raw().is_quiescent());
}

#[test]
fn follower_stops_being_quiescent_when_the_leader_goes_silent() {
    let (mut c, et) = (lease_cluster(), ET);
    c.propose(1, b"a").unwrap();
    assert!(c.node(2).raw().is_quiescent());
    c.isolate(1);
    for _ in 0..et {
        c.tick(2);
    }
    assert!(!c.node(2).raw().is_quiescent());
}

#[test]
fn waking_voids_the_lease_until_a_new_round_is_acknowledged() {
    let mut c = lease_cluster();
    c.tick_all(2);
    assert!(c.node(1).raw().status().lease_valid);
    // Hibernate: no ticks for a while (the core cannot see how long), then wake.
    c.raw_mut(1).wake();
    assert!(
        !c.node(1).raw().status().lease_valid,
        "the pause may have outlasted the lease"
    );
    // A read now needs a heartbeat round instead of the lease.
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    assert!(c.node(1).read_states.is_empty());
    c.stabilize();
    assert_eq!(c.node(1).read_states.len(), 1);
    assert!(
        c.node(1).raw().status().lease_valid,
        "renewed by the read's round"
    );
}

/// Ticks that fell behind real time void the lease, and the answers to a round sent
/// before that grant none; unlike waking, the leader's timers stand.
#[test]
fn a_voided_lease_takes_a_round_sent_after_it() {
    let mut c = lease_cluster();
    c.tick_all(2);
    assert!(c.node(1).raw().status().lease_valid);
    // A heartbeat round goes out; its answers are held.
    c.tick(1);
    c.tick(1);
    let (_, held) = pump(&mut c, |m| is(m, MsgHeartbeatResponse));
    assert!(!held.is_empty());
    c.raw_mut(1).void_lease();
    assert!(!c.node(1).raw().status().lease_valid, "void at once");
    for m in held {
        c.deliver(m);
    }
    c.stabilize();
    assert!(
        !c.node(1).raw().status().lease_valid,
        "a round sent before grants nothing"
    );
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    c.stabilize();
    assert!(
        c.node(1).raw().status().lease_valid,
        "a round after renews it"
    );
    assert_eq!(c.leader(), Some(1));
}

#[test]
fn woken_leader_does_not_step_down_for_the_pause() {
    let (mut c, et) = (lease_cluster(), ET);
    c.tick_all(et - 1);
    c.tick(1); // the quorum check runs and clears the activity flags
    // Hibernation: followers stop answering, the leader stops ticking just short of its
    // next quorum check.
    c.isolate(2);
    c.isolate(3);
    c.stabilize();
    for _ in 0..et - 1 {
        c.tick(1);
        c.stabilize();
    }
    c.heal();
    c.raw_mut(1).wake();
    // The first check after waking must not count the pause against the followers.
    c.tick(1);
    c.stabilize();
    assert_eq!(c.leader(), Some(1));
}

/// A round sent before a pause and answered after it says nothing about how long the pause
/// was: its answers grant no lease, even to a leader whose clock had not moved at all.
#[test]
fn answers_to_a_round_sent_before_a_pause_grant_no_lease() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.start = NodeStart::Created;
        cfg.read_only_option = ReadOnlyOption::LeaseBased;
    });
    c.elect(1); // no tick yet: the leader's clock is at 0
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    let (_, held) = pump(&mut c, |m| is(m, MsgHeartbeatResponse));
    assert_eq!(held.len(), 2);
    for id in [1, 2, 3] {
        c.raw_mut(id).wake();
    }
    for m in held {
        c.deliver(m);
    }
    c.stabilize();
    assert_eq!(c.node(1).read_states, vec![rs(c.committed(1), b"r")]);
    assert!(!st(&c, 1).lease_valid);
}

/// A follower that stopped answering keeps the leader awake — unless the store says that
/// follower is down; and even then only while the rest still form a quorum.
#[test]
fn an_absent_follower_is_disregarded_while_the_rest_form_a_quorum() {
    let mut c = lease_cluster();
    c.propose(1, b"a").unwrap();
    c.tick_all(2);
    c.isolate(3);
    c.propose(1, b"b").unwrap();
    c.tick_all(2);
    c.stabilize();
    let leader = c.node(1).raw();
    assert!(!leader.is_quiescent(), "node 3 missed an entry");
    assert!(!leader.is_quiescent_ignoring(|_| false));
    assert!(
        leader.is_quiescent_ignoring(|id| id == 3),
        "node 3 is down: the leader and node 2 are a quorum"
    );
    assert!(
        !leader.is_quiescent_ignoring(|id| id == 2 || id == 3),
        "with both followers down the leader has no quorum"
    );
    assert!(
        !leader.is_quiescent_ignoring(|id| id == 2),
        "node 3, present, is behind"
    );
    // The leader itself is never absent.
    assert!(leader.is_quiescent_ignoring(|id| id == 1 || id == 3));
}
