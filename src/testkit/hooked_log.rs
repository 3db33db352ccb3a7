//! The in-memory raft log behind a hook that runs before each write: a test stalls writes
//! (a stalled disk), fails them, or counts them. Everything else goes straight through.

use std::sync::Arc;

use crate::RegionId;
use crate::proto::raftpb::Entry;
use crate::proto::storagepb::RaftLocalState;
use crate::storage::SyncMode;
use crate::storage::mem_log::MemRaftLog;
use crate::storage::raft_log::{LogError, LogSpan, LogWriteBatch, RaftLogStore};

/// What runs before each write; an error fails the write (nothing is written).
pub trait WriteHook: Send + Sync + 'static {
    /// Runs before a write that `sync`s or not.
    fn before_write(&self, sync: SyncMode) -> Result<(), LogError>;
}

/// `inner` with `hook` before every write. Derefs to the hook, for the test to drive it.
#[derive(Default)]
pub struct HookedLog<H> {
    /// The log written to.
    pub inner: Arc<MemRaftLog>,
    /// What runs first.
    pub hook: H,
}

impl<H> std::ops::Deref for HookedLog<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H: WriteHook> RaftLogStore for HookedLog<H> {
    fn write(&self, batch: &mut LogWriteBatch, sync: SyncMode) -> Result<usize, LogError> {
        self.hook.before_write(sync)?;
        self.inner.write(batch, sync)
    }
    fn recover(&self) -> Result<Vec<(RegionId, RaftLocalState)>, LogError> {
        self.inner.recover()
    }
    fn local_state(&self, region: RegionId) -> Result<Option<RaftLocalState>, LogError> {
        self.inner.local_state(region)
    }
    fn span(&self, region: RegionId) -> Option<LogSpan> {
        self.inner.span(region)
    }
    fn entry(&self, region: RegionId, index: u64) -> Result<Option<Entry>, LogError> {
        self.inner.entry(region, index)
    }
    fn entries(
        &self,
        region: RegionId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        self.inner.entries(region, low, high, max_bytes)
    }
    fn purge_expired_files(&self) -> Result<Vec<RegionId>, LogError> {
        self.inner.purge_expired_files()
    }
}
