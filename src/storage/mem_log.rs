//! An in-memory `RaftLogStore` with explicit durability for deterministic tests: a synced
//! write makes everything so far durable; `crash` forgets what was not synced (or, with
//! `crash_keeping`, keeps a prefix of the unsynced writes, as a real log may). A volatile
//! one (`MemDurability::Volatile`) keeps no durable copy: the in-memory embedded mode.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};

use super::journaled::Journaled;
use super::raft_log::{LogError, LogOp, LogSpan, LogWriteBatch, RaftLogStore};
use super::{MemDurability, SyncMode};
use crate::RegionId;
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::RaftLocalState;
use crate::raft::storage::ByteBudget;

#[derive(Debug, Clone, Default)]
struct Group {
    /// Consecutive entries from the front's index on (`prepare` refuses holes).
    entries: VecDeque<Entry>,
    state: Option<RaftLocalState>,
    span: Option<LogSpan>,
}

type Groups = BTreeMap<RegionId, Group>;

impl Group {
    /// How many held entries come before `index`.
    fn offset(&self, index: u64) -> usize {
        let first = self.entries.front().map_or(index, |e| e.index);
        usize::try_from(index.saturating_sub(first)).unwrap_or(usize::MAX)
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        self.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    }
}

/// The in-memory `RaftLogStore`: batches are checked as `RaftLogEngine` checks them, and
/// `crash` drops every write after the last synced one (every write, when volatile).
pub struct MemRaftLog {
    state: Mutex<Journaled<Groups, LogWriteBatch>>,
    /// Held across a write's check and apply, as the engine does.
    writer: Mutex<()>,
}

fn apply(groups: &mut Groups, batch: &LogWriteBatch) {
    for (region, op) in batch.ops() {
        match op {
            LogOp::Append(ents) => {
                let g = groups.entry(region).or_default();
                if let Some(first) = ents.first() {
                    // Overwrites the tail from there (an index before the front: all).
                    g.entries.truncate(g.offset(first.entry.index));
                }
                g.entries.extend(ents.iter().map(|w| w.entry.clone()));
            }
            LogOp::CompactTo(index) => {
                let g = groups.entry(region).or_default();
                let gone = g.offset(index).min(g.entries.len());
                g.entries.drain(..gone);
                // An idle region's log is often compacted empty: give the room back.
                if g.entries.len() * 4 < g.entries.capacity() {
                    g.entries.shrink_to_fit();
                }
            }
            LogOp::Reset => {
                groups.remove(&region);
            }
            LogOp::PutState(s) => groups.entry(region).or_default().state = Some(*s),
        }
    }
    for change in batch.changes() {
        match change.after {
            Some(span) => groups.entry(change.region).or_default().span = Some(span),
            None => {
                groups.remove(&change.region);
            }
        }
    }
}

impl Default for MemRaftLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemRaftLog {
    /// An empty log with simulated durability: no region has one, nothing is durable.
    pub fn new() -> Self {
        Self::with_durability(MemDurability::Simulated)
    }

    /// An empty log that keeps for a crash what `durability` says.
    pub fn with_durability(durability: MemDurability) -> Self {
        MemRaftLog {
            state: Mutex::new(Journaled::new(durability)),
            writer: Mutex::new(()),
        }
    }

    /// A simulated crash: everything not synced is lost.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// A crash after which the first `kept` unsynced writes survive.
    pub fn crash_keeping(&self, kept: usize) {
        self.state.lock().crash_keeping(kept, apply);
    }

    /// A crash at this instant, though the store writing here runs on until it is
    /// stopped: every write fails from now on, and the `crash` or `crash_keeping` that
    /// follows keeps what was durable at the cut (and ends the outage).
    pub fn cut_power(&self) {
        self.state.lock().cut_power();
    }

    fn read<T>(&self, f: impl FnOnce(&Groups) -> T) -> T {
        f(self.state.lock().live())
    }
}

impl RaftLogStore for MemRaftLog {
    fn write(&self, batch: &mut LogWriteBatch, sync: SyncMode) -> Result<usize, LogError> {
        let _serialized = self.writer.lock();
        batch.prepare(self)?;
        let bytes = batch.entry_bytes() as usize;
        self.state
            .lock()
            .write(batch, apply, sync)
            .map_err(|cut| raft_engine::Error::Io(std::io::Error::other(cut)))?;
        batch.clear();
        Ok(bytes)
    }

    fn recover(&self) -> Result<Vec<(RegionId, RaftLocalState)>, LogError> {
        Ok(self.read(|g| {
            g.iter()
                .filter(|(_, grp)| grp.span.is_some())
                .filter_map(|(id, grp)| Some((*id, grp.state?)))
                .collect()
        }))
    }

    fn local_state(&self, region: RegionId) -> Result<Option<RaftLocalState>, LogError> {
        Ok(self.read(|g| g.get(&region).and_then(|grp| grp.state)))
    }

    fn span(&self, region: RegionId) -> Option<LogSpan> {
        self.read(|g| g.get(&region)?.span)
    }

    fn entry(&self, region: RegionId, index: u64) -> Result<Option<Entry>, LogError> {
        if !self.span(region).is_some_and(|s| s.holds(index)) {
            return Ok(None);
        }
        Ok(self.read(|g| g.get(&region).and_then(|grp| grp.get(index).cloned())))
    }

    fn entries(
        &self,
        region: RegionId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        LogSpan::check_read(self.span(region), region, low, high)?;
        let (out, complete) = self.read(|g| {
            let Some(grp) = g.get(&region) else {
                return (Vec::new(), false);
            };
            let mut budget = ByteBudget::new(max_bytes);
            let mut out = Vec::new();
            for e in (low..high).map_while(|index| grp.get(index)) {
                if !budget.take(e) {
                    return (out, true);
                }
                out.push(e.clone());
            }
            let complete = out.len() as u64 == high - low;
            (out, complete)
        });
        if !complete {
            return Err(LogError::Corrupt {
                region,
                what: format!("entries {low}..{high} are recorded but not all are held"),
            });
        }
        Ok(out)
    }

    /// There are no files: nothing to purge, no region pins anything.
    fn purge_expired_files(&self) -> Result<Vec<RegionId>, LogError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synced log holding `region`'s entries 1..=`last`, all of term 1.
    fn log_of(region: RegionId, last: u64) -> MemRaftLog {
        let log = MemRaftLog::new();
        let mut batch = LogWriteBatch::default();
        let entries: Vec<Entry> = (1..=last)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect();
        batch.append(region, &entries).unwrap();
        batch.put_state(
            region,
            &RaftLocalState {
                hard_state: None,
                last_index: last,
                last_term: 1,
            },
        );
        log.write(&mut batch, SyncMode::Sync).unwrap();
        log
    }

    /// An idle region's log is often compacted empty: the room its entries took is given
    /// back (10,000 idle regions would otherwise each keep it), and a log that keeps most
    /// of its entries keeps its room.
    #[test]
    fn a_log_compacted_to_little_gives_its_room_back() {
        let r = RegionId(3);
        let log = log_of(r, 100);
        let room = || log.read(|g| g[&r].entries.capacity());
        let full = room();
        assert!(
            (100..=400).contains(&full) && full % 4 == 0,
            "room for {full}"
        );
        log.compact_to(r, 11).unwrap();
        assert_eq!(room(), full, "most entries kept: the room too");
        // Exactly a quarter of the room still held: kept as it is.
        let quarter = full as u64 / 4;
        log.compact_to(r, 101 - quarter).unwrap();
        assert_eq!(room(), full, "a quarter held: the room kept");
        log.compact_to(r, 101).unwrap();
        assert_eq!(room(), 0, "compacted empty: the room is given back");
    }

    #[test]
    fn purge_names_no_region_since_there_are_no_files() {
        let log = log_of(RegionId(3), 5);
        assert_eq!(log.purge_expired_files().unwrap(), Vec::<RegionId>::new());
        assert_eq!(log.compact_to(RegionId(3), 4).unwrap(), 3);
        assert_eq!(log.purge_expired_files().unwrap(), Vec::<RegionId>::new());
    }
}
