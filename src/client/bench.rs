//! A load generator over the client: concurrent clients run a mix of reads, writes and
//! compare-and-swaps on a key space (uniform or zipfian) for a while, and the latency of
//! every operation is recorded (hdrhistogram). What `flotilla bench` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{CasOutcome, Client, ClientError};
use crate::raft::rng::Rng;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// A few keys hot (YCSB's zipfian, this skew; 0.99 is YCSB's default).
    Zipfian(f64),
}

/// The share of each operation, in percent (they add up to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Gets.
    pub reads: u32,
    /// Puts.
    pub writes: u32,
    /// Compare-and-swaps (expecting the value this client last wrote to the key).
    pub cas: u32,
}

impl Mix {
    /// Parses `reads=50,writes=45,cas=5` (left-out kinds are 0; the shares must add up
    /// to 100).
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut mix = Mix {
            reads: 0,
            writes: 0,
            cas: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, share) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not kind=percent"))?;
            let share: u32 = share
                .trim()
                .parse()
                .map_err(|_| format!("`{share}` is not a percentage"))?;
            match kind.trim() {
                "reads" => mix.reads = share,
                "writes" => mix.writes = share,
                "cas" => mix.cas = share,
                other => return Err(format!("unknown operation `{other}` (reads, writes, cas)")),
            }
        }
        if mix.reads + mix.writes + mix.cas != 100 {
            return Err(format!(
                "the shares add up to {}, not 100",
                mix.reads + mix.writes + mix.cas
            ));
        }
        Ok(mix)
    }

    /// The kind of operation a roll in 0..100 draws: reads take the first `reads`
    /// values, writes the next `writes`, compare-and-swaps the rest.
    fn kind(&self, roll: u32) -> Kind {
        if roll < self.reads {
            Kind::Read
        } else if roll < self.reads + self.writes {
            Kind::Write
        } else {
            Kind::Cas
        }
    }
}

/// What a bench run does.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent clients (each one operation at a time).
    pub clients: usize,
    /// How long it runs.
    pub duration: Duration,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes of each value written.
    pub value_bytes: usize,
    /// The operations' shares.
    pub mix: Mix,
    /// How keys are drawn.
    pub distribution: KeyDistribution,
    /// The seed of every client's choices (client i uses seed + i).
    pub seed: u64,
}

/// Latencies of one kind of operation, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Operations that succeeded.
    pub count: u64,
    /// Percentiles and the maximum.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// The slowest.
    pub max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Clients.
    pub clients: usize,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Operations that succeeded.
    pub ops: u64,
    /// Succeeded operations per second.
    pub ops_per_sec: f64,
    /// Operations that failed (each counted once, whatever the error).
    pub errors: u64,
    /// The first error seen, for a clue.
    pub first_error: Option<String>,
    /// Compare-and-swaps whose expectation failed (another client wrote the key).
    pub cas_mismatches: u64,
    /// Every operation.
    pub all: Latency,
    /// Gets.
    pub reads: Latency,
    /// Puts.
    pub writes: Latency,
    /// Compare-and-swaps.
    pub cas: Latency,
}

/// Draws key indexes.
struct KeyChooser {
    keys: u64,
    zipf: Option<Zipf>,
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): index 0 is the hottest.
struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let nf = n as f64;
        Zipf {
            n: nf,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    fn next(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let index = self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (index as u64).min(self.n as u64 - 1)
    }
}

impl KeyChooser {
    fn new(keys: u64, distribution: KeyDistribution) -> KeyChooser {
        let keys = keys.max(1);
        KeyChooser {
            keys,
            zipf: match distribution {
                KeyDistribution::Uniform => None,
                KeyDistribution::Zipfian(theta) => Some(Zipf::new(keys, theta)),
            },
        }
    }

    fn next(&self, rng: &mut Rng) -> u64 {
        match &self.zipf {
            None => rng.range(0, self.keys),
            Some(z) => z.next((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64),
        }
    }
}

/// The key of index `i`: its scrambled index in hex, so hot keys and key ranges spread over
/// regions split at hex keys (as the playground's are).
pub fn bench_key(i: u64) -> Bytes {
    // SplitMix64's first output for seed `i`: a bijection, so keys stay distinct.
    Bytes::from(format!("{:016x}", Rng::new(i).next_u64()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Cas,
}

struct ClientResult {
    all: Histogram<u64>,
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    cas: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    cas_mismatches: u64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds up to an hour, 3 significant figures: a fixed, small allocation.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds")
}

/// Runs the load; `done` counts finished operations as they happen (for a progress bar).
pub async fn run(client: Client, options: BenchOptions, done: Arc<AtomicU64>) -> BenchReport {
    let chooser = Arc::new(KeyChooser::new(options.keys, options.distribution));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..options.clients.max(1) {
        let (client, chooser, done, options) = (
            client.clone(),
            chooser.clone(),
            done.clone(),
            options.clone(),
        );
        tasks.spawn(async move {
            one_client(
                client,
                &options,
                &chooser,
                client_seed(options.seed, i as u64),
                deadline,
                &done,
            )
            .await
        });
    }
    let mut all = histogram();
    let (mut reads, mut writes, mut cas) = (histogram(), histogram(), histogram());
    let (mut errors, mut cas_mismatches, mut first_error) = (0, 0, None);
    while let Some(result) = tasks.join_next().await {
        // A client task that panicked is a bug in the bench: it ends the run loudly
        // rather than counting as one failed operation (no task is ever cancelled).
        let r = result.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        // The histograms share bounds, so adding never fails.
        let _ = all.add(&r.all);
        let _ = reads.add(&r.reads);
        let _ = writes.add(&r.writes);
        let _ = cas.add(&r.cas);
        errors += r.errors;
        cas_mismatches += r.cas_mismatches;
        first_error = first_error.or(r.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    BenchReport {
        clients: options.clients,
        seconds,
        ops: all.len(),
        ops_per_sec: all.len() as f64 / seconds.max(f64::EPSILON),
        errors,
        first_error,
        cas_mismatches,
        all: Latency::of(&all),
        reads: Latency::of(&reads),
        writes: Latency::of(&writes),
        cas: Latency::of(&cas),
    }
}

/// Client `client`'s seed: every client draws its own sequence, and a run repeats with
/// its seed.
fn client_seed(seed: u64, client: u64) -> u64 {
    seed.wrapping_add(client)
}

async fn one_client(
    client: Client,
    options: &BenchOptions,
    chooser: &KeyChooser,
    seed: u64,
    deadline: Instant,
    done: &AtomicU64,
) -> ClientResult {
    let mut rng = Rng::new(seed);
    let value = Bytes::from(vec![b'v'; options.value_bytes]);
    let mut r = ClientResult {
        all: histogram(),
        reads: histogram(),
        writes: histogram(),
        cas: histogram(),
        errors: 0,
        first_error: None,
        cas_mismatches: 0,
    };
    while Instant::now() < deadline {
        let key = bench_key(chooser.next(&mut rng));
        let kind = options.mix.kind(rng.range(0, 100) as u32);
        let started = Instant::now();
        let outcome: Result<(), ClientError> = match kind {
            Kind::Read => client.get(key).await.map(|_| ()),
            Kind::Write => client.put(key, value.clone()).await,
            Kind::Cas => match client
                .compare_and_swap(key, Some(value.clone()), Some(value.clone()))
                .await
            {
                Ok(CasOutcome::Swapped) => Ok(()),
                Ok(CasOutcome::Mismatch(_)) => {
                    r.cas_mismatches += 1;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                r.all.saturating_record(micros);
                match kind {
                    Kind::Read => r.reads.saturating_record(micros),
                    Kind::Write => r.writes.saturating_record(micros),
                    Kind::Cas => r.cas.saturating_record(micros),
                }
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_must_add_up() {
        assert_eq!(
            Mix::parse("reads=50, writes=45,cas=5").unwrap(),
            Mix {
                reads: 50,
                writes: 45,
                cas: 5
            }
        );
        assert_eq!(Mix::parse("writes=100").unwrap().writes, 100);
        assert!(Mix::parse("reads=50").is_err());
        assert!(Mix::parse("reads=50,deletes=50").is_err());
        assert!(Mix::parse("reads=x").is_err());
        assert!(Mix::parse("reads").is_err());
        let wrong_sum = Mix::parse("reads=10,writes=20,cas=30").unwrap_err();
        assert!(wrong_sum.contains("add up to 60"), "{wrong_sum}");
    }

    #[test]
    fn zipf_draws_follow_the_ycsb_formula() {
        let zipf = Zipf::new(1000, 0.99);
        // Key 0 takes the first 1/zeta(1000) ≈ 0.1294 of the unit interval, key 1 up to
        // (1 + 0.5^0.99)/zeta(1000) ≈ 0.1945; then the formula, ending at the last key.
        let us = [
            0.0, 0.1, 0.129, 0.13, 0.194, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0,
        ];
        let drawn = us.map(|u| zipf.next(u));
        assert_eq!(drawn, [0, 0, 0, 1, 1, 2, 4, 22, 103, 471, 927, 999]);
    }

    /// A key's share of the unit interval is half-open: a draw on its upper edge is the
    /// next key's. With two keys the formula is 0/0, and key 1 comes from its own test.
    #[test]
    fn zipf_shares_are_half_open_and_two_keys_both_draw() {
        let two = Zipf::new(2, 0.99);
        assert_eq!([0.0, 0.6, 0.7, 0.99].map(|u| two.next(u)), [0, 0, 1, 1]);
        let three = Zipf::new(3, 0.5);
        let first_edge = 1.0 / three.zetan;
        assert_eq!(first_edge * three.zetan, 1.0, "not an exact edge");
        assert_eq!(three.next(first_edge), 1);
        let second = 1.0 + 0.5f64.powf(0.5);
        let second_edge = second / three.zetan;
        assert_eq!(second_edge * three.zetan, second, "not an exact edge");
        assert_eq!(three.next(second_edge), 2);
    }

    #[test]
    fn a_mix_gives_each_kind_its_share_of_the_rolls() {
        use Kind::*;
        let mix = Mix::parse("reads=60,writes=30,cas=10").unwrap();
        let kinds = [0, 59, 60, 89, 90, 99].map(|r| mix.kind(r));
        assert_eq!(kinds, [Read, Read, Write, Write, Cas, Cas]);
        let writes = Mix::parse("writes=100").unwrap();
        assert!((0..100).all(|r| writes.kind(r) == Write));
    }

    #[test]
    fn each_client_draws_from_its_own_seed() {
        assert_eq!(client_seed(7, 2), 9);
        assert_ne!(client_seed(0, 0), client_seed(0, 1));
        assert_eq!(client_seed(u64::MAX, 1), 0);
    }

    #[test]
    fn zipfian_keys_are_skewed_and_in_range_uniform_ones_are_not() {
        let mut rng = Rng::new(1);
        let count = |chooser: &KeyChooser, rng: &mut Rng| {
            let mut hits = vec![0u32; 1000];
            for _ in 0..100_000 {
                hits[chooser.next(rng) as usize] += 1;
            }
            hits
        };
        let zipf = count(
            &KeyChooser::new(1000, KeyDistribution::Zipfian(0.99)),
            &mut rng,
        );
        let uniform = count(&KeyChooser::new(1000, KeyDistribution::Uniform), &mut rng);
        // The hottest key of 1,000 takes over a tenth of the draws at 0.99; uniformly,
        // about a thousandth.
        assert!(zipf[0] > 10_000, "{}", zipf[0]);
        assert!(zipf[0] > zipf[1] && zipf[1] > zipf[10] && zipf[10] > zipf[500]);
        assert!(
            uniform.iter().all(|&h| (50..200).contains(&h)),
            "{:?}",
            &uniform[..10]
        );
    }

    #[test]
    fn bench_keys_are_distinct_hex_spread_over_the_key_space() {
        let keys: std::collections::HashSet<_> = (0..10_000).map(bench_key).collect();
        assert_eq!(keys.len(), 10_000);
        let mut first_digits = [0u32; 16];
        for k in &keys {
            assert_eq!(k.len(), 16);
            let d = (k[0] as char).to_digit(16).unwrap();
            first_digits[d as usize] += 1;
        }
        assert!(first_digits.iter().all(|&n| n > 500), "{first_digits:?}");
    }
}
