//! The raft log of every region of a store in one raft-engine instance (raft group id =
//! region id): entries, and under each group a `RaftLocalState` (hard state, last index).
//! Many regions' writes merge into one `LogWriteBatch` and reach the disk with one engine
//! write and at most one fsync. `RegionLog` is the core's `LogStorage` view of one region,
//! with a cache of recent entries so a leader's replication rarely reads the disk.

mod batch;
mod engine;
mod region_log;

use std::path::PathBuf;

use raft_engine::ReadableSize;

use super::SyncMode;

pub use batch::{LogOp, LogSpan, LogWriteBatch, SpanChange};
pub use engine::{LogRepair, RaftLogEngine};
pub use region_log::{RegionLog, RegionLogError};

use crate::RegionId;
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::RaftLocalState;

/// Why a raft log operation failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// raft-engine failed (typically I/O). Damage found reading a file is `CorruptFile`
    /// instead.
    #[error("raft log engine: {0}")]
    Engine(#[from] raft_engine::Error),
    /// A log file is damaged (its header, or a record that does not read back), found on open
    /// or by a read.
    #[error("raft log file {} is corrupt ({detail})", file.display())]
    CorruptFile {
        /// The damaged file, or the log directory when no single file could be named.
        file: PathBuf,
        /// What raft-engine or the header check reported.
        detail: String,
    },
    /// The region's records disagree with each other or with the entries held: a state that
    /// does not decode, a first index that does not fit, a recorded entry that is missing.
    #[error("raft log of region {region} is corrupt: {what}")]
    Corrupt {
        /// The region whose log is damaged.
        region: RegionId,
        /// What is wrong.
        what: String,
    },
    /// A record the region's log must have is absent (the state of a region with a span).
    #[error("raft log of region {region} lacks {what}")]
    Missing {
        /// The region whose record is missing.
        region: RegionId,
        /// Which record.
        what: String,
    },
    /// A write the log refuses: entries that are not consecutive (`LogWriteBatch::append`),
    /// or a batch that would break a region's span (`LogWriteBatch::prepare`, refused whole).
    #[error("refused write to the raft log of region {region}: {what}")]
    InvalidWrite {
        /// The region whose log the write would break.
        region: RegionId,
        /// Which rule it breaks.
        what: String,
    },
    /// A read of `[low, high)` that is inverted or leaves the region's log
    /// (`LogSpan::check_read`); `RegionLog` reports it as `Compacted` or `Unavailable`.
    #[error("entries {low}..{high} of region {region} are outside its log ({span})")]
    OutOfRange {
        /// The region read.
        region: RegionId,
        /// The first index asked for.
        low: u64,
        /// The end of the range asked for (exclusive).
        high: u64,
        /// The region's span when the read was checked.
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
    /// Directory of the raft-engine files, created if missing.
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
    /// Settings for a log in `dir`, every other setting at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RaftLogConfig {
            dir: dir.into(),
            target_file_size: 128 << 20,
            purge_threshold: 10 << 30,
            recovery_threads: 4,
            batch_compression_threshold: 8 << 10,
        }
    }

    pub(super) fn engine_config(&self) -> raft_engine::Config {
        raft_engine::Config {
            dir: self.dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize(self.target_file_size),
            purge_threshold: ReadableSize(self.purge_threshold),
            recovery_threads: self.recovery_threads.max(1),
            batch_compression_threshold: ReadableSize(self.batch_compression_threshold),
            // The default recovery mode is the one wanted, TolerateTailCorruption: a torn
            // tail (a crash mid-write) is cut off; damage elsewhere refuses to open. A unit
            // test pins it, so an upgrade that changes the default cannot go unnoticed.
            ..Default::default()
        }
    }
}

/// Where a batch's check finds each region's current log span.
pub trait LogSpans {
    /// The region's span now (None: no log). It must not change between a batch's check and
    /// its write (each `RaftLogStore` holds its writer lock across both).
    fn current_span(&self, region: RegionId) -> Option<LogSpan>;
}

/// A store's raft log: every region's entries and `RaftLocalState`. `RaftLogEngine` keeps
/// it in raft-engine; `MemRaftLog` in memory for deterministic tests. Both give the same
/// answers: a region's log is its `LogSpan`, and reads outside it are errors.
pub trait RaftLogStore: Send + Sync {
    /// Writes the batch atomically (one engine write; one fsync with `SyncMode::Sync`) and
    /// empties it;
    /// returns the bytes written. A batch that fails `LogWriteBatch::prepare` is refused
    /// whole, before anything is written. Writes are serialized: the store merges its
    /// regions' writes into one batch per write itself.
    fn write(&self, batch: &mut LogWriteBatch, sync: SyncMode) -> Result<usize, LogError>;
    /// Every region with a log, in id order, with its state.
    fn recover(&self) -> Result<Vec<(RegionId, RaftLocalState)>, LogError>;
    /// The region's latest `RaftLocalState`; None if none was written since its log was
    /// created or last reset.
    fn local_state(&self, region: RegionId) -> Result<Option<RaftLocalState>, LogError>;
    /// The region's log span (None: no log).
    fn span(&self, region: RegionId) -> Option<LogSpan>;
    /// The entry at `index`; None outside the log.
    fn entry(&self, region: RegionId, index: u64) -> Result<Option<Entry>, LogError>;
    /// Entries in `[low, high)`, stopping before `max_bytes` is exceeded (at least one, as
    /// the core counts bytes). `LogError::OutOfRange` unless `first <= low <= high <=
    /// last + 1`; a region without a log has no range.
    fn entries(
        &self,
        region: RegionId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError>;
    /// Drops the region's entries below `index` (log GC; not synced by itself); returns
    /// how many were dropped. Refused past the log's end.
    fn compact_to(&self, region: RegionId, index: u64) -> Result<u64, LogError> {
        let before = self.span(region);
        let mut batch = LogWriteBatch::default();
        batch.compact_to(region, index);
        self.write(&mut batch, SyncMode::NoSync)?;
        let first = |s: Option<LogSpan>| s.map_or(0, |s| s.first);
        Ok(first(self.span(region)).saturating_sub(first(before)))
    }
    /// Deletes log files whose entries were all compacted; returns the regions whose old
    /// entries keep the oldest files alive (to be force-compacted, or to have lagging
    /// followers sent a snapshot).
    fn purge_expired_files(&self) -> Result<Vec<RegionId>, LogError>;
}

#[cfg(test)]
mod tests {
    use raft_engine::RecoveryMode;

    use super::*;

    #[test]
    fn a_span_shows_as_its_range_or_as_empty_with_its_next_index() {
        assert_eq!(SpanDisplay(None).to_string(), "no log");
        let empty = LogSpan { first: 8, last: 7 };
        assert_eq!(SpanDisplay(Some(empty)).to_string(), "empty, next index 8");
        let held = LogSpan { first: 3, last: 7 };
        assert_eq!(SpanDisplay(Some(held)).to_string(), "3..=7");
    }

    #[test]
    fn every_setting_reaches_the_engine() {
        let cfg = RaftLogConfig {
            dir: PathBuf::from("/tmp/somewhere"),
            target_file_size: 1 << 20,
            purge_threshold: 3 << 20,
            recovery_threads: 2,
            batch_compression_threshold: 0,
        };
        let e = cfg.engine_config();
        assert_eq!(e.dir, "/tmp/somewhere");
        assert_eq!(e.target_file_size, ReadableSize(1 << 20));
        assert_eq!(e.purge_threshold, ReadableSize(3 << 20));
        assert_eq!(e.recovery_threads, 2);
        assert_eq!(e.batch_compression_threshold, ReadableSize(0));
        assert_eq!(e.recovery_mode, RecoveryMode::TolerateTailCorruption);
        // Zero threads would make raft-engine refuse to open: at least one.
        let none = RaftLogConfig {
            recovery_threads: 0,
            ..cfg
        };
        assert_eq!(none.engine_config().recovery_threads, 1);
    }
}
