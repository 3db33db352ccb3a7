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
                let expected = cas_expected(rng, self.next_value);
                let new = cas_writes_new(rng).then(|| self.value());
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
                let calls = scanned_keys(&self.keys, &start, end.as_ref(), &region.end_key)
                    .into_iter()
                    .map(|k| {
                        let call = self.recorder.call(client, KvInput::Get(k.clone()));
                        (k, call)
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

/// The clients' keys a scan from `start` to `end` (None: the region's end) reads, in a
/// region ending at `region_end` (empty: the end of the space).
fn scanned_keys(
    keys: &[Bytes],
    start: &Bytes,
    end: Option<&Bytes>,
    region_end: &[u8],
) -> Vec<Bytes> {
    keys.iter()
        .filter(|k| {
            *k >= start
                && end.is_none_or(|e| *k < e)
                && (region_end.is_empty() || k.as_ref() < region_end)
        })
        .cloned()
        .collect()
}

/// What a CAS expects: absence a third of the time, else one of the `values_used` values
/// some write used (so some swaps succeed), or absence while none was.
fn cas_expected(rng: &mut Rng, values_used: u64) -> Option<Bytes> {
    let absent = rng.range(0, 3) == 0;
    (!absent && values_used > 0).then(|| value_named(rng.range(0, values_used)))
}

/// Whether a CAS writes a new value (nine in ten) rather than deleting the key.
fn cas_writes_new(rng: &mut Rng) -> bool {
    !rng.chance(10)
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
    use crate::store::{Responder, response_channel};

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
        assert!(check_scan(&pairs(&["c", "c"]), &start, Some(&end), reverse).is_err());
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
    fn operations_are_drawn_in_their_shares() {
        let mut rng = Rng::new(5);
        let mut drawn: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..10_000 {
            *drawn
                .entry(format!("{:?}", OpKind::draw(&mut rng)))
                .or_default() += 1;
        }
        // Per mille: gets 30 %, puts 30 %, deletes 10 %, CAS 20 %, scans 10 %.
        for (kind, share) in [
            ("Get", 300),
            ("Put", 300),
            ("Delete", 100),
            ("Cas", 200),
            ("Scan", 100),
        ] {
            let n = drawn.get(kind).copied().unwrap_or(0) / 10;
            assert!(n.abs_diff(share) <= 20, "{kind}: {n} per mille, {drawn:?}");
        }
    }

    /// Puts `asked` in flight on client `slot` since step `since`, to region 1 on store 2.
    fn fly(
        clients: &mut Clients,
        slot: usize,
        key: &str,
        kind: OpKind,
        since: usize,
        asked: Asked,
    ) {
        clients.slots[slot].in_flight = Some(InFlight {
            key: b(key),
            kind,
            region: RegionId(1),
            store: StoreId(2),
            since,
            asked,
        });
    }

    /// A put of `key` in flight on client `slot` since step `since`; its responder.
    fn put_in_flight(
        clients: &mut Clients,
        slot: usize,
        key: &str,
        since: usize,
    ) -> Responder<WriteResponse> {
        let (responder, response) = response_channel::<WriteResponse>(RegionId(1));
        let call = clients
            .recorder
            .call(clients.slots[slot].id, KvInput::Put(b(key), b("v")));
        fly(
            clients,
            slot,
            key,
            OpKind::Put,
            since,
            Asked::Write { call, response },
        );
        responder
    }

    /// A get of `key` in flight on client `slot`; its responder.
    fn get_in_flight(clients: &mut Clients, slot: usize, key: &str) -> Responder<ReadResponse> {
        let (responder, response) = response_channel::<ReadResponse>(RegionId(1));
        let call = clients
            .recorder
            .call(clients.slots[slot].id, KvInput::Get(b(key)));
        fly(
            clients,
            slot,
            key,
            OpKind::Get,
            0,
            Asked::Get { call, response },
        );
        responder
    }

    /// A scan from `key` to the end in flight on client `slot`, reading `keys`.
    fn scan_in_flight(
        clients: &mut Clients,
        slot: usize,
        key: &str,
        keys: &[&str],
    ) -> Responder<ReadResponse> {
        let (responder, response) = response_channel::<ReadResponse>(RegionId(1));
        let client = clients.slots[slot].id;
        let calls = keys
            .iter()
            .map(|k| (b(k), clients.recorder.call(client, KvInput::Get(b(k)))))
            .collect();
        let asked = Asked::Scan {
            calls,
            start: b(key),
            end: None,
            order: ScanOrder::Forward,
            response,
        };
        fly(clients, slot, key, OpKind::Scan, 0, asked);
        responder
    }

    #[test]
    fn answers_are_counted_recorded_and_teach_the_leader() {
        let region = RegionId(1);
        let stale = || RegionError::StaleCommand { region };
        let mut clients = Clients::new(6, 3, vec![b("a"), b("b")], 100);
        let mut hints = BTreeMap::new();
        put_in_flight(&mut clients, 0, "a", 0).respond(Ok(WriteResponse {
            index: 5,
            outcomes: vec![OpOutcome::Done],
        }));
        get_in_flight(&mut clients, 1, "a").respond(Ok(ReadResponse::Value(Some(b("v")))));
        scan_in_flight(&mut clients, 2, "a", &["a", "b"])
            .respond(Ok(ReadResponse::Pairs(pairs(&["a"]))));
        put_in_flight(&mut clients, 3, "b", 0).respond(Err(stale()));
        get_in_flight(&mut clients, 4, "b").respond(Err(stale()));
        scan_in_flight(&mut clients, 5, "b", &["b"]).respond(Err(stale()));
        let done = clients
            .poll(&mut hints, 1)
            .expect("answers a store may give");
        assert_eq!(
            done,
            vec![
                (b("a"), OpKind::Put),
                (b("a"), OpKind::Get),
                (b("a"), OpKind::Scan)
            ]
        );
        let counts = clients.counts();
        assert_eq!(
            (counts.acknowledged, counts.refused, counts.unknown),
            (3, 3, 0)
        );
        assert_eq!(counts.refusals.get("stale_command"), Some(&3));
        assert_eq!(hints.get(&region), None, "a refusal forgets the hint");
        assert_eq!(clients.unanswered(), 0);
        // Acknowledged: the put, the get, the scan's two keys.
        assert_eq!(clients.check(), Ok(4));
        // A write dropped unanswered may have run.
        let dropped = put_in_flight(&mut clients, 0, "b", 1);
        drop(dropped);
        assert_eq!(clients.poll(&mut hints, 2), Ok(Vec::new()));
        assert_eq!(clients.counts().unknown, 1);
        // A success teaches where the leader is.
        get_in_flight(&mut clients, 0, "a").respond(Ok(ReadResponse::Value(Some(b("v")))));
        assert_eq!(clients.poll(&mut hints, 3).map(|d| d.len()), Ok(1));
        assert_eq!(hints.get(&region), Some(&StoreId(2)));
        // A read of a value no write gave is caught by the check.
        get_in_flight(&mut clients, 0, "b").respond(Ok(ReadResponse::Value(Some(b("v9")))));
        assert_eq!(clients.poll(&mut hints, 4).map(|d| d.len()), Ok(1));
        assert!(clients.check().is_err(), "b never held v9");
    }

    #[test]
    fn a_client_with_an_operation_in_flight_is_not_idle() {
        let keys = vec![b("j"), b("k")];
        let mut clients = Clients::new(1, 3, keys.clone(), 10);
        assert_eq!(clients.keys(), keys.as_slice());
        assert!(clients.has_idle());
        assert!(clients.in_flight_keys().is_empty());
        let _responder = put_in_flight(&mut clients, 0, "k", 0);
        assert!(!clients.has_idle());
        assert_eq!(clients.in_flight_keys(), BTreeSet::from([b("k")]));
    }

    #[test]
    fn a_client_gives_up_after_its_patience_and_the_answer_is_still_awaited() {
        let mut clients = Clients::new(1, 3, vec![b("k")], 5);
        let responder = put_in_flight(&mut clients, 0, "k", 10);
        let mut hints = BTreeMap::new();
        assert_eq!(clients.poll(&mut hints, 15), Ok(Vec::new()));
        assert!(!clients.has_idle(), "still within its patience");
        assert_eq!(clients.poll(&mut hints, 16), Ok(Vec::new()));
        assert!(clients.has_idle(), "gave up");
        assert_eq!(clients.counts().unknown, 1, "a write's outcome is unknown");
        assert_ne!(
            clients.slots[0].id, 0,
            "the next operation comes from a new client"
        );
        assert_eq!(clients.unanswered(), 1, "its answer must still come");
        let _next = put_in_flight(&mut clients, 0, "k", 16);
        assert_eq!(clients.unanswered(), 2, "given up on, and in flight");
        responder.respond(Err(RegionError::StaleCommand {
            region: RegionId(1),
        }));
        assert_eq!(clients.poll(&mut hints, 17), Ok(Vec::new()));
        assert!(
            clients.abandoned.is_empty(),
            "an answer that came is let go"
        );
        assert_eq!(clients.unanswered(), 1);
        // Each client that gives up leaves a new identity behind.
        assert_eq!(clients.slots[0].id, 1);
        assert_eq!(clients.poll(&mut hints, 22), Ok(Vec::new()));
        assert_eq!(clients.slots[0].id, 2);
        assert_eq!(clients.counts().unknown, 2);
    }

    #[test]
    fn every_write_writes_a_value_of_its_own() {
        let mut clients = Clients::new(1, 3, vec![b("k")], 5);
        let values: Vec<Bytes> = (0..3).map(|_| clients.value()).collect();
        assert_eq!(values, vec![b("v0"), b("v1"), b("v2")]);
        assert_eq!(value_named(7), b("v7"));
    }

    #[test]
    fn a_scan_reads_the_keys_of_its_range_within_its_region() {
        let keys: Vec<Bytes> = ["a", "c", "e", "g"].into_iter().map(b).collect();
        let scanned = |start: &str, end: Option<&str>, region_end: &str| {
            scanned_keys(&keys, &b(start), end.map(b).as_ref(), region_end.as_bytes())
        };
        assert_eq!(scanned("c", None, ""), vec![b("c"), b("e"), b("g")]);
        assert_eq!(
            scanned("b", Some("e"), ""),
            vec![b("c")],
            "the end is excluded"
        );
        assert_eq!(
            scanned("a", None, "e"),
            vec![b("a"), b("c")],
            "the region's end too"
        );
        assert_eq!(scanned("a", Some("f"), "e"), vec![b("a"), b("c")]);
        assert_eq!(scanned("d", Some("z"), "g"), vec![b("e")]);
    }

    #[test]
    fn a_cas_expects_absence_or_a_value_written_and_mostly_writes() {
        let mut rng = Rng::new(3);
        assert!((0..100).all(|_| cas_expected(&mut rng, 0).is_none()));
        let expected: Vec<Option<Bytes>> = (0..3_000).map(|_| cas_expected(&mut rng, 4)).collect();
        let absent = expected.iter().filter(|e| e.is_none()).count();
        assert!((800..1_200).contains(&absent), "{absent} of 3,000 absent");
        let named: BTreeSet<&Bytes> = expected.iter().flatten().collect();
        let used: Vec<Bytes> = (0..4).map(value_named).collect();
        assert_eq!(named, used.iter().collect(), "every value used, no other");
        let writes = (0..3_000).filter(|_| cas_writes_new(&mut rng)).count();
        assert!((2_600..2_800).contains(&writes), "{writes} of 3,000 write");
    }

    #[test]
    fn refusals_are_counted_by_kind_and_counts_add_up() {
        let region = RegionId(1);
        let mut one = ClientCounts::default();
        one.refuse(&RegionError::StaleCommand { region });
        one.refuse(&RegionError::StaleCommand { region });
        one.refuse(&RegionError::RegionNotFound { region });
        one.acknowledged = 4;
        one.unknown = 1;
        assert_eq!(one.refused, 3);
        assert_eq!(one.refusals.get("stale_command"), Some(&2));
        assert_eq!(one.refusals.get("region_not_found"), Some(&1));
        let mut total = one.clone();
        total.add(&one);
        assert_eq!(
            (total.acknowledged, total.refused, total.unknown),
            (8, 6, 2)
        );
        assert_eq!(total.refusals.get("stale_command"), Some(&4));
        assert_eq!(total.refusals.get("region_not_found"), Some(&2));
    }

    #[test]
    fn a_pending_request_is_answered_once_its_answer_comes() {
        let (responder, response) = response_channel::<WriteResponse>(RegionId(1));
        let mut pending = Pending::Write(response);
        assert!(!pending.answered());
        responder.respond(Err(RegionError::StaleCommand {
            region: RegionId(1),
        }));
        assert!(pending.answered());
        let (responder, response) = response_channel::<ReadResponse>(RegionId(1));
        let mut pending = Pending::Read(response);
        assert!(!pending.answered());
        drop(responder);
        assert!(pending.answered(), "dropped unanswered is an answer too");
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
