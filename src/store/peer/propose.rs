//! Commands into the log. A command is checked against the region when it arrives (leader,
//! epoch, keys) and again when applied. The commands of one round are proposed together
//! at its end as one append: consecutive writes checked against the same epoch share one
//! entry (a `WriteBatch`, bounded by the entry size limit), so a busy region pays the
//! log's, the messages' and apply's cost per entry once per round rather than once per
//! command; a split gets an entry of its own. Each waits for the verdict on its entry
//! (see `Proposal`).

use bytes::Bytes;
use prost::Message as _;

use super::PeerFsm;
use crate::RegionId;
use crate::proto::commandpb::{
    ChangePeersContext, RaftCommand, SplitCommand, SplitRequest, WriteBatch, WriteCommand,
    raft_command,
};
use crate::proto::metapb::RegionEpoch;
use crate::proto::raftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeV2};
use crate::region::{CommandKind, RegionError, change_peers, check_epoch, split_region};
use crate::store::apply::eval::check_command;
use crate::store::codec::{batched_len, encode_writes, entry_len};
use crate::store::context::PollContext;
use crate::store::flow::Charge;
use crate::store::msg::{Command, Proposal, ProposalResponder};
use crate::store::request::{PeerChange, SplitResponse, WriteResponse};
use crate::store::responder::Responder;

/// A checked command of this round, waiting for the round's end.
#[derive(Debug)]
pub(super) enum RoundCommand {
    /// A write, with the epoch of the region it was checked against and its encoded
    /// length inside a `WriteBatch`.
    Write {
        epoch: RegionEpoch,
        command: WriteCommand,
        len: usize,
        responder: Responder<WriteResponse>,
    },
    /// A split, encoded as its entry's data.
    Split {
        data: Bytes,
        responder: Responder<SplitResponse>,
    },
}

impl RoundCommand {
    pub(super) fn fail(self, error: RegionError) {
        match self {
            RoundCommand::Write { responder, .. } => responder.fail(error),
            RoundCommand::Split { responder, .. } => responder.fail(error),
        }
    }
}

/// One entry of a round: its data, the responders it answers and, for writes, the
/// command it encodes (see `Proposal::command`).
struct PackedEntry {
    data: Bytes,
    responder: ProposalResponder,
    command: Option<RaftCommand>,
}

/// The round's commands as entries.
fn pack_entries(
    region: RegionId,
    commands: Vec<RoundCommand>,
    max_entry_size: u64,
) -> Vec<PackedEntry> {
    let mut entries = Vec::new();
    let mut open: Option<OpenBatch> = None;
    for command in commands {
        match command {
            RoundCommand::Write {
                epoch,
                command,
                len,
                responder,
            } => {
                let fits = open
                    .as_ref()
                    .is_some_and(|b| b.epoch == epoch && b.size_with(len) <= max_entry_size);
                if !fits {
                    entries.extend(open.take().map(|b| b.finish()));
                    open = Some(OpenBatch::new(region, epoch));
                }
                if let Some(batch) = open.as_mut() {
                    batch.commands_len += len;
                    batch.commands.push(command);
                    batch.responders.push(responder);
                }
            }
            RoundCommand::Split { data, responder } => {
                entries.extend(open.take().map(|b| b.finish()));
                entries.push(PackedEntry {
                    data,
                    responder: ProposalResponder::Split(responder),
                    command: None,
                });
            }
        }
    }
    entries.extend(open.map(|b| b.finish()));
    entries
}

/// Writes gathered into one entry.
struct OpenBatch {
    region: RegionId,
    epoch: RegionEpoch,
    /// Encoded bytes of the writes, each with its field key and length.
    commands_len: usize,
    commands: Vec<WriteCommand>,
    responders: Vec<Responder<WriteResponse>>,
}

impl OpenBatch {
    fn new(region: RegionId, epoch: RegionEpoch) -> Self {
        OpenBatch {
            region,
            epoch,
            commands_len: 0,
            commands: Vec::new(),
            responders: Vec::new(),
        }
    }

    /// The entry's encoded size with one more write of `command_len` bytes.
    fn size_with(&self, command_len: usize) -> u64 {
        entry_len(self.region.0, &self.epoch, self.commands_len + command_len) as u64
    }

    fn finish(self) -> PackedEntry {
        let data = encode_writes(self.region.0, &self.epoch, &self.commands);
        let command = RaftCommand {
            region_id: self.region.0,
            epoch: Some(self.epoch),
            body: Some(raft_command::Body::Writes(WriteBatch {
                commands: self.commands,
            })),
        };
        PackedEntry {
            data: Bytes::from(data),
            responder: ProposalResponder::Writes(self.responders),
            command: Some(command),
        }
    }
}

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
        match command {
            Command::Write { command, responder } => match self.check_write(epoch, &command) {
                Ok(len) => self.round.push(RoundCommand::Write {
                    epoch: self.region.epoch.unwrap_or_default(),
                    command,
                    len,
                    responder,
                }),
                Err(e) => responder.fail(e),
            },
            Command::ChangePeers { changes, responder } => {
                let term = self.raw.raft().term();
                match self.propose_conf_change(epoch, &changes) {
                    Ok((index, bytes)) => self.proposals.push_back(Proposal {
                        index,
                        term,
                        responder: ProposalResponder::ChangePeers(responder),
                        command: None,
                        _charge: Charge::new(&ctx.shared.flow.proposals, bytes),
                    }),
                    Err(e) => responder.fail(e),
                }
            }
            Command::Split { splits, responder } if reuses_region_id(&splits, ctx) => {
                responder.fail(RegionError::InvalidRequest {
                    reason: "a new region id names a region this store holds".into(),
                });
            }
            Command::Split { splits, responder } => match self.encode_split(epoch, splits) {
                Ok(data) => self.round.push(RoundCommand::Split { data, responder }),
                Err(e) => responder.fail(e),
            },
        }
    }

    /// Checks a write against the region as it is now, and that an entry can hold it;
    /// its encoded length in an entry's batch.
    fn check_write(
        &self,
        epoch: Option<&RegionEpoch>,
        command: &WriteCommand,
    ) -> Result<usize, RegionError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        check_epoch(CommandKind::Write, epoch, &self.region)?;
        check_command(command, &self.region).map_err(|e| {
            e.into_region_error()
                .unwrap_or_else(|kv| RegionError::InvalidRequest {
                    reason: kv.to_string(),
                })
        })?;
        let len = batched_len(command);
        let epoch = self.region.epoch.unwrap_or_default();
        let alone = entry_len(self.region.id, &epoch, len);
        self.check_entry_size(alone as u64)?;
        Ok(len)
    }

    /// Checks a split against the region as it is now and encodes it as entry data.
    fn encode_split(
        &self,
        epoch: Option<&RegionEpoch>,
        splits: Vec<SplitRequest>,
    ) -> Result<Bytes, RegionError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        check_epoch(CommandKind::Split, epoch, &self.region)?;
        split_region(&self.region, &splits)?;
        let command = RaftCommand {
            region_id: self.region.id,
            epoch: self.region.epoch,
            body: Some(raft_command::Body::Split(SplitCommand { splits })),
        };
        let data = Bytes::from(command.encode_to_vec());
        self.check_entry_size(data.len() as u64)?;
        Ok(data)
    }

    fn check_entry_size(&self, size: u64) -> Result<(), RegionError> {
        let limit = self.raw.raft().config().max_entry_size;
        if size > limit {
            return Err(RegionError::EntryTooLarge { size, limit });
        }
        Ok(())
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
        if self.round.is_empty() {
            return;
        }
        let commands = std::mem::take(&mut self.round);
        // A message earlier in the round may have ended this replica's leadership.
        if !self.is_leader() {
            for command in commands {
                command.fail(self.not_leader());
            }
            return;
        }
        let count = commands.len() as u64;
        let limit = self.raw.raft().config().max_entry_size;
        let entries = pack_entries(self.region_id(), commands, limit);
        let term = self.raw.raft().term();
        let datas = entries.iter().map(|e| (e.data.clone(), Vec::new()));
        match self.raw.propose_batch(datas) {
            Ok(last) => {
                metrics::counter!("flotilla_raft_proposals_total").increment(count);
                let first = last + 1 - entries.len() as u64;
                for (index, entry) in (first..).zip(entries) {
                    self.proposals.push_back(Proposal {
                        index,
                        term,
                        responder: entry.responder,
                        command: entry.command,
                        _charge: Charge::new(&ctx.shared.flow.proposals, entry.data.len() as u64),
                    });
                }
            }
            Err(e) => {
                let error = self.refusal(e);
                for entry in entries {
                    entry.responder.fail(error.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::responder::response_channel;
    use crate::testkit::cluster::put;

    const REGION: RegionId = RegionId(7);

    fn write(version: u64, key: &str, value_len: usize) -> RoundCommand {
        let (responder, _) = response_channel(REGION);
        let command = put(key.as_bytes(), &vec![b'v'; value_len]);
        RoundCommand::Write {
            epoch: RegionEpoch {
                conf_ver: 1,
                version,
            },
            len: batched_len(&command),
            command,
            responder,
        }
    }

    fn split() -> RoundCommand {
        let (responder, _) = response_channel(REGION);
        RoundCommand::Split {
            data: Bytes::from_static(b"split"),
            responder,
        }
    }

    /// Each entry as (the epoch version it carries, the keys of its writes), or None for a
    /// split's entry. A write entry keeps the very command its data encodes.
    fn shape(entries: &[PackedEntry]) -> Vec<Option<(u64, Vec<String>)>> {
        entries
            .iter()
            .map(
                |PackedEntry {
                     data,
                     responder,
                     command: kept,
                 }| {
                    let command = RaftCommand::decode(data.clone()).ok()?;
                    let Some(raft_command::Body::Writes(batch)) = &command.body else {
                        assert!(kept.is_none(), "only writes keep their command");
                        return None;
                    };
                    assert_eq!(
                        kept.as_ref(),
                        Some(&command),
                        "the command kept is the entry's"
                    );
                    assert_eq!(command.region_id, REGION.0);
                    let ProposalResponder::Writes(rs) = responder else {
                        panic!("writes answered by another responder");
                    };
                    assert_eq!(rs.len(), batch.commands.len(), "one responder per write");
                    let keys = batch
                        .commands
                        .iter()
                        .flat_map(|c| &c.ops)
                        .map(|op| match &op.op {
                            Some(crate::proto::commandpb::op::Op::Put(p)) => {
                                String::from_utf8_lossy(&p.key).into_owned()
                            }
                            _ => panic!("only puts here"),
                        })
                        .collect();
                    Some((command.epoch.unwrap_or_default().version, keys))
                },
            )
            .collect()
    }

    #[test]
    fn a_rounds_writes_share_an_entry_until_a_split_or_another_epoch_comes() {
        let round = vec![
            write(1, "a", 1),
            write(1, "b", 1),
            split(),
            write(1, "c", 1),
            write(2, "d", 1),
            write(2, "e", 1),
        ];
        let entries = pack_entries(REGION, round, 1 << 20);
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape(&entries),
            vec![
                Some((1, keys(&["a", "b"]))),
                None,
                Some((1, keys(&["c"]))),
                Some((2, keys(&["d", "e"]))),
            ]
        );
        assert!(matches!(entries[1].responder, ProposalResponder::Split(_)));
    }

    /// Entries are filled up to the size limit and no further, by an exact count of their
    /// encoded bytes.
    #[test]
    fn an_entry_holds_writes_up_to_the_size_limit_exactly() {
        for limit in [200u64, 333, 1000, 4096] {
            let round: Vec<_> = (0..40)
                .map(|i| write(1, &format!("k{i}"), 10 + (i * 7) % 50))
                .collect();
            let sizes: Vec<usize> = round
                .iter()
                .map(|c| match c {
                    RoundCommand::Write { len, .. } => *len,
                    RoundCommand::Split { .. } => unreachable!(),
                })
                .collect();
            let entries = pack_entries(REGION, round, limit);
            let mut next = 0;
            for PackedEntry {
                data, responder, ..
            } in &entries
            {
                let ProposalResponder::Writes(rs) = responder else {
                    panic!("a write entry");
                };
                let estimate = OpenBatch {
                    commands_len: sizes[next..next + rs.len()].iter().sum(),
                    ..OpenBatch::new(
                        REGION,
                        RegionEpoch {
                            conf_ver: 1,
                            version: 1,
                        },
                    )
                }
                .size_with(0);
                assert_eq!(estimate, data.len() as u64, "the size is counted exactly");
                assert!(data.len() as u64 <= limit, "{} > {limit}", data.len());
                next += rs.len();
                if let Some(&following) = sizes.get(next) {
                    let with_next = OpenBatch {
                        commands_len: sizes[next - rs.len()..next].iter().sum(),
                        ..OpenBatch::new(
                            REGION,
                            RegionEpoch {
                                conf_ver: 1,
                                version: 1,
                            },
                        )
                    }
                    .size_with(following);
                    assert!(with_next > limit, "the next write would have fitted");
                }
            }
            assert_eq!(next, 40, "every write is in an entry, once");
        }
    }
}
