//! `Store`: one store's runtime, assembled — the raft and apply batch systems, the WAL
//! writer, the ticker — and the embedding API over it: propose, read, split, transfer
//! leadership, status.
//!
//! It runs on threads per role (`RunMode::Threads`: poller pools, one WAL writer thread,
//! one timer thread), on one thread taking the roles in turn (`RunMode::OneThread`), on a
//! thread it shares with other stores of the process (`RunMode::Shared`), or stepped by
//! the caller (`RunMode::Stepped`: `step_raft`, `step_apply`, `step_wal`, `tick` are the
//! threads' loop bodies, for deterministic tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};
use parking_lot::Mutex;

use super::apply::{ApplyControl, ApplyFsm, ApplyPoller};
use super::batch::{BatchSystem, PollOutcome, PollerPool, SendError};
use super::config::StoreConfig;
use super::context::{LeaseClock, PollContext, RegionData, StartError, StoreShared};
use super::engines::Engines;
use super::fail_stop::FailStop;
use super::flow::Flow;
use super::liveness::Liveness;
use super::loops::{Loops, Membership, Round, SharedRunner};
use super::meta::StoreMeta;
use super::msg::{Command, PeerMsg, ProposeMsg, ReadMsg, StoreMsg, TransferLeaderMsg};
use super::observer::ApplyObserver;
use super::peer::PeerFsm;
use super::raft_poller::{RaftPoller, RouterNotifier, StoreReceiver};
use super::recovery::finish_interrupted_destroys;
use super::request::{
    ChangePeersResponse, HandOff, HandOffAsk, HandOffEnd, PeerChange, ReadRequest, ReadResponse,
    RegionStatus, SplitResponse, WriteResponse,
};
use super::responder::{RequestKind, Responder, Response, response_channel};
use super::snapshot_worker::{SnapshotDirs, SnapshotWork, SnapshotWorker};
use super::store_fsm::StoreFsm;
use super::ticker::Ticker;
use super::transport::{BatchReceiver, Transport};
use super::wal_writer::{WalWriter, WriteOutcome, WriteTask};
use crate::proto::commandpb::{SplitRequest, WriteCommand};
use crate::proto::metapb::{Region, RegionEpoch};
use crate::proto::storagepb::{PeerState, RaftApplyState};
use crate::raft::NodeStart;
use crate::region::{BusyReason, DroppedReason, RegionError};
use crate::storage::kv::KvError;
use crate::storage::raft_log::LogError;
use crate::storage::region_meta::{all_region_states, apply_state};
use crate::storage::snapshot::{self, SnapshotError};
use crate::{PeerId, RegionId, StoreId};

/// Why a store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The KV engine failed reading the regions' state.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A region's peer could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A region has a region state but no apply state: the KV engine is damaged.
    #[error("region {0} has a region state but no apply state")]
    MissingApplyState(RegionId),
    /// A runtime thread could not be started, or the snapshot directory made.
    #[error("starting the store: {0}")]
    Io(#[from] std::io::Error),
    /// Finishing a destroy a crash interrupted failed (the raft log failed).
    #[error("finishing a destroy a crash interrupted: {0}")]
    Log(#[from] LogError),
    /// Finishing a snapshot install a crash interrupted failed (the KV engine failed).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// How the store's loops run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    /// On threads of its own, one pool per role: raft pollers, apply pollers, a WAL
    /// writer thread, a timer thread, a snapshot worker thread. A log write and its fsync
    /// never hold up the raft pollers.
    Threads,
    /// The raft poller, the WAL writer and the apply poller take turns on one thread (a
    /// timer and a snapshot worker keep threads of their own; the pool sizes are not
    /// used). A write crosses fewer threads, and the store's raft work waits while its log
    /// is written (as in a TiKV raftstore whose pollers write their own log): for an
    /// in-memory log, few cores, or several stores in one process.
    OneThread,
    /// As `OneThread`, on a thread every store opened on the same `SharedRunner` takes
    /// turns on (a timer and a snapshot worker keep threads of their own): for several
    /// stores in one process with in-memory engines (see `SharedRunner`).
    Shared(SharedRunner),
    /// Stepped by the caller, on the caller's thread (`step_raft`, `step_apply`,
    /// `step_wal`, `step_snapshot`, `tick`).
    Stepped,
}

/// Whether a stepped round runs the snapshot worker's next task or holds it back (a
/// test that wants a snapshot to wait while other things happen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSteps {
    /// Run one queued snapshot task per round.
    Run,
    /// Leave snapshot tasks queued.
    Hold,
}

type RaftSystem = BatchSystem<RegionId, PeerFsm, StoreFsm>;
type ApplySystem = BatchSystem<RegionId, ApplyFsm, ApplyControl>;

struct Threads {
    raft: PollerPool<RegionId, PeerFsm, StoreFsm>,
    apply: PollerPool<RegionId, ApplyFsm, ApplyControl>,
    wal: JoinHandle<()>,
    side: SideThreads,
}

/// `RunMode::OneThread`: the thread running the loops, and the two beside it.
struct OneThread {
    runner: JoinHandle<()>,
    side: SideThreads,
}

/// `RunMode::Shared`: the store's place on the shared thread, and its own two threads.
struct Shared {
    membership: Membership,
    side: SideThreads,
}

/// The threads beside the loops whenever the store runs threads: the timer and the
/// snapshot worker.
struct SideThreads {
    timer: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    /// Tells the timer and the snapshot worker to end.
    stopping: Arc<AtomicBool>,
}

impl SideThreads {
    fn spawn(shared: &Arc<StoreShared>, worker: SnapshotWorker) -> std::io::Result<SideThreads> {
        let stopping = Arc::new(AtomicBool::new(false));
        Ok(SideThreads {
            timer: spawn_timer(shared, stopping.clone())?,
            snapshots: spawn_snapshot_worker(shared.store_id, worker, stopping.clone())?,
            stopping,
        })
    }

    /// Ends the timer (no tick comes after this returns) and tells the snapshot worker to
    /// end; its thread comes back, to be joined once the loops have stopped.
    fn stop_timer(self) -> JoinHandle<()> {
        self.stopping.store(true, Ordering::Release);
        let _ = self.timer.join();
        self.snapshots
    }
}

struct Stepped {
    loops: Loops,
    snapshots: SnapshotWorker,
}

enum Driver {
    Threads(Box<Threads>),
    OneThread(Box<OneThread>),
    Shared(Box<Shared>),
    Stepped(Box<Stepped>),
    Stopped,
}

/// One store: the regions it holds, and the API an embedding database uses.
pub struct Store {
    shared: Arc<StoreShared>,
    /// Locked only to step (stepped mode, through `&mut self`: no lock taken) and to stop.
    driver: Mutex<Driver>,
    /// Set first thing on shutdown: requests from then on are refused with `StoreStopping`.
    stopped: AtomicBool,
    /// Kept so pollers made later can reach the writer; dropped on shutdown, which lets
    /// the writer see the end.
    wal: Mutex<Option<Sender<WriteTask>>>,
}

impl Store {
    /// The store's internals, for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &StoreShared {
        &self.shared
    }

    /// Opens the store over its engines: every region the KV engine holds starts (its log
    /// replayed from its applied index), and the runtime starts in `mode`. Batches from
    /// other stores go to `receiver()`; batches to them leave through `transport`. The
    /// store's metrics go to the `metrics` recorder installed when it opens: install one
    /// first.
    pub fn open(
        config: StoreConfig,
        engines: Engines,
        transport: Arc<dyn Transport>,
        mode: RunMode,
    ) -> Result<Store, StoreError> {
        Store::open_observed(config, engines, transport, mode, Vec::new())
    }

    /// `open`, with apply observers: each sees every command and admin change the store's
    /// regions apply from the start (the entries replayed at open included), each region's
    /// in log order (see `ApplyObserver`).
    pub fn open_observed(
        config: StoreConfig,
        engines: Engines,
        transport: Arc<dyn Transport>,
        mode: RunMode,
        observers: Vec<Arc<dyn ApplyObserver>>,
    ) -> Result<Store, StoreError> {
        let raft_system: RaftSystem =
            BatchSystem::new(Box::new(StoreFsm::default()), config.raft_pollers.clone());
        let apply_system: ApplySystem =
            BatchSystem::new(Box::new(ApplyControl), config.apply_pollers.clone());
        let (wal_tx, wal_rx) = channel::unbounded();
        let (snapshot_tx, snapshot_rx) = channel::unbounded();
        let fail_stop = FailStop::new();
        let snapshot_dirs = SnapshotDirs::under(&engines.snapshots);
        std::fs::create_dir_all(&snapshot_dirs.generated)?;
        std::fs::create_dir_all(&snapshot_dirs.received)?;
        // An install a crash interrupted is finished (or its region voided) first.
        let recovered = snapshot::recover(
            engines.kv.as_ref(),
            &snapshot_dirs.received,
            config.max_apply_batch_bytes,
        )?;
        for region in recovered.awaiting_snapshot {
            tracing::warn!(region = %region, "region voided by a damaged snapshot: its replica starts without data and asks its leader for a snapshot");
        }
        let lease_clock = match mode {
            RunMode::Stepped => LeaseClock::Ticks,
            RunMode::Threads | RunMode::OneThread | RunMode::Shared(_) => LeaseClock::RealTime {
                tick: config.raft.tick_interval,
            },
        };
        let shared = Arc::new(StoreShared {
            store_id: config.store_id,
            lease_clock,
            ticker: Ticker::new(raft_system.router().clone(), config.raft.max_catch_up_ticks),
            raft_router: raft_system.router().clone(),
            apply_router: apply_system.router().clone(),
            engines: engines.clone(),
            transport: transport.clone(),
            meta: Mutex::new(StoreMeta::default()),
            fail_stop: fail_stop.clone(),
            cfg: config.clone(),
            snapshot_dirs: snapshot_dirs.clone(),
            snapshot_tasks: snapshot_tx,
            flow: Flow::new(config.flow.clone()),
            liveness: Arc::default(),
            observers,
        });
        load_regions(&shared)?;
        let writer = WalWriter::new(
            config.store_id,
            engines.log.clone(),
            wal_rx,
            RouterNotifier::new(shared.raft_router.clone()),
            transport,
            fail_stop.clone(),
            config.wal.clone(),
        );
        let apply_poller = |_| {
            ApplyPoller::new(
                shared.clone(),
                super::apply::ApplyLimits {
                    batch_bytes: config.max_apply_batch_bytes,
                    delete_range_bytes: config.delete_range_batch_bytes,
                },
            )
        };
        // Stepped, nothing waits on the wall clock: held heartbeats go at each pause.
        let hold = match mode {
            RunMode::Stepped => Duration::ZERO,
            RunMode::Threads | RunMode::OneThread | RunMode::Shared(_) => {
                config.raft.heartbeat_hold
            }
        };
        let raft_poller =
            |_| RaftPoller::new(PollContext::new(shared.clone(), wal_tx.clone()), hold);
        let snapshot_worker = SnapshotWorker::new(
            snapshot_rx,
            snapshot_dirs,
            config.snapshot_chunk_bytes,
            shared.transport.clone(),
            shared.raft_router.clone(),
        );
        let driver = match mode {
            RunMode::Stepped => Driver::Stepped(Box::new(Stepped {
                loops: Loops {
                    raft: raft_system.poller(raft_poller(0)),
                    wal: writer,
                    apply: apply_system.poller(apply_poller(0)),
                },
                snapshots: snapshot_worker,
            })),
            RunMode::Threads => {
                let store = config.store_id;
                let raft = raft_system.spawn(&format!("raft-{store}"), raft_poller)?;
                let apply = apply_system.spawn(&format!("apply-{store}"), apply_poller)?;
                let wal = spawn_wal(store, writer)?;
                let side = SideThreads::spawn(&shared, snapshot_worker)?;
                Driver::Threads(Box::new(Threads {
                    raft,
                    apply,
                    wal,
                    side,
                }))
            }
            RunMode::OneThread => {
                let store = config.store_id;
                let loops = Loops {
                    raft: raft_system.poller(raft_poller(0)),
                    wal: writer,
                    apply: apply_system.poller(apply_poller(0)),
                };
                let runner = std::thread::Builder::new()
                    .name(format!("store-{store}"))
                    .spawn(move || loops.run())?;
                let side = SideThreads::spawn(&shared, snapshot_worker)?;
                Driver::OneThread(Box::new(OneThread { runner, side }))
            }
            RunMode::Shared(runner) => {
                let side = SideThreads::spawn(&shared, snapshot_worker)?;
                let membership = runner.join(Loops {
                    raft: raft_system.poller(raft_poller(0)),
                    wal: writer,
                    apply: apply_system.poller(apply_poller(0)),
                });
                Driver::Shared(Box::new(Shared { membership, side }))
            }
        };
        Ok(Store {
            shared,
            driver: Mutex::new(driver),
            stopped: AtomicBool::new(false),
            wal: Mutex::new(Some(wal_tx)),
        })
    }

    /// This store's id.
    pub fn id(&self) -> StoreId {
        self.shared.store_id
    }

    /// Where other stores' batches for this store are delivered.
    pub fn receiver(&self) -> Arc<dyn BatchReceiver> {
        StoreReceiver::new(
            self.shared.store_id,
            self.shared.raft_router.clone(),
            self.shared.liveness.clone(),
            self.shared.snapshot_dirs.received.clone(),
        )
    }

    /// Proposes a write command to `region`, routed with `epoch`. The response comes once
    /// the command is applied here, or with the typed error that stopped it.
    pub fn propose(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        command: WriteCommand,
    ) -> Response<WriteResponse> {
        self.propose_command(region, epoch, |responder| Command::Write {
            command,
            responder,
        })
    }

    /// Reads from `region`, routed with `epoch`, linearizably (on its leader).
    pub fn read(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        request: ReadRequest,
    ) -> Response<ReadResponse> {
        let (responder, response) = response_channel(region);
        self.send(
            region,
            PeerMsg::Read(Box::new(ReadMsg {
                epoch: Some(epoch),
                request,
                responder,
            })),
        );
        response
    }

    /// Splits `region` at the requests' keys (new region and peer ids supplied by the
    /// caller). The response lists every region of the old range once the split is applied
    /// here and this store has started the new regions' peers, so a status or a request
    /// for one of them that follows the answer finds it (unless starting one failed, which
    /// stops the store, or its peer already ran empty here, created by the new region's
    /// leader, and waits for a snapshot).
    pub fn split(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        splits: Vec<SplitRequest>,
    ) -> Response<SplitResponse> {
        self.propose_command(region, epoch, |responder| Command::Split {
            splits,
            responder,
        })
    }

    /// Changes `region`'s membership: one change directly, several through joint
    /// consensus (promoting a learner is `PeerChange::AddVoter` of it; see `PeerChange`).
    /// The response comes once the change is applied here; a joint state is left by
    /// itself right after, and another change is refused until it is.
    pub fn change_peers(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        changes: Vec<PeerChange>,
    ) -> Response<ChangePeersResponse> {
        self.propose_command(region, epoch, |responder| Command::ChangePeers {
            changes,
            responder,
        })
    }

    /// Asks `region`'s leader (this replica) to hand leadership to the peer `to`. The
    /// response says the transfer started; the region's status shows when it is done.
    pub fn transfer_leader(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        to: PeerId,
    ) -> Response<()> {
        let (responder, response) = response_channel(region);
        self.send(
            region,
            PeerMsg::TransferLeader(Box::new(TransferLeaderMsg {
                epoch: Some(epoch),
                to,
                responder,
            })),
        );
        response
    }

    /// This replica's view of `region`.
    pub fn region_status(&self, region: RegionId) -> Response<RegionStatus> {
        let (responder, response) = response_channel(region);
        self.send(region, PeerMsg::Status(Box::new(responder)));
        response
    }

    /// Hands every leadership this store holds to a voter elsewhere, before a planned stop:
    /// each region it leads transfers to its most caught-up voter on a store not known
    /// down (woken if it sleeps), and this returns once none of them leads here any more,
    /// or after `within`. A transfer not finished within a third of the time (its target
    /// may be gone without being known down yet) is given up for another voter. The
    /// regions keep serving meanwhile, and one may be elected here again before the store
    /// stops. Needs the store's threads (a stepped store answers only when stepped, so the
    /// wait runs out).
    pub fn hand_off_leaderships(&self, within: Duration) -> HandOff {
        let started = Instant::now();
        let share = within / HAND_OFF_ATTEMPTS;
        let mut handed = HandOff::default();
        // Regions that may still lead here, and whether they were counted as led.
        let mut waiting: Vec<(RegionId, bool)> = self
            .regions()
            .iter()
            .map(|r| (r.region_id(), false))
            .collect();
        for attempt in 1..=HAND_OFF_ATTEMPTS {
            let attempt_ends = started + share * attempt;
            // Asked again, a region still transferring gives it up for another target.
            let ask = if attempt == 1 {
                HandOffAsk::Start
            } else {
                handed.moved_on += waiting.len();
                HandOffAsk::Again
            };
            let asked: Vec<_> = waiting
                .drain(..)
                .map(|(region, counted)| {
                    let (responder, response) = response_channel(region);
                    self.send(region, PeerMsg::HandOff(ask, Box::new(responder)));
                    (region, counted, response)
                })
                .collect();
            for (region, counted, mut response) in asked {
                let left = attempt_ends.saturating_duration_since(Instant::now());
                let answer = response.wait_for(left);
                // A replica that does not lead says so at once: one that has not answered
                // yet is transferring.
                let led = !matches!(answer, Some(Ok(HandOffEnd::NotLeader)) | Some(Err(_)));
                if led && !counted {
                    handed.led += 1;
                }
                match answer {
                    // Not leading here (any more), or gone.
                    Some(Ok(HandOffEnd::NotLeader | HandOffEnd::Moved)) | Some(Err(_)) => {}
                    Some(Ok(HandOffEnd::NoTarget)) => handed.still_leading.push(region),
                    // Given up, or not done within its share: another target next.
                    Some(Ok(HandOffEnd::Stalled(_))) | None => {
                        waiting.push((region, counted || led));
                    }
                }
            }
            if waiting.is_empty() {
                break;
            }
        }
        handed
            .still_leading
            .extend(waiting.into_iter().map(|(region, _)| region));
        handed.still_leading.sort_unstable();
        handed
    }

    /// The region as this store last recorded it.
    pub fn region(&self, region: RegionId) -> Option<Region> {
        self.shared.meta.lock().region(region).cloned()
    }

    /// Every region this store holds, in key order.
    pub fn regions(&self) -> Vec<Region> {
        self.shared.meta.lock().regions().cloned().collect()
    }

    /// How many of this store's regions tick (the others sleep: hibernation).
    pub fn ticking_regions(&self) -> usize {
        self.shared.ticker.ticking_count()
    }

    /// What this store believes of each store holding peers of its regions.
    pub fn peer_store_liveness(&self) -> Vec<(StoreId, Liveness)> {
        self.shared.liveness.snapshot()
    }

    /// The region of this store whose range holds `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<Region> {
        self.shared.meta.lock().region_for_key(key).cloned()
    }

    /// Bytes of the proposals the store has taken and not yet answered (a server waits
    /// for them to drain before it stops).
    pub fn unanswered_proposal_bytes(&self) -> u64 {
        self.shared.flow.proposals.bytes()
    }

    /// Why the store stopped, if a fatal error (a failed log or KV write) stopped it.
    pub fn failure(&self) -> Option<String> {
        self.shared.fail_stop.reason().map(str::to_string)
    }

    /// Sends a command built around its responder; returns the response.
    fn propose_command<T: RequestKind>(
        &self,
        region: RegionId,
        epoch: RegionEpoch,
        command: impl FnOnce(Responder<T>) -> Command,
    ) -> Response<T> {
        let (responder, response) = response_channel(region);
        let command = command(responder);
        self.send(
            region,
            PeerMsg::Propose(Box::new(ProposeMsg {
                epoch: Some(epoch),
                command,
            })),
        );
        response
    }

    fn send(&self, region: RegionId, msg: PeerMsg) {
        let stopping = |msg: PeerMsg| {
            msg.fail(RegionError::ProposalDropped {
                region,
                reason: DroppedReason::StoreStopping,
            })
        };
        if self.shared.fail_stop.is_tripped() || self.stopped.load(Ordering::Acquire) {
            return stopping(msg);
        }
        match self.shared.raft_router.try_send(region, msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => msg.fail(RegionError::ServerIsBusy {
                reason: BusyReason::MailboxFull,
                backoff: Duration::from_millis(50),
            }),
            // A shutdown that began after the check above removes every region.
            Err(SendError::Closed(msg)) if self.stopped.load(Ordering::Acquire) => stopping(msg),
            Err(SendError::Closed(msg)) => msg.fail(RegionError::RegionNotFound { region }),
        }
    }

    /// One batch of the raft pollers (stepped mode); `None` when the store runs threads.
    pub fn step_raft(&mut self) -> Option<PollOutcome> {
        match self.driver.get_mut() {
            Driver::Stepped(s) => Some(s.loops.raft.poll_once(Duration::ZERO)),
            _ => None,
        }
    }

    /// One batch of the apply pollers (stepped mode).
    pub fn step_apply(&mut self) -> Option<PollOutcome> {
        match self.driver.get_mut() {
            Driver::Stepped(s) => Some(s.loops.apply.poll_once(Duration::ZERO)),
            _ => None,
        }
    }

    /// One WAL write of whatever tasks are queued (stepped mode).
    pub fn step_wal(&mut self) -> Option<WriteOutcome> {
        match self.driver.get_mut() {
            Driver::Stepped(s) => Some(s.loops.wal.write_once(Duration::ZERO)),
            _ => None,
        }
    }

    /// One task of the snapshot worker, if one is queued (stepped mode).
    pub fn step_snapshot(&mut self) -> Option<SnapshotWork> {
        match self.driver.get_mut() {
            Driver::Stepped(s) => Some(s.snapshots.run_once(Duration::ZERO)),
            _ => None,
        }
    }

    /// Starts a round of raft log GC now (the timer does it every
    /// `StoreConfig::log_gc_interval`).
    pub fn log_gc(&self) {
        let _ = self.shared.raft_router.send_control(StoreMsg::LogGc);
    }

    /// One timer tick for every ticking region (the timer thread does this in threaded
    /// mode).
    pub fn tick(&self) {
        if !self.shared.fail_stop.is_tripped() {
            self.shared.ticker.tick_once();
            let _ = self.shared.raft_router.send_control(StoreMsg::Tick);
        }
    }

    /// One raft, WAL and apply step, and one snapshot task unless `snapshots` holds them
    /// back (stepped mode); whether any of them did something. A test that interleaves
    /// several stores steps each one round at a time.
    pub fn step_round(&mut self, snapshots: SnapshotSteps) -> bool {
        let Driver::Stepped(s) = self.driver.get_mut() else {
            return false;
        };
        // Nothing tells a stepped store's raft poller to exit.
        let worked = s.loops.round(Duration::ZERO) == Round::Worked;
        let snapshot = snapshots == SnapshotSteps::Run
            && s.snapshots.run_once(Duration::ZERO) == SnapshotWork::Done;
        worked || snapshot
    }

    /// Steps raft, WAL, apply and snapshot tasks until none of them has work left
    /// (stepped mode); returns the rounds that did something. Messages to other stores
    /// are handed to the transport, not delivered.
    pub fn run_until_idle(&mut self) -> usize {
        let mut rounds = 0;
        while self.step_round(SnapshotSteps::Run) {
            rounds += 1;
        }
        rounds
    }

    /// Stops the runtime: the timer, the pollers, then the WAL writer once every task
    /// queued is written. Requests still waiting are answered (`StoreStopping`, or
    /// dropped unanswered when their command may already be in the log), and so is every
    /// request made after. Returns once every thread has ended; calling it again does
    /// nothing (a call made while another is stopping the store returns at once, without
    /// waiting for it). It takes `&self` so a server whose services share the store can
    /// stop it while they still hold it.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        // Taken out of the lock first: stopping joins threads, which never take it.
        let driver = std::mem::replace(&mut *self.driver.lock(), Driver::Stopped);
        match driver {
            Driver::Threads(t) => {
                let snapshots = t.side.stop_timer();
                t.raft.shutdown();
                t.apply.shutdown();
                let _ = snapshots.join();
                // The pollers' senders are gone with them; the last one lets the writer end.
                *self.wal.lock() = None;
                let _ = t.wal.join();
            }
            Driver::OneThread(t) => {
                let snapshots = t.side.stop_timer();
                // The runner ends its loop and writes the WAL tasks queued before it exits.
                self.shared.raft_router.signal_exit(1);
                let _ = t.runner.join();
                let _ = snapshots.join();
                *self.wal.lock() = None;
            }
            Driver::Shared(t) => {
                let snapshots = t.side.stop_timer();
                // The shared thread writes the WAL tasks queued, then lets the loops go.
                self.shared.raft_router.signal_exit(1);
                t.membership.wait_left();
                let _ = snapshots.join();
                *self.wal.lock() = None;
            }
            Driver::Stepped(_) => *self.wal.lock() = None,
            // Stopped already (`shutdown`, then `Drop`): nothing is left to do.
            Driver::Stopped => return,
        }
        // Peers and apply delegates still registered answer what waits on them as they
        // drop.
        let mut regions = Vec::new();
        self.shared.raft_router.for_each(|id, _| regions.push(id));
        // In id order, not the map's: a simulated run answers them the same way each time.
        regions.sort_unstable();
        for id in regions {
            self.shared.raft_router.remove(id);
            self.shared.apply_router.remove(id);
        }
        // Apply does not sync the KV: made durable now, what was applied is not replayed
        // from the log on the next open. Not after a fatal error: what is on disk then is
        // what the restart must recover from.
        if self.shared.fail_stop.is_tripped() {
            return;
        }
        if let Err(e) = self.shared.engines.kv.persist_all() {
            tracing::warn!(error = %e, "the KV engine could not be made durable on shutdown");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Finishes the destroys a crash interrupted, then starts the peer of every region the
/// KV engine holds in the Normal state, and of every region whose data `snapshot::recover`
/// voided (it asks for a snapshot).
fn load_regions(shared: &StoreShared) -> Result<(), StoreError> {
    let kv = shared.engines.kv.as_ref();
    let states = all_region_states(kv)?;
    finish_interrupted_destroys(
        &shared.engines,
        &states,
        shared.cfg.delete_range_batch_bytes,
    )?;
    for state in states {
        let Some(region) = state.region else { continue };
        let data = match PeerState::try_from(state.state) {
            Ok(PeerState::Normal) => RegionData::Applied,
            // `snapshot::recover` finished every install it could: the rest are void.
            Ok(PeerState::Applying) => RegionData::Void,
            // Merge is not built: nothing writes `Merging` yet.
            Ok(PeerState::Tombstone | PeerState::Merging) | Err(_) => continue,
        };
        let id = region.region_id();
        let apply = match (apply_state(kv, id)?, data) {
            (Some(apply), _) => apply,
            // A replica whose first snapshot was voided had no applied state before it.
            (None, RegionData::Void) => RaftApplyState::default(),
            (None, RegionData::Applied) => return Err(StoreError::MissingApplyState(id)),
        };
        shared.start_region(region, &apply, NodeStart::Restarted, data)?;
    }
    Ok(())
}

/// Targets `Store::hand_off_leaderships` tries per region, each for a share of its time.
const HAND_OFF_ATTEMPTS: u32 = 3;

fn spawn_snapshot_worker(
    store: StoreId,
    mut worker: SnapshotWorker,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("snapshots-{store}"))
        .spawn(move || {
            while !stop.load(Ordering::Acquire)
                && worker.run_once(Duration::from_millis(100)) != SnapshotWork::Closed
            {}
        })
}

fn spawn_wal(
    store: StoreId,
    mut writer: WalWriter<RouterNotifier>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("wal-{store}"))
        .spawn(move || {
            while let WriteOutcome::Written(_) | WriteOutcome::Idle =
                writer.write_once(Duration::from_millis(500))
            {}
        })
}

fn spawn_timer(
    shared: &Arc<StoreShared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let ticker = shared.ticker.clone();
    let fail_stop = shared.fail_stop.clone();
    let router = shared.raft_router.clone();
    let interval = shared.cfg.raft.tick_interval;
    let gc_interval = shared.cfg.log_gc_interval;
    std::thread::Builder::new()
        .name(format!("timer-{}", shared.store_id))
        .spawn(move || {
            // A stopped store's regions need no more ticks.
            let mut since_gc = Duration::ZERO;
            while !stop.load(Ordering::Acquire) && !fail_stop.is_tripped() {
                std::thread::sleep(interval);
                ticker.tick_once();
                let _ = router.send_control(StoreMsg::Tick);
                since_gc += interval;
                if since_gc >= gc_interval {
                    since_gc = Duration::ZERO;
                    let _ = router.send_control(StoreMsg::LogGc);
                }
            }
        })
}
