//! Evaluating a write command at apply: each operation checked against the region (range,
//! key and value limits) and turned into KV writes, CompareAndSwap decided against the
//! applied state. Every replica evaluates the same command against the same state, so
//! they all decide the same.
//!
//! An apply round writes many entries in one batch that is not in the engine yet, so a
//! read made during the round (a CompareAndSwap) looks at the round's own writes first:
//! the `Overlay`.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::proto::commandpb::{CompareAndSwap, Op, WriteCommand, op};
use crate::proto::metapb::Region;
use crate::region::{RegionError, check_key, check_range};
use crate::storage::kv::{self, Keyspace, KvError, KvRead, KvWriteBatch, WriteOp};
use crate::storage::region_meta::end_bound;

/// The writes of the current round not yet in the engine, as reads must see them: an
/// index of the round's batch, built only when a read (a CompareAndSwap) asks, so a round
/// of plain writes never builds it.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Keys written this round: Some(value) put, None deleted.
    keys: BTreeMap<Bytes, Option<Bytes>>,
    /// Ranges deleted this round, `[start, end)` (None: unbounded), for keys not written
    /// after the deletion.
    deleted: Vec<(Bytes, Option<Bytes>)>,
    /// How many of the batch's operations `keys` and `deleted` hold. The batch is only
    /// appended to until it is written, and then the overlay is cleared with it.
    indexed: usize,
}

impl Overlay {
    /// The key's value as the round's `batch` leaves it.
    pub fn get(
        &mut self,
        batch: &KvWriteBatch,
        kv: &(impl KvRead + ?Sized),
        key: &[u8],
    ) -> Result<Option<Bytes>, KvError> {
        self.catch_up(batch);
        if let Some(v) = self.keys.get(key) {
            return Ok(v.clone());
        }
        let in_deleted = self
            .deleted
            .iter()
            .any(|(s, e)| in_range(key, s, e.as_deref()));
        if in_deleted {
            return Ok(None);
        }
        kv.get(Keyspace::Data, key)
    }

    /// Indexes the data writes `batch` gained since the last look.
    fn catch_up(&mut self, batch: &KvWriteBatch) {
        debug_assert!(
            self.indexed <= batch.len(),
            "the overlay outlived its batch"
        );
        for op in batch.ops().iter().skip(self.indexed) {
            match op {
                WriteOp::Put {
                    ks: Keyspace::Data,
                    key,
                    value,
                } => {
                    self.keys.insert(key.clone(), Some(value.clone()));
                }
                WriteOp::Delete {
                    ks: Keyspace::Data,
                    key,
                } => {
                    self.keys.insert(key.clone(), None);
                }
                WriteOp::DeleteRange {
                    ks: Keyspace::Data,
                    start,
                    end,
                } => self.forget_range(start.clone(), end.clone()),
                _ => {}
            }
        }
        self.indexed = batch.len();
    }

    /// A range the round deletes outside `batch` (in bounded batches of its own), after
    /// the writes `batch` holds so far.
    fn delete_range(&mut self, batch: &KvWriteBatch, start: Bytes, end: Option<Bytes>) {
        self.catch_up(batch);
        self.forget_range(start, end);
    }

    fn forget_range(&mut self, start: Bytes, end: Option<Bytes>) {
        self.keys
            .retain(|k, _| !in_range(k, &start, end.as_deref()));
        self.deleted.push((start, end));
    }

    /// Forgets the round (its batch reached the engine).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.deleted.clear();
        self.indexed = 0;
    }

    /// Whether the round has deleted nothing outside its batch, nor indexed any of it.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.deleted.is_empty()
    }
}

/// Whether `key` lies in `[start, end)` (`end` None: unbounded).
fn in_range(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|e| key < e)
}

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// A put, delete or range delete, done.
    Done,
    /// A CompareAndSwap whose expectation held: the new value is in place.
    Swapped,
    /// A CompareAndSwap whose expectation failed; nothing changed. The value it found.
    Mismatch {
        /// The key's value at apply (None: absent).
        current: Option<Bytes>,
    },
}

/// Why a command was refused at apply (nothing of it is written).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The command does not fit the region (a key outside it, an empty or oversized key
    /// or value).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A key or value the engine refuses.
    #[error("invalid operation: {0}")]
    Invalid(KvError),
    /// Reading the applied state failed.
    #[error("reading the applied state: {0}")]
    Read(KvError),
    /// An operation with no body.
    #[error("an operation with nothing in it")]
    Empty,
    /// A DeleteRange whose end is before its start.
    #[error("a range delete whose end is before its start")]
    InvertedRange,
}

impl EvalError {
    /// What the proposer is told. A failed read of the applied state is the engine's
    /// failure, not the request's: it comes back as the `KvError` (the store stops).
    pub fn into_region_error(self) -> Result<RegionError, KvError> {
        let invalid = |reason: String| Ok(RegionError::InvalidRequest { reason });
        match self {
            EvalError::Region(e) => Ok(e),
            EvalError::Read(e) => Err(e),
            e @ (EvalError::Invalid(_) | EvalError::Empty | EvalError::InvertedRange) => {
                invalid(e.to_string())
            }
        }
    }
}

/// Where a range delete in a command splits its evaluation: the writes before it must
/// reach the engine before the range is cleared in bounded batches, then the rest follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDelete {
    /// The range's start.
    pub start: Bytes,
    /// Its end (None: to the keyspace's end, for a region without an end key).
    pub end: Option<Bytes>,
}

/// Checks every operation of the command against the region without evaluating any:
/// a command is refused whole or not at all.
pub fn check_command(cmd: &WriteCommand, region: &Region) -> Result<(), EvalError> {
    for o in &cmd.ops {
        // Not `ok_or(EvalError::Empty)?`: an error built eagerly is dropped (a call to its
        // drop glue) on every operation.
        let Some(body) = o.op.as_ref() else {
            return Err(EvalError::Empty);
        };
        match body {
            op::Op::Put(p) => {
                check_data_key(&p.key, region)?;
                kv::check_value(&p.value).map_err(EvalError::Invalid)?;
            }
            op::Op::Delete(d) => check_data_key(&d.key, region)?,
            op::Op::DeleteRange(r) => {
                let (start, end) = range_of(&r.start_key, &r.end_key, region);
                if end.as_ref().is_some_and(|e| *e < start) {
                    return Err(EvalError::InvertedRange);
                }
                check_range(&start, end.as_deref(), region)?;
            }
            op::Op::CompareAndSwap(c) => {
                check_data_key(&c.key, region)?;
                if let Some(v) = &c.new_value {
                    kv::check_value(v).map_err(EvalError::Invalid)?;
                }
            }
        }
    }
    Ok(())
}

fn check_data_key(key: &[u8], region: &Region) -> Result<(), EvalError> {
    kv::check_key(Keyspace::Data, key).map_err(EvalError::Invalid)?;
    check_key(key, region)?;
    Ok(())
}

/// A DeleteRange's bounds: an empty start is the region's start, an empty end its end.
fn range_of(start: &[u8], end: &[u8], region: &Region) -> (Bytes, Option<Bytes>) {
    let start = if start.is_empty() {
        Bytes::copy_from_slice(&region.start_key)
    } else {
        Bytes::copy_from_slice(start)
    };
    let end = if end.is_empty() {
        end_bound(region).map(Bytes::copy_from_slice)
    } else {
        Some(Bytes::copy_from_slice(end))
    };
    (start, end)
}

/// Evaluates operations `ops[from..]` of a checked command into `batch`, stopping after a
/// DeleteRange (returned, with the index to resume from): the caller writes the batch,
/// clears the range in bounded batches, and calls again. Outcomes are appended to
/// `outcomes`. A put's or delete's key and value move into the batch (no copy, no count
/// taken): what is left of an evaluated operation is not to be read again.
pub fn evaluate(
    ops: &mut [Op],
    from: usize,
    region: &Region,
    kv: &(impl KvRead + ?Sized),
    overlay: &mut Overlay,
    batch: &mut KvWriteBatch,
    outcomes: &mut Vec<OpOutcome>,
) -> Result<Option<(RangeDelete, usize)>, EvalError> {
    for (at, o) in ops.iter_mut().enumerate().skip(from) {
        let Some(body) = o.op.as_mut() else {
            return Err(EvalError::Empty);
        };
        match body {
            op::Op::Put(p) => {
                let (key, value) = (std::mem::take(&mut p.key), std::mem::take(&mut p.value));
                batch.put(Keyspace::Data, key, value);
                outcomes.push(OpOutcome::Done);
            }
            op::Op::Delete(d) => {
                batch.delete(Keyspace::Data, std::mem::take(&mut d.key));
                outcomes.push(OpOutcome::Done);
            }
            op::Op::DeleteRange(r) => {
                let (start, end) = range_of(&r.start_key, &r.end_key, region);
                overlay.delete_range(batch, start.clone(), end.clone());
                outcomes.push(OpOutcome::Done);
                return Ok(Some((RangeDelete { start, end }, at + 1)));
            }
            op::Op::CompareAndSwap(c) => {
                let outcome = compare_and_swap(c, kv, overlay, batch)?;
                outcomes.push(outcome);
            }
        }
    }
    Ok(None)
}

fn compare_and_swap(
    c: &CompareAndSwap,
    kv: &(impl KvRead + ?Sized),
    overlay: &mut Overlay,
    batch: &mut KvWriteBatch,
) -> Result<OpOutcome, EvalError> {
    let current = overlay.get(batch, kv, &c.key).map_err(EvalError::Read)?;
    if current.as_deref() != c.expected.as_deref() {
        return Ok(OpOutcome::Mismatch { current });
    }
    match &c.new_value {
        Some(v) => batch.put(Keyspace::Data, c.key.clone(), v.clone()),
        None => batch.delete(Keyspace::Data, c.key.clone()),
    }
    Ok(OpOutcome::Swapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::commandpb::{Delete, DeleteRange, Put};
    use crate::storage::kv::KvEngine;
    use crate::storage::mem_kv::MemKvEngine;

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
            ..Default::default()
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op {
            op: Some(op::Op::Put(Put {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
            })),
        }
    }

    fn delete(k: &str) -> Op {
        Op {
            op: Some(op::Op::Delete(Delete {
                key: Bytes::copy_from_slice(k.as_bytes()),
            })),
        }
    }

    fn delete_range(s: &str, e: &str) -> Op {
        Op {
            op: Some(op::Op::DeleteRange(DeleteRange {
                start_key: Bytes::copy_from_slice(s.as_bytes()),
                end_key: Bytes::copy_from_slice(e.as_bytes()),
            })),
        }
    }

    fn cas(k: &str, expected: Option<&str>, new: Option<&str>) -> Op {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        Op {
            op: Some(op::Op::CompareAndSwap(CompareAndSwap {
                key: b(k),
                expected: expected.map(b),
                new_value: new.map(b),
            })),
        }
    }

    fn engine_with(pairs: &[(&str, &str)]) -> MemKvEngine {
        let kv = MemKvEngine::new();
        let mut batch = KvWriteBatch::default();
        for (k, v) in pairs {
            batch.put(Keyspace::Data, k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        kv.write(&batch).unwrap();
        kv
    }

    /// Evaluates the whole command the way the apply loop does, writing at each range
    /// delete; returns the outcomes.
    fn run(kv: &MemKvEngine, ops: &[Op]) -> Vec<OpOutcome> {
        let (mut overlay, mut batch, mut outcomes) =
            (Overlay::default(), KvWriteBatch::default(), Vec::new());
        let mut from = 0;
        // One copy for every call, as the apply loop evaluates one decoded command.
        let mut ops = ops.to_vec();
        while let Some((range, next)) = evaluate(
            &mut ops,
            from,
            &region(),
            kv,
            &mut overlay,
            &mut batch,
            &mut outcomes,
        )
        .unwrap()
        {
            kv.write(&std::mem::take(&mut batch)).unwrap();
            let mut clear = KvWriteBatch::default();
            clear.delete_range(Keyspace::Data, range.start, range.end);
            kv.write(&clear).unwrap();
            overlay.clear();
            from = next;
        }
        kv.write(&batch).unwrap();
        outcomes
    }

    fn value(kv: &MemKvEngine, k: &str) -> Option<String> {
        kv.get(Keyspace::Data, k.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn a_compare_and_swap_sees_the_writes_earlier_in_its_round() {
        let kv = engine_with(&[("c", "old")]);
        let outcomes = run(
            &kv,
            &[
                put("c", "new"),
                cas("c", Some("old"), Some("x")),
                cas("c", Some("new"), Some("y")),
                delete("c"),
                cas("c", None, Some("z")),
            ],
        );
        assert_eq!(
            outcomes,
            vec![
                OpOutcome::Done,
                OpOutcome::Mismatch {
                    current: Some(Bytes::from_static(b"new"))
                },
                OpOutcome::Swapped,
                OpOutcome::Done,
                OpOutcome::Swapped,
            ]
        );
        assert_eq!(value(&kv, "c").as_deref(), Some("z"));
    }

    #[test]
    fn the_overlay_reads_a_range_deleted_in_its_batch_as_gone() {
        let kv = engine_with(&[("c", "1"), ("e", "2"), ("k", "3")]);
        let mut batch = KvWriteBatch::default();
        let mut overlay = Overlay::default();
        batch.put(Keyspace::Data, &b"d"[..], &b"4"[..]);
        assert_eq!(
            overlay.get(&batch, &kv, b"d").unwrap().as_deref(),
            Some(&b"4"[..])
        );
        batch.delete_range(Keyspace::Data, &b"c"[..], Some(Bytes::from_static(b"j")));
        batch.put(Keyspace::Data, &b"f"[..], &b"5"[..]);
        for (key, value) in [
            ("c", None),
            ("d", None),
            ("e", None),
            ("f", Some("5")),
            ("k", Some("3")),
        ] {
            assert_eq!(
                overlay.get(&batch, &kv, key.as_bytes()).unwrap().as_deref(),
                value.map(str::as_bytes),
                "{key}"
            );
        }
    }

    #[test]
    fn a_swap_to_nothing_deletes_the_key() {
        let kv = engine_with(&[("d", "v")]);
        assert_eq!(
            run(&kv, &[cas("d", Some("v"), None)]),
            vec![OpOutcome::Swapped]
        );
        assert_eq!(value(&kv, "d"), None);
        assert_eq!(
            run(&kv, &[cas("d", Some("v"), Some("w"))]),
            vec![OpOutcome::Mismatch { current: None }]
        );
        assert_eq!(value(&kv, "d"), None, "a mismatch writes nothing");
    }

    #[test]
    fn a_range_delete_splits_the_command_and_later_writes_survive_it() {
        let kv = engine_with(&[("c", "1"), ("e", "2"), ("k", "3")]);
        let ops = [
            put("d", "4"),
            delete_range("c", "j"),
            cas("e", None, Some("5")),
            put("f", "6"),
        ];
        let (mut overlay, mut batch, mut outcomes) =
            (Overlay::default(), KvWriteBatch::default(), Vec::new());
        let stop = evaluate(
            &mut ops.clone(),
            0,
            &region(),
            &kv,
            &mut overlay,
            &mut batch,
            &mut outcomes,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            stop,
            (
                RangeDelete {
                    start: Bytes::from_static(b"c"),
                    end: Some(Bytes::from_static(b"j"))
                },
                2
            )
        );
        // Before anything reaches the engine, the overlay already reads the range as gone.
        assert_eq!(overlay.get(&batch, &kv, b"e").unwrap(), None);
        assert_eq!(overlay.get(&batch, &kv, b"d").unwrap(), None);
        assert_eq!(
            overlay.get(&batch, &kv, b"k").unwrap(),
            Some(Bytes::from_static(b"3"))
        );
        assert!(!overlay.is_empty());
        let kv2 = engine_with(&[("c", "1"), ("e", "2"), ("k", "3")]);
        let outcomes = run(&kv2, &ops);
        assert_eq!(
            outcomes,
            vec![
                OpOutcome::Done,
                OpOutcome::Done,
                OpOutcome::Swapped,
                OpOutcome::Done
            ]
        );
        assert_eq!(value(&kv2, "c"), None);
        assert_eq!(value(&kv2, "d"), None, "written before the range delete");
        assert_eq!(value(&kv2, "e").as_deref(), Some("5"));
        assert_eq!(value(&kv2, "f").as_deref(), Some("6"));
        assert_eq!(value(&kv2, "k").as_deref(), Some("3"), "outside the range");
    }

    #[test]
    fn an_empty_range_bound_is_the_regions_own() {
        let kv = engine_with(&[("a", "out"), ("b", "1"), ("l", "2"), ("m", "out")]);
        run(&kv, &[delete_range("", "")]);
        assert_eq!(value(&kv, "b"), None);
        assert_eq!(value(&kv, "l"), None);
        assert_eq!(value(&kv, "a").as_deref(), Some("out"));
        assert_eq!(value(&kv, "m").as_deref(), Some("out"));
    }

    #[test]
    fn a_command_is_checked_whole_against_the_region() {
        let ok = WriteCommand {
            ops: vec![
                put("b", "1"),
                delete("l"),
                delete_range("c", "m"),
                cas("c", None, Some("2")),
            ],
        };
        assert!(check_command(&ok, &region()).is_ok());
        let refused = |o: Op| {
            let cmd = WriteCommand {
                ops: vec![put("c", "fine"), o],
            };
            check_command(&cmd, &region()).unwrap_err()
        };
        assert!(matches!(
            refused(put("m", "x")),
            EvalError::Region(RegionError::KeyNotInRegion { .. })
        ));
        assert!(matches!(refused(delete("a")), EvalError::Region(_)));
        assert!(matches!(
            refused(delete_range("c", "n")),
            EvalError::Region(_)
        ));
        assert!(matches!(
            refused(cas("z", None, None)),
            EvalError::Region(_)
        ));
        assert!(matches!(
            refused(put("", "x")),
            EvalError::Invalid(KvError::InvalidKey { .. })
        ));
        let huge = "v".repeat(kv::MAX_VALUE_BYTES + 1);
        assert!(matches!(
            refused(put("c", &huge)),
            EvalError::Invalid(KvError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            refused(cas("c", None, Some(&huge))),
            EvalError::Invalid(KvError::ValueTooLarge { .. })
        ));
        assert!(matches!(refused(Op { op: None }), EvalError::Empty));
        assert!(matches!(
            refused(delete_range("f", "d")),
            EvalError::InvertedRange
        ));
    }
}
