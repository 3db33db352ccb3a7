//! A deterministic simulator of whole stores: 3–5 stores with 1–1,000 regions run in one
//! thread, every raft poller batch, WAL write, apply round, snapshot task, timer tick and
//! transport delivery a step that a seeded generator picks, with faults mixed in:
//! partitions (symmetric and one-way), lost and duplicated batches, paused stores, and
//! crashes that lose what was not synced (keeping, at random, part of it, as a torn write
//! would). Clients read and write throughout; regions split, change membership, move
//! their leaders and compact their logs.
//!
//! It runs the real store (`Store` in `RunMode::Stepped` over the in-memory engines and
//! the in-process network): nothing here copies the runtime's logic. Nothing reads the
//! wall clock or starts a thread, so a run is a function of its seed, and
//! `SimReport::fingerprint` (a hash of every step and what it did) shows it: the same
//! seed gives the same fingerprint.
//!
//! Checked: the client history is linearizable (operations given up on, or dropped by a
//! crash, have unknown outcomes); every replica applies the same thing at each index of
//! its region's log; one leader per region and term; a store's regions never overlap;
//! every request is answered; after the faults heal, every region elects a leader and
//! serves within a bounded number of rounds, and the regions tile the key space.

mod checks;
mod clients;
mod keys;
mod shape;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::proto::commandpb::SplitRequest;
use crate::proto::metapb::{Peer, PeerRole, Region};
use crate::raft::rng::Rng;
use crate::store::{
    ChangePeersResponse, Fault, FaultId, PeerChange, RegionStatus, Response, SplitResponse,
};
use crate::{PeerId, RegionId, StoreId};

use crate::testkit::cluster::FIRST_REGION;
use checks::{AppliedLog, Leaders, check_cover, check_no_overlap, describe};
pub use clients::ClientCounts;
use clients::{Clients, OpKind};
pub use shape::Shape;
use world::World;

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Decides everything: the shape, the schedule, the faults, the operations.
    pub seed: u64,
    /// Random steps before the faults heal.
    pub steps: usize,
    /// Stores (3–5) instead of the seed's choice.
    pub stores: Option<usize>,
    /// Regions at the start (1–1,000) instead of the seed's choice.
    pub regions: Option<usize>,
    /// Print every step as it runs.
    pub trace: bool,
}

impl SimOptions {
    /// A run of `seed` with the default number of steps.
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            steps: DEFAULT_STEPS,
            stores: None,
            regions: None,
            trace: false,
        }
    }
}

/// Random steps of a run unless told otherwise.
pub const DEFAULT_STEPS: usize = 3_000;

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// What the seed made of the run.
    pub shape: Shape,
    /// Steps taken, healing and the final checks included.
    pub steps: usize,
    /// What the clients' operations came to.
    pub clients: ClientCounts,
    /// Operations in the history the linearizability checker passed.
    pub checked_operations: usize,
    /// Network faults injected (partitions, lost links, duplication, lost batches).
    pub faults: u64,
    /// Stores paused.
    pub pauses: u64,
    /// Stores crashed (and restarted).
    pub crashes: u64,
    /// Splits applied (answered to the proposer).
    pub splits: u64,
    /// Membership changes applied.
    pub conf_changes: u64,
    /// Leader transfers started.
    pub transfers: u64,
    /// (Region, term) pairs in which a leader was seen.
    pub leader_terms: u64,
    /// Apply events compared across replicas.
    pub applied_events: u64,
    /// Regions at the end.
    pub regions_at_end: usize,
    /// A hash of every step and its effect: equal for equal seeds.
    pub fingerprint: u64,
}

/// What many runs came to: their reports' counts added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimTotals {
    /// What the clients' operations came to.
    pub clients: ClientCounts,
    /// Operations in the histories the linearizability checker passed.
    pub checked_operations: u64,
    /// Network faults injected.
    pub faults: u64,
    /// Stores paused.
    pub pauses: u64,
    /// Stores crashed (and restarted).
    pub crashes: u64,
    /// Splits applied.
    pub splits: u64,
    /// Membership changes applied.
    pub conf_changes: u64,
    /// Leader transfers started.
    pub transfers: u64,
    /// (Region, term) pairs in which a leader was seen.
    pub leader_terms: u64,
    /// Apply events compared across replicas.
    pub applied_events: u64,
}

impl SimTotals {
    /// Adds one run's report.
    pub fn add(&mut self, r: &SimReport) {
        self.clients.add(&r.clients);
        self.checked_operations += r.checked_operations as u64;
        self.faults += r.faults;
        self.pauses += r.pauses;
        self.crashes += r.crashes;
        self.splits += r.splits;
        self.conf_changes += r.conf_changes;
        self.transfers += r.transfers;
        self.leader_terms += r.leader_terms;
        self.applied_events += r.applied_events;
    }
}

/// Why a run failed; `Display` adds the commands that replay it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The failing run's options (its seed first): the same options replay it.
    pub options: SimOptions,
    /// The step at which the failure was found.
    pub step: usize,
    /// What went wrong.
    pub what: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        let mut env = format!(
            "FLOTILLA_CLUSTER_SIM_SEED={} FLOTILLA_CLUSTER_SIM_STEPS={}",
            o.seed, o.steps
        );
        let mut flags = format!("--first-seed {} --seeds 1 --steps {}", o.seed, o.steps);
        if let Some(stores) = o.stores {
            env.push_str(&format!(" FLOTILLA_CLUSTER_SIM_STORES={stores}"));
            flags.push_str(&format!(" --stores {stores}"));
        }
        if let Some(regions) = o.regions {
            env.push_str(&format!(" FLOTILLA_CLUSTER_SIM_REGIONS={regions}"));
            flags.push_str(&format!(" --regions {regions}"));
        }
        write!(
            f,
            "store simulation failed (seed {}, step {}): {}\n\
             replay: {env} cargo test --test store_sim replay_one_seed -- --nocapture\n\
             or:     cargo run --release -- sim-cluster {flags} --trace",
            o.seed, self.step, self.what
        )
    }
}

/// Runs one simulation.
pub fn run(options: &SimOptions) -> Result<SimReport, SimFailure> {
    let fail = |step, what| SimFailure {
        options: options.clone(),
        step,
        what,
    };
    let mut sim = Sim::new(options).map_err(|what| fail(0, what))?;
    match sim.run(options.steps) {
        Ok(report) => Ok(report),
        Err(what) => Err(fail(sim.step, what)),
    }
}

/// Rounds of fair scheduling the cluster gets, once healed, to elect every region's
/// leader and serve every key: past them, liveness failed.
const SETTLE_ROUNDS: usize = 4_000;
/// Fair rounds per timer tick while settling.
const ROUNDS_PER_TICK: usize = 4;
/// Steps a client waits for an answer before it gives up.
const PATIENCE: usize = 1_500;

/// One request of the simulator's own (admin and status probes), until answered.
enum AdminFlight {
    Split(StoreId, Response<SplitResponse>),
    Change(StoreId, Response<ChangePeersResponse>),
    Transfer(StoreId, RegionId, Response<()>),
    Status(StoreId, Response<RegionStatus>),
}

/// Whether fair round `round` ticks the stores: every `per_tick` rounds (0: never).
fn ticks_in(round: usize, per_tick: usize) -> bool {
    per_tick > 0 && round.is_multiple_of(per_tick)
}

/// Whether a step's checks scan the stores too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreCheck {
    Now,
    Later,
}

impl StoreCheck {
    /// Every step of a run with few regions; every 64th with more (scanning every
    /// store's regions is costly with hundreds of them).
    fn at(step: usize, regions: usize) -> StoreCheck {
        let every = if regions <= 64 { 1 } else { 64 };
        if step.is_multiple_of(every) {
            StoreCheck::Now
        } else {
            StoreCheck::Later
        }
    }
}

/// What undoes a fault when its time comes.
enum Undo {
    Fault(FaultId),
    Resume(StoreId),
    Restart(StoreId),
}

struct Sim {
    seed: u64,
    rng: Rng,
    shape: Shape,
    world: World,
    applied: Arc<AppliedLog>,
    leaders: Leaders,
    clients: Clients,
    /// Where each region's leader was last seen.
    hints: BTreeMap<RegionId, StoreId>,
    admin: Vec<AdminFlight>,
    /// Faults in force, with the step at which each is undone.
    faults: Vec<(usize, Undo)>,
    step: usize,
    trace: bool,
    fingerprint: DefaultHasher,
    next_region: u64,
    next_peer: u64,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    faults: u64,
    pauses: u64,
    crashes: u64,
    splits: u64,
    conf_changes: u64,
    transfers: u64,
}

/// One step the schedule can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Raft(StoreId),
    Wal(StoreId),
    Apply(StoreId),
    Snapshot(StoreId),
    Tick(StoreId),
    Deliver,
    Lose,
    Client,
    Probe,
    Admin,
    Fault,
}

impl Sim {
    fn new(options: &SimOptions) -> Result<Sim, String> {
        let mut rng = Rng::new(options.seed);
        let shape = Shape::draw(&mut rng, options.stores, options.regions);
        let applied = Arc::new(AppliedLog::default());
        let world = World::new(&shape, options.seed, applied.clone())?;
        let clients = Clients::new(
            shape.clients,
            shape.stores,
            keys::spread(shape.keys),
            PATIENCE,
        );
        Ok(Sim {
            seed: options.seed,
            rng,
            world,
            applied,
            leaders: Leaders::default(),
            clients,
            hints: BTreeMap::new(),
            admin: Vec::new(),
            faults: Vec::new(),
            step: 0,
            trace: options.trace,
            fingerprint: DefaultHasher::new(),
            // Region 1 is bootstrapped; peers 1..=voters are its first replicas.
            next_region: 2,
            next_peer: shape.stores as u64 + 1,
            shape,
            counts: Counts::default(),
        })
    }

    fn run(&mut self, steps: usize) -> Result<SimReport, String> {
        self.note(format!("seed {}: {:?}", self.seed, self.shape));
        self.setup()?;
        for _ in 0..steps {
            self.random_step()?;
        }
        self.heal()?;
        self.settle()?;
        self.final_checks()
    }

    // ---- the schedule ----

    /// Records what a step did: traced if asked, always folded into the fingerprint.
    fn note(&mut self, what: String) {
        self.fingerprint.write(what.as_bytes());
        self.fingerprint.write_usize(self.step);
        if self.trace {
            println!("[{}] {what}", self.step);
        }
    }

    fn random_step(&mut self) -> Result<(), String> {
        self.step += 1;
        self.undo_due_faults()?;
        let action = self.pick();
        let what = self.act(action)?;
        self.note(what);
        self.after_step()
    }

    /// A weighted random choice among the actions possible now.
    fn pick(&mut self) -> Action {
        let mut choices: Vec<(Action, u64)> = Vec::new();
        for id in self.world.active_ids() {
            choices.push((Action::Raft(id), 6));
            choices.push((Action::Wal(id), 4));
            choices.push((Action::Apply(id), 4));
            choices.push((Action::Snapshot(id), 1));
            choices.push((Action::Tick(id), 1));
        }
        let held = self.world.net.held() as u64;
        if held > 0 {
            choices.push((Action::Deliver, 6 + held.min(24)));
            choices.push((Action::Lose, 1));
        }
        if self.clients.has_idle() {
            choices.push((Action::Client, 5));
        }
        choices.push((Action::Probe, 1));
        choices.push((Action::Admin, 1));
        if self.faults.len() < 2 {
            choices.push((Action::Fault, 1));
        }
        let total: u64 = choices.iter().map(|(_, w)| w).sum();
        let mut at = self.rng.range(0, total);
        for (action, weight) in &choices {
            if at < *weight {
                return *action;
            }
            at -= weight;
        }
        Action::Probe
    }

    fn act(&mut self, action: Action) -> Result<String, String> {
        Ok(match action {
            Action::Raft(id) => {
                let outcome = self.world.active(id).and_then(|s| s.step_raft());
                format!("raft {id}: {outcome:?}")
            }
            Action::Wal(id) => {
                let outcome = self.world.active(id).and_then(|s| s.step_wal());
                format!("wal {id}: {outcome:?}")
            }
            Action::Apply(id) => {
                let outcome = self.world.active(id).and_then(|s| s.step_apply());
                format!("apply {id}: {outcome:?}")
            }
            Action::Snapshot(id) => {
                let outcome = self.world.active(id).and_then(|s| s.step_snapshot());
                format!("snapshot {id}: {outcome:?}")
            }
            Action::Tick(id) => {
                if let Some(store) = self.world.active(id) {
                    store.tick();
                }
                format!("tick {id}")
            }
            Action::Deliver => format!("deliver: {}", self.world.net.deliver_one()),
            Action::Lose => {
                self.counts.faults += 1;
                format!("lose: {}", self.world.net.lose_one())
            }
            Action::Client => {
                let started =
                    self.clients
                        .start(&self.world, &self.hints, &mut self.rng, self.step, None);
                started.unwrap_or_else(|| "client: no store holds the key".to_string())
            }
            Action::Probe => self.probe(),
            Action::Admin => self.admin_step(),
            Action::Fault => self.fault(),
        })
    }

    /// What every step is followed by: answers taken, invariants checked.
    fn after_step(&mut self) -> Result<(), String> {
        let stores = StoreCheck::at(self.step, self.shape.regions);
        self.take_answers_and_check(stores).map(|_| ())
    }

    /// Takes the answers that came (returning the operations acknowledged) and checks
    /// what may have broken: replicas that applied different things, two leaders in one
    /// term and, if `stores` says so, a store stopped on a fatal error or holding
    /// overlapping regions.
    fn take_answers_and_check(
        &mut self,
        stores: StoreCheck,
    ) -> Result<Vec<(Bytes, OpKind)>, String> {
        let done = self.clients.poll(&mut self.hints, self.step)?;
        self.poll_admin()?;
        if let Some(violation) = self.applied.take_violations().into_iter().next() {
            return Err(violation);
        }
        if stores == StoreCheck::Now {
            self.check_stores()?;
        }
        Ok(done)
    }

    /// No running store failed, and none holds overlapping regions.
    fn check_stores(&self) -> Result<(), String> {
        for id in self.world.ids() {
            let Some(store) = self.world.store(id) else {
                continue;
            };
            if let Some(failure) = store.failure() {
                return Err(format!(
                    "store {id} stopped on a fatal error: {failure}; regions:{}",
                    self.describe_world()
                ));
            }
            check_no_overlap(id, &store.regions())?;
        }
        Ok(())
    }

    // ---- requests of the simulator's own ----

    /// Asks a random store for the status of some of its regions (the answers show who
    /// leads, checked one leader per term).
    fn probe(&mut self) -> String {
        let active = self.world.active_ids();
        let Some(&id) = active.get(self.rng.range(0, active.len() as u64) as usize) else {
            return "probe: no store".to_string();
        };
        let Some(store) = self.world.store(id) else {
            return "probe: no store".to_string();
        };
        let regions = store.regions();
        let mut asked = 0;
        for _ in 0..regions.len().min(8) {
            let region = &regions[self.rng.range(0, regions.len() as u64) as usize];
            let response = store.region_status(RegionId(region.id));
            self.admin.push(AdminFlight::Status(id, response));
            asked += 1;
        }
        format!("probe {id}: {asked} regions")
    }

    /// A split, a membership change, a leader transfer or a log GC round.
    fn admin_step(&mut self) -> String {
        let key = keys::key_at(self.rng.range(0, u64::from(keys::SPACE)) as u32);
        let Some((id, region)) = clients::route(&self.world, &self.hints, &key, &mut self.rng)
        else {
            return "admin: no store holds the key".to_string();
        };
        match self.rng.range(0, 10) {
            0..3 => self.split(id, &region),
            3..7 => self.change_peers(id, &region),
            7..9 => self.transfer(id, &region),
            _ => {
                if let Some(store) = self.world.store(id) {
                    store.log_gc();
                }
                format!("log gc {id}")
            }
        }
    }

    fn split(&mut self, id: StoreId, region: &Region) -> String {
        // Regions stay within a bound: a run that doubles its regions forever slows down.
        let regions = self.world.store(id).map_or(0, |s| s.regions().len());
        if regions >= self.shape.regions * 2 + 8 {
            return format!("split: store {id} holds {regions} regions already");
        }
        let Some(split_key) = keys::between(&region.start_key, &region.end_key, &mut self.rng)
        else {
            return format!("split: region {} is too narrow", region.id);
        };
        let request = self.split_request(region, split_key);
        let what = format!(
            "split region {} at {} (new region {}) on store {id}",
            region.id,
            keys::show(&request.split_key),
            request.new_region_id
        );
        self.send_split(id, region, vec![request]);
        what
    }

    fn split_request(&mut self, region: &Region, split_key: Bytes) -> SplitRequest {
        let new_region_id = self.next_region;
        self.next_region += 1;
        let new_peer_ids = region
            .peers
            .iter()
            .map(|_| {
                self.next_peer += 1;
                self.next_peer
            })
            .collect();
        SplitRequest {
            split_key,
            new_region_id,
            new_peer_ids,
        }
    }

    fn send_split(&mut self, id: StoreId, region: &Region, splits: Vec<SplitRequest>) {
        if let Some(store) = self.world.store(id) {
            let response = store.split(
                RegionId(region.id),
                region.epoch.unwrap_or_default(),
                splits,
            );
            self.admin.push(AdminFlight::Split(id, response));
        }
    }

    /// One membership change of the region, chosen by its peers: promote a learner,
    /// remove a learner, add a learner on a store without a replica, demote a voter when
    /// there are more than three, or move a voter to such a store through joint consensus.
    fn change_peers(&mut self, id: StoreId, region: &Region) -> String {
        let role = |p: &Peer| PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter);
        let learners: Vec<Peer> = region
            .peers
            .iter()
            .filter(|p| role(p) == PeerRole::Learner)
            .copied()
            .collect();
        let voters: Vec<Peer> = region
            .peers
            .iter()
            .filter(|p| role(p) != PeerRole::Learner)
            .copied()
            .collect();
        let free: Vec<StoreId> = self
            .world
            .ids()
            .filter(|s| region.peers.iter().all(|p| p.store_id != s.get()))
            .collect();
        let pick = |n: usize, rng: &mut Rng| rng.range(0, n as u64) as usize;
        let changes = match self.rng.range(0, 5) {
            0 if !learners.is_empty() => {
                vec![PeerChange::AddVoter(
                    learners[pick(learners.len(), &mut self.rng)],
                )]
            }
            1 if !learners.is_empty() => {
                vec![PeerChange::Remove(
                    learners[pick(learners.len(), &mut self.rng)],
                )]
            }
            2 if voters.len() > 3 => {
                vec![PeerChange::AddLearner(
                    voters[pick(voters.len(), &mut self.rng)],
                )]
            }
            3 if !free.is_empty() && !voters.is_empty() => {
                let to = free[pick(free.len(), &mut self.rng)];
                let from = voters[pick(voters.len(), &mut self.rng)];
                let new = self.new_peer(to, PeerRole::Voter);
                vec![PeerChange::AddVoter(new), PeerChange::AddLearner(from)]
            }
            _ if !free.is_empty() => {
                let to = free[pick(free.len(), &mut self.rng)];
                vec![PeerChange::AddLearner(self.new_peer(to, PeerRole::Learner))]
            }
            _ => return format!("change peers: nothing to change in region {}", region.id),
        };
        let what = format!(
            "change peers of {} on store {id}: {changes:?}",
            describe(region)
        );
        if let Some(store) = self.world.store(id) {
            let response = store.change_peers(
                RegionId(region.id),
                region.epoch.unwrap_or_default(),
                changes,
            );
            self.admin.push(AdminFlight::Change(id, response));
        }
        what
    }

    fn new_peer(&mut self, store: StoreId, role: PeerRole) -> Peer {
        self.next_peer += 1;
        Peer {
            id: self.next_peer,
            store_id: store.get(),
            role: role as i32,
        }
    }

    fn transfer(&mut self, id: StoreId, region: &Region) -> String {
        let voters: Vec<&Peer> = region
            .peers
            .iter()
            .filter(|p| p.role != PeerRole::Learner as i32 && p.store_id != id.get())
            .collect();
        let Some(to) = voters
            .get(self.rng.range(0, voters.len() as u64) as usize)
            .copied()
            .copied()
        else {
            return format!("transfer: region {} has no other voter", region.id);
        };
        if let Some(store) = self.world.store(id) {
            let response = store.transfer_leader(
                RegionId(region.id),
                region.epoch.unwrap_or_default(),
                PeerId(to.id),
            );
            self.admin
                .push(AdminFlight::Transfer(id, RegionId(region.id), response));
        }
        format!(
            "transfer leader of region {} from store {id} to peer {} on store {}",
            region.id, to.id, to.store_id
        )
    }

    /// Takes the admin answers that have come.
    fn poll_admin(&mut self) -> Result<(), String> {
        let mut still = Vec::with_capacity(self.admin.len());
        for flight in std::mem::take(&mut self.admin) {
            match flight {
                AdminFlight::Split(id, mut r) => match r.try_take() {
                    None => still.push(AdminFlight::Split(id, r)),
                    Some(Ok(split)) => {
                        self.counts.splits += 1;
                        if let Some(first) = split.regions.first() {
                            self.hints.insert(RegionId(first.id), id);
                        }
                    }
                    Some(Err(_)) => {}
                },
                AdminFlight::Change(id, mut r) => match r.try_take() {
                    None => still.push(AdminFlight::Change(id, r)),
                    Some(Ok(_)) => self.counts.conf_changes += 1,
                    Some(Err(_)) => {}
                },
                AdminFlight::Transfer(id, region, mut r) => match r.try_take() {
                    None => still.push(AdminFlight::Transfer(id, region, r)),
                    Some(Ok(())) => {
                        self.counts.transfers += 1;
                        self.hints.remove(&region);
                    }
                    Some(Err(_)) => {}
                },
                AdminFlight::Status(id, mut r) => match r.try_take() {
                    None => still.push(AdminFlight::Status(id, r)),
                    Some(Ok(status)) => {
                        self.leaders.saw(id, &status)?;
                        if let Some(leader) = status.leader {
                            self.hints
                                .insert(RegionId(status.region.id), StoreId(leader.store_id));
                        }
                    }
                    Some(Err(_)) => {}
                },
            }
        }
        self.admin = still;
        Ok(())
    }

    // ---- faults ----

    fn fault(&mut self) -> String {
        let ids: Vec<StoreId> = self.world.ids().collect();
        let pick = |rng: &mut Rng| ids[rng.range(0, ids.len() as u64) as usize];
        let until = self.step + self.rng.range(50, 600) as usize;
        match self.rng.range(0, 6) {
            0 => {
                // Two sides, each with at least one store.
                let mut side: BTreeSet<StoreId> = BTreeSet::new();
                while side.is_empty() || side.len() == ids.len() {
                    side = ids
                        .iter()
                        .copied()
                        .filter(|_| self.rng.chance(50))
                        .collect();
                }
                let other: BTreeSet<StoreId> =
                    ids.iter().copied().filter(|s| !side.contains(s)).collect();
                let what = format!("partition {side:?} | {other:?} until {until}");
                let fault = self.world.add_fault(Fault::Partition(vec![
                    side.into_iter().collect(),
                    other.into_iter().collect(),
                ]));
                self.counts.faults += 1;
                self.faults.push((until, Undo::Fault(fault)));
                what
            }
            1 => {
                let (from, to) = (pick(&mut self.rng), pick(&mut self.rng));
                if from == to {
                    return "fault: none".to_string();
                }
                let fault = self.world.add_fault(Fault::DropLink { from, to });
                self.counts.faults += 1;
                self.faults.push((until, Undo::Fault(fault)));
                format!("drop link {from} -> {to} until {until}")
            }
            2 => {
                let percent = self.rng.range(5, 40) as u8;
                let fault = self.world.add_fault(Fault::Duplicate(percent));
                self.counts.faults += 1;
                self.faults.push((until, Undo::Fault(fault)));
                format!("duplicate {percent}% until {until}")
            }
            3 => {
                let id = pick(&mut self.rng);
                if self.world.is_down(id) || self.world.is_paused(id) {
                    return format!("pause: store {id} is not running");
                }
                self.world.set_paused(id, true);
                self.counts.pauses += 1;
                self.faults.push((until, Undo::Resume(id)));
                format!("pause store {id} until {until}")
            }
            _ => {
                let id = pick(&mut self.rng);
                if self.world.is_down(id) {
                    return format!("crash: store {id} is down already");
                }
                let kept_log = self.rng.range(0, 4) as usize;
                let kept_kv = self.rng.range(0, 4) as usize;
                self.world.crash(id, kept_log, kept_kv);
                self.hints.retain(|_, s| *s != id);
                self.counts.crashes += 1;
                self.faults
                    .retain(|(_, undo)| !matches!(undo, Undo::Resume(s) if *s == id));
                self.faults.push((until, Undo::Restart(id)));
                format!(
                    "crash store {id} (keeping {kept_log} log and {kept_kv} kv writes not synced) until {until}"
                )
            }
        }
    }

    fn undo_due_faults(&mut self) -> Result<(), String> {
        let step = self.step;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.faults)
            .into_iter()
            .partition(|(until, _)| *until <= step);
        self.faults = later;
        for (_, undo) in due {
            self.undo(undo)?;
        }
        Ok(())
    }

    fn undo(&mut self, undo: Undo) -> Result<(), String> {
        let what = match undo {
            Undo::Fault(fault) => {
                self.world.net.remove_fault(fault);
                "heal a network fault".to_string()
            }
            Undo::Resume(id) => {
                self.world.set_paused(id, false);
                format!("resume store {id}")
            }
            Undo::Restart(id) => {
                self.world.start(id)?;
                format!("restart store {id}")
            }
        };
        self.note(what);
        Ok(())
    }

    // ---- phases ----

    /// Elects the first region's leader and splits the key space into the shape's regions.
    fn setup(&mut self) -> Result<(), String> {
        let first = keys::key_at(0);
        self.settle_keys("setup", &[first], &[])?;
        if self.shape.regions > 1 {
            let splits = keys::split_points(self.shape.regions);
            for round in 0.. {
                let Some(&leader) = self.hints.get(&FIRST_REGION) else {
                    return Err("setup: the first region has no known leader".to_string());
                };
                let Some(region) = self
                    .world
                    .store(leader)
                    .and_then(|s| s.region(FIRST_REGION))
                else {
                    return Err(format!("setup: store {leader} lost the first region"));
                };
                if region.epoch.unwrap_or_default().version > 1 {
                    break;
                }
                if round >= 20 {
                    return Err("setup: the first split never applied".to_string());
                }
                // Ids as later splits take them, so a retried split is a new request.
                let requests: Vec<SplitRequest> = splits
                    .iter()
                    .map(|key| self.split_request(&region, key.clone()))
                    .collect();
                self.send_split(leader, &region, requests);
                for _ in 0..200 {
                    self.fair_round(0)?;
                    if self.admin.is_empty() {
                        break;
                    }
                }
            }
            // Every voter holds every region before the random steps begin.
            for _ in 0..SETTLE_ROUNDS {
                let everywhere = (1..=self.shape.voters as u64).all(|s| {
                    self.world
                        .store(StoreId(s))
                        .is_some_and(|st| st.regions().len() >= self.shape.regions)
                });
                if everywhere {
                    break;
                }
                self.fair_round(ROUNDS_PER_TICK)?;
            }
        }
        self.note("setup done".to_string());
        Ok(())
    }

    /// Undoes every fault: the network heals, paused stores resume, crashed ones restart.
    fn heal(&mut self) -> Result<(), String> {
        for (_, undo) in std::mem::take(&mut self.faults) {
            self.undo(undo)?;
        }
        self.world.heal_network();
        self.note("healed".to_string());
        Ok(())
    }

    /// Liveness once healed: a write to every region and a read of every key succeed
    /// within `SETTLE_ROUNDS` fair rounds.
    fn settle(&mut self) -> Result<(), String> {
        let directory = self.directory();
        let writes: Vec<Bytes> = directory
            .iter()
            .map(|r| keys::key_at(keys::start_point(&r.start_key)))
            .collect();
        let mut reads: Vec<Bytes> = self.clients.keys().to_vec();
        reads.extend(writes.iter().cloned());
        self.settle_keys("settle", &writes, &reads)
    }

    /// Fair rounds until each of `writes` is written once and then each of `reads` read
    /// once, through the clients (so the history holds them).
    fn settle_keys(
        &mut self,
        phase: &str,
        writes: &[Bytes],
        reads: &[Bytes],
    ) -> Result<(), String> {
        let mut to_write: BTreeSet<Bytes> = writes.iter().cloned().collect();
        let mut to_read: BTreeSet<Bytes> = reads.iter().cloned().collect();
        for round in 0..SETTLE_ROUNDS {
            if to_write.is_empty() && to_read.is_empty() {
                return Ok(());
            }
            // Writes first, reads once every write is in: the reads see the final state.
            let (kind, wanted) = if to_write.is_empty() {
                (OpKind::Get, &to_read)
            } else {
                (OpKind::Put, &to_write)
            };
            let in_flight = self.clients.in_flight_keys();
            for key in wanted
                .iter()
                .filter(|k| !in_flight.contains(*k))
                .cloned()
                .collect::<Vec<_>>()
            {
                if !self.clients.has_idle() {
                    break;
                }
                let started = self.clients.start(
                    &self.world,
                    &self.hints,
                    &mut self.rng,
                    self.step,
                    Some((key, kind)),
                );
                if let Some(what) = started {
                    self.note(what);
                }
            }
            let done = self.fair_round_with(round, ROUNDS_PER_TICK)?;
            for (key, kind) in done {
                match kind {
                    OpKind::Put => to_write.remove(&key),
                    OpKind::Get => to_read.remove(&key),
                    _ => false,
                };
            }
        }
        Err(format!(
            "{phase}: not live after {SETTLE_ROUNDS} fair rounds: keys not written {:?}, not read {:?}; regions: {}",
            to_write.iter().map(|k| keys::show(k)).collect::<Vec<_>>(),
            to_read.iter().map(|k| keys::show(k)).collect::<Vec<_>>(),
            self.describe_world()
        ))
    }

    /// One fair round: every active store runs until idle, every batch in flight is
    /// delivered; every `per_tick` rounds (0: never) every store ticks.
    fn fair_round(&mut self, per_tick: usize) -> Result<(), String> {
        let round = self.step;
        self.fair_round_with(round, per_tick).map(|_| ())
    }

    fn fair_round_with(
        &mut self,
        round: usize,
        per_tick: usize,
    ) -> Result<Vec<(Bytes, OpKind)>, String> {
        self.step += 1;
        let mut worked = 0;
        for id in self.world.active_ids() {
            if let Some(store) = self.world.active(id) {
                if ticks_in(round, per_tick) {
                    store.tick();
                }
                worked += store.run_until_idle();
            }
        }
        let delivered = self.world.net.deliver_all();
        self.note(format!("fair round: {worked} steps, {delivered} delivered"));
        self.take_answers_and_check(StoreCheck::Now)
    }

    /// The newest version of every region any store holds, in key order.
    fn directory(&self) -> Vec<Region> {
        let mut newest: BTreeMap<u64, Region> = BTreeMap::new();
        for store in self.world.running() {
            for region in store.regions() {
                let version = |r: &Region| {
                    let e = r.epoch.unwrap_or_default();
                    (e.version, e.conf_ver)
                };
                match newest.get(&region.id) {
                    Some(known) if version(known) >= version(&region) => {}
                    _ => {
                        newest.insert(region.id, region);
                    }
                }
            }
        }
        let mut regions: Vec<Region> = newest.into_values().collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        regions
    }

    fn describe_world(&self) -> String {
        let mut out = String::new();
        for id in self.world.ids() {
            match self.world.store(id) {
                None => out.push_str(&format!("\n  store {id}: down")),
                Some(store) => {
                    let regions: Vec<String> = store.regions().iter().map(describe).collect();
                    out.push_str(&format!(
                        "\n  store {id}{}: {}",
                        if self.world.is_paused(id) {
                            " (paused)"
                        } else {
                            ""
                        },
                        regions.join("; ")
                    ));
                }
            }
        }
        out
    }

    /// After settling: every request answered, the regions tile the key space, and the
    /// history is linearizable.
    fn final_checks(&mut self) -> Result<SimReport, String> {
        for round in 0..SETTLE_ROUNDS {
            if self.clients.unanswered() == 0 && self.admin.is_empty() {
                break;
            }
            if round + 1 == SETTLE_ROUNDS {
                return Err(format!(
                    "requests never answered: {} of the clients', {} of the simulator's",
                    self.clients.unanswered(),
                    self.admin.len()
                ));
            }
            self.fair_round(ROUNDS_PER_TICK)?;
        }
        let directory = self.directory();
        check_cover(&directory)?;
        let checked = self.clients.check().map_err(|e| {
            format!(
                "the history of key {} is not linearizable: {:#?}",
                keys::show(&e.key),
                e.operations
            )
        })?;
        self.note(format!("checked {checked} operations"));
        Ok(SimReport {
            seed: self.seed,
            shape: self.shape.clone(),
            steps: self.step,
            clients: self.clients.counts(),
            checked_operations: checked,
            faults: self.counts.faults,
            pauses: self.counts.pauses,
            crashes: self.counts.crashes,
            splits: self.counts.splits,
            conf_changes: self.counts.conf_changes,
            transfers: self.counts.transfers,
            leader_terms: self.leaders.terms(),
            applied_events: self.applied.events(),
            regions_at_end: directory.len(),
            fingerprint: self.fingerprint.finish(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Role;
    use crate::store::{AppliedChange, ApplyEvent, response_channel};

    /// A run of three stores and two regions, set up (leaders elected, the space split).
    fn set_up(seed: u64) -> Sim {
        let mut sim = Sim::new(&SimOptions {
            stores: Some(3),
            regions: Some(2),
            ..SimOptions::new(seed)
        })
        .expect("the world starts");
        sim.setup().expect("set up");
        sim
    }

    /// Stores 1 and 2 report different entries applied at one index of region 1.
    fn plant_divergence(sim: &Sim, index: u64) {
        for (store, term) in [(1, 1), (2, 2)] {
            sim.applied.observer(StoreId(store)).on_apply(&ApplyEvent {
                region: RegionId(1),
                index,
                term,
                change: AppliedChange::Writes { writes: Vec::new() },
            });
        }
    }

    #[test]
    fn replicas_applying_different_things_fail_the_step_that_sees_it() {
        let mut sim = set_up(1);
        assert_eq!(sim.after_step(), Ok(()));
        plant_divergence(&sim, 1_000_000);
        assert!(sim.after_step().is_err(), "a random step checks");
        plant_divergence(&sim, 1_000_001);
        assert!(sim.fair_round(0).is_err(), "a fair round checks");
    }

    #[test]
    fn a_store_whose_disk_fails_fails_the_run() {
        let mut sim = set_up(2);
        let node = sim.world.node(StoreId(1)).expect("store 1");
        node.log.cut_power();
        let key = keys::key_at(5);
        let failure = sim
            .settle_keys("test", std::slice::from_ref(&key), &[])
            .expect_err("store 1 cannot write its log");
        assert!(
            failure.contains("store 1 stopped on a fatal error"),
            "{failure}"
        );
    }

    #[test]
    fn two_leaders_seen_in_one_term_fail_the_run() {
        let mut sim = set_up(3);
        let mut probe = sim
            .world
            .store(StoreId(1))
            .expect("store 1")
            .region_status(RegionId(1));
        sim.fair_round(0).expect("a quiet round");
        let status = probe.try_take().expect("answered").expect("a status");
        for (store, peer) in [(1, 1), (2, 2)] {
            let (responder, response) = response_channel::<RegionStatus>(RegionId(1));
            let mut claimed = status.clone();
            claimed.role = Role::Leader;
            claimed.peer.id = peer;
            claimed.peer.store_id = store;
            responder.respond(Ok(claimed));
            sim.admin
                .push(AdminFlight::Status(StoreId(store), response));
        }
        let failure = sim.poll_admin().expect_err("two leaders in one term");
        assert!(failure.contains("two leaders"), "{failure}");
    }

    #[test]
    fn totals_add_up_every_count_of_every_report() {
        let report = SimReport {
            seed: 1,
            shape: Shape::draw(&mut Rng::new(1), None, None),
            steps: 10,
            clients: ClientCounts {
                acknowledged: 2,
                refused: 1,
                refusals: BTreeMap::from([("not_leader", 1)]),
                unknown: 3,
            },
            checked_operations: 4,
            faults: 5,
            pauses: 6,
            crashes: 7,
            splits: 8,
            conf_changes: 9,
            transfers: 10,
            leader_terms: 11,
            applied_events: 12,
            regions_at_end: 1,
            fingerprint: 0,
        };
        let mut totals = SimTotals::default();
        totals.add(&report);
        totals.add(&report);
        let mut clients = report.clients.clone();
        clients.add(&report.clients);
        assert_eq!(
            totals,
            SimTotals {
                clients,
                checked_operations: 8,
                faults: 10,
                pauses: 12,
                crashes: 14,
                splits: 16,
                conf_changes: 18,
                transfers: 20,
                leader_terms: 22,
                applied_events: 24,
            }
        );
    }

    #[test]
    fn fair_rounds_tick_every_so_many_rounds_or_never() {
        assert!(ticks_in(0, 4) && ticks_in(8, 4));
        assert!(!ticks_in(6, 4));
        assert!(!ticks_in(0, 0) && !ticks_in(5, 0));
    }

    #[test]
    fn a_fault_is_undone_at_its_step_and_a_fair_round_is_a_step() {
        let mut sim = set_up(5);
        let two = StoreId(2);
        sim.world.set_paused(two, true);
        sim.faults.push((sim.step + 2, Undo::Resume(two)));
        sim.fair_round(0).expect("a round");
        sim.undo_due_faults().expect("nothing due");
        assert!(sim.world.is_paused(two), "not yet");
        let before = sim.step;
        sim.fair_round(0).expect("a round");
        assert_eq!(sim.step, before + 1);
        sim.undo_due_faults().expect("resumed");
        assert!(!sim.world.is_paused(two), "undone at its step");
        assert!(sim.faults.is_empty());
    }

    #[test]
    fn settling_fails_when_no_store_serves() {
        let mut sim = set_up(6);
        for id in 1..=3 {
            sim.world.crash(StoreId(id), 0, 0);
        }
        let failure = sim.settle().expect_err("nothing can serve");
        assert!(failure.contains("not live"), "{failure}");
    }

    #[test]
    fn stores_are_checked_every_step_unless_regions_are_many() {
        assert_eq!(StoreCheck::at(7, 1), StoreCheck::Now);
        assert_eq!(StoreCheck::at(7, 64), StoreCheck::Now);
        assert_eq!(StoreCheck::at(7, 65), StoreCheck::Later);
        assert_eq!(StoreCheck::at(128, 1_000), StoreCheck::Now);
    }

    #[test]
    fn the_regions_left_must_tile_the_key_space() {
        let mut sim = set_up(4);
        let directory = sim.directory();
        assert_eq!(directory.len(), 2);
        assert_eq!(check_cover(&directory), Ok(()));
        // With every store down, nothing covers the key space: the final check says so.
        for id in 1..=3 {
            sim.world.crash(StoreId(id), 0, 0);
        }
        assert!(sim.directory().is_empty());
        assert!(
            sim.final_checks().is_err(),
            "no region covers the key space"
        );
    }
}
