//! Key range checks: a command or read may only touch keys of the region it was sent to.

use super::errors::RegionError;
use crate::proto::metapb::Region;
use crate::storage::region_meta::{contains_key, end_bound};

/// `KeyNotInRegion` unless `key` lies in `[start_key, end_key)` of the region.
pub fn check_key(key: &[u8], region: &Region) -> Result<(), RegionError> {
    if contains_key(region, key) {
        Ok(())
    } else {
        Err(not_in_region(key, region))
    }
}

/// `KeyNotInRegion` unless the range `[start, end)` (`end` None: unbounded) lies inside
/// the region: a range operation never reaches past its region. An empty range passes if
/// its start does.
pub fn check_range(start: &[u8], end: Option<&[u8]>, region: &Region) -> Result<(), RegionError> {
    check_key(start, region)?;
    let fits = match (end, end_bound(region)) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(e), Some(region_end)) => e <= region_end,
    };
    if fits {
        Ok(())
    } else {
        Err(not_in_region(end.unwrap_or_default(), region))
    }
}

/// Whether the region's range meets `[start, end)` (an empty `end`: unbounded), both
/// half-open.
pub fn overlaps_range(region: &Region, start: &[u8], end: &[u8]) -> bool {
    let before_region_end = end_bound(region).is_none_or(|region_end| start < region_end);
    let after_region_start = end.is_empty() || region.start_key.as_slice() < end;
    before_region_end && after_region_start
}

/// Whether `[start, end)` (an empty `end`: unbounded) holds any key: a region a message
/// or a snapshot describes with an empty or inverted range is malformed.
pub fn is_valid_range(start: &[u8], end: &[u8]) -> bool {
    end.is_empty() || start < end
}

fn not_in_region(key: &[u8], region: &Region) -> RegionError {
    RegionError::KeyNotInRegion {
        key: key.to_vec(),
        region: region.region_id(),
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 7,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_range_is_valid_when_it_holds_a_key() {
        assert!(is_valid_range(b"", b""));
        assert!(is_valid_range(b"a", b""));
        assert!(is_valid_range(b"a", b"a\x00"));
        assert!(!is_valid_range(b"a", b"a"));
        assert!(!is_valid_range(b"b", b"a"));
    }

    #[test]
    fn keys_are_checked_against_a_half_open_range() {
        let r = region(b"b", b"d");
        assert!(check_key(b"b", &r).is_ok());
        assert!(check_key(b"c\xff", &r).is_ok());
        assert_eq!(
            check_key(b"d", &r),
            Err(RegionError::KeyNotInRegion {
                key: b"d".to_vec(),
                region: crate::RegionId(7),
                start_key: b"b".to_vec(),
                end_key: b"d".to_vec(),
            })
        );
        assert!(check_key(b"a", &r).is_err());
        let unbounded = region(b"b", b"");
        assert!(check_key(b"zzzz", &unbounded).is_ok());
        assert!(check_key(b"a", &unbounded).is_err());
    }

    #[test]
    fn a_range_must_fit_inside_the_region() {
        let r = region(b"b", b"d");
        assert!(
            check_range(b"b", Some(b"d"), &r).is_ok(),
            "up to the end, exclusive"
        );
        assert!(check_range(b"c", Some(b"c"), &r).is_ok(), "empty");
        assert!(check_range(b"b", Some(b"e"), &r).is_err(), "past the end");
        assert!(
            check_range(b"a", Some(b"c"), &r).is_err(),
            "before the start"
        );
        assert!(
            check_range(b"b", None, &r).is_err(),
            "unbounded in a bounded region"
        );
        let unbounded = region(b"b", b"");
        assert!(check_range(b"b", None, &unbounded).is_ok());
        assert!(check_range(b"c", Some(b"zz"), &unbounded).is_ok());
        match check_range(b"b", Some(b"e"), &r) {
            Err(RegionError::KeyNotInRegion { key, .. }) => assert_eq!(key, b"e"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ranges_overlap_at_their_edges_as_half_open_ranges() {
        let r = region(b"b", b"d");
        assert!(overlaps_range(&r, b"a", b"c"));
        assert!(overlaps_range(&r, b"c", b""));
        assert!(overlaps_range(&r, b"", b""));
        assert!(overlaps_range(&r, b"b", b"b\0"));
        // [a, b) ends where the region starts; [d, ...) starts where it ends.
        assert!(!overlaps_range(&r, b"a", b"b"));
        assert!(!overlaps_range(&r, b"d", b""));
        let unbounded = region(b"m", b"");
        assert!(overlaps_range(&unbounded, b"z", b""));
        assert!(!overlaps_range(&unbounded, b"a", b"m"));
    }
}
