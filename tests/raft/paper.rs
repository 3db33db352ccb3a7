//! The safety rules of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", §5) as scenario tests, each named after the section it checks.
//!
//! Hand-driven tests step one `RawNode` over a `MemStorage` filled directly; the others drive
//! a synchronous `Cluster`. Both run the paper's plain protocol (no pre-vote, no check-quorum)
//! unless a test says otherwise. Cluster groups start from a snapshot at index 5, term 5, so
//! the first leader is elected for term 6 and its no-op is index 6.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::raft::{ent, is, role, settle, watch};
use flotilla::proto::raftpb::{Entry, HardState, Message, MessageType};
use flotilla::raft::{Config, MemStorage, RawNode, Role};
use flotilla::testkit::raft_sim::cluster::{BOOTSTRAP_INDEX, Cluster};

use MessageType::{
    MsgAppend, MsgAppendResponse, MsgHeartbeat, MsgRequestPreVote, MsgRequestPreVoteResponse,
    MsgRequestVote, MsgRequestVoteResponse,
};

// ---- helpers ----------------------------------------------------------------------------

/// The paper's protocol: no pre-vote round, no check-quorum (and so no lease or boot guard).
fn plain(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// Node 1 of group {1, 2, 3} whose durable log holds entries 1.. with the given terms.
fn hand_node(terms: &[u64], hard: HardState) -> RawNode<MemStorage> {
    let s = MemStorage::with_voters(&[1, 2, 3]);
    let ents: Vec<Entry> = (1..).zip(terms).map(|(i, &t)| ent(i, t)).collect();
    s.wl().append(&ents).unwrap();
    s.wl().set_hard_state(hard);
    let mut cfg = Config::new(1);
    plain(&mut cfg);
    RawNode::new(cfg, s).unwrap()
}

/// A message from `from` to the hand-driven node 1.
fn msg(t: MessageType, from: u64, term: u64) -> Message {
    Message {
        msg_type: t as i32,
        from,
        to: 1,
        term,
        ..Default::default()
    }
}

fn vote_req(t: MessageType, from: u64, term: u64, last: (u64, u64)) -> Message {
    let mut m = msg(t, from, term);
    (m.index, m.log_term) = last;
    m
}

/// An append from leader 2 of `term` after `prev` = (index, term), carrying entries of `terms`.
fn append(term: u64, prev: (u64, u64), terms: &[u64], commit: u64) -> Message {
    let mut m = msg(MsgAppend, 2, term);
    (m.index, m.log_term, m.commit) = (prev.0, prev.1, commit);
    m.entries = (prev.0 + 1..).zip(terms).map(|(i, &t)| ent(i, t)).collect();
    m
}

fn log_terms(n: &RawNode<MemStorage>) -> Vec<u64> {
    let log = &n.raft().log();
    (1..=log.last_index())
        .map(|i| log.term_or_zero(i))
        .collect()
}

fn log_of(c: &Cluster, id: u64) -> Vec<Entry> {
    let log = &c.node(id).raw().raft().log();
    log.slice(log.first_index(), log.last_index() + 1, u64::MAX)
        .unwrap()
}

fn term_at(c: &Cluster, id: u64, index: u64) -> u64 {
    c.node(id).raw().raft().log().term_or_zero(index)
}

/// (role, term, vote) of a node.
fn rtv(c: &Cluster, id: u64) -> (Role, u64, u64) {
    let r = c.node(id).raw().raft();
    (r.role(), r.term(), r.vote())
}

fn leaders(c: &Cluster) -> Vec<u64> {
    let up = c.up_ids().into_iter();
    up.filter(|&id| role(c, id) == Role::Leader).collect()
}

fn data(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Campaigns (each time in a new term) until `id` leads; false if it never does.
fn campaign_until_leader(c: &mut Cluster, id: u64, tries: usize) -> bool {
    (0..tries).any(|_| {
        c.campaign(id).unwrap();
        role(c, id) == Role::Leader
    })
}

fn assert_no_failures(c: &Cluster) {
    assert!(c.checker.failures.is_empty(), "{:?}", c.checker.failures);
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
}

/// Safety properties checked from outside the core, independently of the cluster's checker.
#[derive(Default)]
struct Safety {
    /// Election safety: term → its one leader.
    leaders: BTreeMap<u64, u64>,
    /// Every entry seen committed anywhere: index → (term, data).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
}

impl Safety {
    fn check(&mut self, c: &Cluster, ctx: &str) {
        for id in c.up_ids() {
            let log = &c.node(id).raw().raft().log();
            let ents = log.slice(log.first_index(), log.committed() + 1, u64::MAX);
            for e in ents.unwrap() {
                let seen = self.committed.entry(e.index);
                let seen = seen.or_insert_with(|| (e.term, e.data.to_vec()));
                assert_eq!(
                    *seen,
                    (e.term, e.data.to_vec()),
                    "{ctx}: {id} at {}",
                    e.index
                );
            }
        }
        for id in c.up_ids() {
            let r = c.node(id).raw().raft();
            if r.role() != Role::Leader {
                continue;
            }
            match self.leaders.insert(r.term(), id) {
                Some(other) => assert_eq!(other, id, "{ctx}: two leaders in one term"),
                // §5.4 leader completeness, checked when the leader is first seen.
                None => {
                    for (&i, (t, _)) in self.committed.range(r.log().first_index()..) {
                        assert!(r.log().match_term(i, *t), "{ctx}: leader {id} lacks {i}");
                    }
                }
            }
        }
        // State machine safety: what any two nodes applied (crashed ones too: the state
        // machine is durable) agrees on their common prefix.
        for a in c.nodes.values() {
            for b in c.nodes.values() {
                let (la, lb) = (&a.sm.applied, &b.sm.applied);
                let k = la.len().min(lb.len());
                assert_eq!(la[..k], lb[..k], "{ctx}: applied by {} and {}", a.id, b.id);
            }
        }
    }
}

// ---- §5.2 leader election -----------------------------------------------------------------

#[test]
fn s5_2_election_safety_split_vote_elects_nobody() {
    let mut c = Cluster::new(&[1, 2, 3, 4], plain);
    // Two concurrent candidates of term 6, each reaching one of the two other voters.
    c.set_filter(|m| !(is(m, MsgRequestVote) && matches!((m.from, m.to), (1, 4) | (2, 3))));
    c.raw_mut(1).campaign().unwrap();
    c.raw_mut(2).campaign().unwrap();
    c.stabilize();
    // 2 votes of 4 are no majority.
    assert_eq!(rtv(&c, 1), (Role::Candidate, 6, 1));
    assert_eq!(rtv(&c, 2), (Role::Candidate, 6, 2));
    assert_eq!((rtv(&c, 3).2, rtv(&c, 4).2), (1, 2));
    assert!(leaders(&c).is_empty());
    // The next term has exactly one winner.
    c.clear_filter();
    c.campaign(1).unwrap();
    assert_eq!(leaders(&c), vec![1]);
    assert_eq!(c.node(1).raw().raft().term(), 7);
    assert_no_failures(&c);
}

#[test]
fn s5_2_election_safety_one_leader_per_term() {
    for seed in 0..30u64 {
        let mut c = Cluster::new(&[1, 2, 3, 4, 5], move |cfg| {
            plain(cfg);
            cfg.seed = seed * 1000 + cfg.id;
        });
        let mut safety = Safety::default();
        // Five concurrent candidates of term 6: each votes for itself, nobody wins.
        for id in 1..=5 {
            c.raw_mut(id).campaign().unwrap();
        }
        c.stabilize();
        safety.check(&c, &format!("seed {seed}"));
        assert!(leaders(&c).is_empty());
        // Then timeouts race; the leader is cut off now and then, forcing new elections
        // while it still believes it leads.
        for step in 0..240 {
            match step % 60 {
                20 => {
                    if let Some(l) = c.leader() {
                        c.isolate(l);
                    }
                }
                59 => c.heal(),
                _ => {}
            }
            c.tick_all(1);
            safety.check(&c, &format!("seed {seed} step {step}"));
        }
        // Nobody won the split term 6; the isolations forced new elections.
        let terms: Vec<u64> = safety.leaders.keys().copied().collect();
        assert!(terms[0] > 6 && terms.len() >= 3, "seed {seed}: {terms:?}");
        assert_no_failures(&c);
    }
}

#[test]
fn s5_2_candidate_steps_down_on_append_of_equal_or_higher_term() {
    // A candidate of term 3 hears from a leader of `term`: it follows unless `term` is stale.
    #[rustfmt::skip]
    let cases = [
        (MsgAppend, 3, Role::Follower), (MsgHeartbeat, 3, Role::Follower),
        (MsgAppend, 4, Role::Follower), (MsgHeartbeat, 4, Role::Follower),
        (MsgAppend, 2, Role::Candidate), (MsgHeartbeat, 2, Role::Candidate),
    ];
    for (t, term, want) in cases {
        let mut n = hand_node(&[1, 2], hs(2, 0, 0));
        n.campaign().unwrap();
        let _ = settle(&mut n);
        assert_eq!((n.raft().role(), n.raft().term()), (Role::Candidate, 3));
        let mut m = msg(t, 2, term);
        if t == MsgAppend {
            (m.index, m.log_term) = (2, 2);
        }
        n.step(m).unwrap();
        let r = n.raft();
        assert_eq!(r.role(), want, "{t:?} of term {term}");
        if want == Role::Follower {
            assert_eq!((r.term(), r.leader_id()), (term, 2), "{t:?} of term {term}");
        } else {
            // A stale leader is ignored, and told the newer term.
            assert_eq!(r.term(), 3);
            let out = settle(&mut n);
            assert_eq!(out.one(MsgAppendResponse).0.term, 3);
        }
    }
}

#[test]
fn s5_2_at_most_one_vote_per_term() {
    let mut n = hand_node(&[1], hs(1, 0, 0));
    // (candidate, term, granted): a retransmitted request from the chosen candidate is granted
    // again, any other candidate of the same term is refused.
    #[rustfmt::skip]
    let cases = [(2, 2, true), (3, 2, false), (2, 2, true), (3, 3, true), (2, 3, false)];
    for (from, term, granted) in cases {
        let m = vote_req(MsgRequestVote, from, term, (1, 1));
        n.step(m).unwrap();
        let out = settle(&mut n);
        let (resp, after_persist) = out.one(MsgRequestVoteResponse);
        let case = format!("vote request of {from} in term {term}");
        assert_eq!((resp.to, resp.reject), (from, !granted), "{case}");
        // A grant leaves only once the vote is durable.
        assert_eq!(after_persist, granted, "{case}");
        assert_eq!(n.store().rl().hard_state().term, term, "{case}");
    }
    assert_eq!(n.store().rl().hard_state().vote, 3);
}

#[test]
fn s5_2_vote_survives_restart() {
    let mut c = Cluster::new(&[1, 2, 3], plain);
    c.isolate(3);
    // Node 2 campaigns in term 6; node 1 votes for it, but the grant is lost.
    c.set_filter(|m| !(is(m, MsgRequestVoteResponse) && m.from == 1));
    c.campaign(2).unwrap();
    assert_eq!(role(&c, 2), Role::Candidate);
    let voted = hs(6, 2, BOOTSTRAP_INDEX);
    assert_eq!(*c.node(1).storage.rl().hard_state(), voted);
    c.crash(1);
    c.restart(1);
    assert_eq!(c.node(1).raw().raft().hard_state(), voted);
    // Node 3, which never heard of term 6, now campaigns in term 6 too.
    c.heal();
    let responses = watch(&mut c, |m| is(m, MsgRequestVoteResponse) && m.to == 3);
    c.campaign(3).unwrap();
    // Node 1 refuses: it already voted in term 6 before its restart.
    let seen: Vec<_> = responses
        .borrow()
        .iter()
        .map(|m| (m.from, m.term, m.reject))
        .collect();
    assert!(seen.contains(&(1, 6, true)), "{seen:?}");
    assert_eq!(rtv(&c, 3), (Role::Follower, 6, 3));
    assert_eq!(rtv(&c, 1), (Role::Follower, 6, 2));
    assert_no_failures(&c);
}

// ---- §5.3 log replication -----------------------------------------------------------------

/// Node 3 led term 6 and, cut off, appended "s1".."s3" (7..=9) that nobody else has; then 1
/// was elected for term 7 by 2 and committed its no-op and "x", "y" (7, 8, 9). Links are
/// healed but nothing has crossed them since, so 3 still believes it leads term 6.
fn stale_suffix_cluster() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], plain);
    c.elect(3);
    c.isolate(3);
    for p in ["s1", "s2", "s3"] {
        c.propose(3, p.as_bytes()).unwrap();
    }
    c.elect(1);
    c.propose(1, b"x").unwrap();
    c.propose(1, b"y").unwrap();
    c.heal();
    assert_eq!((c.committed(1), c.committed(3)), (9, 6));
    assert_eq!((term_at(&c, 3, 9), term_at(&c, 1, 9)), (6, 7));
    assert_eq!(rtv(&c, 3), (Role::Leader, 6, 3));
    c
}

#[test]
fn s5_3_leader_append_only_ignores_conflicting_appends() {
    // Figure 8 (c): leader 1 of term 8 holds 7 (term 6) and 8 (term 8), neither committed.
    let mut c = figure8_until_c();
    let before = log_of(&c, 1);
    // Node 5's term-7 entries at 7, 8, as its stale append would carry them, and the same
    // claimed for the leader's own term (which no correct node sends): the leader keeps its log.
    for term in [7, 8] {
        let mut m = append(term, (6, 6), &[7, 7], 6);
        m.from = 5;
        let _ = c.raw_mut(1).step(m);
        c.stabilize();
        assert_eq!(log_of(&c, 1), before, "append of term {term}");
        assert_eq!(role(&c, 1), Role::Leader);
    }
    // It only ever appends after them.
    c.clear_filter();
    c.propose(1, b"c").unwrap();
    assert_eq!(log_of(&c, 1)[..before.len()], before[..]);
    assert_eq!(c.applied_data(1), data(&["a", "c"]));
    assert_no_failures(&c);
}

#[test]
fn s5_3_log_matching_conflicting_uncommitted_suffix_is_replaced() {
    let mut c = stale_suffix_cluster();
    c.tick_all(2); // heartbeats both ways: 3 steps down, then 1 probes and repairs it
    c.propose(1, b"z").unwrap();
    assert_eq!(log_of(&c, 3), log_of(&c, 1));
    assert_eq!((term_at(&c, 3, 7), term_at(&c, 3, 9)), (7, 7));
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), data(&["x", "y", "z"]), "node {id}");
    }
    c.check_log_matching();
    assert_no_failures(&c);
}

#[test]
fn s5_3_consistency_check_rejects_when_previous_entry_differs() {
    // The follower holds terms [1, 1, 2] at 1..=3. (prev index, prev term, entry terms,
    // accepted, resulting log terms)
    #[rustfmt::skip]
    let cases: [(_, _, &[u64], _, &[u64]); 9] = [
        (3, 2, &[3], true, &[1, 1, 2, 3]),
        (3, 1, &[3], false, &[1, 1, 2]),    // term differs at prev
        (3, 3, &[3], false, &[1, 1, 2]),
        (1, 2, &[3], false, &[1, 1, 2]),
        (4, 2, &[3], false, &[1, 1, 2]),    // prev is beyond the log
        (4, 3, &[], false, &[1, 1, 2]),
        (2, 1, &[3], true, &[1, 1, 3]),     // conflicting suffix replaced
        (1, 1, &[1, 2, 3], true, &[1, 1, 2, 3]),
        (0, 0, &[1, 1], true, &[1, 1, 2]),  // a stale, matching append truncates nothing
    ];
    for (prev_index, prev_term, terms, accepted, want) in cases {
        let mut n = hand_node(&[1, 1, 2], hs(2, 0, 0));
        n.step(append(3, (prev_index, prev_term), terms, 0))
            .unwrap();
        let out = settle(&mut n);
        let case = format!("append after ({prev_index}, {prev_term}) of {terms:?}");
        let (resp, _) = out.one(MsgAppendResponse);
        assert_eq!(resp.reject, !accepted, "{case}");
        if accepted {
            assert_eq!(resp.index, prev_index + terms.len() as u64, "{case}");
        }
        assert_eq!(log_terms(&n), want, "{case}");
        assert_eq!(n.store().rl().hard_state().term, 3, "{case}");
    }
}

#[test]
fn s5_3_follower_commit_limited_to_entries_matching_leader() {
    // Entries 2 and 3 (term 1) came from a deposed leader; the leader of term 2 committed its
    // own entry 2 (term 2). A probe matching at 1 tells the follower nothing about 2.
    let mut n = hand_node(&[1, 1, 1], hs(1, 0, 0));
    n.step(append(2, (1, 1), &[], 2)).unwrap();
    let out = settle(&mut n);
    assert_eq!(n.raft().log().committed(), 1);
    assert_eq!(out.committed, vec![ent(1, 1)]);
    // Once the leader's entry 2 replaces ours, it commits.
    n.step(append(2, (1, 1), &[2], 2)).unwrap();
    let out = settle(&mut n);
    assert_eq!(log_terms(&n), vec![1, 2]);
    assert_eq!(n.raft().log().committed(), 2);
    assert_eq!(out.committed, vec![ent(2, 2)]);
}

#[test]
fn s5_3_heartbeats_do_not_commit_a_followers_unverified_entries() {
    let mut c = stale_suffix_cluster();
    // Node 3 hears the new leader's heartbeats but never its entries. Its log reaches 9 as
    // the leader's commit index does, but only 6 is known to match.
    c.set_filter(|m| !(is(m, MsgAppend) && m.from == 1 && m.to == 3));
    for _ in 0..3 {
        c.tick(1);
        c.tick(1);
        c.stabilize();
    }
    let r3 = c.node(3).raw().raft();
    assert_eq!(
        (r3.role(), r3.term(), r3.leader_id()),
        (Role::Follower, 7, 1)
    );
    // Committing 7..=9 would commit node 3's own term-6 entries there.
    assert_eq!((c.committed(3), c.applied_data(3)), (6, vec![]));
    c.clear_filter();
    c.tick(1);
    c.tick(1);
    c.stabilize();
    assert_eq!((c.committed(3), c.applied_data(3)), (9, data(&["x", "y"])));
    assert_no_failures(&c);
}

// ---- §5.4.1 election restriction ----------------------------------------------------------

#[test]
fn s5_4_1_vote_requires_candidate_log_at_least_as_up_to_date() {
    // The voter's log ends at index 3, term 2. (candidate's last index, last term, granted)
    let cases = [
        (3, 2, true),  // identical
        (4, 2, true),  // same last term, longer
        (2, 2, false), // same last term, shorter
        (1, 3, true),  // higher last term, though shorter
        (9, 1, false), // lower last term, though longer
        (3, 1, false),
        (0, 0, false), // empty
    ];
    for (index, log_term, granted) in cases {
        for t in [MsgRequestVote, MsgRequestPreVote] {
            let mut n = hand_node(&[1, 2, 2], hs(2, 0, 0));
            n.step(vote_req(t, 2, 4, (index, log_term))).unwrap();
            let out = settle(&mut n);
            let pre = t == MsgRequestPreVote;
            let resp = out
                .one([MsgRequestVoteResponse, MsgRequestPreVoteResponse][pre as usize])
                .0;
            let case = format!("{t:?} with last ({index}, {log_term}) to a log ending at (3, 2)");
            assert_eq!(resp.reject, !granted, "{case}");
            let vote = n.store().rl().hard_state().vote;
            assert_eq!(vote, if granted && !pre { 2 } else { 0 }, "{case}");
        }
    }
}

#[test]
fn s5_4_1_candidate_with_shorter_log_of_same_last_term_cannot_win() {
    let mut c = Cluster::new(&[1, 2, 3], plain);
    c.elect(1);
    c.set_filter(|m| !(is(m, MsgAppend) && m.to == 3));
    c.propose(1, b"a").unwrap();
    c.propose(1, b"b").unwrap();
    assert_eq!(c.committed(1), 8); // on 1 and 2
    assert_eq!(c.node(3).raw().raft().log().last_index(), 6);
    c.crash(1);
    c.clear_filter();
    c.campaign(3).unwrap();
    // Node 2 refused it: same last term, but 3's log is shorter.
    assert!(leaders(&c).is_empty());
    assert_eq!(c.node(2).raw().raft().hard_state(), hs(7, 0, 8));
    c.campaign(2).unwrap();
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.applied_data(3), data(&["a", "b"]));
    assert_no_failures(&c);
}

#[test]
fn s5_4_1_candidate_with_longer_log_of_older_last_term_cannot_win() {
    let mut c = Cluster::new(&[1, 2, 3], plain);
    c.elect(1);
    c.isolate(1);
    for p in ["o1", "o2", "o3"] {
        c.propose(1, p.as_bytes()).unwrap(); // 7..=9, term 6, on 1 only
    }
    c.elect(2);
    c.propose(2, b"n").unwrap(); // 7, 8 of term 7, committed on 2 and 3
    c.crash(2);
    c.crash(1);
    c.restart(1);
    c.heal();
    // The first campaign (term 7) meets 3's vote for 2; the second (term 8) only the log check.
    for term in [7, 8] {
        c.campaign(1).unwrap();
        let r = c.node(1).raw().raft();
        assert_eq!((r.term(), r.role()), (term, Role::Candidate));
    }
    assert_eq!(c.node(3).raw().raft().vote(), 0);
    c.campaign(3).unwrap();
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.applied_data(1), data(&["n"]));
    assert_eq!(log_of(&c, 1), log_of(&c, 3));
    assert_no_failures(&c);
}

// ---- §5.4.2 committing entries from previous terms (Figure 8) -----------------------------

/// Figure 8 (a)–(c) on five nodes, the paper's index 2 being index 7 here:
/// (a) 1 leads term 6 and replicates "a" (7) to 2 only; (b) 1 crashes, 5 is elected for term 7
/// by 3 and 4 and appends its no-op and "b" (7, 8), which reach nobody; (c) 5 crashes, 1
/// restarts, is elected for term 8 and replicates "a" to 3 and 4, while its term-8 no-op (8)
/// reaches nobody. Each append carries one entry.
fn figure8_until_c() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |cfg| {
        plain(cfg);
        cfg.max_size_per_msg = 1;
    });
    c.elect(1);
    c.partition(&[1, 2]);
    c.propose(1, b"a").unwrap();
    c.crash(1);
    c.heal();
    c.set_filter(|m| !(is(m, MsgAppend) && m.from == 5));
    c.elect(5);
    c.propose(5, b"b").unwrap();
    assert_eq!((term_at(&c, 5, 7), term_at(&c, 5, 8)), (7, 7));
    c.crash(5);
    c.restart(1);
    // Appends of index 8 from 1: none to 2; to 3 and 4 only the first, which they reject
    // (they lack 7), so 1 backs off and sends them "a" alone.
    let mut passed = BTreeSet::new();
    c.set_filter(move |m| {
        let new = is(m, MsgAppend) && m.from == 1 && m.entries.iter().any(|e| e.index >= 8);
        !new || (m.to != 2 && passed.insert(m.to))
    });
    assert!(campaign_until_leader(&mut c, 1, 3));
    assert_eq!((c.node(1).raw().raft().term(), term_at(&c, 1, 8)), (8, 8));
    let holders: Vec<u64> = (1..=4).filter(|&id| term_at(&c, id, 7) == 6).collect();
    assert_eq!(holders, vec![1, 2, 3, 4], "\"a\" is on a majority");
    assert!((2..=4).all(|id| c.node(id).raw().raft().log().last_index() == 7));
    c
}

#[test]
fn s5_4_2_figure8_old_term_entry_on_majority_is_not_committed() {
    let mut c = figure8_until_c();
    // Counting replicas of "a" (term 6) would commit it.
    assert_eq!((c.committed(1), c.applied_data(1)), (6, vec![]));
    // (d) 1 crashes; 5 (last entry of term 7) is elected by 2, 3, 4 and overwrites 7.
    c.crash(1);
    c.clear_filter();
    c.restart(5);
    assert!(campaign_until_leader(&mut c, 5, 3));
    for id in 2..=5 {
        assert_eq!(term_at(&c, id, 7), 7, "node {id}");
        assert_eq!(c.applied_data(id), data(&["b"]), "node {id}");
    }
    assert_no_failures(&c);
}

#[test]
fn s5_4_2_figure8_current_term_entry_commits_earlier_entries() {
    let mut c = figure8_until_c();
    // (e) an entry of term 8 reaches a majority: it and "a" before it commit.
    c.clear_filter();
    c.propose(1, b"c").unwrap();
    assert_eq!(c.committed(1), 9);
    for id in [1, 3, 4] {
        assert_eq!(c.applied_data(id), data(&["a", "c"]), "node {id}");
    }
    // Now 5 cannot be elected: a majority holds entries of term 8.
    c.crash(1);
    c.restart(5);
    assert!(!campaign_until_leader(&mut c, 5, 3));
    assert!(campaign_until_leader(&mut c, 3, 3));
    for id in 2..=5 {
        assert_eq!(c.applied_data(id), data(&["a", "c"]), "node {id}");
    }
    assert_no_failures(&c);
}

// ---- §5.4.3 leader completeness and state machine safety ---------------------------------

const SEEDS: u64 = 100;

#[test]
fn s5_4_3_leader_completeness_and_state_machine_safety_under_faults() {
    let (mut elections, mut committed) = (0, 0);
    for seed in 0..SEEDS {
        // Even seeds run the paper's protocol, odd ones add pre-vote and check-quorum.
        let mut c = Cluster::new(&[1, 2, 3, 4, 5], move |cfg| {
            if seed % 2 == 0 {
                plain(cfg);
            }
            cfg.seed = seed * 7919 + cfg.id;
        });
        let mut safety = Safety::default();
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for step in 0..120 {
            let up = c.up_ids();
            let down: Vec<u64> = (1..=5).filter(|id| !up.contains(id)).collect();
            let op = next(12);
            match op {
                0..=2 => {
                    if let Some(l) = c.leader() {
                        let _ = c.propose(l, format!("{seed}-{step}").as_bytes());
                    }
                }
                3 => c.isolate(1 + next(5)),
                4 => c.partition(&[1 + next(5), 1 + next(5)]),
                5 => c.heal(),
                6 if up.len() > 3 => c.crash(up[next(up.len() as u64) as usize]),
                7 if !down.is_empty() => c.restart(down[next(down.len() as u64) as usize]),
                8 => {
                    // Refused when it already leads or must apply a conf change first.
                    let _ = c.campaign(up[next(up.len() as u64) as usize]);
                }
                _ => c.tick_all(1 + next(15) as usize),
            }
            safety.check(&c, &format!("seed {seed} step {step} op {op}"));
        }
        // Repair everything; a leader emerges and everyone converges on one history.
        c.heal();
        for id in 1..=5 {
            if !c.node(id).is_up() {
                c.restart(id);
            }
        }
        let done = |c: &Cluster| {
            (1..=5).all(|id| c.applied_data(id).last().map(Vec::as_slice) == Some(b"final"))
        };
        for tick in 0..500 {
            if done(&c) {
                break;
            }
            // (Re)propose now and then: a leader may lose its term to a node that campaigned
            // while partitioned.
            if tick % 40 == 0
                && let Some(l) = c.leader()
            {
                let _ = c.propose(l, b"final");
            }
            c.tick_all(1);
        }
        assert!(done(&c), "seed {seed}: no progress after healing");
        safety.check(&c, &format!("seed {seed} end"));
        let first = c.applied_data(1);
        for id in 2..=5 {
            assert_eq!(c.applied_data(id), first, "seed {seed}: node {id}");
        }
        elections += safety.leaders.len();
        committed += safety.committed.len();
        assert_no_failures(&c);
    }
    // The histories must have exercised the protocol, not idled.
    assert!(elections > 3 * SEEDS as usize && committed > 10 * SEEDS as usize);
}
