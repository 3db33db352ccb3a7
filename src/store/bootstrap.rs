//! Bootstrap: the first region of a cluster, written by every initial store the same way
//! (same region id, range, peers), so their replicas start from the same state without
//! talking to each other first.

use super::engines::Engines;
use crate::proto::metapb::{Region, RegionEpoch};
use crate::region::initial_apply_state;
use crate::storage::kv::{KvError, KvWriteBatch};
use crate::storage::region_meta::{
    all_region_states, normal_state, put_apply_state, put_region_state,
};

/// Why a store could not be bootstrapped.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The store holds regions already.
    #[error("the store holds {0} region(s) already: bootstrap is for empty stores")]
    NotEmpty(usize),
    /// The region described is not one a cluster can start from.
    #[error("invalid first region: {0}")]
    InvalidRegion(String),
    /// The KV engine failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Writes `region` as the store's first region, durably: its metadata and an apply state
/// at the initial log position. Every initial store calls it with the same region. The
/// region's epoch is set to (conf_ver 1, version 1) if it has none.
pub fn bootstrap_region(engines: &Engines, region: &Region) -> Result<(), BootstrapError> {
    let kv = engines.kv.as_ref();
    let existing = all_region_states(kv)?;
    if !existing.is_empty() {
        return Err(BootstrapError::NotEmpty(existing.len()));
    }
    check_first_region(region)?;
    let mut region = region.clone();
    region.epoch.get_or_insert(RegionEpoch {
        conf_ver: 1,
        version: 1,
    });
    let mut batch = KvWriteBatch::default();
    let apply = initial_apply_state();
    put_apply_state(&mut batch, region.region_id(), &apply);
    put_region_state(&mut batch, &normal_state(region));
    kv.write_batch(&batch)?;
    kv.persist_all()?;
    Ok(())
}

fn check_first_region(region: &Region) -> Result<(), BootstrapError> {
    let invalid = |s: String| Err(BootstrapError::InvalidRegion(s));
    if region.id == 0 {
        return invalid("region id 0".into());
    }
    if region.peers.is_empty() {
        return invalid("no peers".into());
    }
    if !region.end_key.is_empty() && region.end_key <= region.start_key {
        return invalid("the end key is not after the start key".into());
    }
    let mut peers = std::collections::HashSet::new();
    let mut stores = std::collections::HashSet::new();
    for p in &region.peers {
        if p.id == 0 || p.store_id == 0 {
            return invalid(format!(
                "peer {} on store {}: ids must not be 0",
                p.id, p.store_id
            ));
        }
        if !peers.insert(p.id) || !stores.insert(p.store_id) {
            return invalid(format!(
                "peer {} on store {}: one peer per id and per store",
                p.id, p.store_id
            ));
        }
    }
    Ok(())
}
