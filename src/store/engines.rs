//! The two engines a store runs on, behind object-safe handles so the runtime is not
//! generic over them: the raft log shared by every region, and the KV engine holding the
//! regions' data and their apply and region states.

use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::kv::{KvEngine, KvError, KvRead, KvWriteBatch};
use crate::storage::raft_log::RaftLogStore;

/// A point-in-time read view of the KV engine, owned, so a read can hold it.
pub type KvView = Box<dyn KvRead + Send + Sync>;

/// The KV engine as the runtime uses it: any `KvEngine` is one.
pub trait StoreKv: KvRead + Send + Sync + 'static {
    /// Writes the batch atomically (not durable by itself).
    fn write_batch(&self, batch: &KvWriteBatch) -> Result<(), KvError>;
    /// `write_batch`, leaving the batch empty (`KvEngine::write_and_clear`).
    fn write_batch_and_clear(&self, batch: &mut KvWriteBatch) -> Result<(), KvError>;
    /// A consistent view as of now.
    fn read_view(&self) -> KvView;
    /// Makes everything written so far durable.
    fn persist_all(&self) -> Result<(), KvError>;
}

impl<K: KvEngine + 'static> StoreKv for K {
    fn write_batch(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        self.write(batch)
    }

    fn write_batch_and_clear(&self, batch: &mut KvWriteBatch) -> Result<(), KvError> {
        self.write_and_clear(batch)
    }

    fn read_view(&self) -> KvView {
        Box::new(self.view())
    }

    fn persist_all(&self) -> Result<(), KvError> {
        self.persist()
    }
}

/// The runtime's KV handle is a `KvEngine` too, for the storage code written against that
/// trait (snapshots).
impl KvEngine for dyn StoreKv {
    type View = KvView;

    fn write(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        self.write_batch(batch)
    }

    fn view(&self) -> KvView {
        self.read_view()
    }

    fn persist(&self) -> Result<(), KvError> {
        self.persist_all()
    }
}

/// A store's engines.
#[derive(Clone)]
pub struct Engines {
    /// The raft log of every region (raft-engine, or the in-memory log).
    pub log: Arc<dyn RaftLogStore>,
    /// The regions' data and metadata (fjall, or the in-memory engine).
    pub kv: Arc<dyn StoreKv>,
    /// Where snapshot files go (generated ones, and ones received from other stores):
    /// a directory on disk even when both engines are in memory.
    pub snapshots: PathBuf,
}

impl Engines {
    /// Engines from a log store, a KV engine and a snapshot directory.
    pub fn new(
        log: Arc<dyn RaftLogStore>,
        kv: Arc<dyn StoreKv>,
        snapshots: impl Into<PathBuf>,
    ) -> Self {
        Engines {
            log,
            kv,
            snapshots: snapshots.into(),
        }
    }
}
