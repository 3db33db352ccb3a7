//! `flotilla sim-cluster`: the deterministic simulation of whole stores over many seeds,
//! with a summary of what the runs did.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use flotilla::testkit::store_sim::{ClientCounts, DEFAULT_STEPS, SimOptions, run};

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
    let mut t = [0u64; 9];
    let mut clients = ClientCounts::default();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let options = SimOptions {
            seed,
            steps: args.steps,
            stores: args.stores,
            regions: args.regions,
            trace: args.trace,
        };
        match run(&options) {
            Ok(r) => {
                clients.add(&r.clients);
                let row = [
                    r.checked_operations as u64,
                    r.faults,
                    r.pauses,
                    r.crashes,
                    r.splits,
                    r.conf_changes,
                    r.transfers,
                    r.leader_terms,
                    r.applied_events,
                ];
                for (total, v) in t.iter_mut().zip(row) {
                    *total += v;
                }
            }
            Err(failure) => {
                eprintln!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    let [
        checked,
        faults,
        pauses,
        crashes,
        splits,
        changes,
        transfers,
        terms,
        applied,
    ] = t;
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
    println!("  history checked          {checked} operations, all linearizable");
    println!("  network faults           {faults}");
    println!("  pauses                   {pauses}");
    println!("  crashes                  {crashes}");
    println!("  splits                   {splits}");
    println!("  membership changes       {changes}");
    println!("  leader transfers         {transfers}");
    println!("  leader terms seen        {terms}, one leader each");
    println!("  apply events compared    {applied}, identical across replicas");
    println!("  took {:.2}s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
