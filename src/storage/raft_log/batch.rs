//! The write batch: many regions' appends, compactions, resets and states, checked as a
//! whole against each region's log span before anything is written.

use super::{LogError, LogSpans, SpanDisplay};
use crate::RegionId;
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::RaftLocalState;
use crate::raft::message::MAX_INDEX_OR_TERM;
use crate::raft::storage::entry_size;
use crate::storage::wal_entry::WalEntry;

/// One operation of a batch on one region's log, as `LogWriteBatch::ops` hands it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogOp<'a> {
    /// Consecutive entries, replacing any suffix from the first one's index.
    Append(&'a [WalEntry]),
    /// Drop every entry below the index (log GC).
    CompactTo(u64),
    /// Drop the whole log and the state (a snapshot install, or the region's removal).
    Reset,
    /// Set the region's `RaftLocalState`; the last one for a region names its log's new last
    /// index.
    PutState(&'a RaftLocalState),
}

/// How a batch stores an operation: appended entries live in one vector shared by all
/// regions of the batch.
#[derive(Debug, Clone)]
enum StoredOp {
    Append { start: usize, end: usize },
    CompactTo(u64),
    Reset,
    PutState(RaftLocalState),
}

/// Many regions' entries and states, written together by one `RaftLogStore::write`.
#[derive(Debug, Clone, Default)]
pub struct LogWriteBatch {
    ops: Vec<(RegionId, StoredOp)>,
    entries: Vec<WalEntry>,
    /// Scratch space of `prepare`, kept so a large batch does not allocate anew.
    order: Vec<(RegionId, usize)>,
    /// What `prepare` found: how the batch changes each region it touches.
    changes: Vec<SpanChange>,
}

/// A region's log as flotilla's own durable records define it: the entries `first..=last`
/// (none when `first == last + 1`). `last` is the `last_index` of the region's
/// `RaftLocalState`; `first` is recorded by the log itself when a batch moves it. Whatever
/// the engine holds outside the span is not part of the log (and is removed on open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpan {
    /// Index of the first entry of the log: one past the last compacted or snapshotted one.
    pub first: u64,
    /// Index of the last entry: the state's `last_index` (`first - 1` when the log is empty).
    pub last: u64,
}

impl LogSpan {
    /// Whether the log holds no entries (`first == last + 1`).
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// Whether the log holds the entry at `index`.
    pub fn holds(&self, index: u64) -> bool {
        self.first <= index && index <= self.last
    }

    /// The entries' first and last index, if there are any.
    pub fn entries(&self) -> Option<(u64, u64)> {
        (!self.is_empty()).then_some((self.first, self.last))
    }

    /// Refuses a read of `[low, high)` that is inverted or leaves the log.
    pub fn check_read(
        span: Option<Self>,
        region: RegionId,
        low: u64,
        high: u64,
    ) -> Result<(), LogError> {
        let inside =
            span.is_some_and(|s| s.first <= low && low <= high && high <= s.last.saturating_add(1));
        if inside {
            return Ok(());
        }
        let span = SpanDisplay(span);
        Err(LogError::OutOfRange {
            region,
            low,
            high,
            span,
        })
    }
}

/// How one batch changes one region's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanChange {
    /// The region whose log changes.
    pub region: RegionId,
    /// What may be read while the batch is being written: the entries the log holds both
    /// before and after it (None after a reset). Set before the write, so that a reader
    /// never reads an entry the write is removing while the span still claims it.
    pub during: Option<LogSpan>,
    /// `during` differs from the span before the batch (a compaction, an overwrite, a
    /// reset); a plain append narrows nothing, and its span need not be set twice.
    pub narrows: bool,
    /// None: the region has no log any more (removed).
    pub after: Option<LogSpan>,
    /// The first index must be recorded anew (it moved, or a reset erased the record).
    pub first_moved: bool,
}

impl LogWriteBatch {
    /// Appends entries (consecutive indices) to a region's log, replacing any suffix from
    /// the first one's index.
    pub fn append(&mut self, region: RegionId, entries: &[Entry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let consecutive = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        if !consecutive || first.index == 0 {
            let what = "entries are not consecutive from a positive index".to_string();
            return Err(LogError::InvalidWrite { region, what });
        }
        let start = self.entries.len();
        self.entries
            .extend(entries.iter().map(WalEntry::from_entry));
        let end = self.entries.len();
        self.ops.push((region, StoredOp::Append { start, end }));
        Ok(())
    }

    /// Drops every entry of the region below `index`.
    pub fn compact_to(&mut self, region: RegionId, index: u64) {
        self.ops.push((region, StoredOp::CompactTo(index)));
    }

    /// Drops the region's whole log and its state. A snapshot install follows it in the
    /// same batch with the new state (and any entries after the snapshot); removing a
    /// region leaves it at that.
    pub fn reset(&mut self, region: RegionId) {
        self.ops.push((region, StoredOp::Reset));
    }

    /// Sets the region's `RaftLocalState`. Its `last_index` must be where the log ends after
    /// the batch; a batch that appends to the region must carry one.
    pub fn put_state(&mut self, region: RegionId, state: &RaftLocalState) {
        self.ops.push((region, StoredOp::PutState(*state)));
    }

    /// The operations in the order they were added, each with its region.
    pub fn ops(&self) -> impl Iterator<Item = (RegionId, LogOp<'_>)> {
        self.ops.iter().map(|(region, op)| (*region, self.view(op)))
    }

    fn view<'a>(&'a self, op: &'a StoredOp) -> LogOp<'a> {
        match op {
            StoredOp::Append { start, end } => LogOp::Append(&self.entries[*start..*end]),
            StoredOp::CompactTo(index) => LogOp::CompactTo(*index),
            StoredOp::Reset => LogOp::Reset,
            StoredOp::PutState(state) => LogOp::PutState(state),
        }
    }

    /// How many distinct regions the batch writes to.
    pub fn region_count(&self) -> usize {
        let mut ids: Vec<RegionId> = self.ops.iter().map(|(r, _)| *r).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Number of entries appended, over all regions.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the appended entries, as the core counts them.
    pub fn entry_bytes(&self) -> u64 {
        self.entries.iter().map(|w| entry_size(&w.entry)).sum()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.ops.clear();
        self.entries.clear();
    }

    /// Readies the batch for the log it is about to be written to, and refuses it whole
    /// (before anything is written) if it would break a region's log:
    /// - an append must continue the log (`first ..= last + 1`): no hole, no overwrite of
    ///   compacted entries, and an emptied log continues right after its end;
    /// - a compaction may empty the log (`compact_to(last + 1)`) but not pass its end:
    ///   installing a snapshot beyond it is a `reset` plus a state;
    /// - a region the batch appends to (or resets and writes again) gets a
    ///   `RaftLocalState` in the batch, and the last one names the log's new last index;
    ///   a compaction keeps the end, and a reset without a state removes the log.
    ///
    /// Compactions of regions with no log are dropped (raft-engine would list a removed
    /// region again). `changes` then tells how each touched region's log changes.
    pub fn prepare(&mut self, spans: &impl LogSpans) -> Result<(), LogError> {
        let mut no_ops = Vec::new();
        self.changes.clear();
        // Each region's operations, in the order they were added.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            self.ops
                .iter()
                .enumerate()
                .map(|(at, (region, _))| (*region, at)),
        );
        // A store usually adds each region's operations together, in region order.
        if !order.is_sorted() {
            order.sort_unstable();
        }
        let result = self.check_regions(&order, spans, &mut no_ops);
        self.order = order;
        result?;
        if !no_ops.is_empty() {
            no_ops.sort_unstable();
            let mut at = 0;
            self.ops.retain(|_| {
                at += 1;
                no_ops.binary_search(&(at - 1)).is_err()
            });
        }
        Ok(())
    }

    fn check_regions(
        &mut self,
        order: &[(RegionId, usize)],
        spans: &impl LogSpans,
        no_ops: &mut Vec<usize>,
    ) -> Result<(), LogError> {
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let region = group[0].0;
            let before = spans.current_span(region);
            let mut check = SpanCheck {
                region,
                span: before,
                reset: false,
                appended: false,
            };
            let mut state_last = None;
            for &(_, at) in group {
                match &self.ops[at].1 {
                    StoredOp::CompactTo(_) if check.span.is_none() => no_ops.push(at),
                    StoredOp::CompactTo(index) => check.compact_to(*index)?,
                    StoredOp::Reset => {
                        check.span = None;
                        check.reset = true;
                        // The reset erases a state written earlier in the batch too.
                        state_last = None;
                    }
                    StoredOp::Append { start, end } => {
                        let first = self.entries[*start].entry.index;
                        let last = self.entries[*end - 1].entry.index;
                        check.append(first, last)?;
                    }
                    StoredOp::PutState(state) if state.last_index >= MAX_INDEX_OR_TERM => {
                        return check.refuse(format!(
                            "a state with last index {} is out of range",
                            state.last_index
                        ));
                    }
                    StoredOp::PutState(state) => state_last = Some(state.last_index),
                }
            }
            let after = check.finish(state_last)?;
            // Recorded again when it moved or a reset erased it.
            let first_moved =
                after.is_some_and(|a| check.reset || before.map(|b| b.first) != Some(a.first));
            let during = match (before, after) {
                (Some(b), Some(a)) if !check.reset => {
                    let first = b.first.max(a.first);
                    let last = b.last.min(a.last).max(first - 1);
                    Some(LogSpan { first, last })
                }
                _ => None,
            };
            self.changes.push(SpanChange {
                region,
                during,
                narrows: during != before,
                after,
                first_moved,
            });
        }
        Ok(())
    }

    /// How the last `prepare` found the batch to change each region it touches.
    pub fn changes(&self) -> &[SpanChange] {
        &self.changes
    }
}

/// A region's log span as a batch's operations change it.
struct SpanCheck {
    region: RegionId,
    /// None: no log (never written, or reset in this batch).
    span: Option<LogSpan>,
    reset: bool,
    appended: bool,
}

impl SpanCheck {
    fn refuse<T>(&self, what: String) -> Result<T, LogError> {
        Err(LogError::InvalidWrite {
            region: self.region,
            what,
        })
    }

    fn compact_to(&mut self, index: u64) -> Result<(), LogError> {
        let Some(span) = self.span.as_mut() else {
            return Ok(());
        };
        if index > span.last + 1 {
            let last = span.last;
            return self.refuse(format!(
                "compaction to {index} passes the end of the log ({last}); reset it instead"
            ));
        }
        span.first = span.first.max(index);
        Ok(())
    }

    fn append(&mut self, first: u64, last: u64) -> Result<(), LogError> {
        if last >= MAX_INDEX_OR_TERM {
            return self.refuse(format!("entries up to {last} are out of range"));
        }
        self.appended = true;
        self.span = match self.span {
            Some(s) if first < s.first => {
                return self.refuse(format!(
                    "append at {first} below the log's first index {}",
                    s.first
                ));
            }
            Some(s) if first > s.last + 1 => {
                return self.refuse(format!("append at {first} to a log ending at {}", s.last));
            }
            Some(s) => Some(LogSpan {
                first: s.first,
                last,
            }),
            // A log that does not exist starts wherever the append does.
            None => Some(LogSpan { first, last }),
        };
        Ok(())
    }

    /// The span after the batch, given the last state it writes (its `last_index`).
    fn finish(&self, state_last: Option<u64>) -> Result<Option<LogSpan>, LogError> {
        match (self.span, state_last) {
            (None, None) => Ok(None),
            // A state alone (a snapshot install after a reset, a new region): an empty
            // log that continues after the state's last index.
            (None, Some(last)) => Ok(Some(LogSpan {
                first: last + 1,
                last,
            })),
            (Some(span), Some(last)) if span.last == last => Ok(Some(span)),
            (Some(span), Some(last)) => self.refuse(format!(
                "the state names last index {last} but the log ends at {}",
                span.last
            )),
            (Some(_), None) if self.appended || self.reset => {
                self.refuse("entries written without a state naming the new last index".into())
            }
            (Some(span), None) => Ok(Some(span)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Spans(HashMap<RegionId, LogSpan>);

    impl LogSpans for Spans {
        fn current_span(&self, region: RegionId) -> Option<LogSpan> {
            self.0.get(&region).copied()
        }
    }

    const R: RegionId = RegionId(1);

    fn span(first: u64, last: u64) -> LogSpan {
        LogSpan { first, last }
    }

    fn entries(first: u64, last: u64) -> Vec<Entry> {
        (first..=last)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect()
    }

    fn state(last_index: u64) -> RaftLocalState {
        RaftLocalState {
            hard_state: None,
            last_index,
            last_term: 0,
        }
    }

    /// The one change `prepare` finds for region R, whose log is `before`.
    fn change(before: Option<LogSpan>, fill: impl FnOnce(&mut LogWriteBatch)) -> SpanChange {
        let mut batch = LogWriteBatch::default();
        fill(&mut batch);
        let spans = Spans(before.map(|s| (R, s)).into_iter().collect());
        batch.prepare(&spans).unwrap();
        assert_eq!(batch.changes().len(), 1);
        batch.changes()[0]
    }

    /// While a batch is written, readers may only see what the log holds both before and
    /// after it; a plain append narrows nothing.
    #[test]
    fn what_may_be_read_during_a_write_is_what_it_keeps() {
        let append = change(Some(span(1, 10)), |b| {
            b.append(R, &entries(11, 12)).unwrap();
            b.put_state(R, &state(12));
        });
        assert_eq!(append.during, Some(span(1, 10)));
        assert!(!append.narrows);
        assert_eq!(append.after, Some(span(1, 12)));

        let compact = change(Some(span(1, 10)), |b| b.compact_to(R, 6));
        assert_eq!(compact.during, Some(span(6, 10)));
        assert!(compact.narrows);
        assert!(compact.first_moved);

        // Compacting everything: nothing may be read meanwhile, and the empty span keeps
        // its place (next index 11).
        let all = change(Some(span(1, 10)), |b| b.compact_to(R, 11));
        assert_eq!(all.during, Some(span(11, 10)));
        assert_eq!(all.after, Some(span(11, 10)));
        assert!(all.narrows);

        // A reset (a snapshot install) keeps nothing readable, even where the new log
        // overlaps the old one.
        let reset = change(Some(span(1, 10)), |b| {
            b.reset(R);
            b.put_state(R, &state(8));
        });
        assert_eq!(reset.during, None);
        assert!(reset.narrows);
        assert_eq!(reset.after, Some(span(9, 8)));
        assert!(reset.first_moved);

        let new = change(None, |b| {
            b.append(R, &entries(5, 6)).unwrap();
            b.put_state(R, &state(6));
        });
        assert_eq!(new.during, None);
        assert!(!new.narrows);
        assert_eq!(new.after, Some(span(5, 6)));
    }
}
