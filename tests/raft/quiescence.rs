//! Quiescence of a settled group.

use crate::common::raft::*;

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

/// A follower that has every entry but not yet the commit index covering them keeps the
/// leader awake: hibernating then would leave the follower's state machine behind.
#[test]
fn the_leader_stays_awake_until_followers_learn_the_commit_index() {
    let mut c = elected3();
    c.raw_mut(1).propose(b"a".to_vec(), vec![]).unwrap();
    let commit_news = |m: &Message| is(m, MsgAppend) && m.entries.is_empty();
    let (_, held) = pump(&mut c, commit_news);
    assert!(!held.is_empty());
    for id in [2, 3] {
        assert_eq!(pr(&c, 1, id).matched, last(&c, 1));
    }
    assert_eq!(c.committed(1), last(&c, 1));
    assert!(
        !quiescent(&c, 1),
        "the followers do not know the entry committed"
    );
    for m in held {
        c.deliver(m);
    }
    c.stabilize();
    assert!(quiescent(&c, 1));
}
