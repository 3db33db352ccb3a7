//! Scenarios distilled from simulator failures, kept so the bugs stay fixed.

use std::cell::RefCell;
use std::rc::Rc;

use flotilla::proto::raftpb::{Message, MessageType};
use flotilla::raft::ReadOnlyOption;
use flotilla::testkit::raft_sim::cluster::Cluster;

/// Simulator seed 2801: a leader transfer sent TimeoutNow, the transfer was abandoned after
/// an election timeout, heartbeats renewed the old leader's lease, and then the delayed
/// TimeoutNow arrived: the transferee's forced campaign ignores followers' leases, so a new
/// leader committed writes while the old one still served lease reads (a stale read).
#[test]
fn no_lease_reads_after_timeout_now_even_if_transfer_was_abandoned() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.read_only_option = ReadOnlyOption::LeaseBased;
    });
    let et = c.node(1).raw().raft().config().election_tick;
    c.tick_all(et); // past the boot guard
    c.elect(1);
    c.tick_all(2); // one heartbeat round
    assert!(
        c.node(1).raw().status().lease_valid,
        "lease after a heartbeat round"
    );

    let held: Rc<RefCell<Vec<Message>>> = Rc::default();
    let hold = held.clone();
    c.set_filter(move |m| {
        if m.msg_type == MessageType::MsgTimeoutNow as i32 {
            hold.borrow_mut().push(m.clone());
            return false;
        }
        true
    });
    c.raw_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    assert_eq!(
        held.borrow().len(),
        1,
        "node 2 was caught up: TimeoutNow goes at once"
    );
    assert!(
        !c.node(1).raw().status().lease_valid,
        "no lease during a transfer"
    );

    c.tick_all(et + 2); // transfer abandoned; heartbeats keep flowing
    let st = c.node(1).raw().status();
    assert_eq!(st.lead_transferee, None);
    assert!(
        !st.lease_valid,
        "the late TimeoutNow could still elect node 2"
    );

    c.clear_filter();
    let late = held.borrow_mut().pop().unwrap();
    c.deliver(late);
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
}
