//! Reads: the leader lease and batched ReadIndex.

use crate::common::raft::*;

// ---- 4. leader lease ------------------------------------------------------------------

#[test]
fn lease_reads_skip_the_heartbeat_round_until_the_lease_expires() {
    let mut c = elected(
        &[1, 2, 3],
        |c| c.read_only_option = ReadOnlyOption::LeaseBased,
        1,
    );
    assert!(!st(&c, 1).lease_valid, "no lease before a round is acked");
    c.tick_all(HB);
    assert!(st(&c, 1).lease_valid);
    let hb = delivered(&c, MsgHeartbeat);
    c.raw_mut(1).read_index(b"r1".to_vec()).unwrap();
    let want = vec![rs(c.committed(1), b"r1")];
    assert_eq!(
        c.node(1).raw().raft().read_states(),
        want,
        "answered at once"
    );
    let rd = c.raw_mut(1).ready().unwrap();
    assert_eq!(rd.read_states, want);
    assert!(rd.messages.is_empty(), "no heartbeat round");
    c.stabilize();
    assert_eq!(delivered(&c, MsgHeartbeat), hb);
    // Isolated, the leader's lease runs out (before check-quorum deposes it).
    c.isolate(1);
    let mut ticks = 0;
    while st(&c, 1).lease_valid {
        c.tick(1);
        c.stabilize();
        ticks += 1;
        assert!(ticks <= ET, "lease still valid after {ticks} ticks alone");
    }
    assert_eq!(role(&c, 1), Role::Leader);
    // Without a lease a read needs a round, which cannot complete.
    c.raw_mut(1).read_index(b"late".to_vec()).unwrap();
    assert!(c.node(1).raw().raft().read_states().is_empty());
    c.stabilize();
    assert!(c.node(1).read_states.is_empty());
}

/// The lease lasts `election_tick - lease_margin_ticks` ticks from the moment its round was
/// sent: a follower refuses votes for an election timeout after it last heard from the
/// leader, and the margin absorbs clock drift.
#[test]
fn the_lease_runs_election_tick_less_the_margin_from_when_its_round_was_sent() {
    let mut c = lease_cluster();
    tick_one(&mut c, 1, HB); // the round goes out at this tick
    c.stabilize();
    assert!(st(&c, 1).lease_valid);
    c.isolate(1);
    let lease = ET - Config::new(1).lease_margin_ticks;
    let mut ticks = 0;
    while st(&c, 1).lease_valid {
        c.tick(1);
        ticks += 1;
        assert!(ticks <= ET, "lease still valid after {ticks} ticks alone");
    }
    assert_eq!(ticks, lease);
    assert_eq!(
        role(&c, 1),
        Role::Leader,
        "the lease ends before check-quorum acts"
    );
}

#[test]
fn lease_based_reads_require_check_quorum() {
    let mut cfg = Config::new(1);
    cfg.read_only_option = ReadOnlyOption::LeaseBased;
    cfg.check_quorum = false;
    assert!(matches!(cfg.validate(), Err(RaftError::InvalidConfig(_))));
    let r = RawNode::new(cfg.clone(), MemStorage::with_voters(&[1]));
    assert!(matches!(r, Err(RaftError::InvalidConfig(_))));
    cfg.check_quorum = true;
    assert_eq!(cfg.validate(), Ok(()));
}

// ---- 5. ReadIndex batching ------------------------------------------------------------

#[test]
fn reads_share_one_heartbeat_round_and_followers_forward_theirs() {
    let mut c = elected3();
    c.propose(1, b"a").unwrap();
    let ctxs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'r', i]).collect();
    for ctx in &ctxs {
        c.raw_mut(1).read_index(ctx.clone()).unwrap();
    }
    assert!(c.node(1).raw().raft().read_states().is_empty());
    let (seen, _) = pump(&mut c, |_| false);
    let hbs: Vec<&Message> = seen.iter().filter(|m| is(m, MsgHeartbeat)).collect();
    let to: Vec<u64> = hbs.iter().map(|m| m.to).collect();
    assert!(to == [2, 3] || to == [3, 2], "one per follower: {to:?}");
    assert_eq!(hbs[0].read_round, hbs[1].read_round);
    let want: Vec<ReadState> = ctxs.iter().map(|x| rs(c.committed(1), x)).collect();
    assert_eq!(c.node(1).read_states, want, "in order, at the commit index");
    // A follower's read is forwarded to the leader and answered.
    c.raw_mut(2).read_index(b"f".to_vec()).unwrap();
    let (seen, _) = pump(&mut c, |_| false);
    let fwd = |m: &Message| is(m, MsgReadIndex) && m.from == 2 && m.to == 1;
    assert!(seen.iter().any(fwd));
    assert_eq!(c.node(2).read_states, vec![rs(c.committed(1), b"f")]);
}

/// With `ReadOnlyOption::Safe` every read waits for a heartbeat round, however recently a
/// quorum answered the last one: answering from the lease is `LeaseBased`'s alone.
#[test]
fn safe_reads_take_a_heartbeat_round_even_right_after_one() {
    let mut c = elected3();
    c.propose(1, b"a").unwrap();
    tick_one(&mut c, 1, HB);
    c.stabilize(); // a round both followers just answered
    assert!(!st(&c, 1).lease_valid);
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    assert!(
        c.node(1).raw().raft().read_states().is_empty(),
        "answered without a round"
    );
    let (seen, _) = pump(&mut c, |_| false);
    assert!(seen.iter().any(|m| is(m, MsgHeartbeat)));
    assert_eq!(c.node(1).read_states, vec![rs(c.committed(1), b"r")]);
}

/// The leader judges a forwarded read or transfer by what it asks, not by who forwarded it:
/// a node it does not track (removed, or not added yet) is answered too.
#[test]
fn the_leader_answers_requests_forwarded_by_nodes_it_does_not_track() {
    let mut c = lease_cluster();
    tick_one(&mut c, 1, HB);
    c.stabilize();
    assert!(st(&c, 1).lease_valid);
    let read = with(msg(MsgReadIndex, 4, 1, 0), |m| m.context = b"r4".to_vec());
    c.raw_mut(1).step(read).unwrap();
    let committed = c.committed(1);
    let rd = c.raw_mut(1).ready().unwrap();
    let answer = rd.messages.iter().find(|m| is(m, MsgReadIndexResponse));
    let answer = answer.expect("the read is answered");
    assert_eq!((answer.to, answer.index), (4, committed));
    assert_eq!(answer.context, b"r4");
    let transfer = with(msg(MsgTransferLeader, 4, 1, 0), |m| m.transferee = 2);
    c.raw_mut(1).step(transfer).unwrap();
    assert_eq!(st(&c, 1).lead_transferee, Some(2));
}

/// A follower takes read states only from its leader: a read response from any other node
/// (misrouted, or forged) confirms nothing.
#[test]
fn read_index_responses_count_only_from_the_leader() {
    let mut n = lone_node(2, &[1, 2, 3], |_| {});
    n.step(msg(MsgHeartbeat, 1, 2, 5)).unwrap();
    n.read_index(b"r".to_vec()).unwrap();
    let resp = |from| {
        with(msg(MsgReadIndexResponse, from, 2, 5), |m| {
            m.context = b"r".to_vec()
        })
    };
    n.step(resp(3)).unwrap();
    assert!(n.raft().read_states().is_empty());
    n.step(resp(1)).unwrap();
    assert_eq!(n.raft().read_states(), &[rs(0, b"r")]);
}

#[test]
fn reads_wait_for_the_new_leaders_noop_to_commit() {
    let mut c = booted(Cluster::new(&[1, 2, 3], |_| {}));
    c.set_filter(|m| !is(m, MsgAppend)); // the no-op reaches nobody
    c.elect(1);
    assert_eq!(c.committed(1), BOOTSTRAP_INDEX);
    c.raw_mut(1).read_index(b"early".to_vec()).unwrap();
    c.stabilize();
    assert!(c.node(1).read_states.is_empty(), "read before the no-op");
    c.clear_filter();
    c.tick_all(HB);
    assert_eq!(c.committed(1), NOOP);
    assert_eq!(c.node(1).read_states, vec![rs(NOOP, b"early")]);
}

/// A single voter confirms its own reads: answered in the next Ready, with no message. A
/// joint configuration whose incoming half is one voter is not a single voter: its reads
/// wait for a quorum of the outgoing half too.
#[test]
fn a_lone_voter_answers_reads_alone_but_a_joint_one_waits_for_both_halves() {
    let mut c = elected(&[1], |_| {}, 1);
    c.raw_mut(1).read_index(b"solo".to_vec()).unwrap();
    let rd = c.raw_mut(1).ready().unwrap();
    assert_eq!(rd.read_states, vec![rs(c.committed(1), b"solo")]);
    assert!(rd.messages.is_empty());

    let mut c = elected3();
    let shrink = [(RemoveNode, 2), (RemoveNode, 3)];
    let cc = cc_v2(ConfChangeTransition::Explicit, &shrink);
    c.raw_mut(1).propose_conf_change(cc).unwrap();
    c.stabilize();
    let cs = st(&c, 1).conf_state;
    assert_eq!((cs.voters, cs.voters_outgoing), (vec![1], vec![1, 2, 3]));
    c.isolate(1);
    c.raw_mut(1).read_index(b"joint".to_vec()).unwrap();
    c.stabilize();
    assert!(
        c.node(1).read_states.is_empty(),
        "answered without the outgoing half"
    );
    c.heal();
    c.tick_all(HB);
    assert_eq!(c.node(1).read_states, vec![rs(c.committed(1), b"joint")]);
}
