//! openraft with nothing else in the way: the baseline the store issue's in-memory
//! throughput targets are stated against, built here so that both benchmarks can run in
//! the same sitting on this shared machine.
//!
//! Shaped as openraft's own `benchmarks/minimal`: three nodes in one process on a
//! multi-threaded tokio runtime (16 workers), clients on a second runtime (2 workers), each
//! client writing an empty request at a time to the leader; the log is a map in memory, the
//! state machine keeps no data (only what openraft asks back: the last applied log id and
//! membership), and a node reaches another by calling it. Raft settings as there: election
//! timeout 200–2000 ms, purge batch 1024, up to 1024 entries per append.
//!
//! ```text
//! cargo run --release -- CLIENTS [OPERATIONS]     (defaults: 256 clients, 2,000,000 writes)
//! ```
//!
//! The clock runs from the first client's start until the leader has applied every write.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, TryStreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use openraft::{AnyError, Config, EntryPayload, OptionalSend, Raft};

/// A write that carries nothing: the benchmark measures openraft, not an application.
#[derive(Debug, Clone)]
struct Write;

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("write")
    }
}

type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

openraft::declare_raft_types!(
    Types:
        D = Write,
        R = (),
        Node = (),
        LeaderId = LeaderId,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

type Node = Raft<Types, Arc<Applied>>;

/// A node's log: its entries by index, its vote, and where it was last purged.
#[derive(Default)]
struct LogData {
    entries: BTreeMap<u64, EntryOf<Types>>,
    vote: Option<VoteOf<Types>>,
    purged: Option<LogIdOf<Types>>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<LogData>>);

impl Log {
    fn state(&self) -> std::sync::MutexGuard<'_, LogData> {
        self.0.lock().expect("log lock")
    }
}

impl RaftLogReader<Types> for Log {
    async fn try_get_log_entries<R>(&mut self, range: R) -> io::Result<Vec<EntryOf<Types>>>
    where
        R: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
    {
        Ok(self
            .state()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<Types>>> {
        Ok(self.state().vote)
    }
}

impl RaftLogStorage<Types> for Log {
    type LogReader = Log;

    async fn get_log_state(&mut self) -> io::Result<LogState<Types>> {
        let state = self.state();
        let last = state.entries.values().next_back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: last.or(state.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Log {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Types>) -> io::Result<()> {
        self.state().vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, flushed: IOFlushed<Types>) -> io::Result<()>
    where
        I: IntoIterator<Item = EntryOf<Types>> + OptionalSend,
    {
        self.state()
            .entries
            .extend(entries.into_iter().map(|e| (e.index(), e)));
        // Memory is as durable as this log gets.
        flushed.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<LogIdOf<Types>>) -> io::Result<()> {
        let from = last_kept.map_or(0, |id| id.index() + 1);
        self.state().entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<Types>) -> io::Result<()> {
        let mut state = self.state();
        state.entries = state.entries.split_off(&(upto.index() + 1));
        state.purged = Some(upto);
        Ok(())
    }
}

/// What the state machine must answer for: the last applied log id and the membership.
/// A snapshot is its meta alone.
#[derive(Default)]
struct AppliedState {
    last: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
    snapshot: Option<SnapshotMetaOf<Types>>,
}

#[derive(Default)]
struct Applied(Mutex<AppliedState>);

impl Applied {
    fn state(&self) -> std::sync::MutexGuard<'_, AppliedState> {
        self.0.lock().expect("state machine lock")
    }
}

impl RaftSnapshotBuilder<Types> for Arc<Applied> {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<Types, Cursor<Vec<u8>>>> {
        let mut state = self.state();
        let meta = SnapshotMetaOf::<Types> {
            last_log_id: state.last,
            last_membership: state.membership.clone(),
        };
        state.snapshot = Some(meta.clone());
        Ok(SnapshotOf::<Types, _> {
            meta,
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<Types> for Arc<Applied> {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> io::Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>)> {
        let state = self.state();
        Ok((state.last, state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<Types>>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut state = self.state();
            state.last = Some(entry.log_id);
            if let EntryPayload::Membership(m) = &entry.payload {
                state.membership = StoredMembershipOf::<Types>::new(Some(entry.log_id), m.clone());
            }
            drop(state);
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Types>,
        _data: Cursor<Vec<u8>>,
    ) -> io::Result<()> {
        let mut state = self.state();
        state.last = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<Types, Cursor<Vec<u8>>>>> {
        Ok(self
            .state()
            .snapshot
            .clone()
            .map(|meta| SnapshotOf::<Types, _> {
                meta,
                snapshot: Cursor::new(Vec::new()),
            }))
    }
}

/// Every node by id; a node reaches another by calling its `Raft` handle.
#[derive(Clone, Default)]
struct Nodes(Arc<Mutex<BTreeMap<u64, Node>>>);

impl Nodes {
    fn get(&self, id: u64) -> Node {
        self.0.lock().expect("nodes lock")[&id].clone()
    }
}

impl RaftNetworkFactory<Types> for Nodes {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, _node: &()) -> Peer {
        Peer(self.get(target))
    }
}

struct Peer(Node);

fn unreachable(e: impl fmt::Display) -> Unreachable<Types> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

impl RaftNetworkV2<Types> for Peer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        self.0
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        self.0
            .vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Types>,
        snapshot: SnapshotOf<Types, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        self.0
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))
    }
}

/// Three nodes, node 0 initialized as the cluster's first member and so its leader, every
/// node past the membership entry.
async fn start_cluster() -> Result<Node, Box<dyn std::error::Error>> {
    let config = Arc::new(
        Config {
            election_timeout_min: 200,
            election_timeout_max: 2000,
            purge_batch_size: 1024,
            max_payload_entries: 1024,
            ..Default::default()
        }
        .validate()?,
    );
    let nodes = Nodes::default();
    for id in 0..3u64 {
        let node = Raft::new(
            id,
            config.clone(),
            nodes.clone(),
            Log::default(),
            Arc::new(Applied::default()),
        )
        .await?;
        nodes.0.lock().expect("nodes lock").insert(id, node);
    }
    let leader = nodes.get(0);
    leader
        .initialize(
            [0u64, 1, 2]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
        )
        .await?;
    for id in 0..3 {
        nodes
            .get(id)
            .wait(Some(Duration::from_secs(10)))
            .applied_index(Some(1), "the membership entry")
            .await?;
    }
    Ok(leader)
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|a| a.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = arg(1, 256).max(1);
    let per_client = arg(2, 2_000_000) / clients;
    let writes = per_client * clients;
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(16)
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let leader = servers.block_on(start_cluster())?;
    let elapsed = client_runtime.block_on(async move {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let leader = leader.clone();
                tokio::spawn(async move {
                    for _ in 0..per_client {
                        leader.client_write(Write).await.expect("client write");
                    }
                })
            })
            .collect();
        // The membership entry is index 1, so the last write is `writes + 1`.
        leader
            .wait(Some(Duration::from_secs(600)))
            .applied_index_at_least(Some(writes + 1), "every write")
            .await?;
        let elapsed = started.elapsed();
        for task in tasks {
            task.await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(elapsed)
    })?;
    println!(
        "openraft {clients} clients: {writes} writes in {:.2} s, {:.0} writes/s, {} ns per write",
        elapsed.as_secs_f64(),
        writes as f64 / elapsed.as_secs_f64(),
        elapsed.as_nanos() / u128::from(writes.max(1)),
    );
    Ok(())
}
