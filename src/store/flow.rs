//! Flow control: what a store holds in flight is counted, and a proposal that would go
//! past a bound is refused with `ServerIsBusy` and a backoff instead of queued without
//! end. Three bounds: bytes of one region's uncommitted entries (the consensus core's
//! `max_uncommitted_size`), bytes of proposals the store has not answered yet, and bytes of
//! entries handed to the WAL writer and not yet written. Each count is a `Charge` held by
//! the thing in flight and released when it is dropped, so no count can stay stuck: once
//! the writer or apply catches up, proposals are taken again by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::region::{BusyReason, RegionError};

/// Bounds on what a store holds in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLimits {
    /// Bytes of one region's entries proposed and not yet committed. Default 16 MiB.
    pub region_uncommitted_bytes: u64,
    /// Bytes of proposals the store has taken and not answered. Default 256 MiB.
    pub store_pending_bytes: u64,
    /// Bytes of entries handed to the WAL writer and not yet written. Default 64 MiB.
    pub wal_pending_bytes: u64,
    /// The backoff suggested with `ServerIsBusy`. Default 50 ms.
    pub busy_backoff: Duration,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            region_uncommitted_bytes: 16 << 20,
            store_pending_bytes: 256 << 20,
            wal_pending_bytes: 64 << 20,
            busy_backoff: Duration::from_millis(50),
        }
    }
}

/// A count of bytes in flight, shared by everything charged to it.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Bytes in flight now.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Bytes counted in a `Gauge` while the charge lives: dropped, it gives them back.
#[derive(Debug)]
pub struct Charge {
    gauge: Arc<Gauge>,
    bytes: u64,
}

impl Charge {
    /// Counts `bytes` in `gauge` until the charge is dropped.
    pub fn new(gauge: &Arc<Gauge>, bytes: u64) -> Charge {
        gauge.0.fetch_add(bytes, Ordering::AcqRel);
        Charge {
            gauge: gauge.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.gauge.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A store's in-flight counts and their bounds.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    pub limits: FlowLimits,
    /// Proposals taken and not answered.
    pub proposals: Arc<Gauge>,
    /// Entries handed to the WAL writer and not written.
    pub wal: Arc<Gauge>,
}

impl Flow {
    pub(crate) fn new(limits: FlowLimits) -> Self {
        Flow {
            limits,
            ..Default::default()
        }
    }

    /// `ServerIsBusy` if the store cannot take another proposal now.
    pub(crate) fn admit(&self) -> Result<(), RegionError> {
        let busy = |reason| RegionError::ServerIsBusy {
            reason,
            backoff: self.limits.busy_backoff,
        };
        if self.wal.bytes() > self.limits.wal_pending_bytes {
            return Err(busy(BusyReason::WalBehind));
        }
        if self.proposals.bytes() > self.limits.store_pending_bytes {
            return Err(busy(BusyReason::StorePendingBytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_while_they_live_and_the_bounds_admit_by_them() {
        let flow = Flow::new(FlowLimits {
            store_pending_bytes: 100,
            wal_pending_bytes: 10,
            ..FlowLimits::default()
        });
        assert!(flow.admit().is_ok());
        let proposal = Charge::new(&flow.proposals, 101);
        assert!(matches!(
            flow.admit(),
            Err(RegionError::ServerIsBusy {
                reason: BusyReason::StorePendingBytes,
                ..
            })
        ));
        let write = Charge::new(&flow.wal, 11);
        assert!(matches!(
            flow.admit(),
            Err(RegionError::ServerIsBusy {
                reason: BusyReason::WalBehind,
                ..
            })
        ));
        drop(write);
        drop(proposal);
        assert_eq!((flow.proposals.bytes(), flow.wal.bytes()), (0, 0));
        // At a bound is still admitted; only past it is refused.
        let _at = Charge::new(&flow.wal, 10);
        let _also_at = Charge::new(&flow.proposals, 100);
        assert!(flow.admit().is_ok());
    }
}
