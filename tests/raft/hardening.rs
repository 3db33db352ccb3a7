//! Findings of the review that ported etcd-raft's and raft-rs's suites to the core: each
//! test reproduces one finding's behaviour and fails without its fix.

use std::sync::Arc;
use std::sync::Mutex;

use crate::common::raft::{
    ET, HB, ent, handle_ready, is, lease_cluster, msg, role, snapshot_of, tick_one, watch,
    write_ready,
};
use flotilla::proto::raftpb::{Entry, Message, MessageType, Snapshot};
use flotilla::raft::StorageResult;
use flotilla::raft::{
    CampaignRefusal, Config, DropReason, LogStorage, MemStorage, NodeStart, RaftError, RaftState,
    RawNode, ReadOnlyOption, Role, StorageError,
};
use flotilla::testkit::raft_sim::cluster::Cluster;

/// No node other than `old` leads and has committed an entry of its own term while `old`
/// still believes its lease is valid (that would let `old` serve a stale read).
fn assert_no_overlapping_leader(c: &Cluster, old: u64) {
    if !c.node(old).raw().status().lease_valid {
        return;
    }
    for id in c.up_ids() {
        let r = c.node(id).raw().raft();
        if id != old
            && r.role() == Role::Leader
            && r.log().term_or_zero(r.log().committed()) == r.term()
        {
            panic!("node {id} commits in term {} under {old}'s lease", r.term());
        }
    }
}

/// Finding 1: a follower inside the leader's lease must not vote for itself when the
/// application asks it to campaign.
#[test]
fn requested_campaign_is_refused_inside_a_leader_lease() {
    let mut c = lease_cluster();
    c.propose(1, b"a").unwrap();
    // 3 loses the leader and times out; 2 keeps acknowledging heartbeats.
    c.cut_link(1, 3);
    for _ in 0..2 * ET {
        c.tick(3);
    }
    c.stabilize();
    for _ in 0..HB {
        c.tick(1);
    }
    c.stabilize();
    assert!(
        c.node(1).raw().status().lease_valid,
        "1's lease rests on {{1, 2}}"
    );
    c.isolate(1);

    let refused = c.campaign(2);
    assert_no_overlapping_leader(&c, 1);
    assert_eq!(
        refused,
        Err(RaftError::CampaignRefused(CampaignRefusal::InLease {
            leader: 1
        }))
    );
    assert_eq!(role(&c, 2), Role::Follower);

    // As time passes for everyone, 2 and 3 elect a leader, but only once 1's lease is over.
    for _ in 0..4 * ET {
        c.tick_all(1);
        assert_no_overlapping_leader(&c, 1);
    }
    assert!(matches!(c.leader(), Some(2 | 3)));
}

/// Finding 1, the safe case: a group created in this process (a split) has no boot guard
/// and campaigns at once; a restarted one waits an election timeout, and once a leader is
/// known a requested campaign is refused again.
#[test]
fn created_group_campaigns_at_once_restarted_one_waits() {
    let mut restarted = Cluster::new(&[1, 2, 3], |_| {});
    assert_eq!(
        restarted.campaign(1),
        Err(RaftError::CampaignRefused(CampaignRefusal::InLease {
            leader: 0
        }))
    );
    // The guard lasts one election timeout of the node's own ticks: until then it neither
    // campaigns on request nor grants votes.
    for id in [2, 3] {
        tick_one(&mut restarted, id, ET - 1);
    }
    tick_one(&mut restarted, 1, ET - 1);
    assert_eq!(
        restarted.campaign(1),
        Err(RaftError::CampaignRefused(CampaignRefusal::InLease {
            leader: 0
        }))
    );
    tick_one(&mut restarted, 1, 1);
    restarted.campaign(1).unwrap();
    assert_eq!(
        restarted.leader(),
        None,
        "2 and 3 are still inside their guard"
    );

    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.start = NodeStart::Created);
    c.campaign(1).unwrap();
    assert_eq!(c.leader(), Some(1));
    assert_eq!(
        c.campaign(2),
        Err(RaftError::CampaignRefused(CampaignRefusal::InLease {
            leader: 1
        }))
    );
}

/// Finding 2: asking the leader to transfer to itself cancels a pending transfer.
#[test]
fn transfer_to_self_cancels_a_pending_transfer() {
    let mut c = lease_cluster();
    c.isolate(3);
    c.propose(1, b"a").unwrap(); // 3 lags: the transfer waits for it to catch up
    c.raw_mut(1).transfer_leader(3).unwrap();
    assert_eq!(c.node(1).raw().status().lead_transferee, Some(3));
    assert!(matches!(
        c.propose(1, b"b"),
        Err(RaftError::ProposalDropped(
            DropReason::LeaderTransferInProgress { transferee: 3 }
        ))
    ));
    c.raw_mut(1).transfer_leader(1).unwrap();
    assert_eq!(c.node(1).raw().status().lead_transferee, None);
    c.propose(1, b"b").unwrap();
}

/// Finding 3: a forwarded transfer request names its real sender, so a leader asked (by a
/// follower) to transfer to itself neither refuses the message nor loses the request.
#[test]
fn forwarded_transfer_carries_its_real_sender() {
    let mut c = lease_cluster();
    let seen = watch(&mut c, |m| is(m, MessageType::MsgTransferLeader));
    c.raw_mut(2).transfer_leader(1).unwrap();
    c.stabilize();
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
    assert_eq!(c.leader(), Some(1));

    c.raw_mut(2).transfer_leader(3).unwrap();
    c.stabilize();
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
    assert_eq!(c.leader(), Some(3));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|m| m.from == 2 && m.to == 1));
    assert!(
        seen.iter().all(|m| m.term == 0),
        "term-less: a leader of a newer term still takes it"
    );
    assert_eq!((seen[0].transferee, seen[1].transferee), (1, 3));
}

/// A snapshot at (index, term) with these voters and learners, sent in `term`.
fn snapshot_msg(from: u64, to: u64, term: u64, index: u64, members: (&[u64], &[u64])) -> Message {
    Message {
        msg_type: MessageType::MsgSnapshot as i32,
        from,
        to,
        term,
        snapshot: Some(snapshot_of(index, term, members.0, members.1)),
        ..Default::default()
    }
}

/// Finding 4: a snapshot whose configuration has no voters is refused and changes nothing.
#[test]
fn snapshot_without_voters_is_refused() {
    let store = MemStorage::with_voters(&[1, 2, 3]);
    let mut n = RawNode::new(Config::new(2), store).unwrap();
    let before = n.status();
    let r = n.step(snapshot_msg(1, 2, 3, 50, (&[], &[2])));
    assert!(matches!(r, Err(RaftError::InvalidMessage(_))), "{r:?}");
    assert_eq!(n.status(), before);
    assert!(!n.has_ready());
}

/// Finding 5: a durable snapshot counts as applied; the node campaigns after a timeout
/// without the application calling `on_applied`.
#[test]
fn installed_snapshot_does_not_block_elections() {
    let store = MemStorage::with_voters(&[1, 2, 3]);
    let mut cfg = Config::new(2);
    cfg.pre_vote = false;
    let mut n = RawNode::new(cfg, store.clone()).unwrap();
    n.step(snapshot_msg(1, 2, 3, 50, (&[1, 2, 3], &[])))
        .unwrap();
    let written = write_ready(&mut n, &store);
    assert_eq!(written.ack, Some((50, 3)), "the snapshot to install");
    n.on_persisted(50, 3);
    assert_eq!(n.status().applied, 50, "the durable snapshot is applied");
    for _ in 0..2 * ET {
        n.tick();
    }
    assert_eq!(n.raft().role(), Role::Candidate);
    assert_eq!(n.raft().term(), 4);
}

/// Finding 5, the compacted range: while the snapshot is still being written, the indices
/// below it are compacted, not "an unapplied conf change", and do not block a campaign.
#[test]
fn compacted_range_does_not_block_elections() {
    let store = MemStorage::with_voters(&[1, 2, 3]);
    let mut cfg = Config::new(2);
    cfg.pre_vote = false;
    let mut n = RawNode::new(cfg, store).unwrap();
    n.step(snapshot_msg(1, 2, 3, 50, (&[1, 2, 3], &[])))
        .unwrap();
    let rd = n.ready().unwrap();
    assert!(rd.snapshot.is_some());
    for _ in 0..2 * ET {
        n.tick();
    }
    assert_eq!(n.raft().role(), Role::Candidate);
}

/// Finding 6: transfer requests must not postpone the check-quorum step-down of an isolated
/// leader.
#[test]
fn isolated_leader_steps_down_despite_transfer_requests() {
    let mut c = lease_cluster();
    c.isolate(1);
    for i in 0..2 * ET {
        let target = 2 + (i as u64 % 2);
        let _ = c.raw_mut(1).transfer_leader(target);
        c.tick(1);
        c.stabilize();
    }
    assert_eq!(role(&c, 1), Role::Follower);
}

/// Finding 7: `max_size_per_msg = 0` means unlimited, not one entry per message.
#[test]
fn zero_max_size_per_msg_is_unlimited() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.max_size_per_msg = 0);
    c.tick_all(ET);
    c.elect(1);
    let appends = watch(&mut c, |m| is(m, MessageType::MsgAppend) && m.to == 2);
    let batch = (0..5).map(|i| (vec![i as u8; 10], Vec::new()));
    c.raw_mut(1).propose_batch(batch).unwrap();
    c.stabilize();
    let sizes: Vec<usize> = appends.borrow().iter().map(|m| m.entries.len()).collect();
    assert_eq!(sizes.first(), Some(&5), "{sizes:?}");
}

/// Finding 8: an empty batch proposes nothing and says so.
#[test]
fn empty_proposal_batch_is_an_error() {
    let mut c = lease_cluster();
    let last = c.node(1).raw().status().last_index;
    let none = std::iter::empty::<(Vec<u8>, Vec<u8>)>();
    assert_eq!(
        c.raw_mut(1).propose_batch(none),
        Err(RaftError::EmptyProposal)
    );
    assert_eq!(c.node(1).raw().status().last_index, last);
}

/// Which reads of a `FlakyStorage` fail.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Failing {
    #[default]
    Nothing,
    Entries,
    Terms,
}

/// A `MemStorage` whose reads fail as `failing` says.
#[derive(Clone, Default)]
struct FlakyStorage {
    inner: MemStorage,
    failing: Arc<Mutex<Failing>>,
}

impl FlakyStorage {
    fn fail(&self, what: Failing) {
        *self.failing.lock().unwrap() = what;
    }

    fn check(&self, what: Failing) -> StorageResult<()> {
        if *self.failing.lock().unwrap() == what {
            return Err(StorageError::backend(std::io::Error::other(
                "disk read failed",
            )));
        }
        Ok(())
    }
}

impl LogStorage for FlakyStorage {
    fn initial_state(&self) -> StorageResult<RaftState> {
        self.inner.initial_state()
    }
    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>> {
        self.check(Failing::Entries)?;
        self.inner.entries(low, high, max_bytes)
    }
    fn term(&self, index: u64) -> StorageResult<u64> {
        self.check(Failing::Terms)?;
        self.inner.term(index)
    }
    fn first_index(&self) -> u64 {
        self.inner.first_index()
    }
    fn last_index(&self) -> u64 {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64) -> StorageResult<Snapshot> {
        self.inner.snapshot(request_index)
    }
}

/// Finding 9: a storage error reading committed entries comes out of `ready()` instead of a
/// Ready that silently lacks them while `has_ready()` stays true.
#[test]
fn ready_surfaces_storage_errors() {
    let store = FlakyStorage {
        inner: MemStorage::with_voters(&[1]),
        ..Default::default()
    };
    let mut cfg = Config::new(1);
    cfg.start = NodeStart::Created;
    let mut n = RawNode::new(cfg, store.clone()).unwrap();
    n.campaign().unwrap();
    for _ in 0..10 {
        handle_ready(&mut n, &store.inner);
    }
    assert!(!n.has_ready(), "a lone node settles at once");
    let index = n.propose(b"x".to_vec(), Vec::new()).unwrap();
    write_ready(&mut n, &store.inner);
    n.on_persisted(index, n.raft().term()); // committed now, readable only from storage
    store.fail(Failing::Entries);
    assert!(n.has_ready());
    assert!(matches!(
        n.ready(),
        Err(RaftError::Storage(StorageError::Backend(_)))
    ));
    assert!(n.has_ready(), "nothing was taken");
    store.fail(Failing::Nothing);
    let committed = n.ready().unwrap().committed_entries;
    assert_eq!(committed.last().map(|e| e.index), Some(index));
}

/// A log whose last term cannot be read must not look empty to an election: taking the
/// term for 0 granted the vote to a candidate whose log lacks our entries.
#[test]
fn unreadable_last_term_refuses_the_vote() {
    let store = FlakyStorage {
        inner: MemStorage::with_voters(&[1, 2, 3]),
        ..Default::default()
    };
    let ents: Vec<Entry> = (1..=5).map(|index| ent(index, 2)).collect();
    store.inner.wl().append(&ents).unwrap();
    let mut cfg = Config::new(2);
    (cfg.check_quorum, cfg.pre_vote) = (false, false);
    let mut n = RawNode::new(cfg, store.clone()).unwrap();
    // A candidate at a higher term whose log ends at (1, 1): far behind ours at (5, 2).
    let vote = |n: &mut RawNode<FlakyStorage>| {
        let req = Message {
            msg_type: MessageType::MsgRequestVote as i32,
            from: 3,
            to: 2,
            term: 3,
            index: 1,
            log_term: 1,
            ..Default::default()
        };
        n.step(req).unwrap();
        let rd = handle_ready(n, &store.inner);
        let resp = rd
            .now
            .iter()
            .chain(&rd.after)
            .find(|m| is(m, MessageType::MsgRequestVoteResponse));
        resp.expect("a vote response").reject
    };
    store.fail(Failing::Terms);
    assert!(vote(&mut n), "vote granted against an unreadable log");
    store.fail(Failing::Nothing);
    assert!(vote(&mut n), "vote granted to a shorter log");
}

/// Finding 10: reads pending when leadership is lost come back as dropped, so the
/// application can fail them at once.
#[test]
fn reads_pending_at_step_down_are_reported_dropped() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.tick_all(ET);
    c.elect(1);
    c.isolate(1);
    c.raw_mut(1).read_index(b"r1".to_vec()).unwrap();
    c.raw_mut(1).read_index(b"r2".to_vec()).unwrap();
    c.stabilize();
    assert!(c.node(1).read_states.is_empty(), "no quorum: unconfirmed");
    for _ in 0..2 * ET {
        c.tick(1);
        c.stabilize();
    }
    assert_eq!(role(&c, 1), Role::Follower, "check-quorum stepped it down");
    assert_eq!(
        c.node(1).dropped_reads,
        vec![b"r1".to_vec(), b"r2".to_vec()]
    );
}

/// Finding 10, reads that wait for the new leader's first commit of its term.
#[test]
fn reads_awaiting_the_first_commit_are_reported_dropped() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.tick_all(ET);
    // 1 wins, but its no-op never reaches anyone, so it cannot commit in its term.
    c.set_filter(|m| !is(m, MessageType::MsgAppend));
    c.campaign(1).unwrap();
    c.stabilize();
    assert_eq!(role(&c, 1), Role::Leader);
    c.raw_mut(1).read_index(b"early".to_vec()).unwrap();
    c.stabilize();
    // A newer term deposes it.
    let m = msg(
        MessageType::MsgHeartbeat,
        2,
        1,
        c.node(1).raw().raft().term() + 1,
    );
    c.raw_mut(1).step(m).unwrap();
    c.stabilize();
    assert_eq!(role(&c, 1), Role::Follower);
    assert_eq!(c.node(1).dropped_reads, vec![b"early".to_vec()]);
}

/// Finding 10, forwarded reads: the deposed leader tells the follower that forwarded a
/// read, which reports it dropped.
#[test]
fn forwarded_reads_dropped_at_step_down_are_reported_by_the_follower() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.tick_all(ET);
    c.elect(1);
    // No heartbeat acknowledgements: the read round never completes.
    c.set_filter(|m| !is(m, MessageType::MsgHeartbeatResponse));
    c.raw_mut(2).read_index(b"forwarded".to_vec()).unwrap();
    c.stabilize();
    assert!(c.node(2).read_states.is_empty());
    let depose = msg(
        MessageType::MsgHeartbeat,
        3,
        1,
        c.node(1).raw().raft().term() + 1,
    );
    c.raw_mut(1).step(depose).unwrap();
    c.stabilize();
    assert_eq!(role(&c, 1), Role::Follower);
    assert_eq!(c.node(2).dropped_reads, vec![b"forwarded".to_vec()]);
    assert!(c.step_errors.is_empty(), "{:?}", c.step_errors);
}

/// A transfer request must name its transferee; one without is refused as invalid and
/// changes nothing.
#[test]
fn transfer_request_without_a_transferee_is_invalid() {
    let mut c = lease_cluster();
    let before = c.node(1).raw().status();
    let m = Message {
        msg_type: MessageType::MsgTransferLeader as i32,
        from: 2,
        to: 1,
        ..Default::default()
    };
    assert!(matches!(
        c.raw_mut(1).step(m),
        Err(RaftError::InvalidMessage(_))
    ));
    assert_eq!(c.node(1).raw().status(), before);
}

/// A committed membership change not yet applied blocks campaigns (the node might count
/// votes with the wrong configuration), requested or on timeout.
#[test]
fn unapplied_conf_change_refuses_campaigns() {
    use flotilla::proto::raftpb::{ConfChange, ConfChangeType, ConfChangeV2, EntryType};
    use prost::Message as _;
    let store = MemStorage::with_voters(&[1, 2, 3]);
    let mut n = RawNode::new(Config::new(2), store.clone()).unwrap();
    let cc: ConfChangeV2 = ConfChange {
        change_type: ConfChangeType::AddLearnerNode as i32,
        node_id: 4,
        ..Default::default()
    }
    .into();
    let entry = Entry {
        entry_type: EntryType::EntryConfChangeV2 as i32,
        index: 1,
        term: 1,
        data: cc.encode_to_vec().into(),
        ..Default::default()
    };
    let append = Message {
        msg_type: MessageType::MsgAppend as i32,
        from: 1,
        to: 2,
        term: 1,
        entries: vec![entry],
        commit: 1,
        ..Default::default()
    };
    n.step(append).unwrap();
    let rd = n.ready().unwrap();
    store.wl().append(&rd.entries).unwrap();
    n.on_persisted(1, 1);
    assert_eq!(n.raft().log().committed(), 1);
    for _ in 0..3 * ET {
        n.tick();
    }
    assert_eq!(n.raft().role(), Role::Follower, "no campaign on timeout");
    assert_eq!(
        n.campaign(),
        Err(RaftError::CampaignRefused(
            CampaignRefusal::UnappliedConfChange
        ))
    );
}

/// A follower that knows no leader refuses reads and transfer requests at once (nothing is
/// forwarded to node 0).
#[test]
fn requests_without_a_known_leader_are_refused_not_forwarded() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    assert_eq!(c.node(2).raw().raft().leader_id(), 0);
    let not_leader = Err(RaftError::ProposalDropped(DropReason::NotLeader {
        leader: 0,
    }));
    assert_eq!(c.raw_mut(2).read_index(b"r".to_vec()), not_leader);
    assert_eq!(c.raw_mut(2).transfer_leader(3), not_leader);
    assert!(c.raw_mut(2).ready().unwrap().messages.is_empty());
}

/// A heartbeat round to followers that hold everything sends no appends; one to a follower
/// that lags does.
#[test]
fn heartbeat_acks_resend_entries_only_to_followers_that_lag() {
    let mut c = lease_cluster();
    let appends = watch(&mut c, |m| is(m, MessageType::MsgAppend));
    c.tick_all(HB);
    assert!(appends.borrow().is_empty(), "{:?}", appends.borrow());
    // 3 misses an entry; the next heartbeat acknowledgement from it brings an append.
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    c.heal();
    appends.borrow_mut().clear();
    c.tick_all(HB);
    let sent: Vec<u64> = appends.borrow().iter().map(|m| m.to).collect();
    assert!(
        !sent.is_empty() && sent.iter().all(|&to| to == 3),
        "{sent:?}"
    );
}

/// The tidy public surface: `RawNode::raft`'s read-only accessors report the same state as
/// `Status`, on the leader and on a follower.
#[test]
fn raft_accessors_agree_with_status() {
    let mut c = lease_cluster();
    c.propose(1, b"a").unwrap();
    for id in [1, 2] {
        let n = c.node(id).raw();
        let (r, st) = (n.raft(), n.status());
        assert_eq!(r.id(), st.id);
        assert_eq!(
            (r.term(), r.vote()),
            (st.hard_state.term, st.hard_state.vote)
        );
        assert_eq!(
            (r.role(), r.leader_id()),
            (st.soft_state.role, st.soft_state.leader_id)
        );
        assert_eq!(r.log().committed(), st.hard_state.commit);
        assert_eq!(r.log().applied(), st.applied);
        assert_eq!(r.log().applying(), st.applied, "all handed out is applied");
        assert_eq!(r.log().last_index(), st.last_index);
        assert_eq!(r.leader_id(), 1, "node {id}");
        assert_eq!(r.config().id, id);
        assert_eq!(r.config().read_only_option, ReadOnlyOption::LeaseBased);
    }
}

/// While a snapshot is not yet durable, the old log below it is all the node has, and it
/// may disagree with the snapshot: nothing at or above the snapshot's index counts as
/// persisted, even where the old log reaches past it.
#[test]
fn a_pending_snapshot_claims_nothing_persisted_at_or_above_it() {
    let store = MemStorage::with_voters(&[1, 2, 3]);
    let old: Vec<Entry> = (1..=10).map(|index| ent(index, 1)).collect();
    store.wl().append(&old).unwrap();
    let mut n = RawNode::new(Config::new(2), store.clone()).unwrap();
    assert_eq!(n.status().persisted_index, 10);
    // Index 8 at term 2: our entry 8 is at term 1, so the snapshot replaces the log.
    n.step(snapshot_msg(1, 2, 2, 8, (&[1, 2, 3], &[]))).unwrap();
    assert_eq!(n.status().persisted_index, 7);
    let written = write_ready(&mut n, &store);
    n.on_persisted(8, 2);
    assert_eq!((written.ack, n.status().persisted_index), (Some((8, 2)), 8));
}
