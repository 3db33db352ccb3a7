//! The router: from an address (a region id) to its FSM's mailbox, plus the one control
//! mailbox (the store). Everything that talks to an FSM goes through it.

use std::hash::Hash;
use std::sync::Arc;

use crossbeam::channel::Sender;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::fsm::Fsm;
use super::mailbox::{Mailbox, Owned, Schedule, SendError};
use crate::ids::IdHashState;

/// An FSM handed to the pollers, or the signal that one poller should exit.
pub(super) enum Scheduled<N: Fsm, C: Fsm> {
    Normal(Owned<N>),
    Control(Owned<C>),
    Exit,
}

struct NormalQueue<N: Fsm, C: Fsm>(Sender<Scheduled<N, C>>);

impl<N: Fsm, C: Fsm> Schedule<N> for NormalQueue<N, C> {
    fn schedule(&self, owned: Owned<N>) {
        // Fails only once the system (holding the receiver) is gone: the FSM is dropped
        // and its mailbox closed, so later sends are refused rather than lost.
        if let Err(e) = self.0.send(Scheduled::Normal(owned))
            && let Scheduled::Normal(owned) = e.into_inner()
        {
            owned.discard();
        }
    }
}

struct ControlQueue<N: Fsm, C: Fsm>(Sender<Scheduled<N, C>>);

impl<N: Fsm, C: Fsm> Schedule<C> for ControlQueue<N, C> {
    fn schedule(&self, owned: Owned<C>) {
        if let Err(e) = self.0.send(Scheduled::Control(owned))
            && let Scheduled::Control(owned) = e.into_inner()
        {
            owned.discard();
        }
    }
}

/// A register refused: the address already has a live FSM (or one a poller is still
/// finishing). The FSM comes back.
pub struct AlreadyRegistered<N>(pub Box<N>);

impl<N> std::fmt::Debug for AlreadyRegistered<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlreadyRegistered")
    }
}

/// Maps addresses to mailboxes. Cheap to clone; all clones share one map.
pub struct Router<K, N: Fsm, C: Fsm> {
    normals: Arc<DashMap<K, Mailbox<N>, IdHashState>>,
    control: Mailbox<C>,
    normal_queue: Arc<dyn Schedule<N>>,
    queue: Sender<Scheduled<N, C>>,
    mailbox_capacity: usize,
}

impl<K, N: Fsm, C: Fsm> Clone for Router<K, N, C> {
    fn clone(&self) -> Self {
        Router {
            normals: self.normals.clone(),
            control: self.control.clone(),
            normal_queue: self.normal_queue.clone(),
            queue: self.queue.clone(),
            mailbox_capacity: self.mailbox_capacity,
        }
    }
}

impl<K: Hash + Eq + Copy + Send + Sync + 'static, N: Fsm, C: Fsm> Router<K, N, C> {
    pub(super) fn new(
        control: Box<C>,
        queue: Sender<Scheduled<N, C>>,
        mailbox_capacity: usize,
    ) -> Self {
        let control_queue: Arc<dyn Schedule<C>> = Arc::new(ControlQueue(queue.clone()));
        Router {
            normals: Arc::new(DashMap::default()),
            control: Mailbox::new(control, usize::MAX, control_queue),
            normal_queue: Arc::new(NormalQueue(queue.clone())),
            queue,
            mailbox_capacity,
        }
    }

    /// Adds an FSM at `addr`, resting until its first message or tick. Refused while a
    /// live FSM is there, or a stopped one that a poller has not let go of yet.
    pub fn register(&self, addr: K, fsm: Box<N>) -> Result<Mailbox<N>, AlreadyRegistered<N>> {
        let replaced;
        let mailbox = match self.normals.entry(addr) {
            Entry::Occupied(e) if !e.get().is_retired() => return Err(AlreadyRegistered(fsm)),
            Entry::Occupied(mut e) => {
                let mailbox = self.new_mailbox(fsm);
                replaced = Some(e.insert(mailbox.clone()));
                mailbox
            }
            Entry::Vacant(e) => {
                replaced = None;
                let mailbox = self.new_mailbox(fsm);
                e.insert(mailbox.clone());
                mailbox
            }
        };
        // The old mailbox (and what it still queued) goes outside the map's lock.
        drop(replaced);
        Ok(mailbox)
    }

    fn new_mailbox(&self, fsm: Box<N>) -> Mailbox<N> {
        Mailbox::new(fsm, self.mailbox_capacity, self.normal_queue.clone())
    }

    /// The mailbox at `addr`, if an FSM is registered there.
    pub fn mailbox(&self, addr: K) -> Option<Mailbox<N>> {
        self.normals.get(&addr).map(|m| m.clone())
    }

    /// Sends to the FSM at `addr`, refused when its mailbox is full. An unknown address
    /// is `Closed`.
    pub fn try_send(&self, addr: K, msg: N::Message) -> Result<(), SendError<N::Message>> {
        match self.mailbox(addr) {
            Some(m) => m.try_send(msg),
            None => Err(SendError::Closed(msg)),
        }
    }

    /// Sends to the FSM at `addr` whatever its mailbox holds. An unknown address is
    /// `Closed`.
    pub fn force_send(&self, addr: K, msg: N::Message) -> Result<(), SendError<N::Message>> {
        match self.mailbox(addr) {
            Some(m) => m.force_send(msg),
            None => Err(SendError::Closed(msg)),
        }
    }

    /// Sends to the control FSM (never refused for capacity).
    pub fn send_control(&self, msg: C::Message) -> Result<(), SendError<C::Message>> {
        self.control.force_send(msg)
    }

    /// The control FSM's mailbox.
    pub fn control(&self) -> &Mailbox<C> {
        &self.control
    }

    /// Closes and forgets the FSM at `addr` (see `Mailbox::close`). Returns whether one
    /// was there.
    pub fn remove(&self, addr: K) -> bool {
        match self.normals.remove(&addr) {
            Some((_, mailbox)) => {
                mailbox.close();
                true
            }
            None => false,
        }
    }

    /// The number of registered addresses.
    pub fn len(&self) -> usize {
        self.normals.len()
    }

    /// Whether no FSM is registered.
    pub fn is_empty(&self) -> bool {
        self.normals.is_empty()
    }

    /// Calls `f` with every address registered when the call started, and its mailbox
    /// (in no particular order). `f` may register and remove FSMs.
    pub fn for_each(&self, mut f: impl FnMut(K, &Mailbox<N>)) {
        let all: Vec<(K, Mailbox<N>)> = self
            .normals
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (addr, mailbox) in &all {
            f(*addr, mailbox);
        }
    }

    /// Tells `pollers` pollers to exit after the batch they are in.
    pub(in crate::store) fn signal_exit(&self, pollers: usize) {
        for _ in 0..pollers {
            let _ = self.queue.send(Scheduled::Exit);
        }
    }
}
