//! Hibernation: an idle region stops ticking, so a store's timer costs what its active
//! regions cost. The leader decides: once its core has been quiescent for
//! `idle_ticks` ticks — everyone has everything, nothing pending, peers on stores known to
//! be down disregarded as long as the rest form a quorum — it tells its followers to sleep
//! and stops ticking. A follower sleeps if its log matches the leader's; otherwise it asks
//! the leader to wake. Anything that needs the region (a request, a message from another
//! replica) wakes it; a follower woken by anything but its leader asks the leader to wake
//! too, so a sleeping leader never leaves a woken follower to time out and campaign.
//!
//! Store liveness covers the case no message would: the leader's store dying while the
//! region sleeps. The store tells each region with a peer on a store that went down
//! (rate-limited), and a follower whose leader lived there wakes, ticks and elects; when
//! a store comes back, a sleeping leader with a peer there wakes to catch it up.

use super::PeerFsm;
use crate::StoreId;
use crate::proto::metapb::Peer;
use crate::proto::raftpb::{Message, MessageType};
use crate::proto::transportpb::{Hibernation, HibernationSignal};
use crate::store::context::PollContext;
use crate::store::liveness::Liveness;
use crate::store::msg::GcPass;

/// Whether a replica ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sleep {
    /// Ticking; a leader counts the ticks its core has been quiescent.
    Awake { idle_ticks: u32 },
    /// Not ticking until something wakes it.
    Asleep,
}

/// What woke a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WakeCause {
    /// A message from the leader: it is awake already.
    Leader,
    /// Anything else: a sleeping leader must be woken too.
    Other,
}

impl PeerFsm {
    /// Whether the replica sleeps (does not tick).
    pub(crate) fn is_asleep(&self) -> bool {
        self.sleep == Sleep::Asleep
    }

    /// Makes the replica tick again, if it slept.
    pub(super) fn wake(&mut self, cause: WakeCause, ctx: &mut PollContext) {
        // Awake, the quiescence check at each tick sees what the message changed.
        if self.sleep != Sleep::Asleep {
            return;
        }
        self.sleep = Sleep::Awake { idle_ticks: 0 };
        self.raw.wake();
        self.ticked_at = std::time::Instant::now();
        ctx.shared.ticker.start(self.region_id());
        metrics::counter!("flotilla_store_region_wakes_total").increment(1);
        if cause == WakeCause::Other
            && !self.is_leader()
            && let Some(leader) = self.leader()
        {
            self.signal(&leader, HibernationSignal::WakeUp, ctx);
        }
    }

    /// A heartbeat between this term's leader and a follower, which a sleeping replica
    /// steps without waking: the last round before the leader slept may arrive after.
    pub(super) fn is_idle_heartbeat(&self, m: &Message) -> bool {
        let raft = self.raw.raft();
        m.term == raft.term()
            && match MessageType::try_from(m.msg_type) {
                Ok(MessageType::MsgHeartbeat) => m.from == raft.leader_id(),
                Ok(MessageType::MsgHeartbeatResponse) => self.is_leader(),
                _ => false,
            }
    }

    /// A sleeping leader that is no longer quiescent (a heartbeat response reveals a
    /// follower behind; a store went down and the rest are no quorum) wakes.
    pub(super) fn wake_if_not_quiescent(&mut self, ctx: &mut PollContext) {
        if self.is_leader() && !self.is_quiescent(ctx) {
            self.wake(WakeCause::Other, ctx);
        }
    }

    /// The leader's quiescence, disregarding peers on stores known to be down.
    fn is_quiescent(&self, ctx: &PollContext) -> bool {
        let liveness = &ctx.shared.liveness;
        self.proposals.is_empty()
            && self.reads.is_empty()
            && self.raw.is_quiescent_ignoring(|id| {
                self.peer_by_id(id)
                    .is_some_and(|p| liveness.is_down(StoreId(p.store_id)))
            })
    }

    /// End of a round: a leader whose core has been quiescent long enough puts the region
    /// to sleep. `ticks` are the ticks this round consumed.
    pub(super) fn maybe_sleep(&mut self, ticks: u32, ctx: &mut PollContext) {
        let Some(idle_after) = ctx.shared.cfg.hibernation.idle_ticks else {
            return;
        };
        let Sleep::Awake { idle_ticks } = self.sleep else {
            return;
        };
        if !self.is_leader() {
            // A replica elected later counts its quiet ticks afresh.
            self.sleep = Sleep::Awake { idle_ticks: 0 };
            return;
        }
        if ticks == 0 {
            return;
        }
        if !self.is_quiescent(ctx) {
            self.sleep = Sleep::Awake { idle_ticks: 0 };
            return;
        }
        let idle_ticks = idle_ticks.saturating_add(ticks);
        if idle_ticks < idle_after {
            self.sleep = Sleep::Awake { idle_ticks };
            return;
        }
        self.signal_others(HibernationSignal::Sleep, ctx);
        self.fall_asleep(ctx);
    }

    fn fall_asleep(&mut self, ctx: &mut PollContext) {
        self.sleep = Sleep::Asleep;
        ctx.shared.ticker.stop(self.region_id());
        // Store GC rounds pass sleeping regions by: compact what may go now.
        self.on_log_gc(GcPass::Regular, ctx);
        self.shrink_buffers();
        metrics::counter!("flotilla_store_region_sleeps_total").increment(1);
    }

    /// Gives back the room of buffers a sleeping region does not use: most of a store's
    /// regions sleep, and their buffers kept the room of their last burst.
    fn shrink_buffers(&mut self) {
        self.raw.shrink_buffers();
        self.log.release_cache();
        self.proposals.shrink_to_fit();
        self.round.shrink_to_fit();
        self.reads.shrink_buffers();
        self.peer_cache.shrink_to_fit();
    }

    /// What `shrink_buffers` would give back (in elements): the buffers' room beyond their
    /// contents, and what it drops whole (the entry cache, the last election's votes).
    #[cfg(test)]
    pub(crate) fn shrinkable(&self) -> usize {
        let unstable = &self.raw.raft().log().unstable.entries;
        (unstable.capacity() - unstable.len())
            + self.log.cache_slots()
            + self.raw.raft().tracker.vote_slots()
            + (self.proposals.capacity() - self.proposals.len())
            + (self.round.capacity() - self.round.len())
            + self.reads.room()
            + (self.peer_cache.capacity() - self.peer_cache.len())
    }

    /// A hibernation signal from another replica.
    pub(super) fn on_hibernation(&mut self, from: Peer, h: Hibernation, ctx: &mut PollContext) {
        let raft = self.raw.raft();
        match HibernationSignal::try_from(h.signal) {
            Ok(HibernationSignal::Sleep) => {
                if h.term < raft.term() {
                    // A deposed leader's: nothing to follow.
                    return;
                }
                let in_step = !self.is_leader()
                    && raft.leader_id() == from.id
                    && h.term == raft.term()
                    && raft.log().last_index() == h.last_index
                    && raft.log().committed() == h.last_index
                    && self.raw.is_quiescent();
                if in_step {
                    if self.sleep != Sleep::Asleep {
                        self.fall_asleep(ctx);
                    }
                } else {
                    // Behind, or not following it yet: the leader must keep talking.
                    self.wake(WakeCause::Leader, ctx);
                    self.signal(&from, HibernationSignal::WakeUp, ctx);
                }
            }
            // Sent to a replica that no longer leads: it wakes the leader it knows.
            Ok(HibernationSignal::WakeUp) if !self.is_leader() => {
                self.wake(WakeCause::Other, ctx);
            }
            Ok(HibernationSignal::WakeUp) => self.wake(WakeCause::Leader, ctx),
            Ok(HibernationSignal::HibernationNone) | Err(_) => {}
        }
    }

    /// A store with a peer of the region went down or came back.
    pub(super) fn on_store_liveness(
        &mut self,
        store: StoreId,
        liveness: Liveness,
        ctx: &mut PollContext,
    ) {
        match liveness {
            // The leader's store fell silent: wake and elect if it is really gone (and
            // ask it to wake in case only this store lost it).
            Liveness::Down => {
                if !self.is_leader() && self.leader().is_some_and(|l| l.store_id == store.get()) {
                    self.wake(WakeCause::Other, ctx);
                } else if self.is_asleep() {
                    // A sleeping leader that lost its quorum wakes, so that check-quorum
                    // deposes it.
                    self.wake_if_not_quiescent(ctx);
                }
            }
            // A follower there may have missed entries while it was disregarded.
            Liveness::Live => {
                if self.is_leader()
                    && self
                        .region
                        .peers
                        .iter()
                        .any(|p| p.store_id == store.get() && p.id != self.peer.id)
                {
                    self.wake(WakeCause::Other, ctx);
                }
            }
        }
    }

    /// A replica waiting for a snapshot it asked for cannot campaign, so it never wakes a
    /// sleeping leader the way a restarted replica's pre-vote does: once per election
    /// timeout of its ticks it signals every other peer to wake (a sleeping follower then
    /// wakes its leader). A replica the region removed meanwhile is answered with a
    /// tombstone (`answered_as_removed`).
    pub(super) fn call_for_snapshot(&mut self, ticks: u32, ctx: &mut PollContext) {
        let raft = self.raw.raft();
        if ticks == 0 || raft.requested_snapshot().is_none() {
            return;
        }
        if !crossed_multiple(raft.now, ticks, raft.config().election_tick as u64) {
            return;
        }
        self.signal_others(HibernationSignal::WakeUp, ctx);
    }

    /// Sends `signal` to every other replica of the region.
    fn signal_others(&mut self, signal: HibernationSignal, ctx: &mut PollContext) {
        let others: Vec<Peer> = self
            .region
            .peers
            .iter()
            .filter(|p| p.id != self.peer.id)
            .copied()
            .collect();
        for peer in &others {
            self.signal(peer, signal, ctx);
        }
    }

    fn signal(&mut self, to: &Peer, signal: HibernationSignal, ctx: &mut PollContext) {
        let raft = self.raw.raft();
        ctx.outbound.push_signal(
            &self.region,
            &self.peer,
            to,
            signal,
            raft.term(),
            raft.log().last_index(),
        );
    }
}

/// Whether ticking from `now - ticks` to `now` crossed a multiple of `every`: an action
/// due once per `every` ticks, however the ticks come in rounds.
fn crossed_multiple(now: u64, ticks: u32, every: u64) -> bool {
    now / every != now.saturating_sub(u64::from(ticks)) / every
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multiple_is_crossed_once_however_the_ticks_come() {
        use super::crossed_multiple;
        assert!(crossed_multiple(10, 1, 10));
        assert!(!crossed_multiple(9, 1, 10));
        assert!(!crossed_multiple(11, 1, 10));
        assert!(!crossed_multiple(19, 5, 10));
        assert!(crossed_multiple(20, 5, 10));
        assert!(crossed_multiple(25, 10, 10));
        assert!(!crossed_multiple(20, 0, 10));
        // Ten ticks one at a time, or in rounds of three: one crossing per ten.
        let ones = (1..=30).filter(|&n| crossed_multiple(n, 1, 10)).count();
        let threes = (1..=10).filter(|&r| crossed_multiple(3 * r, 3, 10)).count();
        assert_eq!((ones, threes), (3, 3));
    }

    use crate::testkit::cluster::*;

    /// Most of a store's regions sleep: one that falls asleep keeps none of the room its
    /// last burst of writes needed, in its peer or its apply delegate.
    #[test]
    fn a_region_falling_asleep_gives_back_the_room_of_its_buffers() {
        let node = Node::new();
        let mut store = lone_stepped_leader(&node);
        let epoch = store.region(FIRST_REGION).unwrap().epoch.unwrap();
        let mut writes: Vec<_> = (0..100u32)
            .map(|i| {
                let key = format!("k{i}");
                store.propose(FIRST_REGION, epoch, put(key.as_bytes(), b"v"))
            })
            .collect();
        // Reads in the same round wait for the writes to apply: they fill the read queues.
        let mut reads: Vec<_> = (0..100u32)
            .map(|i| {
                let key = format!("k{i}");
                store.read(
                    FIRST_REGION,
                    epoch,
                    crate::store::ReadRequest::Get { key: key.into() },
                )
            })
            .collect();
        store.run_until_idle();
        for w in &mut writes {
            answer_now(w);
        }
        for r in &mut reads {
            answer_now(r);
        }
        let shared = store.shared();
        let peer_room = || {
            let mailbox = shared.raft_router.mailbox(FIRST_REGION)?;
            mailbox.inspect_resting(|p| p.shrinkable())
        };
        let apply_room = || {
            let mailbox = shared.apply_router.mailbox(FIRST_REGION)?;
            mailbox.inspect_resting(|a| a.proposal_room())
        };
        assert!(
            peer_room() > Some(0),
            "the burst's room is kept while awake"
        );
        assert_eq!(
            apply_room(),
            Some(0),
            "the delegate keeps none between rounds"
        );
        for _ in 0..100 {
            if store.ticking_regions() == 0 {
                break;
            }
            store.tick();
            store.run_until_idle();
        }
        assert_eq!(store.ticking_regions(), 0, "asleep");
        let shared = store.shared();
        let mailbox = shared.raft_router.mailbox(FIRST_REGION).unwrap();
        assert_eq!(mailbox.inspect_resting(|p| p.shrinkable()), Some(0));
    }

    /// Replicas of three stores asleep: none keeps room, the election's votes or a copy of
    /// a peer its region lists (each message names its sender; only strangers are kept).
    #[test]
    fn sleeping_replicas_keep_no_votes_room_or_copies_of_listed_peers() {
        let net = crate::store::InProcessNetwork::new(1);
        let nodes: Vec<Node> = (0..3).map(|_| Node::new()).collect();
        let mut stores = stepped_stores(&net, &nodes, test_config);
        for _ in 0..200 {
            if stores.iter().all(|s| s.ticking_regions() == 0) {
                break;
            }
            for s in &stores {
                s.tick();
            }
            drive(&mut stores);
        }
        for (i, s) in stores.iter().enumerate() {
            assert_eq!(s.ticking_regions(), 0, "asleep");
            let shared = s.shared();
            let mailbox = shared.raft_router.mailbox(FIRST_REGION).unwrap();
            let kept = mailbox.inspect_resting(|p| (p.peer_cache.len(), p.shrinkable()));
            assert_eq!(kept, Some((0, 0)), "store {}", i + 1);
        }
    }
}
