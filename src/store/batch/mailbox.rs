//! A mailbox: the message queue of one FSM plus the slot the FSM rests in while it has
//! nothing to do. The first message (or tick) that finds the FSM resting takes it out and
//! hands it to the pollers' scheduling queue, so an FSM is queued once however many
//! messages arrive; the poller that ran it puts it back when it is done.
//!
//! Queue and slot sit under one lock (a sender must see the slot to know whether to wake
//! the FSM, so it takes a lock anyway). The queue is a plain `VecDeque` whose room is given
//! back whenever the FSM goes to rest empty: most of a store's thousands of regions sleep,
//! and a lock-free channel would keep a block of message slots (and two cache-padded
//! cursors) allocated for each of them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use super::fsm::{Fsm, Handled};

/// Why a message was not delivered; the message comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<M> {
    /// The mailbox holds its capacity already: the sender should back off.
    Full(M),
    /// The FSM has stopped (or was never registered); nobody will read the message.
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }
}

/// Where an FSM is while it is not being run.
enum Slot<N> {
    /// Resting in its mailbox, waiting for work.
    Idle(Box<N>),
    /// In the scheduling queue or in a poller's hands.
    Scheduled,
    /// Closed while a poller holds it: refuses messages; becomes `Closed` when the poller
    /// drops the FSM. Until then the address cannot be registered again, so an old and a
    /// new FSM of one address never run at once.
    Closing,
    /// Stopped and dropped.
    Closed,
}

/// Hands a woken FSM to the pollers.
pub(super) trait Schedule<N: Fsm>: Send + Sync {
    fn schedule(&self, owned: Owned<N>);
}

/// An FSM out of its mailbox: queued for a poller, or being run by one.
pub(super) struct Owned<N: Fsm> {
    pub(super) fsm: Box<N>,
    pub(super) mailbox: Mailbox<N>,
}

impl<N: Fsm> Owned<N> {
    /// Where the FSM goes after a poller's round: back to rest, to the back of the
    /// scheduling queue, or away.
    pub(super) fn finish(self, handled: Handled) {
        match handled {
            Handled::Idle => self.mailbox.release(self.fsm),
            Handled::Busy => {
                let scheduler = self.mailbox.shared.scheduler.clone();
                scheduler.schedule(self);
            }
            Handled::Stopped => self.discard(),
        }
    }

    /// Drops the FSM and closes its mailbox for good.
    pub(super) fn discard(self) {
        let Owned { fsm, mailbox } = self;
        drop(fsm);
        mailbox.retire();
    }
}

/// What a mailbox's lock guards.
struct State<N: Fsm> {
    slot: Slot<N>,
    /// Messages not yet taken, oldest first. Empty (with no room kept) while the FSM rests
    /// with nothing to do.
    queue: VecDeque<N::Message>,
}

struct Shared<N: Fsm> {
    /// `try_send` refuses past this many queued messages; `force_send` ignores it.
    capacity: usize,
    state: Mutex<State<N>>,
    /// Timer ticks not yet taken by the FSM, capped by the timer.
    ticks: AtomicU32,
    scheduler: Arc<dyn Schedule<N>>,
}

/// The sending side of one FSM's queue. Cheap to clone; every clone reaches the same FSM.
pub struct Mailbox<N: Fsm> {
    shared: Arc<Shared<N>>,
}

impl<N: Fsm> Clone for Mailbox<N> {
    fn clone(&self) -> Self {
        Mailbox {
            shared: self.shared.clone(),
        }
    }
}

impl<N: Fsm> std::fmt::Debug for Mailbox<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("queued", &self.len())
            .field("ticks", &self.shared.ticks.load(Ordering::Relaxed))
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<N: Fsm> Mailbox<N> {
    pub(super) fn new(fsm: Box<N>, capacity: usize, scheduler: Arc<dyn Schedule<N>>) -> Self {
        Mailbox {
            shared: Arc::new(Shared {
                capacity,
                state: Mutex::new(State {
                    slot: Slot::Idle(fsm),
                    queue: VecDeque::new(),
                }),
                ticks: AtomicU32::new(0),
                scheduler,
            }),
        }
    }

    /// Queues a message unless the mailbox is at capacity or closed, and wakes the FSM.
    pub fn try_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        self.send(msg, Bound::Capacity)
    }

    /// Queues a message whatever the capacity (for what must not be refused: a write's
    /// completion, an apply result), and wakes the FSM.
    pub fn force_send(&self, msg: N::Message) -> Result<(), SendError<N::Message>> {
        self.send(msg, Bound::None)
    }

    fn send(&self, msg: N::Message, bound: Bound) -> Result<(), SendError<N::Message>> {
        let woken = {
            // Under the lock `close` drains the queue with, so a message is never queued
            // after it: it is refused instead.
            let mut state = self.shared.state.lock();
            if matches!(state.slot, Slot::Closing | Slot::Closed) {
                return Err(SendError::Closed(msg));
            }
            if bound == Bound::Capacity && state.queue.len() >= self.shared.capacity {
                return Err(SendError::Full(msg));
            }
            state.queue.push_back(msg);
            take_idle(&mut state.slot)
        };
        self.schedule(woken);
        Ok(())
    }

    /// Adds one timer tick, keeping at most `cap` pending (an FSM that was busy for a
    /// while catches up by `cap` ticks, not by every tick it missed), and wakes the FSM.
    /// Returns false if the mailbox is closed.
    pub fn tick(&self, cap: u32) -> bool {
        if self.is_closed() {
            return false;
        }
        let _ = self
            .shared
            .ticks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t + 1)
            });
        self.wake();
        true
    }

    /// Messages queued and not yet taken.
    pub fn len(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.state.lock().queue.is_empty()
    }

    /// What `f` makes of the FSM if it is resting in its mailbox.
    #[cfg(test)]
    pub(crate) fn inspect_resting<R>(&self, f: impl FnOnce(&N) -> R) -> Option<R> {
        match &self.shared.state.lock().slot {
            Slot::Idle(fsm) => Some(f(fsm)),
            _ => None,
        }
    }

    /// Messages the queue has room for without growing.
    #[cfg(test)]
    pub(super) fn queue_room(&self) -> usize {
        self.shared.state.lock().queue.capacity()
    }

    /// Whether the FSM has stopped (or is stopping): sends are refused.
    pub fn is_closed(&self) -> bool {
        matches!(self.shared.state.lock().slot, Slot::Closing | Slot::Closed)
    }

    /// Whether the FSM is gone for good (not even a poller holds it any more).
    pub(crate) fn is_retired(&self) -> bool {
        matches!(self.shared.state.lock().slot, Slot::Closed)
    }

    /// Stops the FSM: later sends are refused and queued messages are dropped. A resting
    /// FSM is dropped now; one a poller holds is dropped when the poller is done with it.
    pub fn close(&self) {
        let (resting, queued) = {
            let mut state = self.shared.state.lock();
            let resting = match std::mem::replace(&mut state.slot, Slot::Closed) {
                Slot::Idle(fsm) => Some(fsm),
                Slot::Scheduled | Slot::Closing => {
                    state.slot = Slot::Closing;
                    None
                }
                Slot::Closed => None,
            };
            (resting, std::mem::take(&mut state.queue))
        };
        // Dropped outside the lock: the FSM's and the messages' drops may send elsewhere
        // (a dropped responder answers its caller).
        drop(resting);
        drop(queued);
    }

    /// Marks the mailbox closed for good once its FSM is dropped.
    pub(super) fn retire(&self) {
        let queued = {
            let mut state = self.shared.state.lock();
            state.slot = Slot::Closed;
            std::mem::take(&mut state.queue)
        };
        drop(queued);
    }

    /// Takes the FSM out of its slot and schedules it, if it is resting there.
    fn wake(&self) {
        let woken = take_idle(&mut self.shared.state.lock().slot);
        self.schedule(woken);
    }

    fn schedule(&self, woken: Option<Box<N>>) {
        if let Some(fsm) = woken {
            self.shared.scheduler.schedule(Owned {
                fsm,
                mailbox: self.clone(),
            });
        }
    }

    /// Puts an FSM a poller is done with back to rest, or schedules it again if work
    /// arrived while it was being run (that work found it scheduled and did not wake it).
    /// A tick counted after the check below finds the FSM resting and wakes it.
    pub(super) fn release(&self, fsm: Box<N>) {
        let (closed, again, queued) = {
            let mut state = self.shared.state.lock();
            if matches!(state.slot, Slot::Closing | Slot::Closed) {
                state.slot = Slot::Closed;
                (Some(fsm), None, std::mem::take(&mut state.queue))
            } else if !state.queue.is_empty() || self.shared.ticks.load(Ordering::Acquire) > 0 {
                (None, Some(fsm), VecDeque::new())
            } else {
                state.slot = Slot::Idle(fsm);
                // Resting with nothing queued: the queue's room goes back.
                (None, None, std::mem::take(&mut state.queue))
            }
        };
        drop(closed);
        drop(queued);
        self.schedule(again);
    }

    /// The receiving side, for the poller holding the FSM, handing out at most `budget`
    /// messages this round.
    pub(super) fn inbox(&self, budget: usize) -> Inbox<'_, N> {
        Inbox {
            state: &self.shared.state,
            ticks: &self.shared.ticks,
            budget,
        }
    }
}

/// Whether a send respects the mailbox's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Capacity,
    None,
}

/// The FSM out of a slot that holds it resting; the slot is then `Scheduled`.
fn take_idle<N>(slot: &mut Slot<N>) -> Option<Box<N>> {
    match std::mem::replace(slot, Slot::Scheduled) {
        Slot::Idle(fsm) => Some(fsm),
        other => {
            *slot = other;
            None
        }
    }
}

/// What an FSM reads its messages and ticks from while a poller runs it.
pub struct Inbox<'a, N: Fsm> {
    state: &'a Mutex<State<N>>,
    ticks: &'a AtomicU32,
    /// Messages this round may still take (`BatchConfig::messages_per_round`).
    budget: usize,
}

impl<N: Fsm> Inbox<'_, N> {
    /// The next queued message, if any and if the round's budget allows: an FSM with more
    /// queued than one round may take is scheduled again behind the others.
    pub fn next_message(&mut self) -> Option<N::Message> {
        if self.budget == 0 {
            return None;
        }
        let m = self.state.lock().queue.pop_front()?;
        self.budget -= 1;
        Some(m)
    }

    /// How many messages are queued (this round's budget aside).
    pub fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether messages are still queued (this round's budget aside).
    pub fn has_messages(&self) -> bool {
        !self.state.lock().queue.is_empty()
    }

    /// Takes the pending timer ticks (0 if none).
    pub fn take_ticks(&mut self) -> u32 {
        self.ticks.swap(0, Ordering::AcqRel)
    }

    /// Whether ticks are pending.
    pub fn has_ticks(&self) -> bool {
        self.ticks.load(Ordering::Acquire) > 0
    }
}
