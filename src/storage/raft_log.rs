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
use crate::raft::pb::{ConfState, Entry, Snapshot};
use crate::raft::storage::{LogStorage, RaftState, StorageResult, entry_size};

/// Key of a region's `RaftLocalState` inside its raft-engine group.
const STATE_KEY: &[u8] = b"raft_local_state";

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
    /// What `prepare` found: each touched region's log span after the batch.
    spans_after: Vec<(u64, Option<Span>)>,
}

/// A log's first and last index.
pub type Span = (u64, u64);

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

    /// Readies the batch for the log it is about to be written to: refuses it whole if it
    /// would leave a hole in a log or overwrite compacted entries, and drops compactions
    /// of logs that are empty by then (raft-engine would list a removed region again).
    /// `spans_after` then tells each touched region's span once the batch is written.
    pub fn prepare(&mut self, spans: &impl LogSpans) -> Result<(), LogError> {
        let mut no_ops = Vec::new();
        self.spans_after.clear();
        // Each region's operations, in the order they were added.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            self.ops
                .iter()
                .enumerate()
                .filter(|(_, (_, op))| !matches!(op, StoredOp::PutState(_)))
                .map(|(at, (region, _))| (*region, at)),
        );
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let region = group[0].0;
            let mut span = SpanCheck {
                region,
                span: spans.span(region),
            };
            for &(_, at) in group {
                match self.ops[at].1 {
                    StoredOp::CompactTo(_) if span.span.is_none() => no_ops.push(at),
                    StoredOp::CompactTo(index) => span.compact_to(index),
                    StoredOp::Reset => span.span = None,
                    StoredOp::Append { start, end } => {
                        let (first, last) = (
                            self.entries[start].entry.index,
                            self.entries[end - 1].entry.index,
                        );
                        span.append(first, last)?;
                    }
                    StoredOp::PutState(_) => {}
                }
            }
            self.spans_after.push((region, span.span));
        }
        self.order = order;
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

    /// Each region whose log the last `prepare` saw the batch change, with its span
    /// once the batch is written (None: empty).
    pub fn spans_after(&self) -> &[(u64, Option<Span>)] {
        &self.spans_after
    }
}

/// Where a batch's check finds each region's current log span.
pub trait LogSpans {
    fn span(&self, region: u64) -> Option<Span>;
}

/// A region's log span as a batch's operations change it.
struct SpanCheck {
    region: u64,
    /// None: an empty log.
    span: Option<Span>,
}

impl SpanCheck {
    fn compact_to(&mut self, index: u64) {
        self.span = match self.span {
            Some((first, last)) if last >= index => Some((first.max(index), last)),
            _ => None,
        };
    }

    fn append(&mut self, first: u64, last: u64) -> Result<(), LogError> {
        let refuse = |what: String| {
            Err(LogError::InvalidWrite {
                region: self.region,
                what,
            })
        };
        self.span = match self.span {
            Some((lo, hi)) if first < lo => {
                return refuse(format!("append at {first} to a log spanning {lo}..={hi}"));
            }
            Some((_, hi)) if first > hi + 1 => {
                return refuse(format!("append at {first} to a log ending at {hi}"));
            }
            Some((lo, _)) => Some((lo, last)),
            // An empty log starts wherever the append does.
            None => Some((first, last)),
        };
        Ok(())
    }
}

/// A store's raft log: every region's entries and `RaftLocalState`. `RaftLogEngine` keeps
/// it in raft-engine; `MemRaftLog` in memory for deterministic tests.
pub trait RaftLogStore: Send + Sync {
    /// Writes the batch atomically (one engine write; one fsync if `sync`) and empties it;
    /// returns the bytes written. A batch that fails `LogWriteBatch::prepare` is refused
    /// whole, before anything is written. Writes are serialized: the store merges its
    /// regions' writes into one batch per write itself.
    fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize, LogError>;
    /// Every region with a log or a state, in id order, with its state (default if none).
    fn recover(&self) -> Result<Vec<(u64, RaftLocalState)>, LogError>;
    fn local_state(&self, region: u64) -> Result<Option<RaftLocalState>, LogError>;
    fn entry(&self, region: u64, index: u64) -> Result<Option<Entry>, LogError>;
    /// Entries in `[low, high)`, stopping after `max_bytes` (at least one).
    fn entries(
        &self,
        region: u64,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError>;
    fn first_index(&self, region: u64) -> Option<u64>;
    fn last_index(&self, region: u64) -> Option<u64>;
    /// Drops the region's entries below `index` (log GC); returns how many were dropped.
    fn compact_to(&self, region: u64, index: u64) -> u64;
    /// Deletes log files whose entries were all compacted; returns the regions whose old
    /// entries keep the oldest files alive (to be force-compacted, or to have lagging
    /// followers sent a snapshot).
    fn purge_expired_files(&self) -> Result<Vec<u64>, LogError>;
}

pub struct RaftLogEngine {
    engine: raft_engine::Engine,
    /// Serializes writes, so a batch's check still holds when it is written.
    writer: Mutex<Writer>,
}

struct Writer {
    /// One encoding buffer kept between writes: raft-engine keeps up to 8 MiB of its
    /// capacity, so a large batch does not fault in fresh pages every time.
    spare: LogBatch,
    /// Every non-empty region log's span, as raft-engine's memtables have it. Checking a
    /// batch against this one compact map costs a fraction of looking up thousands of
    /// scattered memtables (about 150 ns each, cold).
    spans: SpanMap,
}

type SpanMap = HashMap<u64, Span, BuildHasherDefault<RegionIdHasher>>;

impl LogSpans for SpanMap {
    fn span(&self, region: u64) -> Option<Span> {
        self.get(&region).copied()
    }
}

impl<T: RaftLogStore + ?Sized> LogSpans for T {
    fn span(&self, region: u64) -> Option<Span> {
        self.first_index(region).zip(self.last_index(region))
    }
}

/// A region's span as raft-engine's memtable has it.
fn stored_span(engine: &raft_engine::Engine, region: u64) -> Option<Span> {
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

impl RaftLogEngine {
    /// Opens (recovering) the log in `cfg.dir`, creating it if needed.
    pub fn open(cfg: &RaftLogConfig) -> Result<Self, LogError> {
        match raft_engine::Engine::open(cfg.engine_config()) {
            Ok(engine) => {
                let spans = engine
                    .raft_groups()
                    .into_iter()
                    .filter_map(|r| Some((r, stored_span(&engine, r)?)))
                    .collect();
                let writer = Writer {
                    spare: LogBatch::default(),
                    spans,
                };
                Ok(RaftLogEngine {
                    engine,
                    writer: Mutex::new(writer),
                })
            }
            // raft-engine does not say where; find the file so the operator knows.
            Err(raft_engine::Error::Corruption(detail)) => {
                let file = find_corrupt_file(&cfg.dir).unwrap_or_else(|| cfg.dir.clone());
                Err(LogError::CorruptFile { file, detail })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn set_span(&self, spans: &mut SpanMap, region: u64, span: Option<Span>) {
        debug_assert_eq!(
            span,
            stored_span(&self.engine, region),
            "the span of region {region} disagrees with raft-engine's"
        );
        match span {
            Some(span) => spans.insert(region, span),
            None => spans.remove(&region),
        };
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
        Ok(())
    }
}

impl RaftLogStore for RaftLogEngine {
    fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize, LogError> {
        let mut writer = self.writer.lock();
        batch.prepare(&writer.spans)?;
        // Out of the lock while in use: a failed (or panicking) write leaves nothing of
        // itself behind for the next one.
        let mut lb = std::mem::take(&mut writer.spare);
        Self::encode(batch, &mut lb)?;
        let written = self.engine.write(&mut lb, sync)?;
        writer.spare = lb;
        for &(region, span) in batch.spans_after() {
            self.set_span(&mut writer.spans, region, span);
        }
        batch.clear();
        Ok(written)
    }

    fn recover(&self) -> Result<Vec<(u64, RaftLocalState)>, LogError> {
        let mut ids = self.engine.raft_groups();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| Ok((id, self.local_state(id)?.unwrap_or_default())))
            .collect()
    }

    fn local_state(&self, region: u64) -> Result<Option<RaftLocalState>, LogError> {
        let Some(raw) = self.engine.get(region, STATE_KEY) else {
            return Ok(None);
        };
        RaftLocalState::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| LogError::Corrupt {
                region,
                what: format!("local state: {e}"),
            })
    }

    fn entry(&self, region: u64, index: u64) -> Result<Option<Entry>, LogError> {
        let entry = self.engine.get_entry::<WalEntryExt>(region, index)?;
        Ok(entry.map(WalEntry::into_entry))
    }

    fn entries(
        &self,
        region: u64,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        let mut wal = Vec::new();
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        self.engine
            .fetch_entries_to::<WalEntryExt>(region, low, high, Some(max), &mut wal)?;
        Ok(wal.into_iter().map(WalEntry::into_entry).collect())
    }

    fn first_index(&self, region: u64) -> Option<u64> {
        self.engine.first_index(region)
    }

    fn last_index(&self, region: u64) -> Option<u64> {
        self.engine.last_index(region)
    }

    fn compact_to(&self, region: u64, index: u64) -> u64 {
        let mut writer = self.writer.lock();
        let dropped = self.engine.compact_to(region, index);
        self.set_span(&mut writer.spans, region, stored_span(&self.engine, region));
        dropped
    }

    fn purge_expired_files(&self) -> Result<Vec<u64>, LogError> {
        Ok(self.engine.purge_expired_files()?)
    }
}

/// The first log file (in file order) that does not read back cleanly.
fn find_corrupt_file(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "raftlog" || x == "rewrite")
        })
        .collect();
    files.sort();
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
