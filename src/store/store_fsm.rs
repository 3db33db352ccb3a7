//! The store FSM: the control FSM of the raft batch system, for what concerns the store
//! rather than one region. A message for a region this store has no peer of arrives here:
//! if the region's leader (or a candidate) is reaching a peer it placed on this store, an
//! empty peer is created to receive the region by snapshot — unless the message cannot
//! come from a live region's leader, or the region's range still belongs to a region here
//! (a split this store has not applied yet: the peer waits for it), or this store holds
//! state of the region already (a peer destroyed here comes back only when the region's
//! membership has changed since its removal: re-added).

use super::batch::Fsm;
use super::context::PollContext;
use super::msg::{GcPass, PeerMsg, StoreMsg};
use crate::region::is_valid_range;
use std::collections::VecDeque;

use super::liveness::Liveness;
use super::metrics::{Direction, TrafficCounters};
use crate::proto::raftpb::MessageType;
use crate::proto::storagepb::PeerState;
use crate::proto::transportpb::RaftMessage;
use crate::proto::transportpb::RaftMessageBatch;
use crate::storage::region_meta::region_state;
use crate::{RegionId, StoreId};

/// The store's own FSM.
#[derive(Debug, Default)]
pub(crate) struct StoreFsm {
    /// Store timer ticks so far.
    ticks: u64,
    /// Regions to tell that a peer store went down, then those to tell that one came
    /// back: a bounded number per tick, the down ones first (they elect).
    down: VecDeque<(RegionId, StoreId)>,
    back: VecDeque<(RegionId, StoreId)>,
    /// Peer stores counted live and down in `flotilla_store_peer_stores{state}`.
    published: (usize, usize),
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
}

impl StoreFsm {
    pub(crate) fn handle(&mut self, msg: StoreMsg, ctx: &mut PollContext) {
        match msg {
            StoreMsg::LogGc => log_gc(ctx),
            StoreMsg::Tick => self.on_tick(ctx),
            StoreMsg::StoreBack(store) => {
                tracing::info!(store = %ctx.shared.store_id, peer_store = %store, "peer store is back");
                self.queue_wakes(store, Liveness::Live, ctx);
            }
            StoreMsg::RaftMessage(m) => {
                let region = RegionId(m.region_id);
                match create_peer(&m, ctx) {
                    Ok(()) => {
                        let _ = ctx.shared.raft_router.force_send(region, PeerMsg::Raft(m));
                    }
                    Err(reason) => {
                        metrics::counter!("flotilla_store_unknown_region_messages_total")
                            .increment(1);
                        tracing::debug!(
                            store = %ctx.shared.store_id,
                            region = %region,
                            reason,
                            "message for a region with no peer here dropped"
                        );
                    }
                }
            }
        }
    }
}

impl StoreFsm {
    /// One store tick: peer stores silent too long are marked down, the stores holding
    /// peers of local regions are pinged every few ticks, and queued liveness changes
    /// reach their regions, a bounded number per tick.
    fn on_tick(&mut self, ctx: &PollContext) {
        let shared = &ctx.shared;
        let cfg = &shared.cfg.hibernation;
        self.ticks += 1;
        metrics::counter!("flotilla_store_ticks_total").increment(1);
        let watched: Vec<StoreId> = shared
            .meta
            .lock()
            .peer_stores()
            .filter(|&s| s != shared.store_id)
            .collect();
        for store in shared
            .liveness
            .tick(watched.iter().copied(), cfg.down_after_ticks)
        {
            tracing::warn!(store = %shared.store_id, peer_store = %store, "peer store is down");
            self.queue_wakes(store, Liveness::Down, ctx);
        }
        if self.ticks.is_multiple_of(u64::from(cfg.ping_ticks.max(1))) {
            let mut pings = 0;
            for &store in &watched {
                // An empty batch: the receiver hears this store. Lost pings are what
                // liveness measures.
                let ping = RaftMessageBatch {
                    from_store: shared.store_id.get(),
                    to_store: store.get(),
                    ..Default::default()
                };
                if shared.transport.send(ping).is_ok() {
                    pings += 1;
                }
            }
            TrafficCounters::new(Direction::Sent).count(pings, 0, 0);
        }
        let mut budget = cfg.max_wakes_per_tick.max(1);
        for (queue, liveness) in [
            (&mut self.down, Liveness::Down),
            (&mut self.back, Liveness::Live),
        ] {
            let n = queue.len().min(budget);
            budget -= n;
            for (region, store) in queue.drain(..n) {
                let _ = shared
                    .raft_router
                    .force_send(region, PeerMsg::StoreLiveness { store, liveness });
            }
        }
        self.publish_liveness(ctx);
    }

    /// Moves this store's counts in `flotilla_store_peer_stores{state}` (a process's
    /// gauges add up the stores it runs).
    fn publish_liveness(&mut self, ctx: &PollContext) {
        let all = ctx.shared.liveness.snapshot();
        let down = all.iter().filter(|(_, l)| *l == Liveness::Down).count();
        let now = (all.len() - down, down);
        let (live_before, down_before) = std::mem::replace(&mut self.published, now);
        let gauge = |state: &'static str, before: usize, after: usize| {
            metrics::gauge!("flotilla_store_peer_stores", "state" => state)
                .increment(after as f64 - before as f64);
        };
        gauge("live", live_before, now.0);
        gauge("down", down_before, now.1);
    }

    /// Queues the regions a liveness change of `store` concerns; what was queued for its
    /// opposite change and not yet told is stale and goes.
    fn queue_wakes(&mut self, store: StoreId, liveness: Liveness, ctx: &PollContext) {
        let here = ctx.shared.store_id;
        let meta = ctx.shared.meta.lock();
        let (queue, stale, regions) = match liveness {
            Liveness::Down => (
                &mut self.down,
                &mut self.back,
                meta.regions_led_by_or_led_here_with_a_peer_on(store, here),
            ),
            Liveness::Live => (
                &mut self.back,
                &mut self.down,
                meta.led_here_with_a_peer_on(store, here),
            ),
        };
        stale.retain(|&(_, s)| s != store);
        queue.extend(regions.into_iter().map(|r| (r, store)));
    }
}

impl Drop for StoreFsm {
    /// A stopped store watches no peer store.
    fn drop(&mut self) {
        let (live, down) = self.published;
        metrics::gauge!("flotilla_store_peer_stores", "state" => "live").decrement(live as f64);
        metrics::gauge!("flotilla_store_peer_stores", "state" => "down").decrement(down as f64);
    }
}

/// A round of raft log GC: files no region needs are purged; the regions whose old
/// entries pin files are compacted as far as they have applied, the ticking others as the
/// policy allows (each peer decides, see `peer/log_gc.rs`).
fn log_gc(ctx: &PollContext) {
    let pinning = match ctx.shared.engines.log.purge_expired_files() {
        Ok(regions) => regions,
        Err(e) => {
            tracing::warn!(store = %ctx.shared.store_id, error = %e, "purging raft log files failed");
            Vec::new()
        }
    };
    // Sleeping regions compacted what they could when they fell asleep: a round visits
    // the ticking ones, and those whose old entries pin files — its cost follows the
    // active regions, not all of them.
    let router = &ctx.shared.raft_router;
    for &region in &pinning {
        let _ = router.force_send(region, PeerMsg::LogGc(GcPass::Forced));
    }
    for region in ctx.shared.ticker.ticking() {
        if !pinning.contains(&region) {
            let _ = router.force_send(region, PeerMsg::LogGc(GcPass::Regular));
        }
    }
}

/// Creates the empty peer a message is addressed to, or says why not.
fn create_peer(m: &RaftMessage, ctx: &PollContext) -> Result<(), String> {
    let shared = &ctx.shared;
    let to = m
        .to_peer
        .filter(|p| p.store_id == shared.store_id.get() && p.id != 0)
        .ok_or("addressed to another store")?;
    if m.region_epoch.is_none() {
        return Err("no epoch (a folded heartbeat never creates a peer)".into());
    }
    let starts_a_peer = m.message.as_ref().is_some_and(|msg| {
        matches!(
            MessageType::try_from(msg.msg_type),
            Ok(MessageType::MsgAppend
                | MessageType::MsgSnapshot
                | MessageType::MsgHeartbeat
                | MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote)
        )
    });
    if !starts_a_peer {
        return Err("not a message a new peer starts from".into());
    }
    if !is_valid_range(&m.start_key, &m.end_key) {
        return Err("its range is empty or inverted".into());
    }
    let region = RegionId(m.region_id);
    match region_state(shared.engines.kv.as_ref(), region) {
        Ok(None) => {}
        // A peer destroyed here comes back only if the region re-added this store since:
        // a message at a newer membership than the tombstone's.
        Ok(Some(s)) if s.state == PeerState::Tombstone as i32 => {
            let removed_at = s.region.and_then(|r| r.epoch).unwrap_or_default().conf_ver;
            let sent_at = m.region_epoch.unwrap_or_default().conf_ver;
            if sent_at <= removed_at {
                return Err("a stale message for a peer destroyed here".into());
            }
        }
        Ok(Some(_)) => return Err("the region has state here".into()),
        Err(e) => return Err(format!("reading the region's state: {e}")),
    }
    if !shared
        .meta
        .lock()
        .overlapping_or_installing(&m.start_key, &m.end_key)
        .is_empty()
    {
        return Err("its range overlaps a region this store holds or installs".into());
    }
    shared.start_unborn(region, to).map_err(|e| e.to_string())?;
    tracing::info!(store = %shared.store_id, region = %region, peer = to.id, "empty peer created by a message");
    Ok(())
}
