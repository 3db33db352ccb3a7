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
        [a] => u32::from(*a) << 8,
        [a, b, ..] => (u32::from(*a) << 8) | u32::from(*b),
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
