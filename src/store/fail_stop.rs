//! Fail-stop, in one place. A failed raft log write or fsync leaves the log in a state
//! nobody can vouch for (after a failed fsync the kernel may have dropped the dirty pages
//! and a retry would report success), so the store stops: it acknowledges nothing more and
//! every request gets `ProposalDropped(StoreStopping)`. Restart recovers from what is on
//! disk.

use std::sync::{Arc, OnceLock};

/// The store's stop switch, shared by everything that can hit a fatal error.
#[derive(Debug, Clone, Default)]
pub struct FailStop {
    reason: Arc<OnceLock<String>>,
}

impl FailStop {
    /// A switch not tripped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the store for `reason`. The first reason is kept; later trips are logged.
    pub fn trip(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.reason.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "store stopped: fatal error");
            metrics::counter!("flotilla_store_fatal_errors_total").increment(1);
        } else {
            tracing::error!(%reason, "another fatal error after the store stopped");
        }
    }

    /// Whether the store has stopped.
    pub fn is_tripped(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Why the store stopped, if it has.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept_and_every_clone_sees_it() {
        let stop = FailStop::new();
        let other = stop.clone();
        assert!(!other.is_tripped());
        assert_eq!(other.reason(), None);
        stop.trip("fsync failed");
        other.trip("second");
        assert!(other.is_tripped());
        assert_eq!(stop.reason(), Some("fsync failed"));
    }
}
