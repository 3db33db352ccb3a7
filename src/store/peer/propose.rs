//! Commands into the log. A command is checked against the region when it arrives (leader,
//! epoch, keys) and again when applied; the commands of one round are proposed as one
//! append, each its own entry, and wait for the verdict on their entry (see `Proposal`).

use bytes::Bytes;
use prost::Message as _;

use super::PeerFsm;
use crate::RegionId;
use crate::proto::commandpb::{
    ChangePeersContext, RaftCommand, SplitCommand, SplitRequest, raft_command,
};
use crate::proto::metapb::RegionEpoch;
use crate::proto::raftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeV2};
use crate::region::{CommandKind, RegionError, change_peers, check_epoch, split_region};
use crate::store::apply::eval::check_command;
use crate::store::context::PollContext;
use crate::store::flow::Charge;
use crate::store::msg::{Command, Proposal, ProposalResponder};
use crate::store::request::PeerChange;

impl PeerFsm {
    pub(super) fn on_propose(
        &mut self,
        epoch: Option<&RegionEpoch>,
        command: Command,
        ctx: &PollContext,
    ) {
        if let Err(e) = ctx.shared.flow.admit() {
            return command.fail(e);
        }
        let (kind, body, responder) = match command {
            Command::Write { command, responder } => (
                CommandKind::Write,
                raft_command::Body::Write(command),
                ProposalResponder::Write(responder),
            ),
            Command::ChangePeers { changes, responder } => {
                let term = self.raw.raft().term();
                match self.propose_conf_change(epoch, &changes) {
                    Ok((index, bytes)) => self.proposals.push_back(Proposal {
                        index,
                        term,
                        responder: ProposalResponder::ChangePeers(responder),
                        _charge: Charge::new(&ctx.shared.flow.proposals, bytes),
                    }),
                    Err(e) => responder.fail(e),
                }
                return;
            }
            Command::Split { splits, responder } if reuses_region_id(&splits, ctx) => {
                return responder.fail(RegionError::InvalidRequest {
                    reason: "a new region id names a region this store holds".into(),
                });
            }
            Command::Split { splits, responder } => (
                CommandKind::Split,
                raft_command::Body::Split(SplitCommand { splits }),
                ProposalResponder::Split(responder),
            ),
        };
        match self.encode_proposal(kind, epoch, body) {
            Ok(data) => self.pending_batch.push((data, responder)),
            Err(e) => responder.fail(e),
        }
    }

    /// Checks a command against the region as it is now and encodes it as entry data.
    fn encode_proposal(
        &self,
        kind: CommandKind,
        epoch: Option<&RegionEpoch>,
        body: raft_command::Body,
    ) -> Result<Bytes, RegionError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        check_epoch(kind, epoch, &self.region)?;
        match &body {
            raft_command::Body::Write(write) => {
                check_command(write, &self.region).map_err(|e| {
                    e.into_region_error()
                        .unwrap_or_else(|kv| RegionError::InvalidRequest {
                            reason: kv.to_string(),
                        })
                })?
            }
            raft_command::Body::Split(split) => {
                split_region(&self.region, &split.splits)?;
            }
        }
        let command = RaftCommand {
            region_id: self.region.id,
            epoch: self.region.epoch,
            body: Some(body),
        };
        let data = Bytes::from(command.encode_to_vec());
        let limit = self.raw.raft().config().max_entry_size;
        if data.len() as u64 > limit {
            return Err(RegionError::EntryTooLarge {
                size: data.len() as u64,
                limit,
            });
        }
        Ok(data)
    }

    /// Proposes a membership change now (its entry goes before the round's commands):
    /// one change directly, several through joint consensus.
    fn propose_conf_change(
        &mut self,
        epoch: Option<&RegionEpoch>,
        changes: &[PeerChange],
    ) -> Result<(u64, u64), RegionError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        check_epoch(CommandKind::ChangePeers, epoch, &self.region)?;
        if changes
            .iter()
            .any(|c| c.peer().id == self.peer.id && !matches!(c, PeerChange::AddVoter(_)))
        {
            return Err(RegionError::InvalidRequest {
                reason: "the leader cannot remove or demote itself: transfer leadership first"
                    .into(),
            });
        }
        let context = ChangePeersContext {
            region_id: self.region.id,
            epoch: self.region.epoch,
            peers: changes.iter().map(PeerChange::peer).collect(),
        };
        let cc = ConfChangeV2 {
            transition: ConfChangeTransition::Auto as i32,
            changes: changes
                .iter()
                .map(|c| ConfChangeSingle {
                    change_type: c.change_type() as i32,
                    node_id: c.peer().id,
                })
                .collect(),
            context: context.encode_to_vec(),
        };
        // Applying decides from the region alone; refuse now what it would refuse then.
        change_peers(&self.region, &cc, &context)?;
        let bytes = cc.encoded_len() as u64;
        let index = self
            .raw
            .propose_conf_change(cc)
            .map_err(|e| self.refusal(e))?;
        metrics::counter!("flotilla_raft_proposals_total").increment(1);
        Ok((index, bytes))
    }

    /// Proposes the round's commands as one append.
    pub(super) fn propose_pending(&mut self, ctx: &PollContext) {
        if self.pending_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending_batch);
        // A message earlier in the round may have ended this replica's leadership.
        if !self.is_leader() {
            for (_, responder) in batch {
                responder.fail(self.not_leader());
            }
            return;
        }
        let term = self.raw.raft().term();
        let entries = batch.iter().map(|(data, _)| (data.clone(), Vec::new()));
        match self.raw.propose_batch(entries) {
            Ok(last) => {
                metrics::counter!("flotilla_raft_proposals_total").increment(batch.len() as u64);
                let first = last + 1 - batch.len() as u64;
                for (index, (data, responder)) in (first..).zip(batch) {
                    self.proposals.push_back(Proposal {
                        index,
                        term,
                        responder,
                        _charge: Charge::new(&ctx.shared.flow.proposals, data.len() as u64),
                    });
                }
            }
            Err(e) => {
                let error = self.refusal(e);
                for (_, responder) in batch {
                    responder.fail(error.clone());
                }
            }
        }
    }
}

/// Whether a split names a new region id this store already holds (ids are the caller's
/// until placement allocates them).
fn reuses_region_id(splits: &[SplitRequest], ctx: &PollContext) -> bool {
    let meta = ctx.shared.meta.lock();
    splits
        .iter()
        .any(|s| meta.region(RegionId(s.new_region_id)).is_some())
}
