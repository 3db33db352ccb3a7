//! The simulated key space: two-byte keys, points 0..65,536 of it. Split keys and client
//! keys are points, so a region's range is easy to cut and to print.

use bytes::Bytes;

use crate::raft::rng::Rng;

/// Points in the key space; the empty end key stands for `SPACE`.
pub const SPACE: u32 = 1 << 16;

/// The key at `point` (below `SPACE`).
pub fn key_at(point: u32) -> Bytes {
    let point = point.min(SPACE - 1) as u16;
    Bytes::copy_from_slice(&point.to_be_bytes())
}

/// The point of a region's start key (empty: 0).
pub fn start_point(key: &[u8]) -> u32 {
    match key {
        [] => 0,
        [a] => u32::from(u16::from_be_bytes([*a, 0])),
        [a, b, ..] => u32::from(u16::from_be_bytes([*a, *b])),
    }
}

/// The point of a region's end key (empty: the end of the space).
pub fn end_point(key: &[u8]) -> u32 {
    if key.is_empty() {
        SPACE
    } else {
        start_point(key)
    }
}

/// `n` keys spread evenly over the space.
pub fn spread(n: usize) -> Vec<Bytes> {
    let n = n.max(1) as u32;
    (0..n).map(|i| key_at(i * (SPACE / n) + 17)).collect()
}

/// The keys that cut the space into `n` even regions.
pub fn split_points(n: usize) -> Vec<Bytes> {
    let n = n.clamp(1, SPACE as usize) as u32;
    (1..n)
        .map(|i| key_at((u64::from(i) * u64::from(SPACE) / u64::from(n)) as u32))
        .collect()
}

/// A random key strictly inside `(start, end)` (end empty: the end of the space), if the
/// range has room for one.
pub fn between(start: &[u8], end: &[u8], rng: &mut Rng) -> Option<Bytes> {
    let (low, high) = (start_point(start) + 1, end_point(end));
    (low < high).then(|| key_at(rng.range(u64::from(low), u64::from(high)) as u32))
}

/// A key or value for messages.
pub fn show(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_alphanumeric()) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        crate::region::hex(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_and_keys_round_trip_and_bound_ranges() {
        assert_eq!(start_point(b""), 0);
        assert_eq!(end_point(b""), SPACE);
        assert_eq!(start_point(&key_at(0x1234)), 0x1234);
        assert_eq!(end_point(&key_at(0x1234)), 0x1234);
        assert_eq!(start_point(&[0x12]), 0x1200);
        assert_eq!(key_at(SPACE + 5), key_at(SPACE - 1), "clamped");
    }

    #[test]
    fn split_points_cut_even_rising_regions_and_spread_keys_fall_inside() {
        assert!(split_points(1).is_empty());
        let cuts = split_points(4);
        let points: Vec<u32> = cuts.iter().map(|k| start_point(k)).collect();
        assert_eq!(points, vec![0x4000, 0x8000, 0xc000]);
        let keys = spread(4);
        assert_eq!(keys.len(), 4);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // One key per region of a four-way split.
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(start_point(key) / 0x4000, i as u32);
        }
    }

    #[test]
    fn a_key_between_two_is_strictly_inside_them() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let k = between(&key_at(10), &key_at(13), &mut rng).unwrap();
            assert!((11..13).contains(&start_point(&k)), "{k:?}");
            let tail = between(&key_at(SPACE - 2), b"", &mut rng).unwrap();
            assert_eq!(start_point(&tail), SPACE - 1);
        }
        assert_eq!(between(&key_at(10), &key_at(11), &mut rng), None);
        assert_eq!(between(&key_at(SPACE - 1), b"", &mut rng), None);
    }

    #[test]
    fn keys_show_as_text_or_hex() {
        assert_eq!(show(b"v12"), "v12");
        assert_eq!(show(&[0x00, 0xff]), "00ff");
    }
}
