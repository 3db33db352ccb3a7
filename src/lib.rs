pub mod ids;
pub mod proto;
pub mod raft;
pub mod storage;
pub mod testkit;

pub use ids::{PeerId, RegionId, StoreId};
