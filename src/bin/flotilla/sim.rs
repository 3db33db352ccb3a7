//! `flotilla sim-cluster`: the deterministic simulation of whole stores over many seeds,
//! with a summary of what the runs did.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use flotilla::testkit::store_sim::{DEFAULT_STEPS, SimOptions, SimTotals, run};

/// What `sim-cluster` runs.
#[derive(Args)]
pub struct SimClusterArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Random steps per seed before the faults heal.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Stores (3–5) instead of each seed's choice.
    #[arg(long)]
    stores: Option<usize>,
    /// Regions at the start (1–1,000) instead of each seed's choice.
    #[arg(long)]
    regions: Option<usize>,
    /// Print every step of every run.
    #[arg(long)]
    trace: bool,
}

pub fn run_seeds(args: SimClusterArgs) -> ExitCode {
    let started = Instant::now();
    let mut totals = SimTotals::default();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let options = SimOptions {
            seed,
            steps: args.steps,
            stores: args.stores,
            regions: args.regions,
            trace: args.trace,
        };
        match run(&options) {
            Ok(report) => totals.add(&report),
            Err(failure) => {
                eprintln!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    let clients = &totals.clients;
    let reasons: Vec<String> = clients
        .refusals
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!(
        "flotilla store simulator: {} seeds ({}..{}), {} random steps each",
        args.seeds,
        args.first_seed,
        args.first_seed.saturating_add(args.seeds),
        args.steps
    );
    println!("  operations acknowledged  {}", clients.acknowledged);
    println!(
        "  refused (not executed)   {} ({})",
        clients.refused,
        reasons.join(", ")
    );
    println!("  unknown outcome          {}", clients.unknown);
    let t = &totals;
    println!(
        "  history checked          {} operations, all linearizable",
        t.checked_operations
    );
    println!("  network faults           {}", t.faults);
    println!("  pauses                   {}", t.pauses);
    println!("  crashes                  {}", t.crashes);
    println!("  splits                   {}", t.splits);
    println!("  membership changes       {}", t.conf_changes);
    println!("  leader transfers         {}", t.transfers);
    println!("  apply steps with work    {}", t.apply_steps);
    println!(
        "  leader terms seen        {}, one leader each",
        t.leader_terms
    );
    println!(
        "  apply events compared    {}, identical across replicas",
        t.applied_events
    );
    println!("  took {:.2}s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
