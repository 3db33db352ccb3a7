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
