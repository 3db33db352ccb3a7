//! The store FSM: the control FSM of the raft batch system, for what concerns the store
//! rather than one region. Built so far: messages for regions this store has no peer of
//! arrive here and are dropped, counted. Creating a peer from such a message (when its
//! epoch and range allow) and tombstones come with membership changes.

use super::batch::Fsm;
use super::context::PollContext;
use super::msg::StoreMsg;

/// The store's own FSM.
#[derive(Debug, Default)]
pub(crate) struct StoreFsm {}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
}

impl StoreFsm {
    pub(crate) fn handle(&mut self, msg: StoreMsg, ctx: &mut PollContext) {
        match msg {
            StoreMsg::RaftMessage(m) => {
                metrics::counter!("flotilla_store_unknown_region_messages_total").increment(1);
                tracing::debug!(
                    store = %ctx.shared.store_id,
                    region = m.region_id,
                    "message for a region with no peer here dropped"
                );
            }
        }
    }
}
