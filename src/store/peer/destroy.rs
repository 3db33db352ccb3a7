//! A peer's end. A membership change that removes this replica destroys it when applied
//! here. A replica that missed its removal (the leader stops talking to a removed peer,
//! possibly before it learned the change committed) learns it from a tombstone message:
//! a current replica that hears from a peer its region no longer has, at an older
//! membership, answers with one.
//!
//! Destroying: waiting requests are answered (proposals already in the log drop
//! unanswered: the other replicas may apply them); the region's raft log is dropped, its
//! hard state kept so a replica re-added under the same id never votes twice in a term;
//! once that is durable (a peer of the region created here later must never read the old
//! log), the apply delegate marks the region a tombstone (durably), clears its data in
//! bounded batches and only then forgets its range, and the FSMs leave the store. What a
//! crash leaves undone of it (the apply batch of a removal makes the region a tombstone
//! before the peer resets its log) is finished when the store opens (`store/recovery.rs`).

use super::{Life, PeerFsm};
use crate::proto::transportpb::RaftMessage;
use crate::region::{DroppedReason, RegionError};
use crate::storage::SyncMode;
use crate::store::context::{PollContext, ended_local_state, is_born};
use crate::store::msg::{ApplyMsg, PeerMsg};
use crate::store::wal_writer::{LogStart, WriteTask};

impl PeerFsm {
    /// A tombstone message for this peer: destroyed if the sender's membership is newer
    /// than this replica's.
    pub(super) fn on_tombstone(&mut self, m: &RaftMessage, ctx: &mut PollContext) {
        if m.to_peer.is_none_or(|p| p.id != self.peer.id) {
            return;
        }
        let theirs = m.region_epoch.unwrap_or_default().conf_ver;
        let ours = self.region.epoch.unwrap_or_default().conf_ver;
        if theirs > ours {
            self.destroy(ctx);
        }
    }

    /// Whether `m` comes from a peer the region no longer has, at an older membership
    /// than this replica's: it is answered with a tombstone message instead of stepped. A
    /// message without an epoch (a folded heartbeat) is left to the core.
    pub(super) fn answered_as_removed(&self, m: &RaftMessage, ctx: &mut PollContext) -> bool {
        let (Some(from), Some(epoch)) = (m.from_peer, m.region_epoch) else {
            return false;
        };
        if !is_born(&self.region) || self.region.peers.iter().any(|p| p.id == from.id) {
            return false;
        }
        // A newer membership than ours may hold a peer we do not know yet.
        if epoch.conf_ver >= self.region.epoch.unwrap_or_default().conf_ver {
            return false;
        }
        ctx.outbound.push_tombstone(&self.region, &self.peer, &from);
        true
    }

    /// Ends this replica (see the module notes): its log is dropped first; the rest
    /// follows once that is durable (`handle_ending`).
    pub(super) fn destroy(&mut self, ctx: &mut PollContext) {
        if self.life != Life::Alive {
            return;
        }
        let region = self.region_id();
        tracing::info!(region = %region, peer = self.peer.id, "peer destroyed");
        for command in std::mem::take(&mut self.round) {
            command.fail(self.destroyed_error());
        }
        let error = self.destroyed_error();
        self.reads.fail_all(|| error.clone());
        ctx.shared.ticker.stop(region);
        let hard_state = self.raw.raft().hard_state();
        let id = self.next_write_id;
        self.next_write_id += 1;
        ctx.writes.push(WriteTask {
            start: LogStart::Reset { index: 0, term: 0 },
            state: Some(ended_local_state(hard_state)),
            sync: SyncMode::Sync,
            ..WriteTask::new(self.log.clone(), id)
        });
        self.life = Life::Ending { log_reset: id };
    }

    /// A message for a replica on its way out: requests are refused; once its log reset
    /// is durable, the apply delegate makes the region a tombstone and the FSM goes.
    pub(super) fn handle_ending(&mut self, msg: PeerMsg, ctx: &mut PollContext) {
        match msg {
            PeerMsg::Persisted(p) if self.life == (Life::Ending { log_reset: p.id }) => {
                self.life = Life::Ended;
                // Without its apply delegate the store is stopping: the tombstone is not
                // written, and the region starts again on restart (and learns its removal
                // again).
                let _ = ctx
                    .shared
                    .apply_router
                    .force_send(self.region_id(), ApplyMsg::Destroy);
            }
            other => other.fail(self.destroyed_error()),
        }
    }

    fn destroyed_error(&self) -> RegionError {
        RegionError::ProposalDropped {
            region: self.region_id(),
            reason: DroppedReason::PeerDestroyed,
        }
    }
}
