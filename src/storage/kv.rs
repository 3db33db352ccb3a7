//! The KV engine a store applies region data and metadata to. One engine per store; regions
//! are key ranges of the `Data` keyspace (so a split moves nothing), and `Meta` holds each
//! region's local state, written in the same atomic batch as the data it describes.
//!
//! Range sizes come from a sample of the data keys kept in `Meta`: a key is sampled when
//! its hash falls in one of `SIZE_SAMPLE_RATE` buckets. The choice depends on the key
//! alone, so every put, delete and range delete through `KvWriteBatch` keeps the key's
//! sample (its key and value bytes) in step, in the same atomic batch. A range's size is
//! the rate times its sampled bytes: unbiased, within a few percent for a region of
//! 100,000 keys, for about a 64th of the reads of a scan. Keys chosen to dodge or hit the
//! sample skew the estimate, which only steers split and merge decisions.

use std::ops::Bound;

use bytes::Bytes;

/// The engine's two key namespaces: the same bytes under each are different keys, and one
/// batch may write both atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// User keys.
    Data,
    /// Per-region metadata (region state, apply state) and the data keys' size samples.
    Meta,
}

impl Keyspace {
    /// Every keyspace.
    pub const ALL: [Keyspace; 2] = [Keyspace::Data, Keyspace::Meta];

    /// The keyspace's name as error messages show it.
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Data => "data",
            Keyspace::Meta => "meta",
        }
    }
}

/// One operation of a `KvWriteBatch`, as engines apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets the key's value, replacing any earlier one.
    Put {
        /// The keyspace written.
        ks: Keyspace,
        /// Non-empty and within the keyspace's limit (`check_key`).
        key: Bytes,
        /// In `Data`, at most `MAX_VALUE_BYTES` (`check_value`).
        value: Bytes,
    },
    /// Removes the key; an absent key is not an error.
    Delete {
        /// The keyspace written.
        ks: Keyspace,
        /// Non-empty and within the engine's own limit only, so a key accepted under an older,
        /// larger limit can still be deleted.
        key: Bytes,
    },
    /// Every key in `[start, end)`; `end` None: to the end of the keyspace.
    DeleteRange {
        /// The keyspace whose keys go.
        ks: Keyspace,
        /// Inclusive lower bound; empty: the keyspace's beginning.
        start: Bytes,
        /// Exclusive upper bound; None: the keyspace's end.
        end: Option<Bytes>,
    },
}

/// Operations applied atomically, in order, across keyspaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvWriteBatch {
    ops: Vec<WriteOp>,
    bytes: usize,
}

/// Operations' room a cleared batch keeps (about 300 KiB).
const KEPT_OPS: usize = 4096;

impl KvWriteBatch {
    /// Sets `key` to `value` in `ks`; a sampled data key's size sample is updated in the same
    /// batch.
    pub fn put(&mut self, ks: Keyspace, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let (key, value) = (key.into(), value.into());
        if ks == Keyspace::Data && is_sampled(&key) {
            let size = (key.len() + value.len()) as u64;
            let sample = Bytes::copy_from_slice(&size.to_le_bytes());
            self.push(WriteOp::Put {
                ks: Keyspace::Meta,
                key: sample_key(&key),
                value: sample,
            });
        }
        self.push(WriteOp::Put { ks, key, value });
    }

    /// Deletes `key` from `ks`, and a sampled data key's size sample with it.
    pub fn delete(&mut self, ks: Keyspace, key: impl Into<Bytes>) {
        let key = key.into();
        if ks == Keyspace::Data && is_sampled(&key) {
            let key = sample_key(&key);
            self.push(WriteOp::Delete {
                ks: Keyspace::Meta,
                key,
            });
        }
        self.push(WriteOp::Delete { ks, key });
    }

    /// Deletes every key in `[start, end)`; `end` None: to the end of the keyspace.
    pub fn delete_range(&mut self, ks: Keyspace, start: impl Into<Bytes>, end: Option<Bytes>) {
        let start = start.into();
        if ks == Keyspace::Data {
            let (s, e) = sample_range(&start, end.as_deref());
            self.push(WriteOp::DeleteRange {
                ks: Keyspace::Meta,
                start: s,
                end: Some(e),
            });
        }
        self.push(WriteOp::DeleteRange { ks, start, end });
    }

    fn push(&mut self, op: WriteOp) {
        self.bytes += match &op {
            WriteOp::Put { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::DeleteRange { start, end, .. } => {
                start.len() + end.as_ref().map_or(0, Bytes::len)
            }
        };
        self.ops.push(op);
    }

    /// The operations in the order they were added, size samples included.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Number of operations, size-sample operations included.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation (writing it changes nothing).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties the batch, keeping its room for the next one — up to `KEPT_OPS` operations,
    /// so one huge batch does not hold its memory for good.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.ops.shrink_to(KEPT_OPS);
        self.bytes = 0;
    }

    /// Empties the batch as `clear` does, handing `f` its operations in order.
    pub(crate) fn drain_into(&mut self, mut f: impl FnMut(WriteOp)) {
        for op in self.ops.drain(..) {
            f(op);
        }
        self.clear();
    }

    /// Key and value bytes in the batch (size samples included).
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Refuses the batch if any key or value breaks a limit (`check_key`, `check_value`).
    /// Engines check every batch before writing any of it: a key beyond fjall's limit would
    /// make it panic, and at apply time that would crash-loop the store. Empty keys are
    /// refused by rule: the empty key bounds the key space, it names no key.
    pub fn check(&self) -> Result<(), KvError> {
        for op in &self.ops {
            match op {
                WriteOp::Put { ks, key, value } => {
                    check_key(*ks, key)?;
                    if *ks == Keyspace::Data {
                        check_value(value)?;
                    }
                }
                // Only what the engine itself cannot take: a key written under an older,
                // larger limit can still be deleted.
                WriteOp::Delete { ks, key } => check_key_len(*ks, key, ENGINE_MAX_KEY_BYTES)?,
                // Bounds are not stored: an empty start is the keyspace's beginning.
                WriteOp::DeleteRange { .. } => {}
            }
        }
        Ok(())
    }
}

/// Why a KV engine operation failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The engine itself failed (I/O, a poisoned database); the source says how.
    #[error("kv engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A key is empty or too long (`check_key`; a delete only against the engine's own
    /// limit); a batch holding one is refused whole.
    #[error("a {} key of {len} bytes is refused: {limit}", .ks.name())]
    InvalidKey {
        /// The keyspace the key was meant for.
        ks: Keyspace,
        /// The key's length in bytes.
        len: usize,
        /// The limit it broke.
        limit: KeyLimit,
    },
    /// A user value is longer than `MAX_VALUE_BYTES` (`check_value`); a batch holding one is
    /// refused whole.
    #[error("a value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
        /// The limit, `MAX_VALUE_BYTES`.
        max: usize,
    },
    /// A stored record does not decode (a region or apply state, a size sample): the
    /// engine's data is damaged.
    #[error("{record} does not decode: {cause}")]
    CorruptRecord {
        /// Which record, for the operator.
        record: String,
        /// Why it does not decode.
        cause: String,
    },
    /// Opening found an engine file damaged (a version file failing its checksum); the
    /// engine refuses to open rather than panic on it.
    #[error("kv engine file {} is corrupt ({what}); refusing to open", file.display())]
    CorruptFile {
        /// The damaged file.
        file: std::path::PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

/// Which limit a refused key broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLimit {
    /// The key is empty: no keyspace takes one.
    #[error("keys must not be empty")]
    Empty,
    /// The key is longer than this many bytes (its keyspace's limit, or the engine's).
    #[error("keys may hold at most {0} bytes")]
    TooLong(usize),
}

/// The largest user key (the `Data` keyspace). Well below the 65,535 bytes fjall can hold
/// (it panics beyond), leaving room for the one-byte-longer size-sample key in `Meta`.
pub const MAX_KEY_BYTES: usize = 8 << 10;
/// The largest user value: a write of one such value fits well inside the core's default
/// 8 MiB entry limit.
pub const MAX_VALUE_BYTES: usize = 4 << 20;
/// fjall's own limit on a key (65,535 bytes) less the engine's one-byte keyspace prefix;
/// `Meta` keys (built by flotilla itself) must stay within it.
const ENGINE_MAX_KEY_BYTES: usize = u16::MAX as usize - 1;

/// Refuses a key the engine must not be handed: empty, or longer than its keyspace allows.
pub fn check_key(ks: Keyspace, key: &[u8]) -> Result<(), KvError> {
    let max = match ks {
        Keyspace::Data => MAX_KEY_BYTES,
        Keyspace::Meta => ENGINE_MAX_KEY_BYTES,
    };
    check_key_len(ks, key, max)
}

fn check_key_len(ks: Keyspace, key: &[u8], max: usize) -> Result<(), KvError> {
    let limit = if key.is_empty() {
        KeyLimit::Empty
    } else if key.len() > max {
        KeyLimit::TooLong(max)
    } else {
        return Ok(());
    };
    Err(KvError::InvalidKey {
        ks,
        len: key.len(),
        limit,
    })
}

/// Refuses a user value above `MAX_VALUE_BYTES`.
pub fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// A key and its value.
pub type KvPair = (Bytes, Bytes);
/// A scan's pairs in the order asked for; an item is an error when a read fails mid-scan.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, KvError>> + 'a>;

/// Reads, from the live engine or from a point-in-time view.
pub trait KvRead {
    /// The value of `key` in `ks`, or None if it is absent.
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

    /// Approximate key and value bytes of the data in `[start, end)`, from the size
    /// samples (see the module's notes). As with `scan`, `end` None is the keyspace's end
    /// (a region's empty end key must become None).
    fn approximate_size(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, KvError> {
        let (s, e) = sample_range(start, end);
        let mut sampled = 0u64;
        for pair in self.scan(Keyspace::Meta, &s, Some(&e), false) {
            let (key, size) = pair?;
            let size: [u8; 8] = size
                .as_ref()
                .try_into()
                .map_err(|_| KvError::CorruptRecord {
                    record: format!("size sample under key {key:?}"),
                    cause: format!("{} bytes, not 8", size.len()),
                })?;
            sampled = sampled.saturating_add(u64::from_le_bytes(size));
        }
        Ok(sampled.saturating_mul(SIZE_SAMPLE_RATE))
    }
}

/// A boxed reader reads as what it holds (a store's read views are boxed).
impl<T: KvRead + ?Sized> KvRead for Box<T> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        (**self).get(ks, key)
    }

    fn scan<'a>(
        &'a self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
    ) -> KvIter<'a> {
        (**self).scan(ks, start, end, reverse)
    }
}

/// One data key in this many carries a size sample.
pub const SIZE_SAMPLE_RATE: u64 = 64;
/// Meta keys of size samples: this byte, then the data key.
const SAMPLE_PREFIX: u8 = b's';

/// A hasher set up once and copied for each key: `crc32fast::hash` looks up the CPU's
/// features on every call, which cost as much as hashing a short key.
static SAMPLE_HASHER: std::sync::LazyLock<crc32fast::Hasher> =
    std::sync::LazyLock::new(crc32fast::Hasher::new);

fn is_sampled(key: &[u8]) -> bool {
    let mut hasher = SAMPLE_HASHER.clone();
    hasher.update(key);
    u64::from(hasher.finalize()).is_multiple_of(SIZE_SAMPLE_RATE)
}

fn sample_key(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(SAMPLE_PREFIX);
    k.extend_from_slice(key);
    Bytes::from(k)
}

/// The meta keys of the samples of data keys in `[start, end)`.
fn sample_range(start: &[u8], end: Option<&[u8]>) -> (Bytes, Bytes) {
    let end = end.map_or_else(|| Bytes::from_static(&[SAMPLE_PREFIX + 1]), sample_key);
    (sample_key(start), end)
}

/// A store's KV engine: atomic batch writes, point-in-time views and explicit durability.
pub trait KvEngine: KvRead + Send + Sync {
    /// A point-in-time view. Owned and `'static`, so it can leave the thread that took it:
    /// snapshots are generated off the raft thread.
    type View: KvRead + Send + Sync + 'static;

    /// Applies the batch atomically: after a crash either all of it is there or none.
    /// It is not made durable by itself (see `persist`). A batch that fails
    /// `KvWriteBatch::check` is refused whole.
    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError>;

    /// `write`, leaving the batch empty (as `KvWriteBatch::clear` does), whether or not it
    /// was written. An engine that keeps the batch's keys and values as they are (the
    /// in-memory one) takes them instead of sharing and then dropping them.
    fn write_and_clear(&self, batch: &mut KvWriteBatch) -> Result<(), KvError> {
        let written = self.write(batch);
        batch.clear();
        written
    }

    /// A consistent read view as of now; later writes are not visible through it.
    fn view(&self) -> Self::View;

    /// Makes everything written so far durable.
    fn persist(&self) -> Result<(), KvError>;
}

/// Deletes every data key in `[start, end)` (`end` None: to the keyspace's end) as found
/// in `view`, through `write`, in batches of about `batch_bytes`, never one batch holding
/// the whole range. Not atomic: a crash may leave part of the range deleted, and running
/// it again finishes the job. Returns the keys deleted.
pub fn clear_data_range(
    view: &(impl KvRead + ?Sized),
    mut write: impl FnMut(&KvWriteBatch) -> Result<(), KvError>,
    start: &[u8],
    end: Option<&[u8]>,
    batch_bytes: usize,
) -> Result<u64, KvError> {
    let mut batch = KvWriteBatch::default();
    let mut deleted = 0;
    for pair in view.scan(Keyspace::Data, start, end, false) {
        batch.delete(Keyspace::Data, pair?.0);
        deleted += 1;
        if batch.size_bytes() >= batch_bytes {
            write(&std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        write(&batch)?;
    }
    Ok(deleted)
}

/// A scan's pairs boxed in the order asked for.
pub(crate) fn in_order<'a>(
    pairs: impl DoubleEndedIterator<Item = Result<KvPair, KvError>> + 'a,
    reverse: bool,
) -> KvIter<'a> {
    if reverse {
        Box::new(pairs.rev())
    } else {
        Box::new(pairs)
    }
}

/// The range bounds of `[start, end)`.
pub(crate) fn bounds(start: &[u8], end: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(start.to_vec()),
        end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first data key of the form `k<i>` that is (or is not) sampled.
    fn key_sampled(sampled: bool) -> Bytes {
        (0u32..)
            .map(|i| Bytes::from(format!("k{i}")))
            .find(|k| is_sampled(k) == sampled)
            .expect("some key of each kind")
    }

    /// Which keys are sampled is on disk (their samples are stored): CRC-32 (IEEE) of the
    /// key, one key in `SIZE_SAMPLE_RATE`, whatever the key's length.
    #[test]
    fn the_sampled_keys_are_those_whose_crc32_is_a_multiple_of_the_rate() {
        let mut hasher = SAMPLE_HASHER.clone();
        hasher.update(b"123456789");
        assert_eq!(hasher.finalize(), 0xCBF4_3926, "CRC-32's check value");
        let mut sampled = 0;
        for i in 0u32..20_000 {
            let key = format!("{i}-").repeat(1 + i as usize % 40);
            let expected =
                u64::from(crc32fast::hash(key.as_bytes())).is_multiple_of(SIZE_SAMPLE_RATE);
            assert_eq!(is_sampled(key.as_bytes()), expected, "{key}");
            sampled += usize::from(expected);
        }
        assert!(sampled > 0, "some keys are sampled");
    }

    #[test]
    fn a_cleared_batch_holds_nothing_and_counts_only_what_follows() {
        let mut batch = KvWriteBatch::default();
        batch.put(Keyspace::Meta, &b"a"[..], &b"123"[..]);
        batch.delete(Keyspace::Meta, &b"bc"[..]);
        assert_eq!((batch.len(), batch.size_bytes()), (2, 6));
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!((batch.len(), batch.size_bytes()), (0, 0));
        batch.put(Keyspace::Meta, &b"d"[..], &b"e"[..]);
        assert_eq!((batch.len(), batch.size_bytes()), (1, 2));
        // A cleared batch keeps room for the next, but not a huge one's.
        let room = batch.ops.capacity();
        batch.clear();
        assert_eq!(batch.ops.capacity(), room);
        for i in 0..(KEPT_OPS * 2) as u32 {
            batch.put(Keyspace::Meta, i.to_be_bytes().to_vec(), &b"v"[..]);
        }
        batch.clear();
        assert!(batch.ops.capacity() <= KEPT_OPS);
        assert!(batch.ops.capacity() >= room);
    }

    /// Only a sampled data key carries a size sample: a put or delete of any other key is
    /// one operation, and a meta key never touches the sample stored under the same bytes.
    #[test]
    fn only_sampled_data_keys_move_a_sample() {
        let (sampled, plain) = (key_sampled(true), key_sampled(false));
        let ops = |f: &dyn Fn(&mut KvWriteBatch)| {
            let mut b = KvWriteBatch::default();
            f(&mut b);
            b.ops().to_vec()
        };
        assert_eq!(
            ops(&|b| b.put(Keyspace::Data, sampled.clone(), "v")).len(),
            2
        );
        assert_eq!(ops(&|b| b.delete(Keyspace::Data, sampled.clone())).len(), 2);
        for (ks, key) in [(Keyspace::Data, &plain), (Keyspace::Meta, &sampled)] {
            let put = ops(&|b| b.put(ks, key.clone(), "v"));
            assert_eq!(put.len(), 1, "put of {ks:?} {key:?}");
            let delete = ops(&|b| b.delete(ks, key.clone()));
            let want = WriteOp::Delete {
                ks,
                key: key.clone(),
            };
            assert_eq!(delete, vec![want], "delete of {ks:?} {key:?}");
        }
    }

    /// `len`, `is_empty` and `size_bytes` count every operation and every key and value
    /// byte, a range delete's bounds included.
    #[test]
    fn a_batch_counts_its_operations_and_bytes() {
        let mut b = KvWriteBatch::default();
        assert!(b.is_empty());
        assert_eq!((b.len(), b.size_bytes()), (0, 0));
        b.put(Keyspace::Meta, "abc", "12345");
        assert!(!b.is_empty());
        assert_eq!((b.len(), b.size_bytes()), (1, 8));
        b.delete(Keyspace::Meta, "abcd");
        assert_eq!((b.len(), b.size_bytes()), (2, 12));
        b.delete_range(Keyspace::Meta, "ab", Some(Bytes::from_static(b"xyz")));
        assert_eq!((b.len(), b.size_bytes()), (3, 17));
        b.delete_range(Keyspace::Meta, "ab", None);
        assert_eq!((b.len(), b.size_bytes()), (4, 19));
        // A sampled data key's sample (the key with its prefix byte, an 8-byte size) counts.
        let sampled = key_sampled(true);
        b.put(Keyspace::Data, sampled.clone(), "v");
        let sample = (sampled.len() + 1) + 8;
        assert_eq!(b.len(), 6);
        assert_eq!(b.size_bytes(), 19 + sample + sampled.len() + 1);
    }

    /// A refused key's error names its keyspace, its length and the limit it broke.
    #[test]
    fn a_refused_key_is_described_with_its_keyspace() {
        let mut b = KvWriteBatch::default();
        b.put(Keyspace::Data, vec![b'x'; MAX_KEY_BYTES + 1], "v");
        let e = b.check().unwrap_err().to_string();
        let want = format!("a data key of {} bytes is refused", MAX_KEY_BYTES + 1);
        assert!(e.starts_with(&want), "{e}");
        let mut b = KvWriteBatch::default();
        b.delete(Keyspace::Meta, Bytes::new());
        let e = b.check().unwrap_err().to_string();
        assert_eq!(
            e,
            "a meta key of 0 bytes is refused: keys must not be empty"
        );
    }
}
