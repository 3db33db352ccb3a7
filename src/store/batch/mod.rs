//! A generic batch system, knowing nothing of Raft (TiKV's batch-system is the model):
//! state machines (`Fsm`) with a mailbox each, a `Router` from addresses to mailboxes plus
//! one control mailbox, and pollers that take batches of FSMs with work from one
//! scheduling queue. An FSM with nothing to do rests in its mailbox; the first message or
//! timer tick moves it into the queue (once, however many arrive), a poller runs a
//! bounded round of it and puts it back. The FSM itself travels, so it needs no lock and
//! nothing per FSM owns a thread or a timer.
//!
//! `Poller::poll_once` is one batch: a test or a simulator steps it on its own thread;
//! `PollerPool` runs it on threads.

mod fsm;
mod mailbox;
mod poller;
mod router;
#[cfg(test)]
mod tests;

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, RecvTimeoutError, TryRecvError};

pub use fsm::{Fsm, Handled, PollHandler};
pub use mailbox::{Inbox, Mailbox, SendError};
pub use poller::{PollOutcome, Polled, Poller};
pub use router::{AlreadyRegistered, Router};

use router::Scheduled;

/// Waits up to `wait` for a message; a zero wait only looks. (crossbeam's `recv_timeout`
/// spins and yields the thread several times before it looks at even a zero deadline: a
/// one-thread store looks at three queues a round, and those yields took a tenth of its
/// time.)
pub(crate) fn recv_within<T>(queue: &Receiver<T>, wait: Duration) -> Result<T, RecvTimeoutError> {
    if wait.is_zero() {
        return queue.try_recv().map_err(|e| match e {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        });
    }
    queue.recv_timeout(wait)
}

/// Settings of one batch system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Poller threads (`PollerPool::spawn`). Default: the number of cores, at least 1.
    pub pollers: usize,
    /// FSMs a poller takes in one batch. Default 256.
    pub max_batch: usize,
    /// Messages an FSM takes in one round before it goes behind the others. Default 256.
    pub messages_per_round: usize,
    /// Messages a normal FSM's mailbox holds before `try_send` refuses (`force_send` does
    /// not). Default 4,096.
    pub mailbox_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            pollers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_batch: 256,
            messages_per_round: 256,
            mailbox_capacity: 4096,
        }
    }
}

/// A batch system: its router and the scheduling queue its pollers take from.
pub struct BatchSystem<K, N: Fsm, C: Fsm> {
    router: Router<K, N, C>,
    queue: Receiver<Scheduled<N, C>>,
    config: BatchConfig,
}

impl<K: std::hash::Hash + Eq + Copy + Send + Sync + 'static, N: Fsm, C: Fsm> BatchSystem<K, N, C> {
    /// A system whose control FSM is `control`, with no normal FSM yet.
    pub fn new(control: Box<C>, config: BatchConfig) -> Self {
        let (sender, queue) = channel::unbounded();
        BatchSystem {
            router: Router::new(control, sender, config.mailbox_capacity),
            queue,
            config,
        }
    }

    /// The router (clone it to send from anywhere).
    pub fn router(&self) -> &Router<K, N, C> {
        &self.router
    }

    /// A poller over this system's queue, to be stepped by the caller (`poll_once`).
    pub fn poller<H: PollHandler<N, C>>(&self, handler: H) -> Poller<N, C, H> {
        Poller::new(
            self.queue.clone(),
            handler,
            self.config.max_batch,
            self.config.messages_per_round,
        )
    }

    /// Starts `config.pollers` threads named `name-<i>`, each looping on `poll_once` with
    /// the handler `make_handler(i)` until `PollerPool::shutdown`.
    pub fn spawn<H: PollHandler<N, C> + 'static>(
        &self,
        name: &str,
        mut make_handler: impl FnMut(usize) -> H,
    ) -> std::io::Result<PollerPool<K, N, C>> {
        let mut threads = Vec::new();
        for i in 0..self.config.pollers.max(1) {
            let mut poller = self.poller(make_handler(i));
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || while poller.poll_once(IDLE_WAIT) != PollOutcome::Exit {});
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    PollerPool {
                        router: self.router.clone(),
                        threads,
                    }
                    .shutdown();
                    return Err(e);
                }
            }
        }
        Ok(PollerPool {
            router: self.router.clone(),
            threads,
        })
    }
}

/// How long an idle poller thread blocks before looking again (it wakes at once when an
/// FSM is scheduled; the bound only keeps a lost exit signal from hanging shutdown).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Poller threads of one system.
pub struct PollerPool<K, N: Fsm, C: Fsm> {
    router: Router<K, N, C>,
    threads: Vec<JoinHandle<()>>,
}

impl<K: std::hash::Hash + Eq + Copy + Send + Sync + 'static, N: Fsm, C: Fsm> PollerPool<K, N, C> {
    /// Tells every thread to exit after its current batch and waits for them. FSMs still
    /// queued stay in the queue (a later pool or a stepped poller may take them).
    pub fn shutdown(self) {
        self.router.signal_exit(self.threads.len());
        for t in self.threads {
            // A poller that panicked already reported it; shutdown goes on.
            let _ = t.join();
        }
    }
}
