//! Commands into the log. A command is checked against the region when it arrives (leader,
//! epoch, keys) and again when applied; the commands of one round are proposed as one
//! append, each its own entry, and wait for the verdict on their entry (see `Proposal`).

use bytes::Bytes;
use prost::Message as _;

use super::PeerFsm;
use crate::proto::commandpb::{RaftCommand, SplitCommand, raft_command};
use crate::proto::metapb::RegionEpoch;
use crate::region::{CommandKind, RegionError, check_epoch, split_region};
use crate::store::apply::eval::check_command;
use crate::store::msg::{Command, Proposal, ProposalResponder};

impl PeerFsm {
    pub(super) fn on_propose(&mut self, epoch: Option<&RegionEpoch>, command: Command) {
        let (kind, body, responder) = match command {
            Command::Write { command, responder } => (
                CommandKind::Write,
                raft_command::Body::Write(command),
                ProposalResponder::Write(responder),
            ),
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

    /// Proposes the round's commands as one append.
    pub(super) fn propose_pending(&mut self) {
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
                for (index, (_, responder)) in (first..).zip(batch) {
                    self.proposals.push_back(Proposal {
                        index,
                        term,
                        responder,
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
