//! What a seed makes of a run before its first step: how many stores and regions, how
//! many clients over how many keys, and the store settings that decide how often logs are
//! compacted (so lagging replicas need snapshots), regions hibernate and committed
//! entries reach apply.

use crate::raft::rng::Rng;
use crate::store::RaftSettings;

/// The fixed parameters of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Stores, 3 to 5.
    pub stores: usize,
    /// Stores holding the first region at bootstrap (the others start empty).
    pub voters: usize,
    /// Regions the key space is split into before the random steps begin.
    pub regions: usize,
    /// Clients issuing operations concurrently.
    pub clients: usize,
    /// Keys the clients use (spread over the whole key space).
    pub keys: usize,
    /// Log GC: a follower lagging more than this many entries needs a snapshot.
    pub gc_max_lag: u64,
    /// Log GC: a pass compacts at least this many entries.
    pub gc_min_entries: u64,
    /// Ticks of idleness before a region hibernates (None: never).
    pub idle_ticks: Option<u32>,
    /// FSMs a poller takes in one batch.
    pub max_batch: usize,
    /// Bytes of committed entries a round hands apply: 1 (one entry per round, so a
    /// backlog to apply spans rounds) or the store's default.
    pub committed_bytes_per_round: u64,
}

impl Shape {
    /// The shape `rng` draws; `stores` and `regions` override the draw when given.
    pub fn draw(rng: &mut Rng, stores: Option<usize>, regions: Option<usize>) -> Shape {
        let drawn_stores = rng.range(3, 6) as usize;
        // Most runs have few regions, so many seeds fit in CI; some have hundreds.
        let drawn_regions = match rng.range(0, 100) {
            0..70 => rng.range(1, 5),
            70..97 => rng.range(5, 33),
            _ => rng.range(100, 1001),
        } as usize;
        let stores = stores.unwrap_or(drawn_stores).clamp(3, 5);
        let regions = regions.unwrap_or(drawn_regions).clamp(1, 1000);
        Shape {
            stores,
            voters: 3,
            regions,
            clients: rng.range(2, 7) as usize,
            keys: rng.range(4, 25) as usize,
            gc_max_lag: rng.range(2, 40),
            gc_min_entries: rng.range(1, 8),
            idle_ticks: rng.chance(50).then(|| rng.range(3, 20) as u32),
            max_batch: rng.range(1, 64) as usize,
            committed_bytes_per_round: if rng.chance(50) {
                1
            } else {
                RaftSettings::default().max_committed_bytes_per_round
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_one_shape_within_bounds_and_overrides_are_clamped() {
        for seed in 0..200 {
            let shape = Shape::draw(&mut Rng::new(seed), None, None);
            assert_eq!(shape, Shape::draw(&mut Rng::new(seed), None, None));
            assert!((3..=5).contains(&shape.stores), "{shape:?}");
            assert!((1..=1000).contains(&shape.regions), "{shape:?}");
            assert!(shape.voters <= shape.stores);
            assert!(shape.clients >= 2 && shape.keys >= 4 && shape.max_batch >= 1);
        }
        // Most runs are small (CI runs many); some have hundreds of regions; half hand
        // apply one entry per round.
        let shapes: Vec<Shape> = (0..400)
            .map(|seed| Shape::draw(&mut Rng::new(seed), None, None))
            .collect();
        let share = |f: &dyn Fn(&Shape) -> bool| shapes.iter().filter(|s| f(s)).count();
        let small = share(&|s| s.regions < 5);
        assert!((240..320).contains(&small), "{small} of 400 small");
        let some = share(&|s| (5..=32).contains(&s.regions));
        assert!(
            (60..160).contains(&some),
            "{some} of 400 with 5 to 32 regions"
        );
        assert!(share(&|s| s.regions >= 100) > 0);
        let one_entry = share(&|s| s.committed_bytes_per_round == 1);
        assert!((150..250).contains(&one_entry), "{one_entry} of 400");
        let forced = Shape::draw(&mut Rng::new(1), Some(9), Some(5000));
        assert_eq!((forced.stores, forced.regions), (5, 1000));
        let small = Shape::draw(&mut Rng::new(1), Some(1), Some(0));
        assert_eq!((small.stores, small.regions), (3, 1));
    }
}
