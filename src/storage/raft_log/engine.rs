//! The raft log over raft-engine: one instance per store, raft group id = region id.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use raft_engine::{Command, LogBatch};

use super::{
    LogError, LogOp, LogSpan, LogSpans, LogWriteBatch, RaftLogConfig, RaftLogStore, SpanChange,
};
use crate::RegionId;
use crate::ids::IdHashState;
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::RaftLocalState;
use crate::raft::message::MAX_INDEX_OR_TERM;
use crate::raft::storage::ByteBudget;
use crate::storage::wal_entry::WalEntryExt;
use crate::storage::{Crc32Trailer, SyncMode, check_crc32_trailer};

/// Key of a region's `RaftLocalState` inside its raft-engine group.
const STATE_KEY: &[u8] = b"raft_local_state";
/// Key of the first index of a region's log, written by every batch that moves it (the
/// first append after a reset, a compaction) and by every batch that creates a span. Every
/// span has one; a missing one with entries behind it is a lost record (refused on open).
const FIRST_KEY: &[u8] = b"log_first_index";

/// What opening the log removed because flotilla's records do not count it as part of the
/// log (raft-engine's recovery or purge had brought it back, or a write never completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRepair {
    /// Entries of a region with no state.
    Orphaned {
        /// The region whose entries went.
        region: RegionId,
    },
    /// Entries below the region's first index.
    BelowFirst {
        /// The region whose entries went.
        region: RegionId,
        /// The lowest index removed; every held entry from it up to the first index went.
        from: u64,
    },
    /// Entries above the region's last index.
    AboveLast {
        /// The region whose entries went.
        region: RegionId,
        /// The highest index removed; every held entry above the last index up to it went.
        to: u64,
    },
}

/// The on-disk `RaftLogStore`: one raft-engine instance per store, each region's span kept
/// from flotilla's own records.
pub struct RaftLogEngine {
    engine: raft_engine::Engine,
    /// Where the files live, to name a damaged one.
    dir: PathBuf,
    /// The damaged file a failed read found (or the directory), scanned for once.
    damaged: std::sync::OnceLock<PathBuf>,
    /// What `open` repaired, for logs and tests.
    repairs: Vec<LogRepair>,
    /// Serializes writes, so a batch's check still holds when it is written. Holds one
    /// encoding buffer kept between writes: raft-engine keeps up to 8 MiB of its capacity,
    /// so a large batch does not fault in fresh pages every time.
    writer: Mutex<LogBatch>,
    /// Every region's log span, from flotilla's own records (never from raft-engine's
    /// memtables, which recovery and purge can get wrong). Checking a batch against this
    /// one compact map also costs a fraction of looking up thousands of scattered
    /// memtables (about 150 ns each, cold).
    spans: RwLock<SpanMap>,
}

type SpanMap = HashMap<RegionId, LogSpan, IdHashState>;

impl LogSpans for SpanMap {
    fn current_span(&self, region: RegionId) -> Option<LogSpan> {
        self.get(&region).copied()
    }
}

impl<T: RaftLogStore + ?Sized> LogSpans for T {
    fn current_span(&self, region: RegionId) -> Option<LogSpan> {
        RaftLogStore::span(self, region)
    }
}

fn set_spans<'a>(
    spans: &mut SpanMap,
    changes: impl Iterator<Item = &'a SpanChange>,
    pick: impl Fn(&SpanChange) -> Option<LogSpan>,
) {
    for change in changes {
        match pick(change) {
            Some(span) => spans.insert(change.region, span),
            None => spans.remove(&change.region),
        };
    }
}

/// The first and last index of the entries raft-engine's memtable holds for a region.
fn engine_entries(engine: &raft_engine::Engine, region: RegionId) -> Option<(u64, u64)> {
    engine
        .first_index(region.get())
        .zip(engine.last_index(region.get()))
}

/// What an I/O error from raft-engine's open means. raft-engine that found damage near the
/// end of a sealed file and failed to cut it (its handle is read-only: `ftruncate`
/// refused) reports it as I/O, but it is damage, not the disk; so is any error while a file
/// fails to read back (`damaged`, found by scanning). Other I/O errors are the disk's.
fn open_io_error(e: std::io::Error, damaged: Option<PathBuf>, dir: &Path) -> LogError {
    let cut_refused =
        e.kind() == std::io::ErrorKind::InvalidInput && e.to_string().contains("ftruncate");
    match damaged.or_else(|| cut_refused.then(|| dir.to_path_buf())) {
        Some(file) => LogError::CorruptFile {
            file,
            detail: e.to_string(),
        },
        None => raft_engine::Error::Io(e).into(),
    }
}

/// Entries read from raft-engine per call: a huge range is never preallocated at once.
const READ_CHUNK: u64 = 64;
/// raft-engine's size of an entry exceeds the core's (`entry_size`) by the protobuf v2
/// wrapper of `WalEntry`: a tag and a length, at most this many bytes.
const ENCODING_SLACK: u64 = 16;

impl RaftLogEngine {
    /// Opens (recovering) the log in `cfg.dir`, creating it if needed. Each region's span
    /// comes from its records (state and first index); whatever raft-engine holds outside
    /// it (entries that recovery or a purge brought back, entries without a state) is
    /// removed before the log is used, and a log whose recorded entries are missing
    /// refuses to open.
    pub fn open(cfg: &RaftLogConfig) -> Result<Self, LogError> {
        check_file_headers(&cfg.dir)?;
        let engine = match raft_engine::Engine::open(cfg.engine_config()) {
            Ok(engine) => engine,
            // Damage refused by raft-engine (a broken batch in a sealed file), or a sealed
            // file it tried to cut (its handle is read-only): it does not say where, so
            // find the file for the operator.
            Err(raft_engine::Error::Corruption(detail)) => {
                let file = find_corrupt_file(&cfg.dir).unwrap_or_else(|| cfg.dir.clone());
                return Err(LogError::CorruptFile { file, detail });
            }
            Err(raft_engine::Error::Io(e)) => {
                return Err(open_io_error(e, find_corrupt_file(&cfg.dir), &cfg.dir));
            }
            Err(e) => return Err(e.into()),
        };
        let mut spans = SpanMap::default();
        let mut repair = LogBatch::default();
        let mut repairs = Vec::new();
        for region in engine.raft_groups().into_iter().map(RegionId) {
            let held = engine_entries(&engine, region);
            let Some(state) = read_state(&engine, region)? else {
                // Entries without a state were never part of an accepted write.
                repair.add_command(region.get(), Command::Clean);
                repairs.push(LogRepair::Orphaned { region });
                continue;
            };
            let span = recorded_span(&engine, region, &state, held)?;
            let fix = RegionRepair {
                region,
                span,
                state: &state,
                held,
            };
            fix.queue(&engine, &mut repair, &mut repairs)
                .map_err(|e| match e {
                    LogError::Engine(e) => damage_error(e, || {
                        find_corrupt_file(&cfg.dir).unwrap_or_else(|| cfg.dir.clone())
                    }),
                    e => e,
                })?;
            spans.insert(region, span);
        }
        if !repair.is_empty() {
            engine.write(&mut repair, true)?;
        }
        for r in &repairs {
            tracing::warn!(repair = ?r, "raft log: removed entries that are not part of the log");
        }
        let log = RaftLogEngine {
            engine,
            dir: cfg.dir.clone(),
            damaged: std::sync::OnceLock::new(),
            repairs,
            writer: Mutex::new(LogBatch::default()),
            spans: RwLock::new(spans),
        };
        for (&region, &span) in log.spans.read().iter() {
            log.debug_check_span(region, Some(span));
        }
        Ok(log)
    }

    /// A failed read of entries: damage is named as `CorruptFile`.
    fn read_error(&self, e: raft_engine::Error) -> LogError {
        // Scanned once: damage does not heal, and a caller retrying a failed read must not
        // rescan the whole log each time.
        damage_error(e, || {
            let file = self
                .damaged
                .get_or_init(|| find_corrupt_file(&self.dir).unwrap_or_else(|| self.dir.clone()));
            file.clone()
        })
    }

    /// Entries in `[low, high)` as raft-engine holds them, within `max_bytes` (at least
    /// one), read in chunks so a huge range is never decoded or preallocated at once.
    fn read_entries(
        &self,
        region: RegionId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut wal = Vec::new();
        let mut budget = ByteBudget::new(max_bytes);
        let mut next = low;
        while next < high {
            let end = high.min(next.saturating_add(READ_CHUNK));
            // raft-engine stops at a budget too, counting its own encoding (a few bytes per
            // entry more than the core's): give it that slack, so it never stops before
            // the core's count does, and no chunk decodes much beyond what is returned.
            let engine_budget = budget.left().saturating_add(ENCODING_SLACK * READ_CHUNK);
            let engine_budget = usize::try_from(engine_budget).unwrap_or(usize::MAX);
            wal.clear();
            self.engine
                .fetch_entries_to::<WalEntryExt>(
                    region.get(),
                    next,
                    end,
                    Some(engine_budget),
                    &mut wal,
                )
                .map_err(|e| self.read_error(e))?;
            let fetched = wal.len() as u64;
            if fetched == 0 {
                return Err(LogError::Corrupt {
                    region,
                    what: format!("entries {next}..{end} are recorded but none are held"),
                });
            }
            for w in wal.drain(..) {
                let e = w.into_entry();
                if !budget.take(&e) {
                    return Ok(out);
                }
                out.push(e);
            }
            // Short only if raft-engine's budget ran out, after ours did: then this point
            // is not reached. Continue from what it returned, never past it.
            next += fetched;
        }
        Ok(out)
    }

    /// A read that failed while a write moved the region's log (a compaction, a reset
    /// racing it) is outside the log now, not damage: say so; otherwise keep the error.
    fn moved_or(
        &self,
        region: RegionId,
        before: Option<LogSpan>,
        low: u64,
        high: u64,
        e: LogError,
    ) -> LogError {
        let now = self.span(region);
        match LogSpan::check_read(now, region, low, high) {
            Err(moved) if now != before => moved,
            _ => e,
        }
    }

    /// What opening the log removed (entries outside their region's recorded span).
    pub fn repairs(&self) -> &[LogRepair] {
        &self.repairs
    }

    /// Debug builds check that raft-engine holds exactly the entries of the span.
    fn debug_check_span(&self, region: RegionId, span: Option<LogSpan>) {
        debug_assert_eq!(
            span.and_then(|s| s.entries()),
            engine_entries(&self.engine, region),
            "the log of region {region} disagrees with raft-engine's memtable"
        );
    }

    fn encode(batch: &LogWriteBatch, lb: &mut LogBatch) -> Result<(), LogError> {
        for (region, op) in batch.ops() {
            match op {
                LogOp::Append(ents) => lb.add_entries::<WalEntryExt>(region.get(), ents)?,
                LogOp::CompactTo(index) => lb.add_command(region.get(), Command::Compact { index }),
                LogOp::Reset => lb.add_command(region.get(), Command::Clean),
                LogOp::PutState(state) => {
                    lb.put(region.get(), STATE_KEY.to_vec(), state.encode_to_vec())?
                }
            }
        }
        // Last, so that a reset earlier in the batch cannot erase it.
        for change in batch.changes() {
            if let (Some(span), true) = (change.after, change.first_moved) {
                put_first(lb, change.region, span.first)?;
            }
        }
        Ok(())
    }
}

fn put_first(lb: &mut LogBatch, region: RegionId, first: u64) -> Result<(), LogError> {
    Ok(lb.put(
        region.get(),
        FIRST_KEY.to_vec(),
        first.to_le_bytes().to_vec(),
    )?)
}

fn read_state(
    engine: &raft_engine::Engine,
    region: RegionId,
) -> Result<Option<RaftLocalState>, LogError> {
    let Some(raw) = engine.get(region.get(), STATE_KEY) else {
        return Ok(None);
    };
    RaftLocalState::decode(raw.as_slice())
        .map(Some)
        .map_err(|e| LogError::Corrupt {
            region,
            what: format!("local state: {e}"),
        })
}

/// A region's span as its records define it.
fn recorded_span(
    engine: &raft_engine::Engine,
    region: RegionId,
    state: &RaftLocalState,
    held: Option<(u64, u64)>,
) -> Result<LogSpan, LogError> {
    let last = state.last_index;
    if last >= MAX_INDEX_OR_TERM {
        return Err(LogError::Corrupt {
            region,
            what: format!("last index {last} is out of range"),
        });
    }
    let first = match engine.get(region.get(), FIRST_KEY) {
        // Without entries, the log can only be empty; with entries, nothing says which
        // of them belong to it.
        None if held.is_none() => last + 1,
        None => {
            return Err(LogError::Corrupt {
                region,
                what: "the first index record is missing but entries are held".into(),
            });
        }
        Some(raw) => {
            let bytes: [u8; 8] = raw.as_slice().try_into().map_err(|_| LogError::Corrupt {
                region,
                what: format!("first index record of {} bytes", raw.len()),
            })?;
            u64::from_le_bytes(bytes)
        }
    };
    if first == 0 || first > last + 1 {
        return Err(LogError::Corrupt {
            region,
            what: format!("first index {first} does not fit last index {last}"),
        });
    }
    Ok(LogSpan { first, last })
}

/// One region's records and what raft-engine holds of it, at open.
struct RegionRepair<'a> {
    region: RegionId,
    span: LogSpan,
    state: &'a RaftLocalState,
    /// First and last index of the entries raft-engine holds.
    held: Option<(u64, u64)>,
}

impl RegionRepair<'_> {
    fn corrupt(&self, what: String) -> LogError {
        LogError::Corrupt {
            region: self.region,
            what,
        }
    }

    /// Queues what makes raft-engine hold exactly the span's entries: entries below it are
    /// compacted, entries above it cut off. Recorded entries that are missing are corruption.
    fn queue(
        &self,
        engine: &raft_engine::Engine,
        repair: &mut LogBatch,
        repairs: &mut Vec<LogRepair>,
    ) -> Result<(), LogError> {
        let region = self.region;
        let Some((held_first, held_last)) = self.held else {
            return match self.span.entries() {
                None => Ok(()),
                Some((first, last)) => Err(self.corrupt(format!(
                    "entries {first}..={last} are recorded but none are held"
                ))),
            };
        };
        let Some((first, last)) = self.span.entries() else {
            // An empty log: nothing raft-engine holds belongs to it. The clean erases the
            // records too: write them again.
            repair.add_command(region.get(), Command::Clean);
            repair.put(region.get(), STATE_KEY.to_vec(), self.state.encode_to_vec())?;
            put_first(repair, region, self.span.first)?;
            repairs.push(if held_last < self.span.first {
                LogRepair::BelowFirst {
                    region,
                    from: held_first,
                }
            } else {
                LogRepair::AboveLast {
                    region,
                    to: held_last,
                }
            });
            return Ok(());
        };
        if held_first > first || held_last < last {
            return Err(self.corrupt(format!(
                "entries {first}..={last} are recorded but {held_first}..={held_last} are held"
            )));
        }
        if held_first < first {
            repair.add_command(region.get(), Command::Compact { index: first });
            repairs.push(LogRepair::BelowFirst {
                region,
                from: held_first,
            });
        }
        if held_last > last {
            // Appending the last entry again cuts off everything after it.
            let entry = engine
                .get_entry::<WalEntryExt>(region.get(), last)?
                .ok_or_else(|| self.corrupt(format!("recorded entry {last} is missing")))?;
            repair.add_entries::<WalEntryExt>(region.get(), std::slice::from_ref(&entry))?;
            repairs.push(LogRepair::AboveLast {
                region,
                to: held_last,
            });
        }
        Ok(())
    }
}

impl RaftLogStore for RaftLogEngine {
    fn write(&self, batch: &mut LogWriteBatch, sync: SyncMode) -> Result<usize, LogError> {
        let mut spare = self.writer.lock();
        batch.prepare(&*self.spans.read())?;
        // Out of the lock while in use: a failed (or panicking) write leaves nothing of
        // itself behind for the next one.
        let mut lb = std::mem::take(&mut *spare);
        Self::encode(batch, &mut lb)?;
        // Readers see only what the log holds both before and after the write while it is
        // under way, and the new spans once it is done. A failed write is fail-stop, so
        // the narrower spans it leaves do not matter.
        if batch.changes().iter().any(|c| c.narrows) {
            let narrowing = batch.changes().iter().filter(|c| c.narrows);
            set_spans(&mut self.spans.write(), narrowing, |c| c.during);
        }
        let written = self.engine.write(&mut lb, sync == SyncMode::Sync)?;
        *spare = lb;
        set_spans(&mut self.spans.write(), batch.changes().iter(), |c| c.after);
        for change in batch.changes() {
            self.debug_check_span(change.region, change.after);
        }
        batch.clear();
        Ok(written)
    }

    fn recover(&self) -> Result<Vec<(RegionId, RaftLocalState)>, LogError> {
        let mut ids: Vec<RegionId> = self.spans.read().keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let state = self.local_state(id)?.ok_or_else(|| LogError::Missing {
                    region: id,
                    what: "its state".into(),
                })?;
                Ok((id, state))
            })
            .collect()
    }

    fn local_state(&self, region: RegionId) -> Result<Option<RaftLocalState>, LogError> {
        read_state(&self.engine, region)
    }

    fn span(&self, region: RegionId) -> Option<LogSpan> {
        self.spans.read().get(&region).copied()
    }

    fn entry(&self, region: RegionId, index: u64) -> Result<Option<Entry>, LogError> {
        // One way to read: outside the log (before or racing the read) is None.
        match self.entries(region, index, index.saturating_add(1), u64::MAX) {
            Ok(mut one) => Ok(one.pop()),
            Err(LogError::OutOfRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn entries(
        &self,
        region: RegionId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        let span = self.span(region);
        LogSpan::check_read(span, region, low, high)?;
        self.read_entries(region, low, high, max_bytes)
            .map_err(|e| self.moved_or(region, span, low, high, e))
    }

    fn purge_expired_files(&self) -> Result<Vec<RegionId>, LogError> {
        Ok(self
            .engine
            .purge_expired_files()?
            .into_iter()
            .map(RegionId)
            .collect())
    }
}

/// raft-engine's file header: a magic string, then the format version and (V2) the data
/// alignment, as big-endian u64s.
const FILE_MAGIC: &[u8] = b"RAFT-LOG-FILE-HEADER-9986AB3E47F320B394C8E84916EB0ED5";
const FILE_HEADER_MAX: usize = FILE_MAGIC.len() + 16;
/// raft-engine pads to the block size under direct I/O; anything larger is damage.
const MAX_ALIGNMENT: u64 = 1 << 16;

/// Checks every log file's header before raft-engine reads it:
/// - raft-engine drops the last file of a queue whole when its header does not read back,
///   taking it for a file torn while being created. Such a file holds nothing past its
///   header; one that does is damaged, and dropping it would lose acknowledged writes.
/// - a damaged alignment field made raft-engine allocate exabytes and abort the process.
fn check_file_headers(dir: &Path) -> Result<(), LogError> {
    for ext in ["raftlog", "rewrite"] {
        for file in log_files(dir, ext) {
            let damaged = |detail: &str| LogError::CorruptFile {
                file: file.clone(),
                detail: detail.into(),
            };
            let unreadable = |e: std::io::Error| damaged(&format!("unreadable: {e}"));
            let mut f = std::fs::File::open(&file).map_err(unreadable)?;
            let mut header = Vec::with_capacity(FILE_HEADER_MAX);
            (&mut f)
                .take(FILE_HEADER_MAX as u64)
                .read_to_end(&mut header)
                .map_err(unreadable)?;
            let Err(what) = parse_file_header(&header) else {
                continue;
            };
            // Damaged headers are rare: only now read the rest, to see whether data
            // stands behind it. A header torn while the file was created has none, and
            // raft-engine drops that file (a sealed one it refuses by itself).
            let mut rest = Vec::new();
            f.read_to_end(&mut rest).map_err(unreadable)?;
            if rest.iter().any(|&b| b != 0) {
                return Err(damaged(&format!("{what} in front of written data")));
            }
        }
    }
    Ok(())
}

/// What a log file's header says.
#[derive(Debug, PartialEq, Eq)]
struct FileHeader {
    /// Bytes the header takes (V1: magic and version; V2: and the alignment).
    len: u64,
    /// Batches start at multiples of this (0: anywhere).
    alignment: u64,
}

fn parse_file_header(bytes: &[u8]) -> Result<FileHeader, &'static str> {
    let Some(rest) = bytes.strip_prefix(FILE_MAGIC) else {
        return Err("damaged header");
    };
    let field = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(rest.get(at..at + 8)?.try_into().ok()?))
    };
    let magic = FILE_MAGIC.len() as u64;
    match field(0) {
        Some(1) => Ok(FileHeader {
            len: magic + 8,
            alignment: 0,
        }),
        Some(2) => match field(8) {
            Some(a) if a == 0 || (a.is_power_of_two() && a <= MAX_ALIGNMENT) => Ok(FileHeader {
                len: magic + 16,
                alignment: a,
            }),
            _ => Err("damaged alignment in the header"),
        },
        _ => Err("damaged version in the header"),
    }
}

/// The log files with this extension, in file order.
fn log_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// raft-engine reports damage it finds while reading a file without naming the file:
/// `file` finds it.
fn damage_error(e: raft_engine::Error, file: impl FnOnce() -> PathBuf) -> LogError {
    match e {
        raft_engine::Error::Corruption(_) | raft_engine::Error::Codec(_) => LogError::CorruptFile {
            file: file(),
            detail: e.to_string(),
        },
        e => e.into(),
    }
}

/// The damaged log file, for an error raft-engine reported without naming one. Entry
/// blocks are checked first: raft-engine checks them only when it reads them, which is when
/// a running log finds damage. Then item batches, through raft-engine's own reader, which
/// takes a preallocated zero tail for damage: so each queue's last (active) file is
/// checked last.
fn find_corrupt_file(dir: &Path) -> Option<PathBuf> {
    let mut files = Vec::new();
    let mut active = Vec::new();
    for ext in ["raftlog", "rewrite"] {
        let mut queue = log_files(dir, ext);
        active.extend(queue.pop());
        files.extend(queue);
    }
    files.extend(active);
    let items_damaged = |f: &&PathBuf| match raft_engine::Engine::dump(f) {
        Ok(mut items) => items.any(|item| item.is_err()),
        Err(_) => true,
    };
    let found = files.iter().find(|f| !entry_blocks_intact(f));
    found.or_else(|| files.iter().find(items_damaged)).cloned()
}

/// raft-engine's log batch header: the batch length (shifted left by 8, the compression
/// type in the low byte), then the offset of its items, both big-endian u64s. The entries
/// block lies between the header and the items and ends with its own CRC32.
const BATCH_HEADER_LEN: u64 = 16;

/// Whether every entries block of a log file matches its checksum. Reads one block at a
/// time; a batch it cannot parse ends the walk (raft-engine's item reader judges those).
fn entry_blocks_intact(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let read = |at: u64, len: u64| -> Option<Vec<u8>> {
        let end = at.checked_add(len).filter(|&end| end <= size)?;
        let mut buf = vec![0; usize::try_from(end - at).ok()?];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(buf)
    };
    let Some(head) = read(0, size.min(FILE_HEADER_MAX as u64)) else {
        return false;
    };
    let Ok(header) = parse_file_header(&head) else {
        return false;
    };
    let mut pos = header.len;
    while let Some(batch) = read(pos, BATCH_HEADER_LEN) {
        let word = |at: usize| u64::from_be_bytes(batch[at..at + 8].try_into().expect("8 bytes"));
        let (len, items_at) = (word(0) >> 8, word(8));
        if len == 0 {
            // Zero padding up to the next aligned batch, or the end of what was written.
            match pos.checked_next_multiple_of(header.alignment) {
                Some(next) if next > pos => pos = next,
                _ => break,
            }
            continue;
        }
        // Every batch raft-engine writes has items (at least their checksum) after the
        // entries block.
        let fits = pos.checked_add(len).is_some_and(|end| end <= size);
        if !fits || items_at < BATCH_HEADER_LEN || items_at >= len {
            break;
        }
        let block_len = items_at - BATCH_HEADER_LEN;
        if block_len > 0 {
            let Some(block) = read(pos + BATCH_HEADER_LEN, block_len) else {
                return false;
            };
            if !matches!(check_crc32_trailer(&block), Crc32Trailer::Intact(_)) {
                return false;
            }
        }
        pos += len;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An I/O error at open is the disk's, unless a file is found damaged or raft-engine
    /// was refused cutting a sealed file.
    #[test]
    fn an_io_error_at_open_is_damage_only_when_a_file_is_or_a_cut_was_refused() {
        let dir = Path::new("/logs");
        let io = |kind, what: &str| std::io::Error::new(kind, what.to_string());
        let damaged = Some(PathBuf::from("/logs/0001.raftlog"));
        let file_of = |e: LogError| match e {
            LogError::CorruptFile { file, .. } => file,
            other => panic!("not damage: {other:?}"),
        };
        let e = open_io_error(io(std::io::ErrorKind::Other, "read"), damaged.clone(), dir);
        assert_eq!(Some(file_of(e)), damaged);
        let cut = io(
            std::io::ErrorKind::InvalidInput,
            "ftruncate: Bad file descriptor",
        );
        assert_eq!(file_of(open_io_error(cut, None, dir)), dir);
        for (kind, what) in [
            (std::io::ErrorKind::PermissionDenied, "ftruncate denied"),
            (std::io::ErrorKind::InvalidInput, "bad argument"),
            (std::io::ErrorKind::Other, "disk on fire"),
        ] {
            let e = open_io_error(io(kind, what), None, dir);
            assert!(
                matches!(e, LogError::Engine(raft_engine::Error::Io(_))),
                "{what}: {e:?}"
            );
        }
    }

    /// A hand-built raft-engine batch: the entries block with its CRC32 (flipped when
    /// `damaged`), then `items` (which the entry scan does not read).
    fn batch(entries: &[u8], items: &[u8], damaged: bool) -> Vec<u8> {
        let mut block = entries.to_vec();
        if !entries.is_empty() {
            let crc = crc32fast::hash(entries) ^ u32::from(damaged);
            block.extend_from_slice(&crc.to_le_bytes());
        }
        let items_at = BATCH_HEADER_LEN + block.len() as u64;
        let len = items_at + items.len() as u64;
        let mut b = (len << 8).to_be_bytes().to_vec();
        b.extend_from_slice(&items_at.to_be_bytes());
        b.extend(block);
        b.extend_from_slice(items);
        b
    }

    /// A batch header alone, with whatever length and item offset it claims.
    fn batch_header(len: u64, items_at: u64) -> Vec<u8> {
        let mut b = (len << 8).to_be_bytes().to_vec();
        b.extend_from_slice(&items_at.to_be_bytes());
        b
    }

    /// The entry scan over hand-built files: it walks every batch (V1 and V2 headers),
    /// skips alignment padding, stops at a zero tail, an empty entries block is fine, and
    /// a header it cannot follow (item offset out of the batch, a batch cut short) ends
    /// the walk instead of reading garbage as a block.
    #[test]
    fn entry_block_scan_table() {
        let good = batch(b"entries", b"items", false);
        let bad = batch(b"entries", b"items", true);
        let padded_to = |mut file: Vec<u8>, to: usize| {
            file.resize(to, 0);
            file
        };
        let v1 = header(1, None);
        let v2 = header(2, Some(0));
        let aligned = header(2, Some(4096));
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "v1, two good batches",
                [&v1[..], &good, &good].concat(),
                true,
            ),
            (
                "v1, the second batch damaged",
                [&v1[..], &good, &bad].concat(),
                false,
            ),
            (
                "v2, the first batch damaged",
                [&v2[..], &bad, &good].concat(),
                false,
            ),
            (
                "v2, an empty entries block",
                [&v2[..], &batch(b"", b"items", false), &good].concat(),
                true,
            ),
            (
                "v2, an empty entries block, then damage",
                [&v2[..], &batch(b"", b"items", false), &bad].concat(),
                false,
            ),
            (
                "v2, a zero tail",
                padded_to([&v2[..], &good].concat(), 8192),
                true,
            ),
            (
                "aligned, a damaged batch after padding",
                [padded_to([&aligned[..], &good].concat(), 4096), bad.clone()].concat(),
                false,
            ),
            (
                "aligned, a zero tail from a boundary",
                padded_to(padded_to([&aligned[..], &good].concat(), 4096), 8192),
                true,
            ),
            (
                "item offset before the entries",
                [&v2[..], &batch_header(64, 8), &[0xee; 48]].concat(),
                true,
            ),
            (
                "item offset beyond the batch",
                [&v2[..], &batch_header(32, 40), &[0xee; 16]].concat(),
                true,
            ),
            (
                "a batch without items",
                [&v2[..], &batch(b"entries", b"", false), &bad].concat(),
                true,
            ),
            (
                "a batch cut short",
                [&v2[..], &batch_header(4000, 40), &[0xee; 100]].concat(),
                true,
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (what, bytes, intact) in cases {
            let file = dir.path().join("0000000000000001.raftlog");
            std::fs::write(&file, &bytes).unwrap();
            assert_eq!(entry_blocks_intact(&file), intact, "{what}");
        }
    }

    /// The entry-block scan a failed read uses to name the damaged file: it accepts what
    /// raft-engine writes, plain or LZ4-compressed, and catches a flipped byte in the
    /// entries of any batch.
    #[test]
    fn entry_block_scan_accepts_written_files_and_catches_damage() {
        use crate::storage::SyncMode;
        use crate::storage::raft_log::{LogWriteBatch, RaftLogConfig, RaftLogStore};
        for compress_above in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = RaftLogConfig::new(dir.path());
            cfg.batch_compression_threshold = compress_above;
            let log = RaftLogEngine::open(&cfg).unwrap();
            for i in 0..5u64 {
                let mut batch = LogWriteBatch::default();
                let entries: Vec<Entry> = (i * 4 + 1..=i * 4 + 4)
                    .map(|index| Entry {
                        index,
                        term: 1,
                        data: vec![index as u8; 300].into(),
                        ..Default::default()
                    })
                    .collect();
                batch.append(RegionId(1), &entries).unwrap();
                let state = RaftLocalState {
                    last_index: i * 4 + 4,
                    ..Default::default()
                };
                batch.put_state(RegionId(1), &state);
                log.write(&mut batch, SyncMode::Sync).unwrap();
            }
            drop(log);
            let file = log_files(dir.path(), "raftlog").remove(0);
            assert!(
                entry_blocks_intact(&file),
                "compress above {compress_above}"
            );
            let clean = std::fs::read(&file).unwrap();
            // A byte inside each batch's entries: the scan walks every batch.
            let mut at = clean.len() - 1;
            while at > FILE_HEADER_MAX {
                let mut damaged = clean.clone();
                damaged[at] ^= 0x40;
                std::fs::write(&file, &damaged).unwrap();
                let dumped_clean = raft_engine::Engine::dump(&file)
                    .map(|mut items| items.all(|item| item.is_ok()))
                    .unwrap_or(false);
                // Damage the item scan misses must be caught by the entry scan.
                assert!(
                    !dumped_clean || !entry_blocks_intact(&file),
                    "compress above {compress_above}: a flip at {at} goes unnoticed"
                );
                at = at.saturating_sub(97);
            }
            std::fs::write(&file, &clean).unwrap();
        }
    }

    fn header(version: u64, alignment: Option<u64>) -> Vec<u8> {
        let mut h = FILE_MAGIC.to_vec();
        h.extend_from_slice(&version.to_be_bytes());
        if let Some(a) = alignment {
            h.extend_from_slice(&a.to_be_bytes());
        }
        h
    }

    /// The header check accepts what raft-engine writes (V1; V2 with no or a block-sized
    /// alignment) and refuses damage, including alignments that made raft-engine abort.
    #[test]
    fn file_header_check_table() {
        let magic = FILE_MAGIC.len() as u64;
        let ok = [
            (header(1, None), magic + 8, 0),
            (header(2, Some(0)), magic + 16, 0),
            (header(2, Some(4096)), magic + 16, 4096),
            (header(2, Some(MAX_ALIGNMENT)), magic + 16, MAX_ALIGNMENT),
        ];
        for (h, len, alignment) in ok {
            let want = FileHeader { len, alignment };
            assert_eq!(parse_file_header(&h), Ok(want), "{h:?}");
        }
        let mut bad_magic = header(2, Some(0));
        bad_magic[3] ^= 1;
        let bad = [
            bad_magic,
            header(3, Some(0)),
            header(0, None),
            header(2, Some(3000)),
            header(2, Some(MAX_ALIGNMENT * 2)),
            header(2, Some(1 << 60)),
            header(2, None),
            FILE_MAGIC[..20].to_vec(),
        ];
        for h in bad {
            assert!(parse_file_header(&h).is_err(), "{h:?}");
        }
    }

    /// A read that failed while a write moved its range out of the log reports the range
    /// as outside the log (the core then sees Compacted or Unavailable); a failure with the
    /// span unchanged keeps its own error, even for a range outside the log.
    #[test]
    fn a_failed_read_is_out_of_range_only_if_a_write_moved_the_log_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLogEngine::open(&RaftLogConfig::new(dir.path())).unwrap();
        let r = RegionId(1);
        let mut batch = LogWriteBatch::default();
        let entries: Vec<Entry> = (1..=10)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect();
        batch.append(r, &entries).unwrap();
        batch.put_state(
            r,
            &RaftLocalState {
                hard_state: None,
                last_index: 10,
                last_term: 0,
            },
        );
        log.write(&mut batch, SyncMode::NoSync).unwrap();
        let before = log.span(r);
        let failure = || LogError::Corrupt {
            region: r,
            what: "injected".into(),
        };
        // Unchanged span: the failure stands, inside the log or not.
        assert!(matches!(
            log.moved_or(r, before, 2, 5, failure()),
            LogError::Corrupt { .. }
        ));
        assert!(matches!(
            log.moved_or(r, before, 20, 25, failure()),
            LogError::Corrupt { .. }
        ));
        log.compact_to(r, 6).unwrap();
        // The log moved past the read: outside it now.
        assert!(matches!(
            log.moved_or(r, before, 2, 5, failure()),
            LogError::OutOfRange {
                low: 2,
                high: 5,
                ..
            }
        ));
        // The log moved, but the read is still inside it: the failure stands.
        assert!(matches!(
            log.moved_or(r, before, 7, 9, failure()),
            LogError::Corrupt { .. }
        ));
    }
}
