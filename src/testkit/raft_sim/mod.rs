//! A randomized, seeded simulator of one Raft group of 3–7 nodes. Messages are dropped,
//! duplicated, reordered and delayed; partitions come and heal; nodes crash (losing what
//! they had not persisted) and restart; membership changes, leader transfers, reads and
//! log compactions are mixed in. Every step is followed by the invariant checks. A run is
//! a pure function of its seed, so a failure replays exactly with the same seed.

pub mod cluster;
pub mod invariants;

use prost::Message as _;

use crate::proto::raftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, MessageType,
};
use crate::raft::ReadOnlyOption;
use crate::raft::rng::Rng;
use cluster::Cluster;

/// Parameters of one simulation run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Determines everything: cluster size, config and every random choice.
    pub seed: u64,
    /// Random actions before the healing phase.
    pub steps: usize,
}

/// What a successful run did, for the report.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Seed the run was made from.
    pub seed: u64,
    /// Nodes in the group, 3 to 7 (initial voters and spares together).
    pub nodes: usize,
    /// Highest committed log index the checker saw (an index, not an entry count).
    pub committed: u64,
    /// Terms in which a leader was observed.
    pub leaders_elected: usize,
    /// Node crashes injected.
    pub crashes: u64,
    /// Membership changes the leader accepted as proposals (not necessarily committed).
    pub conf_changes: u64,
    /// Leader transfers the leader accepted (not necessarily completed).
    pub transfers: u64,
    /// Read requests whose ReadState came back (each is checked for staleness).
    pub reads_confirmed: u64,
    /// Messages delivered by random steps (not those of the final `stabilize` rounds).
    pub messages_delivered: u64,
    /// `MsgSnapshot` messages handed to a node (`Cluster::delivered`), healing phase included.
    pub snapshots_delivered: u64,
    /// Whether the run used lease-based reads (`ReadOnlyOption::LeaseBased`).
    pub lease_reads: bool,
}

/// Why a run failed; `Display` adds the command that replays it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// Seed of the failing run; rerunning with it reproduces the failure.
    pub seed: u64,
    /// Step at which it was detected; healing rounds count on from `SimOptions::steps`.
    pub step: usize,
    /// First invariant violation or step error, or the node states if healing made no progress.
    pub what: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation failed (seed {}, step {}): {}\nreplay: FLOTILLA_SIM_SEED={} cargo test --test raft sim::replay_one_seed -- --nocapture",
            self.seed, self.step, self.what, self.seed
        )
    }
}

/// A read request waiting for its ReadState: the highest committed index at the time it was
/// issued, which the confirmed read index must not be below (linearizability).
struct PendingRead {
    node: u64,
    ctx: Vec<u8>,
    min_index: u64,
}

struct Sim {
    rng: Rng,
    c: Cluster,
    ids: Vec<u64>,
    lease: bool,
    next_payload: u64,
    reads: Vec<PendingRead>,
    report: SimReport,
    /// Faults (drops, duplicates, partitions, crashes) happen only in stormy periods;
    /// calm periods in between let the group make progress.
    storm: bool,
    period_ends: usize,
}

/// Runs one simulation: `steps` random actions, then heals everything and requires a new
/// proposal to be applied by every member. Stops at the first violation.
pub fn run(opts: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut rng = Rng::new(opts.seed);
    let n = rng.range(3, 8) as usize;
    let ids: Vec<u64> = (1..=n as u64).collect();
    // Start with 3 voters (or all); the rest are spare nodes for membership changes.
    let voters: Vec<u64> = ids[..if rng.chance(50) { 3 } else { n }].to_vec();
    let pre_vote = rng.chance(70);
    let check_quorum = rng.chance(70);
    let lease = check_quorum && rng.chance(50);
    let max_size_per_msg = [64, 256, 1 << 20][rng.range(0, 3) as usize];
    let max_inflight = rng.range(1, 8) as usize;
    // Byte limits, when set, are small enough to bite (payloads are a few bytes each).
    let mut some_limit = |choices: [u64; 3]| choices[rng.range(0, 3) as usize];
    let max_inflight_bytes = some_limit([0, 40, 200]);
    let max_uncommitted_size = some_limit([0, 30, 100]);
    let max_committed_size_per_ready = some_limit([0, 20, 100]);
    let heartbeat_tick = rng.range(1, 4) as usize;
    let election_tick = heartbeat_tick * rng.range(3, 8) as usize;
    let c = Cluster::with_members(&ids, &voters, &[], |cfg| {
        cfg.max_inflight_bytes = max_inflight_bytes;
        cfg.max_uncommitted_size = max_uncommitted_size;
        cfg.max_committed_size_per_ready = max_committed_size_per_ready;
        cfg.heartbeat_tick = heartbeat_tick;
        cfg.election_tick = election_tick;
        cfg.pre_vote = pre_vote;
        cfg.check_quorum = check_quorum;
        cfg.read_only_option = if lease {
            ReadOnlyOption::LeaseBased
        } else {
            ReadOnlyOption::Safe
        };
        cfg.max_size_per_msg = max_size_per_msg;
        cfg.max_inflight_msgs = max_inflight;
        cfg.seed = opts.seed ^ cfg.id;
    });
    let report = SimReport {
        seed: opts.seed,
        nodes: n,
        lease_reads: lease,
        ..Default::default()
    };
    let mut sim = Sim {
        rng,
        c,
        ids,
        lease,
        next_payload: 0,
        reads: Vec::new(),
        report,
        storm: false,
        period_ends: 0,
    };
    sim.c.sync = false;
    sim.c.trace = std::env::var_os("FLOTILLA_SIM_TRACE").is_some();
    for step in 0..opts.steps {
        if step >= sim.period_ends {
            sim.next_period(step);
        }
        sim.random_step();
        sim.verify(step)?;
    }
    sim.heal_and_converge(opts.steps)?;
    sim.report.committed = sim.c.checker.max_committed();
    sim.report.snapshots_delivered = sim
        .c
        .delivered
        .get(&MessageType::MsgSnapshot)
        .copied()
        .unwrap_or(0);
    Ok(sim.report)
}

impl Sim {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        if xs.is_empty() {
            return None;
        }
        Some(xs[self.rng.range(0, xs.len() as u64) as usize])
    }

    fn verify(&mut self, step: usize) -> Result<(), SimFailure> {
        self.c.check_invariants();
        if step.is_multiple_of(64) {
            self.c.check_log_matching();
        }
        self.check_reads();
        let mut problems = std::mem::take(&mut self.c.checker.failures);
        problems.append(&mut self.c.step_errors);
        match problems.first() {
            Some(what) => Err(SimFailure {
                seed: self.report.seed,
                step,
                what: what.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A confirmed read index below what was committed when the read was issued would be a
    /// stale read.
    fn check_reads(&mut self) {
        for id in self.ids.clone() {
            let states = std::mem::take(&mut self.c.nodes.get_mut(&id).expect("node").read_states);
            for rs in states {
                let Some(pos) = self
                    .reads
                    .iter()
                    .position(|r| r.node == id && r.ctx == rs.request_ctx)
                else {
                    continue;
                };
                let read = self.reads.swap_remove(pos);
                if self.c.trace {
                    eprintln!(
                        "readstate {} on {id}: {}",
                        String::from_utf8_lossy(&rs.request_ctx),
                        rs.index
                    );
                }
                self.report.reads_confirmed += 1;
                if rs.index < read.min_index {
                    self.c.checker.fail(format!(
                        "stale read on node {id}: read index {} < {} committed when it was issued",
                        rs.index, read.min_index
                    ));
                }
            }
        }
    }

    fn random_step(&mut self) {
        let up = self.c.up_ids();
        let roll = self.rng.range(0, 1000);
        match roll {
            0..400 => self.deliver_random(),
            400..600 => {
                let ready: Vec<u64> = up
                    .iter()
                    .copied()
                    .filter(|&id| self.c.node(id).raw().has_ready())
                    .collect();
                if let Some(id) = self.pick(&ready) {
                    self.c.process_ready(id);
                }
            }
            600..800 => {
                let writing: Vec<u64> = up
                    .iter()
                    .copied()
                    .filter(|&id| self.c.node(id).has_pending_writes())
                    .collect();
                if let Some(id) = self.pick(&writing) {
                    self.c.persist(id);
                }
            }
            800..830 => self.tick(),
            830..910 => self.propose(),
            910..935 => self.read(),
            935..950 if self.storm => self.partition_or_heal(),
            950..958 if self.storm => self.crash_or_restart(),
            935..958 => {}
            958..980 => self.conf_change(),
            980..990 => self.transfer(),
            _ => {
                if let Some(id) = self.pick(&up) {
                    self.c.compact(id);
                }
            }
        }
    }

    fn next_period(&mut self, step: usize) {
        self.storm = !self.storm;
        self.period_ends = step + self.rng.range(200, 1500) as usize;
        if !self.storm {
            self.c.heal();
            for id in self.ids.clone() {
                if !self.c.node(id).is_up() {
                    self.c.restart(id);
                }
            }
        }
    }

    fn deliver_random(&mut self) {
        if self.c.network.is_empty() {
            return;
        }
        // Any in-flight message may go next: reordering and arbitrary delay.
        let i = self.rng.range(0, self.c.network.len() as u64) as usize;
        let f = self.c.network.swap_remove(i);
        let faulty = self.storm && f.to != f.from;
        if faulty && self.rng.chance(5) {
            self.c.lost(&f);
            return;
        }
        if faulty && self.rng.chance(5) {
            self.c.network.push(f.clone()); // duplicated
        }
        self.report.messages_delivered += 1;
        self.c.deliver(f);
    }

    fn tick(&mut self) {
        // One global clock: leases assume bounded drift. Without leases, nodes may drift.
        for id in self.c.up_ids() {
            if self.lease || !self.rng.chance(20) {
                self.c.tick(id);
            }
        }
        self.c.now += 1;
    }

    /// A random live node, most often the leader (where requests succeed).
    fn target(&mut self) -> Option<u64> {
        match self.leader() {
            Some(l) if self.rng.chance(70) => Some(l),
            _ => self.pick(&self.c.up_ids()),
        }
    }

    fn propose(&mut self) {
        let Some(id) = self.target() else { return };
        self.next_payload += 1;
        let data = format!("v{}", self.next_payload).into_bytes();
        let _ = self.c.raw_mut(id).propose(data, Vec::new());
    }

    fn read(&mut self) {
        let Some(id) = self.target() else { return };
        self.next_payload += 1;
        let ctx = format!("r{}", self.next_payload).into_bytes();
        if self.c.raw_mut(id).read_index(ctx.clone()).is_ok() {
            let min_index = self.c.checker.max_committed();
            if self.c.trace {
                let st = self.c.node(id).raw().status();
                eprintln!(
                    "read {} on {id} ({:?} term {} commit {}) min {min_index} lease {}",
                    String::from_utf8_lossy(&ctx),
                    st.soft_state,
                    st.hard_state.term,
                    st.hard_state.commit,
                    st.lease_valid
                );
            }
            self.reads.push(PendingRead {
                node: id,
                ctx,
                min_index,
            });
        }
    }

    fn partition_or_heal(&mut self) {
        if self.rng.chance(60) {
            self.c.heal();
            return;
        }
        let side: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .filter(|_| self.rng.chance(40))
            .collect();
        self.c.partition(&side);
    }

    fn crash_or_restart(&mut self) {
        let down: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .filter(|id| !self.c.node(*id).is_up())
            .collect();
        if !down.is_empty() && self.rng.chance(60) {
            let id = self.pick(&down).expect("non-empty");
            self.c.restart(id);
            return;
        }
        if let Some(id) = self.pick(&self.c.up_ids()) {
            self.report.crashes += 1;
            if self.c.trace {
                eprintln!("crash {id}");
            }
            self.c.crash(id);
            self.reads.retain(|r| r.node != id);
        }
    }

    /// The leader of the highest term (a stale leader may linger in a lower one).
    fn leader(&self) -> Option<u64> {
        self.c.leader()
    }

    fn conf_change(&mut self) {
        let Some(leader) = self.leader() else { return };
        let cs = self.c.node(leader).raw().status().conf_state;
        let voters = cs.voters.clone();
        let learners = cs.learners.clone();
        let members: Vec<u64> = voters.iter().chain(&learners).copied().collect();
        let spare: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .filter(|id| !members.contains(id))
            .collect();
        let single = |t: ConfChangeType, id: u64| ConfChangeSingle {
            change_type: t as i32,
            node_id: id,
        };
        let mut changes = Vec::new();
        match self.rng.range(0, 5) {
            0 => changes.extend(
                self.pick(&spare)
                    .map(|id| single(ConfChangeType::AddLearnerNode, id)),
            ),
            1 => changes.extend(
                self.pick(&learners)
                    .map(|id| single(ConfChangeType::AddNode, id)),
            ),
            2 if voters.len() > 3 => changes.extend(
                self.pick(&voters)
                    .map(|id| single(ConfChangeType::RemoveNode, id)),
            ),
            3 => {
                // Replace a voter: two voter changes need joint consensus.
                if let (Some(out), Some(inn)) = (self.pick(&voters), self.pick(&spare)) {
                    changes.push(single(ConfChangeType::RemoveNode, out));
                    changes.push(single(ConfChangeType::AddNode, inn));
                }
            }
            _ => changes.extend(
                self.pick(&voters)
                    .filter(|_| voters.len() > 3)
                    .map(|id| single(ConfChangeType::AddLearnerNode, id)),
            ),
        }
        let explicit_leave =
            cs.voters_outgoing.is_empty() && !cs.auto_leave && !cs.learners_next.is_empty();
        let cc = if !cs.voters_outgoing.is_empty() && !cs.auto_leave || explicit_leave {
            ConfChangeV2::default() // leave an explicit joint state
        } else if changes.is_empty() {
            return;
        } else {
            let transition = [
                ConfChangeTransition::Auto,
                ConfChangeTransition::Implicit,
                ConfChangeTransition::Explicit,
            ][self.rng.range(0, 3) as usize];
            ConfChangeV2 {
                transition: transition as i32,
                changes,
                context: Vec::new(),
            }
        };
        debug_assert!(cc.encoded_len() < 1024);
        if self.c.raw_mut(leader).propose_conf_change(cc).is_ok() {
            self.report.conf_changes += 1;
        }
    }

    fn transfer(&mut self) {
        let Some(leader) = self.leader() else { return };
        let voters = self.c.node(leader).raw().status().conf_state.voters;
        if let Some(to) = self.pick(&voters)
            && self.c.raw_mut(leader).transfer_leader(to).is_ok()
        {
            self.report.transfers += 1;
            if self.c.trace {
                eprintln!("transfer {leader} -> {to}");
            }
        }
    }

    /// Heals everything, restarts crashed nodes and runs reliably: a leader must emerge and
    /// a new proposal must be applied by every member of the final configuration.
    fn heal_and_converge(&mut self, steps: usize) -> Result<(), SimFailure> {
        self.c.heal();
        for id in self.ids.clone() {
            if !self.c.node(id).is_up() {
                self.c.restart(id);
            }
        }
        let marker = b"converged".to_vec();
        // The term in which the marker was last proposed; a new leader proposes it again
        // (the earlier proposal may have been lost with the old leader's uncommitted tail).
        let mut proposed_in: Option<u64> = None;
        for round in 0..2_000 {
            self.c.stabilize();
            self.verify(steps + round)?;
            if let Some(leader) = self.leader() {
                let term = self.c.node(leader).raw().raft().term;
                if proposed_in != Some(term)
                    && self
                        .c
                        .raw_mut(leader)
                        .propose(marker.clone(), Vec::new())
                        .is_ok()
                {
                    proposed_in = Some(term);
                    continue;
                }
                let cs = self.c.node(leader).raw().status().conf_state;
                let members: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
                let done = members.iter().all(|id| {
                    self.c
                        .node(*id)
                        .sm
                        .applied
                        .iter()
                        .any(|(_, _, d)| *d == marker)
                });
                if done {
                    self.c.check_log_matching();
                    self.report.leaders_elected = self.c.checker.leader_count();
                    return self.verify(steps + round);
                }
            }
            self.tick();
        }
        let what = format!("no progress after healing:\n{}", self.describe());
        Err(SimFailure {
            seed: self.report.seed,
            step: steps,
            what,
        })
    }

    /// One line per node, for failure reports.
    fn describe(&self) -> String {
        let mut out = String::new();
        for n in self.c.nodes.values() {
            let Some(raw) = n.raw.as_ref() else { continue };
            let st = raw.status();
            out += &format!(
                "  node {}: {:?} term {} vote {} leader {} commit {} applied {} last {} persisted {} conf {:?}/{:?} out {:?} auto {} pending_conf {}\n",
                st.id,
                st.soft_state.role,
                st.hard_state.term,
                st.hard_state.vote,
                st.soft_state.leader_id,
                st.hard_state.commit,
                st.applied,
                st.last_index,
                st.persisted_index,
                st.conf_state.voters,
                st.conf_state.learners,
                st.conf_state.voters_outgoing,
                st.conf_state.auto_leave,
                raw.raft().pending_conf_index(),
            );
            out += &format!(
                "    transferee {:?} uncommitted {} quiescent {} applying {} sm {}\n",
                st.lead_transferee,
                st.uncommitted_bytes,
                st.quiescent,
                raw.raft().log.applying,
                n.sm.applied_index
            );
            for (id, pr) in &st.progress {
                out += &format!("    progress {id}: {pr:?}\n");
            }
        }
        out
    }
}
