//! Leader transfer, and the no-op a new leader appends.

use crate::common::raft::*;

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

/// A transfer ends when a membership change makes its target unable to lead (removed, or
/// made a learner), and only then: other changes leave it running.
#[test]
fn a_transfer_is_cancelled_when_its_target_stops_being_a_voter() {
    let ids = [1, 2, 3, 4];
    for (change, cancelled) in [(RemoveNode, true), (AddLearnerNode, false)] {
        let target = if cancelled { 3 } else { 4 };
        let mut c = booted(Cluster::with_members(&ids, &ids[..3], &[], |_| {}));
        c.elect(1);
        c.isolate(3); // the transfer to 3 cannot finish
        let cc = cc_v1(change, target);
        c.raw_mut(1).propose_conf_change(cc).unwrap();
        c.raw_mut(1).transfer_leader(3).unwrap();
        c.stabilize();
        let voters = st(&c, 1).conf_state.voters;
        assert_eq!(
            voters.contains(&3),
            !cancelled,
            "{change:?}: the change applied"
        );
        let transferee = st(&c, 1).lead_transferee;
        assert_eq!(transferee, (!cancelled).then_some(3), "{change:?}");
    }
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
