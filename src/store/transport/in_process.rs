//! The in-process network: stores of one process (tests, the embedded in-memory mode)
//! hand each other batches directly, through faults a test sets: partitions, one-way
//! link loss, dropped regions or message types, duplicates, and held batches delivered
//! later in a seeded random order. `deliver_one` is a step a simulator can schedule.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{Transport, TransportError};
use crate::proto::raftpb::MessageType;
use crate::proto::transportpb::{RaftMessage, RaftMessageBatch};
use crate::raft::rng::Rng;
use crate::storage::snapshot::SnapshotBounds;
use crate::{RegionId, StoreId};

/// Where a store takes delivery of batches.
pub trait BatchReceiver: Send + Sync + 'static {
    /// One batch from another store. Must not block (route it into mailboxes).
    fn receive(&self, batch: RaftMessageBatch);

    /// A snapshot from another store: its files (copied by the receiver before it returns)
    /// and the message describing them, routed once the files are in place.
    fn receive_snapshot(&self, message: RaftMessage, files: &Path) -> std::io::Result<()>;

    /// The most the snapshot `message` announces may stage before `receive_snapshot` sees
    /// it (a network receiver stops a stream that sends more); `None`, the default, sets
    /// no bound.
    fn snapshot_bounds(&self, message: &RaftMessage) -> Option<SnapshotBounds> {
        let _ = message;
        None
    }
}

/// A fault the network applies to every batch until it is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Stores in different groups cannot reach each other; stores in no group reach all.
    Partition(Vec<HashSet<StoreId>>),
    /// Batches from `from` to `to` are lost (the other direction still works).
    DropLink {
        /// The sender.
        from: StoreId,
        /// The receiver.
        to: StoreId,
    },
    /// Every message of the region is lost (folded heartbeats too).
    DropRegion(RegionId),
    /// Every message of the region to one store is lost: a replica cut off from its
    /// region alone, while the store and its other regions talk on.
    DropRegionTo {
        /// The region.
        region: RegionId,
        /// The receiving store.
        to: StoreId,
    },
    /// Every message of the type is lost (folded heartbeats count as `MsgHeartbeat` and
    /// `MsgHeartbeatResponse`).
    DropType(MessageType),
    /// Each batch is delivered twice, with this chance in percent.
    Duplicate(u8),
    /// Batches are held in flight instead of delivered at once: `deliver_one` delivers a
    /// random one (so they arrive reordered and late).
    Hold,
}

/// Handle of an added fault, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

struct Inner {
    stores: RwLock<HashMap<StoreId, Arc<dyn BatchReceiver>>>,
    faults: Mutex<Vec<(FaultId, Fault)>>,
    next_fault: Mutex<u64>,
    held: Mutex<VecDeque<RaftMessageBatch>>,
    rng: Mutex<Rng>,
    /// Batches delivered, per (from, to).
    delivered: Mutex<HashMap<(StoreId, StoreId), u64>>,
}

/// The network. Clones share it; it is also every store's `Transport`.
#[derive(Clone)]
pub struct InProcessNetwork {
    inner: Arc<Inner>,
}

impl InProcessNetwork {
    /// A network with no store and no fault; `seed` drives duplicates and held delivery.
    pub fn new(seed: u64) -> Self {
        InProcessNetwork {
            inner: Arc::new(Inner {
                stores: RwLock::default(),
                faults: Mutex::default(),
                next_fault: Mutex::new(0),
                held: Mutex::default(),
                rng: Mutex::new(Rng::new(seed)),
                delivered: Mutex::default(),
            }),
        }
    }

    /// Connects a store (replacing an earlier receiver: a restarted store).
    pub fn register(&self, store: StoreId, receiver: Arc<dyn BatchReceiver>) {
        self.inner.stores.write().insert(store, receiver);
    }

    /// Disconnects a store (stopped or crashed): sends to it are `Unreachable`, and batches
    /// held for it are dropped when their turn comes.
    pub fn unregister(&self, store: StoreId) {
        self.inner.stores.write().remove(&store);
    }

    /// Adds a fault.
    pub fn add_fault(&self, fault: Fault) -> FaultId {
        let mut next = self.inner.next_fault.lock();
        *next += 1;
        let id = FaultId(*next);
        self.inner.faults.lock().push((id, fault));
        id
    }

    /// Removes a fault; held batches stay held until delivered.
    pub fn remove_fault(&self, id: FaultId) {
        self.inner.faults.lock().retain(|(f, _)| *f != id);
    }

    /// Removes every fault (the network heals); held batches stay until delivered.
    pub fn clear_faults(&self) {
        self.inner.faults.lock().clear();
    }

    /// Batches in flight.
    pub fn held(&self) -> usize {
        self.inner.held.lock().len()
    }

    /// Delivers one held batch, chosen at random; false if none is held.
    pub fn deliver_one(&self) -> bool {
        let batch = {
            let mut held = self.inner.held.lock();
            if held.is_empty() {
                return false;
            }
            let at = self.inner.rng.lock().range(0, held.len() as u64) as usize;
            held.remove(at)
        };
        if let Some(batch) = batch {
            self.deliver(batch);
        }
        true
    }

    /// Loses one held batch, chosen at random (lost in flight); false if none is held.
    pub fn lose_one(&self) -> bool {
        let mut held = self.inner.held.lock();
        if held.is_empty() {
            return false;
        }
        let at = self.inner.rng.lock().range(0, held.len() as u64) as usize;
        held.remove(at);
        true
    }

    /// Delivers every held batch (in random order); returns how many.
    pub fn deliver_all(&self) -> usize {
        let mut n = 0;
        while self.deliver_one() {
            n += 1;
        }
        n
    }

    /// Batches delivered from `from` to `to` so far.
    pub fn delivered_between(&self, from: StoreId, to: StoreId) -> u64 {
        self.inner
            .delivered
            .lock()
            .get(&(from, to))
            .copied()
            .unwrap_or(0)
    }

    fn deliver(&self, batch: RaftMessageBatch) {
        let (from, to) = (StoreId(batch.from_store), StoreId(batch.to_store));
        // A batch held for a store that went away is lost, as on a real network.
        let receiver = self.inner.stores.read().get(&to).cloned();
        if let Some(receiver) = receiver {
            *self.inner.delivered.lock().entry((from, to)).or_default() += 1;
            receiver.receive(batch);
        }
    }
}

/// What the faults make of one batch.
struct Verdict {
    lost: bool,
    duplicate: bool,
    hold: bool,
}

impl InProcessNetwork {
    fn judge(&self, batch: &mut RaftMessageBatch) -> Verdict {
        let (from, to) = (StoreId(batch.from_store), StoreId(batch.to_store));
        let mut verdict = Verdict {
            lost: false,
            duplicate: false,
            hold: false,
        };
        for (_, fault) in self.inner.faults.lock().iter() {
            match fault {
                Fault::Partition(groups) => {
                    let group_of = |s| groups.iter().position(|g| g.contains(&s));
                    if let (Some(a), Some(b)) = (group_of(from), group_of(to)) {
                        verdict.lost |= a != b;
                    }
                }
                Fault::DropLink { from: f, to: t } => verdict.lost |= (*f, *t) == (from, to),
                Fault::DropRegion(region) => strip(batch, |r, _| r == region.get()),
                Fault::DropRegionTo { region, to: t } if *t == to => {
                    strip(batch, |r, _| r == region.get());
                }
                Fault::DropRegionTo { .. } => {}
                Fault::DropType(t) => strip(batch, |_, mt| mt == *t as i32),
                Fault::Duplicate(percent) => {
                    verdict.duplicate |= self.inner.rng.lock().chance(u64::from(*percent));
                }
                Fault::Hold => verdict.hold = true,
            }
        }
        verdict
    }
}

/// Drops the messages (and folded heartbeats) for which `lost(region, msg_type)` holds.
fn strip(batch: &mut RaftMessageBatch, lost: impl Fn(u64, i32) -> bool) {
    batch.messages.retain(|m| {
        let t = m.message.as_ref().map_or(-1, |m| m.msg_type);
        !lost(m.region_id, t)
    });
    let beat = MessageType::MsgHeartbeat as i32;
    let answer = MessageType::MsgHeartbeatResponse as i32;
    batch.heartbeats.retain(|h| !lost(h.region_id, beat));
    batch
        .heartbeat_responses
        .retain(|h| !lost(h.region_id, answer));
}

impl Transport for InProcessNetwork {
    /// The snapshot travels as a one-message batch would: a partition or a lost link loses
    /// it (reported, so the leader retries), a dropped region or type too.
    fn send_snapshot(&self, message: RaftMessage, files: &Path) -> Result<(), TransportError> {
        let from = message.from_peer.map_or(0, |p| p.store_id);
        let to = StoreId(message.to_peer.map_or(0, |p| p.store_id));
        let mut probe = RaftMessageBatch {
            from_store: from,
            to_store: to.get(),
            messages: vec![message],
            ..Default::default()
        };
        let verdict = self.judge(&mut probe);
        let receiver = self.inner.stores.read().get(&to).cloned();
        let (Some(receiver), false, Some(message)) = (receiver, verdict.lost, probe.messages.pop())
        else {
            return Err(TransportError::Unreachable(to));
        };
        receiver
            .receive_snapshot(message, files)
            .map_err(|e| TransportError::SnapshotRefused {
                store: to,
                reason: e.to_string(),
            })?;
        *self
            .inner
            .delivered
            .lock()
            .entry((StoreId(from), to))
            .or_default() += 1;
        Ok(())
    }

    fn send(&self, mut batch: RaftMessageBatch) -> Result<(), TransportError> {
        let to = StoreId(batch.to_store);
        if !self.inner.stores.read().contains_key(&to) {
            return Err(TransportError::Unreachable(to));
        }
        let verdict = self.judge(&mut batch);
        // A partition loses batches silently, as a real one does until timeouts notice.
        if verdict.lost {
            return Ok(());
        }
        let copies = if verdict.duplicate { 2 } else { 1 };
        for copy in 0..copies {
            let batch = if copy + 1 == copies {
                std::mem::take(&mut batch)
            } else {
                batch.clone()
            };
            if verdict.hold {
                self.inner.held.lock().push_back(batch);
            } else {
                self.deliver(batch);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::proto::raftpb::Message;
    use crate::proto::transportpb::{Heartbeat, RaftMessage};

    #[derive(Default)]
    struct Inbox(
        Mutex<Vec<RaftMessageBatch>>,
        Mutex<Vec<(RaftMessage, PathBuf)>>,
    );

    impl BatchReceiver for Inbox {
        fn receive(&self, batch: RaftMessageBatch) {
            self.0.lock().push(batch);
        }

        fn receive_snapshot(&self, message: RaftMessage, files: &Path) -> std::io::Result<()> {
            if !files.exists() {
                return Err(std::io::Error::other("no such snapshot"));
            }
            self.1.lock().push((message, files.to_path_buf()));
            Ok(())
        }
    }

    fn snapshot_message(from: u64, to: u64, region: u64) -> RaftMessage {
        RaftMessage {
            region_id: region,
            from_peer: Some(crate::proto::metapb::Peer {
                id: from,
                store_id: from,
                ..Default::default()
            }),
            to_peer: Some(crate::proto::metapb::Peer {
                id: to,
                store_id: to,
                ..Default::default()
            }),
            message: Some(Message {
                msg_type: MessageType::MsgSnapshot as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_travel_like_batches_and_report_what_stopped_them() {
        let (net, inboxes) = network(3);
        let dir = std::env::temp_dir();
        net.send_snapshot(snapshot_message(1, 2, 7), &dir).unwrap();
        assert_eq!(inboxes[2].1.lock().len(), 1);
        assert_eq!(net.delivered_between(StoreId(1), StoreId(2)), 1);
        // A receiver that cannot take the files says so.
        let missing = dir.join("no-such-snapshot-dir");
        assert!(matches!(
            net.send_snapshot(snapshot_message(1, 2, 7), &missing),
            Err(TransportError::SnapshotRefused {
                store: StoreId(2),
                ..
            })
        ));
        // A partition, a lost link or a dropped region loses it, reported.
        let cut = net.add_fault(Fault::Partition(vec![
            HashSet::from([StoreId(1)]),
            HashSet::from([StoreId(2), StoreId(3)]),
        ]));
        assert_eq!(
            net.send_snapshot(snapshot_message(1, 2, 7), &dir),
            Err(TransportError::Unreachable(StoreId(2)))
        );
        net.remove_fault(cut);
        net.add_fault(Fault::DropRegion(RegionId(7)));
        assert_eq!(
            net.send_snapshot(snapshot_message(1, 3, 7), &dir),
            Err(TransportError::Unreachable(StoreId(3)))
        );
        net.send_snapshot(snapshot_message(1, 3, 8), &dir).unwrap();
        assert_eq!(
            net.send_snapshot(snapshot_message(1, 9, 8), &dir),
            Err(TransportError::Unreachable(StoreId(9)))
        );
        assert_eq!(inboxes[3].1.lock().len(), 1);
        assert_eq!(inboxes[2].1.lock().len(), 1);
    }

    fn batch(from: u64, to: u64, regions: &[u64]) -> RaftMessageBatch {
        RaftMessageBatch {
            from_store: from,
            to_store: to,
            messages: regions
                .iter()
                .map(|&r| RaftMessage {
                    region_id: r,
                    message: Some(Message {
                        msg_type: MessageType::MsgAppend as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            heartbeats: regions
                .iter()
                .map(|&r| Heartbeat {
                    region_id: r,
                    ..Default::default()
                })
                .collect(),
            heartbeat_responses: Vec::new(),
        }
    }

    fn network(stores: u64) -> (InProcessNetwork, Vec<Arc<Inbox>>) {
        let net = InProcessNetwork::new(7);
        let inboxes: Vec<Arc<Inbox>> = (0..=stores).map(|_| Arc::default()).collect();
        for s in 1..=stores {
            net.register(StoreId(s), inboxes[s as usize].clone());
        }
        (net, inboxes)
    }

    #[test]
    fn batches_reach_registered_stores_and_unknown_ones_are_unreachable() {
        let (net, inboxes) = network(2);
        net.send(batch(1, 2, &[1])).unwrap();
        assert_eq!(inboxes[2].0.lock().len(), 1);
        assert_eq!(net.delivered_between(StoreId(1), StoreId(2)), 1);
        assert_eq!(net.delivered_between(StoreId(2), StoreId(1)), 0);
        assert_eq!(
            net.send(batch(1, 9, &[1])),
            Err(TransportError::Unreachable(StoreId(9)))
        );
        net.unregister(StoreId(2));
        assert_eq!(
            net.send(batch(1, 2, &[1])),
            Err(TransportError::Unreachable(StoreId(2)))
        );
    }

    #[test]
    fn a_partition_separates_groups_until_removed() {
        let (net, inboxes) = network(3);
        let id = net.add_fault(Fault::Partition(vec![
            HashSet::from([StoreId(1)]),
            HashSet::from([StoreId(2), StoreId(3)]),
        ]));
        net.send(batch(1, 2, &[1])).unwrap();
        net.send(batch(2, 1, &[1])).unwrap();
        net.send(batch(2, 3, &[1])).unwrap();
        assert!(inboxes[1].0.lock().is_empty() && inboxes[2].0.lock().is_empty());
        assert_eq!(inboxes[3].0.lock().len(), 1, "same side");
        net.remove_fault(id);
        net.send(batch(1, 2, &[1])).unwrap();
        assert_eq!(inboxes[2].0.lock().len(), 1);
        // A store in no group reaches every side.
        let (net, inboxes) = network(3);
        net.add_fault(Fault::Partition(vec![
            HashSet::from([StoreId(1)]),
            HashSet::from([StoreId(2)]),
        ]));
        net.send(batch(3, 1, &[1])).unwrap();
        net.send(batch(3, 2, &[1])).unwrap();
        net.send(batch(1, 3, &[1])).unwrap();
        assert_eq!(inboxes[1].0.lock().len(), 1);
        assert_eq!(inboxes[2].0.lock().len(), 1);
        assert_eq!(inboxes[3].0.lock().len(), 1);
    }

    #[test]
    fn a_dropped_link_is_one_way() {
        let (net, inboxes) = network(2);
        net.add_fault(Fault::DropLink {
            from: StoreId(1),
            to: StoreId(2),
        });
        net.send(batch(1, 2, &[1])).unwrap();
        net.send(batch(2, 1, &[1])).unwrap();
        assert!(inboxes[2].0.lock().is_empty());
        assert_eq!(inboxes[1].0.lock().len(), 1);
        net.clear_faults();
        net.send(batch(1, 2, &[1])).unwrap();
        assert_eq!(inboxes[2].0.lock().len(), 1);
    }

    #[test]
    fn dropping_a_region_or_a_type_strips_only_those_messages() {
        let (net, inboxes) = network(2);
        let id = net.add_fault(Fault::DropRegion(RegionId(5)));
        net.send(batch(1, 2, &[4, 5, 6])).unwrap();
        {
            let got = inboxes[2].0.lock();
            let regions: Vec<u64> = got[0].messages.iter().map(|m| m.region_id).collect();
            assert_eq!(regions, vec![4, 6]);
            let beats: Vec<u64> = got[0].heartbeats.iter().map(|h| h.region_id).collect();
            assert_eq!(beats, vec![4, 6]);
        }
        net.remove_fault(id);
        net.add_fault(Fault::DropType(MessageType::MsgHeartbeat));
        net.send(batch(1, 2, &[4, 5])).unwrap();
        let got = inboxes[2].0.lock();
        assert_eq!(got[1].messages.len(), 2, "appends pass");
        assert!(got[1].heartbeats.is_empty());
    }

    #[test]
    fn dropping_a_region_to_one_store_spares_its_other_receivers() {
        let (net, inboxes) = network(3);
        net.add_fault(Fault::DropRegionTo {
            region: RegionId(5),
            to: StoreId(2),
        });
        net.send(batch(1, 2, &[4, 5])).unwrap();
        net.send(batch(1, 3, &[4, 5])).unwrap();
        net.send(batch(3, 2, &[5, 6])).unwrap();
        let regions = |store: usize, n: usize| -> Vec<u64> {
            let got = inboxes[store].0.lock();
            got[n].messages.iter().map(|m| m.region_id).collect()
        };
        assert_eq!(regions(2, 0), vec![4]);
        assert_eq!(regions(3, 0), vec![4, 5]);
        assert_eq!(regions(2, 1), vec![6]);
    }

    #[test]
    fn a_lost_batch_is_never_delivered() {
        let net = InProcessNetwork::new(3);
        let inbox = Arc::new(Inbox::default());
        net.register(StoreId(2), inbox.clone());
        net.add_fault(Fault::Hold);
        for r in 0..3 {
            net.send(batch(1, 2, &[r])).unwrap();
        }
        assert!(net.lose_one());
        assert_eq!(net.held(), 2);
        assert_eq!(net.deliver_all(), 2);
        assert_eq!(inbox.0.lock().len(), 2);
        assert!(!net.lose_one(), "nothing held");
    }

    #[test]
    fn held_batches_arrive_later_in_a_seeded_order() {
        let order = |seed| {
            let net = InProcessNetwork::new(seed);
            let inbox = Arc::new(Inbox::default());
            net.register(StoreId(2), inbox.clone());
            net.add_fault(Fault::Hold);
            for r in 0..20 {
                net.send(batch(1, 2, &[r])).unwrap();
            }
            assert!(inbox.0.lock().is_empty());
            assert_eq!(net.held(), 20);
            assert_eq!(net.deliver_all(), 20);
            assert!(!net.deliver_one());
            let got: Vec<u64> = inbox
                .0
                .lock()
                .iter()
                .map(|b| b.messages[0].region_id)
                .collect();
            got
        };
        let a = order(1);
        assert_eq!(a, order(1), "same seed, same order");
        assert_ne!(a, (0..20).collect::<Vec<_>>(), "reordered");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "each exactly once");
        // Any held batch may go first, the last one included.
        let mut firsts = HashSet::new();
        for seed in 0..32 {
            let net = InProcessNetwork::new(seed);
            let inbox = Arc::new(Inbox::default());
            net.register(StoreId(2), inbox.clone());
            net.add_fault(Fault::Hold);
            net.send(batch(1, 2, &[0])).unwrap();
            net.send(batch(1, 2, &[1])).unwrap();
            assert!(net.deliver_one());
            firsts.insert(inbox.0.lock()[0].messages[0].region_id);
        }
        assert_eq!(firsts, HashSet::from([0, 1]));
    }

    #[test]
    fn duplicates_deliver_a_batch_twice() {
        let (net, inboxes) = network(2);
        net.add_fault(Fault::Duplicate(100));
        net.send(batch(1, 2, &[3])).unwrap();
        let got = inboxes[2].0.lock();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], got[1]);
        assert_eq!(net.delivered_between(StoreId(1), StoreId(2)), 2);
    }
}
