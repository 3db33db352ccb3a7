//! Region snapshots on disk.
//!
//! Generation streams a read view of the region's range (taken right after applying the
//! snapshot's index) into chunk files of bounded size, each with a CRC32, under a temporary
//! directory that is renamed into place once complete: a region of any size is never held
//! in memory. Layout: `<dir>/<region>_<term>_<index>/{meta, chunk-NNNNN}`; a chunk is a
//! sequence of `u32 key length, key, u32 value length, value` (little-endian).
//!
//! The meta file ends with its own CRC32. The leader sends a `SnapshotSummary` (range,
//! epoch, index, term, chunk count, a checksum over the chunks' checksums) through Raft;
//! `verify` checks the files against it and every chunk's checksum, and only a
//! `VerifiedSnapshot` can be applied. Applying durably marks the region `Applying` (naming
//! the snapshot), clears its range, ingests each chunk only after its checksum matched (a
//! chunk is held in memory, bounded by the chunk size), and writes the apply and region
//! states last. On restart `recover` finishes an interrupted apply of the snapshot the mark
//! names; if that snapshot is gone or damaged, the range is cleared and the region is left
//! `Applying` without a snapshot: its data is void and it waits for a new one. The store
//! always starts. Leftover temporary directories of interrupted generations are removed.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;

use super::kv::{
    Keyspace, KvEngine, KvError, KvRead, KvWriteBatch, MAX_VALUE_BYTES, check_key, check_value,
    clear_data_range,
};
use super::region_meta::{
    all_region_states, contains_key, end_bound, normal_state, put_apply_state, put_region_state,
};
use super::{Crc32Trailer, check_crc32_trailer};
use crate::RegionId;
use crate::proto::metapb::Region;
use crate::proto::storagepb::{
    ChunkMeta, PeerState, RaftApplyState, RegionLocalState, SnapshotMeta, SnapshotSummary,
};

const META_FILE: &str = "meta";
const TMP_SUFFIX: &str = ".tmp";
/// No key or value the engine takes is longer than a value may be (`check_key`,
/// `check_value`): a longer length field is corruption, refused before it is allocated.
const MAX_RECORD_FIELD: u32 = MAX_VALUE_BYTES as u32;

/// Why generating, verifying, applying or recovering a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file system operation on a snapshot file or directory failed.
    #[error("snapshot i/o at {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A chunk's CRC32 does not match its metadata, or the meta file fails its own CRC32.
    #[error("snapshot file {} fails its checksum", path.display())]
    Checksum {
        /// The chunk or meta file.
        path: PathBuf,
    },
    /// A snapshot file does not decode: a meta file too short or not a `SnapshotMeta`, a chunk
    /// of the wrong length, a truncated or oversized record, trailing bytes.
    #[error("snapshot {}: {what}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The files describe another snapshot than the summary the leader sent through Raft.
    #[error("snapshot {} describes {found:?}, the leader sent {expected:?}", dir.display())]
    Mismatch {
        /// The snapshot's directory.
        dir: PathBuf,
        /// The leader's summary.
        expected: Box<SnapshotSummary>,
        /// The summary of the files on disk.
        found: Box<SnapshotSummary>,
    },
    /// A chunk holds a key outside the region's range: applying it would write into another
    /// region.
    #[error("snapshot chunk {} holds key {key:?} outside the region's range", path.display())]
    KeyOutOfRange {
        /// The chunk.
        path: PathBuf,
        /// The first key found outside the range.
        key: Vec<u8>,
    },
    /// The KV engine failed, or a chunk's key or value breaks the engine's limits.
    #[error(transparent)]
    Kv(#[from] KvError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Directory of the snapshot of `region` at (`term`, `index`).
pub fn snapshot_dir(root: &Path, region: RegionId, term: u64, index: u64) -> PathBuf {
    root.join(format!("{region}_{term}_{index}"))
}

fn chunk_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("chunk-{n:05}"))
}

/// Writes records into the current chunk, rolling to a new one past `chunk_bytes`.
struct ChunkWriter {
    dir: PathBuf,
    chunk_bytes: u64,
    file: Option<(BufWriter<File>, crc32fast::Hasher, ChunkMeta)>,
    done: Vec<ChunkMeta>,
}

impl ChunkWriter {
    fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        if self.file.is_none() {
            let path = chunk_path(&self.dir, self.done.len());
            let f = File::create(&path).map_err(io_err(&path))?;
            self.file = Some((
                BufWriter::new(f),
                crc32fast::Hasher::new(),
                ChunkMeta::default(),
            ));
        }
        let path = chunk_path(&self.dir, self.done.len());
        let (w, crc, meta) = self.file.as_mut().expect("opened above");
        for field in [key, value] {
            let len = (field.len() as u32).to_le_bytes();
            for part in [&len[..], field] {
                w.write_all(part).map_err(io_err(&path))?;
                crc.update(part);
                meta.bytes += part.len() as u64;
            }
        }
        meta.pairs += 1;
        if meta.bytes >= self.chunk_bytes {
            self.finish_chunk()?;
        }
        Ok(())
    }

    fn finish_chunk(&mut self) -> Result<(), SnapshotError> {
        let Some((w, crc, mut meta)) = self.file.take() else {
            return Ok(());
        };
        let path = chunk_path(&self.dir, self.done.len());
        let f = w.into_inner().map_err(|e| SnapshotError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err(&path))?;
        meta.crc32 = crc.finalize();
        self.done.push(meta);
        Ok(())
    }
}

/// Streams the region's data from `view` into a snapshot at (`term`, `index`) under `root`.
pub fn generate(
    view: &(impl KvRead + ?Sized),
    region: &Region,
    term: u64,
    index: u64,
    root: &Path,
    chunk_bytes: u64,
) -> Result<SnapshotMeta, SnapshotError> {
    let dir = snapshot_dir(root, region.region_id(), term, index);
    let tmp = dir.with_extension(TMP_SUFFIX.trim_start_matches('.'));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let mut writer = ChunkWriter {
        dir: tmp.clone(),
        chunk_bytes: chunk_bytes.max(1),
        file: None,
        done: Vec::new(),
    };
    let end = end_bound(region);
    for pair in view.scan(Keyspace::Data, &region.start_key, end, false) {
        let (k, v) = pair?;
        writer.add(&k, &v)?;
    }
    writer.finish_chunk()?;
    let meta = SnapshotMeta {
        region: Some(region.clone()),
        index,
        term,
        chunks: writer.done,
    };
    let meta_path = tmp.join(META_FILE);
    let mut f = File::create(&meta_path).map_err(io_err(&meta_path))?;
    let mut raw = meta.encode_to_vec();
    let crc = crc32fast::hash(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    f.write_all(&raw).map_err(io_err(&meta_path))?;
    f.sync_all().map_err(io_err(&meta_path))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(io_err(root))?;
    Ok(meta)
}

/// Reads the meta file, checking its trailing CRC32 first.
pub fn read_meta(dir: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let path = dir.join(META_FILE);
    let raw = fs::read(&path).map_err(io_err(&path))?;
    let body = match check_crc32_trailer(&raw) {
        Crc32Trailer::Intact(body) => body,
        Crc32Trailer::Mismatch => return Err(SnapshotError::Checksum { path }),
        Crc32Trailer::TooShort => {
            let what = format!("meta file of {} bytes", raw.len());
            return Err(SnapshotError::Corrupt { path, what });
        }
    };
    SnapshotMeta::decode(body).map_err(|e| SnapshotError::Corrupt {
        path,
        what: e.to_string(),
    })
}

/// What the leader sends through Raft about the snapshot `meta` describes.
pub fn summary(meta: &SnapshotMeta) -> SnapshotSummary {
    let mut crc = crc32fast::Hasher::new();
    for c in &meta.chunks {
        crc.update(&c.crc32.to_le_bytes());
        crc.update(&c.bytes.to_le_bytes());
        crc.update(&c.pairs.to_le_bytes());
    }
    SnapshotSummary {
        region: meta.region.clone(),
        index: meta.index,
        term: meta.term,
        chunk_count: u32::try_from(meta.chunks.len()).unwrap_or(u32::MAX),
        checksum: crc.finalize(),
        total_bytes: meta
            .chunks
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.bytes)),
    }
}

/// The most one snapshot's directory may hold, as its summary announces it. A receiver
/// stages no more, so a sender cannot fill its disk past what it announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBounds {
    /// Files in the directory.
    pub files: u64,
    /// Bytes of all its files together.
    pub bytes: u64,
}

impl SnapshotBounds {
    /// What a message announcing no snapshot may stage.
    pub const NOTHING: SnapshotBounds = SnapshotBounds { files: 0, bytes: 0 };
}

/// Room for a meta file beside its per-chunk records: the region (two keys of at most
/// `MAX_KEY_BYTES` and its peers), the index, the term and the CRC32 trailer.
const META_FILE_BASE_BYTES: u64 = 1 << 20;

/// Room for one chunk's record in the meta file (three varints with their field keys,
/// and the record's own key and length).
const META_BYTES_PER_CHUNK: u64 = 32;

/// Bytes of the smallest record a chunk can hold (a pair's two length fields): every
/// chunk file holds at least one.
const MIN_RECORD_BYTES: u64 = 8;

/// What the snapshot `summary` describes may hold: its chunk files (exactly
/// `total_bytes` together, so no more of them than those bytes can fill) and its meta
/// file.
pub fn staging_bounds(summary: &SnapshotSummary) -> SnapshotBounds {
    let chunks = u64::from(summary.chunk_count).min(summary.total_bytes / MIN_RECORD_BYTES);
    SnapshotBounds {
        files: chunks + 1,
        bytes: summary
            .total_bytes
            .saturating_add(META_FILE_BASE_BYTES)
            .saturating_add(chunks.saturating_mul(META_BYTES_PER_CHUNK)),
    }
}

/// A snapshot whose files matched its summary and every checksum: the only thing `apply`
/// takes.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSnapshot {
    dir: PathBuf,
    meta: SnapshotMeta,
    summary: SnapshotSummary,
}

impl VerifiedSnapshot {
    /// The snapshot's metadata, as read from its meta file.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The summary the files matched: what the leader sent.
    pub fn summary(&self) -> &SnapshotSummary {
        &self.summary
    }
}

/// A key and value as read from a chunk.
type RawPair = (Vec<u8>, Vec<u8>);

/// Reads the records of one chunk, checking its length and CRC as it goes.
struct ChunkReader {
    path: PathBuf,
    reader: BufReader<File>,
    crc: crc32fast::Hasher,
    left_bytes: u64,
    left_pairs: u64,
    expected_crc: u32,
}

impl ChunkReader {
    fn open(dir: &Path, n: usize, meta: &ChunkMeta) -> Result<Self, SnapshotError> {
        let path = chunk_path(dir, n);
        let f = File::open(&path).map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len != meta.bytes {
            let what = format!("{len} bytes, metadata says {}", meta.bytes);
            return Err(SnapshotError::Corrupt { path, what });
        }
        Ok(ChunkReader {
            path,
            reader: BufReader::new(f),
            crc: crc32fast::Hasher::new(),
            left_bytes: meta.bytes,
            left_pairs: meta.pairs,
            expected_crc: meta.crc32,
        })
    }

    fn read_field(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let n = u32::from_le_bytes(len);
        // A field longer than what is left of the chunk is refused by `read_exact`.
        if n > MAX_RECORD_FIELD {
            let what = format!("record field of {n} bytes");
            return Err(SnapshotError::Corrupt {
                path: self.path.clone(),
                what,
            });
        }
        let mut buf = vec![0u8; n as usize];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        if buf.len() as u64 > self.left_bytes {
            return Err(SnapshotError::Corrupt {
                path: self.path.clone(),
                what: "truncated record".into(),
            });
        }
        self.reader.read_exact(buf).map_err(io_err(&self.path))?;
        self.crc.update(buf);
        self.left_bytes -= buf.len() as u64;
        Ok(())
    }

    /// The next (key, value), or None at the end of a chunk whose checksum matched.
    fn next_pair(&mut self) -> Result<Option<RawPair>, SnapshotError> {
        if self.left_pairs == 0 {
            if self.left_bytes != 0 {
                return Err(SnapshotError::Corrupt {
                    path: self.path.clone(),
                    what: "trailing bytes".into(),
                });
            }
            if self.crc.clone().finalize() != self.expected_crc {
                return Err(SnapshotError::Checksum {
                    path: self.path.clone(),
                });
            }
            return Ok(None);
        }
        let key = self.read_field()?;
        let value = self.read_field()?;
        self.left_pairs -= 1;
        Ok(Some((key, value)))
    }
}

/// Checks the snapshot's files against what the leader said it sent (its summary: range,
/// epoch, peers, index, term, chunk count and checksums) and every chunk's checksum and
/// keys, reading each chunk once. Nothing is changed.
pub fn verify(dir: &Path, expected: &SnapshotSummary) -> Result<VerifiedSnapshot, SnapshotError> {
    let meta = read_meta(dir)?;
    let found = summary(&meta);
    if &found != expected {
        return Err(SnapshotError::Mismatch {
            dir: dir.to_path_buf(),
            expected: Box::new(expected.clone()),
            found: Box::new(found),
        });
    }
    let region = meta.region.clone().unwrap_or_default();
    for (n, chunk) in meta.chunks.iter().enumerate() {
        visit_chunk(dir, n, chunk, &region, |_, _| {})?;
    }
    Ok(VerifiedSnapshot {
        dir: dir.to_path_buf(),
        meta,
        summary: found,
    })
}

/// Reads one chunk, checking its length and checksum, that every key lies in the region
/// and that keys and values fit the engine's limits; `visit` sees each pair as it is read.
fn visit_chunk(
    dir: &Path,
    n: usize,
    chunk: &ChunkMeta,
    region: &Region,
    mut visit: impl FnMut(Vec<u8>, Vec<u8>),
) -> Result<(), SnapshotError> {
    let mut reader = ChunkReader::open(dir, n, chunk)?;
    while let Some((k, v)) = reader.next_pair()? {
        if !contains_key(region, &k) {
            return Err(SnapshotError::KeyOutOfRange {
                path: chunk_path(dir, n),
                key: k,
            });
        }
        check_key(Keyspace::Data, &k)?;
        check_value(&v)?;
        visit(k, v);
    }
    Ok(())
}

/// One whole chunk, handed out only once all of it is known good (bounded by the chunk
/// size).
fn read_chunk(
    dir: &Path,
    n: usize,
    chunk: &ChunkMeta,
    region: &Region,
) -> Result<Vec<RawPair>, SnapshotError> {
    let mut pairs = Vec::new();
    visit_chunk(dir, n, chunk, region, |k, v| pairs.push((k, v)))?;
    Ok(pairs)
}

/// Applies a verified snapshot: a durable `Applying` mark naming it, then the range
/// cleared and the chunks ingested in batches of about `batch_bytes` (each chunk checked
/// again as it is read: the files may have changed since `verify`), then the apply and
/// region states. The caller makes the result durable (`persist`). A failure leaves the
/// mark: `recover` finishes the apply or, if the snapshot is damaged, voids the region.
pub fn apply(
    kv: &(impl KvEngine + ?Sized),
    snapshot: &VerifiedSnapshot,
    batch_bytes: usize,
) -> Result<(), SnapshotError> {
    let meta = &snapshot.meta;
    let region = meta.region.clone().unwrap_or_default();
    // The marker is durable before the range changes: a crash from here on is finished
    // by `recover`, which redoes the whole apply.
    mark_applying(kv, region.clone(), Some(snapshot.summary.clone()))?;
    kv.persist()?;
    clear_range(kv, &region, batch_bytes)?;
    let mut batch = KvWriteBatch::default();
    for (n, chunk) in meta.chunks.iter().enumerate() {
        for (k, v) in read_chunk(&snapshot.dir, n, chunk, &region)? {
            batch.put(Keyspace::Data, Bytes::from(k), Bytes::from(v));
            write_if_full(kv, &mut batch, batch_bytes)?;
        }
    }
    let done = RaftApplyState {
        applied_index: meta.index,
        applied_term: meta.term,
        truncated_index: meta.index,
        truncated_term: meta.term,
        ..Default::default()
    };
    put_apply_state(&mut batch, region.region_id(), &done);
    put_region_state(&mut batch, &normal_state(region));
    kv.write(&batch)?;
    Ok(())
}

/// Deletes the region's data key by key in bounded batches: a range delete would be one
/// batch holding every key of the range (the fjall engine expands it).
fn clear_range(
    kv: &(impl KvEngine + ?Sized),
    region: &Region,
    batch_bytes: usize,
) -> Result<(), SnapshotError> {
    clear_data_range(
        &kv.view(),
        |batch| kv.write(batch),
        &region.start_key,
        end_bound(region),
        batch_bytes,
    )?;
    Ok(())
}

fn write_if_full(
    kv: &(impl KvEngine + ?Sized),
    batch: &mut KvWriteBatch,
    batch_bytes: usize,
) -> Result<(), SnapshotError> {
    if batch.size_bytes() >= batch_bytes {
        kv.write(&std::mem::take(batch))?;
    }
    Ok(())
}

/// Takes in a snapshot another store sent: copies its directory under `root`, keeping
/// its name. The copy appears whole (renamed into place once every file is synced) or not
/// at all; `verify` then checks it against the summary that came through Raft.
pub fn receive(src: &Path, root: &Path) -> Result<PathBuf, SnapshotError> {
    let name = src.file_name().ok_or_else(|| SnapshotError::Corrupt {
        path: src.to_path_buf(),
        what: "a snapshot path without a directory name".into(),
    })?;
    let dir = root.join(name);
    let tmp = dir.with_extension(TMP_SUFFIX.trim_start_matches('.'));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    for entry in fs::read_dir(src).map_err(io_err(src))? {
        let from = entry.map_err(io_err(src))?.path();
        let Some(file) = from.file_name() else {
            continue;
        };
        let to = tmp.join(file);
        fs::copy(&from, &to).map_err(io_err(&from))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&to))?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(io_err(root))?;
    Ok(dir)
}

/// Removes a snapshot's files: on the receiver once its apply is durable, on the sender
/// once `RegionLog` no longer offers it (`offer_snapshot` and `on_truncated` say when).
pub fn remove(dir: &Path) -> Result<(), SnapshotError> {
    fs::remove_dir_all(dir).map_err(io_err(dir))
}

/// What `recover` did with the regions a crash caught applying a snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// Applies finished from the snapshot their mark names.
    pub resumed: Vec<RegionId>,
    /// Regions whose snapshot is gone or damaged: their range is empty, their data void;
    /// they wait for a new snapshot (the raft log must not be replayed into them).
    pub awaiting_snapshot: Vec<RegionId>,
}

/// On restart: removes temporary directories of interrupted generations, and finishes
/// every snapshot apply that a crash interrupted, from the snapshot its mark names (the
/// files are kept until it completes). A snapshot that is gone or fails verification
/// voids its region instead of stopping the store.
pub fn recover(
    kv: &(impl KvEngine + ?Sized),
    root: &Path,
    batch_bytes: usize,
) -> Result<RecoverReport, SnapshotError> {
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|x| x == TMP_SUFFIX.trim_start_matches('.'))
            {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
    }
    let mut report = RecoverReport::default();
    for state in all_region_states(kv)? {
        if state.state != PeerState::Applying as i32 {
            continue;
        }
        let region = state.region.clone().unwrap_or_default();
        let id = region.region_id();
        let verified = state.applying.as_ref().map(|summary| {
            let dir = snapshot_dir(root, region.region_id(), summary.term, summary.index);
            verify(&dir, summary)
        });
        match verified {
            Some(Ok(snapshot)) => match apply(kv, &snapshot, batch_bytes) {
                Ok(()) => report.resumed.push(id),
                // The engine itself failed: nothing else can be written either.
                Err(e @ SnapshotError::Kv(KvError::Engine(_))) => return Err(e),
                // The snapshot's files (damaged or unreadable since `verify`): void it.
                Err(e) => {
                    tracing::warn!(region = id.get(), error = %e, "snapshot apply failed on restart; the region waits for a new one");
                    void_region(kv, region, batch_bytes)?;
                    report.awaiting_snapshot.push(id);
                }
            },
            Some(Err(e)) => {
                tracing::warn!(region = id.get(), error = %e, "snapshot to resume is unusable; the region waits for a new one");
                void_region(kv, region, batch_bytes)?;
                report.awaiting_snapshot.push(id);
            }
            None => report.awaiting_snapshot.push(id),
        }
        kv.persist()?;
    }
    Ok(report)
}

/// Clears the region's range and marks its data void (`Applying` without a snapshot).
fn void_region(
    kv: &(impl KvEngine + ?Sized),
    region: Region,
    batch_bytes: usize,
) -> Result<(), SnapshotError> {
    clear_range(kv, &region, batch_bytes)?;
    mark_applying(kv, region, None)
}

/// Writes the region's `Applying` mark: naming the snapshot being applied, or none (the
/// region's data is void until a new snapshot arrives). Not persisted by itself.
fn mark_applying(
    kv: &(impl KvEngine + ?Sized),
    region: Region,
    applying: Option<SnapshotSummary>,
) -> Result<(), SnapshotError> {
    let mut batch = KvWriteBatch::default();
    let state = RegionLocalState {
        region: Some(region),
        state: PeerState::Applying as i32,
        applying,
    };
    put_region_state(&mut batch, &state);
    kv.write(&batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of a one-chunk file: a length field saying `len`, then `body` bytes.
    fn chunk_with_field(dir: &Path, len: u32, body: usize) -> ChunkReader {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.resize(4 + body, 7);
        fs::write(chunk_path(dir, 0), &bytes).unwrap();
        let meta = ChunkMeta {
            crc32: crc32fast::hash(&bytes),
            bytes: bytes.len() as u64,
            pairs: 1,
        };
        ChunkReader::open(dir, 0, &meta).unwrap()
    }

    fn corruption(r: Result<Vec<u8>, SnapshotError>) -> String {
        match r {
            Err(SnapshotError::Corrupt { what, .. }) => what,
            other => panic!("expected corruption, got {:?}", other.map(|f| f.len())),
        }
    }

    /// A field as long as the longest value is read; one byte more is corruption, refused
    /// without allocating it; a field running past the chunk's end is a truncated record.
    #[test]
    fn a_record_field_is_at_most_a_value_long_and_within_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let max = MAX_RECORD_FIELD as usize;
        let mut r = chunk_with_field(dir.path(), MAX_RECORD_FIELD, max);
        assert_eq!(r.read_field().unwrap().len(), max);
        let mut r = chunk_with_field(dir.path(), MAX_RECORD_FIELD + 1, max + 1);
        let what = corruption(r.read_field());
        assert_eq!(what, format!("record field of {} bytes", max + 1));
        let mut r = chunk_with_field(dir.path(), 100, 99);
        assert_eq!(corruption(r.read_field()), "truncated record");
    }
}
