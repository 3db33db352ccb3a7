//! Replication: the pipelined window, fast backtracking, size limits, the leader's own
//! persistence and minimal heartbeats.

use std::cell::Cell;
use std::rc::Rc;

use crate::common::raft::*;

// ---- 6. pipelined replication ---------------------------------------------------------

fn appends_to(c: &Cluster, to: u64) -> Vec<Vec<u64>> {
    let net = c.network.iter();
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
    // Every committed entry gives its bytes back, whatever their sizes.
    c.isolate(1);
    for size in [1, 7, 1] {
        c.propose(1, &vec![4; size]).unwrap();
    }
    assert_eq!(st(&c, 1).uncommitted_bytes, 9);
    c.heal();
    c.tick_all(HB);
    assert_eq!(st(&c, 1).uncommitted_bytes, 0);
}

/// The limit never blocks progress: with nothing uncommitted, an entry larger than the limit
/// is taken; entries without payload cost nothing and are taken at any level.
#[test]
fn uncommitted_size_limit_admits_a_large_first_entry_and_empty_ones() {
    let mut c = elected(&[1, 2, 3], |cfg| cfg.max_uncommitted_size = 300, 1);
    c.isolate(1);
    assert_eq!(st(&c, 1).uncommitted_bytes, 0);
    c.propose(1, &[1; 500]).unwrap();
    assert_eq!(st(&c, 1).uncommitted_bytes, 500);
    let r = c.raw_mut(1).propose(vec![2; 1], vec![]);
    assert_eq!(dropped(r), DropReason::UncommittedSizeLimit { limit: 300 });
    c.propose(1, &[]).unwrap();
    assert_eq!(st(&c, 1).uncommitted_bytes, 500);
}

// ---- 13. the leader's own persistence -------------------------------------------------

#[test]
fn leader_commits_on_follower_acks_before_its_own_write() {
    let mut c = elected3();
    c.sync = false;
    let i = c.raw_mut(1).propose(b"w".to_vec(), vec![]).unwrap();
    c.process_ready(1); // appends go out; the leader's own write stays queued
    for m in std::mem::take(&mut c.network) {
        c.deliver(m);
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
    n.campaign().unwrap();
    let Handled { after: to_self, .. } = write_ready(&mut n, &store);
    for m in to_self {
        n.step(m).unwrap(); // our own durable vote
    }
    assert_eq!(n.raft().role(), Role::Leader);
    let Handled { ack, committed, .. } = write_ready(&mut n, &store);
    let (noop, t) = ack.expect("the no-op to persist");
    assert!(committed.is_empty());
    assert_eq!(
        n.raft().log().committed(),
        0,
        "committed before it was durable"
    );
    n.on_persisted(noop, t);
    assert_eq!(n.raft().log().committed(), noop);
    let committed = write_ready(&mut n, &store).committed;
    assert_eq!(committed.len(), 1);
    n.on_applied(noop);
    let j = n.propose(b"x".to_vec(), vec![]).unwrap();
    let ack = write_ready(&mut n, &store).ack;
    assert_eq!((n.raft().log().committed(), ack), (noop, Some((j, t))));
    n.on_persisted(j, t);
    assert_eq!(n.raft().log().committed(), j);
}

/// An entry reaches every replica as it was proposed: data, context and type.
#[test]
fn proposed_entries_keep_their_data_context_and_type() {
    let mut c = elected3();
    let batch = [(b"d".to_vec(), b"ctx".to_vec())];
    let index = c.raw_mut(1).propose_batch(batch).unwrap();
    c.stabilize();
    for id in 1..=3 {
        let e = entry(&c, id, index);
        assert_eq!((&e.data[..], &e.context[..]), (&b"d"[..], &b"ctx"[..]));
        assert_eq!(e.entry_type, EntryType::EntryNormal as i32);
    }
}

// ---- 14. minimal heartbeats -----------------------------------------------------------

#[test]
fn the_leader_sends_one_heartbeat_round_every_heartbeat_tick() {
    let mut c = elected3();
    let hbs = watch(&mut c, |m| is(m, MsgHeartbeat));
    for round in 1..=5 {
        tick_one(&mut c, 1, HB - 1);
        pump(&mut c, |_| false);
        assert_eq!(
            hbs.borrow().len(),
            2 * (round - 1),
            "a round before heartbeat_tick"
        );
        tick_one(&mut c, 1, 1);
        pump(&mut c, |_| false);
        assert_eq!(
            hbs.borrow().len(),
            2 * round,
            "one heartbeat per follower a round"
        );
    }
}

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
