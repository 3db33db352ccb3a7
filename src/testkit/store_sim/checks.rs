//! What the simulator checks besides the client histories: every replica applies the same
//! thing at the same index of its region's log, one leader per region and term, a store's
//! regions never overlap, and the regions cover the key space once the faults heal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::proto::metapb::Region;
use crate::raft::Role;
use crate::region::hex;
use crate::store::{AppliedChange, ApplyEvent, ApplyObserver, RegionStatus};
use crate::{RegionId, StoreId};

/// What the first replica to apply an index applied there.
struct FirstApplied {
    store: StoreId,
    term: u64,
    change: AppliedChange,
}

#[derive(Default)]
struct Applied {
    by_index: BTreeMap<(RegionId, u64), FirstApplied>,
    events: u64,
    violations: Vec<String>,
}

/// Every replica's applied entries, compared index by index: two replicas of a region that
/// apply different things at one index (a committed entry changed, or the state machines
/// diverged: a compare-and-swap deciding differently) are a violation.
#[derive(Default)]
pub(super) struct AppliedLog {
    inner: Mutex<Applied>,
}

struct StoreObserver {
    store: StoreId,
    log: Arc<AppliedLog>,
}

impl AppliedLog {
    /// The observer store `store` opens with.
    pub fn observer(self: &Arc<Self>, store: StoreId) -> Arc<dyn ApplyObserver> {
        Arc::new(StoreObserver {
            store,
            log: self.clone(),
        })
    }

    /// Violations found so far (taken: each is reported once).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().violations)
    }

    /// Events observed so far.
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ApplyObserver for StoreObserver {
    fn on_apply(&self, event: &ApplyEvent) {
        let mut applied = self.log.lock();
        applied.events += 1;
        // A snapshot stands for many entries, a destroyed replica for none: neither is
        // one entry to compare.
        if matches!(
            event.change,
            AppliedChange::SnapshotInstalled { .. } | AppliedChange::Destroyed { .. }
        ) {
            return;
        }
        let at = (event.region, event.index);
        match applied.by_index.get(&at) {
            None => {
                applied.by_index.insert(
                    at,
                    FirstApplied {
                        store: self.store,
                        term: event.term,
                        change: event.change.clone(),
                    },
                );
            }
            Some(first) if first.term == event.term && first.change == event.change => {}
            Some(first) => {
                let violation = format!(
                    "region {} index {}: store {} applied (term {}) {:?}, store {} applied (term {}) {:?}",
                    event.region,
                    event.index,
                    first.store,
                    first.term,
                    first.change,
                    self.store,
                    event.term,
                    event.change
                );
                applied.violations.push(violation);
            }
        }
    }
}

/// The leader seen for each region and term (from status probes): two are a violation.
#[derive(Default)]
pub(super) struct Leaders {
    by_term: BTreeMap<(RegionId, u64), (StoreId, u64)>,
    terms: u64,
}

impl Leaders {
    /// Records what a replica on `store` reported.
    pub fn saw(&mut self, store: StoreId, status: &RegionStatus) -> Result<(), String> {
        if status.role != Role::Leader {
            return Ok(());
        }
        let region = RegionId(status.region.id);
        let peer = status.peer.id;
        match self.by_term.get(&(region, status.term)) {
            None => {
                self.terms += 1;
                self.by_term.insert((region, status.term), (store, peer));
                Ok(())
            }
            Some(&(s, p)) if p == peer => {
                if s == store {
                    Ok(())
                } else {
                    Err(format!(
                        "region {region} term {}: peer {peer} leads on stores {s} and {store}",
                        status.term
                    ))
                }
            }
            Some(&(s, p)) => Err(format!(
                "region {region} term {}: two leaders, peer {p} on store {s} and peer {peer} on store {store}",
                status.term
            )),
        }
    }

    /// Distinct (region, term) pairs a leader was seen in.
    pub fn terms(&self) -> u64 {
        self.terms
    }
}

/// The regions of one store, in key order, must not overlap.
pub(super) fn check_no_overlap(store: StoreId, regions: &[Region]) -> Result<(), String> {
    for pair in regions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.end_key.is_empty() || a.end_key > b.start_key {
            return Err(format!(
                "store {store} holds overlapping regions {} and {}",
                describe(a),
                describe(b)
            ));
        }
    }
    Ok(())
}

/// The newest version of every region the stores hold, in key order: after healing, they
/// must tile the key space, with no gap and no overlap.
pub(super) fn check_cover(regions: &[Region]) -> Result<(), String> {
    let mut expected_start: Vec<u8> = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        if region.start_key != expected_start {
            return Err(format!(
                "the regions do not tile the key space at {}: {}",
                describe(region),
                regions.iter().map(describe).collect::<Vec<_>>().join(", ")
            ));
        }
        if region.end_key.is_empty() {
            return if i + 1 == regions.len() {
                Ok(())
            } else {
                Err(format!(
                    "region {} ends the key space but others follow",
                    describe(region)
                ))
            };
        }
        expected_start = region.end_key.clone();
    }
    Err("the regions do not reach the end of the key space".to_string())
}

/// A region for messages: id, range, epoch and peers.
pub(super) fn describe(region: &Region) -> String {
    let epoch = region.epoch.unwrap_or_default();
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| format!("{}@{}", p.id, p.store_id))
        .collect();
    format!(
        "{}[{}, {}) v{}c{} peers {}",
        region.id,
        hex(&region.start_key),
        hex(&region.end_key),
        epoch.version,
        epoch.conf_ver,
        peers.join(" ")
    )
}
