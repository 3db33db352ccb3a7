//! A large region is snapshotted without being held in memory: generation streams a read
//! view into chunk files with a peak heap that does not grow with the region, and apply
//! clears and ingests in bounded batches. The region holds `FLOTILLA_SNAPSHOT_MIB` MiB
//! (default 128 in CI; the 1 GiB of the storage issue: `FLOTILLA_SNAPSHOT_MIB=1024 cargo
//! test --test storage_snapshot_scale -- --nocapture`). The test is alone in its binary, whose
//! allocator counts the heap in use, so the peak it sees is its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::proto::metapb::Region;
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{Keyspace, KvEngine, KvRead, KvWriteBatch};
use flotilla::storage::region_meta::apply_state;
use flotilla::storage::snapshot;

const VALUE_BYTES: usize = 1000;
/// Peak heap a snapshot's generation may add, whatever the region's size: fjall's block
/// cache plus one chunk's buffers. Below the CI region's 128 MiB, so holding the region
/// in memory would fail the test.
const MAX_GENERATE_GROWTH_MIB: u64 = 64;
/// The follower's memtables: fjall buffers at most five per keyspace before writers wait.
const MEMTABLE_BYTES: u64 = 16 << 20;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{i:010}"))
}

fn value(i: u64) -> Bytes {
    let mut v = vec![0u8; VALUE_BYTES];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Bytes::from(v)
}

fn region() -> Region {
    Region {
        id: 11,
        start_key: b"k".to_vec(),
        end_key: b"l".to_vec(),
        ..Default::default()
    }
}

/// Counts heap bytes in use and their peak, for the whole process (fjall's threads too).
struct CountingAlloc;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_alloc(bytes: usize) {
    let now = IN_USE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call goes straight to the system allocator; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
            count_alloc(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns how far the heap in use peaked above where it started, in MiB.
fn peak_growth_mib(f: impl FnOnce()) -> u64 {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    f();
    (PEAK.load(Ordering::Relaxed).saturating_sub(before) >> 20) as u64
}

fn fill(kv: &FjallKvEngine, keys: impl Iterator<Item = u64>, prefix: &str) {
    let mut batch = KvWriteBatch::default();
    for i in keys {
        batch.put(Keyspace::Data, format!("{prefix}{i:010}"), value(i));
        if batch.size_bytes() >= 1 << 20 {
            kv.write(&std::mem::take(&mut batch)).unwrap();
        }
    }
    kv.write(&batch).unwrap();
}

#[test]
fn a_large_region_snapshots_and_applies_in_bounded_memory() {
    let mib: u64 = std::env::var("FLOTILLA_SNAPSHOT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let pairs = (mib << 20) / VALUE_BYTES as u64;
    let (leader_dir, follower_dir, snaps) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );

    let leader = FjallKvEngine::open(&KvConfig::new(leader_dir.path())).unwrap();
    fill(&leader, 0..pairs, "k");
    fill(&leader, 0..100, "a"); // a neighbour's data, not in the snapshot
    leader.persist().unwrap();

    let mut meta = None;
    let gen_growth = peak_growth_mib(|| {
        let view = leader.view();
        meta = Some(snapshot::generate(&view, &region(), 5, 100, snaps.path(), 4 << 20).unwrap());
    });
    let meta = meta.unwrap();
    let stored: u64 = meta.chunks.iter().map(|c| c.pairs).sum();
    assert_eq!(stored, pairs);
    assert!(meta.chunks.len() as u64 >= mib / 4, "4 MiB chunks");
    drop(leader);

    let mut cfg = KvConfig::new(follower_dir.path());
    cfg.memtable_bytes = MEMTABLE_BYTES;
    let follower = FjallKvEngine::open(&cfg).unwrap();
    fill(&follower, (0..pairs).step_by(97), "k"); // stale data in the range
    fill(&follower, 0..100, "z");
    follower.persist().unwrap();
    let dir = snapshot::snapshot_dir(snaps.path(), RegionId(11), 5, 100);
    let apply_growth = peak_growth_mib(|| {
        let sent = snapshot::summary(&meta);
        let verified = snapshot::verify(&dir, &sent).unwrap();
        snapshot::apply(&follower, &verified, 1 << 20).unwrap();
        follower.persist().unwrap();
    });

    let mut count = 0u64;
    for pair in follower.scan(Keyspace::Data, b"k", Some(b"l"), false) {
        let (k, v) = pair.unwrap();
        if count.is_multiple_of(4099) {
            assert_eq!((k, v), (key(count), value(count)));
        }
        count += 1;
    }
    assert_eq!(count, pairs, "the range holds exactly the snapshot");
    assert_eq!(
        follower.scan(Keyspace::Data, b"z", None, false).count(),
        100,
        "the neighbour is untouched"
    );
    assert_eq!(
        apply_state(&follower, RegionId(11))
            .unwrap()
            .unwrap()
            .applied_index,
        100
    );
    let exact = pairs * (key(0).len() + VALUE_BYTES) as u64;
    let estimate = follower.approximate_size(b"k", Some(b"l")).unwrap();
    let error = estimate.abs_diff(exact) as f64 / exact as f64;
    println!("region size: estimated {estimate} bytes, exact {exact} ({error:.3} off)");
    assert!(
        error < 0.1,
        "ingesting the snapshot rebuilt the size samples"
    );

    println!(
        "{mib} MiB region, {} chunks: peak heap growth {gen_growth} MiB generating, \
         {apply_growth} MiB verifying and applying",
        meta.chunks.len()
    );
    assert!(
        gen_growth < MAX_GENERATE_GROWTH_MIB,
        "generation grew by {gen_growth} MiB"
    );
    // Apply writes in 1 MiB batches, but fjall's flushes and compactions run alongside and
    // their transient peaks grow with the data written (about 160-250 MiB at 1 GiB): the
    // bound says something only for regions well above that.
    if mib >= 512 {
        assert!(apply_growth < mib / 2, "apply grew by {apply_growth} MiB");
    }
}
