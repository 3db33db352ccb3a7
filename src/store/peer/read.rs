//! Linearizable reads on the leader. Each read asks the core for a read index (the core
//! answers from its lease when it holds a valid one, else one heartbeat round serves every
//! read of the round); a confirmed read waits until apply reaches its index, then reads one
//! KV view. The region is checked again when the read is served: a split in between turns
//! it into the typed error, never into another region's data.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::PeerFsm;
use crate::proto::metapb::{Region, RegionEpoch};
use crate::raft::ReadState;
use crate::region::{CommandKind, DroppedReason, RegionError, check_epoch, check_key};
use crate::storage::kv::{Keyspace, KvError, KvRead};
use crate::storage::region_meta::end_bound;
use crate::store::Responder;
use crate::store::context::{LeaseClock, PollContext};
use crate::store::request::{ReadRequest, ReadResponse, ScanOrder};

/// Whether a replica that last took ticks `since` ago has a tick clock behind real time
/// by more than the one tick a round's order allows (and half a tick of lateness).
fn ticks_lag(since: Duration, tick: Duration) -> bool {
    since > tick + tick / 2
}

/// Whether `ticks` taken `since` the last ones cover less real time than passed, beyond
/// one tick of the timer's jitter.
fn ticks_lost(since: Duration, ticks: u32, tick: Duration) -> bool {
    since > tick * (ticks + 1)
}

struct PendingRead {
    epoch: Option<RegionEpoch>,
    request: ReadRequest,
    responder: Responder<ReadResponse>,
}

/// The reads of one peer, from arrival to answer.
#[derive(Default)]
pub(super) struct ReadQueue {
    next_id: u64,
    /// Waiting for the core to confirm the read index: request id → read.
    unconfirmed: HashMap<u64, PendingRead>,
    /// Confirmed, with the index apply must reach first.
    confirmed: Vec<(u64, PendingRead)>,
}

impl ReadQueue {
    /// Whether no read waits.
    pub(super) fn is_empty(&self) -> bool {
        self.unconfirmed.is_empty() && self.confirmed.is_empty()
    }

    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        (self.unconfirmed.capacity() - self.unconfirmed.len())
            + (self.confirmed.capacity() - self.confirmed.len())
    }

    /// Gives back the room of the queues beyond what they hold.
    pub(super) fn shrink_buffers(&mut self) {
        self.unconfirmed.shrink_to_fit();
        self.confirmed.shrink_to_fit();
    }

    pub(super) fn fail_all(&mut self, error: impl Fn() -> RegionError) {
        // In arrival order, not the map's: a simulated run answers them the same way.
        let mut unconfirmed: Vec<(u64, PendingRead)> = self.unconfirmed.drain().collect();
        unconfirmed.sort_unstable_by_key(|(id, _)| *id);
        for (_, r) in unconfirmed {
            r.responder.fail(error());
        }
        for (_, r) in self.confirmed.drain(..) {
            r.responder.fail(error());
        }
    }
}

fn read_id(ctx: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(ctx.try_into().ok()?))
}

impl PeerFsm {
    pub(super) fn on_read(
        &mut self,
        epoch: Option<&RegionEpoch>,
        request: ReadRequest,
        responder: Responder<ReadResponse>,
        ctx: &PollContext,
    ) {
        if !self.is_leader() {
            return responder.fail(self.not_leader());
        }
        if let Err(e) = check_read(epoch, &request, &self.region) {
            return responder.fail(e);
        }
        self.void_lease_if_ticks_lag(ctx);
        let id = self.reads.next_id;
        self.reads.next_id += 1;
        metrics::counter!("flotilla_store_read_index_requests_total").increment(1);
        if let Err(e) = self.raw.read_index(id.to_be_bytes().to_vec()) {
            return responder.fail(self.refusal(e));
        }
        let read = PendingRead {
            epoch: epoch.copied(),
            request,
            responder,
        };
        self.reads.unconfirmed.insert(id, read);
    }

    /// Before a read is asked of the core: requests go before a round's ticks, so up to
    /// one tick may be pending; a longer wait since this replica last took ticks (a
    /// paused process, a starved poller) means its tick clock is behind real time by
    /// more than its lease's margin allows, and a lease counted in ticks may have run out
    /// unseen. The lease is void; the read takes a heartbeat round.
    fn void_lease_if_ticks_lag(&mut self, ctx: &PollContext) {
        if let LeaseClock::RealTime { tick } = ctx.shared.lease_clock
            && ticks_lag(self.ticked_at.elapsed(), tick)
        {
            self.raw.void_lease();
        }
    }

    /// A round takes `ticks`: if more real time passed since the last ones than they
    /// (and one more, for the timer's jitter) cover, ticks were lost — dropped past the
    /// catch-up cap, or never sent by a paused timer — and the lease, counted in ticks,
    /// may have outlived real time: it is void.
    pub(super) fn took_ticks(&mut self, ticks: u32, ctx: &PollContext) {
        if let LeaseClock::RealTime { tick } = ctx.shared.lease_clock {
            let now = Instant::now();
            if ticks_lost(now.duration_since(self.ticked_at), ticks, tick) {
                self.raw.void_lease();
            }
            self.ticked_at = now;
        }
    }

    /// Reads the core confirmed, and reads it will never confirm.
    pub(super) fn on_read_states(&mut self, states: Vec<ReadState>, dropped: Vec<Vec<u8>>) {
        if !states.is_empty() {
            // One confirmation per round (from the lease or a heartbeat round), whatever
            // number of reads it serves.
            metrics::counter!("flotilla_store_read_index_rounds_total").increment(1);
        }
        for rs in states {
            if let Some(read) =
                read_id(&rs.request_ctx).and_then(|id| self.reads.unconfirmed.remove(&id))
            {
                self.reads.confirmed.push((rs.index, read));
            }
        }
        for ctx in dropped {
            if let Some(read) = read_id(&ctx).and_then(|id| self.reads.unconfirmed.remove(&id)) {
                read.responder.fail(self.not_leader());
            }
        }
    }

    /// Serves the confirmed reads whose index is applied, from one view, and asks the
    /// apply delegate to tell this peer when the next waiting read's index is applied.
    pub(super) fn serve_reads(&mut self, ctx: &mut PollContext) {
        loop {
            self.serve_applied_reads(ctx);
            let next = self.reads.confirmed.iter().map(|(index, _)| *index).min();
            // Applied meanwhile (no message will come for it): take it in and go again.
            if !(self.progress.wait_for(next) && self.catch_up_applied()) {
                return;
            }
        }
    }

    fn serve_applied_reads(&mut self, ctx: &mut PollContext) {
        let applied = self.applied_index;
        if !self
            .reads
            .confirmed
            .iter()
            .any(|(index, _)| *index <= applied)
        {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads.confirmed = waiting;
        let view = ctx.shared.engines.kv.read_view();
        for (_, read) in due {
            let answer =
                check_read(read.epoch.as_ref(), &read.request, &self.region).and_then(|()| {
                    match serve(view.as_ref(), &read.request, &self.region) {
                        Ok(response) => Ok(response),
                        Err(e) => {
                            ctx.shared
                                .fail_stop
                                .trip(format!("reading region {}: {e}", self.region.id));
                            Err(RegionError::ProposalDropped {
                                region: self.region_id(),
                                reason: DroppedReason::StoreStopping,
                            })
                        }
                    }
                });
            read.responder.respond(answer);
        }
    }
}

/// Checks a read against the region: its epoch's version and every key it names.
fn check_read(
    epoch: Option<&RegionEpoch>,
    request: &ReadRequest,
    region: &Region,
) -> Result<(), RegionError> {
    check_epoch(CommandKind::Read, epoch, region)?;
    match request {
        ReadRequest::Get { key } => check_key(key, region),
        ReadRequest::BatchGet { keys } => keys.iter().try_for_each(|k| check_key(k, region)),
        ReadRequest::Scan { start, end, .. } => {
            if end.as_ref().is_some_and(|e| e < start) {
                return Err(RegionError::InvalidRequest {
                    reason: "a scan whose end is before its start".into(),
                });
            }
            check_key(start, region)
        }
    }
}

/// Reads a checked request from `view`, never past the region's range.
fn serve(
    view: &(impl KvRead + ?Sized),
    request: &ReadRequest,
    region: &Region,
) -> Result<ReadResponse, KvError> {
    match request {
        ReadRequest::Get { key } => Ok(ReadResponse::Value(view.get(Keyspace::Data, key)?)),
        ReadRequest::BatchGet { keys } => keys
            .iter()
            .map(|k| view.get(Keyspace::Data, k))
            .collect::<Result<_, _>>()
            .map(ReadResponse::Values),
        ReadRequest::Scan {
            start,
            end,
            limit,
            order,
        } => {
            let end = match (end.as_deref(), end_bound(region)) {
                (Some(e), Some(r)) => Some(e.min(r)),
                (Some(e), None) => Some(e),
                (None, r) => r,
            };
            let limit = if *limit == 0 { usize::MAX } else { *limit };
            let reverse = *order == ScanOrder::Reverse;
            view.scan(Keyspace::Data, start, end, reverse)
                .take(limit)
                .collect::<Result<Vec<(Bytes, Bytes)>, _>>()
                .map(ReadResponse::Pairs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_read_finds_the_ticks_lagging_past_a_tick_and_a_half() {
        assert!(!ticks_lag(Duration::ZERO, TICK));
        assert!(
            !ticks_lag(TICK, TICK),
            "one tick pending is the round's order"
        );
        assert!(!ticks_lag(150 * MS, TICK));
        assert!(ticks_lag(151 * MS, TICK));
        assert!(ticks_lag(3 * TICK, TICK));
    }

    #[test]
    fn ticks_are_lost_when_they_cover_less_than_passed_beyond_one() {
        assert!(!ticks_lost(TICK, 1, TICK));
        assert!(!ticks_lost(200 * MS, 1, TICK), "one tick of jitter");
        assert!(ticks_lost(201 * MS, 1, TICK));
        assert!(
            !ticks_lost(500 * MS, 4, TICK),
            "caught up late, nothing lost"
        );
        assert!(ticks_lost(501 * MS, 4, TICK));
        assert!(
            ticks_lost(3000 * MS, 4, TICK),
            "a pause past the catch-up cap"
        );
    }
}
