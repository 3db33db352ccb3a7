//! What the core hands out after a round: messages that may leave at once go into the
//! round's outbound batch; entries, hard state and the messages that must wait for them
//! become one write task for the WAL writer (a poller never writes); committed entries go
//! to the apply delegate with the proposals they may answer.

use super::PeerFsm;
use crate::proto::metapb::Peer;
use crate::proto::raftpb::{Entry, Message, MessageType};
use crate::proto::storagepb::RaftLocalState;
use crate::raft::{SoftState, entry_size};
use crate::storage::SyncMode;
use crate::store::context::PollContext;
use crate::store::flow::Charge;
use crate::store::msg::{ApplyMsg, ApplyTask};
use crate::store::transport::Hurry;
use crate::store::wal_writer::{HeldMessages, LogStart, WriteTask};

/// What a Ready hands the WAL writer: new entries, whether the hard state changed, what
/// the core may take as durable once written, the messages that wait for it, and whether
/// it needs an fsync.
pub(super) struct ReadyWrite {
    pub entries: Vec<Entry>,
    pub hard_state_changed: bool,
    pub persisted: Option<(u64, u64)>,
    pub messages: Vec<Message>,
    pub sync: SyncMode,
}

impl PeerFsm {
    pub(super) fn handle_ready(&mut self, ctx: &mut PollContext) {
        // While a snapshot installs, the next Ready would write after a log not yet reset.
        if self.installing.is_some() || !self.raw.has_ready() {
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
        let write = ReadyWrite {
            persisted: rd.persisted_up_to(),
            entries: rd.entries,
            hard_state_changed: rd.hard_state.is_some(),
            messages: rd.persisted_messages,
            sync: if rd.must_sync {
                SyncMode::Sync
            } else {
                SyncMode::NoSync
            },
        };
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft, ctx);
        }
        for m in rd.messages {
            self.send(m, ctx);
        }
        self.on_read_states(rd.read_states, rd.dropped_reads);
        // A read confirmed at an index already applied is served now.
        self.serve_reads(ctx);
        if let Some(snapshot) = rd.snapshot {
            self.start_install(snapshot, write, ctx);
            // Entries committed with it are applied after it (the apply mailbox is FIFO).
            self.apply_committed(rd.committed_entries, ctx);
            return;
        }
        self.write(LogStart::Continue, write, ctx);
        self.apply_committed(rd.committed_entries, ctx);
    }

    fn on_soft_state(&mut self, soft: SoftState, ctx: &PollContext) {
        let leader_store = self
            .peer_by_id(soft.leader_id)
            .map(|p| crate::StoreId(p.store_id));
        ctx.shared
            .meta
            .lock()
            .set_leader(self.region_id(), leader_store);
        tracing::debug!(
            region = self.region.id,
            peer = self.peer.id,
            role = ?soft.role,
            leader = soft.leader_id,
            term = self.raw.raft().term(),
            "role changed"
        );
    }

    /// Queues a message for the round's outbound batch (a snapshot goes through the
    /// snapshot worker, with its files).
    fn send(&mut self, m: Message, ctx: &mut PollContext) {
        if m.msg_type == MessageType::MsgSnapshot as i32 {
            return self.send_snapshot(m, ctx);
        }
        let Some(to) = self.addressee(&m) else { return };
        if self.may_be_unborn(to.id) {
            ctx.outbound.push_whole(&self.region, &self.peer, &to, m);
        } else {
            let hurry = self.hurry(&m);
            ctx.outbound.push(&self.region, &self.peer, &to, m, hurry);
        }
    }

    /// Whether a heartbeat (or its response) must leave at once: a read waits on the round
    /// it starts, or on the answer to one marked `answer_now`.
    fn hurry(&mut self, m: &Message) -> Hurry {
        let waiting = match MessageType::try_from(m.msg_type) {
            Ok(MessageType::MsgHeartbeat) => !self.reads.is_empty(),
            Ok(MessageType::MsgHeartbeatResponse) => std::mem::take(&mut self.answer_now),
            _ => true,
        };
        if waiting { Hurry::Now } else { Hurry::MayWait }
    }

    /// Whether the peer `id` may not exist on its store yet: as leader, this replica has
    /// never heard it acknowledge anything. Its messages travel whole (heartbeats too):
    /// its store creates it from the region's epoch and range they carry.
    fn may_be_unborn(&self, id: u64) -> bool {
        // A follower's tracker matches nothing: only a leader's knows.
        self.is_leader()
            && self
                .raw
                .raft()
                .tracker
                .progress
                .get(&id)
                .is_some_and(|p| p.matched == 0)
    }

    /// The peer a message goes to; one this replica cannot place is reported unreachable
    /// to the core (which then probes it gently) and the message is dropped.
    pub(super) fn addressee(&mut self, m: &Message) -> Option<Peer> {
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

    /// Hands a Ready's write to the WAL writer (through the round's context).
    pub(super) fn write(&mut self, start: LogStart, write: ReadyWrite, ctx: &mut PollContext) {
        let ReadyWrite {
            entries,
            hard_state_changed,
            persisted,
            messages: held,
            sync,
        } = write;
        if let Some(last) = entries.last() {
            (self.last_index, self.last_term) = (last.index, last.term);
        }
        let state = (hard_state_changed || !entries.is_empty()).then(|| RaftLocalState {
            hard_state: Some(self.raw.raft().hard_state()),
            last_index: self.last_index,
            last_term: self.last_term,
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
        let bytes = entries.iter().map(entry_size).sum();
        ctx.writes.push(WriteTask {
            charge: Some(Charge::new(&ctx.shared.flow.wal, bytes)),
            start,
            entries,
            state,
            sync,
            persisted,
            held,
            ..WriteTask::new(self.log.clone(), id)
        });
    }

    pub(super) fn apply_committed(&mut self, entries: Vec<Entry>, ctx: &mut PollContext) {
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
            .force_send(self.region_id(), ApplyMsg::Apply(Box::new(task)));
    }
}
