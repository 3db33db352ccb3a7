//! `flotilla bench`: load against a cluster (`--endpoints`) or a playground started in
//! this process (`--embedded`), a progress bar while it runs, then throughput and latency
//! percentiles (or `--json`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use flotilla::client::bench::{self, BenchOptions, BenchReport, KeyDistribution, Latency, Mix};
use flotilla::client::{Client, ClientConfig};
use flotilla::server::playground::Playground;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, ValueEnum)]
enum Distribution {
    Uniform,
    Zipfian,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The cluster's stores, `host:port`, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "embedded")]
    endpoints: Vec<String>,
    /// Start a playground in this process and load it.
    #[arg(long, conflicts_with = "endpoints")]
    embedded: bool,
    /// The embedded playground's layout.
    #[command(flatten)]
    playground: crate::PlaygroundArgs,
    /// Concurrent clients, one operation in flight each.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes of each value written.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// Shares of each operation in percent: reads, writes, cas.
    #[arg(long, default_value = "reads=50,writes=50")]
    mix: String,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: Distribution,
    /// The zipfian skew.
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// The seed of the clients' choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let mix = Mix::parse(&args.mix)?;
    if !(0.0..1.0).contains(&args.zipf_theta) || args.zipf_theta == 0.0 {
        return Err(format!("--zipf-theta {} is not in (0, 1)", args.zipf_theta));
    }
    if args.clients == 0 || args.duration == 0 || args.keys == 0 {
        return Err("--clients, --duration and --keys must be at least 1".into());
    }
    let playground = if args.embedded {
        Some(Playground::start(args.playground.options()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let endpoints = match &playground {
        Some(p) => p.endpoints(),
        None => args.endpoints.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let options = BenchOptions {
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        keys: args.keys,
        value_bytes: args.value_size,
        mix,
        distribution: match args.distribution {
            Distribution::Uniform => KeyDistribution::Uniform,
            Distribution::Zipfian => KeyDistribution::Zipfian(args.zipf_theta),
        },
        seed: args.seed,
    };
    let report = runtime.block_on(async {
        let client = Client::connect(ClientConfig::new(endpoints))
            .await
            .map_err(|e| e.to_string())?;
        let done = Arc::new(AtomicU64::new(0));
        let progress = (!args.json).then(|| progress_bar(options.duration));
        let load = tokio::spawn(bench::run(client, options.clone(), done.clone()));
        let started = Instant::now();
        while !load.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(bar) = &progress {
                let elapsed = started.elapsed();
                let ops = done.load(Ordering::Relaxed);
                bar.set_position(elapsed.as_millis().min(u128::from(u64::MAX)) as u64);
                bar.set_message(format!(
                    "{ops} ops, {:.0} ops/s",
                    ops as f64 / elapsed.as_secs_f64().max(0.001)
                ));
            }
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        load.await.map_err(|e| format!("the load task failed: {e}"))
    })?;
    if let Some(p) = playground {
        p.shutdown();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_report(&report, &args);
    }
    Ok(())
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis().min(u128::from(u64::MAX)) as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_report(r: &BenchReport, args: &BenchArgs) {
    println!(
        "{} clients, {:.1}s, {} keys ({}), {}-byte values, mix {}",
        r.clients,
        r.seconds,
        args.keys,
        match args.distribution {
            Distribution::Uniform => "uniform".to_string(),
            Distribution::Zipfian => format!("zipfian {}", args.zipf_theta),
        },
        args.value_size,
        args.mix
    );
    println!(
        "{} ops, {:.0} ops/s, {} errors{}",
        r.ops,
        r.ops_per_sec,
        r.errors,
        r.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header([
        "op", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
    ]);
    let rows: [(&str, &Latency); 4] = [
        ("all", &r.all),
        ("get", &r.reads),
        ("put", &r.writes),
        ("cas", &r.cas),
    ];
    for (name, l) in rows {
        if l.count == 0 {
            continue;
        }
        t.add_row([
            name.to_string(),
            l.count.to_string(),
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
        ]);
    }
    println!("{t}");
    if r.cas.count > 0 {
        println!("{} compare-and-swaps found another value", r.cas_mismatches);
    }
}
