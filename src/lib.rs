pub mod ids;
pub mod proto;
pub mod raft;
pub mod storage;

pub use ids::{PeerId, RegionId, StoreId};
