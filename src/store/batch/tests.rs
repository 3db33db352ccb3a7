use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::*;

/// A test FSM: records what it is given; counts its drops.
struct Recorder {
    id: u64,
    seen: Arc<Mutex<HashMap<u64, Vec<Msg>>>>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Value(u32),
    /// The handler sends `Value(n)` to its own FSM while handling this.
    EchoSelf(u32),
    /// The handler ticks its own FSM while handling this.
    TickSelf,
    Stop,
}

impl Fsm for Recorder {
    type Message = Msg;
}

/// The store-like control FSM.
struct Control {
    seen: Vec<Msg>,
}

impl Fsm for Control {
    type Message = Msg;
}

type System = BatchSystem<u64, Recorder, Control>;

struct Handler {
    per_round: usize,
    router: Router<u64, Recorder, Control>,
    begins: Vec<usize>,
    /// Ids of every `end` call's batch, in order.
    ends: Vec<Vec<u64>>,
    ticks: HashMap<u64, u32>,
    control_seen: usize,
    /// Ids `end` marks busy once.
    keep_busy: Vec<u64>,
    /// What `Inbox::queued` said as each round of a normal FSM began.
    queued_seen: Vec<usize>,
}

impl PollHandler<Recorder, Control> for Handler {
    fn begin(&mut self, batch_len: usize) {
        self.begins.push(batch_len);
    }

    fn handle_control(&mut self, fsm: &mut Control, inbox: &mut Inbox<'_, Control>) -> Handled {
        while let Some(m) = inbox.next_message() {
            fsm.seen.push(m);
            self.control_seen += 1;
        }
        Handled::Idle
    }

    fn handle_normal(&mut self, fsm: &mut Recorder, inbox: &mut Inbox<'_, Recorder>) -> Handled {
        self.queued_seen.push(inbox.queued());
        let ticks = inbox.take_ticks();
        if ticks > 0 {
            *self.ticks.entry(fsm.id).or_default() += ticks;
        }
        for _ in 0..self.per_round {
            let Some(m) = inbox.next_message() else {
                return Handled::Idle;
            };
            fsm.seen.lock().entry(fsm.id).or_default().push(m);
            match m {
                Msg::Stop => return Handled::Stopped,
                // As if the message arrived just after the round looked: it ends Idle.
                Msg::EchoSelf(n) => {
                    self.router.force_send(fsm.id, Msg::Value(n)).unwrap();
                    return Handled::Idle;
                }
                Msg::TickSelf => {
                    assert!(self.router.mailbox(fsm.id).unwrap().tick(5));
                    return Handled::Idle;
                }
                Msg::Value(_) => {}
            }
        }
        if inbox.has_messages() {
            Handled::Busy
        } else {
            Handled::Idle
        }
    }

    fn end(&mut self, batch: &mut [Polled<Recorder>]) {
        self.ends
            .push(batch.iter_mut().map(|p| p.fsm().id).collect());
        for p in batch.iter_mut() {
            let id = p.fsm().id;
            if let Some(i) = self.keep_busy.iter().position(|&k| k == id) {
                self.keep_busy.remove(i);
                p.keep_busy();
            }
        }
    }
}

struct Fixture {
    system: System,
    seen: Arc<Mutex<HashMap<u64, Vec<Msg>>>>,
    drops: Arc<AtomicUsize>,
}

impl Fixture {
    fn new(config: BatchConfig) -> Self {
        Fixture {
            system: BatchSystem::new(Box::new(Control { seen: Vec::new() }), config),
            seen: Arc::default(),
            drops: Arc::default(),
        }
    }

    fn small() -> Self {
        Fixture::new(BatchConfig {
            pollers: 1,
            max_batch: 8,
            messages_per_round: 1000,
            mailbox_capacity: 4,
        })
    }

    fn register(&self, id: u64) -> Mailbox<Recorder> {
        let fsm = Recorder {
            id,
            seen: self.seen.clone(),
            drops: self.drops.clone(),
        };
        self.system.router().register(id, Box::new(fsm)).unwrap()
    }

    fn handler(&self, per_round: usize) -> Handler {
        Handler {
            per_round,
            router: self.system.router().clone(),
            begins: Vec::new(),
            ends: Vec::new(),
            ticks: HashMap::new(),
            control_seen: 0,
            keep_busy: Vec::new(),
            queued_seen: Vec::new(),
        }
    }

    fn seen(&self, id: u64) -> Vec<Msg> {
        self.seen.lock().get(&id).cloned().unwrap_or_default()
    }
}

const NOW: Duration = Duration::ZERO;

#[test]
fn a_resting_fsm_is_scheduled_once_however_many_messages_arrive() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    let mut poller = f.system.poller(f.handler(100));
    assert_eq!(
        poller.poll_once(NOW),
        PollOutcome::Empty,
        "nothing sent yet"
    );
    for v in 0..3 {
        router.try_send(1, Msg::Value(v)).unwrap();
    }
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1), vec![Msg::Value(0), Msg::Value(1), Msg::Value(2)]);
    assert_eq!(
        poller.poll_once(NOW),
        PollOutcome::Empty,
        "queued once, not thrice"
    );
    // Resting again: the next message wakes it.
    router.try_send(1, Msg::Value(3)).unwrap();
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1).len(), 4);
}

/// Most regions sleep: a mailbox whose FSM rests with nothing queued keeps no room for
/// messages, and one still holding messages keeps them.
#[test]
fn a_resting_mailbox_gives_its_queues_room_back() {
    let f = Fixture::small();
    let mailbox = f.register(1);
    assert_eq!(mailbox.queue_room(), 0);
    let mut poller = f.system.poller(f.handler(2));
    for v in 0..3 {
        mailbox.try_send(Msg::Value(v)).unwrap();
    }
    assert!(!mailbox.is_empty());
    assert!(mailbox.queue_room() >= 3);
    // Two taken, one left: busy, its queue kept.
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(mailbox.len(), 1);
    assert!(mailbox.queue_room() >= 1);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1).len(), 3);
    assert_eq!(mailbox.queue_room(), 0, "resting empty");
}

#[test]
fn a_busy_fsm_goes_behind_the_others_and_cannot_starve_them() {
    let f = Fixture::new(BatchConfig {
        pollers: 1,
        max_batch: 1,
        messages_per_round: 1000,
        mailbox_capacity: 1000,
    });
    let router = f.system.router();
    f.register(1);
    f.register(2);
    for v in 0..30 {
        router.try_send(1, Msg::Value(v)).unwrap();
    }
    router.try_send(2, Msg::Value(100)).unwrap();
    let mut poller = f.system.poller(f.handler(10));
    // Round 1: ten of region 1's; region 2 is next, not region 1's remaining twenty.
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1).len(), 10);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(2), vec![Msg::Value(100)]);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1), (0..30).map(Msg::Value).collect::<Vec<_>>());
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert_eq!(poller.handler().begins, vec![1; 4]);
}

#[test]
fn a_message_sent_while_the_fsm_runs_is_not_lost() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    router.try_send(1, Msg::EchoSelf(7)).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    // The round ends Idle as the echo lands in the mailbox; release finds it and wakes the
    // FSM again.
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1), vec![Msg::EchoSelf(7), Msg::Value(7)]);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
}

/// A tick counted while the FSM runs found it scheduled and did not wake it: the FSM
/// going back to rest must notice it and run again.
#[test]
fn a_tick_that_arrives_while_the_fsm_runs_is_not_lost() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    router.try_send(1, Msg::TickSelf).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1), "run again");
    assert_eq!(poller.handler().ticks.get(&1), Some(&1));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert_eq!(poller.handler().queued_seen, vec![1, 0]);
}

#[test]
fn ticks_are_capped_and_wake_the_fsm_once() {
    let f = Fixture::small();
    let mailbox = f.register(1);
    for _ in 0..5 {
        assert!(mailbox.tick(3));
    }
    let mut poller = f.system.poller(f.handler(10));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.handler().ticks.get(&1), Some(&3));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert!(mailbox.tick(3));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.handler().ticks.get(&1), Some(&4));
}

#[test]
fn a_full_mailbox_refuses_try_send_but_not_force_send() {
    let f = Fixture::small();
    let router = f.system.router();
    let mailbox = f.register(1);
    for v in 0..4 {
        router.try_send(1, Msg::Value(v)).unwrap();
    }
    assert_eq!(mailbox.len(), 4);
    assert_eq!(
        router.try_send(1, Msg::Value(4)),
        Err(SendError::Full(Msg::Value(4)))
    );
    router.force_send(1, Msg::Value(5)).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    poller.poll_once(NOW);
    assert_eq!(
        f.seen(1),
        [0, 1, 2, 3, 5].map(Msg::Value).to_vec(),
        "the refused message is not delivered"
    );
    assert!(mailbox.is_empty());
    router.try_send(1, Msg::Value(6)).unwrap();
}

#[test]
fn a_stopped_fsm_is_dropped_and_its_mailbox_refuses_messages() {
    let f = Fixture::small();
    let router = f.system.router();
    let mailbox = f.register(1);
    router.try_send(1, Msg::Stop).unwrap();
    router.try_send(1, Msg::Value(1)).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1), vec![Msg::Stop]);
    assert_eq!(f.drops.load(Ordering::SeqCst), 1);
    assert!(mailbox.is_closed());
    assert_eq!(
        router.try_send(1, Msg::Value(2)),
        Err(SendError::Closed(Msg::Value(2)))
    );
    assert!(!mailbox.tick(3));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert!(
        poller.handler().ends.iter().all(|e| e.is_empty()),
        "a stopped FSM is not in end"
    );
    // A stopped FSM's address can be registered again.
    f.register(1);
    router.try_send(1, Msg::Value(3)).unwrap();
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1), vec![Msg::Stop, Msg::Value(3)]);
}

#[test]
fn removing_an_fsm_drops_it_resting_or_queued() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    f.register(2);
    assert!(router.remove(1), "resting: dropped at once");
    assert_eq!(f.drops.load(Ordering::SeqCst), 1);
    assert!(!router.remove(1));
    assert!(router.mailbox(1).is_none());
    assert_eq!(
        router.try_send(1, Msg::Value(0)),
        Err(SendError::Closed(Msg::Value(0)))
    );
    router.try_send(2, Msg::Value(0)).unwrap();
    assert!(router.remove(2), "queued: dropped unrun by the poller");
    assert_eq!(f.drops.load(Ordering::SeqCst), 1);
    let mut poller = f.system.poller(f.handler(100));
    poller.poll_once(NOW);
    assert_eq!(f.drops.load(Ordering::SeqCst), 2);
    assert!(f.seen(2).is_empty());
    assert!(router.is_empty());
}

#[test]
fn an_address_with_a_live_fsm_cannot_be_registered_twice() {
    let f = Fixture::small();
    f.register(1);
    let dup = Recorder {
        id: 1,
        seen: f.seen.clone(),
        drops: f.drops.clone(),
    };
    let refused = f.system.router().register(1, Box::new(dup)).unwrap_err();
    assert_eq!(refused.0.id, 1, "the FSM comes back");
    assert_eq!(f.system.router().len(), 1);
}

#[test]
fn a_batch_is_bounded_and_end_sees_every_fsm_that_did_not_stop() {
    let f = Fixture::new(BatchConfig {
        pollers: 1,
        max_batch: 4,
        messages_per_round: 1000,
        mailbox_capacity: 10,
    });
    let router = f.system.router();
    for id in 1..=6 {
        f.register(id);
        router.try_send(id, Msg::Value(0)).unwrap();
    }
    router.try_send(3, Msg::Stop).unwrap();
    router.send_control(Msg::Value(9)).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(4));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(3));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    let h = poller.handler();
    assert_eq!(h.begins, vec![4, 3]);
    assert_eq!(
        h.ends,
        vec![vec![1, 2, 4], vec![5, 6]],
        "3 stopped: not in end"
    );
    assert_eq!(h.control_seen, 1);
}

#[test]
fn end_can_keep_an_idle_fsm_busy() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    router.try_send(1, Msg::Value(0)).unwrap();
    let mut handler = f.handler(100);
    handler.keep_busy = vec![1];
    let mut poller = f.system.poller(handler);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(
        poller.poll_once(NOW),
        PollOutcome::Handled(1),
        "requeued by end"
    );
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert_eq!(poller.handler().ends, vec![vec![1], vec![1]]);
}

#[test]
fn the_control_fsm_is_scheduled_like_the_others() {
    let f = Fixture::small();
    let router = f.system.router();
    router.send_control(Msg::Value(1)).unwrap();
    router.send_control(Msg::Value(2)).unwrap();
    let mut poller = f.system.poller(f.handler(100));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Empty);
    assert_eq!(poller.handler().control_seen, 2);
    assert!(poller.handler().ends[0].is_empty());
}

#[test]
fn an_exit_signal_ends_one_poller_after_its_batch() {
    let f = Fixture::small();
    let router = f.system.router();
    f.register(1);
    router.try_send(1, Msg::Value(0)).unwrap();
    router.signal_exit(2);
    let mut a = f.system.poller(f.handler(100));
    let mut b = f.system.poller(f.handler(100));
    assert_eq!(a.poll_once(NOW), PollOutcome::Exit);
    assert_eq!(
        f.seen(1),
        vec![Msg::Value(0)],
        "the batch taken with the signal ran"
    );
    assert_eq!(b.poll_once(NOW), PollOutcome::Exit);
    assert_eq!(
        a.poll_once(NOW),
        PollOutcome::Empty,
        "one signal per poller"
    );
}

/// Many senders, many FSMs, two poller threads: every message is handled exactly once and
/// each sender's messages to one FSM arrive in the order sent.
#[test]
fn threaded_pollers_deliver_every_message_once_and_in_order() {
    const FSMS: u64 = 64;
    const SENDERS: u32 = 4;
    const PER_SENDER: u32 = 500;
    let f = Fixture::new(BatchConfig {
        pollers: 2,
        max_batch: 16,
        messages_per_round: 1000,
        mailbox_capacity: usize::MAX,
    });
    for id in 0..FSMS {
        f.register(id);
    }
    let pool = f.system.spawn("test-poller", |_| f.handler(7)).unwrap();
    std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let router = f.system.router().clone();
            s.spawn(move || {
                for n in 0..PER_SENDER {
                    let id = u64::from(n) % FSMS;
                    router
                        .try_send(id, Msg::Value(sender * PER_SENDER + n))
                        .unwrap();
                    if n % 64 == 0 {
                        router.mailbox(id).unwrap().tick(5);
                    }
                }
            });
        }
    });
    let total = (SENDERS * PER_SENDER) as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.seen.lock().values().map(Vec::len).sum::<usize>() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "messages left unhandled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown();
    let seen = f.seen.lock();
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), total);
    for (id, msgs) in seen.iter() {
        for sender in 0..SENDERS {
            let mine: Vec<u32> = msgs
                .iter()
                .filter_map(|m| match m {
                    Msg::Value(v) if v / PER_SENDER == sender => Some(v % PER_SENDER),
                    _ => None,
                })
                .collect();
            let expected: Vec<u32> = (0..PER_SENDER)
                .filter(|n| u64::from(*n) % FSMS == *id)
                .collect();
            assert_eq!(mine, expected, "fsm {id}, sender {sender}");
        }
    }
    assert_eq!(f.drops.load(Ordering::SeqCst), 0);
}

#[test]
fn closing_drops_what_was_queued_and_refuses_what_comes_after() {
    let f = Fixture::small();
    let router = f.system.router();
    let mailbox = f.register(1);
    router.try_send(1, Msg::Value(1)).unwrap();
    router.try_send(1, Msg::Value(2)).unwrap();
    mailbox.close();
    assert!(
        mailbox.is_empty(),
        "queued messages are dropped, not left to hang"
    );
    assert_eq!(
        router.force_send(1, Msg::Value(3)),
        Err(SendError::Closed(Msg::Value(3)))
    );
    let mut poller = f.system.poller(f.handler(100));
    poller.poll_once(NOW);
    assert!(f.seen(1).is_empty());
    assert_eq!(f.drops.load(Ordering::SeqCst), 1);
}

#[test]
fn an_address_closed_while_its_fsm_runs_cannot_be_registered_until_the_poller_lets_go() {
    let f = Fixture::small();
    let router = f.system.router();
    let mailbox = f.register(1);
    router.try_send(1, Msg::Value(1)).unwrap();
    // The FSM is queued (as good as in a poller's hands): closing cannot drop it yet.
    mailbox.close();
    assert!(mailbox.is_closed());
    let again = || {
        router.register(
            1,
            Box::new(Recorder {
                id: 1,
                seen: f.seen.clone(),
                drops: f.drops.clone(),
            }),
        )
    };
    assert!(again().is_err(), "the old FSM still exists");
    let mut poller = f.system.poller(f.handler(100));
    poller.poll_once(NOW);
    assert_eq!(
        f.drops.load(Ordering::SeqCst),
        2,
        "the old one and the refused one"
    );
    assert!(again().is_ok(), "the old FSM is gone now");
}

/// Senders racing a close: every send either lands before the close (and is dropped by
/// it) or is refused; none is accepted and then left in a closed mailbox.
#[test]
fn a_send_racing_a_close_is_refused_or_dropped_never_stranded() {
    for _ in 0..50 {
        let f = Fixture::small();
        let router = f.system.router().clone();
        let mailbox = f.register(1);
        let accepted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for v in 0..200 {
                    if router.force_send(1, Msg::Value(v)).is_ok() {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            s.spawn(|| mailbox.close());
        });
        // Whatever was accepted is gone with the close, or the close came first.
        assert!(
            mailbox.is_empty(),
            "{} accepted",
            accepted.load(Ordering::SeqCst)
        );
    }
}

/// The batch system bounds a round by itself: a handler that drains greedily still takes
/// only `messages_per_round`, and the FSM goes behind the others with the rest.
#[test]
fn a_round_takes_at_most_the_configured_messages() {
    let f = Fixture::new(BatchConfig {
        pollers: 1,
        max_batch: 1,
        messages_per_round: 4,
        mailbox_capacity: 100,
    });
    let router = f.system.router();
    f.register(1);
    f.register(2);
    for v in 0..10 {
        router.try_send(1, Msg::Value(v)).unwrap();
    }
    router.try_send(2, Msg::Value(100)).unwrap();
    // The handler would take 1,000 per round.
    let mut poller = f.system.poller(f.handler(1000));
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(f.seen(1).len(), 4);
    assert_eq!(poller.poll_once(NOW), PollOutcome::Handled(1));
    assert_eq!(
        f.seen(2),
        vec![Msg::Value(100)],
        "region 2 before region 1's rest"
    );
    while poller.poll_once(NOW) != PollOutcome::Empty {}
    assert_eq!(f.seen(1), (0..10).map(Msg::Value).collect::<Vec<_>>());
}

#[test]
fn a_zero_wait_only_looks_and_a_wait_gets_what_arrives_in_it() {
    let (tx, rx) = channel::unbounded::<u32>();
    assert_eq!(
        recv_within(&rx, Duration::ZERO),
        Err(RecvTimeoutError::Timeout)
    );
    tx.send(7).unwrap();
    assert_eq!(recv_within(&rx, Duration::ZERO), Ok(7));
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(8).unwrap();
    });
    assert_eq!(recv_within(&rx, Duration::from_secs(30)), Ok(8));
    sender.join().unwrap();
    assert_eq!(
        recv_within(&rx, Duration::ZERO),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(
        recv_within(&rx, Duration::from_secs(30)),
        Err(RecvTimeoutError::Disconnected)
    );
}
