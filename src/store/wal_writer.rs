//! The WAL writer: group commit for every region of the store. Raft pollers never write;
//! each poller batch hands over write tasks (a region's new entries and state, with the
//! messages that may only leave once those are durable). One `write_once` merges every
//! task pending into ONE `LogWriteBatch` → one raft-engine write → at most one fsync; then
//! the writer itself sends the waiting messages (votes, follower acks: no extra hop) and
//! tells each region what is persisted (only a write the region acts on: see
//! `WriteNotifier::persisted`). A failed write trips the store's `FailStop` and
//! acknowledges nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use super::batch::recv_within;
use super::fail_stop::FailStop;
use super::flow::Charge;
use super::metrics::WalMetrics;
use super::transport::{Hurry, Outbound, Transport};
use crate::proto::metapb::{Peer, Region};
use crate::proto::raftpb::{Entry, Message, Snapshot};
use crate::proto::storagepb::RaftLocalState;
use crate::storage::SyncMode;
use crate::storage::raft_log::{LogWriteBatch, RaftLogStore, RegionLog};
use crate::{PeerId, RegionId, StoreId};

/// Whether a task starts the region's log over (a snapshot install replaces the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStart {
    /// Append to the log as it is.
    Continue,
    /// Drop the region's whole log first: it restarts after the installed snapshot's
    /// `(index, term)` (the task's state names the same index as its last).
    Reset {
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
    },
}

/// Messages a region may send only once its write is durable.
#[derive(Debug, Clone)]
pub struct HeldMessages {
    /// The region as the sender knows it (epoch and range travel with each message),
    /// shared with the sender rather than copied for each write.
    pub region: Arc<Region>,
    /// The sending peer (this store's replica).
    pub from: Peer,
    /// Each message with the peer it goes to.
    pub messages: Vec<(Peer, Message)>,
}

/// One region's write from one poller round.
pub struct WriteTask {
    /// The region's log; told of the write when it is durable.
    pub log: Arc<RegionLog>,
    /// Whether the log starts over first.
    pub start: LogStart,
    /// New entries (consecutive; replacing any suffix from the first one's index).
    pub entries: Vec<Entry>,
    /// The region's raft state after the write; required with entries or a reset.
    pub state: Option<RaftLocalState>,
    /// Whether the task's records must be fsynced before it is acknowledged (the fsync
    /// covers every task merged with it). A task with no records has nothing to sync.
    pub sync: SyncMode,
    /// What to tell the region once durable (`Ready::persisted_up_to`): (index, term).
    pub persisted: Option<(u64, u64)>,
    /// Sent after the write.
    pub held: Option<HeldMessages>,
    /// Drop the region's entries below this index (log GC; the region's `RegionLog` was
    /// told first, and its apply state records the truncation durably).
    pub compact_to: Option<u64>,
    /// Identifies the task to its region (the poller round's number).
    pub id: u64,
    /// The task's entry bytes, counted against the store's bound on unwritten entries
    /// until the writer is done with it.
    pub charge: Option<Charge>,
}

impl WriteTask {
    /// A task of the region with nothing in it yet: nothing to write, sync or send.
    pub fn new(log: Arc<RegionLog>, id: u64) -> Self {
        WriteTask {
            log,
            start: LogStart::Continue,
            entries: Vec::new(),
            state: None,
            sync: SyncMode::NoSync,
            persisted: None,
            held: None,
            compact_to: None,
            id,
            charge: None,
        }
    }
}

impl std::fmt::Debug for WriteTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTask")
            .field("region", &self.log.region())
            .field("id", &self.id)
            .field("start", &self.start)
            .field("entries", &self.entries.len())
            .field("state", &self.state)
            .field("sync", &self.sync)
            .field("persisted", &self.persisted)
            .field("held", &self.held.as_ref().map_or(0, |h| h.messages.len()))
            .finish()
    }
}

/// What the writer tells a region once its task is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    /// The task's `id`.
    pub id: u64,
    /// The task's `persisted`: what the core may now take as durable.
    pub up_to: Option<(u64, u64)>,
    /// A snapshot the region had offered that a `Reset` left too old to send: its files
    /// may go.
    pub retired_snapshot: Option<Snapshot>,
    /// Held messages the region addressed to its own peer (a candidate's vote for
    /// itself): the region steps them back into its core.
    pub own_messages: Vec<Message>,
}

/// How the writer tells regions about their writes.
pub trait WriteNotifier: Send {
    /// The region's task is durable. Told for a task that moves what the core may take
    /// as durable (`persisted`), resets the log, or holds messages to the region's own
    /// peer; not for one writing only the region's state or a compaction, which nothing
    /// waits on.
    fn persisted(&self, region: RegionId, persisted: Persisted);
    /// A message the region sent could not be handed to the transport.
    fn unreachable(&self, region: RegionId, to: PeerId);
}

/// Settings of the WAL writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalWriterConfig {
    /// Entry bytes merged into one write at most (a larger single task still goes alone).
    /// Default 8 MiB.
    pub max_batch_bytes: u64,
}

impl Default for WalWriterConfig {
    fn default() -> Self {
        WalWriterConfig {
            max_batch_bytes: 8 << 20,
        }
    }
}

/// What one `write_once` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// One merged write.
    Written(WriteStats),
    /// No task arrived within the wait.
    Idle,
    /// Every task sender is gone: the store is shutting down.
    Closed,
    /// The write failed: the store's `FailStop` is tripped, nothing was acknowledged.
    Failed,
}

/// One merged write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Tasks merged.
    pub tasks: usize,
    /// Distinct regions written.
    pub regions: usize,
    /// Entries written.
    pub entries: usize,
    /// Whether the write was fsynced.
    pub synced: bool,
    /// Bytes raft-engine wrote.
    pub bytes: usize,
}

/// A WAL writer; `write_once` is its thread's whole loop body.
pub struct WalWriter<N: WriteNotifier> {
    log: Arc<dyn RaftLogStore>,
    tasks: Receiver<WriteTask>,
    notifier: N,
    transport: Arc<dyn Transport>,
    outbound: Outbound,
    fail_stop: FailStop,
    config: WalWriterConfig,
    batch: LogWriteBatch,
    pending: Vec<WriteTask>,
    /// A task taken past the byte bound, first in the next write.
    carried: Option<WriteTask>,
    metrics: WalMetrics,
}

impl<N: WriteNotifier> WalWriter<N> {
    /// A writer for the store's log, taking tasks from `tasks`.
    pub fn new(
        store: StoreId,
        log: Arc<dyn RaftLogStore>,
        tasks: Receiver<WriteTask>,
        notifier: N,
        transport: Arc<dyn Transport>,
        fail_stop: FailStop,
        config: WalWriterConfig,
    ) -> Self {
        WalWriter {
            log,
            tasks,
            notifier,
            transport,
            outbound: Outbound::new(store),
            fail_stop,
            config,
            batch: LogWriteBatch::default(),
            pending: Vec::new(),
            carried: None,
            metrics: WalMetrics::new(),
        }
    }

    /// Waits up to `wait` for a task (not at all for zero), merges it with every task
    /// already queued (up to the byte bound) and writes them as one.
    pub fn write_once(&mut self, wait: Duration) -> WriteOutcome {
        if self.fail_stop.is_tripped() {
            return WriteOutcome::Failed;
        }
        let first = match self.carried.take() {
            Some(task) => task,
            None => match recv_within(&self.tasks, wait) {
                Ok(task) => task,
                Err(RecvTimeoutError::Timeout) => return WriteOutcome::Idle,
                Err(RecvTimeoutError::Disconnected) => return WriteOutcome::Closed,
            },
        };
        let mut bytes = entry_bytes(&first);
        self.pending.push(first);
        while bytes < self.config.max_batch_bytes {
            let Ok(task) = self.tasks.try_recv() else {
                break;
            };
            let size = entry_bytes(&task);
            if bytes + size > self.config.max_batch_bytes {
                self.carried = Some(task);
                break;
            }
            bytes += size;
            self.pending.push(task);
        }
        let written = self.write_pending();
        if let Err(e) = &written {
            self.fail_stop.trip(format!("raft log write failed: {e}"));
        }
        // Another part of the store may have stopped it while this write ran.
        if self.fail_stop.is_tripped() {
            // Nothing is acknowledged: the tasks (and their held messages) are dropped.
            self.pending.clear();
            self.carried = None;
            return WriteOutcome::Failed;
        }
        let stats = written.unwrap_or_default();
        self.acknowledge();
        WriteOutcome::Written(stats)
    }

    /// Writes the pending tasks as one batch.
    fn write_pending(&mut self) -> Result<WriteStats, crate::storage::raft_log::LogError> {
        let mut stats = WriteStats {
            tasks: self.pending.len(),
            ..Default::default()
        };
        let mut sync = SyncMode::NoSync;
        // A refused batch must not linger into the next write.
        let mut batch = std::mem::take(&mut self.batch);
        for task in &self.pending {
            let region = task.log.region();
            if let LogStart::Reset { .. } = task.start {
                batch.reset(region);
            }
            if !task.entries.is_empty() {
                batch.append(region, &task.entries)?;
            }
            if let Some(state) = &task.state {
                batch.put_state(region, state);
            }
            if let Some(index) = task.compact_to {
                batch.compact_to(region, index);
            }
            stats.entries += task.entries.len();
            if task.sync == SyncMode::Sync {
                sync = SyncMode::Sync;
            }
        }
        stats.regions = batch.region_count();
        if batch.is_empty() {
            return Ok(stats);
        }
        stats.synced = sync == SyncMode::Sync;
        let started = Instant::now();
        stats.bytes = self.log.write(&mut batch, sync)?;
        // Written (and emptied): kept for its buffers.
        self.batch = batch;
        self.metrics.wrote(
            stats.regions,
            stats.bytes,
            stats.synced.then(|| started.elapsed().as_secs_f64()),
        );
        Ok(stats)
    }

    /// The pending tasks are durable: their logs learn it, their held messages leave (one
    /// batch per store) and their regions are told.
    fn acknowledge(&mut self) {
        for task in self.pending.drain(..) {
            let (reset, retired_snapshot) = match task.start {
                LogStart::Reset { index, term } => (true, task.log.on_truncated(index, term)),
                LogStart::Continue => (false, None),
            };
            if let Some(state) = &task.state {
                task.log.on_written(&task.entries, state);
            }
            let mut own_messages = Vec::new();
            if let Some(held) = task.held {
                for (to, message) in held.messages {
                    if to.id == held.from.id {
                        own_messages.push(message);
                    } else {
                        self.outbound
                            .push(&held.region, &held.from, &to, message, Hurry::MayWait);
                    }
                }
            }
            // A write of the state alone (a new commit index) or a compaction changes
            // nothing the region acts on: untold, it is not woken once more per write.
            let untold = !reset
                && task.persisted.is_none()
                && retired_snapshot.is_none()
                && own_messages.is_empty();
            if untold {
                continue;
            }
            self.notifier.persisted(
                task.log.region(),
                Persisted {
                    id: task.id,
                    up_to: task.persisted,
                    retired_snapshot,
                    own_messages,
                },
            );
        }
        if !self.outbound.is_empty() {
            let report = self.outbound.flush(self.transport.as_ref());
            for (region, peer) in report.unreachable {
                self.notifier.unreachable(region, peer);
            }
        }
    }
}

fn entry_bytes(task: &WriteTask) -> u64 {
    task.entries
        .iter()
        .map(crate::raft::storage::entry_size)
        .sum()
}
