//! The store's raft log against raw raft-engine.
//!
//! - `wal/append_sync/flotilla/N` and `wal/append_sync/raw/N`: one synced write of a batch
//!   holding one 256-byte entry for each of N regions (N = 1, 100, 10,000), plus each
//!   region's state. One batch = one engine write = one fsync, so fsyncs per 1,000 entries
//!   is 1,000 / N. The raw variant builds the same `LogBatch` by hand (same entry bytes,
//!   same state bytes) without flotilla's conversion and checks.
//! - `wal/recovery`: reopening a log of 10,000 regions holding 1 GiB of 256-byte entries
//!   (`FLOTILLA_BENCH_RECOVERY_MIB` changes the size), warm page cache.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flotilla::raft::pb::{Entry, HardState};
use flotilla::storage::pb::RaftLocalState;
use flotilla::storage::raft_log::{LogWriteBatch, RaftLogConfig, RaftLogEngine, RaftLogStore};
use flotilla::storage::wal_entry::{WalEntry, WalEntryExt};
use prost::Message as _;

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
    }
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append_sync");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for regions in [1u64, 100, 10_000] {
        group.throughput(Throughput::Elements(regions));
        let dir = tempfile::tempdir().expect("temp dir");
        let log = RaftLogEngine::open(&RaftLogConfig::new(dir.path())).expect("open");
        let mut index = 0u64;
        group.bench_with_input(
            BenchmarkId::new("flotilla", regions),
            &regions,
            |b, &regions| {
                b.iter(|| {
                    index += 1;
                    let e = [entry(index)];
                    let mut batch = LogWriteBatch::default();
                    for region in 1..=regions {
                        batch.append(region, &e).expect("append");
                        batch.put_state(region, &local_state(index));
                    }
                    log.write(&mut batch, true).expect("write");
                })
            },
        );
        drop(log);

        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = raft_engine::Config {
            dir: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        };
        let raw = raft_engine::Engine::open(cfg).expect("open raw");
        let mut index = 0u64;
        group.bench_with_input(BenchmarkId::new("raw", regions), &regions, |b, &regions| {
            b.iter(|| {
                index += 1;
                let e = [WalEntry::from_entry(&entry(index))];
                let state = local_state(index).encode_to_vec();
                let mut batch = raft_engine::LogBatch::default();
                for region in 1..=regions {
                    batch
                        .add_entries::<WalEntryExt>(region, &e)
                        .expect("append");
                    batch
                        .put(region, b"raft_local_state".to_vec(), state.clone())
                        .expect("state");
                }
                raw.write(&mut batch, true).expect("write");
            })
        });
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let mib: u64 = std::env::var("FLOTILLA_BENCH_RECOVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let regions = 10_000u64;
    let per_region = (mib << 20) / ENTRY_BYTES as u64 / regions;
    let dir = tempfile::tempdir().expect("temp dir");
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
                batch.append(region, &ents).expect("append");
                batch.put_state(region, &local_state(upto));
            }
            log.write(&mut batch, false).expect("write");
            next = upto + 1;
        }
        log.write(&mut LogWriteBatch::default(), true)
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

criterion_group!(benches, append_sync, recovery);
criterion_main!(benches);
