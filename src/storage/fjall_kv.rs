//! `KvEngine` on fjall: one database per store and ONE fjall keyspace, in which each
//! `Keyspace` is a key prefix. Data and the apply state that describes it must survive
//! together: in separate fjall keyspaces they flush separately, and damage to the shared
//! journal then left the data's flushed tables newer than the apply state (a replay from
//! the older index would re-evaluate commands over newer data). One keyspace has one
//! memtable, so one flush carries both. A write batch becomes one fjall batch; range
//! deletes are expanded to the keys present, since fjall has no range tombstone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};

use super::kv::{
    Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch, WriteOp, bounds, in_order,
};

/// The one fjall keyspace that holds every `Keyspace`.
const KEYSPACE: &str = "kv";

fn err(e: fjall::Error) -> KvError {
    KvError::Engine(Box::new(e))
}

/// Checks each lsm-tree version file against the checksum its `current` file records.
/// lsm-tree trusts the version file on open, and a damaged length field in it made the
/// process panic (or try to allocate about 137 GB); a mismatch is refused here instead.
fn check_version_files(dir: &Path) -> Result<(), KvError> {
    let Ok(trees) = std::fs::read_dir(dir.join("keyspaces")) else {
        return Ok(()); // A new database.
    };
    for tree in trees.flatten() {
        let current = tree.path().join("current");
        let Ok(raw) = std::fs::read(&current) else {
            continue; // lsm-tree reports a missing file itself.
        };
        let corrupt = |file: PathBuf, what: String| KvError::CorruptFile { file, what };
        // Version id (u64), xxh3-128 of the version file (u128), checksum type (0: xxh3).
        // Another layout (a newer lsm-tree) is left to lsm-tree; the damage test would
        // show that this check no longer runs.
        if raw.len() != 25 || raw[24] != 0 {
            continue;
        }
        let id = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
        let expected = u128::from_le_bytes(raw[8..24].try_into().expect("16 bytes"));
        let version = tree.path().join(format!("v{id}"));
        let bytes = std::fs::read(&version)
            .map_err(|e| corrupt(version.clone(), format!("unreadable: {e}")))?;
        if xxhash_rust::xxh3::xxh3_128(&bytes) != expected {
            return Err(corrupt(version, "fails its checksum".into()));
        }
    }
    Ok(())
}

/// The prefix that holds each `Keyspace` inside the one fjall keyspace.
fn prefix(ks: Keyspace) -> u8 {
    match ks {
        Keyspace::Data => b'd',
        Keyspace::Meta => b'm',
    }
}

fn stored_key(ks: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix(ks));
    k.extend_from_slice(key);
    k
}

/// The stored range of `[start, end)` in `ks` (`end` None: the end of the keyspace).
fn stored_range(ks: Keyspace, start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let end = end.map_or_else(|| vec![prefix(ks) + 1], |e| stored_key(ks, e));
    (stored_key(ks, start), end)
}

/// Settings of the store's KV engine.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// Directory of the fjall database (one per store).
    pub dir: PathBuf,
    /// Block cache shared by all keyspaces. Default 32 MiB.
    pub cache_bytes: u64,
    /// The memtable is sealed and flushed at this size. Writers wait while four sealed
    /// memtables are queued, so the engine buffers at most five. Default 64 MiB. fjall keeps
    /// the value an existing keyspace was created with.
    pub memtable_bytes: u64,
}

impl KvConfig {
    /// Settings for a database in `dir`, every other setting at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KvConfig {
            dir: dir.into(),
            cache_bytes: 32 << 20,
            memtable_bytes: 64 << 20,
        }
    }
}

/// The on-disk `KvEngine`: one fjall database, each keyspace under its own key prefix.
pub struct FjallKvEngine {
    db: Database,
    keyspace: fjall::Keyspace,
    /// A batch with a range delete holds it exclusively from its expansion (reading the
    /// keys present) to its commit, so no other write lands in between: range deletes are
    /// atomic against writers. Other batches share it and do not wait for one another.
    writer: parking_lot::RwLock<()>,
}

/// A point-in-time view of every keyspace.
pub struct FjallKvView {
    snapshot: fjall::Snapshot,
    keyspace: fjall::Keyspace,
}

impl FjallKvEngine {
    /// Opens the database in `cfg.dir`, creating it if new. A damaged lsm-tree version file is
    /// refused first, as `KvError::CorruptFile`.
    pub fn open(cfg: &KvConfig) -> Result<Self, KvError> {
        check_version_files(&cfg.dir)?;
        let db = Database::builder(&cfg.dir)
            .cache_size(cfg.cache_bytes)
            .open()
            .map_err(err)?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(cfg.memtable_bytes);
        let keyspace = db.keyspace(KEYSPACE, options).map_err(err)?;
        Ok(FjallKvEngine {
            db,
            keyspace,
            writer: parking_lot::RwLock::new(()),
        })
    }

    /// The net effect of the batch per key (None: deleted), so that the fjall batch holds
    /// each key once (within one batch all writes share a sequence number).
    fn effects(
        &self,
        batch: &KvWriteBatch,
    ) -> Result<BTreeMap<(Keyspace, Bytes), Option<Bytes>>, KvError> {
        let mut effects = BTreeMap::new();
        for op in batch.ops() {
            match op {
                WriteOp::Put { ks, key, value } => {
                    effects.insert((*ks, key.clone()), Some(value.clone()));
                }
                WriteOp::Delete { ks, key } => {
                    effects.insert((*ks, key.clone()), None);
                }
                WriteOp::DeleteRange { ks, start, end } => {
                    for pair in self.scan(*ks, start, end.as_deref(), false) {
                        effects.insert((*ks, pair?.0), None);
                    }
                    // Keys this batch put earlier in the range go too.
                    let in_range = |k: &Bytes| k >= start && end.as_ref().is_none_or(|e| k < e);
                    for ((k_ks, k), v) in effects.iter_mut() {
                        if k_ks == ks && in_range(k) {
                            *v = None;
                        }
                    }
                }
            }
        }
        Ok(effects)
    }
}

fn snapshot_get(
    snapshot: &fjall::Snapshot,
    keyspace: &fjall::Keyspace,
    ks: Keyspace,
    key: &[u8],
) -> Result<Option<Bytes>, KvError> {
    let value = snapshot.get(keyspace, stored_key(ks, key)).map_err(err)?;
    Ok(value.map(|v| Bytes::copy_from_slice(&v)))
}

/// The iterator keeps its own hold on the snapshot, so it may outlive `snapshot`.
fn snapshot_scan<'a>(
    snapshot: &fjall::Snapshot,
    keyspace: &fjall::Keyspace,
    ks: Keyspace,
    start: &[u8],
    end: Option<&[u8]>,
    reverse: bool,
) -> KvIter<'a> {
    if end.is_some_and(|e| e <= start) {
        return Box::new(std::iter::empty());
    }
    let (start, end) = stored_range(ks, start, end);
    let pairs = snapshot
        .range(keyspace, bounds(&start, Some(&end)))
        .map(|guard| {
            let (k, v) = guard.into_inner().map_err(err)?;
            // Every stored key has its one-byte prefix.
            Ok((Bytes::copy_from_slice(&k[1..]), Bytes::copy_from_slice(&v)))
        });
    in_order(pairs, reverse)
}

impl KvRead for FjallKvView {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        snapshot_get(&self.snapshot, &self.keyspace, ks, key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        snapshot_scan(&self.snapshot, &self.keyspace, ks, start, end, reverse)
    }
}

/// Reads of the live engine are reads of a snapshot taken for the occasion.
impl KvRead for FjallKvEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        snapshot_get(&self.db.snapshot(), &self.keyspace, ks, key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        snapshot_scan(&self.db.snapshot(), &self.keyspace, ks, start, end, reverse)
    }
}

impl KvEngine for FjallKvEngine {
    type View = FjallKvView;

    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        batch.check()?;
        let has_range_delete = batch
            .ops()
            .iter()
            .any(|op| matches!(op, WriteOp::DeleteRange { .. }));
        let _shared;
        let _exclusive;
        if has_range_delete {
            _exclusive = self.writer.write();
        } else {
            _shared = self.writer.read();
        }
        let mut b = self.db.batch();
        for ((ks, key), value) in self.effects(batch)? {
            match value {
                Some(v) => b.insert(&self.keyspace, stored_key(ks, &key), v.as_ref()),
                None => b.remove(&self.keyspace, stored_key(ks, &key)),
            }
        }
        b.commit().map_err(err)
    }

    fn view(&self) -> FjallKvView {
        FjallKvView {
            snapshot: self.db.snapshot(),
            keyspace: self.keyspace.clone(),
        }
    }

    fn persist(&self) -> Result<(), KvError> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }
}
