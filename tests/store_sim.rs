//! The deterministic simulation of whole stores (src/testkit/store_sim) over many seeds.
//! CI runs `DEFAULT_SEEDS`; `FLOTILLA_CLUSTER_SIM_SEEDS=N` runs N seeds (from
//! `FLOTILLA_CLUSTER_SIM_FIRST_SEED`, default 0), `FLOTILLA_CLUSTER_SIM_STEPS` changes the
//! steps per seed; `FLOTILLA_CLUSTER_SIM_SEED=S` replays one seed (with
//! `FLOTILLA_CLUSTER_SIM_STORES` / `_REGIONS` if the failure names them), and
//! `FLOTILLA_CLUSTER_SIM_TRACE=1` prints its every step.

use flotilla::testkit::store_sim::{DEFAULT_STEPS, SimOptions, SimReport, run};

const DEFAULT_SEEDS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn steps() -> usize {
    env_u64("FLOTILLA_CLUSTER_SIM_STEPS").map_or(DEFAULT_STEPS, |s| s as usize)
}

fn must_run(options: &SimOptions) -> SimReport {
    run(options).unwrap_or_else(|failure| panic!("{failure}"))
}

#[test]
fn simulate_many_seeds() {
    let count = env_u64("FLOTILLA_CLUSTER_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("FLOTILLA_CLUSTER_SIM_FIRST_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let mut total = Totals::default();
    for seed in first..first + count {
        let report = must_run(&SimOptions {
            steps: steps(),
            ..SimOptions::new(seed)
        });
        total.add(&report);
    }
    println!(
        "{count} seeds in {:.1} s: {total:?}",
        started.elapsed().as_secs_f64()
    );
    // The runs must have exercised the stores, not idled.
    assert!(
        total.acknowledged > count * 10,
        "too little done: {total:?}"
    );
    assert!(total.unknown > 0 && total.refused > 0, "{total:?}");
    assert!(
        total.crashes > 0 && total.pauses > 0 && total.faults > 0,
        "{total:?}"
    );
    assert!(
        total.splits > 0 && total.conf_changes > 0 && total.transfers > 0,
        "{total:?}"
    );
}

#[derive(Debug, Default)]
struct Totals {
    acknowledged: u64,
    refused: u64,
    unknown: u64,
    checked: u64,
    crashes: u64,
    pauses: u64,
    faults: u64,
    splits: u64,
    conf_changes: u64,
    transfers: u64,
}

impl Totals {
    fn add(&mut self, r: &SimReport) {
        self.acknowledged += r.clients.acknowledged;
        self.refused += r.clients.refused;
        self.unknown += r.clients.unknown;
        self.checked += r.checked_operations as u64;
        self.crashes += r.crashes;
        self.pauses += r.pauses;
        self.faults += r.faults;
        self.splits += r.splits;
        self.conf_changes += r.conf_changes;
        self.transfers += r.transfers;
    }
}

#[test]
fn replay_one_seed() {
    // Without the variable, replays a fixed seed so the test always checks something.
    let seed = env_u64("FLOTILLA_CLUSTER_SIM_SEED").unwrap_or(7);
    let report = must_run(&SimOptions {
        steps: steps(),
        stores: env_u64("FLOTILLA_CLUSTER_SIM_STORES").map(|s| s as usize),
        regions: env_u64("FLOTILLA_CLUSTER_SIM_REGIONS").map(|r| r as usize),
        trace: std::env::var("FLOTILLA_CLUSTER_SIM_TRACE").is_ok_and(|v| v == "1"),
        ..SimOptions::new(seed)
    });
    println!("{report:#?}");
    assert!(report.checked_operations > 0);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 11] {
        let options = SimOptions {
            steps: 1_500,
            ..SimOptions::new(seed)
        };
        let (a, b) = (must_run(&options), must_run(&options));
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
    let other = must_run(&SimOptions {
        steps: 1_500,
        ..SimOptions::new(12)
    });
    let eleven = must_run(&SimOptions {
        steps: 1_500,
        ..SimOptions::new(11)
    });
    assert_ne!(other.fingerprint, eleven.fingerprint, "seeds must differ");
}

#[test]
fn a_thousand_regions_on_five_stores() {
    let report = must_run(&SimOptions {
        steps: 1_500,
        stores: Some(5),
        regions: Some(1_000),
        ..SimOptions::new(1)
    });
    assert!(report.regions_at_end >= 1_000, "{report:?}");
}

/// Seeds that found bugs, each a test named after what it broke. A seed replays its run
/// only while the simulator schedules as it did when it found the bug; the scenario tests
/// in tests/store_regressions.rs are the lasting ones.
mod found {
    use super::*;

    fn replays(seed: u64) {
        must_run(&SimOptions::new(seed));
    }

    /// A split applied where the new region's empty peer (created by its leader's message)
    /// already ran stopped the store.
    #[test]
    fn split_beside_the_new_regions_empty_peer() {
        replays(83);
    }

    /// A replica born from a snapshot taken before it joined applied a split whose new
    /// region had no peer on its store, and stopped the store.
    #[test]
    fn snapshot_from_before_the_peer_joined() {
        replays(105);
    }

    /// Two snapshots accepted before either installed gave a store overlapping regions.
    #[test]
    fn overlapping_snapshots_accepted_together() {
        replays(241);
    }

    /// A crash between a snapshot install and the log reset after it left a log ending
    /// before the applied state; the first append after restart stopped the store.
    #[test]
    fn log_behind_an_installed_snapshot() {
        replays(294);
    }

    /// A split recreating a region whose earlier empty peer had recorded a vote started it
    /// on that empty log; the first append stopped the store.
    #[test]
    fn split_over_an_empty_peers_recorded_vote() {
        replays(1790);
    }
}
