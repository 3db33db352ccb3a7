//! `KvEngine` on fjall: one database per store, a keyspace per `Keyspace`. A write batch
//! becomes one fjall batch (atomic across keyspaces); range deletes are expanded to the
//! keys present, since fjall has no range tombstone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};

use super::kv::{
    Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch, WriteOp, bounds, in_order,
};

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Engine(e.to_string())
}

/// The fjall keyspace behind each `Keyspace`.
#[derive(Clone)]
struct Keyspaces {
    data: fjall::Keyspace,
    meta: fjall::Keyspace,
}

impl Keyspaces {
    fn get(&self, ks: Keyspace) -> &fjall::Keyspace {
        match ks {
            Keyspace::Data => &self.data,
            Keyspace::Meta => &self.meta,
        }
    }
}

/// Settings of the store's KV engine.
#[derive(Debug, Clone)]
pub struct KvConfig {
    pub dir: PathBuf,
    /// Block cache shared by all keyspaces. Default 32 MiB.
    pub cache_bytes: u64,
    /// A keyspace's memtable is sealed and flushed at this size. Writers wait while four
    /// sealed memtables are queued, so a keyspace buffers at most five. Default 64 MiB.
    /// fjall keeps the value an existing keyspace was created with.
    pub memtable_bytes: u64,
}

impl KvConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KvConfig {
            dir: dir.into(),
            cache_bytes: 32 << 20,
            memtable_bytes: 64 << 20,
        }
    }
}

pub struct FjallKvEngine {
    db: Database,
    keyspaces: Keyspaces,
    /// Held from a batch's expansion (a range delete reads the keys present) to its commit,
    /// so that no other write lands in between: range deletes are atomic against writers.
    writer: parking_lot::Mutex<()>,
}

/// A point-in-time view of every keyspace.
pub struct FjallKvView {
    snapshot: fjall::Snapshot,
    keyspaces: Keyspaces,
}

impl FjallKvEngine {
    pub fn open(cfg: &KvConfig) -> Result<Self, KvError> {
        let db = Database::builder(&cfg.dir)
            .cache_size(cfg.cache_bytes)
            .open()
            .map_err(err)?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(cfg.memtable_bytes);
        let open = |ks: Keyspace| db.keyspace(ks.name(), options).map_err(err);
        let keyspaces = Keyspaces {
            data: open(Keyspace::Data)?,
            meta: open(Keyspace::Meta)?,
        };
        Ok(FjallKvEngine {
            db,
            keyspaces,
            writer: parking_lot::Mutex::new(()),
        })
    }

    fn keyspace(&self, ks: Keyspace) -> &fjall::Keyspace {
        self.keyspaces.get(ks)
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
    key: &[u8],
) -> Result<Option<Bytes>, KvError> {
    let value = snapshot.get(keyspace, key).map_err(err)?;
    Ok(value.map(|v| Bytes::copy_from_slice(&v)))
}

/// The iterator keeps its own hold on the snapshot, so it may outlive `snapshot`.
fn snapshot_scan<'a>(
    snapshot: &fjall::Snapshot,
    keyspace: &fjall::Keyspace,
    start: &[u8],
    end: Option<&[u8]>,
    reverse: bool,
) -> KvIter<'a> {
    if end.is_some_and(|e| e <= start) {
        return Box::new(std::iter::empty());
    }
    let pairs = snapshot.range(keyspace, bounds(start, end)).map(|guard| {
        let (k, v) = guard.into_inner().map_err(err)?;
        Ok((Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)))
    });
    in_order(pairs, reverse)
}

impl KvRead for FjallKvView {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        snapshot_get(&self.snapshot, self.keyspaces.get(ks), key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        snapshot_scan(&self.snapshot, self.keyspaces.get(ks), start, end, reverse)
    }
}

/// Reads of the live engine are reads of a snapshot taken for the occasion.
impl KvRead for FjallKvEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        snapshot_get(&self.db.snapshot(), self.keyspace(ks), key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        snapshot_scan(&self.db.snapshot(), self.keyspace(ks), start, end, reverse)
    }
}

impl KvEngine for FjallKvEngine {
    type View = FjallKvView;

    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        batch.check()?;
        let _serialized = self.writer.lock();
        let mut b = self.db.batch();
        for ((ks, key), value) in self.effects(batch)? {
            match value {
                Some(v) => b.insert(self.keyspace(ks), key.as_ref(), v.as_ref()),
                None => b.remove(self.keyspace(ks), key.as_ref()),
            }
        }
        b.commit().map_err(err)
    }

    fn view(&self) -> FjallKvView {
        FjallKvView {
            snapshot: self.db.snapshot(),
            keyspaces: self.keyspaces.clone(),
        }
    }

    fn persist(&self) -> Result<(), KvError> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }
}
