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
use crate::region::newest_regions;
use crate::store::batch::PollOutcome;
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
    /// Scheduled apply steps that found a batch to handle (the settling rounds not
    /// counted): the apply pollers' turns interleave with the others'.
    pub apply_steps: u64,
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
    /// Scheduled apply steps that found a batch to handle.
    pub apply_steps: u64,
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
        self.apply_steps += r.apply_steps;
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

/// The membership change `draw` (0..5) makes to `region`, given the stores without a
/// replica (`free`): promote a learner (0), remove a learner (1), demote a voter when
/// there are more than three (2), move a voter to a free store through joint consensus
/// (3); otherwise, or when the drawn change is impossible, add a learner on a free store.
/// New peers take ids after `next_peer`. `None`: nothing to change.
fn plan_change(
    draw: u64,
    region: &Region,
    free: &[StoreId],
    rng: &mut Rng,
    next_peer: &mut u64,
) -> Option<Vec<PeerChange>> {
    let role = |p: &Peer| PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter);
    let (learners, voters): (Vec<Peer>, Vec<Peer>) = region
        .peers
        .iter()
        .partition(|p| role(p) == PeerRole::Learner);
    let pick = |n: usize, rng: &mut Rng| rng.range(0, n as u64) as usize;
    let mut new_peer = |store: StoreId, role: PeerRole| {
        *next_peer += 1;
        Peer {
            id: *next_peer,
            store_id: store.get(),
            role: role as i32,
        }
    };
    Some(match draw {
        0 if !learners.is_empty() => {
            vec![PeerChange::AddVoter(learners[pick(learners.len(), rng)])]
        }
        1 if !learners.is_empty() => vec![PeerChange::Remove(learners[pick(learners.len(), rng)])],
        2 if voters.len() > 3 => vec![PeerChange::AddLearner(voters[pick(voters.len(), rng)])],
        3 if !free.is_empty() && !voters.is_empty() => {
            let to = free[pick(free.len(), rng)];
            let from = voters[pick(voters.len(), rng)];
            let new = new_peer(to, PeerRole::Voter);
            vec![PeerChange::AddVoter(new), PeerChange::AddLearner(from)]
        }
        _ if !free.is_empty() => {
            let to = free[pick(free.len(), rng)];
            vec![PeerChange::AddLearner(new_peer(to, PeerRole::Learner))]
        }
        _ => return None,
    })
}

/// The peers a leader on store `from` may hand the region's leadership to: its voters
/// elsewhere.
fn transfer_targets(region: &Region, from: StoreId) -> Vec<Peer> {
    region
        .peers
        .iter()
        .filter(|p| p.role != PeerRole::Learner as i32 && p.store_id != from.get())
        .copied()
        .collect()
}

/// A fault the schedule puts in force.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FaultPlan {
    /// The stores split in two sides, each with at least one store.
    Partition(Vec<StoreId>, Vec<StoreId>),
    /// One direction between two stores loses everything.
    DropLink { from: StoreId, to: StoreId },
    /// Batches are delivered twice, this percent of them.
    Duplicate(u8),
    /// A running store stops being scheduled.
    Pause(StoreId),
    /// A store crashes, keeping these many of its log's and KV's writes not synced.
    Crash {
        store: StoreId,
        kept_log: usize,
        kept_kv: usize,
    },
}

/// The fault `draw` (0..6) makes among the stores `ids`: a partition (0), a dropped link
/// (1), duplication (2), a pause (3), or a crash (4 and 5). `Err` says why there is none
/// (a link from a store to itself, a pause of a store not running, a crash of a store
/// down already).
fn plan_fault(
    draw: u64,
    ids: &[StoreId],
    rng: &mut Rng,
    is_down: impl Fn(StoreId) -> bool,
    is_paused: impl Fn(StoreId) -> bool,
) -> Result<FaultPlan, String> {
    let pick = |rng: &mut Rng| ids[rng.range(0, ids.len() as u64) as usize];
    Ok(match draw {
        0 => {
            let mut side: Vec<StoreId> = Vec::new();
            while side.is_empty() || side.len() == ids.len() {
                side = ids.iter().copied().filter(|_| rng.chance(50)).collect();
            }
            let other = ids.iter().copied().filter(|s| !side.contains(s)).collect();
            FaultPlan::Partition(side, other)
        }
        1 => {
            let (from, to) = (pick(rng), pick(rng));
            if from == to {
                return Err("fault: none".to_string());
            }
            FaultPlan::DropLink { from, to }
        }
        2 => FaultPlan::Duplicate(rng.range(5, 40) as u8),
        3 => {
            let id = pick(rng);
            if is_down(id) || is_paused(id) {
                return Err(format!("pause: store {id} is not running"));
            }
            FaultPlan::Pause(id)
        }
        _ => {
            let store = pick(rng);
            if is_down(store) {
                return Err(format!("crash: store {store} is down already"));
            }
            FaultPlan::Crash {
                store,
                kept_log: rng.range(0, 4) as usize,
                kept_kv: rng.range(0, 4) as usize,
            }
        }
    })
}

/// Whether a store holding `held` regions may split another, in a run that starts with
/// `regions`: a run that doubled its regions forever would slow down.
fn may_split(held: usize, regions: usize) -> bool {
    held < regions * 2 + 8
}

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
    apply_steps: u64,
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
        let choices = self.choices();
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

    /// The actions possible now, each with its weight: every active store's own steps,
    /// the network's (delivery weighted up with the batches held, up to 30), a client's
    /// operation while one is idle, a probe, an admin request, and a fault while fewer
    /// than two are in force.
    fn choices(&self) -> Vec<(Action, u64)> {
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
        choices
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
                if matches!(outcome, Some(PollOutcome::Handled(_))) {
                    self.counts.apply_steps += 1;
                }
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
        let asked = regions.len().min(8);
        for _ in 0..asked {
            let region = &regions[self.rng.range(0, regions.len() as u64) as usize];
            let response = store.region_status(RegionId(region.id));
            self.admin.push(AdminFlight::Status(id, response));
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
        let regions = self.world.store(id).map_or(0, |s| s.regions().len());
        if !may_split(regions, self.shape.regions) {
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

    /// One membership change of the region (see `plan_change`), proposed to store `id`.
    fn change_peers(&mut self, id: StoreId, region: &Region) -> String {
        let free: Vec<StoreId> = self
            .world
            .ids()
            .filter(|s| region.peers.iter().all(|p| p.store_id != s.get()))
            .collect();
        let draw = self.rng.range(0, 5);
        let Some(changes) = plan_change(draw, region, &free, &mut self.rng, &mut self.next_peer)
        else {
            return format!("change peers: nothing to change in region {}", region.id);
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

    fn transfer(&mut self, id: StoreId, region: &Region) -> String {
        let voters = transfer_targets(region, id);
        let Some(to) = voters
            .get(self.rng.range(0, voters.len() as u64) as usize)
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
        let until = self.step + self.rng.range(50, 600) as usize;
        let draw = self.rng.range(0, 6);
        let world = &self.world;
        let plan = plan_fault(
            draw,
            &ids,
            &mut self.rng,
            |id| world.is_down(id),
            |id| world.is_paused(id),
        );
        match plan {
            Ok(plan) => self.inject(plan, until),
            Err(none) => none,
        }
    }

    /// Puts `plan` in force until step `until`, counted.
    fn inject(&mut self, plan: FaultPlan, until: usize) -> String {
        let network = |sim: &mut Sim, fault: Fault| {
            let id = sim.world.add_fault(fault);
            sim.counts.faults += 1;
            sim.faults.push((until, Undo::Fault(id)));
        };
        match plan {
            FaultPlan::Partition(side, other) => {
                let set = |stores: &[StoreId]| stores.iter().copied().collect::<BTreeSet<_>>();
                let what = format!(
                    "partition {:?} | {:?} until {until}",
                    set(&side),
                    set(&other)
                );
                let sides = [side, other].map(|stores| stores.into_iter().collect());
                network(self, Fault::Partition(sides.into()));
                what
            }
            FaultPlan::DropLink { from, to } => {
                network(self, Fault::DropLink { from, to });
                format!("drop link {from} -> {to} until {until}")
            }
            FaultPlan::Duplicate(percent) => {
                network(self, Fault::Duplicate(percent));
                format!("duplicate {percent}% until {until}")
            }
            FaultPlan::Pause(id) => {
                self.world.set_paused(id, true);
                self.counts.pauses += 1;
                self.faults.push((until, Undo::Resume(id)));
                format!("pause store {id} until {until}")
            }
            FaultPlan::Crash {
                store: id,
                kept_log,
                kept_kv,
            } => {
                self.world.crash(id, kept_log, kept_kv);
                self.hints.retain(|_, s| *s != id);
                self.counts.crashes += 1;
                // Restarted, not resumed: a crash ends a pause.
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
        newest_regions(self.world.running().flat_map(|store| store.regions()))
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
            apply_steps: self.counts.apply_steps,
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
    fn a_failure_names_its_seed_step_and_the_commands_that_replay_it() {
        let failure = |stores, regions| SimFailure {
            options: SimOptions {
                steps: 900,
                stores,
                regions,
                ..SimOptions::new(7)
            },
            step: 12,
            what: "two leaders".into(),
        };
        let text = failure(Some(4), Some(30)).to_string();
        assert!(
            text.starts_with("store simulation failed (seed 7, step 12): two leaders\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "replay: FLOTILLA_CLUSTER_SIM_SEED=7 FLOTILLA_CLUSTER_SIM_STEPS=900 \
                 FLOTILLA_CLUSTER_SIM_STORES=4 FLOTILLA_CLUSTER_SIM_REGIONS=30 cargo test"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "sim-cluster --first-seed 7 --seeds 1 --steps 900 --stores 4 --regions 30 --trace"
            ),
            "{text}"
        );
        let drawn = failure(None, None).to_string();
        assert!(
            !drawn.contains("STORES") && !drawn.contains("--regions"),
            "{drawn}"
        );
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
            apply_steps: 13,
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
                apply_steps: 26,
                leader_terms: 22,
                applied_events: 24,
            }
        );
    }

    #[test]
    fn membership_changes_are_planned_by_the_region_s_peers() {
        let peer = |id: u64, role: PeerRole| Peer {
            id,
            store_id: id - 10,
            role: role as i32,
        };
        // Voters 11–14 on stores 1–4, learner 15 on store 5; store 6 is free.
        let mut peers: Vec<Peer> = (11..=14).map(|id| peer(id, PeerRole::Voter)).collect();
        peers.push(peer(15, PeerRole::Learner));
        let region = Region {
            id: 1,
            peers,
            ..Region::default()
        };
        let (mut rng, mut next_peer) = (Rng::new(1), 100);
        let mut plan = |draw, region: &Region, free: &[StoreId]| {
            plan_change(draw, region, free, &mut rng, &mut next_peer)
        };
        let learner = peer(15, PeerRole::Learner);
        let free = [StoreId(6)];
        assert_eq!(
            plan(0, &region, &free),
            Some(vec![PeerChange::AddVoter(learner)])
        );
        assert_eq!(
            plan(1, &region, &free),
            Some(vec![PeerChange::Remove(learner)])
        );
        let is_voter = |p: &Peer| (11..=14).contains(&p.id) && p.role == PeerRole::Voter as i32;
        match plan(2, &region, &free).as_deref() {
            Some([PeerChange::AddLearner(demoted)]) => assert!(is_voter(demoted)),
            other => panic!("not a demotion: {other:?}"),
        }
        match plan(3, &region, &free).as_deref() {
            Some([PeerChange::AddVoter(new), PeerChange::AddLearner(from)]) => {
                let moved_to = Peer {
                    id: 101,
                    store_id: 6,
                    role: PeerRole::Voter as i32,
                };
                assert_eq!(*new, moved_to);
                assert!(is_voter(from));
            }
            other => panic!("not a move: {other:?}"),
        }
        let added = Some(vec![PeerChange::AddLearner(Peer {
            id: 102,
            store_id: 6,
            role: PeerRole::Learner as i32,
        })]);
        assert_eq!(plan(4, &region, &free), added);

        // Three voters and no learner: no promotion, removal or demotion — a learner is
        // added instead; with no free store, nothing changes.
        let three = Region {
            peers: region.peers[..3].to_vec(),
            ..region.clone()
        };
        for draw in 0..3 {
            match plan(draw, &three, &[StoreId(4)]).as_deref() {
                Some([PeerChange::AddLearner(new)]) => {
                    assert_eq!((new.store_id, new.role), (4, PeerRole::Learner as i32))
                }
                other => panic!("draw {draw}: {other:?}"),
            }
        }
        assert_eq!(plan(3, &three, &[]), None);
        assert_eq!(plan(4, &three, &[]), None);
    }

    #[test]
    fn leadership_goes_only_to_a_voter_on_another_store() {
        let peer = |id: u64, role: PeerRole| Peer {
            id,
            store_id: id,
            role: role as i32,
        };
        let region = Region {
            peers: vec![
                peer(1, PeerRole::Voter),
                peer(2, PeerRole::Learner),
                peer(3, PeerRole::IncomingVoter),
                peer(4, PeerRole::Voter),
            ],
            ..Region::default()
        };
        let ids = |from| -> Vec<u64> {
            transfer_targets(&region, StoreId(from))
                .iter()
                .map(|p| p.id)
                .collect()
        };
        assert_eq!(ids(1), [3, 4]);
        assert_eq!(ids(4), [1, 3]);
    }

    #[test]
    fn faults_are_planned_among_the_stores_that_can_take_them() {
        let ids = [StoreId(1), StoreId(2), StoreId(3)];
        let mut rng = Rng::new(3);
        // Store 2 is paused, store 3 down.
        let mut plans = |draw| -> Vec<Result<FaultPlan, String>> {
            (0..40)
                .map(|_| {
                    plan_fault(
                        draw,
                        &ids,
                        &mut rng,
                        |s| s == StoreId(3),
                        |s| s == StoreId(2),
                    )
                })
                .collect()
        };
        for plan in plans(0) {
            let Ok(FaultPlan::Partition(side, other)) = plan else {
                panic!("{plan:?}")
            };
            assert!(
                !side.is_empty() && !other.is_empty(),
                "{side:?} | {other:?}"
            );
            let mut all = [side, other].concat();
            all.sort();
            assert_eq!(all, ids);
        }
        let links = plans(1);
        assert!(links.iter().any(|p| p.is_ok()));
        for plan in links {
            match plan {
                Ok(FaultPlan::DropLink { from, to }) => assert_ne!(from, to),
                Err(none) => assert_eq!(none, "fault: none"),
                other => panic!("{other:?}"),
            }
        }
        for plan in plans(2) {
            let Ok(FaultPlan::Duplicate(percent)) = plan else {
                panic!("{plan:?}")
            };
            assert!((5..40).contains(&percent));
        }
        let pauses = plans(3);
        assert!(pauses.contains(&Ok(FaultPlan::Pause(StoreId(1)))));
        assert!(
            pauses
                .iter()
                .all(|p| p == &Ok(FaultPlan::Pause(StoreId(1))) || p.is_err()),
            "only a running store is paused: {pauses:?}"
        );
        for draw in [4, 5] {
            let crashes = plans(draw);
            let crashed: BTreeSet<StoreId> = crashes
                .iter()
                .filter_map(|p| match p {
                    Ok(FaultPlan::Crash {
                        store,
                        kept_log,
                        kept_kv,
                    }) => {
                        assert!(*kept_log < 4 && *kept_kv < 4);
                        Some(*store)
                    }
                    Err(_) => None,
                    other => panic!("{other:?}"),
                })
                .collect();
            // A paused store may crash; a down one cannot.
            assert_eq!(crashed, BTreeSet::from([StoreId(1), StoreId(2)]));
        }
    }

    #[test]
    fn an_injected_fault_is_counted_and_a_crash_forgets_the_store() {
        let mut sim = set_up(8);
        let until = sim.step + 100;
        for plan in [
            FaultPlan::Partition(vec![StoreId(1)], vec![StoreId(2), StoreId(3)]),
            FaultPlan::DropLink {
                from: StoreId(1),
                to: StoreId(2),
            },
            FaultPlan::Duplicate(10),
        ] {
            let before = (sim.counts.faults, sim.faults.len());
            sim.inject(plan, until);
            assert_eq!(
                (sim.counts.faults, sim.faults.len()),
                (before.0 + 1, before.1 + 1)
            );
        }
        sim.heal().expect("healed");
        sim.inject(FaultPlan::Pause(StoreId(2)), until);
        assert!(sim.world.is_paused(StoreId(2)));
        assert_eq!(sim.counts.pauses, 1);
        sim.hints.insert(RegionId(1), StoreId(2));
        sim.hints.insert(RegionId(2), StoreId(1));
        let crash = FaultPlan::Crash {
            store: StoreId(2),
            kept_log: 0,
            kept_kv: 0,
        };
        sim.inject(crash, until);
        assert!(sim.world.is_down(StoreId(2)));
        assert_eq!(sim.counts.crashes, 1);
        assert_eq!(
            sim.hints
                .iter()
                .map(|(r, s)| (r.get(), s.get()))
                .collect::<Vec<_>>(),
            [(2, 1)]
        );
        // Its pause is over; it is restarted at the fault's end.
        assert!(
            sim.faults
                .iter()
                .all(|(_, undo)| !matches!(undo, Undo::Resume(_)))
        );
        assert!(matches!(
            sim.faults.as_slice(),
            [(_, Undo::Restart(StoreId(2)))]
        ));
    }

    #[test]
    fn setup_ends_as_soon_as_every_voter_holds_every_region() {
        let sim = set_up(9);
        for id in 1..=sim.shape.voters as u64 {
            let store = sim.world.store(StoreId(id)).expect("a voter's store");
            assert_eq!(store.regions().len(), 2, "store {id}");
        }
        assert!(sim.step < SETTLE_ROUNDS, "setup took {} steps", sim.step);
    }

    #[test]
    fn final_checks_wait_for_late_answers_and_fail_on_missing_ones() {
        let mut sim = set_up(10);
        let one = StoreId(1);
        // Answered once store 1 runs a round.
        let status = sim
            .world
            .store(one)
            .expect("store 1")
            .region_status(RegionId(1));
        sim.admin.push(AdminFlight::Status(one, status));
        let report = sim.final_checks().expect("answered in the first round");
        assert_eq!(report.regions_at_end, 2);
        assert!(sim.admin.is_empty());
        // Never answered (its responder kept alive).
        let (_responder, never) = response_channel(RegionId(1));
        sim.admin.push(AdminFlight::Status(one, never));
        let failure = sim.final_checks().expect_err("never answered");
        assert!(
            failure.contains("requests never answered: 0 of the clients', 1 of the simulator's"),
            "{failure}"
        );
    }

    #[test]
    fn a_store_splits_until_it_holds_twice_the_regions_and_eight() {
        assert!(may_split(1, 5));
        assert!(may_split(17, 5));
        assert!(!may_split(18, 5));
        assert!(!may_split(40, 5));
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
    fn the_schedule_counts_its_steps_and_delivers_or_loses_only_what_is_held() {
        let mut sim = set_up(7);
        let start = sim.step;
        for n in 1..=20 {
            sim.random_step().expect("a step");
            assert_eq!(sim.step, start + n);
        }
        let network_picks = |sim: &mut Sim| {
            (0..500)
                .filter(|_| matches!(sim.pick(), Action::Deliver | Action::Lose))
                .count()
        };
        let weight = |sim: &Sim, wanted: Action| {
            sim.choices()
                .iter()
                .find(|(action, _)| *action == wanted)
                .map(|(_, w)| *w)
        };
        sim.fair_round(0).expect("a round");
        assert_eq!(sim.world.net.held(), 0, "a fair round delivers everything");
        assert_eq!(network_picks(&mut sim), 0);
        assert_eq!(weight(&sim, Action::Deliver), None);
        for _ in 0..1_000 {
            if sim.world.net.held() > 0 {
                break;
            }
            sim.random_step().expect("a step");
        }
        let held = sim.world.net.held() as u64;
        assert!(held > 0, "nothing was sent");
        assert!(network_picks(&mut sim) > 0);
        assert_eq!(weight(&sim, Action::Deliver), Some(6 + held.min(24)));
        assert_eq!(weight(&sim, Action::Lose), Some(1));
        assert_eq!(weight(&sim, Action::Raft(StoreId(2))), Some(6));
        // Losing a batch is a fault, counted.
        let faults = sim.counts.faults;
        sim.act(Action::Lose).expect("lost");
        assert_eq!(sim.counts.faults, faults + 1);
        // At most two faults in force.
        sim.faults.clear();
        sim.faults.push((usize::MAX, Undo::Resume(StoreId(2))));
        assert_eq!(weight(&sim, Action::Fault), Some(1));
        sim.faults.push((usize::MAX, Undo::Resume(StoreId(3))));
        assert_eq!(weight(&sim, Action::Fault), None);
    }

    #[test]
    fn settling_fails_when_no_store_serves() {
        let mut sim = set_up(6);
        for id in 1..=3 {
            sim.world.crash(StoreId(id), 0, 0);
        }
        let failure = sim.settle().expect_err("nothing can serve");
        assert!(failure.contains("not live"), "{failure}");
        // The world as it was, for the reader of the failure.
        assert!(failure.contains("\n  store 2: down"), "{failure}");
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
