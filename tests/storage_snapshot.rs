//! Region snapshots: generation from a read view into checksummed chunks, verification,
//! apply (clear, ingest, states last), rejection of bad chunks and mismatched metadata
//! without changes, and recovery from a crash at every step of an apply.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::proto::metapb::{Region, RegionEpoch};
use flotilla::proto::storagepb::{PeerState, RaftApplyState};
use flotilla::storage::fjall_kv::{FjallKvEngine, KvConfig};
use flotilla::storage::kv::{Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch};
use flotilla::storage::mem_kv::{MemKvEngine, MemKvView};
use flotilla::storage::region_meta::{apply_state, put_apply_state, region_state};
use flotilla::storage::snapshot::{self, SnapshotError};

fn region() -> Region {
    Region {
        id: 7,
        start_key: b"k100".to_vec(),
        end_key: b"k600".to_vec(),
        epoch: Some(RegionEpoch {
            conf_ver: 2,
            version: 3,
        }),
        peers: Vec::new(),
    }
}

fn fill(kv: &impl KvEngine, keys: impl Iterator<Item = u32>, tag: &str) {
    let mut b = KvWriteBatch::default();
    for i in keys {
        b.put(Keyspace::Data, format!("k{i:03}"), format!("{tag}{i}"));
    }
    kv.write(&b).unwrap();
}

fn data(kv: &impl KvRead) -> Vec<(Bytes, Bytes)> {
    kv.scan(Keyspace::Data, b"", None, false)
        .map(Result::unwrap)
        .collect()
}

/// A leader-side engine with the region's data (and neighbours'), snapshotted at index 40.
fn make_snapshot(
    root: &Path,
) -> (
    Vec<(Bytes, Bytes)>,
    flotilla::proto::storagepb::SnapshotMeta,
) {
    let dir = tempfile::tempdir().unwrap();
    let leader = FjallKvEngine::open(&KvConfig::new(dir.path())).unwrap();
    fill(&leader, 0..1000, "new");
    let view = leader.view();
    fill(&leader, 0..1000, "later"); // not in the snapshot
    let meta = snapshot::generate(&view, &region(), 4, 40, root, 512).unwrap();
    let expected = data(&view)
        .into_iter()
        .filter(|(k, _)| k.as_ref() >= b"k100".as_ref() && k.as_ref() < b"k600".as_ref())
        .collect();
    (expected, meta)
}

/// `make_snapshot`'s snapshot, verified: its pairs, its directory and the verified handle.
fn verified_snapshot(
    root: &Path,
) -> (
    Vec<(Bytes, Bytes)>,
    std::path::PathBuf,
    snapshot::VerifiedSnapshot,
) {
    let (expected, meta) = make_snapshot(root);
    let dir = snapshot::snapshot_dir(root, RegionId(7), 4, 40);
    let verified = snapshot::verify(&dir, &snapshot::summary(&meta)).unwrap();
    (expected, dir, verified)
}

/// A follower with stale data in the region's range and unrelated data around it.
fn follower() -> MemKvEngine {
    let kv = MemKvEngine::new();
    fill(&kv, (0..1000).step_by(3), "old");
    let mut b = KvWriteBatch::default();
    put_apply_state(
        &mut b,
        RegionId(7),
        &RaftApplyState {
            applied_index: 10,
            applied_term: 2,
            truncated_index: 5,
            truncated_term: 1,
            ..Default::default()
        },
    );
    kv.write(&b).unwrap();
    kv.persist().unwrap();
    kv
}

fn in_region(k: &[u8]) -> bool {
    k >= b"k100".as_ref() && k < b"k600".as_ref()
}

#[test]
fn generate_verify_apply() {
    let root = tempfile::tempdir().unwrap();
    let (expected, meta) = make_snapshot(root.path());
    assert_eq!(expected.len(), 500);
    // A chunk rolls over once it holds 512 bytes: each but the last holds at least that,
    // and less than one record more.
    let record = |(k, v): &(Bytes, Bytes)| (8 + k.len() + v.len()) as u64;
    let longest = expected.iter().map(record).max().unwrap();
    let (last, full) = meta.chunks.split_last().unwrap();
    assert!(full.len() > 10, "512-byte chunks: {}", meta.chunks.len());
    for c in full {
        assert!((512..512 + longest).contains(&c.bytes), "{c:?}");
    }
    assert!((1..512 + longest).contains(&last.bytes), "{last:?}");
    let total: u64 = meta.chunks.iter().map(|c| c.bytes).sum();
    assert_eq!(total, expected.iter().map(record).sum::<u64>());
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    let sent = snapshot::summary(&meta);
    let verified = snapshot::verify(&dir, &sent).unwrap();
    assert_eq!(verified.meta(), &meta);
    assert_eq!(verified.summary(), &sent);

    let kv = follower();
    let outside_before: Vec<_> = data(&kv)
        .into_iter()
        .filter(|(k, _)| !in_region(k))
        .collect();
    snapshot::apply(&kv, &verified, 4096).unwrap();
    let after = data(&kv);
    let inside: Vec<_> = after
        .iter()
        .filter(|(k, _)| in_region(k))
        .cloned()
        .collect();
    let outside: Vec<_> = after.into_iter().filter(|(k, _)| !in_region(k)).collect();
    assert_eq!(inside, expected, "the range holds exactly the snapshot");
    assert_eq!(outside, outside_before, "other regions untouched");
    let st = apply_state(&kv, RegionId(7)).unwrap().unwrap();
    assert_eq!(
        (st.applied_index, st.applied_term, st.truncated_index),
        (40, 4, 40)
    );
    let rs = region_state(&kv, RegionId(7)).unwrap().unwrap();
    assert_eq!(
        (rs.state, rs.region),
        (PeerState::Normal as i32, Some(region()))
    );
}

#[test]
fn bad_chunks_and_mismatched_metadata_are_refused_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_, meta) = make_snapshot(root.path());
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    let sent = snapshot::summary(&meta);
    let mut other_index = sent.clone();
    other_index.index = 41;
    let mut other_region = sent.clone();
    other_region.region.as_mut().unwrap().id = 8;
    let mut other_epoch = sent.clone();
    other_epoch
        .region
        .as_mut()
        .unwrap()
        .epoch
        .as_mut()
        .unwrap()
        .version = 4;
    let mut fewer_chunks = sent.clone();
    fewer_chunks.chunk_count -= 1;
    for expected in [other_index, other_region, other_epoch, fewer_chunks] {
        assert!(matches!(
            snapshot::verify(&dir, &expected),
            Err(SnapshotError::Mismatch { .. })
        ));
    }

    let chunk = dir.join("chunk-00003");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();
    let kv = follower();
    let before = data(&kv);
    match snapshot::verify(&dir, &sent) {
        Err(SnapshotError::Checksum { path }) | Err(SnapshotError::Corrupt { path, .. }) => {
            assert_eq!(path, chunk)
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert_eq!(data(&kv), before);
    assert_eq!(
        apply_state(&kv, RegionId(7))
            .unwrap()
            .unwrap()
            .applied_index,
        10
    );
}

/// An engine that crashes at its n-th write or persist, keeping the first `kept` batches
/// written since the last persist (any prefix may have reached the disk).
/// It records the size of every batch it is given.
struct Crashing {
    inner: MemKvEngine,
    steps: AtomicUsize,
    crash_at: usize,
    kept: usize,
    batch_sizes: Mutex<Vec<usize>>,
}

impl Crashing {
    fn new(inner: MemKvEngine, crash_at: usize, kept: usize) -> Self {
        Crashing {
            inner,
            steps: AtomicUsize::new(0),
            crash_at,
            kept,
            batch_sizes: Mutex::default(),
        }
    }

    fn step(&self) -> Result<(), KvError> {
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at {
            self.inner.crash_keeping(self.kept);
            return Err(KvError::Engine(Box::new(std::io::Error::other(
                "simulated crash",
            ))));
        }
        Ok(())
    }
}

impl KvRead for Crashing {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.inner.get(ks, key)
    }
    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        self.inner.scan(ks, start, end, reverse)
    }
}

impl KvEngine for Crashing {
    type View = MemKvView;
    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        self.batch_sizes.lock().unwrap().push(batch.size_bytes());
        self.step()?;
        self.inner.write(batch)
    }
    fn view(&self) -> MemKvView {
        self.inner.view()
    }
    fn persist(&self) -> Result<(), KvError> {
        self.step()?;
        self.inner.persist()
    }
}

#[test]
fn a_crash_at_any_step_of_an_apply_restarts_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let (expected, _, verified) = verified_snapshot(root.path());
    let old = data(&follower());
    let mut crashes = 0;
    'points: for crash_at in 1.. {
        for kept in 0..8 {
            let kv = Crashing::new(follower(), crash_at, kept);
            let applied = snapshot::apply(&kv, &verified, 512).and_then(|()| Ok(kv.persist()?));
            if applied.is_ok() {
                assert!(crash_at > 3, "an apply takes several steps");
                break 'points;
            }
            crashes += 1;
            // Restart: recovery finishes an interrupted apply, or there is nothing to do.
            let report = snapshot::recover(&kv.inner, root.path(), 512).unwrap();
            assert!(report.awaiting_snapshot.is_empty());
            let resumed = report.resumed;
            let st = apply_state(&kv.inner, RegionId(7)).unwrap().unwrap();
            let rs = region_state(&kv.inner, RegionId(7)).unwrap();
            let now = data(&kv.inner);
            let at =
                format!("crash at step {crash_at} keeping {kept} batches, resumed {resumed:?}");
            if st.applied_index == 40 {
                assert_eq!(rs.unwrap().state, PeerState::Normal as i32, "{at}");
                let inside: Vec<_> = now.into_iter().filter(|(k, _)| in_region(k)).collect();
                assert_eq!(inside, expected, "{at}");
            } else {
                assert_eq!(st.applied_index, 10, "{at}");
                assert!(rs.is_none(), "{at}: no marker means nothing began");
                assert_eq!(now, old, "{at}: untouched");
            }
        }
    }
    assert!(crashes >= 20, "crashes injected: {crashes}");
}

#[test]
fn leftover_temporary_files_are_removed_on_restart() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("7_4_41.tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("chunk-00000"), b"half written").unwrap();
    let kv = MemKvEngine::new();
    assert_eq!(
        snapshot::recover(&kv, root.path(), 1024).unwrap(),
        snapshot::RecoverReport::default()
    );
    assert!(!tmp.exists());
}

/// The meta file carries its own checksum: truncated (even at a chunk boundary) or with a
/// flipped bit anywhere (a start key, an epoch), it is refused; rewritten consistently but
/// describing another range, it no longer matches what the leader sent.
#[test]
fn a_damaged_or_rewritten_meta_file_is_refused() {
    use prost::Message as _;
    let root = tempfile::tempdir().unwrap();
    let (_, meta) = make_snapshot(root.path());
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    let sent = snapshot::summary(&meta);
    let path = dir.join("meta");
    let original = std::fs::read(&path).unwrap();
    let body = original.len() - 4;
    // Cut after the region and the first chunk (a record boundary), and bit flips.
    let mut one_chunk = meta.clone();
    one_chunk.chunks.truncate(1);
    let cut = one_chunk.encoded_len();
    let mut damaged: Vec<Vec<u8>> = vec![original[..cut].to_vec(), original[..body].to_vec()];
    for at in [3, 10, body / 2, body - 1, body + 1] {
        let mut b = original.clone();
        b[at] ^= 0x04;
        damaged.push(b);
    }
    for (i, bytes) in damaged.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let r = snapshot::verify(&dir, &sent);
        assert!(
            matches!(
                r,
                Err(SnapshotError::Checksum { .. } | SnapshotError::Corrupt { .. })
            ),
            "damage {i}: {r:?}"
        );
    }
    // A consistent meta of a wider range (a neighbour's keys would be cleared).
    let mut wider = meta.clone();
    wider.region.as_mut().unwrap().start_key = b"k000".to_vec();
    let mut raw = wider.encode_to_vec();
    raw.extend_from_slice(&crc32fast::hash(&raw).to_le_bytes());
    std::fs::write(&path, raw).unwrap();
    assert!(matches!(
        snapshot::verify(&dir, &sent),
        Err(SnapshotError::Mismatch { .. })
    ));
    std::fs::write(&path, &original).unwrap();
    snapshot::verify(&dir, &sent).unwrap();
}

/// Recovery finishes the snapshot the Applying mark names, even when a newer snapshot
/// directory of the same region sits beside it.
#[test]
fn recovery_finishes_the_snapshot_the_mark_names() {
    let root = tempfile::tempdir().unwrap();
    let (expected, meta) = make_snapshot(root.path());
    // A newer snapshot of the same region, with other data, that was never applied.
    let other = tempfile::tempdir().unwrap();
    let leader = FjallKvEngine::open(&KvConfig::new(other.path())).unwrap();
    fill(&leader, 0..1000, "newer");
    snapshot::generate(&leader.view(), &region(), 5, 90, root.path(), 512).unwrap();

    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    let verified = snapshot::verify(&dir, &snapshot::summary(&meta)).unwrap();
    // Crashes after the mark, part way through the ingest.
    let kv = Crashing::new(follower(), 4, 1);
    assert!(snapshot::apply(&kv, &verified, 512).is_err());
    let report = snapshot::recover(&kv.inner, root.path(), 512).unwrap();
    assert_eq!(report.resumed, vec![RegionId(7)]);
    let inside: Vec<_> = data(&kv.inner)
        .into_iter()
        .filter(|(k, _)| in_region(k))
        .collect();
    assert_eq!(inside, expected, "the snapshot at 40, not the one at 90");
    assert_eq!(
        apply_state(&kv.inner, RegionId(7))
            .unwrap()
            .unwrap()
            .applied_index,
        40
    );
}

/// A chunk damaged after `verify` fails the apply part way; the store still starts:
/// recovery clears the range and leaves the region waiting for a new snapshot, with the
/// neighbours untouched.
#[test]
fn a_chunk_damaged_after_verify_voids_the_region_and_the_store_starts() {
    let root = tempfile::tempdir().unwrap();
    let (_, dir, verified) = verified_snapshot(root.path());
    let chunk = dir.join("chunk-00005");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();

    let kv = follower();
    let outside_before: Vec<_> = data(&kv)
        .into_iter()
        .filter(|(k, _)| !in_region(k))
        .collect();
    assert!(matches!(
        snapshot::apply(&kv, &verified, 512),
        Err(SnapshotError::Checksum { .. } | SnapshotError::Corrupt { .. })
    ));
    kv.crash(); // what was not persisted is lost, as in a crash right after the failure
    let report = snapshot::recover(&kv, root.path(), 512).unwrap();
    assert_eq!(report.awaiting_snapshot, vec![RegionId(7)]);
    let rs = region_state(&kv, RegionId(7)).unwrap().unwrap();
    assert_eq!((rs.state, rs.applying), (PeerState::Applying as i32, None));
    let now = data(&kv);
    assert!(now.iter().all(|(k, _)| !in_region(k)), "the range is empty");
    assert_eq!(now, outside_before, "neighbours untouched");
    // A second restart changes nothing.
    let again = snapshot::recover(&kv, root.path(), 512).unwrap();
    assert_eq!(again.awaiting_snapshot, vec![RegionId(7)]);
}

/// A read view that holds one pair, whatever its size (an engine would refuse it).
struct OnePair(Vec<u8>, Vec<u8>);

impl KvRead for OnePair {
    fn get(&self, _: Keyspace, _: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(None)
    }
    fn scan<'a>(&'a self, _: Keyspace, _: &[u8], _: Option<&[u8]>, _: bool) -> KvIter<'a> {
        let pair = (Bytes::from(self.0.clone()), Bytes::from(self.1.clone()));
        Box::new(std::iter::once(Ok(pair)))
    }
}

/// A snapshot holding a key the engine cannot take is refused by `verify`, so its apply
/// can never fail half way on it (and a restart never fails on it either).
#[test]
fn verify_refuses_keys_and_values_the_engine_cannot_take() {
    let root = tempfile::tempdir().unwrap();
    let mut key = b"k2".to_vec();
    key.resize(flotilla::storage::kv::MAX_KEY_BYTES + 1, b'x');
    let meta = snapshot::generate(
        &OnePair(key, b"v".to_vec()),
        &region(),
        4,
        50,
        root.path(),
        512,
    )
    .unwrap();
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 50);
    assert!(matches!(
        snapshot::verify(&dir, &snapshot::summary(&meta)),
        Err(SnapshotError::Kv(KvError::InvalidKey { .. }))
    ));
}

/// A snapshot whose files vanish after the apply began: the restart voids the region
/// instead of refusing to start.
#[test]
fn a_snapshot_gone_after_the_apply_began_voids_the_region() {
    let root = tempfile::tempdir().unwrap();
    let (_, dir, verified) = verified_snapshot(root.path());
    let kv = Crashing::new(follower(), 4, 1);
    assert!(snapshot::apply(&kv, &verified, 512).is_err());
    std::fs::remove_file(dir.join("chunk-00002")).unwrap();
    let report = snapshot::recover(&kv.inner, root.path(), 512).unwrap();
    assert_eq!(report.awaiting_snapshot, vec![RegionId(7)]);
    assert!(data(&kv.inner).iter().all(|(k, _)| !in_region(k)));
}

/// Clearing the range and ingesting the chunks go in batches of about `batch_bytes`:
/// never one batch holding the whole region, nor a batch per key.
#[test]
fn an_apply_writes_batches_of_about_the_size_asked() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, verified) = verified_snapshot(root.path());
    let kv = Crashing::new(follower(), usize::MAX, 0);
    snapshot::apply(&kv, &verified, 256).unwrap();
    let sizes = kv.batch_sizes.lock().unwrap().clone();
    // First the mark, last the final data with the states; in between the data batches,
    // each past 256 bytes by less than one key's write (with its size sample) here.
    let data_batches = &sizes[1..sizes.len() - 1];
    assert!(data_batches.len() > 10, "{sizes:?}");
    assert!(data_batches.iter().all(|&s| s < 256 + 64), "{sizes:?}");
    // Below the size: only the last batch of the clear.
    let small = data_batches.iter().filter(|&&s| s < 256).count();
    assert!(small <= 1, "{sizes:?}");
}

/// `remove` deletes a snapshot's files; a second removal finds nothing and says so.
#[test]
fn a_removed_snapshot_is_gone() {
    let root = tempfile::tempdir().unwrap();
    make_snapshot(root.path());
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    assert!(dir.join("chunk-00000").exists());
    snapshot::remove(&dir).unwrap();
    assert!(!dir.exists());
    assert!(matches!(
        snapshot::remove(&dir),
        Err(SnapshotError::Io { .. })
    ));
}

/// A snapshot received from another store is a whole copy under the receiver's root, with
/// the same name, that verifies against the sender's summary; a failed copy leaves only a
/// temporary directory, which `recover` removes.
#[test]
fn a_received_snapshot_is_a_whole_copy_that_verifies() {
    let sender = tempfile::tempdir().unwrap();
    let receiver = tempfile::tempdir().unwrap();
    let (_, meta) = make_snapshot(sender.path());
    let sent = snapshot::snapshot_dir(sender.path(), RegionId(7), 4, 40);
    let got = snapshot::receive(&sent, receiver.path()).unwrap();
    assert_eq!(
        got,
        snapshot::snapshot_dir(receiver.path(), RegionId(7), 4, 40)
    );
    snapshot::verify(&got, &snapshot::summary(&meta)).unwrap();
    // Receiving it again replaces the copy.
    snapshot::receive(&sent, receiver.path()).unwrap();
    snapshot::verify(&got, &snapshot::summary(&meta)).unwrap();
    // Nothing to copy: refused, no directory left in place.
    let missing = sender.path().join("7_9_90");
    assert!(matches!(
        snapshot::receive(&missing, receiver.path()),
        Err(SnapshotError::Io { .. })
    ));
    assert!(!receiver.path().join("7_9_90").exists());
    let kv = MemKvEngine::new();
    snapshot::recover(&kv, receiver.path(), 1 << 20).unwrap();
    let left: Vec<_> = std::fs::read_dir(receiver.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("7_4_40")]);
}

/// A generated snapshot's directory fits the bounds its summary gives a receiver: exactly
/// its files, and its bytes within the allowance.
#[test]
fn a_snapshot_directory_fits_the_staging_bounds_of_its_summary() {
    let root = tempfile::tempdir().unwrap();
    let (_, meta) = make_snapshot(root.path());
    let dir = snapshot::snapshot_dir(root.path(), RegionId(7), 4, 40);
    let bounds = snapshot::staging_bounds(&snapshot::summary(&meta));
    let sizes: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert!(meta.chunks.len() > 1, "several chunks");
    assert_eq!(sizes.len() as u64, bounds.files);
    assert!(sizes.iter().sum::<u64>() <= bounds.bytes);
}

/// The meta file's allowance holds the largest a meta file can be: a region with the
/// longest keys and a hundred thousand chunk records whose numbers take the most bytes.
#[test]
fn the_staging_bounds_hold_the_largest_meta_file() {
    use prost::Message as _;
    let key = vec![0xff; flotilla::storage::kv::MAX_KEY_BYTES];
    let meta = flotilla::proto::storagepb::SnapshotMeta {
        region: Some(Region {
            id: u64::MAX,
            start_key: key.clone(),
            end_key: key,
            epoch: Some(RegionEpoch {
                conf_ver: u64::MAX,
                version: u64::MAX,
            }),
            peers: (0..100)
                .map(|i| flotilla::proto::metapb::Peer {
                    id: u64::MAX - i,
                    store_id: u64::MAX - i,
                    role: 2,
                })
                .collect(),
        }),
        index: u64::MAX,
        term: u64::MAX,
        chunks: (0..100_000)
            .map(|_| flotilla::proto::storagepb::ChunkMeta {
                crc32: u32::MAX,
                bytes: 1 << 40,
                pairs: u64::MAX,
            })
            .collect(),
    };
    let fits = |meta: &flotilla::proto::storagepb::SnapshotMeta| {
        let summary = snapshot::summary(meta);
        let bounds = snapshot::staging_bounds(&summary);
        let meta_file = meta.encoded_len() as u64 + 4;
        assert_eq!(bounds.files, meta.chunks.len() as u64 + 1);
        assert!(
            summary.total_bytes + meta_file <= bounds.bytes,
            "{meta_file} bytes of meta file, {} of allowance",
            bounds.bytes - summary.total_bytes
        );
        meta_file
    };
    assert!(
        fits(&meta) > 2 << 20,
        "the records outgrow the base allowance"
    );
    // With one chunk, the region is most of the file.
    let one_chunk = flotilla::proto::storagepb::SnapshotMeta {
        chunks: meta.chunks[..1].to_vec(),
        ..meta.clone()
    };
    assert!(fits(&one_chunk) > 16 << 10);
}

/// A summary cannot buy more files than its bytes can fill: every chunk holds at least one
/// record of 8 bytes or more.
#[test]
fn a_summary_announcing_more_chunks_than_its_bytes_fill_stages_fewer_files() {
    let summary = |chunk_count, total_bytes| flotilla::proto::storagepb::SnapshotSummary {
        chunk_count,
        total_bytes,
        ..Default::default()
    };
    assert_eq!(snapshot::staging_bounds(&summary(u32::MAX, 80)).files, 11);
    assert_eq!(snapshot::staging_bounds(&summary(u32::MAX, 0)).files, 1);
    assert_eq!(snapshot::staging_bounds(&summary(3, 800)).files, 4);
}
