//! Membership: joint consensus and learners.

use crate::common::raft::*;

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
    run(&mut c, Delivery::InOrder, |_| false, observe);
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
