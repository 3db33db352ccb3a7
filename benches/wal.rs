//! The store's raft log against raw raft-engine.
//!
//! - `wal/append_sync/N`: one synced write of a batch holding one 256-byte entry for each
//!   of N regions (N = 1, 100, 10,000), plus each region's state. One batch = one engine
//!   write = one fsync, so fsyncs per 1,000 entries is 1,000 / N. Raw raft-engine writes
//!   the same entries and states, building its `LogBatch` by hand (reused between
//!   writes, as flotilla's is), taking turns with flotilla's writes; the printed line
//!   gives both medians and their ratio.
//! - `wal/append_nosync/N`: the same without fsync, which shows the CPU cost alone.
//! - `wal/recovery`: reopening a log of 10,000 regions holding 1 GiB of 256-byte entries
//!   (`FLOTILLA_BENCH_RECOVERY_MIB` changes the size), warm page cache.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flotilla::RegionId;
use flotilla::proto::raftpb::{Entry, HardState};
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::storage::SyncMode;
use flotilla::storage::raft_log::{LogWriteBatch, RaftLogConfig, RaftLogEngine, RaftLogStore};
use flotilla::storage::wal_entry::{WalEntry, WalEntryExt};
use prost::Message as _;

mod common;
use common::{median, tempdir, timed};

const ENTRY_BYTES: usize = 256;

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        data: Bytes::from(vec![0xab; ENTRY_BYTES]),
        ..Default::default()
    }
}

fn local_state(index: u64) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term: 1,
            vote: 1,
            commit: index,
        }),
        last_index: index,
        last_term: 1,
    }
}

/// One side of the comparison: writes one entry (index `index`) and the state of each of
/// `regions` regions in one batch.
trait Side {
    fn write(&mut self, regions: u64, index: u64, sync: SyncMode);
    /// Log GC, outside the timed part, so memtables stay the size a running store's do.
    fn compact(&mut self, regions: u64, index: u64);
}

struct Flotilla(RaftLogEngine, LogWriteBatch);

impl Side for Flotilla {
    fn write(&mut self, regions: u64, index: u64, sync: SyncMode) {
        let e = [entry(index)];
        let state = local_state(index);
        for region in 1..=regions {
            self.1.append(RegionId(region), &e).expect("append");
            self.1.put_state(RegionId(region), &state);
        }
        self.0.write(&mut self.1, sync).expect("write");
    }

    fn compact(&mut self, regions: u64, index: u64) {
        for region in 1..=regions {
            self.0.compact_to(RegionId(region), index).expect("compact");
        }
    }
}

/// Raw raft-engine, reusing its `LogBatch` between writes as flotilla does.
struct Raw(raft_engine::Engine, raft_engine::LogBatch);

impl Side for Raw {
    fn write(&mut self, regions: u64, index: u64, sync: SyncMode) {
        let e = entry(index);
        let state = local_state(index);
        let batch = &mut self.1;
        for region in 1..=regions {
            // Each region's entries and state are its own: wrapped and encoded one by
            // one, as in a store.
            let wrapped = [WalEntry::from_entry(&e)];
            batch
                .add_entries::<WalEntryExt>(region, &wrapped)
                .expect("append");
            batch
                .put(region, b"raft_local_state".to_vec(), state.encode_to_vec())
                .expect("state");
        }
        self.0.write(batch, sync == SyncMode::Sync).expect("write");
    }

    fn compact(&mut self, regions: u64, index: u64) {
        for region in 1..=regions {
            self.0.compact_to(region, index);
        }
    }
}

/// Flotilla's and raw raft-engine's writes alternate, so both meet the same disk and the
/// same neighbours on a shared machine; the ratio of their medians is the layer's cost.
/// Criterion times flotilla's writes; the raw ones are timed alongside and printed.
fn append(c: &mut Criterion) {
    for sync in [SyncMode::Sync, SyncMode::NoSync] {
        let name = if sync == SyncMode::Sync {
            "wal/append_sync"
        } else {
            "wal/append_nosync"
        };
        let mut group = c.benchmark_group(name);
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
        for regions in [1u64, 100, 10_000] {
            group.throughput(Throughput::Elements(regions));
            let (fl_dir, raw_dir) = (tempdir(), tempdir());
            let log = RaftLogEngine::open(&RaftLogConfig::new(fl_dir.path())).expect("open");
            let mut flotilla = Flotilla(log, LogWriteBatch::default());
            let cfg = raft_engine::Config {
                dir: raw_dir.path().to_string_lossy().into_owned(),
                ..Default::default()
            };
            let engine = raft_engine::Engine::open(cfg).expect("open raw");
            let mut raw = Raw(engine, raft_engine::LogBatch::default());
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let mut index = 0u64;
            group.bench_function(BenchmarkId::from_parameter(regions), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        index += 1;
                        // Taking turns at going first cancels any advantage of order.
                        let raw_first = index.is_multiple_of(2);
                        if raw_first {
                            theirs.push(timed(|| raw.write(regions, index, sync)));
                        }
                        let took = timed(|| flotilla.write(regions, index, sync));
                        total += took;
                        ours.push(took);
                        if !raw_first {
                            theirs.push(timed(|| raw.write(regions, index, sync)));
                        }
                        if index.is_multiple_of(64) {
                            flotilla.compact(regions, index);
                            raw.compact(regions, index);
                        }
                    }
                    total
                })
            });
            if ours.is_empty() {
                continue; // Filtered out on the command line.
            }
            let writes = ours.len();
            let total = |t: &[Duration]| t.iter().sum::<Duration>().as_secs_f64();
            let mean_ratio = total(&ours) / total(&theirs);
            let (ours, theirs) = (median(&mut ours), median(&mut theirs));
            let fsyncs = if sync == SyncMode::Sync {
                1000.0 / regions as f64
            } else {
                0.0
            };
            println!(
                "{name}/{regions}: flotilla {ours:.1?}, raw {theirs:.1?} (medians of {writes} \
                 writes each, warm-up included): ratio of medians {:.2}, of means \
                 {mean_ratio:.2}; flotilla {:.0} entries/s, {:.1} MB/s of payload; fsyncs \
                 per 1,000 entries {fsyncs}",
                ours.as_secs_f64() / theirs.as_secs_f64(),
                regions as f64 / ours.as_secs_f64(),
                regions as f64 * ENTRY_BYTES as f64 / ours.as_secs_f64() / 1e6,
            );
        }
        group.finish();
    }
}

fn recovery(c: &mut Criterion) {
    let mib: u64 = std::env::var("FLOTILLA_BENCH_RECOVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let regions = 10_000u64;
    let per_region = (mib << 20) / ENTRY_BYTES as u64 / regions;
    let dir = tempdir();
    let cfg = RaftLogConfig::new(dir.path());
    {
        let log = RaftLogEngine::open(&cfg).expect("open");
        // 64 entries per region per batch keeps batches a few MiB.
        let mut next = 1u64;
        while next <= per_region {
            let upto = (next + 63).min(per_region);
            let ents: Vec<Entry> = (next..=upto).map(entry).collect();
            let mut batch = LogWriteBatch::default();
            for region in 1..=regions {
                batch.append(RegionId(region), &ents).expect("append");
                batch.put_state(RegionId(region), &local_state(upto));
            }
            log.write(&mut batch, SyncMode::NoSync).expect("write");
            next = upto + 1;
        }
        log.write(&mut LogWriteBatch::default(), SyncMode::Sync)
            .expect("sync");
    }
    let mut group = c.benchmark_group("wal/recovery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    let name = format!("{regions}_regions_{mib}_MiB");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let log = RaftLogEngine::open(&cfg).expect("reopen");
                let listed = log.recover().expect("recover").len() as u64;
                total += started.elapsed();
                assert_eq!(listed, regions);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, append, recovery);
criterion_main!(benches);
