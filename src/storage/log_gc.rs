//! Raft log garbage collection: how far a region's log may be compacted.
//!
//! Entries above the durably applied index must stay (they are replayed after a crash).
//! Below it, a regular pass keeps what a lagging follower still needs, up to a lag bound;
//! past the bound, and for regions `purge_expired_files` names (their old entries pin old
//! log files), the log is compacted anyway and such followers are caught up by snapshot.

use super::raft_log::{LogError, RaftLogStore};
use crate::RegionId;

/// What the store knows of one region when it runs GC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcInput {
    /// The region described.
    pub region: RegionId,
    /// Applied index made durable in the KV engine (`ApplyTracker::durable_applied`).
    pub durable_applied: u64,
    /// The lowest match index among the followers, when this store leads the region.
    pub slowest_follower: Option<u64>,
    /// The first index still in the log.
    pub first_index: u64,
}

/// How eagerly a regular pass compacts; a forced pass ignores both limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// A follower lagging more than this many entries behind the applied index no longer
    /// holds back compaction (it will get a snapshot).
    pub max_follower_lag: u64,
    /// Don't bother compacting fewer entries than this in a regular pass.
    pub min_entries: u64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            max_follower_lag: 10_000,
            min_entries: 64,
        }
    }
}

/// The index to compact to (entries below it are dropped), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcDecision {
    /// Entries below this index are dropped; never above the durable applied index + 1.
    pub compact_to: u64,
    /// A follower still needed entries below `compact_to`: it will need a snapshot.
    pub strands_follower: bool,
}

impl GcPolicy {
    /// A regular pass: keep what the slowest follower needs, unless it lags too far.
    pub fn regular(&self, r: &GcInput) -> Option<GcDecision> {
        let keep_for_follower = r
            .slowest_follower
            .filter(|&m| r.durable_applied.saturating_sub(m) <= self.max_follower_lag)
            .map_or(u64::MAX, |m| m + 1);
        let compact_to = (r.durable_applied + 1).min(keep_for_follower);
        (compact_to >= r.first_index + self.min_entries).then(|| self.decision(r, compact_to))
    }

    /// A forced pass (the region pins old log files): everything durably applied goes.
    pub fn forced(&self, r: &GcInput) -> Option<GcDecision> {
        let compact_to = r.durable_applied + 1;
        (compact_to > r.first_index).then(|| self.decision(r, compact_to))
    }

    fn decision(&self, r: &GcInput, compact_to: u64) -> GcDecision {
        GcDecision {
            compact_to,
            strands_follower: r.slowest_follower.is_some_and(|m| m + 1 < compact_to),
        }
    }
}

/// One GC round over the store's log: purges expired files, force-compacts the regions
/// that pin them, and compacts the others regularly (a region whose compaction is refused
/// is skipped with a warning). Returns the decisions it carried out;
/// `input` describes a region (None: not known here, left alone).
pub fn run_gc(
    log: &dyn RaftLogStore,
    policy: &GcPolicy,
    regions: &[RegionId],
    input: impl Fn(RegionId) -> Option<GcInput>,
) -> Result<Vec<(RegionId, GcDecision)>, LogError> {
    let pinning = log.purge_expired_files()?;
    let mut done = Vec::new();
    for &region in regions {
        let Some(r) = input(region) else { continue };
        let decision = if pinning.contains(&region) {
            policy.forced(&r)
        } else {
            policy.regular(&r)
        };
        if let Some(d) = decision {
            // One region's refusal (a log cut shorter than its applied index) must not stop
            // GC for the others.
            match log.compact_to(region, d.compact_to) {
                Ok(_) => done.push((region, d)),
                Err(e) => {
                    tracing::warn!(region = region.get(), error = %e, "log GC skipped a region")
                }
            }
        }
    }
    if done.iter().any(|(r, _)| pinning.contains(r)) {
        // The forced compactions may have freed more files.
        log.purge_expired_files()?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(durable_applied: u64, slowest_follower: Option<u64>, first_index: u64) -> GcInput {
        GcInput {
            region: RegionId(1),
            durable_applied,
            slowest_follower,
            first_index,
        }
    }

    #[test]
    fn regular_pass_table() {
        let p = GcPolicy {
            max_follower_lag: 100,
            min_entries: 10,
        };
        let d = |compact_to, strands_follower| {
            Some(GcDecision {
                compact_to,
                strands_follower,
            })
        };
        #[rustfmt::skip]
        let cases = [
            (input(500, None, 1), d(501, false)),            // no followers: up to applied
            (input(500, Some(450), 1), d(451, false)),       // keep what the follower needs
            (input(500, Some(300), 1), d(501, true)),        // lags beyond 100: snapshot it
            (input(500, Some(600), 1), d(501, false)),       // never past durable applied
            (input(500, Some(400), 1), d(401, false)),       // lags exactly 100: kept
            (input(500, Some(399), 1), d(501, true)),        // 101: snapshot it
            (input(500, Some(500), 1), d(501, false)),       // needs nothing below 501
            (input(500, Some(450), 441), d(451, false)),     // exactly 10 entries to drop
            (input(500, Some(450), 442), None),              // fewer than 10 entries to drop
            (input(0, None, 1), None),                       // nothing applied
        ];
        for (r, want) in cases {
            assert_eq!(p.regular(&r), want, "{r:?}");
        }
    }

    #[test]
    fn forced_pass_ignores_followers_but_not_durability() {
        let p = GcPolicy::default();
        let got = p.forced(&input(500, Some(10), 1)).unwrap();
        assert_eq!(
            got,
            GcDecision {
                compact_to: 501,
                strands_follower: true
            }
        );
        assert_eq!(p.forced(&input(500, None, 501)), None, "already compacted");
        let one = p.forced(&input(500, None, 500)).map(|d| d.compact_to);
        assert_eq!(one, Some(501), "a single applied entry still goes");
    }
}
