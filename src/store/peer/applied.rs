//! What the apply delegate reports: the applied index (reads waiting for it are served)
//! and changes to the region (a split starts the new regions' peers here).

use super::PeerFsm;
use crate::proto::metapb::Region;
use crate::raft::NodeStart;
use crate::region::initial_apply_state;
use crate::store::context::PollContext;
use crate::store::msg::{ApplyResult, PeerMsg, RegionChange};

impl PeerFsm {
    pub(super) fn on_applied(&mut self, result: ApplyResult, ctx: &mut PollContext) {
        let (index, _) = result.applied;
        if index > self.applied_index {
            self.applied_index = index;
            self.raw.on_applied(index);
        }
        for change in result.changes {
            match change {
                RegionChange::Split { region, created } => self.on_split(region, created, ctx),
            }
        }
        self.serve_reads(ctx);
    }

    fn on_split(&mut self, region: Region, created: Vec<Region>, ctx: &mut PollContext) {
        let was_leader = self.is_leader();
        self.region = region.clone();
        ctx.shared.meta.lock().set(region);
        let init = initial_apply_state();
        for new in created {
            let id = new.region_id();
            match ctx.shared.start_region(new, &init, NodeStart::Created) {
                // The new region's replica beside the old leader campaigns at once, so the
                // new region has a leader without waiting for an election timeout.
                Ok(()) if was_leader => {
                    let _ = ctx.shared.raft_router.force_send(id, PeerMsg::Campaign);
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(region = %id, error = %e, "split: new region not started"),
            }
        }
    }
}
