//! The store runtime: the regions of one store driven by a shared batch system.
//!
//! - `batch`: the generic batch system (FSMs, mailboxes, router, pollers) the region peers
//!   and their apply delegates run on.
//! - `apply::eval`: a write command evaluated at apply (CompareAndSwap against the applied
//!   state and the round's own earlier writes).
//! - `Responder` / `Response`: the one-shot answer of every proposal and read.
//! - `Transport` and `Outbound`: one batch per destination store per round, heartbeats
//!   folded (`unfold` restores them on arrival); `InProcessNetwork` carries them between
//!   stores of one process, with faults for tests.
//! - `WalWriter`: group commit — every pending region write merged into one raft log write
//!   and at most one fsync; `FailStop` is the one place a failed write stops the store.
//! - `Ticker`: the store's one timer, ticking only the regions that are not hibernated.
//! - `Clock`: where the runtime's time comes from (`ManualClock` for tests and simulation).
//!
//! Being built: the peer and apply FSMs, the store FSM and the embedding API (see the README's status table).

pub mod apply;
pub mod batch;
mod clock;
mod fail_stop;
mod responder;
mod ticker;
mod transport;
mod wal_writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use fail_stop::FailStop;
pub use responder::{RegionResult, Responder, Response, response_channel};
pub use ticker::{TickReport, Ticker};
pub use transport::{
    BatchReceiver, Fault, FaultId, FlushReport, InProcessNetwork, Outbound, Transport,
    TransportError, unfold,
};
pub use wal_writer::{
    HeldMessages, LogStart, Persisted, WalWriter, WalWriterConfig, WriteNotifier, WriteOutcome,
    WriteStats, WriteTask,
};
