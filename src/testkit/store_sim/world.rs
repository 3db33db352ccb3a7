//! The simulated world: whole stores run stepped on one thread over the in-memory engines,
//! joined by the in-process network with every batch held in flight, and the faults the
//! schedule injects into them (partitions, lost links, duplicates, paused stores, crashes).

use std::sync::Arc;

use super::checks::AppliedLog;
use super::shape::Shape;
use crate::StoreId;
use crate::storage::log_gc::GcPolicy;
use crate::store::{
    Fault, FaultId, InProcessNetwork, RunMode, Store, StoreConfig, bootstrap_region,
};
use crate::testkit::cluster::{Node, engines, first_region};

/// One store: its engines, which outlive its runs, and the store while it runs. Dropped,
/// its store stops before its engines and directory go (`Node` declares it first).
pub(super) struct SimStore {
    id: StoreId,
    node: Node,
    /// A paused store's actions are not scheduled (a stopped process, not a dead one).
    paused: bool,
}

/// The stores and the network between them.
pub(super) struct World {
    pub net: InProcessNetwork,
    stores: Vec<SimStore>,
    config: StoreConfig,
    applied: Arc<AppliedLog>,
}

impl World {
    /// `shape.stores` stores; the first `shape.voters` bootstrap the first region.
    pub fn new(shape: &Shape, seed: u64, applied: Arc<AppliedLog>) -> Result<World, String> {
        let net = InProcessNetwork::new(seed ^ 0x6E65_7477_6F72_6B00);
        // Every batch is held in flight until the schedule delivers or loses it.
        net.add_fault(Fault::Hold);
        let mut config = StoreConfig::new(StoreId(0));
        config.raft.seed = seed;
        config.raft_pollers.pollers = 1;
        config.apply_pollers.pollers = 1;
        config.raft_pollers.max_batch = shape.max_batch;
        config.apply_pollers.max_batch = shape.max_batch;
        config.log_gc = GcPolicy {
            max_follower_lag: shape.gc_max_lag,
            min_entries: shape.gc_min_entries,
        };
        config.hibernation.idle_ticks = shape.idle_ticks;
        config.raft.max_committed_bytes_per_round = shape.committed_bytes_per_round;
        let mut world = World {
            net,
            stores: Vec::new(),
            config,
            applied,
        };
        let first = first_region(shape.voters as u64);
        for i in 0..shape.stores {
            let id = StoreId(i as u64 + 1);
            let sim = SimStore {
                id,
                node: Node::new(),
                paused: false,
            };
            if i < shape.voters {
                bootstrap_region(&engines(&sim.node), &first)
                    .map_err(|e| format!("bootstrap store {id}: {e}"))?;
            }
            world.stores.push(sim);
            world.start(id)?;
        }
        Ok(world)
    }

    /// Every store's id, running or not.
    pub fn ids(&self) -> impl Iterator<Item = StoreId> + '_ {
        self.stores.iter().map(|s| s.id)
    }

    /// The store `id` if it runs (paused or not).
    pub fn store(&self, id: StoreId) -> Option<&Store> {
        self.sim(id).and_then(|s| s.node.store.as_ref())
    }

    /// The store `id` if it runs and is not paused: its actions may be scheduled.
    pub fn active(&mut self, id: StoreId) -> Option<&mut Store> {
        self.sim_mut(id)
            .filter(|s| !s.paused)
            .and_then(|s| s.node.store.as_mut())
    }

    /// The stores whose actions may be scheduled now.
    pub fn active_ids(&self) -> Vec<StoreId> {
        self.stores
            .iter()
            .filter(|s| s.node.store.is_some() && !s.paused)
            .map(|s| s.id)
            .collect()
    }

    /// The running stores (paused ones included).
    pub fn running(&self) -> impl Iterator<Item = &Store> {
        self.stores.iter().filter_map(|s| s.node.store.as_ref())
    }

    /// Whether store `id` is down (crashed, not yet restarted).
    pub fn is_down(&self, id: StoreId) -> bool {
        self.sim(id).is_some_and(|s| s.node.store.is_none())
    }

    /// Pauses or resumes store `id`.
    pub fn set_paused(&mut self, id: StoreId, paused: bool) {
        if let Some(s) = self.sim_mut(id) {
            s.paused = paused;
        }
    }

    /// Whether store `id` is paused.
    pub fn is_paused(&self, id: StoreId) -> bool {
        self.sim(id).is_some_and(|s| s.paused)
    }

    /// Crashes store `id`: both engines lose power at this instant (what the store tries
    /// to write from then on fails, so it acknowledges nothing more), the store stops, and
    /// each engine keeps what was durable plus the first `kept_log` / `kept_kv` writes
    /// that were not (a torn tail).
    pub fn crash(&mut self, id: StoreId, kept_log: usize, kept_kv: usize) {
        self.net.unregister(id);
        if let Some(sim) = self.sim_mut(id) {
            sim.paused = false;
            sim.node.crash_keeping(kept_log, kept_kv);
        }
    }

    /// Opens store `id` over its engines (a restart after a crash) and connects it.
    pub fn start(&mut self, id: StoreId) -> Result<(), String> {
        let mut config = self.config.clone();
        config.store_id = id;
        let observer = self.applied.observer(id);
        let net = Arc::new(self.net.clone());
        let Some(sim) = self.sim_mut(id) else {
            return Err(format!("no store {id}"));
        };
        let store = Store::open_observed(
            config,
            engines(&sim.node),
            net,
            RunMode::Stepped,
            vec![observer],
        )
        .map_err(|e| format!("store {id} does not open: {e}"))?;
        let receiver = store.receiver();
        sim.node.store = Some(store);
        self.net.register(id, receiver);
        Ok(())
    }

    /// Removes every fault but the holding of batches in flight, which is how the
    /// schedule delivers rather than a fault.
    pub fn heal_network(&self) {
        self.net.clear_faults();
        self.net.add_fault(Fault::Hold);
    }

    /// Adds a fault the schedule removes later.
    pub fn add_fault(&self, fault: Fault) -> FaultId {
        self.net.add_fault(fault)
    }

    /// Store `id`'s engines and store, for a test to plant a fault through.
    #[cfg(test)]
    pub fn node(&self, id: StoreId) -> Option<&Node> {
        self.sim(id).map(|s| &s.node)
    }

    fn sim(&self, id: StoreId) -> Option<&SimStore> {
        self.stores.iter().find(|s| s.id == id)
    }

    fn sim_mut(&mut self, id: StoreId) -> Option<&mut SimStore> {
        self.stores.iter_mut().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::raft::rng::Rng;

    fn world() -> World {
        let shape = Shape::draw(&mut Rng::new(1), Some(3), Some(1));
        World::new(&shape, 1, Arc::new(AppliedLog::default())).expect("the world starts")
    }

    /// Ticks every active store and steps it until idle.
    fn tick_all(world: &mut World) {
        for id in world.active_ids() {
            if let Some(store) = world.active(id) {
                store.tick();
                store.run_until_idle();
            }
        }
    }

    /// `tick_all` and the delivery of everything sent, `rounds` times.
    fn run(world: &mut World, rounds: usize) {
        for _ in 0..rounds {
            tick_all(world);
            world.net.deliver_all();
        }
    }

    #[test]
    fn a_paused_store_is_not_scheduled_until_resumed() {
        let mut w = world();
        let (one, two) = (StoreId(1), StoreId(2));
        assert_eq!(w.active_ids(), vec![one, two, StoreId(3)]);
        w.set_paused(two, true);
        assert!(w.is_paused(two) && !w.is_paused(one));
        assert!(w.active(two).is_none(), "paused: not scheduled");
        assert!(w.store(two).is_some(), "paused: still running");
        assert_eq!(w.active_ids(), vec![one, StoreId(3)]);
        assert_eq!(w.running().count(), 3);
        w.set_paused(two, false);
        assert!(w.active(two).is_some());
        assert_eq!(w.active_ids().len(), 3);
    }

    #[test]
    fn a_crashed_store_is_down_until_started_again() {
        let mut w = world();
        let two = StoreId(2);
        w.set_paused(two, true);
        w.crash(two, 0, 0);
        assert!(w.is_down(two) && !w.is_down(StoreId(1)));
        assert!(!w.is_paused(two), "a crash ends a pause");
        assert!(w.store(two).is_none());
        assert_eq!(w.active_ids(), vec![StoreId(1), StoreId(3)]);
        assert_eq!(w.running().count(), 2);
        w.start(two).expect("restarts over its engines");
        assert!(!w.is_down(two));
        assert_eq!(w.active_ids().len(), 3);
        assert!(w.start(StoreId(9)).is_err(), "no such store");
    }

    #[test]
    fn healing_removes_every_fault_but_keeps_batches_held() {
        let mut w = world();
        let (one, two) = (StoreId(1), StoreId(2));
        let alone: HashSet<StoreId> = [one].into();
        let rest: HashSet<StoreId> = [two, StoreId(3)].into();
        w.add_fault(Fault::Partition(vec![alone, rest]));
        run(&mut w, 40);
        assert_eq!(w.net.delivered_between(one, two), 0, "partitioned");
        assert!(w.net.delivered_between(two, StoreId(3)) > 0);
        w.heal_network();
        run(&mut w, 40);
        assert!(w.net.delivered_between(one, two) > 0, "healed");
        // What the stores send still waits in flight for the schedule to deliver.
        for _ in 0..10 {
            tick_all(&mut w);
        }
        assert!(w.net.held() > 0, "what the stores send waits in flight");
    }
}
