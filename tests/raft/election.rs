//! Elections: randomized timeouts, pre-vote and check-quorum.

use std::collections::BTreeSet;

use crate::common::raft::*;

// ---- 1. randomized election timeout ---------------------------------------------------

#[test]
fn election_timeout_is_randomized_across_nodes_and_seeds() {
    let mut all = BTreeSet::new();
    for seed in 0..20 {
        let per_node: BTreeSet<usize> = (1..=5)
            .map(|id| timeout(&lone_node(id, &[1, 2, 3, 4, 5], |c| c.seed = seed)))
            .collect();
        let in_range = |t: &usize| (ET..2 * ET).contains(t);
        assert!(per_node.iter().all(in_range), "{per_node:?}");
        assert!(per_node.len() > 1, "seed {seed}: five nodes, one timeout");
        all.extend(per_node);
    }
    assert!(all.len() >= 5, "too little spread: {all:?}");
    let by_seed: BTreeSet<usize> = (0..20)
        .map(|seed| timeout(&lone_node(1, &[1, 2, 3], |c| c.seed = seed)))
        .collect();
    assert!(by_seed.len() > 1, "same timeout under every seed");
}

#[test]
fn election_timeout_is_rerandomized_on_every_reset_and_honoured() {
    let mut n = lone_node(1, &[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    let mut seen = Vec::new();
    for _ in 0..30 {
        let t = timeout(&n);
        assert!((ET..2 * ET).contains(&t));
        let (t0, mut ticks) = (n.raft().term(), 0);
        while n.raft().term() == t0 {
            n.tick();
            ticks += 1;
            assert!(ticks < 2 * ET, "no campaign within 2*election_tick");
        }
        assert_eq!(ticks, t, "campaigns exactly when its timeout elapses");
        seen.push(t);
        let _ = n.ready().unwrap();
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert!(distinct.len() >= 4, "timeouts not re-randomized: {seen:?}");
}

// ---- 2. pre-vote ----------------------------------------------------------------------

#[test]
fn prevote_partitioned_node_keeps_its_term_and_does_not_disrupt() {
    let mut c = elected3();
    c.propose(1, b"x").unwrap();
    let t = term(&c, 1);
    c.isolate(3);
    c.tick_all(5 * ET);
    assert_eq!(role(&c, 3), Role::PreCandidate, "node 3 did time out");
    assert_eq!(term(&c, 3), t, "pre-vote must not raise the term");
    c.heal();
    c.tick_all(3 * ET);
    assert_eq!(c.leader(), Some(1));
    for id in 1..=3 {
        assert_eq!(term(&c, id), t, "node {id}");
    }
    assert_eq!(st(&c, 3).soft_state.leader_id, 1);
    c.propose(1, b"y").unwrap();
    assert_eq!(c.applied_data(3), vec![b"x".to_vec(), b"y".to_vec()]);
    assert_clean(&c);
}

#[test]
fn without_prevote_a_partitioned_node_inflates_its_term() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.pre_vote = false, 1);
    let t = term(&c, 1);
    c.isolate(3);
    c.tick_all(5 * ET);
    assert!(term(&c, 3) >= t + 2, "term {} vs {t}", term(&c, 3));
    assert_eq!(term(&c, 1), t);
}

/// A pre-vote for a later term may be granted by a node that follows a leader or voted in
/// its own term (the election has not happened yet); a pre-vote for its own term may not:
/// there the node keeps to its leader and to its vote, exactly as for a vote.
#[test]
fn prevote_for_our_own_term_is_refused_to_a_node_other_than_our_leader_or_vote() {
    let prevote = |term| msg(MsgRequestPreVote, 3, 2, term);
    let answer = |n: &mut RawNode<MemStorage>, m: Message| {
        n.step(m).unwrap();
        let out = settle(n);
        let (resp, after_persist) = out.one(MsgRequestPreVoteResponse);
        assert!(!after_persist, "a pre-vote answer promises nothing durable");
        (resp.reject, n.raft().term())
    };
    let paper = |cfg: &mut Config| cfg.check_quorum = false;
    // Following leader 1 in term 5.
    let mut n = lone_node(2, &[1, 2, 3], paper);
    n.step(msg(MsgHeartbeat, 1, 2, 5)).unwrap();
    assert_eq!(answer(&mut n, prevote(5)), (true, 5));
    assert_eq!(
        answer(&mut n, prevote(6)),
        (false, 5),
        "a later term: granted"
    );
    // Voted for 1 in term 5, no leader yet.
    let mut n = lone_node(2, &[1, 2, 3], paper);
    n.step(msg(MsgRequestVote, 1, 2, 5)).unwrap();
    settle(&mut n);
    assert_eq!(n.raft().vote(), 1);
    assert_eq!(answer(&mut n, prevote(5)), (true, 5));
    assert_eq!(answer(&mut n, prevote(6)), (false, 5));
    // Neither a leader nor a vote in term 5: the same pre-vote is granted.
    let mut n = lone_node(2, &[1, 2, 3], paper);
    n.step(msg(MsgAppendResponse, 1, 2, 5)).unwrap();
    assert_eq!((n.raft().term(), n.raft().leader_id()), (5, 0));
    assert_eq!(answer(&mut n, prevote(5)), (false, 5));
}

// ---- 3. check-quorum ------------------------------------------------------------------

#[test]
fn check_quorum_leader_cut_off_from_majority_steps_down() {
    let mut c = elected3();
    let t = term(&c, 1);
    c.isolate(1);
    let mut ticks = 0;
    while role(&c, 1) == Role::Leader {
        c.tick_all(1);
        ticks += 1;
        assert!(ticks <= 2 * ET, "still leader after {ticks} ticks alone");
    }
    assert_eq!((role(&c, 1), term(&c, 1)), (Role::Follower, t));
    c.tick_all(3 * ET);
    let l = c.leader().expect("the majority elects a leader");
    assert!((l == 2 || l == 3) && term(&c, l) > t);
}

#[test]
fn check_quorum_followers_in_lease_ignore_vote_requests() {
    let mut c = elected3();
    let t = term(&c, 2);
    let req = with(msg(MsgRequestVote, 3, 2, t + 1), |m| {
        (m.index, m.log_term) = (NOOP, t);
    });
    let pre = with(req.clone(), |m| m.msg_type = MsgRequestPreVote as i32);
    let before = st(&c, 2);
    for m in [req.clone(), pre] {
        c.raw_mut(2).step(m).unwrap();
        assert_eq!(st(&c, 2).hard_state, before.hard_state);
        assert_eq!(st(&c, 2).soft_state.leader_id, 1);
        assert!(!c.node(2).raw().has_ready(), "must stay silent");
    }
    // Without word from the leader for an election timeout, the lease is over: it votes.
    let rt = timeout(c.node(2).raw());
    assert!(rt > ET, "precondition: node 2 must not campaign yet");
    tick_one(&mut c, 2, ET);
    c.raw_mut(2).step(req).unwrap();
    let hs = st(&c, 2).hard_state;
    assert_eq!((hs.term, hs.vote), (t + 1, 3));
}
