//! The store's KV engine against raw fjall: what one apply round costs the KV engine.
//!
//! - `kv/apply_round/K`: one write batch shaped like an apply round of one region — 64
//!   puts of 128-byte values, keys drawn from K distinct keys (K = 256: every client
//!   overwriting its own key, as the store bench's `FLOTILLA_BENCH_KEYS=1`; K = 262,144:
//!   fresh keys, its default), and the region's apply state. Flotilla's `FjallKvEngine`
//!   (`write_and_clear`: the size samples, the batch's net effect per key, the keyspace
//!   prefixes) takes turns with raw fjall writing the same puts as one fjall batch into a
//!   keyspace with the same memtable size, and with the in-memory engine (`MemKvEngine`,
//!   volatile: what the in-memory benchmarks apply into). The printed line gives each
//!   one's median per put and the ratios.
//!
//! A client write is applied on each of the three replicas, so three puts of this
//! kind are part of every write in the store bench; the line prints what they cost
//! together, against the 2-core budget of the disk target (0.3x of 737k writes/s).

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flotilla::storage::MemDurability;
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{Keyspace, KvEngine, KvWriteBatch};
use flotilla::storage::mem_kv::MemKvEngine;

mod common;
use common::{median, tempdir, timed};

const PUTS: usize = 64;
const VALUE_BYTES: usize = 128;
const MEMTABLE_BYTES: u64 = 64 << 20;

/// Keys drawn by a xorshift walk over `keys` distinct keys, 17 bytes each.
struct Keys {
    state: u64,
    keys: u64,
}

impl Keys {
    /// One round's keys, all distinct (so every side inserts each one: flotilla's engine
    /// would merge a key repeated within a batch, raw fjall would not).
    fn round(&mut self) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = Vec::with_capacity(PUTS);
        while keys.len() < PUTS {
            let key = self.next();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    fn next(&mut self) -> Bytes {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        Bytes::from(format!("k{:016}", self.state % self.keys))
    }
}

/// One side of the comparison: writes one round's puts and an apply state.
trait Side {
    fn write(&mut self, keys: &[Bytes], value: &Bytes, applied: u64);
}

struct Engine<E: KvEngine>(E, KvWriteBatch);

impl<E: KvEngine> Side for Engine<E> {
    fn write(&mut self, keys: &[Bytes], value: &Bytes, applied: u64) {
        for key in keys {
            self.1.put(Keyspace::Data, key.clone(), value.clone());
        }
        let state = Bytes::copy_from_slice(&applied.to_le_bytes());
        self.1.put(Keyspace::Meta, &b"apply-state-1"[..], state);
        self.0.write_and_clear(&mut self.1).expect("write");
    }
}

/// Raw fjall: one keyspace, the puts and the apply state in one batch.
struct Raw(fjall::Database, fjall::Keyspace);

impl Side for Raw {
    fn write(&mut self, keys: &[Bytes], value: &Bytes, applied: u64) {
        let mut batch = self.0.batch();
        for key in keys {
            batch.insert(&self.1, key.as_ref(), value.as_ref());
        }
        batch.insert(&self.1, "apply-state-1", applied.to_le_bytes());
        batch.commit().expect("commit");
    }
}

/// The three sides take turns (each round's order rotates), so all meet the same
/// machine; criterion times flotilla's fjall writes, the others are timed alongside.
fn apply_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv/apply_round");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let value = Bytes::from(vec![0x61; VALUE_BYTES]);
    for keys in [256u64, 262_144] {
        group.throughput(Throughput::Elements(PUTS as u64));
        let (fl_dir, raw_dir) = (tempdir(), tempdir());
        let mut cfg = KvConfig::new(fl_dir.path());
        cfg.memtable_bytes = MEMTABLE_BYTES;
        let ours = FjallKvEngine::open(&cfg).expect("open");
        let mut ours = Engine(ours, KvWriteBatch::default());
        let db = fjall::Database::builder(raw_dir.path())
            .cache_size(cfg.cache_bytes)
            .open()
            .expect("open raw");
        let options = || fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let keyspace = db.keyspace("raw", options).expect("keyspace");
        let mut raw = Raw(db, keyspace);
        let mut mem = Engine(
            MemKvEngine::with_durability(MemDurability::Volatile),
            KvWriteBatch::default(),
        );
        let mut walk = Keys {
            state: 0x9e37_79b9_7f4a_7c15,
            keys,
        };
        let (mut fjall_ours, mut fjall_raw, mut in_memory) = (Vec::new(), Vec::new(), Vec::new());
        let mut round = 0u64;
        group.bench_function(BenchmarkId::from_parameter(keys), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let batch = walk.round();
                    for turn in 0..3 {
                        match (round + turn) % 3 {
                            0 => {
                                let took = timed(|| ours.write(&batch, &value, round));
                                total += took;
                                fjall_ours.push(took);
                            }
                            1 => fjall_raw.push(timed(|| raw.write(&batch, &value, round))),
                            _ => in_memory.push(timed(|| mem.write(&batch, &value, round))),
                        }
                    }
                }
                total
            })
        });
        if fjall_ours.is_empty() {
            continue; // Filtered out on the command line.
        }
        let rounds = fjall_ours.len();
        let per_put = |t: &mut Vec<Duration>| median(t).as_secs_f64() * 1e9 / PUTS as f64;
        let (ours_ns, raw_ns, mem_ns) = (
            per_put(&mut fjall_ours),
            per_put(&mut fjall_raw),
            per_put(&mut in_memory),
        );
        // Three replicas apply each write; the disk target is 0.3 x 737k writes/s on 2 cores.
        let budget_ns = 2.0 / (0.3 * 737_000.0) * 1e9;
        println!(
            "kv/apply_round/{keys}: per put (medians of {rounds} rounds of {PUTS}, warm-up included): flotilla \
             on fjall {ours_ns:.0} ns, raw fjall {raw_ns:.0} ns (ratio {:.2}), in memory \
             {mem_ns:.0} ns (fjall / memory {:.1}); three replicas' puts of one client write \
             on fjall {:.1} us = {:.0} % of the disk target's CPU budget per write \
             ({budget_ns:.0} ns on 2 cores)",
            ours_ns / raw_ns,
            ours_ns / mem_ns,
            3.0 * ours_ns / 1e3,
            3.0 * ours_ns * 100.0 / budget_ns,
        );
    }
    group.finish();
}

criterion_group!(benches, apply_round);
criterion_main!(benches);
