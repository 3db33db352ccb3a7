//! An in-memory `KvEngine` with explicit durability for deterministic tests: `persist`
//! marks what is durable, and `crash` forgets everything written after it. A volatile one
//! (`MemDurability::Volatile`) keeps no durable copy: the in-memory embedded mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::journaled::Journaled;
use super::kv::{
    Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch, WriteOp, bounds, in_order,
};
use super::{MemDurability, SyncMode};

type Tables = BTreeMap<Keyspace, BTreeMap<Bytes, Bytes>>;

/// The in-memory `KvEngine`: a write is visible at once, and survives `crash` only once
/// `persist` follows it (`crash_keeping` may keep a prefix of the rest); when volatile,
/// nothing survives a crash.
pub struct MemKvEngine {
    state: Mutex<Journaled<Tables, KvWriteBatch>>,
}

/// A point-in-time view: an immutable share of the tables (writes copy on write).
#[derive(Clone)]
pub struct MemKvView(Arc<Tables>);

impl Default for MemKvEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemKvEngine {
    /// An empty engine with simulated durability: nothing written, nothing durable.
    pub fn new() -> Self {
        Self::with_durability(MemDurability::Simulated)
    }

    /// An empty engine that keeps for a crash what `durability` says.
    pub fn with_durability(durability: MemDurability) -> Self {
        MemKvEngine {
            state: Mutex::new(Journaled::new(durability)),
        }
    }

    /// A simulated crash: everything not persisted is lost.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// A crash after which the first `kept` batches written since the last persist
    /// survive (a real engine's journal may reach the disk on its own, but in order).
    pub fn crash_keeping(&self, kept: usize) {
        self.state.lock().crash_keeping(kept, apply_batch);
    }

    /// A crash at this instant, though the store writing here runs on until it is
    /// stopped: every write and persist fails from now on, and the `crash` or
    /// `crash_keeping` that follows keeps what was durable at the cut (and ends the
    /// outage).
    pub fn cut_power(&self) {
        self.state.lock().cut_power();
    }

    /// Batches written since the last persist: what a crash may lose.
    pub fn unsynced_batches(&self) -> usize {
        self.state.lock().unsynced()
    }

    fn snapshot(&self) -> MemKvView {
        MemKvView(self.state.lock().live().clone())
    }
}

fn apply_batch(tables: &mut Tables, batch: &KvWriteBatch) {
    for op in batch.ops() {
        apply(tables, op);
    }
}

fn apply(tables: &mut Tables, op: &WriteOp) {
    match op {
        WriteOp::Put { ks, key, value } => {
            tables
                .entry(*ks)
                .or_default()
                .insert(key.clone(), value.clone());
        }
        WriteOp::Delete { ks, key } => {
            if let Some(t) = tables.get_mut(ks) {
                t.remove(key);
            }
        }
        WriteOp::DeleteRange { ks, start, end } => {
            if let Some(t) = tables.get_mut(ks)
                && end.as_ref().is_none_or(|e| start < e)
            {
                let (lo, hi) = bounds(start, end.as_deref());
                let range = t.range::<[u8], _>((
                    lo.as_ref().map(Vec::as_slice),
                    hi.as_ref().map(Vec::as_slice),
                ));
                let doomed: Vec<Bytes> = range.map(|(k, _)| k.clone()).collect();
                for k in doomed {
                    t.remove(&k);
                }
            }
        }
    }
}

impl KvRead for MemKvView {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(self.0.get(&ks).and_then(|t| t.get(key)).cloned())
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        let Some(t) = self.0.get(&ks) else {
            return Box::new(std::iter::empty());
        };
        if end.is_some_and(|e| e <= start) {
            return Box::new(std::iter::empty());
        }
        let (lo, hi) = bounds(start, end);
        let range = t.range::<[u8], _>((
            lo.as_ref().map(Vec::as_slice),
            hi.as_ref().map(Vec::as_slice),
        ));
        let pairs = range.map(|(k, v)| Ok((k.clone(), v.clone())));
        in_order(pairs, reverse)
    }
}

impl KvRead for MemKvEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.snapshot().get(ks, key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        let view = self.snapshot();
        let pairs: Vec<_> = view.scan(ks, start, end, reverse).collect();
        Box::new(pairs.into_iter())
    }
}

impl KvEngine for MemKvEngine {
    type View = MemKvView;

    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        batch.check()?;
        self.state
            .lock()
            .write(batch, apply_batch, SyncMode::NoSync)
            .map_err(|cut| KvError::Engine(Box::new(cut)))
    }

    fn view(&self) -> MemKvView {
        self.snapshot()
    }

    fn persist(&self) -> Result<(), KvError> {
        self.state
            .lock()
            .sync(apply_batch)
            .map_err(|cut| KvError::Engine(Box::new(cut)))
    }
}
