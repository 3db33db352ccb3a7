//! What the apply delegate reports: the applied index (published in `AppliedProgress`,
//! told by message only to a peer whose reads wait for it; reads it reaches are served)
//! and changes to the region (a split starts the new regions' peers here).

use super::PeerFsm;
use crate::proto::metapb::Region;
use crate::proto::raftpb::Entry;
use crate::raft::NodeStart;
use crate::region::initial_apply_state;
use crate::store::context::{PollContext, RegionData, StartError};
use crate::store::msg::{ApplyResult, PeerMsg, RegionChange};

impl PeerFsm {
    pub(super) fn on_applied(&mut self, result: ApplyResult, ctx: &mut PollContext) {
        let had_changes = !result.changes.is_empty();
        for change in result.changes {
            match change {
                RegionChange::Split {
                    region,
                    created,
                    answer,
                } => {
                    self.on_split(region, created, ctx);
                    // The new regions run here now: whoever asked finds them.
                    if let Some((responder, response)) = answer {
                        responder.respond(Ok(response));
                    }
                }
                RegionChange::ConfChange {
                    region,
                    entry,
                    answer,
                } => {
                    self.on_conf_change(region, &entry, ctx);
                    // The change is this replica's now: a request with its epoch passes.
                    if let Some((responder, response)) = answer {
                        responder.respond(Ok(response));
                    }
                }
                RegionChange::SnapshotInstalled { region } => self.finish_install(region, ctx),
                RegionChange::LogTruncated { index, term } => {
                    self.on_log_truncated(index, term, ctx);
                }
            }
        }
        if had_changes {
            self.progress.changes_handled();
        }
        // The report's index was published before it was sent.
        self.catch_up_applied();
        self.serve_reads(ctx);
    }

    /// Takes in the applied index the apply delegate published (see `AppliedProgress`),
    /// unless a report of changes is on its way: the index is taken once every change
    /// published with it is made here. Returns whether the index moved.
    pub(super) fn catch_up_applied(&mut self) -> bool {
        match self.progress.settled_applied() {
            Some(index) if index > self.applied_index => {
                self.set_applied(index);
                true
            }
            _ => false,
        }
    }

    /// `catch_up_applied`, then the reads the index reached are served.
    pub(super) fn take_in_applied(&mut self, ctx: &mut PollContext) {
        if self.catch_up_applied() {
            self.serve_reads(ctx);
        }
    }

    fn set_applied(&mut self, index: u64) {
        self.applied_index = index;
        self.raw.on_applied(index);
    }

    fn on_conf_change(&mut self, region: Region, entry: &Entry, ctx: &mut PollContext) {
        self.set_region(region, ctx);
        match self.raw.apply_conf_change(entry) {
            Ok(cs) => {
                self.log.set_conf_state(cs);
                if !self.region.peers.iter().any(|p| p.id == self.peer.id) {
                    self.destroy(ctx);
                }
            }
            // The region took the change: a core that cannot would disagree with it.
            Err(e) => ctx.shared.fail_stop.trip(format!(
                "region {}: the core refused a membership change the region applied: {e}",
                self.region.id
            )),
        }
    }

    fn on_split(&mut self, region: Region, created: Vec<Region>, ctx: &mut PollContext) {
        let was_leader = self.is_leader();
        self.set_region(region, ctx);
        let init = initial_apply_state();
        for new in created {
            let id = new.region_id();
            let held = new.clone();
            match ctx
                .shared
                .start_region(new, &init, NodeStart::Created, RegionData::Applied)
            {
                // The new region's replica beside the old leader campaigns at once, so the
                // new region has a leader without waiting for an election timeout.
                Ok(()) if was_leader => {
                    let _ = ctx.shared.raft_router.force_send(id, PeerMsg::Campaign);
                }
                Ok(()) => {}
                // The new region's leader split first and its message created an empty
                // peer here (the same replica: the split named its id). It stays, and
                // gets the region from a snapshot; until then the split's state written
                // for the region stands in the KV engine, which a restart starts from.
                Err(StartError::AlreadyRunning(_)) => {
                    // Its range is held all the same, as the state the split wrote for it
                    // holds it in the engine: no other region's snapshot or new peer may
                    // take a part of it before the empty peer is filled (a restart would
                    // find both regions, overlapping). Filling or removing it ends this.
                    ctx.shared.meta.lock().reserve_install(held);
                    tracing::info!(
                        store = %ctx.shared.store_id,
                        region = %id,
                        "split: the new region's empty peer runs already; a snapshot will fill it"
                    );
                }
                Err(e) => {
                    // Its state is in the engine: a region left not running would hold a
                    // range nothing serves until a restart.
                    ctx.shared
                        .fail_stop
                        .trip(format!("split: starting new region {id}: {e}"));
                }
            }
        }
    }
}
