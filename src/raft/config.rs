//! Configuration of one Raft node.

use super::errors::{RaftError, Result};

/// How the leader answers `read_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// Every read round confirms leadership with a quorum of heartbeat acks.
    Safe,
    /// While its lease holds, the leader answers at once. Requires `check_quorum`: the lease
    /// rests on followers refusing votes for an election timeout after hearing the leader.
    LeaseBased,
}

/// How a node came to exist; decides whether it starts behind a boot guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeStart {
    /// Started from state on disk that may predate a crash (the default, and always safe).
    /// With check-quorum, it refuses votes and requested campaigns for one election timeout:
    /// it may have acknowledged a leader's heartbeat (granting it a lease) just before going
    /// down, and an acknowledgement is not persisted.
    #[default]
    Restarted,
    /// Created in this process with no earlier life (a region made by a split here, a peer
    /// being added): it cannot have acknowledged any leader before, so it may vote and
    /// campaign at once. Never use it for a node that existed before a restart.
    Created,
}

/// Settings of one Raft node; all durations are in ticks. `validate` runs when the node
/// is created.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id; never 0.
    pub id: u64,
    /// A follower campaigns after a random number of ticks in `[election_tick, 2*election_tick)`.
    pub election_tick: usize,
    /// The leader sends heartbeats every `heartbeat_tick` ticks.
    pub heartbeat_tick: usize,
    /// The index already applied by the state machine when the node restarts.
    pub applied: u64,
    /// Byte limit of the entries of one append message (at least one entry is sent;
    /// 0 = unlimited).
    pub max_size_per_msg: u64,
    /// At most this many append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// At most this many entry bytes in flight to one follower (0 = unlimited).
    pub max_inflight_bytes: u64,
    /// A leader drops proposals once its uncommitted entries hold this many bytes
    /// (0 = unlimited). A proposal into an empty uncommitted log is always accepted.
    pub max_uncommitted_size: u64,
    /// Byte limit of one proposed entry's payload (0 = unlimited).
    pub max_entry_size: u64,
    /// Byte limit of the committed entries handed out by one Ready (at least one entry;
    /// 0 = unlimited).
    pub max_committed_size_per_ready: u64,
    /// The leader steps down when it has not heard from a quorum for an election timeout,
    /// and followers that heard from a leader recently refuse to vote.
    pub check_quorum: bool,
    /// Run a pre-vote round before incrementing the term.
    pub pre_vote: bool,
    /// How `read_index` confirms leadership: a quorum heartbeat round, or the leader's lease.
    pub read_only_option: ReadOnlyOption,
    /// Ticks subtracted from the election timeout to bound a lease, covering clock-rate drift
    /// between nodes.
    pub lease_margin_ticks: usize,
    /// Seed of the node's randomized election timeouts.
    pub seed: u64,
    /// Restarted (with a boot guard) or created fresh.
    pub start: NodeStart,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            max_uncommitted_size: 0,
            max_entry_size: 8 << 20,
            max_committed_size_per_ready: 0,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            lease_margin_ticks: 2,
            seed: 0,
            start: NodeStart::Restarted,
        }
    }
}

impl Config {
    /// The defaults for node `id`, with `seed` set to the id.
    pub fn new(id: u64) -> Self {
        Config {
            id,
            seed: id,
            ..Default::default()
        }
    }

    /// Refuses settings the core cannot run with (id 0, `election_tick <= heartbeat_tick`,
    /// lease reads without check-quorum, ...) with `RaftError::InvalidConfig`.
    pub fn validate(&self) -> Result<()> {
        let fail = |s: &str| Err(RaftError::InvalidConfig(s.to_string()));
        if self.id == 0 {
            return fail("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return fail("heartbeat_tick must be positive");
        }
        if self.election_tick <= self.heartbeat_tick {
            return fail("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return fail("max_inflight_msgs must be positive");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return fail("lease-based reads require check_quorum");
        }
        if self.lease_margin_ticks >= self.election_tick {
            return fail("lease_margin_ticks must be smaller than election_tick");
        }
        Ok(())
    }
}

/// Treats 0 as "no limit".
pub(crate) fn limit(v: u64) -> u64 {
    if v == 0 { u64::MAX } else { v }
}
