//! What the batch system runs: a finite state machine with a message type, and the handler
//! a poller thread calls on each batch of them.

use std::time::Duration;

use super::mailbox::Inbox;
use super::poller::Polled;

/// A state machine run by the batch system: a region's peer, its apply delegate, the
/// store. It owns no thread; a poller holds it (by value, so it needs no lock) while it
/// handles its messages.
pub trait Fsm: Send + 'static {
    /// What its mailbox carries.
    type Message: Send + 'static;
}

/// What became of an FSM after one round of a poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Nothing left that the round could see: the FSM goes back to its mailbox and is
    /// scheduled again by the next message (or tick).
    Idle,
    /// Messages (or ticks) remain, or the handler wants another round: the FSM is
    /// queued again behind the FSMs already waiting, so a busy one cannot starve them.
    Busy,
    /// The FSM is done (its region destroyed, the store shut down): it leaves the system;
    /// its mailbox refuses further messages.
    Stopped,
}

/// The handler a poller calls: one batch is `begin`, `handle` for each FSM of the batch
/// (the control FSM through `handle_control`), then `end` with all of them, which is where
/// a raft poller collects the batch's Readies into one write task.
pub trait PollHandler<N: Fsm, C: Fsm>: Send {
    /// A batch of `batch_len` FSMs (the control FSM counted) starts.
    fn begin(&mut self, batch_len: usize);

    /// One round of the control FSM: drain some of its messages.
    fn handle_control(&mut self, fsm: &mut C, inbox: &mut Inbox<'_, C>) -> Handled;

    /// One round of a normal FSM: drain at most a bounded number of its messages and take
    /// its pending ticks.
    fn handle_normal(&mut self, fsm: &mut N, inbox: &mut Inbox<'_, N>) -> Handled;

    /// The batch ends. `batch` holds the normal FSMs handled in it that did not stop, so
    /// work collected from all of them (their Readies) can go out together;
    /// `Polled::keep_busy` gives one another round.
    fn end(&mut self, batch: &mut [Polled<N>]);

    /// The poller found nothing more scheduled (after a batch, or after waiting): what
    /// `end` held back for the batches behind (to send it together) may go now.
    fn pause(&mut self) {}

    /// How long the poller may wait for work before calling `pause` again: the handler
    /// holds something back until then. `None`: it holds nothing.
    fn max_wait(&self) -> Option<Duration> {
        None
    }
}
