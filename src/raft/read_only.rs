//! The leader's queue of linearizable reads. Reads join the next heartbeat *round*; one
//! round (a heartbeat broadcast stamped with the round number) confirms leadership for all
//! reads that joined it, so any number of reads costs one message per follower. Reads are
//! released in arrival order once a quorum has acknowledged their round.

use std::collections::VecDeque;

/// A read confirmed at `index`: once the state machine has applied `index`, a read
/// started by `request_ctx` is linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The leader's commit index when it took the request (confirmed as still leading
    /// after that): serve the read once this index is applied.
    pub index: u64,
    /// The context passed to `read_index`, identifying the request.
    pub request_ctx: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct PendingRead {
    pub ctx: Vec<u8>,
    /// The follower that forwarded the read (0: this node).
    pub from: u64,
    pub index: u64,
    pub round: u64,
}

/// How many recent rounds' send ticks are kept. Only a round that may still become the
/// quorum round matters for the lease; an acknowledgement of an older one renews nothing.
const REMEMBERED_ROUNDS: usize = 64;

#[derive(Debug, Default)]
pub struct ReadOnly {
    /// Reads waiting for their round's quorum, in order of rounds.
    queue: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    pub awaiting_commit: Vec<(Vec<u8>, u64)>,
    /// The round that new reads join; it has not been broadcast yet.
    next_round: u64,
    /// Send ticks of recent rounds, for the lease.
    sent: VecDeque<(u64, u64)>,
}

impl ReadOnly {
    /// Gives back the room of the queues beyond what they hold.
    pub fn shrink_buffers(&mut self) {
        self.queue.shrink_to_fit();
        self.awaiting_commit.shrink_to_fit();
        self.sent.shrink_to_fit();
    }

    pub fn new() -> Self {
        ReadOnly {
            next_round: 1,
            ..Default::default()
        }
    }

    pub fn push(&mut self, ctx: Vec<u8>, from: u64, index: u64) {
        let round = self.next_round;
        self.queue.push_back(PendingRead {
            ctx,
            from,
            index,
            round,
        });
    }

    /// Whether reads are waiting for a round that has not been sent yet.
    pub fn needs_round(&self) -> bool {
        self.queue
            .back()
            .is_some_and(|r| r.round == self.next_round)
    }

    /// Starts the next round at `now` (ticks); returns its number.
    pub fn start_round(&mut self, now: u64) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        self.sent.push_back((round, now));
        while self.sent.len() > REMEMBERED_ROUNDS {
            self.sent.pop_front();
        }
        round
    }

    /// The latest round sent so far (0 if none).
    pub fn last_sent_round(&self) -> u64 {
        self.next_round - 1
    }

    /// Tick at which `round` was sent, if still remembered.
    pub fn sent_tick(&self, round: u64) -> Option<u64> {
        self.sent
            .iter()
            .rev()
            .find(|(r, _)| *r == round)
            .map(|(_, t)| *t)
    }

    /// Removes and returns the reads whose round is at or below `quorum_round`, in order.
    pub fn release(&mut self, quorum_round: u64) -> Vec<PendingRead> {
        let n = self
            .queue
            .iter()
            .take_while(|r| r.round <= quorum_round)
            .count();
        self.queue.drain(..n).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.awaiting_commit.is_empty()
    }

    /// Drops every pending read (leadership lost) and hands back each one's (context,
    /// requester), in arrival order within each queue, so that every requester can be told.
    pub fn clear(&mut self) -> impl Iterator<Item = (Vec<u8>, u64)> + use<> {
        self.sent.clear();
        let queued = std::mem::take(&mut self.queue)
            .into_iter()
            .map(|r| (r.ctx, r.from));
        queued.chain(std::mem::take(&mut self.awaiting_commit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_gives_back_the_room_of_released_reads() {
        let mut ro = ReadOnly::new();
        for i in 0..10u8 {
            ro.push(vec![i], 0, 5);
        }
        ro.awaiting_commit.push((b"w".to_vec(), 1));
        let round = ro.start_round(100);
        assert_eq!(ro.release(round).len(), 10);
        ro.awaiting_commit.clear();
        ro.shrink_buffers();
        assert_eq!(ro.queue.capacity(), 0);
        assert_eq!(ro.awaiting_commit.capacity(), 0);
        assert_eq!(ro.sent_tick(round), Some(100), "what the lease needs stays");
        assert!(ro.sent.capacity() >= 1);
    }

    #[test]
    fn reads_share_a_round_and_release_in_order() {
        let mut ro = ReadOnly::new();
        ro.push(b"a".to_vec(), 0, 5);
        ro.push(b"b".to_vec(), 2, 5);
        assert!(ro.needs_round());
        let r1 = ro.start_round(100);
        assert!(!ro.needs_round());
        ro.push(b"c".to_vec(), 0, 6);
        let r2 = ro.start_round(101);
        assert_eq!(ro.sent_tick(r1), Some(100));
        assert!(ro.release(r1 - 1).is_empty());
        let got: Vec<_> = ro.release(r1).into_iter().map(|r| r.ctx).collect();
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(ro.release(r2).len(), 1);
        assert!(ro.is_empty());
    }

    #[test]
    fn the_send_ticks_of_the_last_rounds_are_remembered() {
        let mut ro = ReadOnly::new();
        assert_eq!(ro.last_sent_round(), 0);
        let rounds: Vec<u64> = (0..=REMEMBERED_ROUNDS as u64)
            .map(|tick| ro.start_round(tick))
            .collect();
        assert_eq!(ro.last_sent_round(), *rounds.last().unwrap());
        assert_eq!(ro.sent_tick(rounds[0]), None, "one round too old");
        assert_eq!(ro.sent_tick(rounds[1]), Some(1));
        assert_eq!(
            ro.sent_tick(*rounds.last().unwrap()),
            Some(REMEMBERED_ROUNDS as u64)
        );
    }
}
