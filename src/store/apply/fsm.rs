//! The apply delegate of a region and the apply pollers' handler.
//!
//! One apply batch gathers the committed entries of many regions into ONE KV write batch,
//! each region's `RaftApplyState` in the same batch as the data it describes, so after a
//! crash data and applied index agree and the raft log is replayed from there: apply is
//! exactly-once. Proposals are answered only once their batch is in the engine, and the
//! applied index is published to the peers (`AppliedProgress`: their waiting reads need it)
//! only then.
//!
//! A range delete is the one command written in several batches: the writes before it go
//! with an apply state marking the entry partly applied (`partial_index`/`partial_ops`),
//! the range is cleared in bounded batches, and the rest follows; a replay resumes after
//! the operations already done.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::SendError;
use prost::Message as _;

use super::eval::{OpOutcome, Overlay, check_command, evaluate};
use super::progress::AppliedProgress;
use crate::proto::commandpb::{
    ChangePeersContext, RaftCommand, SplitCommand, WriteBatch, WriteCommand, raft_command,
};
use crate::proto::metapb::{Region, RegionEpoch};
use crate::proto::raftpb::{Entry, EntryType};
use crate::proto::storagepb::{PeerState, RaftApplyState, RegionLocalState, SnapshotSummary};
use crate::raft::decode_conf_change;
use crate::region::{
    CommandKind, RegionError, change_peers, check_epoch, initial_apply_state, split_region,
};
use crate::storage::kv::{KvError, KvWriteBatch, clear_data_range};
use crate::storage::raft_log::RegionLog;
use crate::storage::region_meta::{
    end_bound, normal_state, put_apply_state, put_region_state, region_state, tombstone_state,
};
use crate::storage::snapshot;
use crate::store::batch::{Fsm, Handled, Inbox, PollHandler, Polled};
use crate::store::codec::decode_command;
use crate::store::context::{StoreShared, is_born};
use crate::store::engines::StoreKv;
use crate::store::metrics::PollMetrics;
use crate::store::msg::{
    ApplyMsg, ApplyResult, ApplyTask, PeerMsg, Proposal, ProposalResponder, RegionChange,
    drop_covered_proposals,
};
use crate::store::observer::{AppliedChange, AppliedWrite, ApplyEvent};
use crate::store::request::{ChangePeersResponse, SplitResponse, WriteResponse};
use crate::store::responder::{AnswerTally, RegionResult, Responder};
use crate::store::snapshot_worker::SnapshotTask;

/// One region's apply delegate.
pub(crate) struct ApplyFsm {
    region: Region,
    /// The last entry applied: (index, term).
    applied: (u64, u64),
    truncated: (u64, u64),
    /// Set while an entry is applied in parts (see the module notes): (index, operations
    /// done).
    partial: Option<(u64, u64)>,
    /// Proposals handed over with their entries, in (term, index) order.
    proposals: VecDeque<Proposal>,
    /// The applied index last recorded in the apply state (and published to the peer).
    recorded: u64,
    /// Where the peer reads the applied index.
    progress: Arc<AppliedProgress>,
    changes: Vec<RegionChange>,
}

impl Fsm for ApplyFsm {
    type Message = ApplyMsg;
}

impl ApplyFsm {
    pub(crate) fn new(
        region: Region,
        state: &RaftApplyState,
        progress: Arc<AppliedProgress>,
    ) -> Self {
        ApplyFsm {
            region,
            applied: (state.applied_index, state.applied_term),
            truncated: (state.truncated_index, state.truncated_term),
            partial: (state.partial_index != 0).then_some((state.partial_index, state.partial_ops)),
            proposals: VecDeque::new(),
            recorded: state.applied_index,
            progress,
            changes: Vec::new(),
        }
    }

    fn apply_state(&self) -> RaftApplyState {
        let (partial_index, partial_ops) = self.partial.unwrap_or_default();
        RaftApplyState {
            applied_index: self.applied.0,
            applied_term: self.applied.1,
            truncated_index: self.truncated.0,
            truncated_term: self.truncated.1,
            partial_index,
            partial_ops,
        }
    }

    /// Proposals the queue has room for without growing.
    #[cfg(test)]
    pub(crate) fn proposal_room(&self) -> usize {
        self.proposals.capacity()
    }

    /// The proposal whose entry this is, if any. Proposals come in (term, index) order,
    /// as committed entries do; one before the entry in that order that it does not match
    /// can never commit (once an entry of term T is committed at index i, every entry
    /// committed after it has a term of at least T): it was overtaken.
    fn take_proposal(&mut self, entry: &Entry, answers: &mut Vec<Answer>) -> Option<Proposal> {
        let at = (entry.term, entry.index);
        while let Some(p) = self.proposals.pop_front_if(|p| (p.term, p.index) <= at) {
            if (p.term, p.index) == at {
                return Some(p);
            }
            let stale = RegionError::StaleCommand {
                region: self.region.region_id(),
            };
            Answer::failed(p.responder, stale, answers);
        }
        None
    }
}

/// The apply system's control FSM: it has no messages (yet); the batch system wants one.
pub(crate) struct ApplyControl;

impl Fsm for ApplyControl {
    type Message = Infallible;
}

/// The store stopped (its `FailStop` tripped) while applying: nothing more is applied.
struct Stopped;

/// An answer held until the batch holding its command is in the engine.
enum Answer {
    Write(Responder<WriteResponse>, RegionResult<WriteResponse>),
    Split(Responder<SplitResponse>, RegionResult<SplitResponse>),
    ChangePeers(
        Responder<ChangePeersResponse>,
        RegionResult<ChangePeersResponse>,
    ),
}

/// What an applied entry answers.
enum Applied {
    /// One result per write of the entry, in its order.
    Writes(Vec<RegionResult<WriteResponse>>),
}

impl Answer {
    /// The answers of a proposal whose entry was applied. A responder of another kind (or
    /// number) than the commands in its entry could only come from a bug: it is told so.
    fn applied(responder: ProposalResponder, applied: Applied, answers: &mut Vec<Answer>) {
        match (responder, applied) {
            (ProposalResponder::Writes(rs), Applied::Writes(results))
                if rs.len() == results.len() =>
            {
                answers.extend(
                    rs.into_iter()
                        .zip(results)
                        .map(|(r, a)| Answer::Write(r, a)),
                );
            }
            (r, _) => Answer::failed(r, invalid("the entry holds other commands"), answers),
        }
    }

    fn failed(responder: ProposalResponder, error: RegionError, answers: &mut Vec<Answer>) {
        match responder {
            ProposalResponder::Writes(rs) => {
                answers.extend(rs.into_iter().map(|r| Answer::Write(r, Err(error.clone()))));
            }
            ProposalResponder::Split(r) => answers.push(Answer::Split(r, Err(error))),
            ProposalResponder::ChangePeers(r) => answers.push(Answer::ChangePeers(r, Err(error))),
        }
    }

    fn send(self, tally: &mut AnswerTally) {
        match self {
            Answer::Write(r, result) => r.respond_tallied(result, tally),
            Answer::Split(r, result) => r.respond_tallied(result, tally),
            Answer::ChangePeers(r, result) => r.respond_tallied(result, tally),
        }
    }
}

/// Settings of an apply poller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApplyLimits {
    /// Bytes of writes gathered before the batch is written (between entries).
    pub batch_bytes: usize,
    /// Bytes of one batch of a range delete.
    pub delete_range_bytes: usize,
}

/// The apply pollers' handler: one KV write per batch of regions.
pub(crate) struct ApplyPoller {
    shared: Arc<StoreShared>,
    kv: Arc<dyn StoreKv>,
    limits: ApplyLimits,
    batch: KvWriteBatch,
    overlay: Overlay,
    answers: Vec<Answer>,
    /// The outcomes of writes no one is told of (a follower's), reused from write to write.
    outcomes: Vec<OpOutcome>,
    /// Each region's round, and where its peer reads the applied index.
    results: Vec<(crate::RegionId, ApplyResult, Arc<AppliedProgress>)>,
    /// Events for the apply observers, sent once the batch holding them is written.
    events: Vec<ApplyEvent>,
    /// Entries applied in the batch being handled, and when it began (metrics).
    applied_entries: usize,
    began: Instant,
    metrics: PollMetrics,
    batch_entries: metrics::Histogram,
    /// The batch's end must make the engine durable before the peers hear of it (a log
    /// truncation, or a split creating regions, is recorded in this batch).
    persist: bool,
}

impl ApplyPoller {
    pub(crate) fn new(shared: Arc<StoreShared>, limits: ApplyLimits) -> Self {
        ApplyPoller {
            kv: shared.engines.kv.clone(),
            shared,
            limits,
            batch: KvWriteBatch::default(),
            overlay: Overlay::default(),
            answers: Vec::new(),
            outcomes: Vec::new(),
            results: Vec::new(),
            events: Vec::new(),
            applied_entries: 0,
            began: Instant::now(),
            persist: false,
            metrics: PollMetrics::apply(),
            batch_entries: metrics::histogram!("flotilla_apply_batch_entries"),
        }
    }

    /// Writes the batch; then the answers it holds go out. A failed write stops the store
    /// and answers nothing (the proposals drop unanswered: their outcome is unknown).
    fn flush(&mut self) -> Result<(), Stopped> {
        if !self.batch.is_empty()
            && let Err(e) = self.kv.write_batch_and_clear(&mut self.batch)
        {
            return Err(self.fail(format!("KV write failed: {e}")));
        }
        self.overlay.clear();
        self.notify_observers();
        let mut tally = AnswerTally::default();
        for answer in self.answers.drain(..) {
            answer.send(&mut tally);
        }
        Ok(())
    }

    /// Records an event for the observers (none: nothing is kept).
    fn observe(
        &mut self,
        fsm: &ApplyFsm,
        (index, term): (u64, u64),
        change: impl FnOnce() -> AppliedChange,
    ) {
        if !self.shared.observers.is_empty() {
            self.events.push(ApplyEvent {
                region: fsm.region.region_id(),
                index,
                term,
                change: change(),
            });
        }
    }

    /// Hands the events recorded so far — all in the engine now — to the observers.
    fn notify_observers(&mut self) {
        for event in self.events.drain(..) {
            for observer in &self.shared.observers {
                observer.on_apply(&event);
            }
        }
    }

    /// Writes the batch with `fsm`'s apply state in it: what it applied so far becomes
    /// visible to what follows outside the batch (a view, a range clear, an install).
    fn flush_with(&mut self, fsm: &ApplyFsm) -> Result<(), Stopped> {
        put_apply_state(&mut self.batch, fsm.region.region_id(), &fsm.apply_state());
        self.flush()
    }

    fn fail(&mut self, reason: String) -> Stopped {
        self.shared.fail_stop.trip(reason);
        self.answers.clear();
        self.results.clear();
        self.events.clear();
        self.batch.clear();
        self.overlay.clear();
        Stopped
    }

    /// Whether the region, as applied, no longer has a peer on this store.
    fn removed_here(&self, fsm: &ApplyFsm) -> bool {
        let store = self.shared.store_id.get();
        is_born(&fsm.region) && !fsm.region.peers.iter().any(|p| p.store_id == store)
    }

    fn apply_task(&mut self, fsm: &mut ApplyFsm, task: ApplyTask) -> Result<(), Stopped> {
        fsm.proposals.extend(task.proposals);
        for entry in task.entries {
            if entry.index <= fsm.applied.0 {
                continue;
            }
            // Removed from the region by an entry applied: what follows is not this
            // replica's to apply (the peer destroys it).
            if self.removed_here(fsm) {
                break;
            }
            self.apply_entry(fsm, &entry)?;
            if self.batch.size_bytes() >= self.limits.batch_bytes {
                self.flush_with(fsm)?;
            }
        }
        Ok(())
    }

    fn apply_entry(&mut self, fsm: &mut ApplyFsm, entry: &Entry) -> Result<(), Stopped> {
        let (proposal, kept) = match fsm.take_proposal(entry, &mut self.answers) {
            Some(p) => (Some(p.responder), p.command),
            None => (None, None),
        };
        match EntryType::try_from(entry.entry_type) {
            Ok(EntryType::EntryNormal) if entry.data.is_empty() => {
                // A new leader's empty entry: nothing to apply.
                self.answer_error(proposal, invalid("an empty command"));
            }
            Ok(EntryType::EntryNormal) => self.apply_command(fsm, entry, proposal, kept)?,
            Ok(EntryType::EntryConfChange | EntryType::EntryConfChangeV2) => {
                self.apply_conf_change(fsm, entry, proposal);
            }
            Err(_) => {
                let e = invalid(&format!("unknown entry type {}", entry.entry_type));
                self.answer_error(proposal, e);
            }
        }
        fsm.applied = (entry.index, entry.term);
        self.applied_entries += 1;
        Ok(())
    }

    fn apply_command(
        &mut self,
        fsm: &mut ApplyFsm,
        entry: &Entry,
        proposal: Option<ProposalResponder>,
        kept: Option<RaftCommand>,
    ) -> Result<(), Stopped> {
        // The leader's own proposal: the command as it proposed it; else the entry's.
        let parsed = match kept {
            Some(command) => {
                debug_assert_eq!(
                    RaftCommand::decode(entry.data.clone()).ok().as_ref(),
                    Some(&command),
                    "a proposal kept a command its entry does not encode"
                );
                Ok(command)
            }
            None => decode_command(&entry.data),
        };
        let command = match parsed {
            Ok(c) if c.region_id == fsm.region.id => c,
            Ok(c) => {
                let e = invalid(&format!("a command of region {} in the log", c.region_id));
                self.answer_error(proposal, e);
                return Ok(());
            }
            Err(e) => {
                self.answer_error(proposal, invalid(&format!("undecodable: {e}")));
                return Ok(());
            }
        };
        match command.body {
            Some(raft_command::Body::Writes(writes)) => {
                self.apply_writes(fsm, entry, command.epoch.as_ref(), writes, proposal)
            }
            Some(raft_command::Body::Split(split)) => {
                self.apply_split(fsm, entry, command.epoch.as_ref(), &split, proposal)
            }
            None => {
                self.answer_error(proposal, invalid("a command with no body"));
                Ok(())
            }
        }
    }

    fn answer_error(&mut self, proposal: Option<ProposalResponder>, e: RegionError) {
        if let Some(p) = proposal {
            Answer::failed(p, e, &mut self.answers);
        }
    }

    fn answer_applied(&mut self, proposal: Option<ProposalResponder>, applied: Applied) {
        if let Some(p) = proposal {
            Answer::applied(p, applied, &mut self.answers);
        }
    }

    /// Applies an entry's writes, each on its own: one refused (a key outside the region)
    /// changes nothing and is answered with why; a stale epoch refuses them all.
    fn apply_writes(
        &mut self,
        fsm: &mut ApplyFsm,
        entry: &Entry,
        epoch: Option<&RegionEpoch>,
        writes: WriteBatch,
        proposal: Option<ProposalResponder>,
    ) -> Result<(), Stopped> {
        if let Err(e) = check_epoch(CommandKind::Write, epoch, &fsm.region) {
            self.answer_error(proposal, e);
            return Ok(());
        }
        let index = entry.index;
        // After a crash in the middle of this entry, resume at the operation recorded,
        // counted over the entry's writes in order.
        let resume = match fsm.partial.take() {
            Some((i, done)) if i == index => usize::try_from(done).unwrap_or(usize::MAX),
            _ => 0,
        };
        // A follower's entry (no proposer waiting) with no observer to tell: the outcomes
        // are not kept, and one scratch list serves every write.
        let keep = proposal.is_some() || !self.shared.observers.is_empty();
        let mut results = Vec::with_capacity(if keep { writes.commands.len() } else { 0 });
        let mut applied = Vec::new();
        let mut scratch = std::mem::take(&mut self.outcomes);
        let mut first_op = 0;
        for mut write in writes.commands {
            let from = resume.saturating_sub(first_op).min(write.ops.len());
            // Evaluating takes the writes' keys and values: the observers get a copy.
            let observed = (!self.shared.observers.is_empty()).then(|| write.clone());
            let mut outcomes = if keep {
                Vec::with_capacity(write.ops.len())
            } else {
                scratch.clear();
                std::mem::take(&mut scratch)
            };
            let result = self.apply_write(fsm, index, first_op, &mut write, from, &mut outcomes)?;
            first_op += write.ops.len();
            if !keep {
                scratch = outcomes;
                continue;
            }
            if let (Ok(()), Some(command)) = (&result, observed) {
                applied.push(AppliedWrite {
                    command,
                    outcomes: outcomes.clone(),
                });
            }
            results.push(result.map(|()| WriteResponse { index, outcomes }));
        }
        self.outcomes = scratch;
        fsm.partial = None;
        if !applied.is_empty() {
            self.observe(fsm, (index, entry.term), || AppliedChange::Writes {
                writes: applied,
            });
        }
        self.answer_applied(proposal, Applied::Writes(results));
        Ok(())
    }

    /// Applies one write of entry `index` from its operation `from`, its outcomes added
    /// to `outcomes`; `first_op` is its first operation's position in the entry. Whether
    /// it was applied, or why it was refused.
    fn apply_write(
        &mut self,
        fsm: &mut ApplyFsm,
        index: u64,
        first_op: usize,
        write: &mut WriteCommand,
        mut from: usize,
        outcomes: &mut Vec<OpOutcome>,
    ) -> Result<RegionResult<()>, Stopped> {
        let checked = check_command(write, &fsm.region).map_err(|e| {
            e.into_region_error()
                .unwrap_or_else(|kv| invalid(&kv.to_string()))
        });
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        loop {
            let evaluated = evaluate(
                &mut write.ops,
                from,
                &fsm.region,
                self.kv.as_ref(),
                &mut self.overlay,
                &mut self.batch,
                outcomes,
            );
            match evaluated {
                Ok(None) => return Ok(Ok(())),
                Ok(Some((range, resume))) => {
                    // The mark names the range delete itself: a replay clears the range
                    // again (harmless) rather than skip what a crash left uncleared.
                    fsm.partial = Some((index, (first_op + resume - 1) as u64));
                    self.flush_with(fsm)?;
                    let kv = self.kv.clone();
                    let view = kv.read_view();
                    let cleared = clear_data_range(
                        view.as_ref(),
                        |b| kv.write_batch(b),
                        &range.start,
                        range.end.as_deref(),
                        self.limits.delete_range_bytes,
                    );
                    if let Err(e) = cleared {
                        return Err(self.fail(format!(
                            "region {}: range delete failed: {e}",
                            fsm.region.id
                        )));
                    }
                    from = resume;
                }
                Err(e) => match e.into_region_error() {
                    // Checked above: only a failed read of the applied state gets here.
                    Ok(e) => return Ok(Err(e)),
                    Err(kv) => {
                        return Err(self.fail(format!(
                            "region {}: reading applied state: {kv}",
                            fsm.region.id
                        )));
                    }
                },
            }
        }
    }

    fn apply_split(
        &mut self,
        fsm: &mut ApplyFsm,
        entry: &Entry,
        epoch: Option<&RegionEpoch>,
        split: &SplitCommand,
        proposal: Option<ProposalResponder>,
    ) -> Result<(), Stopped> {
        let regions = match check_epoch(CommandKind::Split, epoch, &fsm.region)
            .and_then(|()| split_region(&fsm.region, &split.splits))
        {
            Ok(regions) => regions,
            Err(e) => {
                self.answer_error(proposal, e);
                return Ok(());
            }
        };
        let init = initial_apply_state();
        let mut created = Vec::new();
        for new in &regions[1..] {
            match self.known_region(new) {
                Ok(Known::Tombstone) => {
                    // Destroyed here after the split elsewhere — never revived by a late
                    // split.
                    tracing::info!(
                        region = new.id,
                        "split: region already known here, not created"
                    );
                }
                Ok(Known::Live) => {
                    // The caller reused a region id this store holds: creating it would
                    // overwrite that region, skipping it would leave the range without a
                    // region here while other stores create it.
                    return Err(self.fail(format!(
                        "split of region {}: new region {} already exists here",
                        fsm.region.id, new.id
                    )));
                }
                Ok(Known::No) => {
                    put_region_state(&mut self.batch, &normal_state(new.clone()));
                    put_apply_state(&mut self.batch, new.region_id(), &init);
                    created.push(new.clone());
                }
                Err(e) => {
                    return Err(self.fail(format!("split of region {}: {e}", fsm.region.id)));
                }
            }
        }
        fsm.region = regions[0].clone();
        put_region_state(&mut self.batch, &normal_state(fsm.region.clone()));
        if !created.is_empty() {
            // The new regions' states are durable before their peers start here (the
            // batch's end persists before the peer hears of the split): a peer's raft log
            // is synced as it goes, and a crash that kept that log but lost the state it
            // starts from left a region whose log began past its apply state — its first
            // Ready read entries that never existed and stopped the store.
            self.persist = true;
        }
        self.observe(fsm, (entry.index, entry.term), || AppliedChange::Split {
            regions: regions.clone(),
        });
        // Answered by the peer once it has started the new regions (after this batch is
        // written), not with the batch's other answers.
        let answer = match proposal {
            Some(ProposalResponder::Split(r)) => Some((r, SplitResponse { regions })),
            other => {
                self.answer_error(other, invalid("the entry holds other commands"));
                None
            }
        };
        fsm.changes.push(RegionChange::Split {
            region: fsm.region.clone(),
            created,
            answer,
        });
        Ok(())
    }

    /// A membership change: the region's new peer list goes into the batch; the peer
    /// applies the entry to its core once the batch is written. A change the region
    /// refuses changes neither.
    fn apply_conf_change(
        &mut self,
        fsm: &mut ApplyFsm,
        entry: &Entry,
        proposal: Option<ProposalResponder>,
    ) {
        let decided = decode_conf_change(entry)
            .map_err(|e| invalid(&e.to_string()))
            .and_then(|cc| {
                let context = ChangePeersContext::decode(cc.context.as_slice())
                    .map_err(|e| invalid(&format!("membership change context: {e}")))?;
                change_peers(&fsm.region, &cc, &context)
            });
        let region = match decided {
            Ok(region) => region,
            Err(e) => {
                tracing::info!(region = fsm.region.id, index = entry.index, error = %e, "membership change refused at apply");
                self.answer_error(proposal, e);
                return;
            }
        };
        fsm.region = region.clone();
        // A change removing this replica makes it a tombstone in the same batch: a crash
        // before the peer destroys it must not leave a region state naming no peer here.
        let state = if self.removed_here(fsm) {
            tombstone_state(region.clone())
        } else {
            normal_state(region.clone())
        };
        put_region_state(&mut self.batch, &state);
        self.observe(fsm, (entry.index, entry.term), || {
            AppliedChange::ChangePeers {
                region: region.clone(),
            }
        });
        // Answered by the peer once it took the change in (after this batch is written),
        // not with the batch's other answers: a request routed with the new epoch must
        // not reach the peer before it.
        let answer = match proposal {
            Some(ProposalResponder::ChangePeers(r)) => Some((
                r,
                ChangePeersResponse {
                    region: region.clone(),
                },
            )),
            other => {
                self.answer_error(other, invalid("the entry holds other commands"));
                None
            }
        };
        fsm.changes.push(RegionChange::ConfChange {
            region,
            entry: entry.clone(),
            answer,
        });
    }

    /// Hands the snapshot worker a read view taken at the applied index (everything
    /// applied so far written first, apply state included), to generate the region's
    /// snapshot from.
    fn snapshot_view(&mut self, fsm: &mut ApplyFsm, log: Arc<RegionLog>) -> Result<(), Stopped> {
        self.flush_with(fsm)?;
        let task = SnapshotTask::Generate {
            region: fsm.region.clone(),
            applied: fsm.applied,
            view: self.kv.read_view(),
            log,
        };
        if let Err(SendError(SnapshotTask::Generate { log, .. })) =
            self.shared.snapshot_tasks.send(task)
        {
            // The worker is gone with the store; the next request starts anew.
            log.abandon_snapshot();
        }
        Ok(())
    }

    /// Installs a received snapshot: checked against the summary that came through Raft,
    /// applied (a durable mark first, so a crash finishes it on restart) and made durable
    /// before the peer resets its log and acknowledges it to the core. The core took the
    /// snapshot already: one that cannot be installed stops the store.
    fn install(
        &mut self,
        fsm: &mut ApplyFsm,
        summary: &SnapshotSummary,
        files: &Path,
    ) -> Result<(), Stopped> {
        self.flush_with(fsm)?;
        let installed = snapshot::verify(files, summary)
            .and_then(|verified| {
                snapshot::apply(self.kv.as_ref(), &verified, self.limits.batch_bytes)
            })
            .and_then(|()| Ok(self.kv.persist_all()?));
        if let Err(e) = installed {
            return Err(self.fail(format!(
                "region {}: installing snapshot at {}: {e}",
                fsm.region.id, summary.index
            )));
        }
        let _ = snapshot::remove(files);
        let region = summary.region.clone().unwrap_or_default();
        drop_covered_proposals(&mut fsm.proposals, (summary.term, summary.index));
        fsm.region = region.clone();
        fsm.applied = (summary.index, summary.term);
        fsm.truncated = fsm.applied;
        fsm.partial = None;
        self.observe(fsm, (summary.index, summary.term), || {
            AppliedChange::SnapshotInstalled {
                region: region.clone(),
            }
        });
        self.notify_observers();
        fsm.changes.push(RegionChange::SnapshotInstalled { region });
        Ok(())
    }

    /// The region's peer was removed: the region becomes a tombstone here (durably, so a
    /// stale message never brings it back), its data is cleared in bounded batches, and
    /// only then does the store forget its range (a peer created over the range meanwhile
    /// would have its data cleared under it).
    fn destroy(&mut self, fsm: &mut ApplyFsm) -> Result<(), Stopped> {
        self.flush_with(fsm)?;
        let id = fsm.region.region_id();
        let mut tombstone = KvWriteBatch::default();
        put_region_state(
            &mut tombstone,
            &RegionLocalState {
                region: Some(fsm.region.clone()),
                state: PeerState::Tombstone as i32,
                applying: None,
            },
        );
        let kv = self.kv.clone();
        let marked = kv.write_batch(&tombstone).and_then(|()| kv.persist_all());
        let cleared = marked.and_then(|()| {
            if !is_born(&fsm.region) {
                return Ok(0);
            }
            clear_data_range(
                kv.read_view().as_ref(),
                |b| kv.write_batch(b),
                &fsm.region.start_key,
                end_bound(&fsm.region),
                self.limits.delete_range_bytes,
            )
        });
        if let Err(e) = cleared {
            return Err(self.fail(format!("destroying region {id}: {e}")));
        }
        {
            self.shared.meta.lock().remove(id);
        }
        self.observe(fsm, fsm.applied, || AppliedChange::Destroyed {
            region: fsm.region.clone(),
        });
        self.notify_observers();
        Ok(())
    }

    /// Records the log truncated after `index` in the apply state (never past what is
    /// applied, never back); the batch's end makes it durable, with everything applied,
    /// before the peer hears of it.
    fn compact_log(&mut self, fsm: &mut ApplyFsm, index: u64, term: u64) {
        if index <= fsm.truncated.0 || index > fsm.applied.0 {
            return;
        }
        fsm.truncated = (index, term);
        self.persist = true;
        fsm.changes.push(RegionChange::LogTruncated { index, term });
    }

    /// What this store holds of the region a split is about to create.
    fn known_region(&self, region: &Region) -> Result<Known, KvError> {
        let created_this_round = self.results.iter().any(|(_, r, _)| {
            r.changes.iter().any(|c| match c {
                RegionChange::Split { created, .. } => created.iter().any(|n| n.id == region.id),
                RegionChange::ConfChange { .. }
                | RegionChange::SnapshotInstalled { .. }
                | RegionChange::LogTruncated { .. } => false,
            })
        });
        if created_this_round {
            return Ok(Known::Live);
        }
        Ok(match region_state(self.kv.as_ref(), region.region_id())? {
            None => Known::No,
            Some(s) if s.state == PeerState::Tombstone as i32 => Known::Tombstone,
            Some(_) => Known::Live,
        })
    }
}

/// What a store holds of a region id.
enum Known {
    No,
    Tombstone,
    Live,
}

fn invalid(reason: &str) -> RegionError {
    RegionError::InvalidRequest {
        reason: reason.to_string(),
    }
}

impl PollHandler<ApplyFsm, ApplyControl> for ApplyPoller {
    fn begin(&mut self, batch_len: usize) {
        self.began = Instant::now();
        self.applied_entries = 0;
        self.metrics.batch_began(batch_len);
    }

    fn handle_control(
        &mut self,
        _fsm: &mut ApplyControl,
        inbox: &mut Inbox<'_, ApplyControl>,
    ) -> Handled {
        if let Some(never) = inbox.next_message() {
            match never {}
        }
        Handled::Idle
    }

    fn handle_normal(&mut self, fsm: &mut ApplyFsm, inbox: &mut Inbox<'_, ApplyFsm>) -> Handled {
        self.metrics.mailbox(inbox.queued());
        if self.shared.fail_stop.is_tripped() {
            // Nothing more is applied; the tasks' proposals drop unanswered (they are in
            // the log: their outcome is unknown).
            while inbox.next_message().is_some() {}
            return Handled::Idle;
        }
        while let Some(msg) = inbox.next_message() {
            let done = match msg {
                ApplyMsg::Apply(task) => self.apply_task(fsm, *task),
                ApplyMsg::Snapshot { log } => self.snapshot_view(fsm, log),
                ApplyMsg::Install(m) => self.install(fsm, &m.summary, &m.files),
                ApplyMsg::CompactLog { index, term } => {
                    self.compact_log(fsm, index, term);
                    Ok(())
                }
                ApplyMsg::Destroy => {
                    // Whatever it answered is written; the region is no more.
                    let _ = self.destroy(fsm);
                    return Handled::Stopped;
                }
            };
            if done.is_err() {
                // The store stopped: the changes are never reported, and a split's or a
                // membership change's answer among them drops with them (its outcome
                // unknown), now rather than at shutdown.
                fsm.changes.clear();
                return Handled::Idle;
            }
        }
        if fsm.proposals.is_empty() {
            // A region's apply delegate mostly waits: it keeps no room between rounds.
            fsm.proposals.shrink_to_fit();
        }
        let changes = std::mem::take(&mut fsm.changes);
        if fsm.applied.0 > fsm.recorded || !changes.is_empty() {
            put_apply_state(&mut self.batch, fsm.region.region_id(), &fsm.apply_state());
            fsm.recorded = fsm.applied.0;
            self.results.push((
                fsm.region.region_id(),
                ApplyResult {
                    applied: fsm.applied,
                    changes,
                },
                fsm.progress.clone(),
            ));
        }
        if inbox.has_messages() {
            Handled::Busy
        } else {
            Handled::Idle
        }
    }

    fn end(&mut self, _batch: &mut [Polled<ApplyFsm>]) {
        if self.flush().is_err() {
            return;
        }
        self.batch_entries.record(self.applied_entries as f64);
        self.metrics.batch_took(self.began.elapsed().as_secs_f64());
        if std::mem::take(&mut self.persist)
            && let Err(e) = self.kv.persist_all()
        {
            self.fail(format!("making a log truncation or a split durable: {e}"));
            return;
        }
        for (region, result, progress) in self.results.drain(..) {
            // Written: the peer may read it. It hears of it only if the region changed
            // or a read waits for it.
            if result.changes.is_empty() {
                if !progress.publish(result.applied.0) {
                    continue;
                }
            } else {
                progress.publish_with_changes(result.applied.0);
            }
            // A peer that is gone (its store stopping) needs no report.
            let _ = self
                .shared
                .raft_router
                .force_send(region, PeerMsg::Applied(Box::new(result)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionId;
    use crate::store::responder::{Response, response_channel};

    fn proposal(term: u64, index: u64) -> (Proposal, Response<WriteResponse>) {
        let (responder, response) = response_channel(RegionId(1));
        let p = Proposal {
            index,
            term,
            responder: ProposalResponder::Writes(vec![responder]),
            command: None,
            _charge: crate::store::flow::Charge::new(&Default::default(), 0),
        };
        (p, response)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            ..Default::default()
        }
    }

    /// An entry whose writes do not match its responders in number could only come from
    /// a bug: every responder hears so, none gets another write's answer, none is left to
    /// the dropped-unanswered path.
    #[test]
    fn a_responder_count_other_than_the_entrys_writes_fails_every_responder() {
        let (first, mut first_response) = response_channel(RegionId(1));
        let (second, mut second_response) = response_channel(RegionId(1));
        let written = WriteResponse {
            index: 7,
            outcomes: Vec::new(),
        };
        let mut answers = Vec::new();
        Answer::applied(
            ProposalResponder::Writes(vec![first, second]),
            Applied::Writes(vec![Ok(written)]),
            &mut answers,
        );
        assert_eq!(answers.len(), 2);
        for a in answers {
            a.send(&mut AnswerTally::default());
        }
        for r in [&mut first_response, &mut second_response] {
            assert!(matches!(
                r.try_take(),
                Some(Err(RegionError::InvalidRequest { .. }))
            ));
        }
    }

    /// A leader of term 5 proposed 10..=13, lost them to term 6's entry at 10, and was
    /// elected again in term 7, proposing at 12: its queue is in (term, index) order, not
    /// index order. Each proposal must get the verdict of its own entry.
    #[test]
    fn proposals_are_decided_in_term_then_index_order() {
        let mut fsm = ApplyFsm::new(
            Region::default(),
            &RaftApplyState::default(),
            Arc::new(AppliedProgress::new(0)),
        );
        let mut responses = Vec::new();
        for (t, i) in [(5, 10), (5, 11), (5, 12), (5, 13), (7, 12)] {
            let (p, r) = proposal(t, i);
            fsm.proposals.push_back(p);
            responses.push(r);
        }
        let mut answers = Vec::new();
        let mut matched = Vec::new();
        for e in [entry(6, 10), entry(7, 11), entry(7, 12), entry(7, 13)] {
            if fsm.take_proposal(&e, &mut answers).is_some() {
                matched.push((e.term, e.index));
            }
        }
        assert_eq!(
            matched,
            vec![(7, 12)],
            "only term 7's proposal at 12 is applied"
        );
        assert_eq!(answers.len(), 4, "term 5's four are overtaken");
        for a in answers {
            a.send(&mut AnswerTally::default());
        }
        for mut r in responses.drain(..4) {
            assert!(matches!(
                r.try_take(),
                Some(Err(RegionError::StaleCommand { .. }))
            ));
        }
        assert!(fsm.proposals.is_empty());
    }

    /// A deposed leader's proposals beyond the new leader's log are answered as soon as
    /// the new term commits an entry, not left waiting for their index to be reached.
    #[test]
    fn a_committed_entry_of_a_later_term_decides_earlier_terms_proposals_beyond_it() {
        let mut fsm = ApplyFsm::new(
            Region::default(),
            &RaftApplyState::default(),
            Arc::new(AppliedProgress::new(0)),
        );
        let (stale, mut stale_response) = proposal(5, 30);
        let (waiting, _r) = proposal(6, 21);
        fsm.proposals.push_back(stale);
        fsm.proposals.push_back(waiting);
        let mut answers = Vec::new();
        assert!(fsm.take_proposal(&entry(6, 20), &mut answers).is_none());
        assert_eq!(answers.len(), 1);
        answers.pop().unwrap().send(&mut AnswerTally::default());
        assert!(matches!(
            stale_response.try_take(),
            Some(Err(RegionError::StaleCommand { .. }))
        ));
        assert_eq!(
            fsm.proposals.len(),
            1,
            "term 6's proposal at 21 waits for its entry"
        );
        assert!(fsm.take_proposal(&entry(6, 21), &mut answers).is_some());
    }
}
