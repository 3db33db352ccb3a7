//! The store's snapshot worker: it generates a region's snapshot from the read view its
//! apply delegate took right after applying (so the view and the snapshot's index agree),
//! and it sends snapshots through the transport. Both can take long (a region's whole
//! data, files crossing the network), so neither runs on a poller. `run_once` is the
//! worker thread's loop body; a stepped store calls it directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError};
use prost::Message as _;

use super::batch::recv_within;
use super::context::RaftRouter;
use super::engines::KvView;
use super::msg::PeerMsg;
use super::transport::Transport;
use crate::proto::metapb::Region;
use crate::proto::raftpb::{Snapshot, SnapshotMetadata};
use crate::proto::transportpb::RaftMessage;
use crate::raft::SnapshotStatus;
use crate::region::conf_state_of;
use crate::storage::raft_log::RegionLog;
use crate::storage::snapshot::{self, snapshot_dir};
use crate::{PeerId, RegionId};

/// Where a store keeps snapshot files.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotDirs {
    /// Snapshots this store generated (it leads their regions).
    pub generated: PathBuf,
    /// Snapshots other stores sent here, until applied.
    pub received: PathBuf,
}

impl SnapshotDirs {
    pub(crate) fn under(root: &Path) -> Self {
        SnapshotDirs {
            generated: root.join("generated"),
            received: root.join("received"),
        }
    }

    /// Where the files of a snapshot this store generated for `region` are.
    pub(crate) fn generated_files(&self, region: RegionId, snapshot: &Snapshot) -> PathBuf {
        let (index, term) = snapshot
            .metadata
            .as_ref()
            .map_or((0, 0), |m| (m.index, m.term));
        snapshot_dir(&self.generated, region, term, index)
    }
}

/// Work for the snapshot worker.
pub(crate) enum SnapshotTask {
    /// Generate the region's snapshot at `applied` from `view`, and offer it to `log`.
    Generate {
        region: Region,
        applied: (u64, u64),
        view: KvView,
        log: Arc<RegionLog>,
    },
    /// Remove a snapshot's files (no longer offered).
    Remove { files: PathBuf },
    /// Send the files of a generated snapshot, then `message`, to `to`'s store.
    Send {
        region: RegionId,
        to: PeerId,
        message: Box<RaftMessage>,
        files: PathBuf,
    },
}

/// What one `run_once` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotWork {
    /// One task done (or failed, reported).
    Done,
    /// Nothing arrived within the wait.
    Idle,
    /// Every task sender is gone: the store is stopping.
    Closed,
}

/// The snapshot worker of one store.
pub(crate) struct SnapshotWorker {
    tasks: Receiver<SnapshotTask>,
    dirs: SnapshotDirs,
    chunk_bytes: u64,
    transport: Arc<dyn Transport>,
    router: RaftRouter,
}

impl SnapshotWorker {
    pub(crate) fn new(
        tasks: Receiver<SnapshotTask>,
        dirs: SnapshotDirs,
        chunk_bytes: u64,
        transport: Arc<dyn Transport>,
        router: RaftRouter,
    ) -> Self {
        SnapshotWorker {
            tasks,
            dirs,
            chunk_bytes,
            transport,
            router,
        }
    }

    /// Waits up to `wait` for a task and does it.
    pub(crate) fn run_once(&mut self, wait: Duration) -> SnapshotWork {
        match recv_within(&self.tasks, wait) {
            Ok(SnapshotTask::Generate {
                region,
                applied,
                view,
                log,
            }) => self.generate(&region, applied, view.as_ref(), &log),
            Ok(SnapshotTask::Send {
                region,
                to,
                message,
                files,
            }) => {
                let status = match self.transport.send_snapshot(*message, &files) {
                    Ok(()) => SnapshotStatus::Finished,
                    Err(e) => {
                        tracing::info!(region = %region, to = %to, error = %e, "snapshot not delivered");
                        SnapshotStatus::Failed
                    }
                };
                let _ = self
                    .router
                    .force_send(region, PeerMsg::SnapshotStatus { to, status });
            }
            Ok(SnapshotTask::Remove { files }) => {
                let _ = snapshot::remove(&files);
            }
            Err(RecvTimeoutError::Timeout) => return SnapshotWork::Idle,
            Err(RecvTimeoutError::Disconnected) => return SnapshotWork::Closed,
        }
        SnapshotWork::Done
    }

    fn generate(
        &self,
        region: &Region,
        (index, term): (u64, u64),
        view: &(dyn crate::storage::kv::KvRead + Send + Sync),
        log: &RegionLog,
    ) {
        let root = &self.dirs.generated;
        let generated = std::fs::create_dir_all(root)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                snapshot::generate(view, region, term, index, root, self.chunk_bytes)
                    .map_err(|e| e.to_string())
            });
        let meta = match generated {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(region = region.id, error = %e, "snapshot generation failed");
                log.abandon_snapshot();
                return;
            }
        };
        let offered = Snapshot {
            data: snapshot::summary(&meta).encode_to_vec().into(),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(conf_state_of(region)),
                index,
                term,
            }),
        };
        // The core sends the offered snapshot to every follower that needs it; the one it
        // replaces (or this one, if a newer one is offered) is no longer sent.
        let files = self.dirs.generated_files(region.region_id(), &offered);
        if let Some(retired) = log.offer_snapshot(offered) {
            // A snapshot generated again at the same index and term has the same files:
            // they are the offered snapshot's now.
            let retired = self.dirs.generated_files(region.region_id(), &retired);
            if retired != files {
                let _ = snapshot::remove(&retired);
            }
        }
    }
}
