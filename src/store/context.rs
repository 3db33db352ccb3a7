//! What every poller of a store shares (`StoreShared`: engines, routers, transport, the
//! store's region map, the ticker, the fail-stop switch) and what one raft poller round
//! collects (`PollContext`: outgoing messages and write tasks, sent once at its end).

use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Sender;
use parking_lot::Mutex;

use super::apply::{AppliedProgress, ApplyControl, ApplyFsm};
use super::batch::Router;
use super::config::StoreConfig;
use super::engines::Engines;
use super::fail_stop::FailStop;
use super::flow::Flow;
use super::liveness::StoreLiveness;
use super::meta::StoreMeta;
use super::observer::ApplyObserver;
use super::peer::PeerFsm;
use super::snapshot_worker::{SnapshotDirs, SnapshotTask};
use super::store_fsm::StoreFsm;
use super::ticker::Ticker;
use super::transport::{Outbound, Transport};
use super::wal_writer::WriteTask;
use crate::proto::metapb::{Peer, Region};
use crate::proto::raftpb::HardState;
use crate::proto::storagepb::{RaftApplyState, RaftLocalState};
use crate::raft::{Config, NodeStart, RaftError, RawNode, ReadOnlyOption};
use crate::region::conf_state_of;
use crate::storage::SyncMode;
use crate::storage::kv::{KvError, KvWriteBatch};
use crate::storage::raft_log::{LogError, LogWriteBatch, RegionLog};
use crate::storage::region_meta::put_apply_state;
use crate::{RegionId, StoreId};

/// The raft pollers' router: region → peer FSM, plus the store FSM.
pub(crate) type RaftRouter = Router<RegionId, PeerFsm, StoreFsm>;
/// The apply pollers' router: region → apply FSM.
pub(crate) type ApplyRouter = Router<RegionId, ApplyFsm, ApplyControl>;

/// Why a region's peer could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The region lists no peer on this store.
    #[error("region {region} has no peer on store {store}")]
    NoLocalPeer {
        /// The region.
        region: RegionId,
        /// This store.
        store: StoreId,
    },
    /// The region's apply state could not be written (the KV engine failed).
    #[error("writing region {region}'s apply state: {source}")]
    Kv {
        /// The region.
        region: RegionId,
        /// The KV engine's error.
        #[source]
        source: KvError,
    },
    /// The region's raft state could not be read.
    #[error("reading region {region}'s raft state: {source}")]
    Log {
        /// The region.
        region: RegionId,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The consensus core refused the stored state.
    #[error("region {region}: {source}")]
    Raft {
        /// The region.
        region: RegionId,
        /// The core's error.
        #[source]
        source: RaftError,
    },
    /// A peer of the region already runs on this store.
    #[error("region {0} already has a peer running on this store")]
    AlreadyRunning(RegionId),
}

/// How a leader makes sure its lease, which the core counts in ticks, has not outlived
/// real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseClock {
    /// A stepped store: the ticks its caller gives are the only time there is.
    Ticks,
    /// On threads: a region's ticks must keep up with the machine's monotonic clock, one
    /// per `tick`; when they fall behind (a paused process, a starved poller, ticks
    /// dropped past the catch-up cap) the lease is void (see `peer/read.rs`).
    RealTime { tick: Duration },
}

/// What the pollers of one store share.
pub(crate) struct StoreShared {
    pub store_id: StoreId,
    pub lease_clock: LeaseClock,
    pub cfg: StoreConfig,
    pub engines: Engines,
    pub raft_router: RaftRouter,
    pub apply_router: ApplyRouter,
    pub transport: Arc<dyn Transport>,
    pub meta: Mutex<StoreMeta>,
    pub ticker: Ticker<RegionId, PeerFsm, StoreFsm>,
    pub fail_stop: FailStop,
    pub snapshot_dirs: SnapshotDirs,
    pub snapshot_tasks: Sender<SnapshotTask>,
    pub flow: Flow,
    pub liveness: Arc<StoreLiveness>,
    pub observers: Vec<Arc<dyn ApplyObserver>>,
}

/// What the KV engine holds of a region whose peer starts here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionData {
    /// Its data as of its apply state.
    Applied,
    /// Nothing to trust: a snapshot install a crash interrupted could not be finished
    /// (`snapshot::recover` cleared the range). The replica keeps its log and vote, asks
    /// its leader for a snapshot (`RawNode::request_snapshot`) and applies nothing until
    /// one installs.
    Void,
}

impl StoreShared {
    /// Starts this store's peer of `region` from its apply state: the peer FSM and its
    /// apply delegate are registered, the region recorded and ticking. `start` says
    /// whether the group existed before (`Restarted`) or was just created here (a split).
    pub(crate) fn start_region(
        &self,
        region: Region,
        apply: &RaftApplyState,
        start: NodeStart,
        data: RegionData,
    ) -> Result<(), StartError> {
        let id = region.region_id();
        let peer = *region
            .peers
            .iter()
            .find(|p| p.store_id == self.store_id.get())
            .ok_or(StartError::NoLocalPeer {
                region: id,
                store: self.store_id,
            })?;
        self.start_peer(region, peer, apply, start, data)
    }

    /// Starts `peer`, an empty replica of a region this store holds nothing of, created by
    /// a message of the region's leader. It knows no range and no peers (it is not in the
    /// store's range map) until the snapshot it waits for installs.
    pub(crate) fn start_unborn(&self, region: RegionId, peer: Peer) -> Result<(), StartError> {
        let unborn = Region {
            id: region.get(),
            ..Default::default()
        };
        self.start_peer(
            unborn,
            peer,
            &RaftApplyState::default(),
            NodeStart::Restarted,
            RegionData::Applied,
        )
    }

    fn start_peer(
        &self,
        region: Region,
        peer: Peer,
        apply: &RaftApplyState,
        start: NodeStart,
        data: RegionData,
    ) -> Result<(), StartError> {
        let id = region.region_id();
        // Checked before the log is read (and perhaps repaired); `register` below is the
        // check that holds against a peer started meanwhile.
        if self
            .raft_router
            .mailbox(id)
            .is_some_and(|m| !m.is_retired())
        {
            return Err(StartError::AlreadyRunning(id));
        }
        let log_engine = self.engines.log.clone();
        let (local, apply) = self.catch_log_up(id, apply)?;
        let apply = &apply;
        let log = Arc::new(RegionLog::new(
            id,
            log_engine,
            local,
            (apply.truncated_index, apply.truncated_term),
            conf_state_of(&region),
            self.cfg.raft.entry_cache_bytes,
        ));
        let cfg = raft_config(&self.cfg, id, peer.id, apply.applied_index, start);
        let mut raw = RawNode::new(cfg, log.clone())
            .map_err(|source| StartError::Raft { region: id, source })?;
        if data == RegionData::Void {
            // Only a leader is refused, and a node starts as a follower.
            let _ = raw.request_snapshot();
            tracing::warn!(region = %id, "region data void: its replica asks its leader for a snapshot");
        }
        // The core learned the last term when it started (recorded, or read once).
        let last = (local.last_index, raw.raft().log().last_term());
        let progress = Arc::new(AppliedProgress::new(apply.applied_index));
        let apply_fsm = ApplyFsm::new(region.clone(), apply, progress.clone());
        let region = Arc::new(region);
        let peer_fsm = PeerFsm::new(region.clone(), peer, raw, log, last, apply, progress);
        if self.apply_router.register(id, Box::new(apply_fsm)).is_err() {
            return Err(StartError::AlreadyRunning(id));
        }
        if self.raft_router.register(id, Box::new(peer_fsm)).is_err() {
            self.apply_router.remove(id);
            return Err(StartError::AlreadyRunning(id));
        }
        if is_born(&region) {
            self.meta.lock().set(region);
        }
        self.ticker.start(id);
        Ok(())
    }

    /// The raft and apply states a region starts from. A log that ends before what the
    /// KV engine applied lost entries a crash interrupted the removal of: the log starts
    /// after the applied index instead (the apply state's truncation point moved there,
    /// durably, first), as if compacted. Three crashes leave it so: one between a
    /// snapshot install (durable in the KV engine) and the log reset that follows it; one
    /// between a destroyed peer's log reset and its tombstone; and one after a split applied
    /// here gave its initial state to a region whose empty peer (created by a message) had
    /// recorded a vote and no entry. The recorded term and vote are kept: a vote cast is
    /// never forgotten. Rare, and the only writes a poller makes itself (a split starting
    /// such a region).
    fn catch_log_up(
        &self,
        id: RegionId,
        apply: &RaftApplyState,
    ) -> Result<(RaftLocalState, RaftApplyState), StartError> {
        let log = &self.engines.log;
        let log_error = |source| StartError::Log { region: id, source };
        let Some(recorded) = log.local_state(id).map_err(log_error)? else {
            return Ok((initial_local_state(apply), *apply));
        };
        if recorded.last_index >= apply.applied_index {
            return Ok((recorded, *apply));
        }
        tracing::warn!(
            region = %id,
            log_ends_at = recorded.last_index,
            applied = apply.applied_index,
            "the region's log ends before what it applied: it starts after it"
        );
        let mut apply = *apply;
        let applied = (apply.applied_index, apply.applied_term);
        if (apply.truncated_index, apply.truncated_term) != applied {
            (apply.truncated_index, apply.truncated_term) = applied;
            let mut batch = KvWriteBatch::default();
            put_apply_state(&mut batch, id, &apply);
            let kv = &self.engines.kv;
            kv.write_batch(&batch)
                .and_then(|()| kv.persist_all())
                .map_err(|source| StartError::Kv { region: id, source })?;
        }
        let mut local = initial_local_state(&apply);
        if let (Some(hard), Some(kept)) = (local.hard_state.as_mut(), recorded.hard_state)
            && kept.term >= hard.term
        {
            hard.term = kept.term;
            hard.vote = kept.vote;
        }
        let mut batch = LogWriteBatch::default();
        batch.reset(id);
        batch.put_state(id, &local);
        log.write(&mut batch, SyncMode::Sync).map_err(log_error)?;
        Ok((local, apply))
    }
}

/// The core's configuration for `peer` of `region` under the store's settings.
fn raft_config(
    cfg: &StoreConfig,
    region: RegionId,
    peer: u64,
    applied: u64,
    start: NodeStart,
) -> Config {
    let s = &cfg.raft;
    Config {
        id: peer,
        election_tick: s.election_ticks,
        heartbeat_tick: s.heartbeat_ticks,
        applied,
        max_size_per_msg: s.max_size_per_msg,
        max_inflight_msgs: s.max_inflight_msgs,
        max_entry_size: s.max_entry_size,
        max_committed_size_per_ready: s.max_committed_bytes_per_round,
        max_uncommitted_size: cfg.flow.region_uncommitted_bytes,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::LeaseBased,
        seed: raft_seed(region, peer, s.seed),
        start,
        ..Config::default()
    }
}

/// The seed of a replica's election timer: distinct per replica and per store seed, the
/// same on every run (elections replay).
fn raft_seed(region: RegionId, peer: u64, store_seed: u64) -> u64 {
    region.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ peer
        ^ store_seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// The raft state of a region whose log has never been written on this store: it starts
/// where its apply state says the log was truncated (bootstrap and splits start there).
pub(crate) fn initial_local_state(apply: &RaftApplyState) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            term: apply.truncated_term,
            vote: 0,
            commit: apply.truncated_index,
        }),
        last_index: apply.truncated_index,
        last_term: apply.truncated_term,
    }
}

/// The raft state a destroyed replica leaves: no log, and its term and vote (a replica
/// re-added under the same id must never vote twice in a term).
pub(crate) fn ended_local_state(hard_state: HardState) -> RaftLocalState {
    RaftLocalState {
        hard_state: Some(HardState {
            commit: 0,
            ..hard_state
        }),
        last_index: 0,
        last_term: 0,
    }
}

/// Whether this store's replica knows the region (its range and peers): false for an
/// empty peer created by a message, until its first snapshot installs.
pub(crate) fn is_born(region: &Region) -> bool {
    !region.peers.is_empty()
}

/// What one raft poller round collects, sent once at its end: one batch per store, the
/// write tasks in one go to the WAL writer.
pub(crate) struct PollContext {
    pub shared: Arc<StoreShared>,
    pub outbound: Outbound,
    pub writes: Vec<WriteTask>,
    pub wal: Sender<WriteTask>,
}

impl PollContext {
    pub(crate) fn new(shared: Arc<StoreShared>, wal: Sender<WriteTask>) -> Self {
        PollContext {
            outbound: Outbound::new(shared.store_id),
            shared,
            writes: Vec::new(),
            wal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn replicas_and_store_seeds_give_election_timers_distinct_seeds() {
        let seeds: BTreeSet<u64> = (0..16)
            .flat_map(|store_seed| {
                (1..=4).map(move |peer| raft_seed(RegionId(7), peer, store_seed))
            })
            .collect();
        assert_eq!(seeds.len(), 64);
        let regions: BTreeSet<u64> = (1..=64).map(|r| raft_seed(RegionId(r), 1, 0)).collect();
        assert_eq!(regions.len(), 64);
        assert_eq!(raft_seed(RegionId(7), 2, 3), raft_seed(RegionId(7), 2, 3));
        let mut cfg = StoreConfig::new(StoreId(1));
        cfg.raft.seed = 9;
        let core = raft_config(&cfg, RegionId(7), 2, 5, NodeStart::Restarted);
        assert_eq!(core.seed, raft_seed(RegionId(7), 2, 9));
        assert_eq!((core.id, core.applied), (2, 5));
    }

    #[test]
    fn a_replica_core_takes_every_raft_setting_of_its_store() {
        let mut cfg = StoreConfig::new(StoreId(1));
        // Every value differs from the core's own default.
        cfg.raft.election_ticks = 17;
        cfg.raft.heartbeat_ticks = 3;
        cfg.raft.max_size_per_msg = 4096;
        cfg.raft.max_inflight_msgs = 9;
        cfg.raft.max_entry_size = 5000;
        cfg.raft.max_committed_bytes_per_round = 7000;
        cfg.flow.region_uncommitted_bytes = 8000;
        let core = raft_config(&cfg, RegionId(7), 2, 5, NodeStart::Created);
        assert_eq!((core.election_tick, core.heartbeat_tick), (17, 3));
        assert_eq!((core.max_size_per_msg, core.max_inflight_msgs), (4096, 9));
        assert_eq!(
            (core.max_entry_size, core.max_uncommitted_size),
            (5000, 8000)
        );
        assert_eq!(core.max_committed_size_per_ready, 7000);
        assert!(core.check_quorum && core.pre_vote);
        assert_eq!(core.read_only_option, ReadOnlyOption::LeaseBased);
        assert_eq!(core.start, NodeStart::Created);
    }
}
