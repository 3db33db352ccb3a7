//! Regions: the typed region errors, the epoch table (which parts of a region's epoch each
//! kind of command checks and bumps), key range checks, splits and membership changes as
//! the store applies them.

mod conf_change;
mod epoch;
mod errors;
mod range;
mod split;
mod wire;

pub use conf_change::{change_peers, check_new_peer, conf_state_of, is_joint};
pub use epoch::{
    CommandKind, EpochRule, bumped, check_epoch, is_stale, newest_regions, succession,
};
pub(crate) use errors::hex;
pub use errors::{BusyReason, DroppedReason, RegionError};
pub use range::{check_key, check_range, is_valid_range, overlaps_range};
pub use split::{RAFT_INIT_INDEX, RAFT_INIT_TERM, initial_apply_state, split_region};
pub use wire::UnknownRegionError;
