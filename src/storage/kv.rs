//! The KV engine a store applies region data and metadata to. One engine per store; regions
//! are key ranges of the `Data` keyspace (so a split moves nothing), and `Meta` holds each
//! region's local state, written in the same atomic batch as the data it describes.

use std::ops::Bound;

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// User keys.
    Data,
    /// Per-region metadata (region state, apply state).
    Meta,
}

impl Keyspace {
    pub const ALL: [Keyspace; 2] = [Keyspace::Data, Keyspace::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Data => "data",
            Keyspace::Meta => "meta",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        ks: Keyspace,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        ks: Keyspace,
        key: Bytes,
    },
    /// Every key in `[start, end)`; `end` None: to the end of the keyspace.
    DeleteRange {
        ks: Keyspace,
        start: Bytes,
        end: Option<Bytes>,
    },
}

/// Operations applied atomically, in order, across keyspaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvWriteBatch {
    ops: Vec<WriteOp>,
    bytes: usize,
}

impl KvWriteBatch {
    pub fn put(&mut self, ks: Keyspace, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put { ks, key, value });
    }

    pub fn delete(&mut self, ks: Keyspace, key: impl Into<Bytes>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(WriteOp::Delete { ks, key });
    }

    /// Deletes every key in `[start, end)`; `end` None: to the end of the keyspace.
    pub fn delete_range(&mut self, ks: Keyspace, start: impl Into<Bytes>, end: Option<Bytes>) {
        let start = start.into();
        self.bytes += start.len() + end.as_ref().map_or(0, Bytes::len);
        self.ops.push(WriteOp::DeleteRange { ks, start, end });
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Key and value bytes in the batch.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("kv engine: {0}")]
    Engine(String),
}

pub type KvPair = (Bytes, Bytes);
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, KvError>> + 'a>;

/// Reads, from the live engine or from a point-in-time view.
pub trait KvRead {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError>;

    /// Pairs with keys in `[start, end)` (`end` None: to the end of the keyspace), in
    /// ascending key order, or descending if `reverse`.
    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a>;
}

pub trait KvEngine: KvRead + Send + Sync {
    type View: KvRead + Send + Sync + 'static;

    /// Applies the batch atomically: after a crash either all of it is there or none.
    /// It is not made durable by itself (see `persist`).
    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError>;

    /// A consistent read view as of now; later writes are not visible through it.
    fn view(&self) -> Self::View;

    /// Key and value bytes stored in `[start, end)`, approximately. The default scans the
    /// range (exact, and as costly as reading it); an engine may estimate instead.
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

    /// Makes everything written so far durable.
    fn persist(&self) -> Result<(), KvError>;
}

/// The range bounds of `[start, end)`.
pub(crate) fn bounds(start: &[u8], end: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(start.to_vec()),
        end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec())),
    )
}
