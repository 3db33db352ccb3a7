//! An in-memory `RaftLogStore` with explicit durability for deterministic tests: a synced
//! write makes everything so far durable; `crash` forgets what was not synced (or, with
//! `crash_keeping`, keeps a prefix of the unsynced writes, as a real log may).

use parking_lot::Mutex;
use std::collections::BTreeMap;

use super::journaled::Journaled;
use super::pb::RaftLocalState;
use super::raft_log::{LogError, LogOp, LogWriteBatch, RaftLogStore};
use crate::raft::pb::Entry;
use crate::raft::storage::limit_size;

#[derive(Debug, Clone, Default)]
struct Group {
    entries: BTreeMap<u64, Entry>,
    state: Option<RaftLocalState>,
}

type Groups = BTreeMap<u64, Group>;

#[derive(Default)]
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
                    g.entries.split_off(&first.entry.index);
                }
                g.entries
                    .extend(ents.iter().map(|w| (w.entry.index, w.entry.clone())));
            }
            LogOp::CompactTo(index) => {
                let g = groups.entry(region).or_default();
                g.entries = g.entries.split_off(&index);
            }
            LogOp::Reset => {
                groups.remove(&region);
            }
            LogOp::PutState(s) => groups.entry(region).or_default().state = Some(*s),
        }
    }
}

impl MemRaftLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulated crash: everything not synced is lost.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// A crash after which the first `kept` unsynced writes survive.
    pub fn crash_keeping(&self, kept: usize) {
        self.state.lock().crash_keeping(kept, apply);
    }

    fn read<T>(&self, f: impl FnOnce(&Groups) -> T) -> T {
        f(self.state.lock().live())
    }
}

impl RaftLogStore for MemRaftLog {
    fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize, LogError> {
        let _serialized = self.writer.lock();
        batch.prepare(self)?;
        let bytes = batch.entry_bytes() as usize;
        self.state.lock().write(batch, apply, sync);
        batch.clear();
        Ok(bytes)
    }

    fn recover(&self) -> Result<Vec<(u64, RaftLocalState)>, LogError> {
        Ok(self.read(|g| {
            g.iter()
                .filter(|(_, grp)| grp.state.is_some() || !grp.entries.is_empty())
                .map(|(id, grp)| (*id, grp.state.unwrap_or_default()))
                .collect()
        }))
    }

    fn local_state(&self, region: u64) -> Result<Option<RaftLocalState>, LogError> {
        Ok(self.read(|g| g.get(&region).and_then(|grp| grp.state)))
    }

    fn entry(&self, region: u64, index: u64) -> Result<Option<Entry>, LogError> {
        Ok(self.read(|g| {
            g.get(&region)
                .and_then(|grp| grp.entries.get(&index).cloned())
        }))
    }

    fn entries(
        &self,
        region: u64,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        let mut out: Vec<Entry> = self
            .read(|g| {
                g.get(&region).map(|grp| {
                    grp.entries
                        .range(low..high)
                        .map(|(_, e)| e.clone())
                        .collect()
                })
            })
            .unwrap_or_default();
        if out.len() as u64 != high.saturating_sub(low) {
            return Err(LogError::Missing {
                region,
                what: format!("entries {low}..{high}"),
            });
        }
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn first_index(&self, region: u64) -> Option<u64> {
        self.read(|g| g.get(&region)?.entries.keys().next().copied())
    }

    fn last_index(&self, region: u64) -> Option<u64> {
        self.read(|g| g.get(&region)?.entries.keys().next_back().copied())
    }

    fn compact_to(&self, region: u64, index: u64) -> u64 {
        let before = self.read(|g| g.get(&region).map_or(0, |grp| grp.entries.len()));
        let mut batch = LogWriteBatch::default();
        batch.compact_to(region, index);
        // Like raft-engine, compaction is not synced by itself.
        if self.write(&mut batch, false).is_err() {
            return 0;
        }
        (before - self.read(|g| g.get(&region).map_or(0, |grp| grp.entries.len()))) as u64
    }

    /// There are no files: nothing to purge, no region pins anything.
    fn purge_expired_files(&self) -> Result<Vec<u64>, LogError> {
        Ok(Vec::new())
    }
}
