//! Simulated clients: each has at most one operation in flight (get, put, delete,
//! compare-and-swap or scan), sent to the store its hints name, and every call and answer
//! is recorded for the linearizability checker. A write whose fate is unknown (dropped
//! unanswered, a crash, the client gave up waiting) is recorded as such and its client
//! continues under a new identity, as a client that reconnects would.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::proto::commandpb::{self, WriteCommand, op};
use crate::proto::metapb::Region;
use crate::raft::rng::Rng;
use crate::region::{DroppedReason, RegionError};
use crate::store::apply::eval::OpOutcome;
use crate::store::{ReadRequest, ReadResponse, Response, ScanOrder, WriteResponse};
use crate::testkit::linearizability::{
    KvInput, KvOutput, NotLinearizable, PendingCall, Recorder, check_kv,
};
use crate::{RegionId, StoreId};

use super::keys;
use super::world::World;

/// What the clients did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Operations answered with a result.
    pub acknowledged: u64,
    /// Operations refused with an error saying they did not take effect.
    pub refused: u64,
    /// The refusals by error kind (`RegionError::kind`).
    pub refusals: BTreeMap<&'static str, u64>,
    /// Writes whose effect is unknown (dropped unanswered, or given up on).
    pub unknown: u64,
}

/// The kinds of operation a client issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Get,
    Put,
    Delete,
    Cas,
    Scan,
}

impl OpKind {
    fn draw(rng: &mut Rng) -> OpKind {
        match rng.range(0, 10) {
            0..3 => OpKind::Get,
            3..6 => OpKind::Put,
            6 => OpKind::Delete,
            7..9 => OpKind::Cas,
            _ => OpKind::Scan,
        }
    }
}

impl ClientCounts {
    fn refuse(&mut self, error: &RegionError) {
        self.refused += 1;
        *self.refusals.entry(error.kind()).or_default() += 1;
    }

    /// Adds another run's counts.
    pub fn add(&mut self, other: &ClientCounts) {
        self.acknowledged += other.acknowledged;
        self.refused += other.refused;
        self.unknown += other.unknown;
        for (kind, n) in &other.refusals {
            *self.refusals.entry(kind).or_default() += n;
        }
    }
}

/// A response the simulator waits on, of whatever kind.
pub(super) enum Pending {
    Write(Response<WriteResponse>),
    Read(Response<ReadResponse>),
}

impl Pending {
    /// Whether the answer has come (it is then consumed).
    pub fn answered(&mut self) -> bool {
        match self {
            Pending::Write(r) => r.try_take().is_some(),
            Pending::Read(r) => r.try_take().is_some(),
        }
    }
}

enum Asked {
    Write {
        call: PendingCall,
        response: Response<WriteResponse>,
    },
    Get {
        call: PendingCall,
        response: Response<ReadResponse>,
    },
    /// A scan is recorded as a read of each key the clients use in its range, all at
    /// the scan's instant.
    Scan {
        calls: Vec<(Bytes, PendingCall)>,
        start: Bytes,
        end: Option<Bytes>,
        order: ScanOrder,
        response: Response<ReadResponse>,
    },
}

struct InFlight {
    key: Bytes,
    kind: OpKind,
    region: RegionId,
    store: StoreId,
    since: usize,
    asked: Asked,
}

struct Slot {
    /// The identity the history knows this client by.
    id: u64,
    in_flight: Option<InFlight>,
}

/// The clients, their history and what they stopped waiting for.
pub(super) struct Clients {
    recorder: Recorder,
    keys: Vec<Bytes>,
    slots: Vec<Slot>,
    next_id: u64,
    next_value: u64,
    /// Responses given up on: they must still be answered by the end.
    abandoned: Vec<Pending>,
    counts: ClientCounts,
    /// Steps a client waits before it gives up on an answer.
    patience: usize,
    /// Stores in the run (ids 1..=stores).
    stores: u64,
}

impl Clients {
    pub fn new(clients: usize, stores: usize, keys: Vec<Bytes>, patience: usize) -> Clients {
        Clients {
            recorder: Recorder::default(),
            keys,
            slots: (0..clients as u64)
                .map(|id| Slot {
                    id,
                    in_flight: None,
                })
                .collect(),
            next_id: clients as u64,
            next_value: 0,
            abandoned: Vec::new(),
            counts: ClientCounts::default(),
            patience,
            stores: stores as u64,
        }
    }

    pub fn counts(&self) -> ClientCounts {
        self.counts.clone()
    }

    /// Whether a client is free to start an operation.
    pub fn has_idle(&self) -> bool {
        self.slots.iter().any(|s| s.in_flight.is_none())
    }

    /// The keys the clients use.
    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }

    /// The keys of the operations in flight.
    pub fn in_flight_keys(&self) -> BTreeSet<Bytes> {
        self.slots
            .iter()
            .filter_map(|s| s.in_flight.as_ref().map(|f| f.key.clone()))
            .collect()
    }

    /// An idle client starts an operation (`chosen`, else a random one on a random key),
    /// sent where `hints` say the key's region is led (else to a random store holding
    /// it). Returns what it sent, for the trace, or None if no store could take it.
    pub fn start(
        &mut self,
        world: &World,
        hints: &BTreeMap<RegionId, StoreId>,
        rng: &mut Rng,
        step: usize,
        chosen: Option<(Bytes, OpKind)>,
    ) -> Option<String> {
        let idle: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].in_flight.is_none())
            .collect();
        let slot = *idle.get(rng.range(0, idle.len() as u64) as usize)?;
        let (key, kind) = match chosen {
            Some(chosen) => chosen,
            None => (
                self.keys[rng.range(0, self.keys.len() as u64) as usize].clone(),
                OpKind::draw(rng),
            ),
        };
        let (store_id, region) = route(world, hints, &key, rng)?;
        let store = world.store(store_id)?;
        let client = self.slots[slot].id;
        let epoch = region.epoch.unwrap_or_default();
        let id = RegionId(region.id);
        let (asked, what) = match kind {
            OpKind::Get => {
                let call = self.recorder.call(client, KvInput::Get(key.clone()));
                let response = store.read(id, epoch, ReadRequest::Get { key: key.clone() });
                (
                    Asked::Get { call, response },
                    format!("get {}", keys::show(&key)),
                )
            }
            OpKind::Put => {
                let value = self.value();
                let call = self
                    .recorder
                    .call(client, KvInput::Put(key.clone(), value.clone()));
                let put = op::Op::Put(commandpb::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
                let response = store.propose(id, epoch, command(put));
                (
                    Asked::Write { call, response },
                    format!("put {}={}", keys::show(&key), keys::show(&value)),
                )
            }
            OpKind::Delete => {
                let call = self.recorder.call(client, KvInput::Delete(key.clone()));
                let delete = op::Op::Delete(commandpb::Delete { key: key.clone() });
                let response = store.propose(id, epoch, command(delete));
                (
                    Asked::Write { call, response },
                    format!("delete {}", keys::show(&key)),
                )
            }
            OpKind::Cas => {
                // Expect a value some write used (or absence), so some swaps succeed.
                let expected = match rng.range(0, 3) {
                    0 => None,
                    _ if self.next_value > 0 => Some(value_named(rng.range(0, self.next_value))),
                    _ => None,
                };
                let new = (!rng.chance(10)).then(|| self.value());
                let call = self.recorder.call(
                    client,
                    KvInput::Cas {
                        key: key.clone(),
                        expected: expected.clone(),
                        new: new.clone(),
                    },
                );
                let cas = op::Op::CompareAndSwap(commandpb::CompareAndSwap {
                    key: key.clone(),
                    expected: expected.clone(),
                    new_value: new.clone(),
                });
                let response = store.propose(id, epoch, command(cas));
                (
                    Asked::Write { call, response },
                    format!(
                        "cas {} {:?}->{:?}",
                        keys::show(&key),
                        expected.as_deref().map(keys::show),
                        new.as_deref().map(keys::show)
                    ),
                )
            }
            OpKind::Scan => {
                let order = if rng.chance(50) {
                    ScanOrder::Forward
                } else {
                    ScanOrder::Reverse
                };
                // From the key to the region's end, or to a point inside it.
                let start = key.clone();
                let end = rng
                    .chance(50)
                    .then(|| keys::between(&start, &region.end_key, rng))
                    .flatten();
                let calls = self
                    .keys
                    .iter()
                    .filter(|k| {
                        **k >= start
                            && end.as_ref().is_none_or(|e| *k < e)
                            && (region.end_key.is_empty() || k.as_ref() < &region.end_key[..])
                    })
                    .map(|k| {
                        (
                            k.clone(),
                            self.recorder.call(client, KvInput::Get(k.clone())),
                        )
                    })
                    .collect();
                let response = store.read(
                    id,
                    epoch,
                    ReadRequest::Scan {
                        start: start.clone(),
                        end: end.clone(),
                        limit: 0,
                        order,
                    },
                );
                let what = format!(
                    "scan {}..{} {order:?}",
                    keys::show(&start),
                    end.as_deref().map_or("end".into(), keys::show)
                );
                (
                    Asked::Scan {
                        calls,
                        start,
                        end,
                        order,
                        response,
                    },
                    what,
                )
            }
        };
        self.slots[slot].in_flight = Some(InFlight {
            key,
            kind,
            region: id,
            store: store_id,
            since: step,
            asked,
        });
        Some(format!(
            "client {client}: {what} to region {id} on store {store_id}"
        ))
    }

    /// Takes the answers that have come; a client waiting past its patience gives up.
    /// Learns leaders from the answers. Returns the operations acknowledged; Err: an
    /// answer no correct store gives.
    pub fn poll(
        &mut self,
        hints: &mut BTreeMap<RegionId, StoreId>,
        step: usize,
    ) -> Result<Vec<(Bytes, OpKind)>, String> {
        let mut done = Vec::new();
        for i in 0..self.slots.len() {
            let Some(mut flight) = self.slots[i].in_flight.take() else {
                continue;
            };
            let answered = match &mut flight.asked {
                Asked::Write { response, .. } => response.try_take().map(Answer::Write),
                Asked::Get { response, .. } | Asked::Scan { response, .. } => {
                    response.try_take().map(Answer::Read)
                }
            };
            match answered {
                Some(answer) => {
                    let (key, kind) = (flight.key.clone(), flight.kind);
                    if self.answered(flight, answer, hints)? {
                        done.push((key, kind));
                    }
                }
                None if step.saturating_sub(flight.since) > self.patience => {
                    self.give_up(i, flight)
                }
                None => self.slots[i].in_flight = Some(flight),
            }
        }
        self.abandoned.retain_mut(|p| !p.answered());
        Ok(done)
    }

    /// Responses still unanswered, given up on or not.
    pub fn unanswered(&mut self) -> usize {
        self.abandoned.retain_mut(|p| !p.answered());
        self.abandoned.len() + self.slots.iter().filter(|s| s.in_flight.is_some()).count()
    }

    /// Checks the recorded history.
    pub fn check(&self) -> Result<usize, NotLinearizable> {
        let history = self.recorder.history();
        check_kv(&history)?;
        Ok(history.len())
    }

    fn answered(
        &mut self,
        flight: InFlight,
        answer: Answer,
        hints: &mut BTreeMap<RegionId, StoreId>,
    ) -> Result<bool, String> {
        let acknowledged = matches!(answer, Answer::Write(Ok(_)) | Answer::Read(Ok(_)));
        let InFlight {
            region,
            store,
            asked,
            ..
        } = flight;
        match (asked, answer) {
            (Asked::Write { call, .. }, Answer::Write(Ok(written))) => {
                hints.insert(region, store);
                let output = match (call.input(), written.outcomes.as_slice()) {
                    (KvInput::Cas { .. }, [OpOutcome::Swapped]) => KvOutput::Swapped,
                    (KvInput::Cas { .. }, [OpOutcome::Mismatch { current }]) => {
                        KvOutput::Mismatch(current.clone())
                    }
                    (KvInput::Put(..) | KvInput::Delete(_), [OpOutcome::Done]) => KvOutput::Done,
                    (input, outcomes) => {
                        return Err(format!("{input:?} was answered with {outcomes:?}"));
                    }
                };
                self.counts.acknowledged += 1;
                self.recorder.returned(call, output);
            }
            (Asked::Write { call, .. }, Answer::Write(Err(e))) => {
                learn(hints, region, store, self.stores, &e);
                if may_have_run(&e) {
                    self.counts.unknown += 1;
                    self.recorder.unknown(call);
                } else {
                    self.counts.refuse(&e);
                    self.recorder.failed(call);
                }
            }
            (Asked::Get { call, .. }, Answer::Read(Ok(ReadResponse::Value(value)))) => {
                hints.insert(region, store);
                self.counts.acknowledged += 1;
                self.recorder.returned(call, KvOutput::Value(value));
            }
            (
                Asked::Scan {
                    calls,
                    start,
                    end,
                    order,
                    ..
                },
                Answer::Read(Ok(ReadResponse::Pairs(pairs))),
            ) => {
                hints.insert(region, store);
                check_scan(&pairs, &start, end.as_ref(), order)?;
                self.counts.acknowledged += 1;
                for (key, call) in calls {
                    let value = pairs
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.clone());
                    self.recorder.returned(call, KvOutput::Value(value));
                }
            }
            (Asked::Get { call, .. }, Answer::Read(Err(e))) => {
                learn(hints, region, store, self.stores, &e);
                self.counts.refuse(&e);
                self.recorder.failed(call);
            }
            (Asked::Scan { calls, .. }, Answer::Read(Err(e))) => {
                learn(hints, region, store, self.stores, &e);
                self.counts.refuse(&e);
                for (_, call) in calls {
                    self.recorder.failed(call);
                }
            }
            (_, answer) => return Err(format!("a request was answered with {answer:?}")),
        }
        Ok(acknowledged)
    }

    fn give_up(&mut self, slot: usize, flight: InFlight) {
        match flight.asked {
            Asked::Write { call, response } => {
                self.counts.unknown += 1;
                self.recorder.unknown(call);
                self.abandoned.push(Pending::Write(response));
            }
            Asked::Get { call, response } => {
                self.recorder.failed(call);
                self.abandoned.push(Pending::Read(response));
            }
            Asked::Scan {
                calls, response, ..
            } => {
                for (_, call) in calls {
                    self.recorder.failed(call);
                }
                self.abandoned.push(Pending::Read(response));
            }
        }
        // The next operation comes from a new client: the old one's may still run.
        self.slots[slot].id = self.next_id;
        self.next_id += 1;
    }

    fn value(&mut self) -> Bytes {
        let v = value_named(self.next_value);
        self.next_value += 1;
        v
    }
}

#[derive(Debug)]
enum Answer {
    Write(Result<WriteResponse, RegionError>),
    Read(Result<ReadResponse, RegionError>),
}

fn value_named(n: u64) -> Bytes {
    Bytes::from(format!("v{n}"))
}

fn command(op: op::Op) -> WriteCommand {
    WriteCommand {
        ops: vec![commandpb::Op { op: Some(op) }],
    }
}

/// Whether a write refused with `error` may still have taken effect: only when it was
/// dropped unanswered (the store stopped with it in the log, or its peer went away).
fn may_have_run(error: &RegionError) -> bool {
    matches!(
        error,
        RegionError::ProposalDropped {
            reason: DroppedReason::Unanswered,
            ..
        }
    )
}

/// What an error teaches about where the region's leader is.
/// A replica that knows no leader sends the client on to the next store, as a client
/// trying the region's peers in turn would.
fn learn(
    hints: &mut BTreeMap<RegionId, StoreId>,
    region: RegionId,
    asked: StoreId,
    stores: u64,
    error: &RegionError,
) {
    match error {
        RegionError::NotLeader {
            leader: Some(leader),
            ..
        } => {
            hints.insert(region, StoreId(leader.store_id));
        }
        RegionError::NotLeader { leader: None, .. } => {
            hints.insert(region, StoreId(asked.get() % stores.max(1) + 1));
        }
        _ => {
            hints.remove(&region);
        }
    }
}

/// A scan's pairs are in its range and in its order.
fn check_scan(
    pairs: &[(Bytes, Bytes)],
    start: &Bytes,
    end: Option<&Bytes>,
    order: ScanOrder,
) -> Result<(), String> {
    for (key, _) in pairs {
        if key < start || end.is_some_and(|e| key >= e) {
            return Err(format!(
                "a scan of {}..{} returned {}",
                keys::show(start),
                end.map_or("end".into(), |e| keys::show(e)),
                keys::show(key)
            ));
        }
    }
    let ordered = pairs.windows(2).all(|w| match order {
        ScanOrder::Forward => w[0].0 < w[1].0,
        ScanOrder::Reverse => w[0].0 > w[1].0,
    });
    if !ordered {
        return Err(format!("a {order:?} scan returned keys out of order"));
    }
    Ok(())
}

/// The store to send a request on `key` to, and its view of the key's region: the hinted
/// leader's store if it holds the region, else a random running store that does.
pub(super) fn route(
    world: &World,
    hints: &BTreeMap<RegionId, StoreId>,
    key: &[u8],
    rng: &mut Rng,
) -> Option<(StoreId, Region)> {
    let holders: Vec<(StoreId, Region)> = world
        .ids()
        .filter_map(|id| {
            let region = world.store(id)?.region_for_key(key)?;
            Some((id, region))
        })
        .collect();
    if holders.is_empty() {
        return None;
    }
    // Usually the hinted leader; sometimes anyone, so stale routes get exercised too.
    if rng.chance(97) {
        for (id, region) in &holders {
            if hints.get(&RegionId(region.id)) == Some(id) {
                return Some((*id, region.clone()));
            }
        }
    }
    holders
        .get(rng.range(0, holders.len() as u64) as usize)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn pairs(keys: &[&str]) -> Vec<(Bytes, Bytes)> {
        keys.iter().map(|k| (b(k), b("v"))).collect()
    }

    #[test]
    fn a_scan_answer_must_keep_to_its_range_and_order() {
        let (start, end) = (b("b"), b("e"));
        let forward = ScanOrder::Forward;
        let reverse = ScanOrder::Reverse;
        assert_eq!(
            check_scan(&pairs(&["b", "c"]), &start, Some(&end), forward),
            Ok(())
        );
        assert_eq!(
            check_scan(&pairs(&["d", "b"]), &start, Some(&end), reverse),
            Ok(())
        );
        assert_eq!(check_scan(&pairs(&["z"]), &start, None, forward), Ok(()));
        assert!(check_scan(&pairs(&["a"]), &start, Some(&end), forward).is_err());
        assert!(check_scan(&pairs(&["e"]), &start, Some(&end), forward).is_err());
        assert!(check_scan(&pairs(&["c", "b"]), &start, Some(&end), forward).is_err());
        assert!(check_scan(&pairs(&["b", "c"]), &start, Some(&end), reverse).is_err());
        assert!(check_scan(&pairs(&["b", "b"]), &start, Some(&end), forward).is_err());
    }

    #[test]
    fn only_a_request_dropped_unanswered_may_have_run() {
        let region = RegionId(1);
        let dropped = |reason| RegionError::ProposalDropped { region, reason };
        assert!(may_have_run(&dropped(DroppedReason::Unanswered)));
        assert!(!may_have_run(&dropped(DroppedReason::StoreStopping)));
        assert!(!may_have_run(&RegionError::StaleCommand { region }));
        assert!(!may_have_run(&RegionError::NotLeader {
            region,
            leader: None
        }));
    }

    #[test]
    fn errors_teach_where_to_go_next() {
        let region = RegionId(1);
        let mut hints = BTreeMap::new();
        let leader = crate::proto::metapb::Peer {
            id: 7,
            store_id: 2,
            role: 0,
        };
        let named = RegionError::NotLeader {
            region,
            leader: Some(leader),
        };
        learn(&mut hints, region, StoreId(1), 3, &named);
        assert_eq!(hints.get(&region), Some(&StoreId(2)));
        let unknown = RegionError::NotLeader {
            region,
            leader: None,
        };
        learn(&mut hints, region, StoreId(2), 3, &unknown);
        assert_eq!(hints.get(&region), Some(&StoreId(3)), "the next store");
        learn(&mut hints, region, StoreId(3), 3, &unknown);
        assert_eq!(hints.get(&region), Some(&StoreId(1)), "round again");
        learn(
            &mut hints,
            region,
            StoreId(1),
            3,
            &RegionError::StaleCommand { region },
        );
        assert_eq!(hints.get(&region), None);
    }
}
