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
