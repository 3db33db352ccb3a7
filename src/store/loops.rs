//! A store's three loop bodies — one raft batch, one WAL write, one apply batch — taken in
//! turn on one thread: by a stepped store's rounds, by `RunMode::OneThread`'s thread, and
//! by a `SharedRunner`, whose one thread takes the rounds of every store opened on it.

use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Select, Sender, TryRecvError};

use super::apply::{ApplyControl, ApplyFsm, ApplyPoller};
use super::batch::{PollOutcome, Poller};
use super::peer::PeerFsm;
use super::raft_poller::{RaftPoller, RouterNotifier};
use super::store_fsm::StoreFsm;
use super::wal_writer::{WalWriter, WriteOutcome};

/// The store's three loop bodies.
pub(super) struct Loops {
    pub(super) raft: Poller<PeerFsm, StoreFsm, RaftPoller>,
    pub(super) wal: WalWriter<RouterNotifier>,
    pub(super) apply: Poller<ApplyFsm, ApplyControl, ApplyPoller>,
}

/// What one round of the loops did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Round {
    /// At least one of them had work.
    Worked,
    /// None had any.
    Idle,
    /// The raft poller was told to exit (nothing else ran).
    Exit,
}

/// How long an idle thread running loops blocks on their raft queues before it looks
/// again (it wakes at once when a region is scheduled).
const IDLE_WAIT: Duration = Duration::from_millis(500);

impl Loops {
    /// One raft batch (waiting up to `wait` for a region to be scheduled), one WAL write
    /// of what is queued, one apply batch.
    pub(super) fn round(&mut self, wait: Duration) -> Round {
        let polled = match self.raft.poll_once(wait) {
            PollOutcome::Exit => return Round::Exit,
            PollOutcome::Handled(_) => true,
            PollOutcome::Empty => false,
        };
        let wrote = matches!(
            self.wal.write_once(Duration::ZERO),
            WriteOutcome::Written(_)
        );
        let applied = matches!(
            self.apply.poll_once(Duration::ZERO),
            PollOutcome::Handled(_)
        );
        if polled || wrote || applied {
            Round::Worked
        } else {
            Round::Idle
        }
    }

    /// `RunMode::OneThread`'s thread: rounds until the raft poller is told to exit, then
    /// `finish`.
    pub(super) fn run(mut self) {
        let mut wait = Duration::ZERO;
        loop {
            // Only this thread's raft rounds give the WAL writer and the apply poller
            // work: after an idle round the next comes to the raft queue (messages,
            // requests, ticks), so waiting on that queue alone misses nothing.
            wait = match self.round(wait) {
                Round::Worked => Duration::ZERO,
                Round::Idle => IDLE_WAIT,
                Round::Exit => break,
            };
        }
        self.finish();
    }

    /// Writes every WAL task still queued, as the WAL writer thread does once the pollers
    /// are gone.
    fn finish(&mut self) {
        while let WriteOutcome::Written(_) = self.wal.write_once(Duration::ZERO) {}
    }
}

/// A thread that several stores of this process share (`RunMode::Shared`): it takes the
/// raft, WAL and apply rounds of every store opened on it in turn, as `RunMode::OneThread`
/// takes one store's, and blocks on all their raft queues at once when none has work.
/// For stores that live in one process on few cores — an in-process cluster, the
/// in-memory embedded mode — the way openraft's nodes share one async runtime: a write
/// crosses no thread between the stores. Each store keeps its timer and snapshot worker
/// threads. A store's log write holds up every store on the thread, so it suits the
/// in-memory engines, not fsynced logs; and a panic in one store's loops ends the thread,
/// so every store on it stops running (each one's `shutdown` still returns) and a store
/// opened on it afterwards never runs.
///
/// Cloning gives another handle to the same thread. The thread ends once every handle is
/// dropped and every store opened on it has stopped (each store keeps a handle).
#[derive(Clone)]
pub struct SharedRunner {
    joining: Arc<Sender<Member>>,
}

impl std::fmt::Debug for SharedRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRunner").finish_non_exhaustive()
    }
}

/// Two handles are equal when they drive the same thread.
impl PartialEq for SharedRunner {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.joining, &other.joining)
    }
}

impl Eq for SharedRunner {}

/// A store's loops on a shared thread, and the line its `shutdown` waits on: dropped
/// (with the member) once the loops have ended.
struct Member {
    loops: Loops,
    _left: Sender<()>,
}

/// What a store on a shared thread keeps: its handle on the thread, and the line that
/// goes dead once the thread is done with its loops.
pub(super) struct Membership {
    _runner: SharedRunner,
    left: Receiver<()>,
}

impl Membership {
    /// Waits until the thread has ended the store's loops (its raft poller told to exit,
    /// its queued WAL tasks written), or has itself ended.
    pub(super) fn wait_left(&self) {
        // Nothing is ever sent: the line goes dead when the member is dropped.
        let _ = self.left.recv();
    }
}

impl SharedRunner {
    /// Starts the thread, named `name`.
    pub fn spawn(name: &str) -> std::io::Result<SharedRunner> {
        let (joining, arrivals) = channel::unbounded();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run_shared(&arrivals))?;
        Ok(SharedRunner {
            joining: Arc::new(joining),
        })
    }

    /// Hands a store's loops to the thread.
    pub(super) fn join(&self, loops: Loops) -> Membership {
        let (left, watch) = channel::bounded(0);
        let member = Member { loops, _left: left };
        // The thread holds the receiving end while any handle lives, and this is one.
        let _ = self.joining.send(member);
        Membership {
            _runner: self.clone(),
            left: watch,
        }
    }
}

/// The shared thread: a round of every member in turn; a member whose raft poller was
/// told to exit writes its queued WAL tasks and leaves. Ends once no handle and no member
/// is left.
fn run_shared(arrivals: &Receiver<Member>) {
    let mut members: Vec<Member> = Vec::new();
    let mut open = true;
    loop {
        while open {
            match arrivals.try_recv() {
                Ok(member) => members.push(member),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && members.is_empty() {
            return;
        }
        let mut worked = false;
        members.retain_mut(|m| match m.loops.round(Duration::ZERO) {
            Round::Worked => {
                worked = true;
                true
            }
            Round::Idle => true,
            Round::Exit => {
                m.loops.finish();
                false
            }
        });
        if !worked {
            wait_for_work(arrivals, open, &members);
        }
    }
}

/// Blocks until a member's raft queue has something, a store arrives (while handles
/// live), or the earliest of the members' held messages are due (`Poller::max_wait`).
fn wait_for_work(arrivals: &Receiver<Member>, open: bool, members: &[Member]) {
    let mut select = Select::new();
    if open {
        select.recv(arrivals);
    }
    let mut wait = IDLE_WAIT;
    for m in members {
        m.loops.raft.watch(&mut select);
        if let Some(held) = m.loops.raft.max_wait() {
            wait = wait.min(held);
        }
    }
    // Only readiness is wanted: the next round takes what came.
    let _ = select.ready_timeout(wait);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_equal_when_they_drive_the_same_thread() {
        let one = SharedRunner::spawn("shared-eq-1").expect("a thread");
        let other = SharedRunner::spawn("shared-eq-2").expect("a thread");
        assert_eq!(one, one.clone());
        assert_ne!(one, other);
        assert_eq!(format!("{one:?}"), "SharedRunner { .. }");
    }
}
