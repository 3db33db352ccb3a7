//! The raft pollers' handler: each peer of a batch drains its mailbox, consumes its ticks,
//! proposes the round's commands and hands out its Ready into the round's context; at the
//! end of the batch the outbound messages leave as one batch per store and the write tasks
//! go to the WAL writer together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::{Handled, Inbox, PollHandler, Polled, SendError};
use super::context::{PollContext, RaftRouter};
use super::liveness::StoreLiveness;
use super::metrics::{Direction, PollMetrics, TrafficCounters};
use super::msg::{PeerMsg, StoreMsg};
use super::peer::PeerFsm;
use super::store_fsm::StoreFsm;
use super::transport::{BatchReceiver, unfold};
use super::wal_writer::{Persisted, WriteNotifier};
use prost::Message as _;

use crate::proto::storagepb::SnapshotSummary;
use crate::proto::transportpb::{RaftMessage, RaftMessageBatch};
use crate::storage::snapshot::{self, SnapshotBounds};
use crate::{PeerId, RegionId, StoreId};

/// The raft pollers' handler.
pub(crate) struct RaftPoller {
    ctx: PollContext,
    /// When the batch being handled began (for its duration's metric).
    began: Instant,
    /// Plain heartbeats are held up to this long for the rounds behind, so one batch per
    /// store carries every region's (zero: they go when the poller pauses).
    hold: Duration,
    /// Since when heartbeats are held.
    held_since: Option<Instant>,
    metrics: PollMetrics,
}

impl RaftPoller {
    pub(crate) fn new(ctx: PollContext, hold: Duration) -> Self {
        RaftPoller {
            ctx,
            began: Instant::now(),
            hold,
            held_since: None,
            metrics: PollMetrics::raft(),
        }
    }

    fn flush_outbound(&mut self) {
        self.held_since = None;
        let ctx = &mut self.ctx;
        let report = ctx.outbound.flush(ctx.shared.transport.as_ref());
        for (region, peer) in report.unreachable {
            let _ = ctx
                .shared
                .raft_router
                .force_send(region, PeerMsg::Unreachable(peer));
        }
    }
}

impl PollHandler<PeerFsm, StoreFsm> for RaftPoller {
    fn begin(&mut self, batch_len: usize) {
        self.began = Instant::now();
        self.metrics.batch_began(batch_len);
    }

    fn handle_control(&mut self, fsm: &mut StoreFsm, inbox: &mut Inbox<'_, StoreFsm>) -> Handled {
        while let Some(msg) = inbox.next_message() {
            fsm.handle(msg, &mut self.ctx);
        }
        if inbox.has_messages() {
            Handled::Busy
        } else {
            Handled::Idle
        }
    }

    fn handle_normal(&mut self, fsm: &mut PeerFsm, inbox: &mut Inbox<'_, PeerFsm>) -> Handled {
        self.metrics.mailbox(inbox.queued());
        if self.ctx.shared.fail_stop.is_tripped() {
            // The store is stopping: nothing more is proposed, written or sent; what waits
            // is answered, and the FSM rests with an empty inbox (no spinning).
            fsm.fail_waiting();
            while let Some(msg) = inbox.next_message() {
                msg.fail(fsm.stopping());
            }
            inbox.take_ticks();
            return Handled::Idle;
        }
        while let Some(msg) = inbox.next_message() {
            fsm.handle(msg, &mut self.ctx);
        }
        let ticks = inbox.take_ticks();
        fsm.finish_round(ticks, &mut self.ctx);
        if fsm.is_destroyed() {
            // Its mailbox closes; later messages for the region reach the store FSM,
            // which finds the tombstone.
            return Handled::Stopped;
        }
        if inbox.has_messages() || inbox.has_ticks() || fsm.has_ready() {
            Handled::Busy
        } else {
            Handled::Idle
        }
    }

    fn end(&mut self, _batch: &mut [Polled<PeerFsm>]) {
        // Plain heartbeats wait for the batches behind this one (see `pause`), so that
        // one batch per store carries every region's.
        if self.ctx.outbound.is_urgent() {
            self.flush_outbound();
        } else if !self.ctx.outbound.is_empty() && self.held_since.is_none() {
            self.held_since = Some(Instant::now());
        }
        let ctx = &mut self.ctx;
        for task in ctx.writes.drain(..) {
            // The writer is gone only when the store stops; the task's acks go with it.
            if ctx.wal.send(task).is_err() {
                break;
            }
        }
        self.metrics.batch_took(self.began.elapsed().as_secs_f64());
    }

    fn pause(&mut self) {
        let due = self
            .held_since
            .is_none_or(|since| since.elapsed() >= self.hold);
        if !self.ctx.outbound.is_empty() && due {
            self.flush_outbound();
        }
    }

    fn max_wait(&self) -> Option<Duration> {
        self.held_since
            .map(|since| self.hold.saturating_sub(since.elapsed()))
    }
}

/// Tells peers what the WAL writer made durable, through their mailboxes.
pub(crate) struct RouterNotifier {
    router: RaftRouter,
}

impl RouterNotifier {
    pub(crate) fn new(router: RaftRouter) -> Self {
        RouterNotifier { router }
    }
}

impl WriteNotifier for RouterNotifier {
    fn persisted(&self, region: RegionId, persisted: Persisted) {
        let _ = self
            .router
            .force_send(region, PeerMsg::Persisted(Box::new(persisted)));
    }

    fn unreachable(&self, region: RegionId, to: PeerId) {
        let _ = self.router.force_send(region, PeerMsg::Unreachable(to));
    }
}

/// Where other stores' batches enter: each message goes to its region's mailbox, or to
/// the store FSM when the region has no peer here. A snapshot's files are copied into the
/// store's received snapshots before its message goes the same way.
pub(crate) struct StoreReceiver {
    store: StoreId,
    router: RaftRouter,
    liveness: Arc<StoreLiveness>,
    received: PathBuf,
    traffic: TrafficCounters,
}

impl StoreReceiver {
    pub(crate) fn new(
        store: StoreId,
        router: RaftRouter,
        liveness: Arc<StoreLiveness>,
        received: PathBuf,
    ) -> Arc<Self> {
        Arc::new(StoreReceiver {
            store,
            router,
            liveness,
            received,
            traffic: TrafficCounters::new(Direction::Received),
        })
    }

    /// Anything from a store is a sign of life (an empty batch is only that).
    fn heard(&self, store: u64) {
        if self.liveness.heard(StoreId(store)) {
            let _ = self
                .router
                .send_control(StoreMsg::StoreBack(StoreId(store)));
        }
    }

    fn route(&self, m: RaftMessage) {
        let region = RegionId(m.region_id);
        match self.router.try_send(region, PeerMsg::Raft(Box::new(m))) {
            Ok(()) => {}
            // Raft tolerates a lost message; a full mailbox sheds load here.
            Err(SendError::Full(_)) => {
                metrics::counter!("flotilla_store_dropped_messages_total").increment(1);
            }
            Err(SendError::Closed(PeerMsg::Raft(m))) => {
                let _ = self.router.send_control(StoreMsg::RaftMessage(m));
            }
            Err(SendError::Closed(_)) => {}
        }
    }
}

impl BatchReceiver for StoreReceiver {
    fn receive(&self, batch: RaftMessageBatch) {
        if batch.to_store != self.store.get() {
            // Misrouted (or forged): none of it is for this store's replicas.
            metrics::counter!("flotilla_transport_misrouted_batches_total").increment(1);
            return;
        }
        self.heard(batch.from_store);
        self.traffic.count(
            1,
            batch.messages.len(),
            batch.heartbeats.len() + batch.heartbeat_responses.len(),
        );
        for m in unfold(batch) {
            self.route(m);
        }
    }

    fn receive_snapshot(&self, message: RaftMessage, files: &Path) -> std::io::Result<()> {
        if message
            .to_peer
            .is_none_or(|p| p.store_id != self.store.get())
        {
            metrics::counter!("flotilla_transport_misrouted_batches_total").increment(1);
            return Err(std::io::Error::other(
                "a snapshot for a peer on another store",
            ));
        }
        // The files must be the snapshot the message's summary describes, under the name
        // the summary gives them: the core takes the snapshot before it is installed,
        // and one that then fails to install stops the store.
        let summary = announced_snapshot(&message)
            .ok_or_else(|| std::io::Error::other("a snapshot message without its summary"))?;
        let expected = snapshot::snapshot_dir(
            &self.received,
            RegionId(message.region_id),
            summary.term,
            summary.index,
        );
        if files.file_name() != expected.file_name() {
            return Err(std::io::Error::other(
                "snapshot files named otherwise than their summary",
            ));
        }
        snapshot::verify(files, &summary).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.received)?;
        snapshot::receive(files, &self.received).map_err(std::io::Error::other)?;
        if let Some(from) = message.from_peer {
            self.heard(from.store_id);
        }
        self.route(message);
        Ok(())
    }

    fn snapshot_bounds(&self, message: &RaftMessage) -> Option<SnapshotBounds> {
        Some(
            announced_snapshot(message).map_or(SnapshotBounds::NOTHING, |summary| {
                snapshot::staging_bounds(&summary)
            }),
        )
    }
}

/// The summary of the snapshot a message carries, if it carries one that decodes.
fn announced_snapshot(message: &RaftMessage) -> Option<SnapshotSummary> {
    let snapshot = message.message.as_ref()?.snapshot.as_ref()?;
    SnapshotSummary::decode(snapshot.data.clone()).ok()
}
