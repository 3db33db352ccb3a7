//! Whole stores under load: three stores in one process over the in-process network, the
//! way the embedded mode runs them. Not a criterion benchmark: each mode is one run that
//! prints its figures, ratios beside absolute numbers.
//!
//! ```sh
//! cargo bench --bench store -- throughput   # writes: ops/s, p50/p99, writes per fsync
//! cargo bench --bench store -- idle         # sleeping regions: CPU, RSS per replica
//! cargo bench --bench store -- restart      # a store with a big log: time to serve again
//! ```
//!
//! Settings (environment):
//! - `FLOTILLA_BENCH_ENGINE`: `disk` (raft-engine + fjall on a temporary directory, every
//!   WAL write fsynced; default) or `mem` (the in-memory engines, no fsync).
//! - `FLOTILLA_BENCH_REGIONS`: region counts, comma-separated (throughput default
//!   `1,100,1000`; idle and restart default `10000`).
//! - `FLOTILLA_BENCH_LOG_MIB`: raft log the restart mode writes before the stop (default
//!   1024; regular log GC is held back so it stays). Its values default to 16 KiB.
//! - `FLOTILLA_BENCH_CLIENTS`: concurrent clients (default 256), each a task issuing one
//!   write at a time (all on one runtime thread). `FLOTILLA_BENCH_VALUE`: value bytes (default 128).
//! - `FLOTILLA_BENCH_KEYS`: distinct keys each client writes (default 1000). openraft's
//!   benchmark keeps no data in its state machine; `1` comes closest to it (a tiny KV).
//! - `FLOTILLA_BENCH_SECS`: measured seconds per run (default 10).
//! - `FLOTILLA_BENCH_HIBERNATE=0`: idle regions keep ticking (the idle mode's comparison).
//! - `FLOTILLA_BENCH_PURGE=0`: no allocator purge thread (`flotilla::allocator::spawn_purger`,
//!   which the `flotilla` binary always runs): what it saves.
//! - `FLOTILLA_BENCH_RUN`: `threads` (a pool per role: `RunMode::Threads`; default),
//!   `one-thread` (each store's roles in turn on one thread: `RunMode::OneThread`),
//!   `shared` (the three stores' roles in turn on one thread: `RunMode::Shared`) or
//!   `stepped` (throughput only: the three stores stepped in turn on the bench's one
//!   thread, the clients' writes proposed between rounds — no thread hand-offs and no
//!   waiting, so the time per write is the CPU a write costs the stores: the figure to
//!   compare two builds by on a busy machine).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::proto::commandpb::{Op, Put, SplitRequest, WriteCommand, op};
use flotilla::proto::metapb::RegionEpoch;
use flotilla::raft::Role;
use flotilla::region::RegionError;
use flotilla::storage::MemDurability;
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::storage::raft_log::{RaftLogConfig, RaftLogEngine};
use flotilla::store::{
    Engines, InProcessNetwork, RegionResult, Response, RunMode, SharedRunner, SnapshotSteps, Store,
    StoreConfig, WriteResponse, bootstrap_region,
};
use flotilla::testkit::cluster::first_region;
use flotilla::{RegionId, StoreId};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// The allocator the `flotilla` binary ships with: the bench measures what runs.
#[cfg(feature = "mimalloc")]
flotilla::use_mimalloc!();

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn env_u64(name: &str, default: u64) -> u64 {
    env(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn region_counts(default: &str) -> Vec<u64> {
    env("FLOTILLA_BENCH_REGIONS")
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Disk,
    Mem,
}

/// The KV engine's settings: the defaults, the memtable size from `FLOTILLA_BENCH_MEMTABLE_MIB`.
fn kv_config(dir: std::path::PathBuf) -> KvConfig {
    let mut cfg = KvConfig::new(dir);
    if let Some(mib) = env("FLOTILLA_BENCH_MEMTABLE_MIB").and_then(|v| v.parse::<u64>().ok()) {
        cfg.memtable_bytes = mib << 20;
    }
    cfg
}

fn run_mode() -> RunMode {
    match env("FLOTILLA_BENCH_RUN").as_deref() {
        Some("one-thread") => RunMode::OneThread,
        Some("shared") => {
            // One thread for the three stores of every run.
            static RUNNER: std::sync::OnceLock<SharedRunner> = std::sync::OnceLock::new();
            RunMode::Shared(
                RUNNER
                    .get_or_init(|| SharedRunner::spawn("stores").expect("the shared thread"))
                    .clone(),
            )
        }
        Some("stepped") => RunMode::Stepped,
        _ => RunMode::Threads,
    }
}

/// Whether `mode` cannot run stepped (only throughput steps its stores), said so.
fn refused_stepped(mode: &str) -> bool {
    let stepped = run_mode() == RunMode::Stepped;
    if stepped {
        eprintln!(
            "store bench: {mode} runs stores on threads; FLOTILLA_BENCH_RUN=stepped is for throughput"
        );
    }
    stepped
}

/// The run mode's name, as the figures print it.
fn run_name() -> &'static str {
    match run_mode() {
        RunMode::Threads => "Threads",
        RunMode::OneThread => "OneThread",
        RunMode::Shared(_) => "Shared",
        RunMode::Stepped => "Stepped",
    }
}

fn engine() -> Engine {
    match env("FLOTILLA_BENCH_ENGINE").as_deref() {
        Some("mem") => Engine::Mem,
        _ => Engine::Disk,
    }
}

/// Three stores holding the first region, split into `regions`, each region led.
struct Cluster {
    stores: Vec<Store>,
    net: InProcessNetwork,
    engine: Engine,
    dir: tempfile::TempDir,
}

fn start(regions: u64, engine: Engine, config: impl Fn(&mut StoreConfig)) -> Cluster {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = Cluster {
        stores: Vec::new(),
        net: InProcessNetwork::new(1),
        engine,
        dir,
    };
    for id in 1..=3u64 {
        let engines = c.engines(id);
        bootstrap_region(&engines, &first_region(3)).expect("bootstrap");
        let store = c.open(id, engines, &config);
        c.stores.push(store);
    }
    if regions > 1 {
        let splits: Vec<SplitRequest> = (1..regions)
            .map(|i| SplitRequest {
                split_key: Bytes::from(key_prefix(i)),
                new_region_id: 100 + i,
                new_peer_ids: (1..=3).map(|s| 1_000_000 + i * 10 + s).collect(),
            })
            .collect();
        let (leader, epoch) = c.leader(RegionId(1));
        let split = c.stores[leader].split(RegionId(1), epoch, splits);
        c.answer(split).expect("split");
    }
    c
}

fn key_prefix(region: u64) -> String {
    format!("r{region:06}")
}

fn region_id(i: u64) -> RegionId {
    if i == 0 {
        RegionId(1)
    } else {
        RegionId(100 + i)
    }
}

impl Cluster {
    fn stepped(&self) -> bool {
        run_mode() == RunMode::Stepped
    }

    /// Steps every store a round at a time until none has work left (stepped mode).
    fn settle(&mut self) {
        let mut worked = true;
        while worked {
            worked = false;
            for s in &mut self.stores {
                worked |= s.step_round(SnapshotSteps::Run);
            }
        }
    }

    /// The answer to `response`: waited for, or, stepped, reached by stepping the stores
    /// (and ticking them, as their timers would, while it does not come).
    fn answer<T>(&mut self, mut response: Response<T>) -> RegionResult<T> {
        if !self.stepped() {
            return response.wait();
        }
        loop {
            self.settle();
            if let Some(answer) = response.try_take() {
                return answer;
            }
            for s in &self.stores {
                s.tick();
            }
        }
    }

    /// The store leading `region` and the region's epoch, once it has a leader.
    fn leader(&mut self, region: RegionId) -> (usize, RegionEpoch) {
        if !self.stepped() {
            return self.wait_leader(region);
        }
        for _ in 0..10_000 {
            for i in 0..self.stores.len() {
                let status = self.stores[i].region_status(region);
                if let Ok(st) = self.answer(status)
                    && st.role == Role::Leader
                {
                    return (i, st.region.epoch.unwrap_or_default());
                }
            }
            for s in &self.stores {
                s.tick();
            }
            self.settle();
        }
        panic!("region {region} elected no leader in 10,000 ticks");
    }

    /// `wait_leader` for client tasks (which must not block their runtime).
    async fn leader_of(&self, region: RegionId) -> (usize, RegionEpoch) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for (i, s) in self.stores.iter().enumerate() {
                if let Ok(st) = s.region_status(region).await
                    && st.role == Role::Leader
                {
                    return (i, st.region.epoch.unwrap_or_default());
                }
            }
            assert!(
                Instant::now() < deadline,
                "region {region} elected no leader"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn store_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("store-{id}"))
    }

    /// Store `id`'s engines, opened on its directory (the in-memory ones start empty).
    fn engines(&self, id: u64) -> Engines {
        let base = self.store_dir(id);
        std::fs::create_dir_all(base.join("raft")).expect("store directory");
        match self.engine {
            Engine::Disk => Engines::new(
                Arc::new(
                    RaftLogEngine::open(&RaftLogConfig::new(base.join("raft"))).expect("raft log"),
                ),
                Arc::new(FjallKvEngine::open(&kv_config(base.join("kv"))).expect("kv")),
                base.join("snapshots"),
            ),
            Engine::Mem => Engines::new(
                Arc::new(MemRaftLog::with_durability(MemDurability::Volatile)),
                Arc::new(MemKvEngine::with_durability(MemDurability::Volatile)),
                base.join("snapshots"),
            ),
        }
    }

    fn open(&self, id: u64, engines: Engines, config: impl Fn(&mut StoreConfig)) -> Store {
        let mut settings = StoreConfig::new(StoreId(id));
        config(&mut settings);
        let store =
            Store::open(settings, engines, Arc::new(self.net.clone()), run_mode()).expect("open");
        self.net.register(StoreId(id), store.receiver());
        store
    }

    fn wait_leader(&self, region: RegionId) -> (usize, RegionEpoch) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for (i, s) in self.stores.iter().enumerate() {
                if let Ok(st) = s.region_status(region).wait()
                    && st.role == Role::Leader
                {
                    return (i, st.region.epoch.unwrap_or_default());
                }
            }
            assert!(
                Instant::now() < deadline,
                "region {region} elected no leader"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("metrics recorder")
    })
}

/// Every sample's value by `name{labels}`.
fn samples() -> HashMap<String, f64> {
    recorder()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sum(s: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

fn put(key: Vec<u8>, value: Bytes) -> WriteCommand {
    WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::from(key),
                value,
            })),
        }],
    }
}

fn throughput() {
    let engine = engine();
    let clients = env_u64("FLOTILLA_BENCH_CLIENTS", 256);
    let value = Bytes::from(vec![0x61; env_u64("FLOTILLA_BENCH_VALUE", 128) as usize]);
    let secs = env_u64("FLOTILLA_BENCH_SECS", 10);
    let keys = env_u64("FLOTILLA_BENCH_KEYS", 1000).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for regions in region_counts("1,100,1000") {
        let mut c = start(regions, engine, |_| {});
        if c.stepped() {
            stepped_throughput(c, regions, clients, &value, keys, secs);
            continue;
        }
        // Where each region's leader is, refreshed on NotLeader.
        let leaders: Vec<Mutex<(usize, RegionEpoch)>> = (0..regions)
            .map(|i| Mutex::new(c.leader(region_id(i))))
            .collect();
        // Keys are `{region prefix}-{client}-{k}`, assembled from parts made up front: the
        // clients' thread is the bench's cost, not the store's, so it keeps the formatting
        // machinery out of the measured loop.
        let prefixes: Arc<Vec<String>> = Arc::new((0..regions).map(key_prefix).collect());
        let mut suffixes: Vec<Vec<String>> = (0..clients)
            .map(|client| (0..keys).map(|k| format!("-{client}-{k}")).collect())
            .collect();
        let before = samples();
        let (cpu_before, _) = cpu_and_rss();
        let clients_cpu_before = main_thread_cpu();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        // Clients are tasks on one runtime thread, as in openraft's benchmark: a thread per
        // client would spend the machine on context switches, not on the store.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("client runtime");
        let c = Arc::new(c);
        let leaders = Arc::new(leaders);
        let latencies: Vec<Vec<u32>> = runtime.block_on(async {
            let tasks: Vec<_> = (0..clients)
                .map(|client| {
                    let (c, leaders, value) = (c.clone(), leaders.clone(), value.clone());
                    let prefixes = prefixes.clone();
                    let suffixes = std::mem::take(&mut suffixes[client as usize]);
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        let mut n = client.wrapping_mul(0x9E37_79B9);
                        let mut now = Instant::now();
                        while now < deadline {
                            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            let i = (n >> 33) % regions;
                            let (store, epoch) = *leaders[i as usize].lock().unwrap();
                            let key = [
                                prefixes[i as usize].as_bytes(),
                                suffixes[(n % keys) as usize].as_bytes(),
                            ]
                            .concat();
                            let t = Instant::now();
                            let r = c.stores[store]
                                .propose(region_id(i), epoch, put(key, value.clone()))
                                .await;
                            // One clock read ends this write's latency and starts the
                            // next loop's deadline check.
                            now = Instant::now();
                            match r {
                                Ok(_) => lat.push(now.duration_since(t).as_micros() as u32),
                                Err(
                                    RegionError::NotLeader { .. }
                                    | RegionError::EpochNotMatch { .. },
                                ) => {
                                    let leader = c.leader_of(region_id(i)).await;
                                    *leaders[i as usize].lock().unwrap() = leader;
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                            }
                        }
                        lat
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.push(task.await.expect("client task"));
            }
            all
        });
        let elapsed = started.elapsed().as_secs_f64();
        let (cpu_after, _) = cpu_and_rss();
        let clients_cpu = main_thread_cpu() - clients_cpu_before;
        let after = samples();
        let delta =
            |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);
        let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let ops = all.len() as f64;
        let fsyncs = delta("flotilla_wal_fsyncs_total", &[]);
        let writes = delta("flotilla_wal_writes_total", &[]);
        let regions_per_write = delta("flotilla_wal_write_batch_regions_sum", &[])
            / delta("flotilla_wal_write_batch_regions_count", &[]).max(1.0);
        let mean_us = |name: &str| {
            delta(&format!("{name}_sum"), &[]) * 1e6 / delta(&format!("{name}_count"), &[]).max(1.0)
        };
        let fsync_us = mean_us("flotilla_wal_fsync_duration_seconds");
        let apply_us = mean_us("flotilla_apply_duration_seconds");
        // Region visits by the raft pollers of all three stores, per client write.
        let raft_visits =
            delta("flotilla_store_poll_batch_fsms_sum", &["pool=\"raft\""]) / ops.max(1.0);
        println!(
            "throughput {engine:?} {} {regions} regions {clients} clients {}-byte values: {:.0} writes/s, p50 {} µs, p99 {} µs, max {} µs; {:.1} client writes per fsync ({fsyncs} fsyncs, 3 stores), {:.1} client writes per WAL write, {regions_per_write:.1} regions per WAL write; {:.2} µs of CPU per write (the process: three stores and the clients; {:.0} % of the machine's {} cores; the stores' threads {:.2} µs); mean synced WAL write {fsync_us:.0} µs, mean apply round {apply_us:.0} µs; {raft_visits:.1} raft poller region visits per write",
            run_name(),
            value.len(),
            ops / elapsed,
            pct(0.50),
            pct(0.99),
            all.last().copied().unwrap_or(0),
            ops / fsyncs.max(1.0),
            ops / writes.max(1.0),
            (cpu_after - cpu_before) * 1e6 / ops.max(1.0),
            (cpu_after - cpu_before) * 100.0 / elapsed / cores as f64,
            cores,
            (cpu_after - cpu_before - clients_cpu) * 1e6 / ops.max(1.0),
        );
        drop(runtime);
        let c = Arc::into_inner(c).expect("clients done");
        for s in c.stores {
            s.shutdown();
        }
    }
}

/// `throughput` with the stores stepped on this thread: each loop proposes a write for
/// every client not waiting for one, steps each store one round, and takes the answers
/// that came. One thread does all the work, so writes/s is the inverse of a write's CPU.
fn stepped_throughput(
    mut c: Cluster,
    regions: u64,
    clients: u64,
    value: &Bytes,
    keys: u64,
    secs: u64,
) {
    let mut leaders: Vec<(usize, RegionEpoch)> =
        (0..regions).map(|i| c.leader(region_id(i))).collect();
    // Keys assembled from parts made up front, as the threaded clients do.
    let prefixes: Vec<String> = (0..regions).map(key_prefix).collect();
    let suffixes: Vec<Vec<String>> = (0..clients)
        .map(|client| (0..keys).map(|k| format!("-{client}-{k}")).collect())
        .collect();
    let mut waiting: Vec<Option<(u64, Response<WriteResponse>, Instant)>> =
        (0..clients).map(|_| None).collect();
    let mut rng: Vec<u64> = (0..clients).map(|c| c.wrapping_mul(0x9E37_79B9)).collect();
    let mut latencies: Vec<u32> = Vec::new();
    let mut rounds = 0u64;
    let (cpu_before, _) = cpu_and_rss();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut now = started;
    while now < deadline {
        for (client, slot) in waiting.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let n = &mut rng[client];
            *n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let i = (*n >> 33) % regions;
            let (store, epoch) = leaders[i as usize];
            let key = [
                prefixes[i as usize].as_bytes(),
                suffixes[client][(*n % keys) as usize].as_bytes(),
            ]
            .concat();
            let response = c.stores[store].propose(region_id(i), epoch, put(key, value.clone()));
            *slot = Some((i, response, now));
        }
        for s in &mut c.stores {
            s.step_round(SnapshotSteps::Run);
        }
        rounds += 1;
        now = Instant::now();
        for slot in &mut waiting {
            let Some((i, response, proposed)) = slot else {
                continue;
            };
            let Some(answer) = response.try_take() else {
                continue;
            };
            match answer {
                Ok(_) => latencies.push(now.duration_since(*proposed).as_micros() as u32),
                Err(RegionError::NotLeader { .. } | RegionError::EpochNotMatch { .. }) => {
                    let i = *i;
                    *slot = None;
                    leaders[i as usize] = c.leader(region_id(i));
                    continue;
                }
                Err(e) => panic!("a write failed: {e}"),
            }
            *slot = None;
        }
        // What the timers would do: ticks keep leases and leaders, log GC bounds memory.
        if rounds.is_multiple_of(1024) {
            for s in &c.stores {
                s.tick();
                s.log_gc();
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_after, _) = cpu_and_rss();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let ops = latencies.len() as f64;
    println!(
        "throughput {:?} Stepped {regions} regions {clients} clients {}-byte values: {:.0} writes/s on one thread ({:.2} µs per write; {:.2} µs of the process's CPU per write), p50 {} µs, p99 {} µs; {:.1} writes per round of the three stores",
        c.engine,
        value.len(),
        ops / elapsed,
        elapsed * 1e6 / ops.max(1.0),
        (cpu_after - cpu_before) * 1e6 / ops.max(1.0),
        pct(0.50),
        pct(0.99),
        ops / rounds.max(1) as f64,
    );
    c.settle();
    for s in c.stores {
        s.shutdown();
    }
}

/// (user + system CPU seconds, resident bytes) of this process.
fn cpu_and_rss() -> (f64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu_seconds("/proc/self/stat"), rss_kib * 1024)
}

/// The CPU seconds (user + system) a `/proc` stat file gives: the process's, or a thread's.
fn cpu_seconds(stat: &str) -> f64 {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The CPU seconds of this thread (the clients' runtime runs on the main thread).
fn main_thread_cpu() -> f64 {
    cpu_seconds(&format!("/proc/self/task/{}/stat", std::process::id()))
}

fn idle() {
    if refused_stepped("idle") {
        return;
    }
    let engine = engine();
    let secs = env_u64("FLOTILLA_BENCH_SECS", 10);
    let hibernate = env("FLOTILLA_BENCH_HIBERNATE").as_deref() != Some("0");
    for regions in region_counts("10000") {
        let (_, rss_before) = cpu_and_rss();
        let setup = Instant::now();
        let c = start(regions, engine, |config| {
            if !hibernate {
                config.hibernation.idle_ticks = None;
            }
        });
        for i in 0..regions {
            c.wait_leader(region_id(i));
        }
        if hibernate {
            let deadline = Instant::now() + Duration::from_secs(600);
            while c.stores.iter().any(|s| s.ticking_regions() > 0) {
                assert!(Instant::now() < deadline, "regions never slept");
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            std::thread::sleep(Duration::from_secs(3));
        }
        let settled = setup.elapsed().as_secs_f64();
        let before = samples();
        let (cpu0, _) = cpu_and_rss();
        std::thread::sleep(Duration::from_secs(secs));
        let (cpu1, rss) = cpu_and_rss();
        let after = samples();
        let delta =
            |name: &str, labels: &[&str]| sum(&after, name, labels) - sum(&before, name, labels);
        let batches = delta("flotilla_transport_rpcs_total", &["dir=\"sent\""]);
        let replicas = regions * 3;
        println!(
            "idle {engine:?} {regions} regions × 3 replicas, hibernation {}: settled in {settled:.1} s; CPU {:.2} % of one core; RSS {:.1} MiB, {:.1} KiB per replica; {:.1} batches/s between the stores",
            if hibernate { "on" } else { "off" },
            100.0 * (cpu1 - cpu0) / secs as f64,
            rss as f64 / (1 << 20) as f64,
            rss.saturating_sub(rss_before) as f64 / 1024.0 / replicas as f64,
            batches / secs as f64,
        );
        for s in c.stores {
            s.shutdown();
        }
    }
}

/// Bytes under `path` (files only).
fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// `len` bytes that do not compress (the raft log compresses large batches).
fn noise(seed: u64, len: usize) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A store holding `regions` regions and about `FLOTILLA_BENCH_LOG_MIB` of raft log is
/// stopped and opened again: how long until it serves (every region's leader known and
/// the replica applied as far as before the stop).
fn restart() {
    if refused_stepped("restart") {
        return;
    }
    let engine = engine();
    if engine == Engine::Mem {
        // Each open makes new in-memory engines, and they are volatile: a store reopened
        // on them would hold nothing of what it had.
        eprintln!("restart: in-memory engines keep nothing across a restart; run it on disk");
        return;
    }
    let log_bytes = env_u64("FLOTILLA_BENCH_LOG_MIB", 1024) << 20;
    let value_len = env_u64("FLOTILLA_BENCH_VALUE", 16 << 10).max(1);
    let clients = env_u64("FLOTILLA_BENCH_CLIENTS", 256);
    // Regular log GC keeps nothing back here: the log is meant to stay.
    let config = |config: &mut StoreConfig| config.log_gc.min_entries = 1 << 40;
    for regions in region_counts("10000") {
        let setup = Instant::now();
        let c = start(regions, engine, config);
        for i in 0..regions {
            c.wait_leader(region_id(i));
        }
        let led = setup.elapsed().as_secs_f64();
        let writes = log_bytes / value_len;
        let fill = Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("client runtime");
        let c = Arc::new(c);
        runtime.block_on(async {
            let tasks: Vec<_> = (0..clients)
                .map(|client| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let mut leaders = HashMap::new();
                        for n in (client..writes).step_by(clients as usize) {
                            let i = n % regions;
                            let key = format!("{}-fill-{n}", key_prefix(i));
                            loop {
                                let (store, epoch) = match leaders.get(&i) {
                                    Some(&leader) => leader,
                                    None => {
                                        let leader = c.leader_of(region_id(i)).await;
                                        leaders.insert(i, leader);
                                        leader
                                    }
                                };
                                let value = noise(n, value_len as usize);
                                match c.stores[store]
                                    .propose(
                                        region_id(i),
                                        epoch,
                                        put(key.clone().into_bytes(), value),
                                    )
                                    .await
                                {
                                    Ok(_) => break,
                                    Err(_) => {
                                        leaders.remove(&i);
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("fill task");
            }
        });
        drop(runtime);
        let mut c = Arc::into_inner(c).expect("fill done");
        let filled = fill.elapsed().as_secs_f64();
        let log_size = dir_bytes(&c.store_dir(1).join("raft"));
        // Where the replica stood: it serves again once it has applied as far.
        let applied: Vec<u64> = (0..regions)
            .map(|i| {
                c.stores[0]
                    .region_status(region_id(i))
                    .wait()
                    .map_or(0, |s| s.applied_index)
            })
            .collect();
        c.stores.remove(0).shutdown();
        let stopped = Instant::now();
        let engines = c.engines(1);
        let recovered = stopped.elapsed().as_secs_f64();
        let store = c.open(1, engines, config);
        let opened = stopped.elapsed().as_secs_f64();
        let mut waiting: Vec<u64> = (0..regions).collect();
        let deadline = Instant::now() + Duration::from_secs(600);
        while !waiting.is_empty() {
            // Asked all at once: one by one, the round trips would be what is measured.
            let asked: Vec<_> = waiting
                .iter()
                .map(|&i| (i, store.region_status(region_id(i))))
                .collect();
            waiting = asked
                .into_iter()
                .filter_map(|(i, status)| {
                    let serves = status.wait().is_ok_and(|s| {
                        s.leader.is_some() && s.applied_index >= applied[i as usize]
                    });
                    (!serves).then_some(i)
                })
                .collect();
            eprintln!(
                "{:.2} s: {} waiting",
                stopped.elapsed().as_secs_f64(),
                waiting.len()
            );
            assert!(
                Instant::now() < deadline,
                "{} regions never served again",
                waiting.len()
            );
            eprintln!(
                "{:.2} s: {} waiting",
                stopped.elapsed().as_secs_f64(),
                waiting.len()
            );
            if !waiting.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let serving = stopped.elapsed().as_secs_f64();
        println!(
            "restart {engine:?} {regions} regions, {:.0} MiB of raft log on the store ({writes} writes of {value_len} bytes in {filled:.1} s; set up and led in {led:.1} s): engines open in {recovered:.2} s, store open in {opened:.2} s, every region led and caught up in {serving:.2} s",
            log_size as f64 / (1 << 20) as f64,
        );
        c.stores.insert(0, store);
        for s in c.stores {
            s.shutdown();
        }
    }
}

fn main() {
    recorder();
    #[cfg(feature = "mimalloc")]
    if std::env::var("FLOTILLA_BENCH_PURGE").as_deref() != Ok("0") {
        flotilla::allocator::spawn_purger(Duration::from_secs(1)).expect("purge thread");
    }
    // `cargo bench` passes `--bench`; a plain `cargo bench` runs no mode (each takes
    // minutes) and says how to pick one.
    match std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .as_deref()
    {
        Some("throughput") => throughput(),
        Some("idle") => idle(),
        Some("restart") => restart(),
        other => eprintln!(
            "store bench: mode {other:?}; run `cargo bench --bench store -- throughput`, `-- idle` or `-- restart`"
        ),
    }
}
