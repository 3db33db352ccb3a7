//! The flotilla command line: `server` runs one store, `playground` a whole cluster in
//! one process, `ctl` talks to a cluster, `bench` loads one, `sim` runs the Raft core's
//! randomized simulator, `sim-cluster` the deterministic simulation of whole stores.

mod bench;
mod ctl;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use flotilla::server::playground::{Playground, PlaygroundOptions};
use flotilla::server::{Node, ServerConfig};
use flotilla::testkit::raft_sim::{SimOptions, run};

// A store's allocations run on mimalloc (src/allocator.rs says why and how it is set).
#[cfg(feature = "mimalloc")]
flotilla::use_mimalloc!();

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A Multi-Raft sharded storage engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one store: its gRPC KV, admin and transport services and its status HTTP
    /// server (/metrics, /status, /health), until SIGTERM or Ctrl-C.
    Server(ServerArgs),
    /// Run a whole cluster in this process on 127.0.0.1 — its key space split into regions
    /// — and print how to reach it; serve until Ctrl-C.
    Playground {
        #[command(flatten)]
        layout: PlaygroundArgs,
        /// The log filter.
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// Talk to a cluster: keys, regions, stores.
    Ctl(ctl::CtlArgs),
    /// Load a cluster (or a playground in this process) and report throughput and
    /// latency percentiles.
    Bench(bench::BenchArgs),
    /// Run the randomized simulator of one Raft group over many seeds, checking safety
    /// invariants after every step.
    Sim {
        /// How many seeds to run.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Random actions per seed before the healing phase.
        #[arg(long, default_value_t = 10_000)]
        steps: usize,
    },
    /// Run the deterministic simulation of whole stores (every poller, writer and message
    /// under one seeded scheduler, with faults and crashes) over many seeds, checking the
    /// client history for linearizability and the runtime's invariants.
    SimCluster(sim::SimClusterArgs),
}

/// How a playground is laid out (`flotilla playground`, `flotilla bench --embedded`).
#[derive(Args)]
struct PlaygroundArgs {
    /// Stores in the cluster.
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Regions the key space is split into at start.
    #[arg(long, default_value_t = 16)]
    regions: usize,
    /// Keep the data here (`store-<id>` each) instead of a temporary directory, so a
    /// later playground resumes it.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl PlaygroundArgs {
    fn options(&self) -> PlaygroundOptions {
        PlaygroundOptions {
            stores: self.stores,
            regions: self.regions,
            data_dir: self.data_dir.clone(),
            ..PlaygroundOptions::default()
        }
    }
}

/// `flotilla server`: the configuration file, then these flags over it.
#[derive(Args)]
struct ServerArgs {
    /// A TOML configuration file (every field optional; see the README's reference).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the configuration in effect as TOML, defaults included, and exit.
    #[arg(long)]
    print_config: bool,
    #[arg(long)]
    cluster_id: Option<u64>,
    #[arg(long)]
    store_id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The gRPC address to listen on (IP:port).
    #[arg(long)]
    listen_addr: Option<String>,
    /// The address peers and clients are told to use (host:port).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The status HTTP address (IP:port).
    #[arg(long)]
    status_addr: Option<String>,
    /// The stores starting the cluster: `1=host:port,2=host:port,3=host:port`.
    #[arg(long)]
    initial_stores: Option<String>,
    #[arg(long)]
    log_level: Option<String>,
}

impl ServerArgs {
    fn config(self) -> Result<ServerConfig, flotilla::server::ConfigError> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    c.$field = v;
                }
            )*};
        }
        set!(
            cluster_id,
            store_id,
            data_dir,
            listen_addr,
            advertise_addr,
            status_addr,
            initial_stores,
            log_level
        );
        Ok(c)
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Server(args) => serve(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Playground { layout, log_level } => playground(layout, &log_level),
        Command::Sim {
            seeds,
            first_seed,
            steps,
        } => simulate(seeds, first_seed, steps),
        Command::SimCluster(args) => sim::run_seeds(args),
    }
}

/// A process that runs stores gives freed memory back while they sleep
/// (`flotilla::allocator::spawn_purger`).
fn start_allocator_purger() {
    #[cfg(feature = "mimalloc")]
    if let Err(e) = flotilla::allocator::spawn_purger(std::time::Duration::from_secs(1)) {
        eprintln!("flotilla: no allocator purge thread ({e}): freed memory returns later");
    }
}

fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// SIGTERM and SIGINT (Ctrl-C), watched from the moment `watch` returns: the first is
/// waited for with `wait`, a second exits the process at once.
struct Signals {
    received: std::sync::mpsc::Receiver<()>,
}

impl Signals {
    /// Installs the handlers (on a thread of their own) and returns once they are in
    /// place, so a signal sent after this is never the default action's.
    fn watch() -> Signals {
        let (tx, received) = std::sync::mpsc::channel();
        let (armed_tx, armed) = std::sync::mpsc::channel();
        let watcher = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("cannot watch for signals: {e}");
                        return;
                    }
                };
                runtime.block_on(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        eprintln!("cannot watch for signals");
                        return;
                    };
                    let _ = armed_tx.send(());
                    for n in 0.. {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                        if n > 0 {
                            eprintln!("second signal: exiting now");
                            std::process::exit(130);
                        }
                        let _ = tx.send(());
                    }
                });
            });
        if watcher.is_err() || armed.recv().is_err() {
            eprintln!("cannot watch for signals: Ctrl-C stops at once");
        }
        Signals { received }
    }

    /// Blocks until the first signal.
    fn wait(&self) {
        if self.received.recv().is_err() {
            eprintln!("the signal watcher is gone: stopping");
        }
    }
}

fn serve(args: ServerArgs) -> ExitCode {
    let print = args.print_config;
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla server: {e}");
            return ExitCode::from(2);
        }
    };
    if print {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let config = match config.check() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config.config().log_level);
    start_allocator_purger();
    let signals = Signals::watch();
    let node = match Node::start(config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("flotilla server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "flotilla store {} serving gRPC on {}, status on http://{}",
        node.store().id(),
        node.grpc_addr(),
        node.status_addr()
    );
    signals.wait();
    eprintln!("shutting down (a second signal exits at once)");
    node.shutdown();
    ExitCode::SUCCESS
}

fn playground(layout: PlaygroundArgs, log_level: &str) -> ExitCode {
    init_logs(log_level);
    start_allocator_purger();
    let signals = Signals::watch();
    let started = Instant::now();
    let (stores, regions) = (layout.stores, layout.regions);
    let playground = match Playground::start(layout.options()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flotilla playground: {e}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints = playground.endpoints();
    println!(
        "flotilla playground: {stores} stores, {regions} regions, up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("  data       {}", playground.data_dir().display());
    for node in playground.nodes() {
        println!(
            "  store {}    gRPC {}   status http://{}/status   metrics http://{}/metrics",
            node.store().id(),
            node.grpc_addr(),
            node.status_addr(),
            node.status_addr()
        );
    }
    println!("  (metrics are the process's: each store's URL shows the three stores' together)");
    let first = &endpoints[0];
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "flotilla".into());
    let ctl = format!("{me} ctl --endpoints {}", endpoints.join(","));
    println!();
    println!("try:");
    for example in [
        "put hello world",
        "get hello",
        "scan --limit 10",
        "cas hello --expect world --new there",
        "region list",
        "store list",
        "--json region show 1",
    ] {
        println!("  {ctl} {example}");
    }
    println!("grpcurl finds the services by reflection (keys and values base64 in JSON):");
    println!("  grpcurl -plaintext {first} list");
    println!("  grpcurl -plaintext -d '{{\"key\":\"aGVsbG8=\"}}' {first} kvpb.Kv/Route");
    println!(
        "  curl http://{}/status",
        playground
            .nodes()
            .next()
            .map_or_else(String::new, |n| n.status_addr().to_string())
    );
    println!();
    println!("serving until Ctrl-C");
    signals.wait();
    eprintln!("shutting down (a second signal exits at once)");
    playground.shutdown();
    ExitCode::SUCCESS
}

fn simulate(seeds: u64, first_seed: u64, steps: usize) -> ExitCode {
    let started = Instant::now();
    let mut totals = [0u64; 6];
    for seed in first_seed..first_seed.saturating_add(seeds) {
        match run(&SimOptions { seed, steps }) {
            Ok(r) => {
                let row = [
                    r.committed,
                    r.leaders_elected as u64,
                    r.crashes,
                    r.conf_changes,
                    r.transfers,
                    r.reads_confirmed,
                ];
                for (t, v) in totals.iter_mut().zip(row) {
                    *t += v;
                }
            }
            Err(f) => {
                eprintln!("{f}");
                eprintln!(
                    "replay with: flotilla sim --seeds 1 --first-seed {} --steps {steps}",
                    f.seed
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let [committed, leaders, crashes, conf_changes, transfers, reads] = totals;
    println!(
        "flotilla raft simulator: {seeds} seeds ({first_seed}..{}), {steps} steps each",
        first_seed + seeds
    );
    println!("  entries committed      {committed}");
    println!("  leaders elected        {leaders}");
    println!("  crash-restarts         {crashes}");
    println!("  membership changes     {conf_changes}");
    println!("  leader transfers       {transfers}");
    println!("  reads confirmed        {reads}");
    println!("  invariants: election safety, committed entries never change, log matching,");
    println!(
        "              leader completeness, identical applied sequences, no stale reads — all held"
    );
    println!("  took {:.2}s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_playground_flags_lay_out_the_playground() {
        let line = [
            "flotilla",
            "playground",
            "--stores",
            "1",
            "--regions",
            "2",
            "--data-dir",
            "/x",
        ];
        let Command::Playground { layout, log_level } = Cli::try_parse_from(line).unwrap().command
        else {
            panic!("not the playground command");
        };
        let options = layout.options();
        assert_eq!((options.stores, options.regions), (1, 2));
        assert_eq!(options.data_dir, Some(PathBuf::from("/x")));
        assert_eq!(log_level, "warn");
    }
}
