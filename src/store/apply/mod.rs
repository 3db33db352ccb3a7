//! The apply side of a region: committed entries turned into KV writes. `eval` evaluates
//! write commands; `fsm` is the apply delegate (`ApplyFsm`) and the apply pollers'
//! handler, which gathers many regions' entries into one KV write batch with each region's
//! apply state and answers the proposals once the batch is written.

pub mod eval;
mod fsm;
mod progress;

pub(crate) use fsm::{ApplyControl, ApplyFsm, ApplyLimits, ApplyPoller};
pub(crate) use progress::AppliedProgress;
