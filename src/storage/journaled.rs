//! Explicit durability for the in-memory engines: the live state, the durable state, and
//! the writes since the last sync. A simulated crash keeps the durable state plus a prefix
//! of those writes (a real engine's journal reaches the disk in order, possibly partly).
//! A volatile engine keeps the live state alone.

use std::sync::Arc;

use super::{MemDurability, SyncMode};

pub(crate) struct Journaled<T, W> {
    durability: MemDurability,
    /// What reads see; shared with views (a write copies it only while a view holds it).
    live: Arc<T>,
    /// What survives a crash: kept apart from `live` and brought up to date by replaying
    /// the synced writes onto it, so a sync never copies the whole state (sharing one
    /// value between the two would make the next write copy all of it).
    durable: T,
    unsynced: Vec<W>,
    /// The power was cut: every write and sync fails until the crash (see `cut_power`).
    power: Power,
}

/// A write or sync refused because the power is cut (a simulated crash in progress): to
/// the store it is a failed write, so it stops (fail-stop) and acknowledges nothing more.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the disk lost power (a simulated crash)")]
pub(crate) struct PowerCut;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Power {
    #[default]
    On,
    Cut,
}

impl<T: Clone + Default, W: Clone> Journaled<T, W> {
    pub(crate) fn new(durability: MemDurability) -> Self {
        Journaled {
            durability,
            live: Arc::default(),
            durable: T::default(),
            unsynced: Vec::new(),
            power: Power::On,
        }
    }

    pub(crate) fn live(&self) -> &Arc<T> {
        &self.live
    }

    pub(crate) fn write(
        &mut self,
        w: &W,
        apply: impl Fn(&mut T, &W),
        sync: SyncMode,
    ) -> Result<(), PowerCut> {
        if self.power == Power::Cut {
            return Err(PowerCut);
        }
        apply(Arc::make_mut(&mut self.live), w);
        if self.durability == MemDurability::Volatile {
            return Ok(());
        }
        self.unsynced.push(w.clone());
        if sync == SyncMode::Sync {
            self.make_durable(apply);
        }
        Ok(())
    }

    /// Whether nothing survives a crash (`MemDurability::Volatile`).
    pub(crate) fn is_volatile(&self) -> bool {
        self.durability == MemDurability::Volatile
    }

    /// The live state, for a volatile engine's write in place (nothing is journalled).
    pub(crate) fn live_mut(&mut self) -> Result<&mut T, PowerCut> {
        debug_assert!(
            self.is_volatile(),
            "a write past the journal is lost to a simulated crash's bookkeeping"
        );
        if self.power == Power::Cut {
            return Err(PowerCut);
        }
        Ok(Arc::make_mut(&mut self.live))
    }

    /// Writes since the last sync that a crash may keep (none when volatile).
    pub(crate) fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    /// Everything written so far is durable.
    pub(crate) fn sync(&mut self, apply: impl Fn(&mut T, &W)) -> Result<(), PowerCut> {
        if self.power == Power::Cut {
            return Err(PowerCut);
        }
        self.make_durable(apply);
        Ok(())
    }

    fn make_durable(&mut self, apply: impl Fn(&mut T, &W)) {
        for w in self.unsynced.drain(..) {
            apply(&mut self.durable, &w);
        }
    }

    /// The crash happens now, though the store writing here runs on until it is stopped:
    /// from now on every write and sync fails (so it stops and acknowledges nothing more),
    /// and the `crash_keeping` that follows keeps what was durable at this instant.
    pub(crate) fn cut_power(&mut self) {
        self.power = Power::Cut;
    }

    /// A crash after which the first `kept` unsynced writes survive (of those before the
    /// power was cut, if it was). The power is on again. A volatile engine keeps nothing.
    pub(crate) fn crash_keeping(&mut self, kept: usize, apply: impl Fn(&mut T, &W)) {
        self.power = Power::On;
        self.unsynced.truncate(kept);
        self.make_durable(apply);
        self.live = Arc::new(self.durable.clone());
    }
}
