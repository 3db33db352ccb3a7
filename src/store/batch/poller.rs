//! A poller: takes a batch of scheduled FSMs, runs one round of each through its handler,
//! then puts each back to rest, queues it again, or drops it. `poll_once` is one batch and
//! the whole of a poller thread's loop body, so a test or a simulator can step it.

use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Select};

use super::fsm::{Fsm, Handled, PollHandler};
use super::mailbox::Owned;
use super::recv_within;
use super::router::Scheduled;

/// A normal FSM of the batch being handled, as `PollHandler::end` sees it.
pub struct Polled<N: Fsm> {
    owned: Owned<N>,
    handled: Handled,
}

impl<N: Fsm> Polled<N> {
    /// The FSM.
    pub fn fsm(&mut self) -> &mut N {
        &mut self.owned.fsm
    }

    /// What its round said.
    pub fn handled(&self) -> Handled {
        self.handled
    }

    /// Gives it another round even though its own said `Idle` (`end` found more to do).
    pub fn keep_busy(&mut self) {
        self.handled = Handled::Busy;
    }
}

/// What one `poll_once` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// A batch of this many FSMs (at least one) was handled, the control FSM counted.
    Handled(usize),
    /// Nothing was scheduled within the wait.
    Empty,
    /// The poller was told to exit (a batch taken with the signal was handled first).
    Exit,
}

/// One poller: its handler and the scheduling queue it takes FSMs from.
pub struct Poller<N: Fsm, C: Fsm, H> {
    queue: Receiver<Scheduled<N, C>>,
    handler: H,
    max_batch: usize,
    messages_per_round: usize,
    batch: Vec<Polled<N>>,
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>> Poller<N, C, H> {
    pub(super) fn new(
        queue: Receiver<Scheduled<N, C>>,
        handler: H,
        max_batch: usize,
        messages_per_round: usize,
    ) -> Self {
        Poller {
            queue,
            handler,
            max_batch: max_batch.max(1),
            messages_per_round: messages_per_round.max(1),
            batch: Vec::new(),
        }
    }

    /// Adds this poller's scheduling queue to `select`, for a thread that runs several
    /// pollers and waits for the first to have work.
    pub(crate) fn watch<'a>(&'a self, select: &mut Select<'a>) {
        select.recv(&self.queue);
    }

    /// How long the poller may wait before it must `pause` (its handler holds something
    /// back until then); `None`: as long as it likes.
    pub(crate) fn max_wait(&self) -> Option<Duration> {
        self.handler.max_wait()
    }

    /// The handler (a test inspects what it collected).
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Handles one batch: waits up to `wait` for the first scheduled FSM (not at all for
    /// `Duration::ZERO`), takes up to the batch size of those queued behind it, runs one
    /// round of each, then `end`.
    pub fn poll_once(&mut self, wait: Duration) -> PollOutcome {
        let wait = self.handler.max_wait().map_or(wait, |held| held.min(wait));
        let first = match recv_within(&self.queue, wait) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => {
                self.handler.pause();
                return PollOutcome::Empty;
            }
            Err(RecvTimeoutError::Disconnected) => return PollOutcome::Exit,
        };
        let mut control = None;
        let mut exit = false;
        let mut normals = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(scheduled) = next.take() {
            taken += 1;
            match scheduled {
                Scheduled::Normal(owned) => normals.push(owned),
                Scheduled::Control(owned) => control = Some(owned),
                Scheduled::Exit => exit = true,
            }
            if taken < self.max_batch && !exit {
                next = self.queue.try_recv().ok();
            }
        }
        let batch_len = normals.len() + usize::from(control.is_some());
        if batch_len > 0 {
            self.handle_batch(control, normals, batch_len);
        }
        if self.queue.is_empty() {
            self.handler.pause();
        }
        if exit {
            PollOutcome::Exit
        } else {
            PollOutcome::Handled(batch_len)
        }
    }

    fn handle_batch(&mut self, control: Option<Owned<C>>, normals: Vec<Owned<N>>, len: usize) {
        self.handler.begin(len);
        if let Some(mut owned) = control {
            let handled = if owned.mailbox.is_closed() {
                Handled::Stopped
            } else {
                let mut inbox = owned.mailbox.inbox(self.messages_per_round);
                self.handler.handle_control(&mut owned.fsm, &mut inbox)
            };
            owned.finish(handled);
        }
        let mut batch = std::mem::take(&mut self.batch);
        for mut owned in normals {
            // Closed while queued (its region was destroyed): dropped unrun.
            if owned.mailbox.is_closed() {
                owned.discard();
                continue;
            }
            let mut inbox = owned.mailbox.inbox(self.messages_per_round);
            let handled = self.handler.handle_normal(&mut owned.fsm, &mut inbox);
            if handled == Handled::Stopped {
                owned.finish(handled);
            } else {
                batch.push(Polled { owned, handled });
            }
        }
        self.handler.end(&mut batch);
        for polled in batch.drain(..) {
            polled.owned.finish(polled.handled);
        }
        self.batch = batch;
    }
}
