//! Region epochs: which parts of the epoch each kind of command checks, and which it bumps,
//! in one table used both when a command is proposed and when it is applied. A command
//! routed with an epoch the region has moved past gets `EpochNotMatch`.
//!
//! `conf_ver` grows with each membership change, `version` with each split or merge. A
//! data command only needs the range to be the one it was routed to (version); a
//! membership change only needs the membership it was decided on (conf_ver); a split needs
//! both, since it hands peers of the current membership new ranges.

use super::errors::RegionError;
use crate::proto::metapb::{Region, RegionEpoch};

/// The kinds of command a region serves, as the epoch table knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Put / Delete / DeleteRange / CompareAndSwap.
    Write,
    /// Get / BatchGet / Scan.
    Read,
    /// Split the region at one or more keys.
    Split,
    /// Add, remove or promote peers (a membership change).
    ChangePeers,
    /// Hand leadership to another peer.
    TransferLeader,
    /// Drop log entries below an index (log GC).
    CompactLog,
}

/// What a command kind does with the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRule {
    /// Refused unless routed with the region's current `version`.
    pub check_version: bool,
    /// Refused unless routed with the region's current `conf_ver`.
    pub check_conf_ver: bool,
    /// Applying it bumps `version`.
    pub bumps_version: bool,
    /// Applying it bumps `conf_ver`.
    pub bumps_conf_ver: bool,
}

const fn rule(check_version: bool, check_conf_ver: bool, bumps: (bool, bool)) -> EpochRule {
    EpochRule {
        check_version,
        check_conf_ver,
        bumps_version: bumps.0,
        bumps_conf_ver: bumps.1,
    }
}

impl CommandKind {
    /// The epoch table. Columns: checks version, checks conf_ver, (bumps version, bumps
    /// conf_ver).
    pub const fn epoch_rule(self) -> EpochRule {
        match self {
            CommandKind::Write => rule(true, false, (false, false)),
            CommandKind::Read => rule(true, false, (false, false)),
            CommandKind::Split => rule(true, true, (true, false)),
            CommandKind::ChangePeers => rule(false, true, (false, true)),
            CommandKind::TransferLeader => rule(true, true, (false, false)),
            CommandKind::CompactLog => rule(false, false, (false, false)),
        }
    }
}

/// Checks a command of `kind`, routed with `epoch`, against the region as it is now. A
/// command without an epoch is refused by any rule that checks one.
pub fn check_epoch(
    kind: CommandKind,
    epoch: Option<&RegionEpoch>,
    region: &Region,
) -> Result<(), RegionError> {
    let rule = kind.epoch_rule();
    if !rule.check_version && !rule.check_conf_ver {
        return Ok(());
    }
    let current = region.epoch.unwrap_or_default();
    let stale = match epoch {
        None => true,
        Some(e) => {
            (rule.check_version && e.version != current.version)
                || (rule.check_conf_ver && e.conf_ver != current.conf_ver)
        }
    };
    if stale {
        return Err(RegionError::EpochNotMatch {
            current: vec![region.clone()],
        });
    }
    Ok(())
}

/// The region's epoch after applying a command of `kind`.
pub fn bumped(kind: CommandKind, epoch: RegionEpoch) -> RegionEpoch {
    let rule = kind.epoch_rule();
    RegionEpoch {
        version: epoch.version + u64::from(rule.bumps_version),
        conf_ver: epoch.conf_ver + u64::from(rule.bumps_conf_ver),
    }
}

/// Whether `a` is older than `b` in either part: a message or a region state carrying it
/// describes a region that has moved on.
pub fn is_stale(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    a.version < b.version || a.conf_ver < b.conf_ver
}

/// Where an epoch stands in its region's history: version (splits and merges: the range)
/// first, then conf_ver (membership). Two descriptions of one region are ordered by it;
/// one newer in a single part only still sorts by version first, so a reader comparing
/// them is never stuck between the two.
pub fn succession(epoch: &RegionEpoch) -> (u64, u64) {
    (epoch.version, epoch.conf_ver)
}

/// The newest description (by `succession`, the first seen among equals) of each region
/// among `regions`, which may hold several per region id (from several stores), in start
/// key order.
pub fn newest_regions(regions: impl IntoIterator<Item = Region>) -> Vec<Region> {
    let position = |r: &Region| succession(&r.epoch.unwrap_or_default());
    let mut newest: std::collections::BTreeMap<u64, Region> = Default::default();
    for region in regions {
        match newest.get(&region.id) {
            Some(known) if position(known) >= position(&region) => {}
            _ => {
                newest.insert(region.id, region);
            }
        }
    }
    let mut regions: Vec<Region> = newest.into_values().collect();
    regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(version: u64, conf_ver: u64) -> Region {
        Region {
            id: 1,
            epoch: Some(RegionEpoch { conf_ver, version }),
            ..Default::default()
        }
    }

    fn epoch(version: u64, conf_ver: u64) -> Option<RegionEpoch> {
        Some(RegionEpoch { conf_ver, version })
    }

    const ALL: [CommandKind; 6] = [
        CommandKind::Write,
        CommandKind::Read,
        CommandKind::Split,
        CommandKind::ChangePeers,
        CommandKind::TransferLeader,
        CommandKind::CompactLog,
    ];

    #[test]
    fn each_kind_checks_exactly_the_parts_its_rule_names() {
        let r = region(5, 3);
        for kind in ALL {
            let rule = kind.epoch_rule();
            let ok = |e: Option<RegionEpoch>| check_epoch(kind, e.as_ref(), &r).is_ok();
            assert!(ok(epoch(5, 3)), "{kind:?}: the current epoch passes");
            assert_eq!(
                ok(epoch(4, 3)),
                !rule.check_version,
                "{kind:?}: older version"
            );
            assert_eq!(
                ok(epoch(6, 3)),
                !rule.check_version,
                "{kind:?}: newer version"
            );
            assert_eq!(
                ok(epoch(5, 2)),
                !rule.check_conf_ver,
                "{kind:?}: older conf_ver"
            );
            assert_eq!(
                ok(None),
                !rule.check_version && !rule.check_conf_ver,
                "{kind:?}: no epoch"
            );
        }
    }

    #[test]
    fn the_table_says_what_tikv_users_expect() {
        // Data commands follow the range; membership changes follow the membership; a
        // split needs both and moves the range; nothing but a membership change moves
        // conf_ver.
        let w = CommandKind::Write.epoch_rule();
        assert!(w.check_version && !w.check_conf_ver && !w.bumps_version && !w.bumps_conf_ver);
        let s = CommandKind::Split.epoch_rule();
        assert!(s.check_version && s.check_conf_ver && s.bumps_version && !s.bumps_conf_ver);
        let c = CommandKind::ChangePeers.epoch_rule();
        assert!(!c.check_version && c.check_conf_ver && !c.bumps_version && c.bumps_conf_ver);
        assert_eq!(CommandKind::Read.epoch_rule(), w);
        let t = CommandKind::TransferLeader.epoch_rule();
        assert!(t.check_version && t.check_conf_ver && !t.bumps_version && !t.bumps_conf_ver);
        let g = CommandKind::CompactLog.epoch_rule();
        assert_eq!(g, rule(false, false, (false, false)));
    }

    #[test]
    fn a_stale_epoch_is_answered_with_the_current_region() {
        let r = region(5, 3);
        let err = check_epoch(CommandKind::Write, epoch(4, 3).as_ref(), &r).unwrap_err();
        assert_eq!(err, RegionError::EpochNotMatch { current: vec![r] });
    }

    #[test]
    fn bumping_moves_only_what_the_rule_says() {
        let e = RegionEpoch {
            conf_ver: 3,
            version: 5,
        };
        assert_eq!(
            bumped(CommandKind::Split, e),
            RegionEpoch {
                conf_ver: 3,
                version: 6
            }
        );
        assert_eq!(
            bumped(CommandKind::ChangePeers, e),
            RegionEpoch {
                conf_ver: 4,
                version: 5
            }
        );
        assert_eq!(bumped(CommandKind::Write, e), e);
    }

    #[test]
    fn an_epoch_is_stale_if_either_part_is_behind() {
        let e = |version, conf_ver| RegionEpoch { conf_ver, version };
        assert!(is_stale(&e(1, 2), &e(2, 2)));
        assert!(is_stale(&e(2, 1), &e(2, 2)));
        assert!(!is_stale(&e(2, 2), &e(2, 2)));
        assert!(!is_stale(&e(3, 1), &e(2, 1)));
        assert!(!is_stale(&e(2, 3), &e(2, 2)));
    }

    #[test]
    fn the_newest_description_of_each_region_wins_in_key_order() {
        let described = |id: u64, start: &str, end: &str, version: u64, conf_ver: u64| Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: epoch(version, conf_ver),
            ..Region::default()
        };
        // Region 2 holds the start of the key space: key order is not id order.
        let newest = newest_regions([
            described(1, "m", "", 1, 1),
            described(2, "", "m", 1, 1),
            described(1, "m", "", 2, 1),
            // Newer membership, older range: version decides.
            described(1, "m", "", 1, 5),
            described(2, "", "m", 1, 2),
            described(2, "", "m", 1, 1),
            // The same epoch again, as another store describes it: the first one stays.
            described(2, "", "z", 1, 2),
        ]);
        let seen: Vec<(u64, &[u8], u64, u64)> = newest
            .iter()
            .map(|r| {
                let (version, conf_ver) = succession(&r.epoch.unwrap_or_default());
                (r.id, r.end_key.as_slice(), version, conf_ver)
            })
            .collect();
        assert_eq!(seen, [(2, &b"m"[..], 1, 2), (1, &b""[..], 2, 1)]);
        assert!(newest_regions([]).is_empty());
    }
}
