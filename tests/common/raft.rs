//! Helpers of the consensus core's scenario tests: a prelude of the types they use, cluster
//! shorthands, message builders, and one Ready loop for tests that drive a lone `RawNode`.

use std::cell::RefCell;
use std::rc::Rc;

pub use flotilla::proto::raftpb::ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
pub use flotilla::proto::raftpb::MessageType::*;
pub use flotilla::proto::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
pub use flotilla::raft::{
    ConfChangeRejection, Config, DropReason, LogStorage, MemStorage, NodeStart, ProgressState,
    ProgressStatus, RaftError, RawNode, ReadOnlyOption, ReadState, Role, SnapshotStatus, Status,
};
pub use flotilla::testkit::raft_sim::cluster::{BOOTSTRAP_INDEX, BOOTSTRAP_TERM, Cluster};

/// Election and heartbeat ticks of `Config::new`.
pub const ET: usize = 10;
pub const HB: usize = 2;
/// Index of the first leader's no-op.
pub const NOOP: u64 = BOOTSTRAP_INDEX + 1;

/// Lets the check-quorum boot guard lapse (one election timeout) without electing anyone.
pub fn booted(mut c: Cluster) -> Cluster {
    c.tick_all(ET);
    assert_eq!(c.leader(), None, "no election expected while booting");
    c
}

pub fn elected(ids: &[u64], tune: impl Fn(&mut Config), leader: u64) -> Cluster {
    let mut c = booted(Cluster::new(ids, tune));
    c.elect(leader);
    c
}

/// Leader 1 of three nodes serving lease reads, elected after the boot guard lapsed.
pub fn lease_cluster() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.read_only_option = ReadOnlyOption::LeaseBased;
    });
    c.tick_all(ET);
    c.elect(1);
    c
}

pub fn elected3() -> Cluster {
    elected(&[1, 2, 3], |_| {}, 1)
}

pub fn st(c: &Cluster, id: u64) -> Status {
    c.node(id).raw().status()
}

pub fn term(c: &Cluster, id: u64) -> u64 {
    st(c, id).hard_state.term
}

pub fn role(c: &Cluster, id: u64) -> Role {
    c.node(id).raw().raft().role()
}

pub fn last(c: &Cluster, id: u64) -> u64 {
    c.node(id).raw().raft().log().last_index()
}

pub fn quiescent(c: &Cluster, id: u64) -> bool {
    c.node(id).raw().is_quiescent()
}

/// Proposes `n` one-byte entries 0, 1, ... at leader 1, each settled.
pub fn propose_n(c: &mut Cluster, n: u8) {
    for i in 0..n {
        c.propose(1, &[i]).unwrap();
    }
}

/// Ticks one node `n` times without delivering anything.
pub fn tick_one(c: &mut Cluster, id: u64, n: usize) {
    for _ in 0..n {
        c.tick(id);
    }
}

/// The leader's view of follower `id`.
pub fn pr(c: &Cluster, leader: u64, id: u64) -> ProgressStatus {
    st(c, leader).progress[&id].clone()
}

pub fn entry(c: &Cluster, id: u64, index: u64) -> Entry {
    let log = &c.node(id).raw().raft().log();
    log.slice(index, index + 1, u64::MAX).expect("entry in log")[0].clone()
}

pub fn delivered(c: &Cluster, t: MessageType) -> u64 {
    c.delivered.get(&t).copied().unwrap_or(0)
}

pub fn is(m: &Message, t: MessageType) -> bool {
    m.msg_type == t as i32
}

pub fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let m = Message::default();
    with(m, |m| {
        (m.msg_type, m.from, m.to, m.term) = (t as i32, from, to, term)
    })
}

pub fn with(mut m: Message, f: impl FnOnce(&mut Message)) -> Message {
    f(&mut m);
    m
}

pub fn ent(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    (e.index, e.term) = (index, term);
    e
}

/// A snapshot at (index, term) whose configuration has these voters and learners.
pub fn snapshot_of(index: u64, term: u64, voters: &[u64], learners: &[u64]) -> Snapshot {
    let conf_state = ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..Default::default()
    };
    let metadata = SnapshotMetadata {
        conf_state: Some(conf_state),
        index,
        term,
    };
    Snapshot {
        metadata: Some(metadata),
        ..Default::default()
    }
}

pub fn rs(index: u64, ctx: &[u8]) -> ReadState {
    ReadState {
        index,
        request_ctx: ctx.to_vec(),
    }
}

pub fn cc_v1(t: ConfChangeType, node_id: u64) -> ConfChange {
    ConfChange {
        change_type: t as i32,
        node_id,
        context: vec![],
    }
}

pub fn cc_v2(tr: ConfChangeTransition, changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let single = |&(t, node_id): &(ConfChangeType, u64)| ConfChangeSingle {
        change_type: t as i32,
        node_id,
    };
    let changes = changes.iter().map(single).collect();
    ConfChangeV2 {
        transition: tr as i32,
        changes,
        context: vec![],
    }
}

pub fn dropped(r: Result<u64, RaftError>) -> DropReason {
    match r {
        Err(RaftError::ProposalDropped(d)) => d,
        other => panic!("expected a dropped proposal, got {other:?}"),
    }
}

pub fn assert_clean(c: &Cluster) {
    assert!(c.step_errors.is_empty(), "step errors: {:?}", c.step_errors);
    assert!(c.checker.failures.is_empty(), "{:?}", c.checker.failures);
}

/// How `run` delivers each round's messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Once each, in the order sent.
    InOrder,
    /// Twice each, in reverse order, every third one a round late.
    Chaos,
}

/// Runs the cluster until it settles (like `stabilize`), holding back the messages `hold`
/// selects and calling `observe` after every round. Returns (delivered messages in order,
/// held messages).
pub fn run(
    c: &mut Cluster,
    delivery: Delivery,
    mut hold: impl FnMut(&Message) -> bool,
    mut observe: impl FnMut(&Cluster),
) -> (Vec<Message>, Vec<Message>) {
    let chaos = delivery == Delivery::Chaos;
    let (mut seen, mut held, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..1000 {
        let mut busy = !late.is_empty();
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            busy |= c.process_ready(id);
            while c.persist(id) {
                busy = true;
            }
        }
        let mut msgs: Vec<Message> = std::mem::take(&mut late);
        msgs.extend(std::mem::take(&mut c.network));
        busy |= !msgs.is_empty();
        if chaos {
            msgs.reverse();
        }
        for (k, m) in msgs.into_iter().enumerate() {
            if hold(&m) {
                held.push(m);
            } else if chaos && k % 3 == 2 {
                late.push(m);
            } else {
                if chaos {
                    c.deliver(m.clone());
                }
                seen.push(m.clone());
                c.deliver(m);
            }
        }
        c.check_invariants();
        observe(c);
        if !busy {
            return (seen, held);
        }
    }
    panic!("cluster did not settle");
}

pub fn pump(c: &mut Cluster, hold: impl FnMut(&Message) -> bool) -> (Vec<Message>, Vec<Message>) {
    run(c, Delivery::InOrder, hold, |_| {})
}

/// Lets every message through and keeps a copy of those `pick` selects, in send order.
pub fn watch(
    c: &mut Cluster,
    pick: impl Fn(&Message) -> bool + 'static,
) -> Rc<RefCell<Vec<Message>>> {
    let seen: Rc<RefCell<Vec<Message>>> = Rc::default();
    let log = seen.clone();
    c.set_filter(move |m| {
        if pick(m) {
            log.borrow_mut().push(m.clone());
        }
        true
    });
    seen
}

/// Takes the first in-flight message matching `pred` off the network.
pub fn take_msg(c: &mut Cluster, pred: impl Fn(&Message) -> bool) -> Message {
    let pos = c.network.iter().position(&pred);
    c.network.remove(pos.expect("message in flight"))
}

pub fn lone_node(id: u64, voters: &[u64], tune: impl Fn(&mut Config)) -> RawNode<MemStorage> {
    let mut cfg = Config::new(id);
    tune(&mut cfg);
    RawNode::new(cfg, MemStorage::with_voters(voters)).expect("valid config")
}

pub fn timeout(n: &RawNode<MemStorage>) -> usize {
    n.raft().randomized_election_timeout()
}

// ---- driving a lone node ---------------------------------------------------------------

/// What one or more Readies asked a lone node to do.
#[derive(Default)]
pub struct Handled {
    /// The (index, term) the write covered, to acknowledge with `on_persisted`.
    pub ack: Option<(u64, u64)>,
    /// Messages it may send at once.
    pub now: Vec<Message>,
    /// Messages it may send only once the write is durable.
    pub after: Vec<Message>,
    pub committed: Vec<Entry>,
}

impl Handled {
    /// The one message of type `t`, and whether it had to wait for persistence.
    pub fn one(&self, t: MessageType) -> (&Message, bool) {
        let now = self.now.iter().filter(|m| is(m, t)).map(|m| (m, false));
        let after = self.after.iter().filter(|m| is(m, t)).map(|m| (m, true));
        let all: Vec<(&Message, bool)> = now.chain(after).collect();
        assert_eq!(all.len(), 1, "expected one {t:?}");
        all[0]
    }
}

/// Takes one Ready and writes its durable part (snapshot, entries, hard state) into
/// `store`, as a store's log writer would. Acknowledges nothing.
pub fn write_ready<S: LogStorage>(n: &mut RawNode<S>, store: &MemStorage) -> Handled {
    let rd = n.ready().expect("ready");
    let mut s = store.wl();
    if let Some(snap) = rd.snapshot.clone() {
        s.apply_snapshot(snap).expect("snapshot newer than the log");
    }
    s.append(&rd.entries).expect("contiguous append");
    if let Some(hs) = rd.hard_state {
        s.set_hard_state(hs);
    }
    Handled {
        ack: rd.persisted_up_to(),
        now: rd.messages,
        after: rd.persisted_messages,
        committed: rd.committed_entries,
    }
}

/// Handles one Ready the whole way: writes it, acknowledges the write, reports the
/// committed entries applied and steps the node's messages to itself (its vote) back in.
pub fn handle_ready<S: LogStorage>(n: &mut RawNode<S>, store: &MemStorage) -> Handled {
    let mut out = write_ready(n, store);
    if let Some((index, term)) = out.ack {
        n.on_persisted(index, term);
    }
    if let Some(e) = out.committed.last() {
        n.on_applied(e.index);
    }
    let (to_self, others) = std::mem::take(&mut out.after)
        .into_iter()
        .partition(|m| m.to == m.from);
    out.after = others;
    for m in to_self {
        n.step(m).expect("own message");
    }
    out
}

/// `handle_ready` until the node has nothing left to do; gathers what it handed out.
pub fn settle(n: &mut RawNode<MemStorage>) -> Handled {
    let store = n.store().clone();
    let mut all = Handled::default();
    while n.has_ready() {
        let out = handle_ready(n, &store);
        all.ack = out.ack.or(all.ack);
        all.now.extend(out.now);
        all.after.extend(out.after);
        all.committed.extend(out.committed);
    }
    all
}
