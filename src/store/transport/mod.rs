//! What a store sends other stores, and how. The store batches its own traffic: every
//! poller round and every WAL completion fills one `Outbound`, which yields at most one
//! `RaftMessageBatch` per destination store, the heartbeats (and their responses) of all
//! its regions folded into compact lists. A `Transport` carries the batches: in-process
//! for tests and the embedded mode, gRPC between processes.

mod in_process;

use std::collections::BTreeMap;
use std::path::Path;

use super::metrics::{Direction, TrafficCounters};
use crate::proto::metapb::{Peer, Region};
use crate::proto::raftpb::{Message, MessageType};
use crate::proto::transportpb::{
    Heartbeat, Hibernation, HibernationSignal, RaftMessage, RaftMessageBatch,
};
use crate::{PeerId, RegionId, StoreId};

pub use in_process::{BatchReceiver, Fault, FaultId, InProcessNetwork};

/// Why a batch was not handed over. Raft tolerates lost messages; the regions whose
/// messages were in it are told their peers are unreachable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the store (unknown address, down, partitioned).
    #[error("store {0} is unreachable")]
    Unreachable(StoreId),
    /// The connection's send queue is full; the batch was dropped rather than queued
    /// without bound.
    #[error("send queue to store {0} is full")]
    Full(StoreId),
    /// The receiving store could not take a snapshot's files.
    #[error("store {store} refused the snapshot: {reason}")]
    SnapshotRefused {
        /// The receiver.
        store: StoreId,
        /// Why.
        reason: String,
    },
}

/// Carries batches between stores. `send` must not block on the network: it queues the
/// batch (boundedly) or refuses it.
pub trait Transport: Send + Sync + 'static {
    /// Hands one batch to `batch.to_store`.
    fn send(&self, batch: RaftMessageBatch) -> Result<(), TransportError>;

    /// Carries a snapshot to `message.to_peer`'s store: the files in `files` (a snapshot
    /// directory, `storage::snapshot`), then `message` (the `MsgSnapshot` describing them).
    /// It may block while the files travel: the store calls it from its snapshot worker,
    /// never from a poller.
    fn send_snapshot(&self, message: RaftMessage, files: &Path) -> Result<(), TransportError>;
}

/// A region's message as it travels whole: with the region's epoch and range, and both
/// peers with their stores.
pub(crate) fn raft_message(
    region: &Region,
    from: &Peer,
    to: &Peer,
    message: Message,
) -> RaftMessage {
    RaftMessage {
        region_id: region.id,
        from_peer: Some(*from),
        to_peer: Some(*to),
        region_epoch: region.epoch,
        message: Some(message),
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
        is_tombstone: false,
        hibernation: None,
        answer_now: false,
    }
}

/// What a flush did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches handed to the transport.
    pub batches: usize,
    /// Full messages sent.
    pub messages: usize,
    /// Heartbeats and heartbeat responses sent folded.
    pub folded_heartbeats: usize,
    /// (region, peer) of every message in a batch the transport refused, each once: each
    /// region reports its peer unreachable.
    pub unreachable: Vec<(RegionId, PeerId)>,
}

/// Whether a heartbeat may wait for other regions' to travel with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hurry {
    /// A read waits on it (a read round, or the answer to one): it leaves at the end of
    /// its round, and its answer is sent at once.
    Now,
    /// A periodic heartbeat (or the answer to one).
    MayWait,
}

/// One round's outgoing messages, grouped by destination store.
#[derive(Debug)]
pub struct Outbound {
    from_store: StoreId,
    batches: BTreeMap<StoreId, RaftMessageBatch>,
    /// Whether anything but plain heartbeats (and their responses) waits: those may wait
    /// for the rounds behind this one, so that one flush carries every region's.
    urgent: bool,
    /// Folded heartbeats and responses waiting.
    folded: usize,
    sent: TrafficCounters,
}

impl Outbound {
    /// An empty round for a store.
    pub fn new(from_store: StoreId) -> Self {
        Outbound {
            from_store,
            batches: BTreeMap::new(),
            urgent: false,
            folded: 0,
            sent: TrafficCounters::new(Direction::Sent),
        }
    }

    /// Whether a message waits that should leave at the end of this round: anything but
    /// plain heartbeats, or more folded heartbeats than one batch should hold.
    pub fn is_urgent(&self) -> bool {
        self.urgent || self.folded >= MAX_HELD_HEARTBEATS
    }

    /// Adds a message of `region` from its peer `from` to its peer `to`. A heartbeat or
    /// heartbeat response that carries only the numbers a folded one keeps is folded, and
    /// may wait for the rounds behind unless `hurry` says a read waits on it; anything
    /// else travels whole, with the region's epoch and range, at the end of the round.
    pub fn push(
        &mut self,
        region: &Region,
        from: &Peer,
        to: &Peer,
        message: Message,
        hurry: Hurry,
    ) {
        let mut folded = fold(region.id, &message);
        if let Some((_, heartbeat)) = &mut folded {
            self.folded += 1;
            heartbeat.answer_now = hurry == Hurry::Now;
            self.urgent |= hurry == Hurry::Now;
        }
        match folded {
            Some((HeartbeatList::Requests, heartbeat)) => {
                self.batch_to(to).heartbeats.push(heartbeat);
            }
            Some((HeartbeatList::Responses, heartbeat)) => {
                self.batch_to(to).heartbeat_responses.push(heartbeat);
            }
            None => self.push_whole(region, from, to, message),
        }
    }

    /// Adds a message that travels whole even if it could be folded: a heartbeat to a
    /// peer that may not exist yet, whose store needs the region's epoch and range to
    /// create it.
    pub fn push_whole(&mut self, region: &Region, from: &Peer, to: &Peer, message: Message) {
        self.urgent = true;
        self.batch_to(to)
            .messages
            .push(raft_message(region, from, to, message));
    }

    /// Tells `to`, a peer `region` no longer has, that it was removed (at the region's
    /// epoch): its store destroys it.
    pub fn push_tombstone(&mut self, region: &Region, from: &Peer, to: &Peer) {
        let mut m = raft_message(region, from, to, Message::default());
        m.message = None;
        m.is_tombstone = true;
        self.urgent = true;
        self.batch_to(to).messages.push(m);
    }

    /// Adds a hibernation signal from `from` to `to` (it travels whole, like a tombstone).
    pub fn push_signal(
        &mut self,
        region: &Region,
        from: &Peer,
        to: &Peer,
        signal: HibernationSignal,
        term: u64,
        last_index: u64,
    ) {
        let mut m = raft_message(region, from, to, Message::default());
        m.message = None;
        m.hibernation = Some(Hibernation {
            signal: signal as i32,
            term,
            last_index,
        });
        self.urgent = true;
        self.batch_to(to).messages.push(m);
    }

    fn batch_to(&mut self, to: &Peer) -> &mut RaftMessageBatch {
        let from_store = self.from_store.get();
        self.batches
            .entry(StoreId(to.store_id))
            .or_insert_with(|| RaftMessageBatch {
                from_store,
                to_store: to.store_id,
                ..Default::default()
            })
    }

    /// Whether nothing was pushed since the last flush.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Sends one batch per destination store and empties the round.
    pub fn flush(&mut self, transport: &dyn Transport) -> FlushReport {
        self.urgent = false;
        self.folded = 0;
        let mut report = FlushReport::default();
        for (store, batch) in std::mem::take(&mut self.batches) {
            let messages = batch.messages.len();
            let folded = batch.heartbeats.len() + batch.heartbeat_responses.len();
            let peers = addressees(&batch);
            match transport.send(batch) {
                Ok(()) => {
                    report.batches += 1;
                    report.messages += messages;
                    report.folded_heartbeats += folded;
                }
                Err(e) => {
                    tracing::debug!(store = store.get(), error = %e, "raft batch not sent");
                    report.unreachable.extend(peers);
                }
            }
        }
        self.sent
            .count(report.batches, report.messages, report.folded_heartbeats);
        report
    }
}

/// Folded heartbeats one batch holds before it leaves at the end of a round.
const MAX_HELD_HEARTBEATS: usize = 8192;

enum HeartbeatList {
    Requests,
    Responses,
}

/// The folded form of a heartbeat or heartbeat response, if folding loses nothing: every
/// field but type, endpoints, term, commit and read round at its default.
fn fold(region_id: u64, m: &Message) -> Option<(HeartbeatList, Heartbeat)> {
    let list = match MessageType::try_from(m.msg_type).ok()? {
        MessageType::MsgHeartbeat => HeartbeatList::Requests,
        MessageType::MsgHeartbeatResponse => HeartbeatList::Responses,
        _ => return None,
    };
    let bare = Message {
        msg_type: m.msg_type,
        to: m.to,
        from: m.from,
        term: m.term,
        commit: m.commit,
        read_round: m.read_round,
        ..Default::default()
    };
    if *m != bare {
        return None;
    }
    Some((
        list,
        Heartbeat {
            region_id,
            from_peer: m.from,
            to_peer: m.to,
            term: m.term,
            commit: m.commit,
            read_round: m.read_round,
            answer_now: false,
        },
    ))
}

/// (region, peer) of everything in a batch, each once, in order.
fn addressees(batch: &RaftMessageBatch) -> Vec<(RegionId, PeerId)> {
    let whole = batch.messages.iter().map(|m| {
        (
            RegionId(m.region_id),
            PeerId(m.to_peer.as_ref().map_or(0, |p| p.id)),
        )
    });
    let folded = batch
        .heartbeats
        .iter()
        .chain(&batch.heartbeat_responses)
        .map(|h| (RegionId(h.region_id), PeerId(h.to_peer)));
    let mut all: Vec<(RegionId, PeerId)> = whole.chain(folded).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The messages of a received batch, heartbeats unfolded. An unfolded heartbeat carries no
/// epoch, no range and no peer roles: a receiver must read its missing epoch as unknown
/// (never as an old epoch, which would drop every heartbeat as stale), and it never
/// creates a peer: it reaches only an existing one.
pub fn unfold(batch: RaftMessageBatch) -> impl Iterator<Item = RaftMessage> {
    let (from_store, to_store) = (batch.from_store, batch.to_store);
    let expand = move |msg_type: MessageType, h: Heartbeat| RaftMessage {
        region_id: h.region_id,
        from_peer: Some(Peer {
            id: h.from_peer,
            store_id: from_store,
            ..Default::default()
        }),
        to_peer: Some(Peer {
            id: h.to_peer,
            store_id: to_store,
            ..Default::default()
        }),
        region_epoch: None,
        message: Some(Message {
            msg_type: msg_type as i32,
            to: h.to_peer,
            from: h.from_peer,
            term: h.term,
            commit: h.commit,
            read_round: h.read_round,
            ..Default::default()
        }),
        start_key: Vec::new(),
        end_key: Vec::new(),
        is_tombstone: false,
        hibernation: None,
        answer_now: h.answer_now,
    };
    let heartbeats = batch
        .heartbeats
        .into_iter()
        .map(move |h| expand(MessageType::MsgHeartbeat, h));
    let responses = batch
        .heartbeat_responses
        .into_iter()
        .map(move |h| expand(MessageType::MsgHeartbeatResponse, h));
    batch
        .messages
        .into_iter()
        .chain(heartbeats)
        .chain(responses)
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::proto::metapb::RegionEpoch;
    use crate::proto::raftpb::Entry;

    #[derive(Default)]
    struct Recorded {
        sent: Mutex<Vec<RaftMessageBatch>>,
        refuse: Option<StoreId>,
    }

    impl Transport for Recorded {
        fn send(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
            if Some(StoreId(batch.to_store)) == self.refuse {
                return Err(TransportError::Unreachable(StoreId(batch.to_store)));
            }
            self.sent.lock().push(batch);
            Ok(())
        }

        fn send_snapshot(&self, m: RaftMessage, _: &Path) -> Result<(), TransportError> {
            let store = StoreId(m.to_peer.map_or(0, |p| p.store_id));
            Err(TransportError::Unreachable(store))
        }
    }

    fn region(id: u64) -> Region {
        Region {
            id,
            start_key: vec![id as u8],
            end_key: vec![id as u8 + 1],
            epoch: Some(RegionEpoch {
                conf_ver: 2,
                version: id,
            }),
            peers: Vec::new(),
        }
    }

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            ..Default::default()
        }
    }

    fn raft_msg(t: MessageType, from: u64, to: u64) -> Message {
        Message {
            msg_type: t as i32,
            from,
            to,
            term: 5,
            commit: 9,
            read_round: 3,
            ..Default::default()
        }
    }

    #[test]
    fn one_batch_per_store_with_every_regions_heartbeats_folded() {
        let mut out = Outbound::new(StoreId(1));
        for r in 1..=100 {
            let (leader, f2, f3) = (
                peer(r * 10 + 1, 1),
                peer(r * 10 + 2, 2),
                peer(r * 10 + 3, 3),
            );
            for f in [&f2, &f3] {
                out.push(
                    &region(r),
                    &leader,
                    f,
                    raft_msg(MessageType::MsgHeartbeat, leader.id, f.id),
                    Hurry::MayWait,
                );
            }
        }
        let mut append = raft_msg(MessageType::MsgAppend, 11, 12);
        append.entries.push(Entry {
            term: 5,
            index: 10,
            ..Default::default()
        });
        out.push(
            &region(1),
            &peer(11, 1),
            &peer(12, 2),
            append.clone(),
            Hurry::MayWait,
        );
        out.push(
            &region(1),
            &peer(11, 1),
            &peer(12, 2),
            raft_msg(MessageType::MsgHeartbeatResponse, 11, 12),
            Hurry::MayWait,
        );
        let transport = Recorded::default();
        let report = out.flush(&transport);
        assert!(out.is_empty());
        assert_eq!(report.batches, 2);
        assert_eq!(report.messages, 1);
        assert_eq!(report.folded_heartbeats, 201);
        assert!(report.unreachable.is_empty());
        let sent = transport.sent.lock();
        assert_eq!(
            sent.iter().map(|b| b.to_store).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let to2 = &sent[0];
        assert_eq!(to2.from_store, 1);
        assert_eq!(to2.heartbeats.len(), 100);
        assert_eq!(to2.heartbeat_responses.len(), 1);
        assert_eq!(to2.messages.len(), 1);
        let whole = &to2.messages[0];
        assert_eq!(whole.message.as_ref(), Some(&append));
        assert_eq!(whole.region_epoch, region(1).epoch);
        assert_eq!(
            (whole.start_key.as_slice(), whole.end_key.as_slice()),
            (&[1u8][..], &[2u8][..])
        );
        assert_eq!(whole.from_peer, Some(peer(11, 1)));
        assert_eq!(whole.to_peer, Some(peer(12, 2)));
    }

    #[test]
    fn unfolding_gives_back_the_messages_that_were_folded() {
        let mut out = Outbound::new(StoreId(1));
        let originals = [
            raft_msg(MessageType::MsgHeartbeat, 11, 12),
            raft_msg(MessageType::MsgHeartbeatResponse, 11, 12),
        ];
        for m in &originals {
            out.push(
                &region(4),
                &peer(11, 1),
                &peer(12, 2),
                m.clone(),
                Hurry::MayWait,
            );
        }
        let transport = Recorded::default();
        out.flush(&transport);
        let batch = transport.sent.lock().pop().unwrap();
        let back: Vec<RaftMessage> = unfold(batch).collect();
        assert_eq!(back.len(), 2);
        for (m, original) in back.iter().zip(&originals) {
            assert_eq!(m.message.as_ref(), Some(original));
            assert_eq!(m.region_id, 4);
            assert_eq!(m.from_peer, Some(peer(11, 1)));
            assert_eq!(m.to_peer, Some(peer(12, 2)));
            assert_eq!(
                m.region_epoch, None,
                "an unfolded heartbeat cannot create a peer"
            );
        }
    }

    #[test]
    fn a_heartbeat_carrying_more_than_a_folded_one_keeps_travels_whole() {
        for change in [
            (|m: &mut Message| m.log_term = 1) as fn(&mut Message),
            |m| m.index = 1,
            |m| m.reject = true,
            |m| m.reject_hint = 1,
            |m| m.context = b"x".to_vec(),
            |m| m.transferee = 1,
        ] {
            let mut m = raft_msg(MessageType::MsgHeartbeat, 11, 12);
            change(&mut m);
            let mut out = Outbound::new(StoreId(1));
            out.push(
                &region(1),
                &peer(11, 1),
                &peer(12, 2),
                m.clone(),
                Hurry::MayWait,
            );
            let transport = Recorded::default();
            let report = out.flush(&transport);
            assert_eq!((report.messages, report.folded_heartbeats), (1, 0), "{m:?}");
            let batch = transport.sent.lock().pop().unwrap();
            assert_eq!(unfold(batch).next().unwrap().message, Some(m));
        }
    }

    #[test]
    fn a_refused_batch_names_every_peer_it_carried() {
        let mut out = Outbound::new(StoreId(1));
        out.push(
            &region(1),
            &peer(11, 1),
            &peer(12, 2),
            raft_msg(MessageType::MsgAppend, 11, 12),
            Hurry::MayWait,
        );
        out.push(
            &region(2),
            &peer(21, 1),
            &peer(22, 2),
            raft_msg(MessageType::MsgHeartbeat, 21, 22),
            Hurry::MayWait,
        );
        out.push(
            &region(3),
            &peer(31, 1),
            &peer(32, 2),
            raft_msg(MessageType::MsgHeartbeatResponse, 31, 32),
            Hurry::MayWait,
        );
        out.push(
            &region(1),
            &peer(11, 1),
            &peer(13, 3),
            raft_msg(MessageType::MsgAppend, 11, 13),
            Hurry::MayWait,
        );
        let transport = Recorded {
            refuse: Some(StoreId(2)),
            ..Default::default()
        };
        let report = out.flush(&transport);
        assert_eq!(report.batches, 1);
        assert_eq!(report.messages, 1);
        assert_eq!(report.folded_heartbeats, 0);
        assert_eq!(
            report.unreachable,
            vec![
                (RegionId(1), PeerId(12)),
                (RegionId(2), PeerId(22)),
                (RegionId(3), PeerId(32))
            ]
        );
    }
}
