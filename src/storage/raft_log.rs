//! The raft log of every region of a store in one raft-engine instance (raft group id =
//! region id): entries, and under each group a `RaftLocalState` (hard state, last index).
//! Many regions' writes merge into one `LogWriteBatch` and reach the disk with one engine
//! write and at most one fsync. `RegionLog` is the core's `LogStorage` view of one region,
//! with a cache of recent entries so a leader's replication rarely reads the disk.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use raft_engine::{Command, LogBatch, ReadableSize, RecoveryMode};

use super::pb::RaftLocalState;
use super::wal_entry::{WalEntry, WalEntryExt};
use crate::raft::StorageError;
use crate::raft::message::MAX_INDEX_OR_TERM;
use crate::raft::pb::{ConfState, Entry, Snapshot};
use crate::raft::storage::{LogStorage, RaftState, StorageResult, entry_size};

/// Key of a region's `RaftLocalState` inside its raft-engine group.
const STATE_KEY: &[u8] = b"raft_local_state";
/// Key of the first index of a region's log, written whenever a batch moves it (the first
/// append after a reset, a compaction). Absent: the log is empty, `last_index + 1`.
const FIRST_KEY: &[u8] = b"log_first_index";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log engine: {0}")]
    Engine(#[from] raft_engine::Error),
    #[error("raft log file {} is corrupt ({detail}); refusing to start", file.display())]
    CorruptFile { file: PathBuf, detail: String },
    #[error("raft log of region {region} is corrupt: {what}")]
    Corrupt { region: u64, what: String },
    #[error("raft log of region {region} lacks {what}")]
    Missing { region: u64, what: String },
    #[error("refused write to the raft log of region {region}: {what}")]
    InvalidWrite { region: u64, what: String },
    #[error("entries {low}..{high} of region {region} are outside its log ({span})")]
    OutOfRange {
        region: u64,
        low: u64,
        high: u64,
        span: SpanDisplay,
    },
}

/// A region's log span as an error message shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanDisplay(pub Option<LogSpan>);

impl std::fmt::Display for SpanDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => write!(f, "no log"),
            Some(s) if s.is_empty() => write!(f, "empty, next index {}", s.first),
            Some(s) => write!(f, "{}..={}", s.first, s.last),
        }
    }
}

/// Settings of the store's raft log.
#[derive(Debug, Clone)]
pub struct RaftLogConfig {
    pub dir: PathBuf,
    /// Log files rotate at this size. Default 128 MiB.
    pub target_file_size: u64,
    /// Total size of log files above which `purge_expired_files` asks for compaction of
    /// the regions holding the oldest files. Default 10 GiB.
    pub purge_threshold: u64,
    /// Threads replaying the log on open. Default 4.
    pub recovery_threads: usize,
    /// Write batches larger than this are LZ4-compressed (0 = never). Default 8 KiB.
    pub batch_compression_threshold: u64,
}

impl RaftLogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RaftLogConfig {
            dir: dir.into(),
            target_file_size: 128 << 20,
            purge_threshold: 10 << 30,
            recovery_threads: 4,
            batch_compression_threshold: 8 << 10,
        }
    }

    fn engine_config(&self) -> raft_engine::Config {
        raft_engine::Config {
            dir: self.dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize(self.target_file_size),
            purge_threshold: ReadableSize(self.purge_threshold),
            recovery_threads: self.recovery_threads.max(1),
            batch_compression_threshold: ReadableSize(self.batch_compression_threshold),
            // A torn tail (a crash mid-write) is cut off; damage elsewhere refuses to open.
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            ..Default::default()
        }
    }
}

/// One operation of a batch on one region's log, as `LogWriteBatch::ops` hands it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogOp<'a> {
    /// Consecutive entries, replacing any suffix from the first one's index.
    Append(&'a [WalEntry]),
    /// Drop every entry below the index (log GC).
    CompactTo(u64),
    /// Drop the whole log and the state (a snapshot install, or the region's removal).
    Reset,
    PutState(&'a RaftLocalState),
}

/// How a batch stores an operation: appended entries live in one vector shared by all
/// regions of the batch.
#[derive(Debug, Clone)]
enum StoredOp {
    Append { start: usize, end: usize },
    CompactTo(u64),
    Reset,
    PutState(RaftLocalState),
}

/// Many regions' entries and states, written together by one `RaftLogStore::write`.
#[derive(Debug, Clone, Default)]
pub struct LogWriteBatch {
    ops: Vec<(u64, StoredOp)>,
    entries: Vec<WalEntry>,
    /// Scratch space of `prepare`, kept so a large batch does not allocate anew.
    order: Vec<(u64, usize)>,
    /// What `prepare` found: how the batch changes each region it touches.
    changes: Vec<SpanChange>,
}

/// A region's log as flotilla's own durable records define it: the entries `first..=last`
/// (none when `first == last + 1`). `last` is the `last_index` of the region's
/// `RaftLocalState`; `first` is recorded by the log itself when a batch moves it. Whatever
/// the engine holds outside the span is not part of the log (and is removed on open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpan {
    pub first: u64,
    pub last: u64,
}

impl LogSpan {
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// The entries' first and last index, if there are any.
    pub fn entries(&self) -> Option<(u64, u64)> {
        (!self.is_empty()).then_some((self.first, self.last))
    }

    /// Refuses a read of `[low, high)` that is inverted or leaves the log.
    pub fn check_read(
        span: Option<Self>,
        region: u64,
        low: u64,
        high: u64,
    ) -> Result<(), LogError> {
        let inside =
            span.is_some_and(|s| s.first <= low && low <= high && high <= s.last.saturating_add(1));
        if inside {
            return Ok(());
        }
        let span = SpanDisplay(span);
        Err(LogError::OutOfRange {
            region,
            low,
            high,
            span,
        })
    }
}

/// How one batch changes one region's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanChange {
    pub region: u64,
    /// None: the region has no log any more (removed).
    pub after: Option<LogSpan>,
    /// The first index must be recorded anew (it moved, or a reset erased the record).
    pub first_moved: bool,
}

impl LogWriteBatch {
    /// Appends entries (consecutive indices) to a region's log, replacing any suffix from
    /// the first one's index.
    pub fn append(&mut self, region: u64, entries: &[Entry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let consecutive = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        if !consecutive || first.index == 0 {
            let what = "entries are not consecutive from a positive index".to_string();
            return Err(LogError::InvalidWrite { region, what });
        }
        let start = self.entries.len();
        self.entries
            .extend(entries.iter().map(WalEntry::from_entry));
        let end = self.entries.len();
        self.ops.push((region, StoredOp::Append { start, end }));
        Ok(())
    }

    /// Drops every entry of the region below `index`.
    pub fn compact_to(&mut self, region: u64, index: u64) {
        self.ops.push((region, StoredOp::CompactTo(index)));
    }

    /// Drops the region's whole log and its state. A snapshot install follows it in the
    /// same batch with the new state (and any entries after the snapshot); removing a
    /// region leaves it at that.
    pub fn reset(&mut self, region: u64) {
        self.ops.push((region, StoredOp::Reset));
    }

    pub fn put_state(&mut self, region: u64, state: &RaftLocalState) {
        self.ops.push((region, StoredOp::PutState(*state)));
    }

    /// The operations in the order they were added, each with its region.
    pub fn ops(&self) -> impl Iterator<Item = (u64, LogOp<'_>)> {
        self.ops.iter().map(|(region, op)| (*region, self.view(op)))
    }

    fn view<'a>(&'a self, op: &'a StoredOp) -> LogOp<'a> {
        match op {
            StoredOp::Append { start, end } => LogOp::Append(&self.entries[*start..*end]),
            StoredOp::CompactTo(index) => LogOp::CompactTo(*index),
            StoredOp::Reset => LogOp::Reset,
            StoredOp::PutState(state) => LogOp::PutState(state),
        }
    }

    /// How many distinct regions the batch writes to.
    pub fn region_count(&self) -> usize {
        let mut ids: Vec<u64> = self.ops.iter().map(|(r, _)| *r).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the appended entries, as the core counts them.
    pub fn entry_bytes(&self) -> u64 {
        self.entries.iter().map(|w| entry_size(&w.entry)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.ops.clear();
        self.entries.clear();
    }

    /// Readies the batch for the log it is about to be written to, and refuses it whole
    /// (before anything is written) if it would break a region's log:
    /// - an append must continue the log (`first ..= last + 1`): no hole, no overwrite of
    ///   compacted entries, and an emptied log continues right after its end;
    /// - a compaction may empty the log (`compact_to(last + 1)`) but not pass its end:
    ///   installing a snapshot beyond it is a `reset` plus a state;
    /// - a region whose entries the batch changes gets a `RaftLocalState` in the batch,
    ///   and the last one names the log's new last index.
    ///
    /// Compactions of regions with no log are dropped (raft-engine would list a removed
    /// region again). `changes` then tells how each touched region's log changes.
    pub fn prepare(&mut self, spans: &impl LogSpans) -> Result<(), LogError> {
        let mut no_ops = Vec::new();
        self.changes.clear();
        // Each region's operations, in the order they were added.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            self.ops
                .iter()
                .enumerate()
                .map(|(at, (region, _))| (*region, at)),
        );
        order.sort_unstable();
        let result = self.check_regions(&order, spans, &mut no_ops);
        self.order = order;
        result?;
        if !no_ops.is_empty() {
            no_ops.sort_unstable();
            let mut at = 0;
            self.ops.retain(|_| {
                at += 1;
                no_ops.binary_search(&(at - 1)).is_err()
            });
        }
        Ok(())
    }

    fn check_regions(
        &mut self,
        order: &[(u64, usize)],
        spans: &impl LogSpans,
        no_ops: &mut Vec<usize>,
    ) -> Result<(), LogError> {
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let region = group[0].0;
            let before = spans.current_span(region);
            let mut check = SpanCheck {
                region,
                span: before,
                reset: false,
                appended: false,
            };
            let mut state_last = None;
            for &(_, at) in group {
                match &self.ops[at].1 {
                    StoredOp::CompactTo(_) if check.span.is_none() => no_ops.push(at),
                    StoredOp::CompactTo(index) => check.compact_to(*index)?,
                    StoredOp::Reset => {
                        check.span = None;
                        check.reset = true;
                    }
                    StoredOp::Append { start, end } => {
                        let first = self.entries[*start].entry.index;
                        let last = self.entries[*end - 1].entry.index;
                        check.append(first, last)?;
                    }
                    StoredOp::PutState(state) => state_last = Some(state.last_index),
                }
            }
            let after = check.finish(state_last)?;
            // Recorded again when it moved, when a reset erased it, and when an empty log
            // gets entries (cheap, and the record then never rests on a default).
            let was_empty = before.is_none_or(|b| b.is_empty());
            let first_moved = after.is_some_and(|a| {
                check.reset
                    || before.map(|b| b.first) != Some(a.first)
                    || (was_empty && !a.is_empty())
            });
            self.changes.push(SpanChange {
                region,
                after,
                first_moved,
            });
        }
        Ok(())
    }

    /// How the last `prepare` found the batch to change each region it touches.
    pub fn changes(&self) -> &[SpanChange] {
        &self.changes
    }
}

/// Where a batch's check finds each region's current log span.
pub trait LogSpans {
    fn current_span(&self, region: u64) -> Option<LogSpan>;
}

/// A region's log span as a batch's operations change it.
struct SpanCheck {
    region: u64,
    /// None: no log (never written, or reset in this batch).
    span: Option<LogSpan>,
    reset: bool,
    appended: bool,
}

impl SpanCheck {
    fn refuse<T>(&self, what: String) -> Result<T, LogError> {
        Err(LogError::InvalidWrite {
            region: self.region,
            what,
        })
    }

    fn compact_to(&mut self, index: u64) -> Result<(), LogError> {
        let Some(span) = self.span.as_mut() else {
            return Ok(());
        };
        if index > span.last + 1 {
            let last = span.last;
            return self.refuse(format!(
                "compaction to {index} passes the end of the log ({last}); reset it instead"
            ));
        }
        span.first = span.first.max(index);
        Ok(())
    }

    fn append(&mut self, first: u64, last: u64) -> Result<(), LogError> {
        self.appended = true;
        self.span = match self.span {
            Some(s) if first < s.first => {
                return self.refuse(format!(
                    "append at {first} below the log's first index {}",
                    s.first
                ));
            }
            Some(s) if first > s.last + 1 => {
                return self.refuse(format!("append at {first} to a log ending at {}", s.last));
            }
            Some(s) => Some(LogSpan {
                first: s.first,
                last,
            }),
            // A log that does not exist starts wherever the append does.
            None => Some(LogSpan { first, last }),
        };
        Ok(())
    }

    /// The span after the batch, given the last state it writes (its `last_index`).
    fn finish(&self, state_last: Option<u64>) -> Result<Option<LogSpan>, LogError> {
        match (self.span, state_last) {
            (None, None) => Ok(None),
            // A state alone (a snapshot install after a reset, a new region): an empty
            // log that continues after the state's last index.
            (None, Some(last)) => Ok(Some(LogSpan {
                first: last + 1,
                last,
            })),
            (Some(span), Some(last)) if span.last == last => Ok(Some(span)),
            (Some(span), Some(last)) => self.refuse(format!(
                "the state names last index {last} but the log ends at {}",
                span.last
            )),
            (Some(_), None) if self.appended || self.reset => {
                self.refuse("entries written without a state naming the new last index".into())
            }
            (Some(span), None) => Ok(Some(span)),
        }
    }
}

/// A store's raft log: every region's entries and `RaftLocalState`. `RaftLogEngine` keeps
/// it in raft-engine; `MemRaftLog` in memory for deterministic tests. Both give the same
/// answers: a region's log is its `LogSpan`, and reads outside it are errors.
pub trait RaftLogStore: Send + Sync {
    /// Writes the batch atomically (one engine write; one fsync if `sync`) and empties it;
    /// returns the bytes written. A batch that fails `LogWriteBatch::prepare` is refused
    /// whole, before anything is written. Writes are serialized: the store merges its
    /// regions' writes into one batch per write itself.
    fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize, LogError>;
    /// Every region with a log, in id order, with its state.
    fn recover(&self) -> Result<Vec<(u64, RaftLocalState)>, LogError>;
    fn local_state(&self, region: u64) -> Result<Option<RaftLocalState>, LogError>;
    /// The region's log span (None: no log).
    fn span(&self, region: u64) -> Option<LogSpan>;
    /// The entry at `index`; None outside the log.
    fn entry(&self, region: u64, index: u64) -> Result<Option<Entry>, LogError>;
    /// Entries in `[low, high)`, stopping before `max_bytes` is exceeded (at least one, as
    /// the core counts bytes). `LogError::OutOfRange` unless `first <= low <= high <=
    /// last + 1`; a region without a log has no range.
    fn entries(
        &self,
        region: u64,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError>;
    /// Drops the region's entries below `index` (log GC; not synced by itself); returns
    /// how many were dropped. Refused past the log's end.
    fn compact_to(&self, region: u64, index: u64) -> Result<u64, LogError> {
        let before = self.span(region);
        let mut batch = LogWriteBatch::default();
        batch.compact_to(region, index);
        self.write(&mut batch, false)?;
        let first = |s: Option<LogSpan>| s.map_or(0, |s| s.first);
        Ok(first(self.span(region)).saturating_sub(first(before)))
    }
    /// Deletes log files whose entries were all compacted; returns the regions whose old
    /// entries keep the oldest files alive (to be force-compacted, or to have lagging
    /// followers sent a snapshot).
    fn purge_expired_files(&self) -> Result<Vec<u64>, LogError>;
}

/// What opening the log removed because flotilla's records do not count it as part of the
/// log (raft-engine's recovery or purge had brought it back, or a write never completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRepair {
    /// Entries of a region with no state.
    Orphaned { region: u64 },
    /// Entries below the region's first index.
    BelowFirst { region: u64, from: u64 },
    /// Entries above the region's last index.
    AboveLast { region: u64, to: u64 },
}

pub struct RaftLogEngine {
    engine: raft_engine::Engine,
    /// Where the files live, to name a damaged one.
    dir: PathBuf,
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

type SpanMap = HashMap<u64, LogSpan, BuildHasherDefault<RegionIdHasher>>;

impl LogSpans for SpanMap {
    fn current_span(&self, region: u64) -> Option<LogSpan> {
        self.get(&region).copied()
    }
}

impl<T: RaftLogStore + ?Sized> LogSpans for T {
    fn current_span(&self, region: u64) -> Option<LogSpan> {
        RaftLogStore::span(self, region)
    }
}

/// The first and last index of the entries raft-engine's memtable holds for a region.
fn engine_entries(engine: &raft_engine::Engine, region: u64) -> Option<(u64, u64)> {
    engine.first_index(region).zip(engine.last_index(region))
}

/// Region ids need no cryptographic hashing: a multiply and a fold spread them well.
#[derive(Default)]
struct RegionIdHasher(u64);

impl Hasher for RegionIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// Entries read from raft-engine per call: a huge range is never preallocated at once.
const READ_CHUNK: u64 = 64;

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
            Err(e @ (raft_engine::Error::Corruption(_) | raft_engine::Error::Io(_))) => {
                return Err(corrupt_file(&cfg.dir, e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut spans = SpanMap::default();
        let mut repair = LogBatch::default();
        let mut repairs = Vec::new();
        for region in engine.raft_groups() {
            let held = engine_entries(&engine, region);
            let Some(state) = read_state(&engine, region)? else {
                // Entries without a state were never part of an accepted write.
                repair.add_command(region, Command::Clean);
                repairs.push(LogRepair::Orphaned { region });
                continue;
            };
            let span = recorded_span(&engine, region, &state)?;
            let fix = RegionRepair {
                region,
                span,
                state: &state,
                held,
            };
            fix.queue(&engine, &mut repair, &mut repairs)?;
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
        match e {
            raft_engine::Error::Corruption(_) | raft_engine::Error::Codec(_) => {
                corrupt_file(&self.dir, e.to_string())
            }
            e => e.into(),
        }
    }

    /// What opening the log removed (entries outside their region's recorded span).
    pub fn repairs(&self) -> &[LogRepair] {
        &self.repairs
    }

    /// Debug builds check that raft-engine holds exactly the entries of the span.
    fn debug_check_span(&self, region: u64, span: Option<LogSpan>) {
        debug_assert_eq!(
            span.and_then(|s| s.entries()),
            engine_entries(&self.engine, region),
            "the log of region {region} disagrees with raft-engine's memtable"
        );
    }

    fn encode(batch: &LogWriteBatch, lb: &mut LogBatch) -> Result<(), LogError> {
        for (region, op) in batch.ops() {
            match op {
                LogOp::Append(ents) => lb.add_entries::<WalEntryExt>(region, ents)?,
                LogOp::CompactTo(index) => lb.add_command(region, Command::Compact { index }),
                LogOp::Reset => lb.add_command(region, Command::Clean),
                LogOp::PutState(state) => {
                    lb.put(region, STATE_KEY.to_vec(), state.encode_to_vec())?
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

fn put_first(lb: &mut LogBatch, region: u64, first: u64) -> Result<(), LogError> {
    Ok(lb.put(region, FIRST_KEY.to_vec(), first.to_le_bytes().to_vec())?)
}

fn read_state(
    engine: &raft_engine::Engine,
    region: u64,
) -> Result<Option<RaftLocalState>, LogError> {
    let Some(raw) = engine.get(region, STATE_KEY) else {
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
    region: u64,
    state: &RaftLocalState,
) -> Result<LogSpan, LogError> {
    let last = state.last_index;
    if last >= MAX_INDEX_OR_TERM {
        return Err(LogError::Corrupt {
            region,
            what: format!("last index {last} is out of range"),
        });
    }
    let first = match engine.get(region, FIRST_KEY) {
        None => last + 1,
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
    region: u64,
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
            repair.add_command(region, Command::Clean);
            repair.put(region, STATE_KEY.to_vec(), self.state.encode_to_vec())?;
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
            repair.add_command(region, Command::Compact { index: first });
            repairs.push(LogRepair::BelowFirst {
                region,
                from: held_first,
            });
        }
        if held_last > last {
            // Appending the last entry again cuts off everything after it.
            let entry = engine
                .get_entry::<WalEntryExt>(region, last)?
                .ok_or_else(|| self.corrupt(format!("recorded entry {last} is missing")))?;
            repair.add_entries::<WalEntryExt>(region, std::slice::from_ref(&entry))?;
            repairs.push(LogRepair::AboveLast {
                region,
                to: held_last,
            });
        }
        Ok(())
    }
}

impl RaftLogStore for RaftLogEngine {
    fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize, LogError> {
        let mut spare = self.writer.lock();
        batch.prepare(&*self.spans.read())?;
        // Out of the lock while in use: a failed (or panicking) write leaves nothing of
        // itself behind for the next one.
        let mut lb = std::mem::take(&mut *spare);
        Self::encode(batch, &mut lb)?;
        let written = self.engine.write(&mut lb, sync)?;
        *spare = lb;
        let mut spans = self.spans.write();
        for change in batch.changes() {
            match change.after {
                Some(span) => spans.insert(change.region, span),
                None => spans.remove(&change.region),
            };
            self.debug_check_span(change.region, change.after);
        }
        drop(spans);
        batch.clear();
        Ok(written)
    }

    fn recover(&self) -> Result<Vec<(u64, RaftLocalState)>, LogError> {
        let mut ids: Vec<u64> = self.spans.read().keys().copied().collect();
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

    fn local_state(&self, region: u64) -> Result<Option<RaftLocalState>, LogError> {
        read_state(&self.engine, region)
    }

    fn span(&self, region: u64) -> Option<LogSpan> {
        self.spans.read().get(&region).copied()
    }

    fn entry(&self, region: u64, index: u64) -> Result<Option<Entry>, LogError> {
        if LogSpan::check_read(self.span(region), region, index, index + 1).is_err() {
            return Ok(None);
        }
        let entry = self
            .engine
            .get_entry::<WalEntryExt>(region, index)
            .map_err(|e| self.read_error(e))?;
        Ok(entry.map(WalEntry::into_entry))
    }

    fn entries(
        &self,
        region: u64,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        LogSpan::check_read(self.span(region), region, low, high)?;
        let mut out = Vec::new();
        let mut wal = Vec::new();
        let mut size = 0u64;
        let mut next = low;
        while next < high {
            let end = high.min(next + READ_CHUNK);
            wal.clear();
            self.engine
                .fetch_entries_to::<WalEntryExt>(region, next, end, None, &mut wal)
                .map_err(|e| self.read_error(e))?;
            if wal.len() as u64 != end - next {
                return Err(LogError::Corrupt {
                    region,
                    what: format!("entries {next}..{end} are recorded but not all are held"),
                });
            }
            for w in wal.drain(..) {
                let e = w.into_entry();
                size = size.saturating_add(entry_size(&e));
                if size > max_bytes && !out.is_empty() {
                    return Ok(out);
                }
                out.push(e);
            }
            next = end;
        }
        Ok(out)
    }

    fn purge_expired_files(&self) -> Result<Vec<u64>, LogError> {
        Ok(self.engine.purge_expired_files()?)
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
        let files = log_files(dir, ext);
        let last = files.len().saturating_sub(1);
        for (n, file) in files.into_iter().enumerate() {
            let damaged = |detail: &str| LogError::CorruptFile {
                file: file.clone(),
                detail: detail.into(),
            };
            let bytes = std::fs::read(&file).map_err(|e| damaged(&format!("unreadable: {e}")))?;
            let Err(what) = check_file_header(&bytes) else {
                continue;
            };
            let holds_data = bytes.iter().skip(FILE_HEADER_MAX).any(|&b| b != 0);
            if n < last || holds_data {
                return Err(damaged(&format!("{what} (in front of written data)")));
            }
        }
    }
    Ok(())
}

fn check_file_header(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(rest) = bytes.strip_prefix(FILE_MAGIC) else {
        return Err("damaged header");
    };
    let field = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(rest.get(at..at + 8)?.try_into().ok()?))
    };
    match field(0) {
        Some(1) => Ok(()),
        Some(2) => match field(8) {
            Some(a) if a == 0 || (a.is_power_of_two() && a <= MAX_ALIGNMENT) => Ok(()),
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

/// Corruption found in the log, naming the file if one fails to read back (else the
/// directory: raft-engine checks some damage, such as inside entry data, that the reader
/// used here does not).
fn corrupt_file(dir: &Path, detail: String) -> LogError {
    let file = find_corrupt_file(dir).unwrap_or_else(|| dir.to_path_buf());
    LogError::CorruptFile { file, detail }
}

/// The first log file (in file order) that does not read back cleanly.
fn find_corrupt_file(dir: &Path) -> Option<PathBuf> {
    let mut files = log_files(dir, "raftlog");
    files.extend(log_files(dir, "rewrite"));
    files
        .into_iter()
        .find(|f| match raft_engine::Engine::dump(f) {
            Ok(mut items) => items.any(|item| item.is_err()),
            Err(_) => true,
        })
}

/// Recent entries of one region, newest last, bounded in bytes.
#[derive(Debug, Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn append(&mut self, ents: &[Entry], max_bytes: u64) {
        let Some(first) = ents.first() else { return };
        let contiguous = self
            .entries
            .back()
            .is_none_or(|b| first.index <= b.index + 1)
            && self.first_index().is_none_or(|f| first.index >= f);
        if !contiguous {
            self.clear();
        }
        while self.entries.back().is_some_and(|b| b.index >= first.index) {
            let e = self.entries.pop_back().expect("checked non-empty");
            self.bytes -= entry_size(&e);
        }
        for e in ents {
            self.bytes += entry_size(e);
            self.entries.push_back(e.clone());
        }
        while self.bytes > max_bytes && self.entries.len() > 1 {
            let e = self.entries.pop_front().expect("more than one entry");
            self.bytes -= entry_size(&e);
        }
    }

    fn drop_below(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            let e = self.entries.pop_front().expect("checked non-empty");
            self.bytes -= entry_size(&e);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        self.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    }
}

struct RegionLogState {
    local: RaftLocalState,
    conf_state: ConfState,
    /// The last entry dropped from the log (by compaction or a snapshot): index and term.
    truncated: (u64, u64),
    cache: EntryCache,
    snapshot: SnapshotSlot,
}

/// Snapshots are generated off the raft thread (they read the KV engine and write
/// files). The core's requests are recorded and answered "temporarily unavailable" until
/// the store offers a snapshot recent enough; one snapshot serves every follower that
/// needs it while the log has not been truncated past it.
#[derive(Debug, Default)]
struct SnapshotSlot {
    /// The lowest snapshot index the core asked for, not yet handed to the store.
    requested: Option<u64>,
    /// The store took a request and has not offered (or abandoned) a snapshot since.
    generating: bool,
    ready: Option<Snapshot>,
}

fn snapshot_index(s: &Snapshot) -> u64 {
    s.metadata.as_ref().map_or(0, |m| m.index)
}

/// One region's log as the consensus core reads it.
pub struct RegionLog {
    region: u64,
    engine: Arc<dyn RaftLogStore>,
    cache_bytes: u64,
    state: RwLock<RegionLogState>,
}

impl RegionLog {
    /// `truncated` is the (index, term) the log starts after — from the region's apply state
    /// — and `conf_state` the configuration as of the applied index.
    pub fn new(
        region: u64,
        engine: Arc<dyn RaftLogStore>,
        local: RaftLocalState,
        truncated: (u64, u64),
        conf_state: ConfState,
        cache_bytes: u64,
    ) -> Self {
        let state = RegionLogState {
            local,
            conf_state,
            truncated,
            cache: EntryCache::default(),
            snapshot: SnapshotSlot::default(),
        };
        RegionLog {
            region,
            engine,
            cache_bytes,
            state: RwLock::new(state),
        }
    }

    pub fn region(&self) -> u64 {
        self.region
    }

    /// A write holding these entries and this state is durable: remember them.
    pub fn on_written(&self, entries: &[Entry], local: &RaftLocalState) {
        let mut st = self.state.write();
        st.cache.append(entries, self.cache_bytes);
        st.local = *local;
    }

    /// The log now starts after `(index, term)` (compaction or snapshot).
    /// Returns the offered snapshot if the truncation leaves it too old to send: its
    /// files may go.
    #[must_use]
    pub fn on_truncated(&self, index: u64, term: u64) -> Option<Snapshot> {
        let mut st = self.state.write();
        if index <= st.truncated.0 {
            return None;
        }
        st.truncated = (index, term);
        st.cache.drop_below(index + 1);
        let stale = st
            .snapshot
            .ready
            .as_ref()
            .is_some_and(|s| snapshot_index(s) < index);
        if stale {
            st.snapshot.ready.take()
        } else {
            None
        }
    }

    /// The lowest snapshot index the core asked for, if it asked and no generation is
    /// under way: the store then generates one at its applied index (at least this) and
    /// calls `offer_snapshot`, or `abandon_snapshot` if that failed.
    pub fn take_snapshot_request(&self) -> Option<u64> {
        let mut st = self.state.write();
        if st.snapshot.generating {
            return None;
        }
        let requested = st.snapshot.requested.take();
        st.snapshot.generating = requested.is_some();
        requested
    }

    /// A generated snapshot (metadata and a descriptor of its files) for the core to send.
    /// Returns the one it replaces, or itself if an offered one is newer: its files may go.
    #[must_use]
    pub fn offer_snapshot(&self, snapshot: Snapshot) -> Option<Snapshot> {
        let mut st = self.state.write();
        st.snapshot.generating = false;
        let newer_offered = st
            .snapshot
            .ready
            .as_ref()
            .is_some_and(|old| snapshot_index(old) > snapshot_index(&snapshot));
        if newer_offered {
            return Some(snapshot);
        }
        st.snapshot.ready.replace(snapshot)
    }

    /// The generation the store took a request for failed; the next request starts anew.
    pub fn abandon_snapshot(&self) {
        self.state.write().snapshot.generating = false;
    }

    pub fn set_conf_state(&self, cs: ConfState) {
        self.state.write().conf_state = cs;
    }

    fn engine_error(&self, e: LogError) -> StorageError {
        StorageError::Other(format!("region {}: {e}", self.region))
    }
}

impl LogStorage for RegionLog {
    fn initial_state(&self) -> StorageResult<RaftState> {
        let st = self.state.read();
        Ok(RaftState {
            hard_state: st.local.hard_state.unwrap_or_default(),
            conf_state: st.conf_state.clone(),
        })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: u64) -> StorageResult<Vec<Entry>> {
        let st = self.state.read();
        let last = st.local.last_index.max(st.truncated.0);
        if low <= st.truncated.0 {
            return Err(StorageError::Compacted);
        }
        if high > last + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        if low == high {
            return Ok(Vec::new());
        }
        let cached_from = st.cache.first_index().unwrap_or(u64::MAX);
        let mut out = if low < cached_from {
            let end = high.min(cached_from);
            let stored = self
                .engine
                .entries(self.region, low, end, max_bytes)
                .map_err(|e| self.engine_error(e))?;
            if (stored.len() as u64) < end - low {
                if stored.is_empty() {
                    return Err(StorageError::Unavailable);
                }
                return Ok(stored);
            }
            stored
        } else {
            Vec::new()
        };
        let mut size: u64 = out.iter().map(entry_size).sum();
        for index in low.max(cached_from)..high {
            let Some(e) = st.cache.get(index) else {
                return Err(StorageError::Unavailable);
            };
            size = size.saturating_add(entry_size(e));
            if size > max_bytes && !out.is_empty() {
                break; // The byte limit, but never an empty answer.
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        let st = self.state.read();
        let (t_index, t_term) = st.truncated;
        if index == t_index {
            return Ok(t_term);
        }
        if index < t_index {
            return Err(StorageError::Compacted);
        }
        if index > st.local.last_index {
            return Err(StorageError::Unavailable);
        }
        if let Some(e) = st.cache.get(index) {
            return Ok(e.term);
        }
        match self.engine.entry(self.region, index) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(StorageError::Unavailable),
            Err(e) => Err(self.engine_error(e)),
        }
    }

    fn first_index(&self) -> StorageResult<u64> {
        Ok(self.state.read().truncated.0 + 1)
    }

    fn last_index(&self) -> StorageResult<u64> {
        let st = self.state.read();
        Ok(st.local.last_index.max(st.truncated.0))
    }

    /// The offered snapshot if it covers `request_index` and everything truncated;
    /// otherwise the request is recorded for the store and the leader retries later.
    fn snapshot(&self, request_index: u64) -> StorageResult<Snapshot> {
        let mut st = self.state.write();
        let needed = request_index.max(st.truncated.0);
        let ready = st
            .snapshot
            .ready
            .as_ref()
            .filter(|s| s.metadata.as_ref().is_some_and(|m| m.index >= needed));
        if let Some(snapshot) = ready {
            return Ok(snapshot.clone());
        }
        let requested = st.snapshot.requested.get_or_insert(needed);
        *requested = (*requested).max(needed);
        Err(StorageError::SnapshotTemporarilyUnavailable)
    }
}
