//! A linearizability checker for recorded client histories, in the manner of Knossos and
//! Porcupine: the Wing & Gong search (try to linearize the earliest pending call, backtrack
//! when a return comes before its call could be placed) with Lowe's memoisation (a set of
//! linearized operations with the state it leads to is never explored twice).
//!
//! A history is a list of operations, each with its call time and either its return time
//! and output or an unknown outcome (it timed out, or its store crashed): such an
//! operation may take effect at any point after its call, or never — it is placed with a
//! return time after everything else, where taking effect is the same as never being
//! observed.
//!
//! `check_kv` checks a key-value history: operations on one key never constrain those on
//! another, so it is split per key (Porcupine's partitioning) and each key's history is
//! searched on its own.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// A sequential specification: the state before an operation, and what the operation
/// returned, decide whether it could have run there and the state after.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Input;
    /// An operation's output.
    type Output;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `input` ran on `state` and returned `output` (`None`: the output is
    /// unknown, any the specification allows), or `None` if it could not have returned
    /// that there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<O> {
    /// It returned `output` at time `at`.
    Returned {
        /// When it returned.
        at: u64,
        /// What it returned.
        output: O,
    },
    /// Nobody knows: it may have taken effect at any time after its call, or never.
    Unknown,
}

/// One client operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it (a client issues one operation at a time).
    pub client: u64,
    /// What it asked.
    pub input: I,
    /// When it was called (any clock consistent with real time: earlier events have
    /// smaller times; times are distinct).
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome<O>,
}

/// Whether the history is linearizable under `model`.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
    let n = history.len();
    if n == 0 {
        return true;
    }
    // Events in time order: each operation's call, then its return (unknown: after all).
    // Every call's return comes after it, so the list always ends with a return.
    let mut events: Vec<(u64, usize, bool)> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        events.push((op.call, i, true));
        let ret = match &op.outcome {
            Outcome::Returned { at, .. } => *at,
            Outcome::Unknown => u64::MAX,
        };
        events.push((ret, i, false));
    }
    // A call and a return at the same time: the call first (they overlap).
    events.sort_by_key(|&(t, i, is_call)| (t, !is_call, i));
    // A doubly linked list over the events, index 0 a head sentinel.
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    next[len - 1] = usize::MAX;
    let mut call_at = vec![0; n];
    let mut return_at = vec![0; n];
    for (pos, &(_, op, is_call)) in events.iter().enumerate() {
        if is_call {
            call_at[op] = pos + 1;
        } else {
            return_at[op] = pos + 1;
        }
    }
    let event = |node: usize| events[node - 1];
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = node;
        if nx != usize::MAX {
            prev[nx] = node;
        }
    };

    let mut state = model.init();
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut node = next[0];
    while next[0] != usize::MAX {
        // Never past the end: a pending call's own return follows it.
        let (_, op, is_call) = event(node);
        if is_call {
            let output = match &history[op].outcome {
                Outcome::Returned { output, .. } => Some(output),
                Outcome::Unknown => None,
            };
            if let Some(after) = model.step(&state, &history[op].input, output) {
                let mut with = linearized.clone();
                with[op / 64] |= 1 << (op % 64);
                if seen.insert((with.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    linearized = with;
                    unlink(&mut next, &mut prev, call_at[op]);
                    unlink(&mut next, &mut prev, return_at[op]);
                    node = next[0];
                    continue;
                }
            }
            node = next[node];
        } else {
            // An operation returned before it could be placed: undo the last choice.
            let Some((op, before)) = stack.pop() else {
                return false;
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, return_at[op]);
            relink(&mut next, &mut prev, call_at[op]);
            node = next[call_at[op]];
        }
    }
    true
}

/// A key-value operation's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    /// Read the key.
    Get(Bytes),
    /// Write the key.
    Put(Bytes, Bytes),
    /// Remove the key.
    Delete(Bytes),
    /// Set the key to `new` (None: remove it) if its value is `expected` (None: absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value it must have.
        expected: Option<Bytes>,
        /// The value it gets.
        new: Option<Bytes>,
    },
}

impl KvInput {
    /// The key the operation is about.
    pub fn key(&self) -> &Bytes {
        match self {
            KvInput::Get(k) | KvInput::Put(k, _) | KvInput::Delete(k) => k,
            KvInput::Cas { key, .. } => key,
        }
    }
}

/// A key-value operation's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// What a get read.
    Value(Option<Bytes>),
    /// A put or delete took effect.
    Done,
    /// A compare-and-swap found its expected value and swapped.
    Swapped,
    /// A compare-and-swap found this value instead and changed nothing.
    Mismatch(Option<Bytes>),
}

/// One key's register: its value, or absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<Bytes>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Option<Bytes> {
        None
    }

    fn step(
        &self,
        state: &Option<Bytes>,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Option<Bytes>> {
        match (input, output) {
            (KvInput::Get(_), Some(KvOutput::Value(v))) => (v == state).then(|| state.clone()),
            (KvInput::Get(_), None) => Some(state.clone()),
            (KvInput::Put(_, v), Some(KvOutput::Done) | None) => Some(Some(v.clone())),
            (KvInput::Delete(_), Some(KvOutput::Done) | None) => Some(None),
            (KvInput::Cas { expected, new, .. }, Some(KvOutput::Swapped)) => {
                (expected == state).then(|| new.clone())
            }
            (KvInput::Cas { expected, .. }, Some(KvOutput::Mismatch(found))) => {
                (expected != state && found == state).then(|| state.clone())
            }
            // Unknown: what the operation does from this state.
            (KvInput::Cas { expected, new, .. }, None) => Some(if expected == state {
                new.clone()
            } else {
                state.clone()
            }),
            _ => None,
        }
    }
}

/// A key-value history that is not linearizable: the key whose operations are not, and
/// those operations in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLinearizable {
    /// The key.
    pub key: Bytes,
    /// Its operations.
    pub operations: Vec<Operation<KvInput, KvOutput>>,
}

/// Checks a key-value history key by key (reads whose outcome is unknown constrain
/// nothing and are left out). On failure, the first key that fails.
pub fn check_kv(history: &[Operation<KvInput, KvOutput>]) -> Result<(), NotLinearizable> {
    let mut by_key: BTreeMap<&Bytes, Vec<Operation<KvInput, KvOutput>>> = BTreeMap::new();
    for op in history {
        if matches!(op.input, KvInput::Get(_)) && op.outcome == Outcome::Unknown {
            continue;
        }
        by_key.entry(op.input.key()).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.call);
        if !check(&KvModel, &ops) {
            return Err(NotLinearizable {
                key: key.clone(),
                operations: ops,
            });
        }
    }
    Ok(())
}

/// Records a history from many client threads, with a logical clock: every call and
/// return takes the next tick, so times are distinct and follow real time.
#[derive(Debug, Default)]
pub struct Recorder {
    clock: AtomicU64,
    operations: Mutex<Vec<Operation<KvInput, KvOutput>>>,
    failed: AtomicU64,
}

/// A call recorded and not yet ended.
#[derive(Debug)]
#[must_use = "end the call with `returned` or `unknown`"]
pub struct PendingCall {
    client: u64,
    input: KvInput,
    call: u64,
}

impl PendingCall {
    /// What the call asked.
    pub fn input(&self) -> &KvInput {
        &self.input
    }
}

impl Recorder {
    /// A call starts now.
    pub fn call(&self, client: u64, input: KvInput) -> PendingCall {
        PendingCall {
            client,
            input,
            call: self.clock.fetch_add(1, Ordering::SeqCst),
        }
    }

    /// The call returned `output` now.
    pub fn returned(&self, pending: PendingCall, output: KvOutput) {
        let at = self.clock.fetch_add(1, Ordering::SeqCst);
        self.push(pending, Outcome::Returned { at, output });
    }

    /// The call failed in a way that says it did not take effect: it is left out (and
    /// counted).
    pub fn failed(&self, pending: PendingCall) {
        drop(pending);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// How many calls failed without taking effect.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Nobody knows whether the call took effect (a timeout, a crash).
    pub fn unknown(&self, pending: PendingCall) {
        self.push(pending, Outcome::Unknown);
    }

    fn push(&self, pending: PendingCall, outcome: Outcome<KvOutput>) {
        let op = Operation {
            client: pending.client,
            input: pending.input,
            call: pending.call,
            outcome,
        };
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op);
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Operation<KvInput, KvOutput>> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn get(client: u64, call: u64, at: u64, v: Option<&str>) -> Operation<KvInput, KvOutput> {
        Operation {
            client,
            input: KvInput::Get(b("k")),
            call,
            outcome: Outcome::Returned {
                at,
                output: KvOutput::Value(v.map(b)),
            },
        }
    }

    fn put(client: u64, call: u64, at: Option<u64>, v: &str) -> Operation<KvInput, KvOutput> {
        Operation {
            client,
            input: KvInput::Put(b("k"), b(v)),
            call,
            outcome: match at {
                Some(at) => Outcome::Returned {
                    at,
                    output: KvOutput::Done,
                },
                None => Outcome::Unknown,
            },
        }
    }

    fn cas(
        client: u64,
        call: u64,
        at: u64,
        expected: Option<&str>,
        new: &str,
        output: KvOutput,
    ) -> Operation<KvInput, KvOutput> {
        Operation {
            client,
            input: KvInput::Cas {
                key: b("k"),
                expected: expected.map(b),
                new: Some(b(new)),
            },
            call,
            outcome: Outcome::Returned { at, output },
        }
    }

    #[test]
    fn sequential_and_overlapping_histories_that_are_linearizable() {
        assert!(check_kv(&[]).is_ok());
        // put 1, then get 1.
        assert!(check_kv(&[put(1, 0, Some(1), "1"), get(2, 2, 3, Some("1"))]).is_ok());
        // A get overlapping a put may see either value.
        assert!(check_kv(&[put(1, 0, Some(3), "1"), get(2, 1, 2, None)]).is_ok());
        assert!(check_kv(&[put(1, 0, Some(3), "1"), get(2, 1, 2, Some("1"))]).is_ok());
        // Two overlapping puts, then reads agree on the one that came last.
        let h = [
            put(1, 0, Some(3), "1"),
            put(2, 1, Some(2), "2"),
            get(3, 4, 5, Some("1")),
            get(3, 6, 7, Some("1")),
        ];
        assert!(check_kv(&h).is_ok());
    }

    #[test]
    fn histories_that_are_not_linearizable() {
        // A stale read: the put completed before the get began.
        assert!(check_kv(&[put(1, 0, Some(1), "1"), get(2, 2, 3, None)]).is_err());
        // A read of a value nobody wrote.
        assert!(check_kv(&[get(1, 0, 1, Some("x"))]).is_err());
        // Reads flip-flop: after seeing 2 the key cannot go back to 1 with no write.
        let h = [
            put(1, 0, Some(5), "1"),
            put(2, 1, Some(4), "2"),
            get(3, 6, 7, Some("2")),
            get(3, 8, 9, Some("1")),
        ];
        let err = check_kv(&h).unwrap_err();
        assert_eq!(err.key, b("k"));
        assert_eq!(err.operations.len(), 4);
        // Two CAS from the same expected value both swapped: a lost update.
        let h = [
            put(1, 0, Some(1), "0"),
            cas(1, 2, 5, Some("0"), "a", KvOutput::Swapped),
            cas(2, 3, 4, Some("0"), "b", KvOutput::Swapped),
        ];
        assert!(check_kv(&h).is_err());
        // A mismatch must report the value it found.
        let h = [
            put(1, 0, Some(1), "0"),
            cas(2, 2, 3, Some("z"), "a", KvOutput::Mismatch(Some(b("9")))),
        ];
        assert!(check_kv(&h).is_err());
    }

    #[test]
    fn an_unknown_outcome_may_take_effect_late_or_never() {
        // A put that timed out and is seen afterwards: it took effect.
        let h = [put(1, 0, None, "1"), get(2, 5, 6, Some("1"))];
        assert!(check_kv(&h).is_ok());
        // ... or never.
        let h = [put(1, 0, None, "1"), get(2, 5, 6, None)];
        assert!(check_kv(&h).is_ok());
        // Seen, then unseen: once it took effect it stays (no other write).
        let h = [
            put(1, 0, None, "1"),
            get(2, 5, 6, Some("1")),
            get(2, 7, 8, None),
        ];
        assert!(check_kv(&h).is_err());
        // It cannot take effect before its call.
        let h = [get(2, 0, 1, Some("1")), put(1, 2, None, "1")];
        assert!(check_kv(&h).is_err());
        // A read whose outcome is unknown constrains nothing.
        let unknown_get = Operation {
            client: 3,
            input: KvInput::Get(b("k")),
            call: 0,
            outcome: Outcome::Unknown,
        };
        assert!(check_kv(&[unknown_get, put(1, 1, Some(2), "1")]).is_ok());
    }

    #[test]
    fn keys_are_checked_apart() {
        let other = Operation {
            client: 9,
            input: KvInput::Put(b("other"), b("x")),
            call: 0,
            outcome: Outcome::Returned {
                at: 100,
                output: KvOutput::Done,
            },
        };
        // The write to "other" overlaps everything; "k"'s history alone is judged.
        let h = [
            other.clone(),
            put(1, 1, Some(2), "1"),
            get(2, 3, 4, Some("1")),
        ];
        assert!(check_kv(&h).is_ok());
        let h = [other, put(1, 1, Some(2), "1"), get(2, 3, 4, None)];
        assert!(check_kv(&h).is_err());
    }

    /// Many overlapping writes and reads: the memoisation keeps the search small.
    #[test]
    fn a_large_concurrent_history_is_checked_quickly() {
        let mut rng = crate::testkit::Rng::new(7);
        let mut h = Vec::new();
        let mut t = 0;
        let mut value: Option<String> = None;
        // Eight clients; each round all call, the writes apply in a random order, all
        // return; reads see the value before or after the round's writes.
        for round in 0..150 {
            let start = t;
            t += 10;
            let writer = rng.range(0, 8);
            let before = value.clone();
            let v = format!("{round}");
            for c in 0..8 {
                if c == writer {
                    h.push(put(c, start + c, Some(t + c), &v));
                } else {
                    let seen = if rng.chance(50) {
                        before.as_deref()
                    } else {
                        Some(v.as_str())
                    };
                    h.push(get(c, start + c, t + c, seen));
                }
            }
            value = Some(v);
            t += 10;
        }
        assert!(check_kv(&h).is_ok());
    }

    #[test]
    fn the_recorder_orders_events_and_keeps_what_it_is_told() {
        let r = Recorder::default();
        let a = r.call(1, KvInput::Put(b("k"), b("1")));
        let g = r.call(2, KvInput::Get(b("k")));
        r.returned(a, KvOutput::Done);
        r.unknown(g);
        let f = r.call(3, KvInput::Delete(b("k")));
        r.failed(f);
        let h = r.history();
        assert_eq!(h.len(), 2);
        assert_eq!(r.failures(), 1);
        assert_eq!(h[0].call, 0);
        assert_eq!(
            h[0].outcome,
            Outcome::Returned {
                at: 2,
                output: KvOutput::Done
            }
        );
        assert_eq!(h[1].outcome, Outcome::Unknown);
    }

    /// The definition itself, for small histories: some order of the operations that
    /// respects real time (an operation that returned before another was called comes
    /// first; one of unknown outcome may also be left out) runs on the model with every
    /// known output.
    fn brute_force(h: &[Operation<KvInput, KvOutput>]) -> bool {
        fn returned(op: &Operation<KvInput, KvOutput>) -> Option<u64> {
            match op.outcome {
                Outcome::Returned { at, .. } => Some(at),
                Outcome::Unknown => None,
            }
        }
        fn search(
            h: &[Operation<KvInput, KvOutput>],
            used: &mut Vec<bool>,
            state: &Option<Bytes>,
        ) -> bool {
            let pending: Vec<usize> = (0..h.len()).filter(|&i| !used[i]).collect();
            // Done when what is left may all be left out.
            if pending.iter().all(|&i| returned(&h[i]).is_none()) {
                return true;
            }
            for &i in &pending {
                // Next only if no pending operation returned before it was called.
                if pending
                    .iter()
                    .any(|&j| returned(&h[j]).is_some_and(|at| at < h[i].call))
                {
                    continue;
                }
                let output = match &h[i].outcome {
                    Outcome::Returned { output, .. } => Some(output),
                    Outcome::Unknown => None,
                };
                if let Some(after) = KvModel.step(state, &h[i].input, output) {
                    used[i] = true;
                    if search(h, used, &after) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        search(h, &mut vec![false; h.len()], &None)
    }

    /// Random small histories on one key: the search agrees with the definition.
    #[test]
    fn the_search_agrees_with_the_definition_on_random_histories() {
        let values = [None, Some(b("1")), Some(b("2"))];
        let mut verdicts = [0; 2];
        for seed in 0..3000 {
            let mut rng = crate::testkit::Rng::new(seed);
            let n = rng.range(1, 7) as usize;
            let mut times: Vec<u64> = (0..2 * n as u64).collect();
            // Shuffle the event times, then give each operation a call before its return.
            for i in (1..times.len()).rev() {
                times.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
            let pick = |rng: &mut crate::testkit::Rng| values[rng.range(0, 3) as usize].clone();
            let h: Vec<_> = (0..n)
                .map(|i| {
                    let (a, z) = (times[2 * i], times[2 * i + 1]);
                    let (call, at) = (a.min(z), a.max(z));
                    let (input, output) = match rng.range(0, 4) {
                        0 => (KvInput::Get(b("k")), KvOutput::Value(pick(&mut rng))),
                        1 => match pick(&mut rng) {
                            Some(v) => (KvInput::Put(b("k"), v), KvOutput::Done),
                            None => (KvInput::Delete(b("k")), KvOutput::Done),
                        },
                        _ => {
                            let input = KvInput::Cas {
                                key: b("k"),
                                expected: pick(&mut rng),
                                new: pick(&mut rng),
                            };
                            let output = if rng.chance(50) {
                                KvOutput::Swapped
                            } else {
                                KvOutput::Mismatch(pick(&mut rng))
                            };
                            (input, output)
                        }
                    };
                    let outcome = if rng.chance(20) {
                        Outcome::Unknown
                    } else {
                        Outcome::Returned { at, output }
                    };
                    Operation {
                        client: i as u64,
                        input,
                        call,
                        outcome,
                    }
                })
                .collect();
            let expected = brute_force(&h);
            // Unknown reads are left out by check_kv; the definition allows leaving them
            // out too, so both see the same history.
            assert_eq!(check_kv(&h).is_ok(), expected, "seed {seed}: {h:#?}");
            verdicts[usize::from(expected)] += 1;
        }
        assert!(verdicts[0] > 300 && verdicts[1] > 300, "{verdicts:?}");
    }

    /// A return and a call at the same time overlap: the call may come first.
    #[test]
    fn a_call_at_the_time_of_a_return_overlaps_it() {
        assert!(check_kv(&[put(1, 0, Some(5), "1"), get(2, 5, 6, None)]).is_ok());
    }

    /// The key's register, case by case: the brute-force comparison shares the model, so
    /// the model is checked on its own.
    #[test]
    fn the_register_model_step_by_step() {
        let m = KvModel;
        let (one, two) = (Some(b("1")), Some(b("2")));
        let k = || b("k");
        let step = |state: &Option<Bytes>, input: KvInput, output: Option<KvOutput>| {
            m.step(state, &input, output.as_ref())
        };
        // Reads.
        assert_eq!(
            step(&one, KvInput::Get(k()), Some(KvOutput::Value(one.clone()))),
            Some(one.clone())
        );
        assert_eq!(
            step(&one, KvInput::Get(k()), Some(KvOutput::Value(None))),
            None
        );
        assert_eq!(step(&one, KvInput::Get(k()), None), Some(one.clone()));
        // Writes, known or not.
        assert_eq!(
            step(&None, KvInput::Put(k(), b("2")), Some(KvOutput::Done)),
            Some(two.clone())
        );
        assert_eq!(
            step(&None, KvInput::Put(k(), b("2")), None),
            Some(two.clone())
        );
        assert_eq!(
            step(&one, KvInput::Delete(k()), Some(KvOutput::Done)),
            Some(None)
        );
        assert_eq!(
            step(&one, KvInput::Put(k(), b("2")), Some(KvOutput::Swapped)),
            None
        );
        // Compare-and-swap.
        let cas = |expected: &Option<Bytes>| KvInput::Cas {
            key: k(),
            expected: expected.clone(),
            new: two.clone(),
        };
        assert_eq!(
            step(&one, cas(&one), Some(KvOutput::Swapped)),
            Some(two.clone())
        );
        assert_eq!(step(&one, cas(&None), Some(KvOutput::Swapped)), None);
        assert_eq!(
            step(&one, cas(&None), Some(KvOutput::Mismatch(one.clone()))),
            Some(one.clone())
        );
        assert_eq!(
            step(&one, cas(&None), Some(KvOutput::Mismatch(None))),
            None,
            "wrong value found"
        );
        assert_eq!(
            step(&one, cas(&one), Some(KvOutput::Mismatch(one.clone()))),
            None,
            "it matched"
        );
        assert_eq!(step(&one, cas(&one), None), Some(two.clone()));
        assert_eq!(step(&one, cas(&None), None), Some(one.clone()));
        assert_eq!(step(&one, cas(&one), Some(KvOutput::Done)), None);
    }

    /// `check` takes unknown reads too (only `check_kv` leaves them out).
    #[test]
    fn an_unknown_read_constrains_nothing_in_check_itself() {
        let unknown_get = Operation {
            client: 3,
            input: KvInput::Get(b("k")),
            call: 0,
            outcome: Outcome::Unknown,
        };
        assert!(check(&KvModel, &[unknown_get, put(1, 1, Some(2), "1")]));
    }
}
