//! What the core hands out after a round: messages that may leave at once go into the
//! round's outbound batch; entries, hard state and the messages that must wait for them
//! become one write task for the WAL writer (a poller never writes); committed entries go
//! to the apply delegate with the proposals they may answer.

use super::PeerFsm;
use crate::proto::metapb::Peer;
use crate::proto::raftpb::{Entry, Message};
use crate::proto::storagepb::RaftLocalState;
use crate::raft::SoftState;
use crate::storage::SyncMode;
use crate::store::context::PollContext;
use crate::store::msg::{ApplyMsg, ApplyTask};
use crate::store::wal_writer::{HeldMessages, LogStart, WriteTask};

impl PeerFsm {
    pub(super) fn handle_ready(&mut self, ctx: &mut PollContext) {
        if !self.raw.has_ready() {
            return;
        }
        let rd = match self.raw.ready() {
            Ok(rd) => rd,
            Err(e) => {
                // The log cannot be read: nothing this replica does next would be sound.
                ctx.shared.fail_stop.trip(format!(
                    "region {}: reading its raft log: {e}",
                    self.region.id
                ));
                return;
            }
        };
        let persisted = rd.persisted_up_to();
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft);
        }
        for m in rd.messages {
            self.send(m, ctx);
        }
        self.on_read_states(rd.read_states, rd.dropped_reads);
        // A read confirmed at an index already applied is served now.
        self.serve_reads(ctx);
        if rd.snapshot.is_some() {
            // Snapshot messages are dropped before they reach the core until installing
            // them is built: a snapshot here is a bug, and nothing after it would be sound.
            ctx.shared.fail_stop.trip(format!(
                "region {}: installing a snapshot is not built yet",
                self.region.id
            ));
            return;
        }
        let sync = if rd.must_sync {
            SyncMode::Sync
        } else {
            SyncMode::NoSync
        };
        self.write(
            rd.entries,
            rd.hard_state.is_some(),
            persisted,
            sync,
            rd.persisted_messages,
            ctx,
        );
        self.apply_committed(rd.committed_entries, ctx);
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        tracing::debug!(
            region = self.region.id,
            peer = self.peer.id,
            role = ?soft.role,
            leader = soft.leader_id,
            term = self.raw.raft().term(),
            "role changed"
        );
    }

    /// Queues a message for the round's outbound batch.
    fn send(&mut self, m: Message, ctx: &mut PollContext) {
        if let Some(to) = self.addressee(&m) {
            ctx.outbound.push(&self.region, &self.peer, &to, m);
        }
    }

    /// The peer a message goes to; one this replica cannot place is reported unreachable
    /// to the core (which then probes it gently) and the message is dropped.
    fn addressee(&mut self, m: &Message) -> Option<Peer> {
        let to = self.peer_by_id(m.to);
        if to.is_none() {
            tracing::debug!(
                region = self.region.id,
                to = m.to,
                "message to an unknown peer"
            );
            self.raw.report_unreachable(m.to);
        }
        to
    }

    fn write(
        &mut self,
        entries: Vec<Entry>,
        hard_state_changed: bool,
        persisted: Option<(u64, u64)>,
        sync: SyncMode,
        held: Vec<Message>,
        ctx: &mut PollContext,
    ) {
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        let state = (hard_state_changed || !entries.is_empty()).then(|| RaftLocalState {
            hard_state: Some(self.raw.raft().hard_state()),
            last_index: self.last_index,
        });
        let mut messages: Vec<(Peer, Message)> = Vec::with_capacity(held.len());
        for m in held {
            if let Some(to) = self.addressee(&m) {
                messages.push((to, m));
            }
        }
        if state.is_none() && persisted.is_none() && messages.is_empty() {
            return;
        }
        let held = (!messages.is_empty()).then(|| HeldMessages {
            region: self.region.clone(),
            from: self.peer,
            messages,
        });
        let id = self.next_write_id;
        self.next_write_id += 1;
        ctx.writes.push(WriteTask {
            log: self.log.clone(),
            start: LogStart::Continue,
            entries,
            state,
            sync,
            persisted,
            held,
            id,
        });
    }

    fn apply_committed(&mut self, entries: Vec<Entry>, ctx: &mut PollContext) {
        let Some(last) = entries.last().map(|e| (e.term, e.index)) else {
            return;
        };
        // Proposals queue in (term, index) order. Those up to the last committed entry in
        // that order are decided by the entries handed over now: applied, or overtaken
        // (an entry of a later term is committed at or after their index).
        let mut proposals = Vec::new();
        while let Some(p) = self.proposals.pop_front_if(|p| (p.term, p.index) <= last) {
            proposals.push(p);
        }
        let task = ApplyTask { entries, proposals };
        // The apply delegate goes only with the peer: if it is gone the store is stopping,
        // and the proposals in the task drop unanswered (their outcome is unknown).
        let _ = ctx
            .shared
            .apply_router
            .force_send(self.region_id(), ApplyMsg::Apply(task));
    }
}
