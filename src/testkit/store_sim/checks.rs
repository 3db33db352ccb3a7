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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::commandpb::WriteCommand;
    use crate::proto::metapb::{Peer, PeerRole, RegionEpoch};
    use crate::store::AppliedWrite;

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn regions_that_meet_pass_and_overlapping_ones_fail() {
        let s = StoreId(1);
        let tiled = [
            region(1, b"", b"g"),
            region(2, b"g", b"p"),
            region(3, b"p", b""),
        ];
        assert_eq!(check_no_overlap(s, &tiled), Ok(()));
        assert_eq!(
            check_no_overlap(s, &[region(1, b"", b"g"), region(2, b"t", b"")]),
            Ok(())
        );
        assert!(check_no_overlap(s, &[region(1, b"", b"h"), region(2, b"g", b"")]).is_err());
        // A region reaching the end of the key space overlaps any after it.
        assert!(check_no_overlap(s, &[region(1, b"a", b""), region(2, b"g", b"")]).is_err());
        assert_eq!(check_no_overlap(s, &[]), Ok(()));
    }

    #[test]
    fn regions_must_tile_the_whole_key_space() {
        let tiled = [
            region(1, b"", b"g"),
            region(2, b"g", b"p"),
            region(3, b"p", b""),
        ];
        assert_eq!(check_cover(&tiled), Ok(()));
        assert_eq!(check_cover(&[region(1, b"", b"")]), Ok(()));
        let gap = [region(1, b"", b"g"), region(3, b"p", b"")];
        assert!(check_cover(&gap).is_err());
        let late_start = [region(1, b"a", b"")];
        assert!(check_cover(&late_start).is_err());
        let short = [region(1, b"", b"g"), region(2, b"g", b"p")];
        assert!(check_cover(&short).is_err());
        let past_end = [region(1, b"", b""), region(2, b"g", b"")];
        assert!(check_cover(&past_end).is_err());
        assert!(check_cover(&[]).is_err());
    }

    fn status(region: u64, peer: u64, term: u64, role: Role) -> RegionStatus {
        RegionStatus {
            region: self::region(region, b"", b""),
            peer: Peer {
                id: peer,
                ..Default::default()
            },
            role,
            leader: None,
            term,
            commit_index: 0,
            applied_index: 0,
            first_index: 0,
            hibernated: false,
            awaiting_snapshot: false,
        }
    }

    #[test]
    fn a_region_is_described_by_id_range_epoch_and_peers() {
        let region = Region {
            id: 7,
            start_key: vec![0x00, 0x10],
            end_key: Vec::new(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            peers: vec![
                Peer {
                    id: 1,
                    store_id: 1,
                    role: PeerRole::Voter as i32,
                },
                Peer {
                    id: 5,
                    store_id: 2,
                    role: PeerRole::Learner as i32,
                },
            ],
        };
        assert_eq!(describe(&region), "7[0010, ) v2c3 peers 1@1 5@2");
    }

    #[test]
    fn two_leaders_of_one_region_in_one_term_are_a_violation() {
        let mut leaders = Leaders::default();
        assert_eq!(
            leaders.saw(StoreId(1), &status(1, 1, 5, Role::Leader)),
            Ok(())
        );
        // Seen again, a follower's view, another term, another region: all fine.
        assert_eq!(
            leaders.saw(StoreId(1), &status(1, 1, 5, Role::Leader)),
            Ok(())
        );
        assert_eq!(
            leaders.saw(StoreId(2), &status(1, 2, 5, Role::Follower)),
            Ok(())
        );
        assert_eq!(
            leaders.saw(StoreId(2), &status(1, 2, 6, Role::Leader)),
            Ok(())
        );
        assert_eq!(
            leaders.saw(StoreId(2), &status(2, 2, 5, Role::Leader)),
            Ok(())
        );
        assert_eq!(leaders.terms(), 3);
        assert!(
            leaders
                .saw(StoreId(3), &status(1, 3, 5, Role::Leader))
                .is_err()
        );
        // The same peer id claimed by another store: a violation too.
        assert!(
            leaders
                .saw(StoreId(3), &status(1, 1, 5, Role::Leader))
                .is_err()
        );
        // And another peer on the leader's own store (a replica re-added under a new id).
        assert!(
            leaders
                .saw(StoreId(1), &status(1, 4, 5, Role::Leader))
                .is_err()
        );
    }

    fn write(index: u64, term: u64, key: &str) -> ApplyEvent {
        ApplyEvent {
            region: RegionId(1),
            index,
            term,
            change: AppliedChange::Writes {
                writes: vec![AppliedWrite {
                    command: WriteCommand {
                        ops: vec![crate::proto::commandpb::Op {
                            op: Some(crate::proto::commandpb::op::Op::Delete(
                                crate::proto::commandpb::Delete {
                                    key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                                },
                            )),
                        }],
                    },
                    outcomes: Vec::new(),
                }],
            },
        }
    }

    #[test]
    fn replicas_applying_different_things_at_one_index_are_a_violation() {
        let log = Arc::new(AppliedLog::default());
        let (a, b) = (log.observer(StoreId(1)), log.observer(StoreId(2)));
        a.on_apply(&write(6, 2, "x"));
        b.on_apply(&write(6, 2, "x"));
        a.on_apply(&write(7, 2, "y"));
        // A snapshot at an index stands for many entries: not compared.
        b.on_apply(&ApplyEvent {
            region: RegionId(1),
            index: 7,
            term: 2,
            change: AppliedChange::SnapshotInstalled {
                region: region(1, b"", b""),
            },
        });
        assert_eq!(log.events(), 4);
        assert!(log.take_violations().is_empty());
        b.on_apply(&write(7, 3, "y"));
        assert_eq!(log.take_violations().len(), 1, "another term");
        b.on_apply(&write(7, 2, "z"));
        assert_eq!(log.take_violations().len(), 1, "another command");
        assert!(log.take_violations().is_empty(), "each reported once");
    }
}
