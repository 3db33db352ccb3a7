//! A cluster of stores in one process: in-memory engines, the in-process network, the
//! runtime on its own threads (or stepped by the test, `stepped_stores`). The first region
//! (the whole key space) is bootstrapped on every store; helpers find leaders and retry
//! requests the way a client would, crash and restart stores, and fail the test (a panic
//! naming what did not happen) rather than hang it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::hooked_log::{HookedLog, WriteHook};
use crate::proto::commandpb::{Op, Put, SplitRequest, WriteCommand, op};
use crate::proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use crate::raft::Role;
use crate::region::RegionError;
use crate::storage::SyncMode;
use crate::storage::kv::{Keyspace, KvRead};
use crate::storage::mem_kv::MemKvEngine;
use crate::storage::mem_log::MemRaftLog;
use crate::storage::raft_log::{LogError, RaftLogStore};
use crate::store::{
    ApplyObserver, Engines, InProcessNetwork, ReadRequest, ReadResponse, RegionStatus, Response,
    RunMode, Store, StoreConfig, WriteResponse, bootstrap_region,
};
use crate::{RegionId, StoreId};

/// The region bootstrapped on every store: the whole key space.
pub const FIRST_REGION: RegionId = RegionId(1);
/// How long a helper waits for the cluster to get somewhere before it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One store's engines, which outlive its runs, and the store while it runs.
pub struct Node {
    /// The running store (None while stopped). Declared first: a dropped node stops it
    /// before the engines and the directory below go.
    pub store: Option<Store>,
    /// The KV engine (in memory: a crash drops what was not persisted).
    pub kv: Arc<MemKvEngine>,
    /// The raft log (in memory: a crash drops what was not synced).
    pub log: Arc<MemRaftLog>,
    /// Stalls the raft log's writes while closed (a stalled disk).
    pub disk: Arc<DiskGate>,
    /// Registered with the store each time it opens.
    pub observers: Vec<Arc<dyn ApplyObserver>>,
    /// Snapshot files (the engines are in memory; snapshots are files all the same).
    pub dir: tempfile::TempDir,
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Node {
    /// Every region's recorded last term is its last entry's term: a restart takes the
    /// term from there, and a wrong one would let a stale replica win votes.
    pub fn check_last_terms(&self) {
        for (region, local) in self.log.recover().expect("the log's states") {
            let held = self
                .log
                .entry(region, local.last_index)
                .expect("read the log");
            if let Some(entry) = held {
                assert_eq!(
                    entry.term, local.last_term,
                    "region {region}: the recorded last term is not the last entry's"
                );
            }
        }
    }

    /// Crashes the store: both engines lose power at this instant (every write after
    /// fails, so the store stops and acknowledges nothing more), the store stops, and each
    /// engine keeps what was durable plus its first `kept_log` / `kept_kv` writes that
    /// were not (a torn tail). Unregister it from its network first.
    pub fn crash_keeping(&mut self, kept_log: usize, kept_kv: usize) {
        self.kv.cut_power();
        self.log.cut_power();
        if let Some(store) = self.store.take() {
            store.shutdown();
        }
        self.log.crash_keeping(kept_log);
        self.kv.crash_keeping(kept_kv);
    }

    /// A store's engines, empty.
    pub fn new() -> Node {
        Node {
            store: None,
            kv: Arc::new(MemKvEngine::new()),
            log: Arc::new(MemRaftLog::new()),
            disk: Arc::default(),
            observers: Vec::new(),
            dir: tempfile::tempdir().expect("snapshot dir"),
        }
    }
}

/// Stores `1..=n` on one in-process network; store `s` is `nodes[s - 1]`.
pub struct Cluster {
    /// The network joining them (faults are added here).
    pub net: InProcessNetwork,
    /// Each store's engines and its running store.
    pub nodes: Vec<Node>,
    /// Each store's configuration, used at every (re)start.
    pub config: Box<dyn Fn(StoreId) -> StoreConfig + Send + Sync>,
    /// How each store's loops run, at every (re)start (`RunMode::Threads` unless
    /// started with `start_in`).
    pub mode: RunMode,
}

/// Fast timing for tests: 20 ms ticks, elections after 10 of them.
pub fn test_config(store: StoreId) -> StoreConfig {
    let mut cfg = StoreConfig::new(store);
    cfg.raft.tick_interval = Duration::from_millis(20);
    cfg.raft_pollers.pollers = 1;
    cfg.apply_pollers.pollers = 1;
    cfg
}

/// Whether `Cluster::on_leader` sends its request again after `error`: leadership moved,
/// or the region's epoch changed under the request, and there is time left.
fn worth_another_try(error: &RegionError, now: Instant, deadline: Instant) -> bool {
    matches!(
        error,
        RegionError::NotLeader { .. } | RegionError::EpochNotMatch { .. }
    ) && now < deadline
}

/// The first region, with a voter on each of stores `1..=stores` (peer id = store id).
pub fn first_region(stores: u64) -> Region {
    Region {
        id: FIRST_REGION.get(),
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=stores)
            .map(|s| Peer {
                id: s,
                store_id: s,
                role: PeerRole::Voter as i32,
            })
            .collect(),
    }
}

/// Polls `done` until it holds, failing the test (naming `what`) after `PATIENCE`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A peer of the region other than the one whose status this is (its leader, say).
pub fn a_follower(leader: &RegionStatus) -> Peer {
    *leader
        .region
        .peers
        .iter()
        .find(|p| p.id != leader.peer.id)
        .expect("a region of more than one peer")
}

/// Waits for a response, failing the test rather than hanging it.
pub fn answer<T>(mut response: Response<T>) -> Result<T, RegionError> {
    response
        .wait_for(PATIENCE)
        .expect("no answer within the test's patience")
}

impl Cluster {
    /// `stores` stores, all holding the first region, running.
    pub fn start(stores: u64) -> Cluster {
        Cluster::start_with(stores, test_config)
    }

    /// `start`, each store's loops run as `mode` says (`RunMode::Threads`,
    /// `RunMode::OneThread` or `RunMode::Shared`: a cluster's stores run on threads).
    pub fn start_in(mode: RunMode, stores: u64) -> Cluster {
        Cluster::start_in_with(mode, stores, test_config)
    }

    /// `start_in` with each store's configuration from `config`.
    pub fn start_in_with(
        mode: RunMode,
        stores: u64,
        config: impl Fn(StoreId) -> StoreConfig + Send + Sync + 'static,
    ) -> Cluster {
        let mut c = Cluster::build(stores, 0, config, |_| Vec::new());
        c.mode = mode;
        c.start_all();
        c
    }

    /// `start` with each store's configuration from `config`.
    pub fn start_with(
        stores: u64,
        config: impl Fn(StoreId) -> StoreConfig + Send + Sync + 'static,
    ) -> Cluster {
        Cluster::start_spare(stores, 0, config)
    }

    /// `voters` stores holding the first region, and `spare` more that hold nothing (to
    /// add peers to), all running.
    pub fn start_spare(
        voters: u64,
        spare: u64,
        config: impl Fn(StoreId) -> StoreConfig + Send + Sync + 'static,
    ) -> Cluster {
        Cluster::start_observed(voters, spare, config, |_| Vec::new())
    }

    /// `start_spare`, each store opened with the apply observers `observers` gives it.
    pub fn start_observed(
        voters: u64,
        spare: u64,
        config: impl Fn(StoreId) -> StoreConfig + Send + Sync + 'static,
        observers: impl Fn(StoreId) -> Vec<Arc<dyn ApplyObserver>>,
    ) -> Cluster {
        let mut c = Cluster::build(voters, spare, config, observers);
        c.start_all();
        c
    }

    /// The stores' engines, the first region bootstrapped on the voters'; none running.
    fn build(
        voters: u64,
        spare: u64,
        config: impl Fn(StoreId) -> StoreConfig + Send + Sync + 'static,
        observers: impl Fn(StoreId) -> Vec<Arc<dyn ApplyObserver>>,
    ) -> Cluster {
        let mut c = Cluster {
            net: InProcessNetwork::new(voters + spare),
            nodes: Vec::new(),
            config: Box::new(config),
            mode: RunMode::Threads,
        };
        let region = first_region(voters);
        for s in 1..=voters + spare {
            let mut node = Node::new();
            node.observers = observers(StoreId(s));
            if s <= voters {
                bootstrap_region(&engines(&node), &region).expect("bootstrap");
            }
            c.nodes.push(node);
        }
        c
    }

    fn start_all(&mut self) {
        for s in 1..=self.nodes.len() as u64 {
            self.restart(StoreId(s));
        }
    }

    /// (Re)opens a store over its engines and connects it.
    pub fn restart(&mut self, store: StoreId) {
        let cfg = (self.config)(store);
        let node = &mut self.nodes[store.get() as usize - 1];
        let s = Store::open_observed(
            cfg,
            engines(node),
            Arc::new(self.net.clone()),
            self.mode.clone(),
            node.observers.clone(),
        )
        .expect("open store");
        self.net.register(store, s.receiver());
        node.store = Some(s);
    }

    /// Crashes a store: it stops at once, and its engines keep only what was durable
    /// (`Node::crash_keeping`).
    pub fn crash(&mut self, store: StoreId) {
        self.net.unregister(store);
        self.nodes[store.get() as usize - 1].crash_keeping(0, 0);
    }

    /// Stops a store (its engines keep what they hold).
    pub fn stop(&mut self, store: StoreId) {
        self.net.unregister(store);
        if let Some(s) = self.nodes[store.get() as usize - 1].store.take() {
            s.shutdown();
        }
    }

    /// Store `store`, which must be running.
    pub fn store(&self, store: StoreId) -> &Store {
        self.nodes[store.get() as usize - 1]
            .store
            .as_ref()
            .expect("store running")
    }

    /// The stores running now.
    pub fn running(&self) -> impl Iterator<Item = &Store> {
        self.nodes.iter().filter_map(|n| n.store.as_ref())
    }

    /// Waits until one running store leads `region`; its status.
    pub fn wait_leader(&self, region: RegionId) -> RegionStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for s in self.running() {
                if let Ok(st) = answer(s.region_status(region))
                    && st.role == Role::Leader
                {
                    return st;
                }
            }
            assert!(Instant::now() < deadline, "region {region}: no leader");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The store of `region`'s leader.
    pub fn leader_store(&self, region: RegionId) -> StoreId {
        StoreId(self.wait_leader(region).peer.store_id)
    }

    /// Splits the first region into `n` regions with one split command, at
    /// `split_key(1)`..`split_key(n - 1)` (rising). Region `i` (from 1) gets id `100 + i`
    /// and peers `100_000 + 10 i + store`. The ids, in key order.
    pub fn split_first_region(&self, n: u64, split_key: impl Fn(u64) -> String) -> Vec<RegionId> {
        let splits: Vec<SplitRequest> = (1..n)
            .map(|i| SplitRequest {
                split_key: Bytes::from(split_key(i)),
                new_region_id: 100 + i,
                new_peer_ids: (1..=3).map(|s| 100_000 + i * 10 + s).collect(),
            })
            .collect();
        self.on_leader(FIRST_REGION, |s, epoch| {
            s.split(FIRST_REGION, epoch, splits.clone())
        });
        std::iter::once(FIRST_REGION)
            .chain((1..n).map(|i| RegionId(100 + i)))
            .collect()
    }

    /// `region`'s epoch as its leader has it.
    pub fn epoch(&self, region: RegionId) -> RegionEpoch {
        let st = self.wait_leader(region);
        st.region.epoch.unwrap_or_default()
    }

    /// Sends a request to `region`'s leader, again while leadership moves or its epoch
    /// changes under the request (as a client would: a split or membership change the
    /// leader has applied, and answered, before its peer took in the new region, so the
    /// status it gave is a step behind); any other error fails the test.
    pub fn on_leader<T>(
        &self,
        region: RegionId,
        request: impl Fn(&Store, RegionEpoch) -> Response<T>,
    ) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = self.wait_leader(region);
            let epoch = leader.region.epoch.unwrap_or_default();
            let store = self.store(StoreId(leader.peer.store_id));
            match answer(request(store, epoch)) {
                Ok(r) => return r,
                Err(e) if worth_another_try(&e, Instant::now(), deadline) => {}
                Err(e) => panic!("request to region {region}: {e}"),
            }
        }
    }

    /// Writes `command` to `region` through its leader; it must succeed.
    pub fn must_write(&self, region: RegionId, command: WriteCommand) -> WriteResponse {
        self.on_leader(region, |s, epoch| s.propose(region, epoch, command.clone()))
    }

    /// Puts `key` = `value` in `region`; it must succeed.
    pub fn must_put(&self, region: RegionId, key: &[u8], value: &[u8]) {
        self.must_write(region, put(key, value));
    }

    /// Reads from `region` through its leader; it must succeed.
    pub fn must_read(&self, region: RegionId, request: ReadRequest) -> ReadResponse {
        self.on_leader(region, |s, epoch| s.read(region, epoch, request.clone()))
    }

    /// `key`'s value in `region`, read through its leader.
    pub fn must_get(&self, region: RegionId, key: &[u8]) -> Option<Bytes> {
        match self.must_read(
            region,
            ReadRequest::Get {
                key: Bytes::copy_from_slice(key),
            },
        ) {
            ReadResponse::Value(v) => v,
            other => panic!("a get answered {other:?}"),
        }
    }

    /// Waits until every running store's KV engine holds `key` = `value` (applied there).
    pub fn wait_applied_everywhere(&self, key: &[u8], value: Option<&[u8]>) {
        for n in self.nodes.iter().filter(|n| n.store.is_some()) {
            let deadline = Instant::now() + PATIENCE;
            while n.kv.get(Keyspace::Data, key).expect("kv get").as_deref() != value {
                assert!(
                    Instant::now() < deadline,
                    "{key:?} never became {value:?}:\n{}",
                    self.describe()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Every running store's view of its regions, and why it stopped if it did: what a
    /// failing test prints.
    pub fn describe(&self) -> String {
        let mut ids: Vec<RegionId> = self
            .running()
            .flat_map(|s| s.regions())
            .map(|r| r.region_id())
            .collect();
        ids.sort();
        ids.dedup();
        let mut out = String::new();
        for s in self.running() {
            out += &format!("store {} (failure: {:?})\n", s.id(), s.failure());
            // Every region any store knows: a peer still waiting for its first snapshot
            // is in no store's region list.
            for &id in &ids {
                let st = s.region_status(id).wait_for(Duration::from_secs(1));
                out += &format!("  region {id}: {st:?}\n");
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(s) = n.store.take() {
                s.shutdown();
            }
        }
    }
}

/// Stores run stepped on the test thread, one per node, each holding the first region of
/// `nodes.len()` voters, connected through `net`.
pub fn stepped_stores(
    net: &InProcessNetwork,
    nodes: &[Node],
    config: impl Fn(StoreId) -> StoreConfig,
) -> Vec<Store> {
    let region = first_region(nodes.len() as u64);
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let id = StoreId(i as u64 + 1);
            bootstrap_region(&engines(node), &region).expect("bootstrap");
            let s = Store::open(
                config(id),
                engines(node),
                Arc::new(net.clone()),
                RunMode::Stepped,
            )
            .expect("open store");
            net.register(id, s.receiver());
            s
        })
        .collect()
}

/// One store run stepped on the test thread over `node`'s engines (bootstrapped by the
/// caller), alone on its network.
pub fn open_stepped(node: &Node, config: StoreConfig) -> Store {
    let id = config.store_id;
    let net = InProcessNetwork::new(1);
    let store = Store::open(
        config,
        engines(node),
        Arc::new(net.clone()),
        RunMode::Stepped,
    )
    .expect("open");
    net.register(id, store.receiver());
    store
}

/// A store stepped on the test thread over `node`'s engines (the first region bootstrapped
/// there, this store its lone voter), leading the region.
pub fn lone_stepped_leader(node: &Node) -> Store {
    bootstrap_region(&engines(node), &first_region(1)).expect("bootstrap");
    let mut store = open_stepped(node, test_config(StoreId(1)));
    elect_stepped(&mut store);
    store
}

/// Ticks a stepped store until it leads the first region (its lone voter).
pub fn elect_stepped(store: &mut Store) {
    for _ in 0..100 {
        store.tick();
        store.run_until_idle();
        let mut status = store.region_status(FIRST_REGION);
        store.run_until_idle();
        if answer_now(&mut status).role == Role::Leader {
            return;
        }
    }
    panic!("no leader");
}

/// A response that must be there already (a stepped store answered it).
pub fn answer_now<T>(response: &mut Response<T>) -> T {
    match response.try_take() {
        Some(Ok(t)) => t,
        Some(Err(e)) => panic!("refused: {e}"),
        None => panic!("not answered"),
    }
}

/// Runs a stepped store's raft poller and WAL writer, not its apply poller, until neither
/// has work left: what is committed stays unapplied until the caller steps apply.
pub fn settle_all_but_apply(store: &mut Store) {
    use crate::store::WriteOutcome;
    use crate::store::batch::PollOutcome;
    loop {
        let raft = matches!(store.step_raft(), Some(PollOutcome::Handled(_)));
        let wal = matches!(store.step_wal(), Some(WriteOutcome::Written(_)));
        if !raft && !wal {
            return;
        }
    }
}

/// Steps every store until none has work left.
pub fn drive(stores: &mut [Store]) {
    while stores.iter_mut().map(|s| s.run_until_idle()).sum::<usize>() > 0 {}
}

/// The engines a store opens over: the node's, its raft log behind its disk gate.
pub fn engines(node: &Node) -> Engines {
    let log = HookedLog {
        inner: node.log.clone(),
        hook: node.disk.clone(),
    };
    Engines::new(Arc::new(log), node.kv.clone(), node.dir.path())
}

/// A disk that can stall: while closed, raft log writes wait (reads go on).
#[derive(Default)]
pub struct DiskGate {
    stalled: Mutex<bool>,
    opened: Condvar,
}

impl DiskGate {
    /// Raft log writes wait from now on.
    pub fn stall(&self) {
        *self.stalled.lock().unwrap() = true;
    }

    /// Waiting writes go on, and later ones do not wait.
    pub fn release(&self) {
        *self.stalled.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl WriteHook for Arc<DiskGate> {
    fn before_write(&self, _: SyncMode) -> Result<(), LogError> {
        let mut stalled = self.stalled.lock().unwrap();
        while *stalled {
            stalled = self.opened.wait(stalled).unwrap();
        }
        Ok(())
    }
}

/// A command of one put.
pub fn put(key: &[u8], value: &[u8]) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
            })),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_sent_again_only_after_a_moved_leader_or_epoch_and_before_the_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let region = RegionId(1);
        let moved = RegionError::NotLeader {
            region,
            leader: None,
        };
        let stale = RegionError::EpochNotMatch {
            current: Vec::new(),
        };
        let other = RegionError::RegionNotFound { region };
        assert!(worth_another_try(&moved, now, later));
        assert!(worth_another_try(&stale, now, later));
        assert!(!worth_another_try(&other, now, later));
        assert!(!worth_another_try(&moved, later, later));
        assert!(!worth_another_try(&stale, later, now));
    }
}
