//! Handles of the metrics the store's loops record on every round, taken once when a loop
//! is made. A `metrics::counter!` or `histogram!` at the call looks its key up in the
//! recorder's registry each time (name and labels hashed, the key copied on first use):
//! measured, those lookups were about a sixteenth of an in-memory store's CPU at 64
//! clients. A handle records into whatever recorder was installed when it was taken, so
//! the recorder must be installed before the store opens (the server does so first).

use metrics::{Counter, Histogram};

/// One pool's batches.
pub(crate) struct PollMetrics {
    batch_fsms: Histogram,
    mailbox_depth: Histogram,
    duration: Histogram,
}

impl PollMetrics {
    /// The raft pollers' (`pool` = `raft`).
    pub(crate) fn raft() -> Self {
        PollMetrics {
            batch_fsms: metrics::histogram!("flotilla_store_poll_batch_fsms", "pool" => "raft"),
            mailbox_depth: metrics::histogram!("flotilla_store_mailbox_depth", "pool" => "raft"),
            duration: metrics::histogram!("flotilla_store_poll_duration_seconds", "pool" => "raft"),
        }
    }

    /// The apply pollers' (`pool` = `apply`; a batch's duration is the apply duration).
    pub(crate) fn apply() -> Self {
        PollMetrics {
            batch_fsms: metrics::histogram!("flotilla_store_poll_batch_fsms", "pool" => "apply"),
            mailbox_depth: metrics::histogram!("flotilla_store_mailbox_depth", "pool" => "apply"),
            duration: metrics::histogram!("flotilla_apply_duration_seconds"),
        }
    }

    /// A batch of `fsms` FSMs begins.
    pub(crate) fn batch_began(&self, fsms: usize) {
        self.batch_fsms.record(fsms as f64);
    }

    /// An FSM is handled with `depth` messages in its mailbox.
    pub(crate) fn mailbox(&self, depth: usize) {
        self.mailbox_depth.record(depth as f64);
    }

    /// A batch ended `seconds` after it began.
    pub(crate) fn batch_took(&self, seconds: f64) {
        self.duration.record(seconds);
    }
}

/// Which way traffic went, for the transport's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Sent,
    Received,
}

/// Batches (one RPC each over a network), whole messages and folded heartbeats, one way.
pub(crate) struct TrafficCounters {
    rpcs: Counter,
    messages: Counter,
    heartbeats_coalesced: Counter,
}

impl TrafficCounters {
    pub(crate) fn new(dir: Direction) -> Self {
        let dir = match dir {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        TrafficCounters {
            rpcs: metrics::counter!("flotilla_transport_rpcs_total", "dir" => dir),
            messages: metrics::counter!("flotilla_transport_messages_total", "dir" => dir),
            heartbeats_coalesced: metrics::counter!(
                "flotilla_transport_heartbeats_coalesced_total",
                "dir" => dir
            ),
        }
    }

    pub(crate) fn count(&self, batches: usize, messages: usize, folded: usize) {
        self.rpcs.increment(batches as u64);
        self.messages.increment(messages as u64);
        self.heartbeats_coalesced.increment(folded as u64);
    }
}

/// The handles say nothing worth printing (an `Outbound` is printed in tests).
impl std::fmt::Debug for TrafficCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficCounters").finish_non_exhaustive()
    }
}

/// The WAL writer's writes.
pub(crate) struct WalMetrics {
    fsync_duration: Histogram,
    fsyncs: Counter,
    writes: Counter,
    batch_regions: Histogram,
    batch_bytes: Histogram,
    bytes: Counter,
}

impl WalMetrics {
    pub(crate) fn new() -> Self {
        WalMetrics {
            fsync_duration: metrics::histogram!("flotilla_wal_fsync_duration_seconds"),
            fsyncs: metrics::counter!("flotilla_wal_fsyncs_total"),
            writes: metrics::counter!("flotilla_wal_writes_total"),
            batch_regions: metrics::histogram!("flotilla_wal_write_batch_regions"),
            batch_bytes: metrics::histogram!("flotilla_wal_write_batch_bytes"),
            bytes: metrics::counter!("flotilla_wal_write_bytes_total"),
        }
    }

    /// One write of `regions` regions' `bytes`, synced in `fsync_seconds` if it was.
    pub(crate) fn wrote(&self, regions: usize, bytes: usize, fsync_seconds: Option<f64>) {
        if let Some(seconds) = fsync_seconds {
            self.fsync_duration.record(seconds);
            self.fsyncs.increment(1);
        }
        self.writes.increment(1);
        self.batch_regions.record(regions as f64);
        self.batch_bytes.record(bytes as f64);
        self.bytes.increment(bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_counters_print_their_name_only() {
        let counters = TrafficCounters::new(Direction::Sent);
        assert_eq!(format!("{counters:?}"), "TrafficCounters { .. }");
    }
}
