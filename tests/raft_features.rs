//! Feature tests of the consensus core, one section per feature listed in the README. Each
//! test asserts behaviour that breaks if its feature does.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;

use ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
use MessageType::*;
use flotilla::proto::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};
use flotilla::raft::{
    ConfChangeRejection, Config, DropReason, LogStorage, MemStorage, NodeStart, RaftError, RawNode,
    ReadOnlyOption, ReadState, Role, Status,
};
use flotilla::raft::{ProgressState, ProgressStatus};
use flotilla::testkit::raft_sim::cluster::{BOOTSTRAP_INDEX, BOOTSTRAP_TERM, Cluster};

const ET: usize = 10;
const HB: usize = 2;
/// Index of the first leader's no-op.
const NOOP: u64 = BOOTSTRAP_INDEX + 1;

// ---- helpers --------------------------------------------------------------------------

/// Lets the check-quorum boot guard lapse (one election timeout) without electing anyone.
fn booted(mut c: Cluster) -> Cluster {
    c.tick_all(ET);
    assert_eq!(c.leader(), None, "no election expected while booting");
    c
}

fn elected(ids: &[u64], tune: impl Fn(&mut Config), leader: u64) -> Cluster {
    let mut c = booted(Cluster::new(ids, tune));
    c.elect(leader);
    c
}

fn elected3() -> Cluster {
    elected(&[1, 2, 3], |_| {}, 1)
}

fn st(c: &Cluster, id: u64) -> Status {
    c.node(id).raw().status()
}

fn term(c: &Cluster, id: u64) -> u64 {
    st(c, id).hard_state.term
}

fn role(c: &Cluster, id: u64) -> Role {
    c.node(id).raw().raft().role()
}

fn last(c: &Cluster, id: u64) -> u64 {
    c.node(id).raw().raft().log().last_index()
}

fn quiescent(c: &Cluster, id: u64) -> bool {
    c.node(id).raw().is_quiescent()
}

/// Proposes `n` one-byte entries 0, 1, ... at leader 1, each settled.
fn propose_n(c: &mut Cluster, n: u8) {
    for i in 0..n {
        c.propose(1, &[i]).unwrap();
    }
}

/// Ticks one node `n` times without delivering anything.
fn tick_one(c: &mut Cluster, id: u64, n: usize) {
    for _ in 0..n {
        c.tick(id);
    }
}

/// The leader's view of follower `id`.
fn pr(c: &Cluster, leader: u64, id: u64) -> ProgressStatus {
    st(c, leader).progress[&id].clone()
}

fn entry(c: &Cluster, id: u64, index: u64) -> Entry {
    let log = &c.node(id).raw().raft().log();
    log.slice(index, index + 1, u64::MAX).expect("entry in log")[0].clone()
}

fn delivered(c: &Cluster, t: MessageType) -> u64 {
    c.delivered.get(&t).copied().unwrap_or(0)
}

fn is(m: &Message, t: MessageType) -> bool {
    m.msg_type == t as i32
}

fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let m = Message::default();
    with(m, |m| {
        (m.msg_type, m.from, m.to, m.term) = (t as i32, from, to, term)
    })
}

fn with(mut m: Message, f: impl FnOnce(&mut Message)) -> Message {
    f(&mut m);
    m
}

fn ent(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    (e.index, e.term) = (index, term);
    e
}

fn rs(index: u64, ctx: &[u8]) -> ReadState {
    ReadState {
        index,
        request_ctx: ctx.to_vec(),
    }
}

fn cc_v1(t: ConfChangeType, node_id: u64) -> ConfChange {
    ConfChange {
        change_type: t as i32,
        node_id,
        context: vec![],
    }
}

fn cc_v2(tr: ConfChangeTransition, changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let single = |&(t, node_id): &(ConfChangeType, u64)| ConfChangeSingle {
        change_type: t as i32,
        node_id,
    };
    let changes = changes.iter().map(single).collect();
    ConfChangeV2 {
        transition: tr as i32,
        changes,
        context: vec![],
    }
}

fn dropped(r: Result<u64, RaftError>) -> DropReason {
    match r {
        Err(RaftError::ProposalDropped(d)) => d,
        other => panic!("expected a dropped proposal, got {other:?}"),
    }
}

fn assert_clean(c: &Cluster) {
    assert!(c.step_errors.is_empty(), "step errors: {:?}", c.step_errors);
    assert!(c.checker.failures.is_empty(), "{:?}", c.checker.failures);
}

/// Runs the cluster until it settles (like `stabilize`), holding back the messages `hold`
/// selects and calling `observe` after every round. With `chaos`, each round's messages are
/// delivered twice, in reverse order, every third one a round late. Returns (delivered
/// messages in order, held messages).
fn run(
    c: &mut Cluster,
    chaos: bool,
    mut hold: impl FnMut(&Message) -> bool,
    mut observe: impl FnMut(&Cluster),
) -> (Vec<Message>, Vec<Message>) {
    let (mut seen, mut held, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..1000 {
        let mut busy = !late.is_empty();
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            busy |= c.process_ready(id);
            while c.persist(id) {
                busy = true;
            }
        }
        let mut msgs: Vec<Message> = std::mem::take(&mut late);
        msgs.extend(std::mem::take(&mut c.network).into_iter().map(|f| f.msg));
        busy |= !msgs.is_empty();
        if chaos {
            msgs.reverse();
        }
        for (k, m) in msgs.into_iter().enumerate() {
            if hold(&m) {
                held.push(m);
            } else if chaos && k % 3 == 2 {
                late.push(m);
            } else {
                if chaos {
                    c.deliver(m.clone());
                }
                seen.push(m.clone());
                c.deliver(m);
            }
        }
        c.check_invariants();
        observe(c);
        if !busy {
            return (seen, held);
        }
    }
    panic!("cluster did not settle");
}

fn pump(c: &mut Cluster, hold: impl FnMut(&Message) -> bool) -> (Vec<Message>, Vec<Message>) {
    run(c, false, hold, |_| {})
}

/// Takes the first in-flight message matching `pred` off the network.
fn take_msg(c: &mut Cluster, pred: impl Fn(&Message) -> bool) -> Message {
    let pos = c.network.iter().position(|f| pred(&f.msg));
    c.network.remove(pos.expect("message in flight")).msg
}

fn lone_node(id: u64, voters: &[u64], tune: impl Fn(&mut Config)) -> RawNode<MemStorage> {
    let mut cfg = Config::new(id);
    tune(&mut cfg);
    RawNode::new(cfg, MemStorage::with_voters(voters)).expect("valid config")
}

fn timeout(n: &RawNode<MemStorage>) -> usize {
    n.raft().randomized_election_timeout()
}

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
    assert_eq!(c.node(1).raw().raft().read_states(), want, "answered at once");
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

// ---- 6. pipelined replication ---------------------------------------------------------

fn appends_to(c: &Cluster, to: u64) -> Vec<Vec<u64>> {
    let net = c.network.iter().map(|f| &f.msg);
    let appends = net.filter(|m| m.to == to && is(m, MsgAppend));
    appends
        .map(|m| m.entries.iter().map(|e| e.index).collect())
        .collect()
}

#[test]
fn replicate_state_pipelines_up_to_max_inflight_msgs() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.max_inflight_msgs = 3, 1);
    assert_eq!(pr(&c, 1, 2).state, ProgressState::Replicate);
    c.sync = false;
    for i in 0..5u8 {
        c.raw_mut(1).propose(vec![i; 8], vec![]).unwrap();
    }
    let p = pr(&c, 1, 2);
    assert_eq!(p.state, ProgressState::Replicate);
    assert_eq!(p.inflight_msgs, 3);
    assert_eq!([p.matched, p.next_idx], [NOOP, NOOP + 4]);
    c.process_ready(1);
    let want = vec![vec![NOOP + 1], vec![NOOP + 2], vec![NOOP + 3]];
    assert_eq!(appends_to(&c, 2), want, "three appends without any ack");
    // One ack frees one slot; the rest goes out in the freed slot.
    let first = take_msg(&mut c, |m| m.to == 2 && is(m, MsgAppend));
    c.deliver(first);
    c.process_ready(2);
    while c.persist(2) {}
    let ack = take_msg(&mut c, |m| m.from == 2 && is(m, MsgAppendResponse));
    c.deliver(ack);
    let p = pr(&c, 1, 2);
    assert_eq!(p.inflight_msgs, 3);
    assert_eq!([p.matched, p.next_idx], [NOOP + 1, NOOP + 6]);
    c.sync = true;
    c.stabilize();
    let p = pr(&c, 1, 2);
    assert_eq!((p.inflight_msgs, p.inflight_bytes), (0, 0));
    assert_eq!(p.matched, NOOP + 5);
    assert_eq!(c.applied_data(2).len(), 5);
    assert_clean(&c);
}

#[test]
fn replicate_window_is_bounded_by_bytes() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.max_inflight_bytes = 150, 1);
    c.sync = false;
    for i in 0..4u8 {
        c.raw_mut(1).propose(vec![i; 100], vec![]).unwrap();
    }
    let p = pr(&c, 1, 2);
    assert_eq!((p.inflight_msgs, p.next_idx), (2, NOOP + 3));
    assert!((150..300).contains(&p.inflight_bytes), "{p:?}");
    c.process_ready(1);
    assert_eq!(appends_to(&c, 2), vec![vec![NOOP + 1], vec![NOOP + 2]]);
    c.sync = true;
    c.stabilize();
    let p = pr(&c, 1, 2);
    assert_eq!((p.matched, p.inflight_bytes), (NOOP + 4, 0));
}

// ---- 7. fast backtracking -------------------------------------------------------------

#[test]
fn fast_backtracking_skips_a_divergent_term_in_few_rejections() {
    let mut c = elected3();
    c.isolate(1);
    let divergent: Vec<_> = (0..50u8).map(|i| (vec![i], vec![])).collect();
    c.raw_mut(1).propose_batch(divergent).unwrap();
    c.stabilize();
    assert_eq!(last(&c, 1), NOOP + 50);
    c.tick_all(4 * ET); // 1 steps down; 2 and 3 elect a leader of a newer term
    let l = c.leader().expect("majority leader");
    assert_ne!(l, 1);
    let batch: Vec<_> = (0..40u8).map(|i| (vec![100 + i], vec![])).collect();
    c.raw_mut(l).propose_batch(batch).unwrap();
    c.stabilize();
    // Another leader change: the new leader starts probing node 1 at the end of its long log.
    let other = 5 - l;
    c.raw_mut(l).transfer_leader(other).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(other));
    let rejects = Rc::new(Cell::new(0u64));
    let r = rejects.clone();
    c.set_filter(move |m| {
        r.set(r.get() + u64::from(is(m, MsgAppendResponse) && m.reject));
        true
    });
    c.heal();
    c.tick_all(2 * ET);
    assert_eq!(last(&c, 1), last(&c, other));
    assert_eq!(c.applied_data(1), c.applied_data(other));
    let n = rejects.get();
    assert!(n >= 1, "the scenario must produce a conflict");
    assert!(n <= 3, "{n} rejections for 50 divergent entries");
    assert_clean(&c);
}

// ---- 8. log compaction and snapshots --------------------------------------------------

/// Leader 1 with 3 isolated while 5 entries commit, then the leader's log compacted.
fn lagging_and_compacted() -> Cluster {
    let mut c = elected3();
    c.isolate(3);
    propose_n(&mut c, 5);
    c.compact(1);
    let first = c.node(1).storage.first_index().unwrap();
    assert!(first > last(&c, 3) + 1, "the leader lacks what 3 needs");
    c
}

#[test]
fn a_node_added_after_compaction_is_caught_up_by_snapshot() {
    let mut c = booted(Cluster::with_members(
        &[1, 2, 3, 4],
        &[1, 2, 3],
        &[],
        |_| {},
    ));
    c.elect(1);
    propose_n(&mut c, 5);
    c.compact(1);
    c.raw_mut(1).propose_conf_change(cc_v1(AddNode, 4)).unwrap();
    c.stabilize();
    c.tick_all(HB);
    assert!(delivered(&c, MsgSnapshot) >= 1);
    assert_eq!(c.applied_data(4), c.applied_data(1));
    assert_eq!(st(&c, 4).conf_state.voters, vec![1, 2, 3, 4]);
    assert_eq!(c.committed(4), c.committed(1));
    assert_clean(&c);
}

#[test]
fn follower_rejects_a_stale_snapshot() {
    let mut c = elected3();
    propose_n(&mut c, 3);
    let t = term(&c, 2);
    let before = st(&c, 2);
    let commit = before.hard_state.commit;
    // At or below the commit index; the last one does not even match our log.
    for (index, snap_term) in [(commit, t), (commit - 2, t), (commit - 1, t - 1)] {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let meta = SnapshotMetadata {
            conf_state: Some(cs),
            index,
            term: snap_term,
        };
        let snapshot = Some(Snapshot {
            data: Default::default(),
            metadata: Some(meta),
        });
        let m = with(msg(MsgSnapshot, 1, 2, t), |m| m.snapshot = snapshot);
        c.raw_mut(2).step(m).unwrap();
        let after = st(&c, 2);
        assert_eq!(after.hard_state, before.hard_state);
        assert_eq!(after.last_index, before.last_index);
        assert_eq!(after.conf_state, before.conf_state);
        assert_eq!(entry(&c, 2, commit - 1).term, t);
        let rd = c.raw_mut(2).ready().unwrap();
        assert!(rd.snapshot.is_none() && rd.entries.is_empty());
        let out: Vec<&Message> = rd.messages.iter().chain(&rd.persisted_messages).collect();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(is(out[0], MsgAppendResponse) && !out[0].reject && out[0].to == 1);
        assert_eq!((out[0].index, out[0].commit), (commit, commit));
    }
    assert_eq!(c.applied_data(2).len(), 3);
}

#[test]
fn lagging_follower_gets_a_snapshot_and_no_appends_while_it_is_pending() {
    let mut c = lagging_and_compacted();
    c.heal();
    tick_one(&mut c, 1, HB);
    let (_, held) = pump(&mut c, |m| is(m, MsgSnapshot));
    assert_eq!(held.len(), 1);
    assert_eq!(pr(&c, 1, 3).state, ProgressState::Snapshot);
    c.raw_mut(1).propose(b"p".to_vec(), vec![]).unwrap();
    tick_one(&mut c, 1, HB);
    let (seen, again) = pump(&mut c, |m| is(m, MsgSnapshot));
    assert!(seen.iter().any(|m| is(m, MsgAppend) && m.to == 2));
    let to3 = seen.iter().filter(|m| is(m, MsgAppend) && m.to == 3);
    assert_eq!(to3.count(), 0, "appends while a snapshot is pending");
    assert!(again.is_empty(), "snapshot re-sent while one is pending");
    assert_eq!(pr(&c, 1, 3).state, ProgressState::Snapshot);
    c.deliver(held.into_iter().next().unwrap());
    c.stabilize();
    c.tick_all(HB);
    assert_eq!(c.applied_data(3), c.applied_data(1));
    assert_eq!(c.applied_data(3).len(), 6);
    assert_eq!(c.committed(3), c.committed(1));
    c.propose(1, b"after").unwrap();
    assert_eq!(c.applied_data(3).last().unwrap(), b"after");
    assert_clean(&c);
}

#[test]
fn leader_retries_a_snapshot_that_was_temporarily_unavailable() {
    let mut c = lagging_and_compacted();
    c.node(1).storage.wl().snapshot_unavailable = true;
    let snaps = delivered(&c, MsgSnapshot);
    c.heal();
    c.tick_all(2 * ET);
    assert_eq!(delivered(&c, MsgSnapshot), snaps);
    assert!(c.committed(3) < c.committed(1));
    assert_eq!(c.leader(), Some(1));
    c.node(1).storage.wl().snapshot_unavailable = false;
    c.tick_all(2 * HB);
    assert!(delivered(&c, MsgSnapshot) > snaps, "snapshot never retried");
    assert_eq!(c.applied_data(3), c.applied_data(1));
    assert_clean(&c);
}

// ---- 9. joint consensus, learners -----------------------------------------------------

fn five_with_three_voters() -> Cluster {
    let ids = [1, 2, 3, 4, 5];
    let mut c = booted(Cluster::with_members(&ids, &ids[..3], &[], |_| {}));
    c.elect(1);
    c
}

#[test]
fn two_voter_changes_enter_joint_and_leave_automatically() {
    let mut c = five_with_three_voters();
    let cc = cc_v2(ConfChangeTransition::Auto, &[(AddNode, 4), (AddNode, 5)]);
    c.raw_mut(1).propose_conf_change(cc).unwrap();
    let mut joint = Vec::new();
    let observe = |c: &Cluster| joint.push(st(c, 1).conf_state);
    run(&mut c, false, |_| false, observe);
    let joint = joint.into_iter().find(|cs| !cs.voters_outgoing.is_empty());
    let joint = joint.expect("the leader never was in a joint configuration");
    assert_eq!(joint.voters_outgoing, vec![1, 2, 3]);
    assert!(joint.voters == [1, 2, 3, 4, 5] && joint.auto_leave);
    for id in 1..=5 {
        let cs = st(&c, id).conf_state;
        assert_eq!(cs.voters, vec![1, 2, 3, 4, 5], "node {id}");
        assert!(cs.voters_outgoing.is_empty() && !cs.auto_leave, "node {id}");
    }
    assert_clean(&c);
}

#[test]
fn explicit_joint_stays_until_an_empty_change_leaves_it() {
    let mut c = five_with_three_voters();
    let changes = [(AddNode, 4), (AddNode, 5)];
    let cc = cc_v2(ConfChangeTransition::Explicit, &changes);
    c.raw_mut(1).propose_conf_change(cc).unwrap();
    c.stabilize();
    c.tick_all(2 * HB);
    let cs = st(&c, 1).conf_state;
    assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
    assert!(cs.voters == [1, 2, 3, 4, 5] && !cs.auto_leave);
    // Only leaving is allowed in a joint configuration.
    let cc = cc_v2(ConfChangeTransition::Auto, &[(RemoveNode, 5)]);
    let r = c.raw_mut(1).propose_conf_change(cc);
    assert_eq!(
        dropped(r),
        DropReason::ConfChangeRejected(ConfChangeRejection::JointPending)
    );
    let leave = ConfChangeV2::default();
    c.raw_mut(1).propose_conf_change(leave).unwrap();
    c.stabilize();
    for id in 1..=5 {
        let cs = st(&c, id).conf_state;
        assert_eq!(cs.voters, vec![1, 2, 3, 4, 5], "node {id}");
        assert!(cs.voters_outgoing.is_empty(), "node {id}");
    }
    assert_clean(&c);
}

#[test]
fn one_conf_change_at_a_time_and_no_leave_outside_joint() {
    let mut c = five_with_three_voters();
    let before = st(&c, 1);
    let r = c.raw_mut(1).propose_conf_change(ConfChangeV2::default());
    assert_eq!(
        dropped(r),
        DropReason::ConfChangeRejected(ConfChangeRejection::NotJoint)
    );
    assert_eq!(st(&c, 1).last_index, before.last_index);
    let i = c
        .raw_mut(1)
        .propose_conf_change(cc_v1(AddLearnerNode, 4))
        .unwrap();
    let r = c.raw_mut(1).propose_conf_change(cc_v1(AddLearnerNode, 5));
    let pending = DropReason::ConfChangePending { pending_index: i };
    assert_eq!(dropped(r), pending);
    c.stabilize();
    c.raw_mut(1)
        .propose_conf_change(cc_v1(AddLearnerNode, 5))
        .unwrap();
    c.stabilize();
    assert_eq!(st(&c, 1).conf_state.learners, vec![4, 5]);
}

#[test]
fn learners_replicate_but_neither_vote_nor_count_and_can_be_promoted() {
    let mut c = booted(Cluster::with_members(
        &[1, 2, 3, 4],
        &[1, 2, 3],
        &[4],
        |_| {},
    ));
    c.raw_mut(1).campaign().unwrap();
    let (seen, _) = pump(&mut c, |_| false);
    assert_eq!(c.leader(), Some(1));
    let vote = |m: &Message| is(m, MsgRequestVote) || is(m, MsgRequestPreVote);
    assert!(
        !seen.iter().any(|m| m.to == 4 && vote(m)),
        "asked a learner"
    );
    c.propose(1, b"a").unwrap();
    assert_eq!(c.applied_data(4), vec![b"a".to_vec()]);
    // A learner never campaigns.
    let t = term(&c, 4);
    assert!(c.raw_mut(4).campaign().is_err());
    for _ in 0..3 * ET {
        c.tick(4);
    }
    c.stabilize();
    assert_eq!((role(&c, 4), term(&c, 4)), (Role::Follower, t));
    // Its ack does not count for commit.
    c.partition(&[1, 4]);
    let i = c.propose(1, b"b").unwrap();
    assert_eq!(last(&c, 4), i, "the learner received the entry");
    assert!(c.committed(1) < i, "committed with a learner's ack");
    c.heal();
    c.tick_all(HB);
    assert!(c.committed(1) >= i);
    // Promotion: AddNode makes it a voter whose ack counts.
    c.raw_mut(1).propose_conf_change(cc_v1(AddNode, 4)).unwrap();
    c.stabilize();
    let cs = st(&c, 1).conf_state;
    assert_eq!((cs.voters, cs.learners), (vec![1, 2, 3, 4], vec![]));
    assert!(c.node(4).raw().raft().promotable());
    c.partition(&[1, 2, 4]); // 1 and 2 alone are not a majority of four
    let j = c.propose(1, b"c").unwrap();
    assert_eq!(c.committed(1), j);
    assert_clean(&c);
}

#[test]
fn leader_removed_from_the_configuration_steps_down() {
    let mut c = elected3();
    c.raw_mut(1)
        .propose_conf_change(cc_v1(RemoveNode, 1))
        .unwrap();
    c.stabilize();
    assert_ne!(role(&c, 1), Role::Leader);
    assert_eq!(st(&c, 1).conf_state.voters, vec![2, 3]);
    c.tick_all(4 * ET);
    let l = c.leader().expect("the remaining voters elect a leader");
    assert!(l == 2 || l == 3);
    c.propose(l, b"z").unwrap();
    assert_eq!(c.applied_data(2).last().unwrap(), b"z");
    assert_clean(&c);
}

const TRANSFER_TO_3: DropReason = DropReason::LeaderTransferInProgress { transferee: 3 };

// ---- 10. leader transfer --------------------------------------------------------------

#[test]
fn transfer_to_a_lagging_follower_catches_it_up_first() {
    let mut c = elected3();
    c.cut_link(1, 3);
    propose_n(&mut c, 5);
    c.heal();
    assert!(last(&c, 3) < last(&c, 1));
    c.raw_mut(1).transfer_leader(3).unwrap();
    let r = c.raw_mut(1).propose(b"no".to_vec(), vec![]);
    assert_eq!(dropped(r), TRANSFER_TO_3);
    let (_, held) = pump(&mut c, |m| is(m, MsgTimeoutNow));
    assert_eq!(held.len(), 1);
    assert_eq!(last(&c, 3), last(&c, 1), "TimeoutNow before catching up");
    c.deliver(held.into_iter().next().unwrap());
    c.stabilize();
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.applied_data(3).len(), 5);
}

#[test]
fn transfer_to_an_unreachable_target_is_aborted_after_an_election_timeout() {
    let mut c = elected3();
    c.isolate(3);
    c.raw_mut(1).transfer_leader(3).unwrap();
    c.stabilize();
    assert_eq!(st(&c, 1).lead_transferee, Some(3));
    for _ in 0..ET - 1 {
        c.tick_all(1);
        let r = c.raw_mut(1).propose(b"x".to_vec(), vec![]);
        assert_eq!(dropped(r), TRANSFER_TO_3);
    }
    c.tick_all(1);
    assert_eq!((st(&c, 1).lead_transferee, c.leader()), (None, Some(1)));
    let i = c.propose(1, b"ok").unwrap();
    assert_eq!(c.committed(1), i);
}

// ---- 11. limits -----------------------------------------------------------------------

#[test]
fn oversized_entries_are_refused_and_change_nothing() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.max_entry_size = 100, 1);
    let before = st(&c, 1);
    let r = c.raw_mut(1).propose(vec![0; 101], vec![]);
    assert_eq!(
        r,
        Err(RaftError::EntryTooLarge {
            size: 101,
            max: 100
        })
    );
    let batch = vec![(vec![1; 10], vec![]), (vec![2; 101], vec![])];
    let r = c.raw_mut(1).propose_batch(batch);
    assert!(matches!(r, Err(RaftError::EntryTooLarge { size: 101, .. })));
    assert_eq!(st(&c, 1), before);
    assert!(!c.node(1).raw().has_ready());
    c.propose(1, &[7; 100]).unwrap();
    assert_eq!(c.applied_data(2), vec![vec![7; 100]]);
}

#[test]
fn uncommitted_size_limit_drops_proposals_until_entries_commit() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.max_uncommitted_size = 300, 1);
    c.isolate(1);
    for _ in 0..3 {
        c.propose(1, &[1; 100]).unwrap();
    }
    let before = st(&c, 1);
    assert_eq!(before.uncommitted_bytes, 300);
    let r = c.raw_mut(1).propose(vec![2; 100], vec![]);
    assert_eq!(dropped(r), DropReason::UncommittedSizeLimit { limit: 300 });
    assert_eq!(st(&c, 1), before);
    c.heal();
    c.tick_all(HB);
    assert_eq!(st(&c, 1).uncommitted_bytes, 0);
    assert_eq!(c.committed(1), last(&c, 1));
    let i = c.propose(1, &[3; 100]).unwrap();
    assert_eq!(c.committed(1), i);
}

// ---- 12. no-op on election (and 10: transfer to an up-to-date follower) ---------------

#[test]
fn transfer_to_an_up_to_date_follower_and_its_noop() {
    let mut c = elected3();
    let check_noop = |c: &Cluster, id: u64, index: u64| {
        let e = entry(c, id, index);
        assert_eq!(e.term, term(c, id), "the no-op is of the leader's term");
        assert_eq!(e.entry_type, EntryType::EntryNormal as i32);
        assert!(e.data.is_empty() && e.context.is_empty());
        assert!(c.committed(id) >= index);
    };
    check_noop(&c, 1, NOOP);
    assert_eq!(last(&c, 1), NOOP);
    c.propose(1, b"a").unwrap();
    let (t, tn, prev_last) = (term(&c, 1), delivered(&c, MsgTimeoutNow), last(&c, 1));
    c.raw_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    assert_eq!((c.leader(), term(&c, 2)), (Some(2), t + 1));
    assert_eq!(delivered(&c, MsgTimeoutNow), tn + 1);
    assert_eq!(role(&c, 1), Role::Follower);
    check_noop(&c, 2, prev_last + 1);
    c.propose(2, b"b").unwrap();
    assert_eq!(c.applied_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

// ---- 13. the leader's own persistence -------------------------------------------------

#[test]
fn leader_commits_on_follower_acks_before_its_own_write() {
    let mut c = elected3();
    c.sync = false;
    let i = c.raw_mut(1).propose(b"w".to_vec(), vec![]).unwrap();
    c.process_ready(1); // appends go out; the leader's own write stays queued
    for f in std::mem::take(&mut c.network) {
        c.deliver(f.msg);
    }
    for id in [2, 3] {
        c.process_ready(id);
        while c.persist(id) {}
    }
    let ack2 = take_msg(&mut c, |m| m.from == 2 && is(m, MsgAppendResponse));
    c.deliver(ack2);
    assert!(c.committed(1) < i, "one durable copy of three is no quorum");
    let ack3 = take_msg(&mut c, |m| m.from == 3 && is(m, MsgAppendResponse));
    c.deliver(ack3);
    assert_eq!(c.committed(1), i, "both followers persisted it");
    assert!(c.node(1).has_pending_writes());
    assert_eq!(st(&c, 1).persisted_index, i - 1);
    // Committed, but the leader applies it only once its own copy is durable.
    c.process_ready(1);
    assert!(c.applied_data(1).is_empty());
    while c.persist(1) {}
    c.process_ready(1);
    assert_eq!(c.applied_data(1), vec![b"w".to_vec()]);
    c.sync = true;
    c.stabilize();
    assert_clean(&c);
}

#[test]
fn single_node_commits_only_after_on_persisted() {
    let store = MemStorage::with_voters(&[1]);
    let mut cfg = Config::new(1);
    // Created fresh (no boot guard), so it may campaign at once.
    cfg.start = NodeStart::Created;
    let mut n = RawNode::new(cfg, store.clone()).unwrap();
    let write = |n: &mut RawNode<MemStorage>| {
        let rd = n.ready().unwrap();
        store.wl().append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            store.wl().set_hard_state(hs);
        }
        (
            rd.persisted_up_to(),
            rd.persisted_messages,
            rd.committed_entries,
        )
    };
    n.campaign().unwrap();
    let (_, to_self, _) = write(&mut n);
    for m in to_self {
        n.step(m).unwrap(); // our own durable vote
    }
    assert_eq!(n.raft().role(), Role::Leader);
    let (ack, _, committed) = write(&mut n);
    let (noop, t) = ack.expect("the no-op to persist");
    assert!(committed.is_empty());
    assert_eq!(n.raft().log().committed(), 0, "committed before it was durable");
    n.on_persisted(noop, t);
    assert_eq!(n.raft().log().committed(), noop);
    let (_, _, committed) = write(&mut n);
    assert_eq!(committed.len(), 1);
    n.on_applied(noop);
    let j = n.propose(b"x".to_vec(), vec![]).unwrap();
    let (ack, _, _) = write(&mut n);
    assert_eq!((n.raft().log().committed(), ack), (noop, Some((j, t))));
    n.on_persisted(j, t);
    assert_eq!(n.raft().log().committed(), j);
}

// ---- 14. minimal heartbeats -----------------------------------------------------------

#[test]
fn heartbeats_carry_only_term_commit_and_read_round() {
    let mut c = elected3();
    c.set_filter(|m| !(is(m, MsgAppend) && m.to == 3)); // node 3 lags
    propose_n(&mut c, 3);
    let (t, commit) = (term(&c, 1), c.committed(1));
    assert_eq!(pr(&c, 1, 3).matched, NOOP);
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    let (mut seen, _) = pump(&mut c, |_| false);
    tick_one(&mut c, 1, HB);
    seen.extend(pump(&mut c, |_| false).0);
    let hbs: Vec<&Message> = seen.iter().filter(|m| is(m, MsgHeartbeat)).collect();
    let resps: Vec<&Message> = seen
        .iter()
        .filter(|m| is(m, MsgHeartbeatResponse))
        .collect();
    assert!(hbs.len() >= 4 && resps.len() >= 4);
    for m in hbs.iter().chain(&resps) {
        assert!(m.entries.is_empty() && m.snapshot.is_none(), "{m:?}");
        assert_eq!((m.index, m.log_term, m.reject_hint), (0, 0, 0), "{m:?}");
        assert!(m.context.is_empty() && !m.reject, "{m:?}");
        assert!(m.term == t && m.read_round > 0, "{m:?}");
    }
    for hb in &hbs {
        let want = if hb.to == 3 { NOOP } else { commit };
        assert_eq!(hb.commit, want, "commit = min(matched, leader commit)");
    }
}

// ---- 15. quiescence -------------------------------------------------------------------

#[test]
fn quiescent_once_settled_and_while_hearing_from_the_leader() {
    let mut c = elected3();
    c.propose(1, b"a").unwrap();
    assert!(quiescent(&c, 1) && st(&c, 1).quiescent);
    c.raw_mut(1).propose(b"b".to_vec(), vec![]).unwrap();
    assert!(!quiescent(&c, 1), "a proposal is pending");
    c.stabilize();
    assert!(quiescent(&c, 1));
    c.raw_mut(1).read_index(b"r".to_vec()).unwrap();
    assert!(!quiescent(&c, 1), "a read is pending");
    c.stabilize();
    assert!(quiescent(&c, 1));
    // A follower that has not caught up keeps the leader awake.
    // A follower is quiescent while it hears from the leader.
    assert!(quiescent(&c, 2));
    tick_one(&mut c, 2, ET); // nothing from the leader meanwhile
    assert!(!quiescent(&c, 2));
    c.tick_all(HB);
    assert!(quiescent(&c, 2));
    // A follower that has not caught up keeps the leader awake.
    c.set_filter(|m| m.to != 3);
    c.propose(1, b"c").unwrap();
    c.tick_all(HB);
    assert!(!quiescent(&c, 1));
}

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
        with(snap, |m| m.snapshot = Some(Snapshot::default())),
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
        run(&mut c, true, |_| false, |_| {});
    }
    c.tick_all(HB);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), expected, "node {id}");
    }
    assert_eq!((c.leader(), term(&c, 1)), (Some(1), t));
    assert_eq!(c.node(1).read_states.len(), 5);
    assert_clean(&c);
}
