//! Malformed, stale, duplicated and reordered messages.

use crate::common::raft::*;

// ---- 16. hostile and odd messages -----------------------------------------------------

fn expect_invalid(c: &mut Cluster, id: u64, m: Message) {
    let (before, what) = (st(c, id), format!("{m:?}"));
    let r = c.raw_mut(id).step(m);
    assert!(
        matches!(r, Err(RaftError::InvalidMessage(_))),
        "{what}: {r:?}"
    );
    assert_eq!(st(c, id), before, "{what} changed the node");
    assert!(!c.node(id).raw().has_ready(), "{what} produced output");
}

#[test]
fn malformed_messages_are_refused_and_change_nothing() {
    let mut c = elected3();
    propose_n(&mut c, 3);
    let (t, l) = (term(&c, 2), last(&c, 2));
    let hb = || msg(MsgHeartbeat, 1, 2, t);
    let append = |entries: Vec<Entry>| {
        let m = msg(MsgAppend, 1, 2, t);
        with(m, |m| (m.index, m.log_term, m.entries) = (l, t, entries))
    };
    let snap = msg(MsgSnapshot, 1, 2, t);
    let mut bad = vec![
        with(hb(), |m| m.msg_type = 99),
        with(hb(), |m| m.to = 3),
        with(hb(), |m| m.from = 0),
        with(hb(), |m| m.from = 2),
        with(hb(), |m| m.term = 0),
        with(hb(), |m| m.entries = vec![ent(l + 1, t)]),
        with(hb(), |m| m.commit = l + 5), // beyond the follower's log
        with(hb(), |m| (m.term, m.from, m.commit) = (t + 1, 3, l + 5)),
        append(vec![ent(l + 2, t)]), // does not follow `index`
        append(vec![ent(l + 1, t), ent(l + 2, t - 1)]), // decreasing terms
        append(vec![ent(l + 1, t + 1)]), // above the message term
        append(vec![ent(l + 1, 0)]),
        snap.clone(),
        with(snap.clone(), |m| m.snapshot = Some(Snapshot::default())),
        // Metadata wrong in exactly one way each.
        with(snap.clone(), |m| {
            m.snapshot = Some(snapshot_of(l + 5, t, &[], &[]))
        }),
        with(snap.clone(), |m| {
            m.snapshot = Some(snapshot_of(0, t, &[1, 2, 3], &[]))
        }),
        with(snap.clone(), |m| {
            m.snapshot = Some(snapshot_of(u64::MAX, t, &[1, 2, 3], &[]));
        }),
        with(snap.clone(), |m| {
            m.snapshot = Some(snapshot_of(l + 5, 0, &[1, 2, 3], &[]))
        }),
        with(snap.clone(), |m| {
            m.snapshot = Some(snapshot_of(l + 5, t + 1, &[1, 2, 3], &[]));
        }),
        // Configurations no group can have, in a snapshot of a newer term: refused before
        // the term moves.
        with(snap.clone(), |m| {
            m.term = t + 1;
            m.snapshot = Some(snapshot_of(l + 5, t + 1, &[0, 1, 2], &[]));
        }),
        with(snap, |m| {
            m.term = t + 1;
            m.snapshot = Some(snapshot_of(l + 5, t + 1, &[1, 2, 3], &[3]));
        }),
        with(msg(MsgRequestVote, 3, 2, t + 1), |m| m.log_term = t + 2),
    ];
    let local = [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgUnreachable,
        MsgSnapshotStatus,
    ];
    for t0 in local.into_iter().chain([MsgCheckQuorum]) {
        bad.push(msg(t0, 1, 2, t));
    }
    for m in bad {
        expect_invalid(&mut c, 2, m);
    }
    // At the leader: an ack beyond its log, an ack of a read round never sent.
    let lead_last = last(&c, 1);
    let ack = msg(MsgAppendResponse, 2, 1, t);
    let ack = with(ack, |m| m.index = lead_last + 10);
    expect_invalid(&mut c, 1, ack);
    let round = with(msg(MsgHeartbeatResponse, 2, 1, t), |m| m.read_round = 1000);
    expect_invalid(&mut c, 1, round);
    // The group is unharmed.
    c.propose(1, b"ok").unwrap();
    assert_eq!(c.applied_data(2).last().unwrap(), b"ok");
    assert_clean(&c);
}

#[test]
fn stale_messages_are_ignored_without_error() {
    let mut c = elected3();
    propose_n(&mut c, 3);
    let t = term(&c, 2);
    assert_eq!(t, BOOTSTRAP_TERM + 1);
    let (f2, l1) = (st(&c, 2), st(&c, 1));
    // An append of a deposed leader of an older term, conflicting with our log.
    let stale_append = with(msg(MsgAppend, 3, 2, t - 1), |m| {
        (m.index, m.log_term, m.commit) = (BOOTSTRAP_INDEX, t - 1, NOOP + 1);
        m.entries = vec![ent(NOOP, t - 1), ent(NOOP + 1, t - 1)];
    });
    let stale_vote = with(msg(MsgRequestVote, 3, 2, t - 1), |m| {
        (m.index, m.log_term) = (100, t - 1);
    });
    for m in [stale_append, stale_vote] {
        c.raw_mut(2).step(m).unwrap();
        let now = st(&c, 2);
        assert_eq!(now.hard_state, f2.hard_state);
        assert_eq!(now.last_index, f2.last_index);
        assert_eq!(now.soft_state, f2.soft_state);
    }
    let stale_ack = with(msg(MsgAppendResponse, 2, 1, t - 1), |m| {
        (m.index, m.reject) = (NOOP, true);
    });
    c.raw_mut(1).step(stale_ack).unwrap();
    assert_eq!(st(&c, 1), l1);
    c.stabilize();
    assert_eq!((c.leader(), term(&c, 1)), (Some(1), t));
    assert_eq!(c.applied_data(2).len(), 3);
    assert_clean(&c);
}

/// A pre-candidate of an older term (cut off while the group moved on) is told the current
/// term by whoever it polls, and steps down, instead of polling until a leader finds it.
#[test]
fn a_stale_prevote_is_answered_with_the_current_term() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.check_quorum = false, 1);
    let t = term(&c, 3);
    c.isolate(3);
    c.elect(2);
    c.elect(1);
    assert_eq!(term(&c, 1), t + 2);
    c.heal();
    let rt = timeout(c.node(3).raw());
    tick_one(&mut c, 3, rt);
    assert_eq!((role(&c, 3), term(&c, 3)), (Role::PreCandidate, t));
    let answers = watch(&mut c, |m| is(m, MsgRequestPreVoteResponse));
    c.stabilize(); // only 3's pre-votes are in flight; the leader does not tick
    assert_eq!(answers.borrow().len(), 2);
    assert!(answers.borrow().iter().all(|m| m.reject && m.term == t + 2));
    assert_eq!((role(&c, 3), term(&c, 3)), (Role::Follower, t + 2));
}

#[test]
fn duplicated_and_reordered_messages_do_no_harm() {
    let mut c = elected3();
    let t = term(&c, 1);
    let mut expected = Vec::new();
    for k in 0..20u8 {
        if k % 4 == 0 {
            c.raw_mut(1).read_index(vec![k]).unwrap();
        }
        c.raw_mut(1).propose(vec![k], vec![]).unwrap();
        expected.push(vec![k]);
        c.tick(1);
        run(&mut c, Delivery::Chaos, |_| false, |_| {});
    }
    c.tick_all(HB);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), expected, "node {id}");
    }
    assert_eq!((c.leader(), term(&c, 1)), (Some(1), t));
    assert_eq!(c.node(1).read_states.len(), 5);
    assert_clean(&c);
}
