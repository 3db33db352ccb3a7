//! flotilla embedded: three stores in one process, in-memory engines (volatile: nothing
//! is kept for a crash, as nothing outlives the process), the in-process network, the
//! three stores taking turns on one thread (`RunMode::Shared`; a store alone in its
//! process, on disk, would run `RunMode::Threads`). The
//! first region is bootstrapped on all three; the example writes through the region's
//! leader, reads back, compares-and-swaps, splits the region and writes to both
//! halves. An apply observer on store 1 counts what its regions apply (what a secondary
//! index or a change feed would hook into).
//!
//! Run it with `cargo run --example embedded`; `cargo test` runs it too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flotilla::proto::commandpb::{CompareAndSwap, Op, Put, SplitRequest, WriteCommand, op};
use flotilla::proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use flotilla::raft::Role;
use flotilla::storage::MemDurability;
use flotilla::storage::mem_kv::MemKvEngine;
use flotilla::storage::mem_log::MemRaftLog;
use flotilla::store::{
    AppliedChange, ApplyEvent, ApplyObserver, Engines, InProcessNetwork, ReadRequest, ReadResponse,
    RunMode, SharedRunner, Store, StoreConfig, bootstrap_region,
};
use flotilla::{RegionId, StoreId};

type Error = Box<dyn std::error::Error>;

/// Counts the writes and region changes a store applies.
#[derive(Default)]
struct Counter {
    writes: AtomicU64,
    admin: AtomicU64,
}

impl ApplyObserver for Counter {
    fn on_apply(&self, event: &ApplyEvent) {
        match &event.change {
            AppliedChange::Writes { writes } => self
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed),
            _ => self.admin.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn main() -> Result<(), Error> {
    let network = InProcessNetwork::new(1);
    let first = Region {
        id: 1,
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=3)
            .map(|s| Peer {
                id: s,
                store_id: s,
                role: PeerRole::Voter as i32,
            })
            .collect(),
        ..Default::default()
    };
    // The engines are in memory; snapshots between stores are files all the same.
    let snapshots = tempfile::tempdir()?;
    let counter = Arc::new(Counter::default());
    let runner = SharedRunner::spawn("stores")?;
    let mut stores = Vec::new();
    for id in 1..=3 {
        let engines = Engines::new(
            Arc::new(MemRaftLog::with_durability(MemDurability::Volatile)),
            Arc::new(MemKvEngine::with_durability(MemDurability::Volatile)),
            snapshots.path().join(format!("store-{id}")),
        );
        bootstrap_region(&engines, &first)?;
        let mut config = StoreConfig::new(StoreId(id));
        config.raft.tick_interval = Duration::from_millis(20);
        let observers: Vec<Arc<dyn ApplyObserver>> = if id == 1 {
            vec![counter.clone()]
        } else {
            Vec::new()
        };
        let store = Store::open_observed(
            config,
            engines,
            Arc::new(network.clone()),
            RunMode::Shared(runner.clone()),
            observers,
        )?;
        network.register(StoreId(id), store.receiver());
        stores.push(store);
    }

    let (leader, epoch) = wait_leader(&stores, RegionId(1))?;
    println!("region 1 is led by store {}", stores[leader].id());
    let put = |key: &str, value: &str| WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })),
        }],
    };
    let written = stores[leader]
        .propose(RegionId(1), epoch, put("apple", "red"))
        .wait()?;
    println!("put apple at log index {}", written.index);

    let got = stores[leader]
        .read(
            RegionId(1),
            epoch,
            ReadRequest::Get {
                key: Bytes::from_static(b"apple"),
            },
        )
        .wait()?;
    println!("get apple -> {got:?}");
    assert_eq!(got, ReadResponse::Value(Some(Bytes::from_static(b"red"))));

    let cas = WriteCommand {
        ops: vec![Op {
            op: Some(op::Op::CompareAndSwap(CompareAndSwap {
                key: Bytes::from_static(b"apple"),
                expected: Some(Bytes::from_static(b"red")),
                new_value: Some(Bytes::from_static(b"green")),
            })),
        }],
    };
    let swapped = stores[leader].propose(RegionId(1), epoch, cas).wait()?;
    println!("cas apple red -> green: {:?}", swapped.outcomes);

    let split = SplitRequest {
        split_key: Bytes::from_static(b"m"),
        new_region_id: 2,
        new_peer_ids: vec![4, 5, 6],
    };
    let regions = stores[leader]
        .split(RegionId(1), epoch, vec![split])
        .wait()?
        .regions;
    for r in &regions {
        println!(
            "region {}: [{:?}, {:?})",
            r.id,
            String::from_utf8_lossy(&r.start_key),
            String::from_utf8_lossy(&r.end_key)
        );
    }
    let (leader2, epoch2) = wait_leader(&stores, RegionId(2))?;
    stores[leader2]
        .propose(RegionId(2), epoch2, put("pear", "yellow"))
        .wait()?;
    println!(
        "put pear into region 2 through store {}",
        stores[leader2].id()
    );

    // A planned stop: store 1 hands the leaderships it holds to the others first, so its
    // regions need not wait an election timeout for a leader.
    let handed = stores[0].hand_off_leaderships(Duration::from_secs(2));
    println!(
        "store 1 handed off {} of the {} leaderships it held",
        handed.led - handed.still_leading.len(),
        handed.led
    );
    for store in stores {
        store.shutdown();
    }
    // Store 1 applied everything its regions committed before it shut down: at most the
    // three writes, and the split.
    println!(
        "store 1 observed {} writes and {} region changes",
        counter.writes.load(Ordering::Relaxed),
        counter.admin.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The index of the store leading `region`, and the region's epoch.
fn wait_leader(stores: &[Store], region: RegionId) -> Result<(usize, RegionEpoch), Error> {
    for _ in 0..1000 {
        for (i, store) in stores.iter().enumerate() {
            // A store that has not applied the split yet does not know region 2.
            let Ok(status) = store.region_status(region).wait() else {
                continue;
            };
            if status.role == Role::Leader {
                return Ok((i, status.region.epoch.unwrap_or_default()));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("region {region} elected no leader").into())
}

#[test]
fn the_example_runs() {
    main().expect("the embedded example");
}
