//! Raft log GC on the peer's side. The store runs a round now and then (`StoreMsg::LogGc`);
//! each peer decides how far its log may go with the storage layer's policy (what is
//! applied, less what a follower not too far behind still needs). The truncation goes
//! through the apply delegate first, which records it in the region's apply state and
//! makes that durable with everything applied; only then does the log learn it and the
//! WAL writer drop the entries. A crash in between leaves entries that are merely unused.

use super::PeerFsm;
use crate::raft::LogStorage;
use crate::raft::Role;
use crate::storage::log_gc::GcInput;
use crate::store::context::PollContext;
use crate::store::msg::{ApplyMsg, GcPass};
use crate::store::wal_writer::WriteTask;

impl PeerFsm {
    pub(super) fn on_log_gc(&mut self, pass: GcPass, ctx: &mut PollContext) {
        if self.installing.is_some() {
            return;
        }
        let raft = self.raw.raft();
        let slowest_follower = (raft.role() == Role::Leader)
            .then(|| {
                raft.tracker
                    .progress
                    .iter()
                    .filter(|(id, _)| **id != self.peer.id)
                    .map(|(_, p)| p.matched)
                    .min()
            })
            .flatten();
        let input = GcInput {
            region: self.region_id(),
            durable_applied: self.applied_index,
            slowest_follower,
            first_index: self.log.first_index(),
        };
        let policy = &ctx.shared.cfg.log_gc;
        let decision = match pass {
            GcPass::Regular => policy.regular(&input),
            GcPass::Forced => policy.forced(&input),
        };
        let Some(decision) = decision else { return };
        let index = decision.compact_to - 1;
        let Ok(term) = raft.log().term(index) else {
            return;
        };
        let _ = ctx
            .shared
            .apply_router
            .force_send(self.region_id(), ApplyMsg::CompactLog { index, term });
    }

    /// The truncation is durable in the apply state: the log learns it before the WAL
    /// writer drops the entries, so nothing reads them meanwhile.
    pub(super) fn on_log_truncated(&mut self, index: u64, term: u64, ctx: &mut PollContext) {
        if let Some(retired) = self.log.on_truncated(index, term) {
            self.retire_snapshot(&retired, ctx);
        }
        let id = self.next_write_id;
        self.next_write_id += 1;
        ctx.writes.push(WriteTask {
            compact_to: Some(index + 1),
            ..WriteTask::new(self.log.clone(), id)
        });
    }
}
