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

/// The mix, once every argument is known to be usable.
fn check(args: &BenchArgs) -> Result<Mix, String> {
    let mix = Mix::parse(&args.mix)?;
    if !(0.0..1.0).contains(&args.zipf_theta) || args.zipf_theta == 0.0 {
        return Err(format!("--zipf-theta {} is not in (0, 1)", args.zipf_theta));
    }
    if args.clients == 0 || args.duration == 0 || args.keys == 0 {
        return Err("--clients, --duration and --keys must be at least 1".into());
    }
    Ok(mix)
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let mix = check(&args)?;
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
        print!("{}", report_text(&report, &args));
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

fn report_text(r: &BenchReport, args: &BenchArgs) -> String {
    let mut out = format!(
        "{} clients, {:.1}s, {} keys ({}), {}-byte values, mix {}\n",
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
    out += &format!(
        "{} ops, {:.0} ops/s, {} errors{}\n",
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
    out += &format!("{t}\n");
    if r.cas.count > 0 {
        out += &format!(
            "{} compare-and-swaps found another value\n",
            r.cas_mismatches
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn args(line: &[&str]) -> BenchArgs {
        let mut full = vec!["bench"];
        full.extend_from_slice(line);
        Line::try_parse_from(full).unwrap().args
    }

    #[test]
    fn unusable_arguments_are_refused_before_anything_starts() {
        for bad in [
            &["--embedded", "--zipf-theta", "1.5"][..],
            &["--embedded", "--zipf-theta", "0"],
            &["--embedded", "--zipf-theta", "1"],
            &["--embedded", "--clients", "0"],
            &["--embedded", "--duration", "0"],
            &["--embedded", "--keys", "0"],
            &["--embedded", "--mix", "reads=60"],
        ] {
            assert!(check(&args(bad)).is_err(), "{bad:?}");
        }
        let good = args(&["--embedded", "--zipf-theta", "0.5", "--mix", "cas=100"]);
        assert_eq!(check(&good).unwrap().cas, 100);
    }

    #[test]
    fn the_report_has_a_row_per_kind_that_ran_and_milliseconds_to_two_places() {
        assert_eq!(ms(1_500), "1.50");
        assert_eq!(ms(7), "0.01");
        let latency = |count, p50_us| Latency {
            count,
            p50_us,
            max_us: 9_999,
            ..Latency::default()
        };
        let report = BenchReport {
            clients: 4,
            seconds: 2.0,
            ops: 30,
            ops_per_sec: 15.0,
            errors: 2,
            first_error: Some("boom".into()),
            cas_mismatches: 3,
            all: latency(30, 2_000),
            reads: latency(20, 1_000),
            writes: latency(0, 0),
            cas: latency(10, 4_250),
        };
        let line = args(&["--embedded", "--keys", "7", "--mix", "reads=60,cas=40"]);
        let text = report_text(&report, &line);
        assert!(
            text.starts_with(
                "4 clients, 2.0s, 7 keys (uniform), 128-byte values, mix reads=60,cas=40\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("30 ops, 15 ops/s, 2 errors (first: boom)"),
            "{text}"
        );
        let row = |op: &str| text.lines().find(|l| l.contains(&format!(" {op} ")));
        assert!(row("all").unwrap().contains("2.00"), "{text}");
        assert!(row("get").unwrap().contains("1.00"), "{text}");
        assert!(row("cas").unwrap().contains("4.25"), "{text}");
        assert!(row("put").is_none(), "{text}");
        assert!(
            text.contains("3 compare-and-swaps found another value"),
            "{text}"
        );
        let no_cas = BenchReport {
            cas: latency(0, 0),
            ..report
        };
        assert!(!report_text(&no_cas, &line).contains("compare-and-swaps"));
    }
}
