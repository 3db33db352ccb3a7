//! Snapshots on the peer's side.
//!
//! As leader: the core's request for a snapshot goes to the apply delegate, which takes a
//! read view at its applied index and hands it to the snapshot worker; a `MsgSnapshot` the
//! core sends goes to the worker with the files it describes, and how the sending ended
//! comes back to the core (`report_snapshot`).
//!
//! As follower: a `MsgSnapshot` is checked before the core sees it (its files arrived,
//! its range overlaps no other region here). Once the core takes it, the Ready holding it
//! waits — no other Ready is taken meanwhile — while the apply delegate installs it
//! (durably); then that Ready's write resets the region's log to the snapshot.

use prost::Message as _;

use super::PeerFsm;
use super::ready::ReadyWrite;
use crate::proto::raftpb::{ConfState, Message, Snapshot};
use crate::proto::storagepb::SnapshotSummary;
use crate::proto::transportpb::RaftMessage;
use crate::raft::SnapshotStatus;
use crate::region::is_valid_range;
use crate::storage::SyncMode;
use crate::storage::snapshot::snapshot_dir;
use crate::store::context::PollContext;
use crate::store::msg::{ApplyMsg, InstallMsg, drop_covered_proposals};
use crate::store::snapshot_worker::SnapshotTask;
use crate::store::transport::raft_message;
use crate::store::wal_writer::LogStart;
use crate::{PeerId, RegionId};

/// The rest of a Ready whose snapshot is being installed.
pub(super) struct HeldInstall {
    write: ReadyWrite,
    /// The snapshot's (index, term).
    at: (u64, u64),
    conf_state: ConfState,
}

impl PeerFsm {
    /// The core asked for a snapshot to send: the apply delegate takes the view.
    pub(super) fn request_snapshot(&mut self, ctx: &mut PollContext) {
        if self.log.take_snapshot_request().is_none() {
            return;
        }
        let msg = ApplyMsg::Snapshot {
            log: self.log.clone(),
        };
        if ctx
            .shared
            .apply_router
            .force_send(self.region_id(), msg)
            .is_err()
        {
            self.log.abandon_snapshot();
        }
    }

    /// A `MsgSnapshot` the core sends: its files and it go through the snapshot worker.
    pub(super) fn send_snapshot(&mut self, m: Message, ctx: &mut PollContext) {
        let Some(to) = self.addressee(&m) else { return };
        let Some(snapshot) = m.snapshot.as_ref() else {
            // The core always attaches one; without it there is nothing to send.
            return self.raw.report_snapshot(to.id, SnapshotStatus::Failed);
        };
        let files = ctx
            .shared
            .snapshot_dirs
            .generated_files(self.region_id(), snapshot);
        let task = SnapshotTask::Send {
            region: self.region_id(),
            to: PeerId(to.id),
            message: Box::new(raft_message(&self.region, &self.peer, &to, m)),
            files,
        };
        if ctx.shared.snapshot_tasks.send(task).is_err() {
            self.raw.report_snapshot(to.id, SnapshotStatus::Failed);
        }
    }

    /// A snapshot this replica generated is no longer offered: its files go (on the
    /// snapshot worker, off the poller).
    pub(super) fn retire_snapshot(&self, retired: &Snapshot, ctx: &PollContext) {
        let files = ctx
            .shared
            .snapshot_dirs
            .generated_files(self.region_id(), retired);
        let _ = ctx
            .shared
            .snapshot_tasks
            .send(SnapshotTask::Remove { files });
    }

    /// Whether a received `MsgSnapshot` may reach the core: it describes this region with
    /// this peer among its members, its files are here, and its range overlaps no other
    /// region of this store (a split this
    /// store has not applied yet, say: the snapshot waits for it, the leader retries).
    /// Returns the region the snapshot describes, if accepted.
    pub(super) fn accept_snapshot(
        &self,
        m: &RaftMessage,
        ctx: &PollContext,
    ) -> Option<crate::proto::metapb::Region> {
        let snapshot = m.message.as_ref().and_then(|m| m.snapshot.as_ref())?;
        let Some((summary, files)) = self.received_files(snapshot, ctx) else {
            tracing::debug!(
                region = self.region.id,
                "snapshot without its files refused"
            );
            return None;
        };
        if !files.exists() {
            tracing::debug!(region = self.region.id, "snapshot files not here");
            return None;
        }
        let region = summary.region.unwrap_or_default();
        if !is_valid_range(&region.start_key, &region.end_key) {
            tracing::info!(
                region = self.region.id,
                "snapshot of an empty or inverted range refused"
            );
            return None;
        }
        // Taken before this peer joined (a snapshot made for another follower): a replica
        // born from it would apply entries of a membership it is not part of, splits
        // creating regions with no peer here among them. The leader sends a newer one.
        if !region.peers.iter().any(|p| p.id == self.peer.id) {
            tracing::info!(
                region = self.region.id,
                peer = self.peer.id,
                "snapshot of a membership without this peer refused"
            );
            return None;
        }
        // Another snapshot taken here and not yet installed counts too.
        let overlaps = ctx
            .shared
            .meta
            .lock()
            .overlapping_or_installing(&region.start_key, &region.end_key)
            .into_iter()
            .any(|r| r != self.region_id());
        if overlaps {
            tracing::info!(
                region = self.region.id,
                "snapshot overlaps another region here; refused"
            );
            return None;
        }
        Some(region)
    }

    /// The summary a snapshot carries and where its received files are.
    fn received_files(
        &self,
        snapshot: &Snapshot,
        ctx: &PollContext,
    ) -> Option<(SnapshotSummary, std::path::PathBuf)> {
        let summary = SnapshotSummary::decode(snapshot.data.clone()).ok()?;
        let region = summary.region.as_ref()?;
        if region.id != self.region.id {
            return None;
        }
        let files = snapshot_dir(
            &ctx.shared.snapshot_dirs.received,
            RegionId(region.id),
            summary.term,
            summary.index,
        );
        Some((summary, files))
    }

    /// The core took a snapshot: the apply delegate installs it while the rest of the
    /// Ready waits.
    pub(super) fn start_install(
        &mut self,
        snapshot: Snapshot,
        write: ReadyWrite,
        ctx: &mut PollContext,
    ) {
        let Some((summary, files)) = self.received_files(&snapshot, ctx) else {
            // Checked before the core saw it: only a bug gets here.
            ctx.shared.fail_stop.trip(format!(
                "region {}: the core took a snapshot with no usable summary",
                self.region.id
            ));
            return;
        };
        let meta = snapshot.metadata.unwrap_or_default();
        // As the apply delegate drops its own: handed to apply later, the first entry
        // after the snapshot would call them overtaken — not applied — though another
        // replica may have applied them.
        drop_covered_proposals(&mut self.proposals, (meta.term, meta.index));
        self.installing = Some(Box::new(HeldInstall {
            // The reset always writes the state, synced.
            write: ReadyWrite {
                hard_state_changed: true,
                sync: SyncMode::Sync,
                ..write
            },
            at: (meta.index, meta.term),
            conf_state: meta.conf_state.unwrap_or_default(),
        }));
        let msg = ApplyMsg::Install(Box::new(InstallMsg { summary, files }));
        // Without its apply delegate the peer is going away with the store.
        let _ = ctx.shared.apply_router.force_send(self.region_id(), msg);
    }

    /// The snapshot is installed: the held Ready's write resets the log to it.
    pub(super) fn finish_install(
        &mut self,
        region: crate::proto::metapb::Region,
        ctx: &mut PollContext,
    ) {
        let Some(held) = self.installing.take() else {
            return;
        };
        let (index, term) = held.at;
        self.set_region(region, ctx);
        self.log.set_conf_state(held.conf_state);
        self.applied_index = index;
        (self.last_index, self.last_term) = (index, term);
        self.write(LogStart::Reset { index, term }, held.write, ctx);
    }
}
