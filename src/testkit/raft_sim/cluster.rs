//! An in-memory cluster of `RawNode`s over `MemStorage`, driven deterministically. Used by
//! the scenario tests (synchronous: everything is delivered and persisted at once) and by
//! the randomized simulator (asynchronous: messages and writes complete in random order).
//!
//! Durability model: `MemStorage` is the durable log; a node's Ready output sits in
//! `pending_writes` until `persist` writes it. The state machine is durable at apply
//! (applied entries and the configuration are written together). A crash drops the
//! in-memory node, its pending writes and its undelivered messages.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use prost::Message as _;

use crate::proto::raftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use crate::raft::storage::snapshot_index;
use crate::raft::{
    Config, LogStorage, MemStorage, RawNode, ReadState, Ready, Result, Role, SnapshotStatus,
};

/// Index and term of the bootstrap snapshot that holds a group's initial configuration.
pub const BOOTSTRAP_INDEX: u64 = 5;
/// Term of the bootstrap snapshot (see `BOOTSTRAP_INDEX`).
pub const BOOTSTRAP_TERM: u64 = 5;

/// What a node's state machine applied, in order: (index, term, data) of normal entries
/// with a payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateMachine {
    /// Index of the last applied entry of any type, or of the installed snapshot.
    pub applied_index: u64,
    /// (index, term, data) of each applied normal entry with a payload; a snapshot replaces it.
    pub applied: Vec<(u64, u64, Bytes)>,
    /// Configuration as of `applied_index`.
    pub conf_state: ConfState,
}

impl StateMachine {
    /// Snapshot payload: the applied sequence, carried as the entries of a message (a
    /// convenient prost container for a list of entries).
    fn encode(&self) -> Vec<u8> {
        let entries = self
            .applied
            .iter()
            .map(|(index, term, data)| Entry {
                index: *index,
                term: *term,
                data: data.clone(),
                ..Default::default()
            })
            .collect();
        Message {
            entries,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn decode(data: Bytes) -> Vec<(u64, u64, Bytes)> {
        let m = Message::decode(data).unwrap_or_default();
        m.entries
            .into_iter()
            .map(|e| (e.index, e.term, e.data))
            .collect()
    }
}

struct PendingWrite {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
    persisted_messages: Vec<Message>,
    ack: Option<(u64, u64)>,
}

/// One node: its durable parts, plus the running `RawNode` while it is up.
pub struct SimNode {
    /// Raft id of the node.
    pub id: u64,
    /// `None` while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    /// The durable log and hard state; survives a crash and is read back on restart.
    pub storage: MemStorage,
    /// Applied state, durable at apply (survives a crash).
    pub sm: StateMachine,
    /// ReadStates from Ready output, kept until a test takes them; cleared on crash.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads the node reported dropped (it stopped leading first).
    pub dropped_reads: Vec<Vec<u8>>,
    pending_writes: VecDeque<PendingWrite>,
    config: Config,
    /// Restarts so far; each incarnation gets its own seed.
    incarnation: u64,
}

impl SimNode {
    /// The running `RawNode`; panics if the node is crashed.
    pub fn raw(&self) -> &RawNode<MemStorage> {
        self.raw.as_ref().expect("node is crashed")
    }

    /// Whether Ready output is waiting for `Cluster::persist`.
    pub fn has_pending_writes(&self) -> bool {
        !self.pending_writes.is_empty()
    }

    /// Whether the node is running (not crashed).
    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }
}

type Filter = Box<dyn FnMut(&Message) -> bool>;

/// The harness: nodes, the network between them, fault injection and the invariant checker.
pub struct Cluster {
    /// Every node by id, crashed ones included.
    pub nodes: BTreeMap<u64, SimNode>,
    /// Messages sent and not yet delivered, in send order; tests may inspect or take them.
    pub network: Vec<Message>,
    /// Node pairs that cannot talk (both directions are listed).
    cut: BTreeSet<(u64, u64)>,
    /// Returns false to drop a message (tests use this to intercept traffic).
    filter: Option<Filter>,
    /// Messages delivered so far, by type, for assertions on traffic.
    pub delivered: BTreeMap<MessageType, u64>,
    /// Logical time, advanced only by the driver (the simulator, once per tick round).
    pub now: u64,
    /// Synchronous mode: Ready output is persisted at once.
    pub sync: bool,
    /// Safety checker; its `failures` only accumulate, so tests must assert them empty.
    pub checker: super::invariants::Checker,
    /// Run the invariant checks in `stabilize` (benchmarks turn them off).
    pub checks_enabled: bool,
    /// Print every delivered message to stderr (the simulator sets it from
    /// `FLOTILLA_SIM_TRACE`).
    pub trace: bool,
    /// Errors nodes returned when stepping messages from other nodes (a correct node's
    /// messages must never be rejected; the simulator fails on any).
    pub step_errors: Vec<String>,
}

impl Cluster {
    /// `ids` all start as voters of one group, with `tune` applied to each node's config.
    pub fn new(ids: &[u64], tune: impl Fn(&mut Config)) -> Self {
        Self::with_members(ids, ids, &[], tune)
    }

    /// Nodes `ids`, of which `voters` and `learners` form the initial configuration; the
    /// rest start empty (to be added later).
    pub fn with_members(
        ids: &[u64],
        voters: &[u64],
        learners: &[u64],
        tune: impl Fn(&mut Config),
    ) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            network: Vec::new(),
            cut: BTreeSet::new(),
            filter: None,
            delivered: BTreeMap::new(),
            now: 0,
            sync: true,
            checker: Default::default(),
            checks_enabled: true,
            trace: false,
            step_errors: Vec::new(),
        };
        for &id in ids {
            let storage = MemStorage::new();
            let mut config = Config::new(id);
            tune(&mut config);
            let mut sm = StateMachine::default();
            if voters.contains(&id) || learners.contains(&id) {
                // Members are bootstrapped from a snapshot holding the initial configuration,
                // so a node added later starts empty and catches up by snapshot.
                let cs = ConfState {
                    voters: voters.to_vec(),
                    learners: learners.to_vec(),
                    ..Default::default()
                };
                let meta = SnapshotMetadata {
                    conf_state: Some(cs.clone()),
                    index: BOOTSTRAP_INDEX,
                    term: BOOTSTRAP_TERM,
                };
                let snap = Snapshot {
                    data: sm.encode().into(),
                    metadata: Some(meta),
                };
                storage.wl().apply_snapshot(snap).expect("fresh storage");
                sm = StateMachine {
                    applied_index: BOOTSTRAP_INDEX,
                    applied: Vec::new(),
                    conf_state: cs,
                };
                config.applied = BOOTSTRAP_INDEX;
            }
            let raw = RawNode::new(config.clone(), storage.clone()).expect("valid test config");
            let node = SimNode {
                id,
                raw: Some(raw),
                storage,
                sm,
                read_states: Vec::new(),
                dropped_reads: Vec::new(),
                incarnation: 0,
                pending_writes: VecDeque::new(),
                config,
            };
            c.nodes.insert(id, node);
        }
        c
    }

    /// Node `id`; panics if there is no such node.
    pub fn node(&self, id: u64) -> &SimNode {
        &self.nodes[&id]
    }

    /// The node's `RawNode`, to drive it directly; panics if the node is crashed.
    pub fn raw_mut(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .expect("node is up")
    }

    /// Installs `f`, consulted as each message to another node is sent; false loses it.
    /// Replaces any previous filter; messages already in flight are not affected.
    pub fn set_filter(&mut self, f: impl FnMut(&Message) -> bool + 'static) {
        self.filter = Some(Box::new(f));
    }

    /// Removes the filter installed by `set_filter`.
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    // ---- faults -----------------------------------------------------------------------

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.cut_link(id, o);
        }
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut_link(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Splits the nodes into two sides that cannot talk.
    pub fn partition(&mut self, side: &[u64]) {
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                self.cut_link(a, b);
            }
        }
    }

    /// Restores every cut link (a filter, if any, stays).
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether the partition drops messages from `from` to `to` (the filter is not consulted).
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Loses everything the node had not persisted, its unclaimed read results, and the
    /// messages to and from it.
    pub fn crash(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("known node");
        n.raw = None;
        n.pending_writes.clear();
        n.read_states.clear();
        n.dropped_reads.clear();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| m.to == id || m.from == id);
        self.network = kept;
        for m in gone {
            self.lost(&m);
        }
    }

    /// Brings a crashed node back from its storage and state machine, as a restarted node
    /// with a new seed.
    pub fn restart(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("known node");
        assert!(n.raw.is_none(), "node {id} must crash before it restarts");
        n.incarnation += 1;
        let mut config = n.config.clone();
        config.applied = n.sm.applied_index;
        // Whatever it was created as, a node coming back from disk restarts.
        config.start = crate::raft::NodeStart::Restarted;
        // A new seed per incarnation: the same node does not repeat its timeouts.
        config.seed = config
            .seed
            .wrapping_add(n.incarnation.wrapping_mul(0x9E37_79B9));
        n.raw = Some(RawNode::new(config, n.storage.clone()).expect("restart from durable state"));
    }

    // ---- driving ----------------------------------------------------------------------

    /// Ticks node `id` once; a no-op while it is crashed.
    pub fn tick(&mut self, id: u64) {
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            raw.tick();
        }
    }

    /// Ticks every live node `times` times, stabilizing after each round in synchronous
    /// mode. Does not advance `now`.
    pub fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                self.tick(id);
            }
            if self.sync {
                self.stabilize();
            }
        }
    }

    /// Asks `id` to campaign (`RawNode::campaign`, refused inside a leader's lease).
    pub fn campaign(&mut self, id: u64) -> Result<()> {
        let r = self.raw_mut(id).campaign();
        if self.sync {
            self.stabilize();
        }
        r
    }

    /// Proposes `data` on node `id` (which must be up) and returns the entry's index;
    /// stabilizes afterwards in synchronous mode.
    pub fn propose(&mut self, id: u64, data: &[u8]) -> Result<u64> {
        let r = self.raw_mut(id).propose(data.to_vec(), Vec::new());
        if self.sync {
            self.stabilize();
        }
        r
    }

    /// The live leader of the highest term (a deposed leader may linger in a lower one).
    pub fn leader(&self) -> Option<u64> {
        let mut leaders: Vec<(u64, u64)> = self
            .nodes
            .values()
            .filter_map(|n| n.raw.as_ref())
            .filter(|r| r.raft().role == Role::Leader)
            .map(|r| (r.raft().term, r.raft().id))
            .collect();
        leaders.sort();
        leaders.last().map(|&(_, id)| id)
    }

    /// Elects `id` (ticking nothing): campaign and settle.
    pub fn elect(&mut self, id: u64) {
        if let Err(e) = self.campaign(id) {
            panic!("node {id} cannot campaign: {e}");
        }
        assert_eq!(self.leader(), Some(id), "node {id} failed to become leader");
    }

    /// Processes Ready output of `id`: sends messages, queues (or performs) the write,
    /// applies committed entries.
    pub fn process_ready(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(raw) = n.raw.as_mut() else {
            return false;
        };
        if !raw.has_ready() {
            return false;
        }
        let rd: Ready = match raw.ready() {
            Ok(rd) => rd,
            Err(e) => {
                // The simulator fails on any recorded error; stop processing this node.
                self.step_errors.push(format!("node {id}: ready: {e}"));
                return false;
            }
        };
        let ack = rd.persisted_up_to();
        n.read_states.extend(rd.read_states.iter().cloned());
        n.dropped_reads.extend(rd.dropped_reads.iter().cloned());
        let write = PendingWrite {
            hard_state: rd.hard_state,
            entries: rd.entries,
            snapshot: rd.snapshot,
            persisted_messages: rd.persisted_messages,
            ack,
        };
        n.pending_writes.push_back(write);
        let msgs = rd.messages;
        let committed = rd.committed_entries;
        for m in msgs {
            self.send(m);
        }
        self.apply(id, committed);
        if self.sync {
            while self.persist(id) {}
        }
        true
    }

    /// Writes the node's oldest pending Ready; then its "after persistence" messages go out
    /// and the write is acknowledged. Returns false if nothing was pending.
    pub fn persist(&mut self, id: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(w) = n.pending_writes.pop_front() else {
            return false;
        };
        {
            let mut s = n.storage.wl();
            if let Some(snap) = &w.snapshot {
                s.apply_snapshot(snap.clone())
                    .expect("snapshot newer than the log");
            }
            s.append(&w.entries).expect("contiguous append");
            if let Some(hs) = &w.hard_state {
                s.set_hard_state(*hs);
            }
        }
        if let Some(snap) = &w.snapshot {
            let meta = snap.metadata.clone().unwrap_or_default();
            n.sm = StateMachine {
                applied_index: meta.index,
                applied: StateMachine::decode(snap.data.clone()),
                conf_state: meta.conf_state.unwrap_or_default(),
            };
        }
        if let Some(raw) = n.raw.as_mut() {
            if let Some((index, term)) = w.ack {
                raw.on_persisted(index, term);
            }
            if let Some(snap) = &w.snapshot {
                raw.on_applied(snapshot_index(snap));
            }
        }
        for m in w.persisted_messages {
            self.send(m);
        }
        true
    }

    fn apply(&mut self, id: u64, entries: Vec<Entry>) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raw) = n.raw.as_mut() else { return };
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        for e in entries {
            if e.entry_type == EntryType::EntryNormal as i32 {
                if !e.data.is_empty() {
                    n.sm.applied.push((e.index, e.term, e.data.clone()));
                }
            } else {
                match raw.apply_conf_change(&e) {
                    Ok(cs) => n.sm.conf_state = cs,
                    Err(err) => self.checker.fail(format!(
                        "node {id}: committed conf change {} failed: {err}",
                        e.index
                    )),
                }
            }
            n.sm.applied_index = e.index;
        }
        raw.on_applied(last);
        // The configuration we restart with, durable together with the applied state.
        n.storage.wl().set_conf_state(n.sm.conf_state.clone());
    }

    /// Puts a message on the network, or loses it if the target is crashed, the link is cut
    /// or the filter refuses it. A node's message to itself always goes through.
    pub fn send(&mut self, m: Message) {
        // The self-vote comes back to the node; it never crosses the network.
        if m.to == m.from {
            self.network.push(m);
            return;
        }
        if self.is_cut(m.from, m.to) || !self.nodes.get(&m.to).is_some_and(|n| n.is_up()) {
            self.lost(&m);
            return;
        }
        if let Some(f) = self.filter.as_mut()
            && !f(&m)
        {
            self.lost(&m);
            return;
        }
        self.network.push(m);
    }

    /// A message that will never arrive. Like a real transport, tell the sender when it was
    /// a snapshot, so the leader stops waiting for it.
    pub fn lost(&mut self, m: &Message) {
        if m.msg_type == MessageType::MsgSnapshot as i32 {
            self.snapshot_outcome(m.from, m.to, SnapshotStatus::Failed);
        }
    }

    fn snapshot_outcome(&mut self, from: u64, to: u64, status: SnapshotStatus) {
        if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
            raw.report_snapshot(to, status);
        }
    }

    /// Delivers one message to its node.
    pub fn deliver(&mut self, m: Message) {
        if m.from != m.to && self.is_cut(m.from, m.to) {
            self.lost(&m);
            return;
        }
        let t = MessageType::try_from(m.msg_type).unwrap_or(MessageType::MsgHup);
        *self.delivered.entry(t).or_default() += 1;
        if self.trace {
            eprintln!(
                "[{}] {t:?} {}->{} term {} index {} log_term {} commit {} reject {} entries {}",
                self.now,
                m.from,
                m.to,
                m.term,
                m.index,
                m.log_term,
                m.commit,
                m.reject,
                m.entries.len()
            );
        }
        let (from, to) = (m.from, m.to);
        let Some(raw) = self.nodes.get_mut(&to).and_then(|n| n.raw.as_mut()) else {
            self.lost(&m);
            return;
        };
        if let Err(e) = raw.step(m) {
            // Dropped requests to a non-leader are expected; anything else is a bug.
            if !matches!(e, crate::raft::RaftError::ProposalDropped(_)) {
                self.step_errors
                    .push(format!("node {to} rejected {t:?} from {from}: {e}"));
            }
        }
        if t == MessageType::MsgSnapshot {
            self.snapshot_outcome(from, to, SnapshotStatus::Finished);
        }
    }

    /// Runs until no node has output, nothing is in flight and every write is persisted.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let mut busy = false;
            for &id in &ids {
                busy |= self.process_ready(id);
                while self.persist(id) {
                    busy = true;
                }
            }
            let msgs = std::mem::take(&mut self.network);
            busy |= !msgs.is_empty();
            for m in msgs {
                self.deliver(m);
            }
            if self.checks_enabled {
                self.check_invariants();
            }
            if !busy {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Commit index of a node.
    pub fn committed(&self, id: u64) -> u64 {
        self.node(id).raw().raft().log.committed
    }

    /// Payloads applied by a node, in order.
    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.node(id)
            .sm
            .applied
            .iter()
            .map(|(_, _, d)| d.to_vec())
            .collect()
    }

    /// Compacts a node's log into a snapshot of its state machine at its applied index.
    pub fn compact(&mut self, id: u64) {
        let n = &self.nodes[&id];
        let index = n.sm.applied_index;
        let last_stored = n.storage.last_index();
        if index == 0 || index > last_stored {
            return;
        }
        let data = n.sm.encode();
        let _ = n
            .storage
            .wl()
            .create_snapshot(index, n.sm.conf_state.clone(), data);
    }

    /// The node's state machine is lost (its log, vote and configuration stand): what
    /// `RawNode::request_snapshot` rebuilds it from.
    pub fn lose_state_machine(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.sm.applied.clear();
            n.sm.applied_index = 0;
        }
    }

    /// Drops the node's record of applied payloads (benchmarks keep memory flat with it;
    /// the invariant checker is then only consistent going forward).
    pub fn forget_applied(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.sm.applied.clear();
        }
    }

    /// Runs the per-step safety checks on every live node; violations go to `checker.failures`.
    pub fn check_invariants(&mut self) {
        self.checker.check(&self.nodes);
    }

    /// Compares every pair of live logs in full (costly; the simulator runs it every 64 steps).
    pub fn check_log_matching(&mut self) {
        self.checker.check_log_matching(&self.nodes);
    }

    /// Ids of the live nodes, ascending.
    pub fn up_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }
}
