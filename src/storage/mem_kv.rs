//! An in-memory `KvEngine` with explicit durability for deterministic tests: `persist`
//! marks what is durable, and `crash` forgets everything written after it. A volatile one
//! (`MemDurability::Volatile`) keeps no durable copy: the in-memory embedded mode.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::journaled::Journaled;
use super::kv::{
    Keyspace, KvEngine, KvError, KvIter, KvRead, KvWriteBatch, WriteOp, bounds, in_order,
};
use super::{MemDurability, SyncMode};

type Tables = BTreeMap<Keyspace, BTreeMap<MemKey, Bytes>>;

/// A key as the in-memory tables hold it, with its first 16 bytes kept as one big-endian
/// number (zeros past its end) ahead of the bytes themselves: ordered by head, then bytes
/// (the derived order, field by field), a comparison calls `memcmp` only for keys equal in
/// their first 16 bytes. That is the bytes' own order: where two heads differ, they differ
/// at a byte that one key has and the other has not or has smaller. A write's key meets
/// about a dozen others on its way down the tree, and a call to `memcmp` for each was a
/// sixth of an in-memory store's apply.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MemKey {
    head: u128,
    key: Bytes,
}

impl MemKey {
    fn new(key: Bytes) -> Self {
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        MemKey {
            head: u128::from_be_bytes(head),
            key,
        }
    }
}

/// Lookups by `&[u8]` order as `MemKey` does: both are the bytes' lexicographic order.
impl Borrow<[u8]> for MemKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

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
    apply_owned(tables, op.clone());
}

/// Applies `op`, the tables keeping its key and value.
fn apply_owned(tables: &mut Tables, op: WriteOp) {
    match op {
        WriteOp::Put { ks, key, value } => {
            tables
                .entry(ks)
                .or_default()
                .insert(MemKey::new(key), value);
        }
        WriteOp::Delete { ks, key } => {
            if let Some(t) = tables.get_mut(&ks) {
                t.remove(&MemKey::new(key));
            }
        }
        WriteOp::DeleteRange { ks, start, end } => {
            if let Some(t) = tables.get_mut(&ks)
                && end.as_ref().is_none_or(|e| start < e)
            {
                let (lo, hi) = bounds(&start, end.as_deref());
                let range = t.range::<[u8], _>((
                    lo.as_ref().map(Vec::as_slice),
                    hi.as_ref().map(Vec::as_slice),
                ));
                let doomed: Vec<MemKey> = range.map(|(k, _)| k.clone()).collect();
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
        let pairs = range.map(|(k, v)| Ok((k.key.clone(), v.clone())));
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

    fn write_and_clear(&self, batch: &mut KvWriteBatch) -> Result<(), KvError> {
        let mut state = self.state.lock();
        if !state.is_volatile() {
            // The journal keeps its own copy of the batch for a simulated crash.
            drop(state);
            let written = self.write(batch);
            batch.clear();
            return written;
        }
        let checked = batch.check();
        let written = checked.and_then(|()| {
            let tables = state
                .live_mut()
                .map_err(|cut| KvError::Engine(Box::new(cut)))?;
            batch.drain_into(|op| apply_owned(tables, op));
            Ok(())
        });
        batch.clear();
        written
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

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;
    use crate::raft::rng::Rng;

    /// Byte strings of 0-40 bytes over an alphabet with zeros and both ends of a byte, so
    /// that prefixes, zero padding and the 16-byte head's end all come up.
    fn key(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: [u8; 5] = [0, 1, 0x7f, 0x80, 0xff];
        let len = rng.range(0, 41) as usize;
        (0..len)
            .map(|_| ALPHABET[rng.range(0, 5) as usize])
            .collect()
    }

    fn order(a: &[u8], b: &[u8]) -> Ordering {
        MemKey::new(Bytes::copy_from_slice(a)).cmp(&MemKey::new(Bytes::copy_from_slice(b)))
    }

    #[test]
    fn keys_order_as_their_bytes_do() {
        let mut rng = Rng::new(7);
        for _ in 0..100_000 {
            let a = key(&mut rng);
            // Half the pairs share a prefix of `a`, so what follows it decides.
            let mut b = if rng.chance(50) {
                a[..rng.range(0, a.len() as u64 + 1) as usize].to_vec()
            } else {
                Vec::new()
            };
            b.extend(key(&mut rng));
            assert_eq!(order(&a, &b), a.cmp(&b), "{a:?} against {b:?}");
            assert_eq!(order(&b, &a), b.cmp(&a), "{b:?} against {a:?}");
            assert_eq!(order(&a, &a), Ordering::Equal);
        }
        assert_eq!(order(b"", b"\0"), Ordering::Less);
        assert_eq!(
            order(b"0123456789abcdef", b"0123456789abcdef\0"),
            Ordering::Less
        );
    }
}
