//! The two engines a store runs on, behind object-safe handles so the runtime is not
//! generic over them: the raft log shared by every region, and the KV engine holding the
//! regions' data and their apply and region states.

use std::sync::Arc;

use crate::storage::kv::{KvEngine, KvError, KvRead, KvWriteBatch};
use crate::storage::raft_log::RaftLogStore;

/// A point-in-time read view of the KV engine, owned, so a read can hold it.
pub type KvView = Box<dyn KvRead + Send + Sync>;

/// The KV engine as the runtime uses it: any `KvEngine` is one.
pub trait StoreKv: KvRead + Send + Sync + 'static {
    /// Writes the batch atomically (not durable by itself).
    fn write_batch(&self, batch: &KvWriteBatch) -> Result<(), KvError>;
    /// A consistent view as of now.
    fn read_view(&self) -> KvView;
    /// Makes everything written so far durable.
    fn persist_all(&self) -> Result<(), KvError>;
}

impl<K: KvEngine + 'static> StoreKv for K {
    fn write_batch(&self, batch: &KvWriteBatch) -> Result<(), KvError> {
        self.write(batch)
    }

    fn read_view(&self) -> KvView {
        Box::new(self.view())
    }

    fn persist_all(&self) -> Result<(), KvError> {
        self.persist()
    }
}

/// A store's engines.
#[derive(Clone)]
pub struct Engines {
    /// The raft log of every region (raft-engine, or the in-memory log).
    pub log: Arc<dyn RaftLogStore>,
    /// The regions' data and metadata (fjall, or the in-memory engine).
    pub kv: Arc<dyn StoreKv>,
}

impl Engines {
    /// Engines from a log store and a KV engine.
    pub fn new(log: Arc<dyn RaftLogStore>, kv: Arc<dyn StoreKv>) -> Self {
        Engines { log, kv }
    }
}
