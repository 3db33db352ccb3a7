//! `KvEngine` on fjall: one database per store, a keyspace per `Keyspace`. A write batch
//! becomes one fjall batch (atomic across keyspaces); range deletes are expanded to the
//! keys present, since fjall has no range tombstone.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};

use super::kv::{Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch, WriteOp, bounds};

fn err(e: impl std::fmt::Display) -> KvError {
    KvError::Engine(e.to_string())
}

pub struct FjallKvEngine {
    db: Database,
    data: fjall::Keyspace,
    meta: fjall::Keyspace,
}

/// A point-in-time view of every keyspace.
pub struct FjallKvView {
    snapshot: fjall::Snapshot,
    data: fjall::Keyspace,
    meta: fjall::Keyspace,
}

impl FjallKvEngine {
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = Database::builder(path).open().map_err(err)?;
        let data = db
            .keyspace(Keyspace::Data.name(), KeyspaceCreateOptions::default)
            .map_err(err)?;
        let meta = db
            .keyspace(Keyspace::Meta.name(), KeyspaceCreateOptions::default)
            .map_err(err)?;
        Ok(FjallKvEngine { db, data, meta })
    }

    fn keyspace(&self, ks: Keyspace) -> &fjall::Keyspace {
        match ks {
            Keyspace::Data => &self.data,
            Keyspace::Meta => &self.meta,
        }
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

fn scan_iter<'a>(iter: fjall::Iter, reverse: bool) -> KvIter<'a> {
    let pairs = iter.map(|guard| {
        let (k, v) = guard.into_inner().map_err(err)?;
        Ok((Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)))
    });
    if reverse {
        Box::new(pairs.rev())
    } else {
        Box::new(pairs)
    }
}

fn empty_range(start: &[u8], end: Option<&[u8]>) -> bool {
    end.is_some_and(|e| e <= start)
}

impl KvRead for FjallKvView {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        let keyspace = if ks == Keyspace::Data {
            &self.data
        } else {
            &self.meta
        };
        let value = self.snapshot.get(keyspace, key).map_err(err)?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        if empty_range(start, end) {
            return Box::new(std::iter::empty());
        }
        let keyspace = if ks == Keyspace::Data {
            &self.data
        } else {
            &self.meta
        };
        scan_iter(self.snapshot.range(keyspace, bounds(start, end)), reverse)
    }
}

impl KvRead for FjallKvEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        let value = self.keyspace(ks).get(key).map_err(err)?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        if empty_range(start, end) {
            return Box::new(std::iter::empty());
        }
        scan_iter(self.keyspace(ks).range(bounds(start, end)), reverse)
    }
}

impl KvEngine for FjallKvEngine {
    type View = FjallKvView;

    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
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
            data: self.data.clone(),
            meta: self.meta.clone(),
        }
    }

    /// Computed by a scan of the range (exact, and as costly as reading it).
    fn approximate_size(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<u64, KvError> {
        let mut total = 0u64;
        for pair in self.scan(ks, start, end, false) {
            let (k, v) = pair?;
            total += (k.len() + v.len()) as u64;
        }
        Ok(total)
    }

    fn persist(&self) -> Result<(), KvError> {
        self.db.persist(PersistMode::SyncAll).map_err(err)
    }
}
