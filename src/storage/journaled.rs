//! Explicit durability for the in-memory engines: the live state, the durable state, and
//! the writes since the last sync. A simulated crash keeps the durable state plus a prefix
//! of those writes (a real engine's journal reaches the disk in order, possibly partly).

use std::sync::Arc;

use super::SyncMode;

#[derive(Default)]
pub(crate) struct Journaled<T, W> {
    live: Arc<T>,
    durable: Arc<T>,
    unsynced: Vec<W>,
}

impl<T: Clone, W: Clone> Journaled<T, W> {
    pub(crate) fn live(&self) -> &Arc<T> {
        &self.live
    }

    pub(crate) fn write(&mut self, w: &W, apply: impl Fn(&mut T, &W), sync: SyncMode) {
        apply(Arc::make_mut(&mut self.live), w);
        match sync {
            SyncMode::Sync => self.sync(),
            SyncMode::NoSync => self.unsynced.push(w.clone()),
        }
    }

    /// Writes since the last sync.
    pub(crate) fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    /// Everything written so far is durable.
    pub(crate) fn sync(&mut self) {
        self.durable = self.live.clone();
        self.unsynced.clear();
    }

    /// A crash after which the first `kept` unsynced writes survive.
    pub(crate) fn crash_keeping(&mut self, kept: usize, apply: impl Fn(&mut T, &W)) {
        let mut state = (*self.durable).clone();
        for w in self.unsynced.iter().take(kept) {
            apply(&mut state, w);
        }
        self.live = Arc::new(state);
        self.sync();
    }
}
