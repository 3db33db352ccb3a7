//! A model of the store's raft log and a seeded workload of batches that keeps it, shared
//! by the model test and the kill -9 test: both derive the same batches from a seed.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use flotilla::RegionId;
use flotilla::proto::raftpb::{Entry, HardState};
use flotilla::proto::storagepb::RaftLocalState;
use flotilla::storage::raft_log::{LogSpan, LogWriteBatch, RaftLogConfig, RaftLogStore};
use flotilla::testkit::Rng;

pub const REGIONS: u64 = 6;

#[derive(Debug, Clone, PartialEq)]
pub struct RegionModel {
    pub state: RaftLocalState,
    pub first: u64,
    pub entries: BTreeMap<u64, Entry>,
}

impl RegionModel {
    pub fn last(&self) -> u64 {
        self.state.last_index
    }
}

pub type Model = BTreeMap<u64, RegionModel>;

/// Generates batches from a seed and applies each to the model as it goes. The child
/// writer and the parent that checks it derive the same sequence from the same seed.
pub struct Workload {
    rng: Rng,
    pub model: Model,
    /// Makes every entry's payload unique, so a resurrected entry is always visible.
    serial: u64,
    pub term: u64,
}

pub fn state(term: u64, last_index: u64) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term,
            vote: 1,
            commit: 0,
        }),
        last_index,
        last_term: 0,
    }
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            model: Model::new(),
            serial: 0,
            term: 1,
        }
    }

    pub fn pick(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.rng.range(lo, hi + 1)
        }
    }

    pub fn entries(&mut self, region: u64, first: u64, n: u64) -> Vec<Entry> {
        let pad = self.pick(20, 300) as usize;
        (first..first + n)
            .map(|index| {
                self.serial += 1;
                let mut data = format!("r{region}i{index}t{}s{}", self.term, self.serial);
                data.push_str(&".".repeat(pad));
                Entry {
                    index,
                    term: self.term,
                    data: Bytes::from(data),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// The next batch: one to five operations, on any regions.
    pub fn next_batch(&mut self) -> LogWriteBatch {
        let mut batch = LogWriteBatch::default();
        // A region may take several operations in one batch (a store merges a region's
        // Readies, and a removal may follow its last write).
        let count = self.pick(1, 5);
        for _ in 0..count {
            let region = self.pick(1, REGIONS);
            self.next_op(&mut batch, region);
        }
        batch
    }

    fn next_op(&mut self, batch: &mut LogWriteBatch, region: u64) {
        if self.pick(0, 30) == 0 {
            self.term += 1;
        }
        let Some(r) = self.model.get(&region).cloned() else {
            // A new log: a state, and maybe entries after it.
            let base = self.pick(0, 40);
            let n = self.pick(0, 6);
            let ents = self.entries(region, base + 1, n);
            batch.append(RegionId(region), &ents).expect("consecutive");
            let st = state(self.term, base + n);
            batch.put_state(RegionId(region), &st);
            self.model.insert(
                region,
                RegionModel {
                    state: st,
                    first: base + 1,
                    entries: ents.into_iter().map(|e| (e.index, e)).collect(),
                },
            );
            return;
        };
        match self.pick(0, 19) {
            // Append, mostly at the end, sometimes over a suffix.
            0..=11 => {
                let from = if self.pick(0, 3) == 0 {
                    self.pick(r.first, r.last() + 1)
                } else {
                    r.last() + 1
                };
                let n = self.pick(1, 8);
                let ents = self.entries(region, from, n);
                batch.append(RegionId(region), &ents).expect("consecutive");
                let st = state(self.term, from + n - 1);
                batch.put_state(RegionId(region), &st);
                let m = self.model.get_mut(&region).expect("present");
                m.entries.split_off(&from);
                m.entries.extend(ents.into_iter().map(|e| (e.index, e)));
                m.state = st;
            }
            // Compact, possibly all of it.
            12..=15 => {
                let to = self.pick(r.first, r.last() + 1);
                batch.compact_to(RegionId(region), to);
                let m = self.model.get_mut(&region).expect("present");
                m.first = m.first.max(to);
                m.entries = m.entries.split_off(&to);
            }
            // Install a snapshot: anywhere at or after the first index.
            16..=18 => {
                let snap = self.pick(r.first, r.last() + 30);
                let n = self.pick(0, 4);
                batch.reset(RegionId(region));
                let ents = self.entries(region, snap + 1, n);
                let st = state(self.term, snap + n);
                batch.put_state(RegionId(region), &st);
                batch.append(RegionId(region), &ents).expect("consecutive");
                self.model.insert(
                    region,
                    RegionModel {
                        state: st,
                        first: snap + 1,
                        entries: ents.into_iter().map(|e| (e.index, e)).collect(),
                    },
                );
            }
            // Remove the region.
            _ => {
                batch.reset(RegionId(region));
                self.model.remove(&region);
            }
        }
    }
}

pub fn config(dir: &Path, recovery_threads: usize) -> RaftLogConfig {
    let mut cfg = RaftLogConfig::new(dir);
    cfg.target_file_size = 4096;
    cfg.purge_threshold = 8192;
    cfg.recovery_threads = recovery_threads;
    cfg
}

/// The log holds exactly the model: spans, states, entries, and the recovered list.
pub fn check(log: &dyn RaftLogStore, model: &Model) -> Result<(), String> {
    for region in 1..=REGIONS {
        let span = log.span(RegionId(region));
        let st = log
            .local_state(RegionId(region))
            .map_err(|e| e.to_string())?;
        let Some(m) = model.get(&region) else {
            if span.is_some() || st.is_some() {
                return Err(format!("region {region} should not exist: {span:?} {st:?}"));
            }
            continue;
        };
        let want = LogSpan {
            first: m.first,
            last: m.last(),
        };
        if span != Some(want) || st != Some(m.state) {
            return Err(format!(
                "region {region}: span {span:?} state {st:?}, model {want:?} {:?}",
                m.state
            ));
        }
        let got = log
            .entries(RegionId(region), m.first, m.last() + 1, u64::MAX)
            .map_err(|e| format!("region {region}: {e}"))?;
        let expected: Vec<Entry> = m.entries.values().cloned().collect();
        if got != expected {
            let idx = |v: &[Entry]| v.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>();
            return Err(format!(
                "region {region}: entries {:?}, model {:?}",
                idx(&got),
                idx(&expected)
            ));
        }
        if m.first > 1
            && log
                .entries(RegionId(region), m.first - 1, m.first, u64::MAX)
                .is_ok()
        {
            return Err(format!("region {region}: entry {} readable", m.first - 1));
        }
    }
    let listed: Vec<(RegionId, RaftLocalState)> = log.recover().map_err(|e| e.to_string())?;
    let want: Vec<(RegionId, RaftLocalState)> =
        model.iter().map(|(r, m)| (RegionId(*r), m.state)).collect();
    if listed != want {
        return Err(format!("recover lists {listed:?}, model {want:?}"));
    }
    Ok(())
}
