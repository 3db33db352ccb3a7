//! Safety invariants checked after every step of a simulation: election safety, committed
//! entries never change (and so logs match up to commit), state-machine safety, leader
//! completeness, and the log matching property.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::cluster::SimNode;
use crate::raft::Role;

/// index → (term, data)
type EntryMap = BTreeMap<u64, (u64, Bytes)>;

/// Remembers what was committed and who led each term, and records any observation that
/// contradicts it.
#[derive(Debug, Default)]
pub struct Checker {
    /// Election safety: the one leader of each term.
    leaders: BTreeMap<u64, u64>,
    /// Every entry known committed: index → (term, data).
    committed: EntryMap,
    /// Per node: commit index already checked, applied entries already checked.
    checked_commit: BTreeMap<u64, u64>,
    checked_applied: BTreeMap<u64, usize>,
    /// (term, leader) pairs whose log was checked for completeness.
    complete_leaders: BTreeSet<(u64, u64)>,
    /// Violations found so far; nothing panics, so the driver must check this.
    pub failures: Vec<String>,
}

impl Checker {
    /// Records a violation in `failures`.
    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    /// Number of terms in which a leader has been seen.
    pub fn leader_count(&self) -> usize {
        self.leaders.len()
    }

    /// Highest index recorded as committed, or 0 before any.
    pub fn max_committed(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Checks every live node incrementally: one leader per term, committed and applied
    /// entries agree with those recorded, and each new leader holds every committed entry.
    pub fn check(&mut self, nodes: &BTreeMap<u64, SimNode>) {
        for n in nodes.values() {
            let Some(raw) = n.raw.as_ref() else { continue };
            let r = raw.raft();
            if r.role == Role::Leader {
                let prev = *self.leaders.entry(r.term).or_insert(r.id);
                if prev != r.id {
                    self.fail(format!(
                        "two leaders in term {}: {prev} and {}",
                        r.term, r.id
                    ));
                }
            }
            self.check_committed_prefix(n.id, r);
            self.check_applied(n.id, &n.sm.applied);
            if r.role == Role::Leader && self.complete_leaders.insert((r.term, r.id)) {
                self.check_leader_completeness(r);
            }
        }
    }

    fn record(&mut self, node: u64, index: u64, term: u64, data: &Bytes, what: &str) {
        match self.committed.get(&index) {
            Some((t, d)) if *t != term || d != data => {
                let msg = format!(
                    "node {node}: {what} entry {index} (term {term}) differs from committed term {t}"
                );
                self.fail(msg);
            }
            Some(_) => {}
            None => {
                self.committed.insert(index, (term, data.clone()));
            }
        }
    }

    fn check_committed_prefix<S: crate::raft::LogStorage>(
        &mut self,
        id: u64,
        r: &crate::raft::Raft<S>,
    ) {
        let commit = r.log.committed;
        let checked = self
            .checked_commit
            .get(&id)
            .copied()
            .unwrap_or(0)
            .min(commit);
        let lo = (checked + 1).max(r.log.first_index());
        if lo <= commit {
            match r.log.slice(lo, commit + 1, u64::MAX) {
                Ok(ents) => {
                    for e in ents {
                        self.record(id, e.index, e.term, &e.data, "committed");
                    }
                }
                Err(e) => self.fail(format!(
                    "node {id}: committed entries {lo}..={commit} unreadable: {e}"
                )),
            }
        }
        self.checked_commit.insert(id, commit);
    }

    fn check_applied(&mut self, id: u64, applied: &[(u64, u64, Bytes)]) {
        let mut from = self.checked_applied.get(&id).copied().unwrap_or(0);
        if from > applied.len() {
            from = 0; // replaced by a snapshot
        }
        for w in applied[from.saturating_sub(1)..].windows(2) {
            if w[1].0 <= w[0].0 {
                self.fail(format!(
                    "node {id}: applied index {} after {}",
                    w[1].0, w[0].0
                ));
            }
        }
        for (index, term, data) in &applied[from..] {
            self.record(id, *index, *term, data, "applied");
        }
        self.checked_applied.insert(id, applied.len());
    }

    /// §5.4.1: a leader holds every entry committed before it (that it has not compacted).
    fn check_leader_completeness<S: crate::raft::LogStorage>(&mut self, r: &crate::raft::Raft<S>) {
        let first = r.log.first_index();
        let missing: Vec<u64> = self
            .committed
            .iter()
            .filter(|(i, _)| **i >= first)
            .filter(|(i, (t, _))| !r.log.match_term(**i, *t))
            .map(|(i, _)| *i)
            .take(3)
            .collect();
        if !missing.is_empty() {
            self.fail(format!(
                "leader {} of term {} lacks committed entries {missing:?}",
                r.id, r.term
            ));
        }
    }

    /// Log matching: if two logs hold an entry with the same index and term, they are
    /// identical up to it. Checked pairwise over every node's whole log.
    pub fn check_log_matching(&mut self, nodes: &BTreeMap<u64, SimNode>) {
        let logs: Vec<(u64, EntryMap)> = nodes
            .values()
            .filter_map(|n| {
                let r = n.raw.as_ref()?.raft();
                let ents = r
                    .log
                    .slice(r.log.first_index(), r.log.last_index() + 1, u64::MAX)
                    .ok()?;
                Some((
                    n.id,
                    ents.into_iter()
                        .map(|e| (e.index, (e.term, e.data)))
                        .collect(),
                ))
            })
            .collect();
        for (i, (a, la)) in logs.iter().enumerate() {
            for (b, lb) in &logs[i + 1..] {
                let common_max = la
                    .iter()
                    .rev()
                    .find(|(idx, (t, _))| lb.get(idx).is_some_and(|(tb, _)| tb == t))
                    .map(|(idx, _)| *idx);
                let Some(upto) = common_max else { continue };
                for (idx, ea) in la.range(..=upto) {
                    if let Some(eb) = lb.get(idx)
                        && ea != eb
                    {
                        {
                            self.fail(format!(
                                "logs of {a} and {b} agree at {upto} but differ at {idx}"
                            ));
                            return;
                        }
                    }
                }
            }
        }
    }
}
