//! Handing the leadership away before a planned stop (`Store::hand_off_leaderships`): the
//! leader transfers to the best placed voter and answers once it leads no more, or once
//! the transfer is given up — by the core after an election timeout, or because the store
//! asked again (the target is slow). Within one hand-off no target is tried twice.

use super::PeerFsm;
use super::hibernate::WakeCause;
use crate::raft::ProgressState;
use crate::store::Responder;
use crate::store::context::PollContext;
use crate::store::request::{HandOffAsk, HandOffEnd};
use crate::{PeerId, StoreId};

/// A hand-off this replica is in: the targets given up so far, and the transfer under way
/// with whoever waits for its end.
pub(crate) struct HandOffState {
    tried: Vec<PeerId>,
    under_way: Option<(PeerId, Responder<HandOffEnd>)>,
}

impl PeerFsm {
    pub(super) fn on_hand_off(
        &mut self,
        ask: HandOffAsk,
        responder: Responder<HandOffEnd>,
        ctx: &mut PollContext,
    ) {
        if !self.is_leader() {
            self.hand_off = None;
            return responder.respond(Ok(HandOffEnd::NotLeader));
        }
        // A sleeping leader is woken: the transfer needs its ticks and rounds.
        self.wake(WakeCause::Other, ctx);
        let mut state = match (ask, self.hand_off.take()) {
            (HandOffAsk::Again, Some(state)) => state,
            // A new hand-off: a transfer a former one left waiting answers its (gone)
            // asker with an error as it drops.
            _ => Box::new(HandOffState {
                tried: Vec::new(),
                under_way: None,
            }),
        };
        let mut avoid = state.tried.clone();
        avoid.extend(state.under_way.as_ref().map(|(to, _)| *to));
        match self.start_transfer(&avoid, ctx) {
            Some(to) => {
                // The core moved to the new target: the transfer asked before is over.
                if let Some((earlier, waiting)) = state.under_way.take() {
                    waiting.respond(Ok(HandOffEnd::Stalled(earlier)));
                }
                state.tried = avoid;
                state.under_way = Some((to, responder));
            }
            // Nobody else to try: a transfer under way goes on, answering its own asker.
            None => responder.respond(Ok(HandOffEnd::NoTarget)),
        }
        self.hand_off = Some(state);
    }

    /// Transfers to a voter not in `tried`, on a store not known down: one the leader
    /// replicates to at full pace before one it probes, then the most caught up (the core
    /// sends the target what it lacks first). The target, if the core took one.
    fn start_transfer(&mut self, tried: &[PeerId], ctx: &PollContext) -> Option<PeerId> {
        let status = self.raw.status();
        let liveness = &ctx.shared.liveness;
        let mut voters: Vec<(bool, std::cmp::Reverse<u64>, u64)> = status
            .progress
            .iter()
            .filter(|(id, p)| **id != status.id && !p.is_learner && !tried.contains(&PeerId(**id)))
            .filter(|(id, _)| {
                self.peer_by_id(**id)
                    .is_some_and(|p| !liveness.is_down(StoreId(p.store_id)))
            })
            .map(|(id, p)| {
                (
                    p.state != ProgressState::Replicate,
                    std::cmp::Reverse(p.matched),
                    *id,
                )
            })
            .collect();
        voters.sort_unstable();
        // The core refuses a peer that cannot vote (an outgoing one, say): the next one.
        voters
            .into_iter()
            .map(|(_, _, id)| id)
            .find(|&id| self.raw.transfer_leader(id).is_ok())
            .map(PeerId)
    }

    /// End of a round: a transfer under way is answered once the replica leads no more,
    /// or once the core gave it up (its target joins those not to try again).
    pub(super) fn check_hand_off(&mut self) {
        let leads = self.is_leader();
        let transferee = self.raw.raft().lead_transferee();
        let Some(state) = &mut self.hand_off else {
            return;
        };
        if !leads {
            if let Some((_, waiting)) = state.under_way.take() {
                waiting.respond(Ok(HandOffEnd::Moved));
            }
            self.hand_off = None;
            return;
        }
        if let Some((to, _)) = &state.under_way
            && transferee != Some(to.get())
            && let Some((to, waiting)) = state.under_way.take()
        {
            state.tried.push(to);
            waiting.respond(Ok(HandOffEnd::Stalled(to)));
        }
    }
}
