//! Propose-to-commit throughput of a 3-node group in memory (no disk, no network): the
//! leader proposes a batch, messages are delivered at once, every node persists to
//! `MemStorage` and acknowledges. Reported in entries per second.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flotilla::testkit::raft_sim::cluster::Cluster;

const ENTRY_BYTES: usize = 128;

fn propose_to_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_core/propose_to_commit");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new(&[1, 2, 3], |cfg| {
                cfg.max_inflight_msgs = 4096;
                // Irrelevant to throughput, and it would make the instant election wait.
                cfg.check_quorum = false;
            });
            cluster.checks_enabled = false;
            cluster.elect(1);
            let payload = Bytes::from(vec![7u8; ENTRY_BYTES]);
            let mut rounds = 0u64;
            b.iter(|| {
                let entries = (0..batch).map(|_| (payload.clone(), Vec::new()));
                let last = cluster
                    .raw_mut(1)
                    .propose_batch(entries)
                    .expect("leader accepts");
                cluster.stabilize();
                assert!(cluster.committed(1) >= last);
                rounds += 1;
                // Keep memory flat: compact applied entries now and then.
                if rounds.is_multiple_of(256) {
                    for id in [1, 2, 3] {
                        cluster.compact(id);
                        cluster.forget_applied(id);
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, propose_to_commit);
criterion_main!(benches);
