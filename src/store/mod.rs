//! The store runtime: the regions of one store driven by a shared batch system, and the
//! embedding API over it (`Store`).
//!
//! The write path, in one pass: `Store::propose` → the router → the region's peer FSM
//! (`peer`: checks, proposes) → its Ready (`peer/ready.rs`): messages into the round's
//! `Outbound`, entries into a `WriteTask` → the `WalWriter` (one write, one fsync for
//! every region) → the peer learns what is durable → committed entries to the apply FSM
//! (`apply`: one KV batch for many regions) → the responder.
//!
//! - `batch`: the generic batch system (FSMs, mailboxes, router, pollers) the region peers
//!   and their apply delegates run on.
//! - `Store`, `StoreConfig`, `Engines`, `bootstrap_region`: opening a store and using it.
//! - `loops.rs`: the three loop bodies taken in turn on one thread (a stepped store,
//!   `RunMode::OneThread`), and `SharedRunner`, one thread for several stores' loops.
//! - `Responder` / `Response`: the one-shot answer of every proposal and read.
//! - `Transport` and `Outbound`: one batch per destination store per round, heartbeats
//!   folded (`unfold` restores them on arrival); `InProcessNetwork` carries them between
//!   stores of one process, with faults for tests.
//! - `WalWriter`: group commit; `FailStop` is the one place a failed write stops the store.
//! - `Ticker`: the store's one timer, ticking only the regions that are not hibernated.
//! - Hibernation (`peer/hibernate.rs`): idle regions stop ticking; store liveness
//!   (`liveness.rs`, pinged and checked by the store FSM) wakes the ones whose leader's
//!   store falls silent, a bounded number per tick.
//! - `Clock`: where the runtime's time comes from (`ManualClock` for tests and simulation).
//!
//! - `ApplyObserver`: what an embedder registers at open to see every applied command and
//!   admin change, in log order.
//! - `metrics.rs`: the handles of the metrics the loops record every round, taken once (the
//!   README's Metrics lists them all).

pub mod apply;
pub mod batch;
mod bootstrap;
mod clock;
mod codec;
mod config;
mod context;
mod engines;
mod fail_stop;
mod flow;
mod liveness;
mod loops;
mod meta;
mod metrics;
mod msg;
mod observer;
mod peer;
mod raft_poller;
mod recovery;
mod request;
mod responder;
mod runtime;
mod snapshot_worker;
mod store_fsm;
mod ticker;
mod transport;
mod wal_writer;

pub use bootstrap::{BootstrapError, bootstrap_region};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{HibernationSettings, RaftSettings, StoreConfig};
pub use context::StartError;
pub use engines::{Engines, KvView, StoreKv};
pub use fail_stop::FailStop;
pub use flow::{Charge, FlowLimits, Gauge};
pub use liveness::Liveness;
pub use loops::SharedRunner;
pub use meta::StoreMeta;
pub use observer::{AppliedChange, AppliedWrite, ApplyEvent, ApplyObserver};
pub use request::{
    ChangePeersResponse, HandOff, PeerChange, ReadRequest, ReadResponse, RegionStatus, ScanOrder,
    SplitResponse, WriteResponse,
};
pub use responder::{RegionResult, RequestKind, Responder, Response, response_channel};
pub use runtime::{RunMode, SnapshotSteps, Store, StoreError};
pub use snapshot_worker::SnapshotWork;
pub use ticker::{TickReport, Ticker};
pub use transport::{
    BatchReceiver, Fault, FaultId, FlushReport, Hurry, InProcessNetwork, Outbound, Transport,
    TransportError, unfold,
};
pub use wal_writer::{
    HeldMessages, LogStart, Persisted, WalWriter, WalWriterConfig, WriteNotifier, WriteOutcome,
    WriteStats, WriteTask,
};
