//! Log compaction and snapshots: lagging and new followers caught up by snapshot.

use crate::common::raft::*;

// ---- 8. log compaction and snapshots --------------------------------------------------

/// Leader 1 with 3 isolated while 5 entries commit, then the leader's log compacted.
fn lagging_and_compacted() -> Cluster {
    let mut c = elected3();
    c.isolate(3);
    propose_n(&mut c, 5);
    c.compact(1);
    let first = c.node(1).storage.first_index();
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
        let snapshot = Some(snapshot_of(index, snap_term, &[1, 2, 3], &[]));
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

/// How a snapshot send ended decides where the leader probes next: past the snapshot once
/// the transport says it arrived, from the last known match when it failed (the follower
/// may not have it).
#[test]
fn snapshot_status_decides_where_probing_resumes() {
    for status in [SnapshotStatus::Finished, SnapshotStatus::Failed] {
        let mut c = lagging_and_compacted();
        c.heal();
        tick_one(&mut c, 1, HB);
        let (_, held) = pump(&mut c, |m| is(m, MsgSnapshot));
        let snap_index = held[0]
            .snapshot
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .index;
        let before = pr(&c, 1, 3);
        assert_eq!(before.state, ProgressState::Snapshot);
        c.raw_mut(1).report_snapshot(3, status);
        let after = pr(&c, 1, 3);
        assert_eq!(after.state, ProgressState::Probe, "{status:?}");
        let want = match status {
            SnapshotStatus::Finished => snap_index + 1,
            SnapshotStatus::Failed => before.matched + 1,
        };
        assert_eq!(after.next_idx, want, "{status:?}");
    }
}

// ---- a follower that lost its applied state asks for a snapshot -----------------------

use flotilla::raft::SnapshotRequest;

/// Leader 1 of three with three entries applied everywhere; node 3's state machine is lost
/// and it asks for a snapshot.
fn asking_for_a_snapshot() -> Cluster {
    let mut c = elected3();
    propose_n(&mut c, 3);
    c.stabilize();
    c.lose_state_machine(3);
    c.raw_mut(3).request_snapshot().unwrap();
    // Its log ends in the leader's term: the request goes at once, at its last index.
    let at = last(&c, 3);
    assert_eq!(at, c.committed(3));
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at })
    );
    c
}

#[test]
fn a_follower_that_lost_its_state_is_rebuilt_from_the_snapshot_it_asks_for() {
    let mut c = asking_for_a_snapshot();
    let commit = c.committed(3);
    let log_before = last(&c, 3);
    // The leader has no snapshot that recent yet: the request is not served.
    c.stabilize();
    assert_eq!(delivered(&c, MsgSnapshot), 0);
    assert!(c.applied_data(3).is_empty());
    // Its log holds the snapshot's index and matches it: installed all the same, since
    // the state it was applied to is gone.
    c.compact(1);
    assert_eq!(c.node(1).storage.first_index() - 1, commit);
    c.tick_all(HB);
    c.stabilize();
    assert_eq!(delivered(&c, MsgSnapshot), 1);
    assert_eq!(c.applied_data(3), c.applied_data(1));
    assert_eq!(c.applied_data(3).len(), 3);
    let after = st(&c, 3);
    assert_eq!(after.requested_snapshot, None);
    assert_eq!(after.last_index, log_before);
    assert!(c.node(3).raw().is_quiescent());
    // And it follows the log again.
    assert_eq!(pr(&c, 1, 3).state, ProgressState::Replicate);
    propose_n(&mut c, 2);
    c.stabilize();
    assert_eq!(c.applied_data(3), c.applied_data(1));
    assert_eq!(c.applied_data(3).len(), 5);
    assert_clean(&c);
}

#[test]
fn while_it_waits_a_follower_appends_commits_and_applies_nothing_and_does_not_campaign() {
    let mut c = asking_for_a_snapshot();
    let before = st(&c, 3);
    propose_n(&mut c, 2);
    c.stabilize();
    c.tick_all(HB);
    c.stabilize();
    let during = st(&c, 3);
    assert!(!c.node(3).raw().is_quiescent(), "it must go on asking");
    assert_eq!(during.last_index, before.last_index, "appended nothing");
    assert_eq!(during.hard_state.commit, before.hard_state.commit);
    assert!(c.applied_data(3).is_empty(), "applied nothing");
    assert!(!c.raw_mut(3).has_ready());
    assert!(matches!(
        c.raw_mut(3).campaign(),
        Err(RaftError::CampaignRefused(
            flotilla::raft::CampaignRefusal::AwaitingSnapshot
        ))
    ));
    // The leader goes: node 3 times out again and again without campaigning; once node 2
    // times out too, node 3's vote elects it.
    c.isolate(1);
    let asked = watch(&mut c, |m| {
        m.from == 3 && (is(m, MsgRequestVote) || is(m, MsgRequestPreVote))
    });
    for _ in 0..4 * ET {
        c.tick(3);
        c.stabilize();
    }
    assert_eq!(role(&c, 3), Role::Follower);
    for _ in 0..4 * ET {
        c.tick(2);
        c.tick(3);
        c.stabilize();
    }
    assert_eq!(c.leader(), Some(2));
    assert!(
        asked.borrow().is_empty(),
        "node 3 campaigned: {:?}",
        asked.borrow()
    );
    c.clear_filter();
    // The new leader serves the request once it has a snapshot that recent.
    c.compact(2);
    c.tick_all(HB);
    c.stabilize();
    assert_eq!(st(&c, 3).requested_snapshot, None);
    assert_eq!(c.applied_data(3), c.applied_data(2));
    assert_eq!(c.applied_data(3).len(), 5);
}

#[test]
fn a_snapshot_below_the_request_is_refused_and_one_in_flight_is_not_sent_twice() {
    let mut c = asking_for_a_snapshot();
    let at = last(&c, 3);
    let t = term(&c, 3);
    // Below the request: refused; the node still waits.
    let old = Some(snapshot_of(at - 1, t, &[1, 2, 3], &[]));
    c.raw_mut(3)
        .step(with(msg(MsgSnapshot, 1, 3, t), |m| m.snapshot = old))
        .unwrap();
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at })
    );
    let _ = c.raw_mut(3).ready().unwrap();
    // The leader's snapshot is held in flight while node 3 asks again each heartbeat.
    c.compact(1);
    tick_one(&mut c, 1, HB);
    let (_, held) = pump(&mut c, |m| is(m, MsgSnapshot));
    assert_eq!(held.len(), 1);
    assert_eq!(pr(&c, 1, 3).state, ProgressState::Snapshot);
    tick_one(&mut c, 1, HB);
    let (seen, again) = pump(&mut c, |m| is(m, MsgSnapshot));
    assert!(
        seen.iter()
            .any(|m| is(m, MsgAppendResponse) && m.request_snapshot == at),
        "asked again: {seen:?}"
    );
    assert!(again.is_empty(), "a second snapshot while one is in flight");
    c.deliver(held.into_iter().next().unwrap());
    c.stabilize();
    assert_eq!(st(&c, 3).requested_snapshot, None);
    assert_eq!(c.applied_data(3), c.applied_data(1));
}

/// With no leader known, the request waits (nothing is sent to no one); the first
/// leader's heartbeat carries it.
#[test]
fn a_request_without_a_leader_waits_for_one() {
    let mut c = booted(Cluster::new(&[1, 2, 3], |_| {}));
    c.raw_mut(3).request_snapshot().unwrap();
    assert_eq!(st(&c, 3).requested_snapshot, Some(SnapshotRequest::Waiting));
    let rd = c.raw_mut(3).ready().unwrap();
    assert!(rd.messages.is_empty(), "{:?}", rd.messages);
    assert!(rd.persisted_messages.is_empty() && rd.hard_state.is_none());
    c.elect(1);
    c.tick_all(HB);
    c.stabilize();
    let at = last(&c, 3);
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at })
    );
}

#[test]
fn a_leader_cannot_ask_for_a_snapshot() {
    let mut c = elected3();
    assert_eq!(
        c.raw_mut(1).request_snapshot(),
        Err(flotilla::raft::SnapshotRequestRefusal::Leader)
    );
    assert_eq!(st(&c, 1).requested_snapshot, None);
}

/// Node 3 missed an election: its log ends in the old term. Its request waits until the
/// new leader's append ends its log in the new term, then goes at that index; a request
/// sent to the old leader is chosen again under the new one.
#[test]
fn a_request_waits_for_the_log_to_end_in_the_leaders_term() {
    let mut c = elected3();
    propose_n(&mut c, 2);
    c.stabilize();
    c.isolate(3);
    c.raw_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
    for i in 2..4 {
        c.propose(2, &[i]).unwrap();
    }
    c.stabilize();
    c.lose_state_machine(3);
    // Still following the old leader: the request goes to it, at the old log's end.
    c.raw_mut(3).request_snapshot().unwrap();
    let old_at = last(&c, 3);
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at: old_at })
    );
    c.heal();
    // The new leader's heartbeat raises node 3's term: the request waits again, and node
    // 3 appends what it lacks; the next heartbeat carries the request, at the new end.
    tick_one(&mut c, 2, HB);
    c.stabilize();
    assert_eq!(term(&c, 3), term(&c, 2));
    assert_eq!(last(&c, 3), last(&c, 2));
    assert!(c.applied_data(3).is_empty(), "nothing applied meanwhile");
    tick_one(&mut c, 2, HB);
    c.stabilize();
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at: last(&c, 2) })
    );
    c.compact(2);
    tick_one(&mut c, 2, HB);
    c.stabilize();
    assert_eq!(st(&c, 3).requested_snapshot, None);
    assert_eq!(c.applied_data(3), c.applied_data(2));
    assert_eq!(c.applied_data(3).len(), 4);
}

/// Node 2 is down and node 3's acknowledgement of the last entry was lost, so the leader
/// cannot commit it, and cannot make a snapshot that recent. Node 3, waiting for one
/// there, acknowledges its log again with each append it refuses: the entry commits and
/// the snapshot follows.
#[test]
fn a_request_acknowledges_the_log_it_asks_past() {
    let mut c = elected3();
    propose_n(&mut c, 2);
    c.stabilize();
    c.isolate(2);
    c.set_filter(|m| !(m.from == 3 && is(m, MsgAppendResponse)));
    propose_n(&mut c, 1);
    c.stabilize();
    c.clear_filter();
    let at = last(&c, 3);
    assert_eq!(last(&c, 1), at);
    assert!(c.committed(1) < at, "the leader lacks a quorum for it");
    c.lose_state_machine(3);
    c.raw_mut(3).request_snapshot().unwrap();
    assert_eq!(
        st(&c, 3).requested_snapshot,
        Some(SnapshotRequest::Sent { at })
    );
    for _ in 0..3 {
        tick_one(&mut c, 1, HB);
        c.stabilize();
    }
    assert_eq!(
        c.committed(1),
        at,
        "committed with node 3's acknowledgement"
    );
    c.compact(1);
    tick_one(&mut c, 1, HB);
    c.stabilize();
    assert_eq!(st(&c, 3).requested_snapshot, None);
    assert_eq!(c.applied_data(3), c.applied_data(1));
    assert_eq!(c.applied_data(3).len(), 3);
}
