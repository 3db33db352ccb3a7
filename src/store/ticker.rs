//! One timer for the whole store. A tick does not send a message per region: it bumps a
//! capped tick count in each ticking FSM's mailbox (scheduling it if it rests), and the
//! poller consumes the count (CockroachDB's scheduler does the same). Only FSMs that are
//! ticking are visited, so an idle store's timer costs what its active regions cost:
//! hibernated regions leave the set and rejoin when woken.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

use super::batch::{Fsm, Router};

/// The set of ticking FSMs and the router that reaches them. Clones share the set.
pub struct Ticker<K, N: Fsm, C: Fsm> {
    router: Router<K, N, C>,
    /// In key order, so ticks reach FSMs in the same order on every run (a simulated
    /// run replays).
    ticking: Arc<Mutex<BTreeSet<K>>>,
    cap: u32,
}

impl<K, N: Fsm, C: Fsm> Clone for Ticker<K, N, C> {
    fn clone(&self) -> Self {
        Ticker {
            router: self.router.clone(),
            ticking: self.ticking.clone(),
            cap: self.cap,
        }
    }
}

/// What one `tick_once` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// FSMs given a tick.
    pub ticked: usize,
    /// FSMs found stopped and dropped from the set.
    pub gone: usize,
}

impl<K: Hash + Ord + Copy + Send + Sync + 'static, N: Fsm, C: Fsm> Ticker<K, N, C> {
    /// A ticker over `router`'s FSMs; an FSM that was not polled for a while catches up by
    /// at most `cap` ticks.
    pub fn new(router: Router<K, N, C>, cap: u32) -> Self {
        Ticker {
            router,
            ticking: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// Starts ticking `addr` (a new region, or one woken from hibernation).
    pub fn start(&self, addr: K) {
        self.ticking.lock().insert(addr);
    }

    /// Stops ticking `addr` (hibernated or destroyed).
    pub fn stop(&self, addr: K) {
        self.ticking.lock().remove(&addr);
    }

    /// Whether `addr` is ticking.
    pub fn is_ticking(&self, addr: K) -> bool {
        self.ticking.lock().contains(&addr)
    }

    /// The FSMs ticking now.
    pub fn ticking(&self) -> Vec<K> {
        self.ticking.lock().iter().copied().collect()
    }

    /// How many FSMs are ticking.
    pub fn ticking_count(&self) -> usize {
        self.ticking.lock().len()
    }

    /// One timer tick: every ticking FSM gets one (capped). The set is copied out first,
    /// so FSMs may start and stop ticking while their ticks are delivered.
    pub fn tick_once(&self) -> TickReport {
        let addrs: Vec<K> = self.ticking.lock().iter().copied().collect();
        let mut report = TickReport { ticked: 0, gone: 0 };
        let mut gone = Vec::new();
        for addr in addrs {
            match self.router.mailbox(addr) {
                Some(mailbox) if mailbox.tick(self.cap) => report.ticked += 1,
                _ => gone.push(addr),
            }
        }
        // Registered again meanwhile: it stays. (The router is asked before the set is
        // locked, so the set's lock is never held while a map lock is taken.)
        gone.retain(|addr| self.router.mailbox(*addr).is_none_or(|m| m.is_closed()));
        if !gone.is_empty() {
            report.gone = gone.len();
            let mut ticking = self.ticking.lock();
            for addr in gone {
                ticking.remove(&addr);
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::batch::{BatchConfig, BatchSystem, Handled, Inbox, PollHandler, Polled};

    struct Region {
        ticks: u32,
    }

    impl Fsm for Region {
        type Message = ();
    }

    struct Store;

    impl Fsm for Store {
        type Message = ();
    }

    #[derive(Default)]
    struct Handler {
        handled: Vec<u32>,
    }

    impl PollHandler<Region, Store> for Handler {
        fn begin(&mut self, _: usize) {}
        fn handle_control(&mut self, _: &mut Store, _: &mut Inbox<'_, Store>) -> Handled {
            Handled::Idle
        }
        fn handle_normal(&mut self, fsm: &mut Region, inbox: &mut Inbox<'_, Region>) -> Handled {
            fsm.ticks += inbox.take_ticks();
            self.handled.push(fsm.ticks);
            Handled::Idle
        }
        fn end(&mut self, _: &mut [Polled<Region>]) {}
    }

    fn system() -> BatchSystem<u64, Region, Store> {
        BatchSystem::new(Box::new(Store), BatchConfig::default())
    }

    #[test]
    fn only_ticking_fsms_get_ticks_and_a_missed_stretch_is_capped() {
        let system = system();
        let router = system.router();
        for id in 1..=3 {
            router.register(id, Box::new(Region { ticks: 0 })).unwrap();
        }
        let ticker = Ticker::new(router.clone(), 2);
        ticker.start(1);
        ticker.start(2);
        assert!(ticker.is_ticking(1) && !ticker.is_ticking(3));
        let mut poller = system.poller(Handler::default());
        for _ in 0..5 {
            assert_eq!(ticker.tick_once(), TickReport { ticked: 2, gone: 0 });
        }
        // Five ticks while nobody polled: each FSM catches up by two.
        assert_eq!(
            poller.poll_once(Duration::ZERO),
            crate::store::batch::PollOutcome::Handled(2)
        );
        assert_eq!(poller.handler().handled, vec![2, 2]);
        ticker.stop(2);
        assert_eq!(ticker.tick_once(), TickReport { ticked: 1, gone: 0 });
        poller.poll_once(Duration::ZERO);
        assert_eq!(poller.handler().handled, vec![2, 2, 3], "only 1 ticked");
        assert_eq!(ticker.ticking_count(), 1);
    }

    #[test]
    fn a_removed_fsm_leaves_the_set_but_one_registered_again_stays() {
        let system = system();
        let router = system.router();
        router.register(1, Box::new(Region { ticks: 0 })).unwrap();
        router.register(2, Box::new(Region { ticks: 0 })).unwrap();
        let ticker = Ticker::new(router.clone(), 1);
        ticker.start(1);
        ticker.start(2);
        ticker.start(3); // never registered
        router.remove(1);
        assert_eq!(ticker.tick_once(), TickReport { ticked: 1, gone: 2 });
        assert!(!ticker.is_ticking(1) && !ticker.is_ticking(3) && ticker.is_ticking(2));
        router.register(1, Box::new(Region { ticks: 0 })).unwrap();
        ticker.start(1);
        assert_eq!(ticker.tick_once(), TickReport { ticked: 2, gone: 0 });
    }
}
