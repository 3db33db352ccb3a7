//! Regions: the typed region errors, the epoch table (which parts of a region's epoch each
//! kind of command checks and bumps) and key range checks. Being built: splits and
//! membership changes as the store applies them.

mod epoch;
mod errors;
mod range;

pub use epoch::{CommandKind, EpochRule, bumped, check_epoch, is_stale};
pub use errors::{BusyReason, DroppedReason, RegionError};
pub use range::{check_key, check_range};
