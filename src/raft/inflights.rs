//! The window of append messages in flight to one follower, bounded by count and bytes.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Inflights {
    /// (last index of the message, encoded bytes of its entries), in send order.
    window: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// Entries the window has room for without growing.
    #[cfg(test)]
    pub fn room(&self) -> usize {
        self.window.capacity()
    }

    /// Gives back the window's room beyond what it holds.
    pub fn shrink_buffers(&mut self) {
        self.window.shrink_to_fit();
    }

    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Inflights {
            window: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn add(&mut self, last_index: u64, bytes: u64) {
        self.window.push_back((last_index, bytes));
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Frees every message whose last index is at or below `index` (acknowledged).
    pub fn free_le(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
        if self.window.is_empty() {
            self.window.shrink_to(16);
        }
    }

    pub fn free_first_one(&mut self) {
        if let Some(&(last, _)) = self.window.front() {
            self.free_le(last);
        }
    }

    pub fn full(&self) -> bool {
        self.window.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub fn count(&self) -> usize {
        self.window.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Inflights;

    #[test]
    fn shrinking_keeps_what_is_in_flight_and_gives_back_the_rest() {
        let mut w = Inflights::new(64, u64::MAX);
        for i in 1..=40 {
            w.add(i, 1);
        }
        w.free_le(38);
        w.shrink_buffers();
        assert_eq!((w.count(), w.bytes()), (2, 2));
        assert!(w.window.capacity() < 40, "room given back");
        w.free_le(40);
        w.shrink_buffers();
        assert_eq!(w.window.capacity(), 0);
    }

    #[test]
    fn full_by_count_and_freed_in_order() {
        let mut w = Inflights::new(3, u64::MAX);
        for i in 1..=3 {
            assert!(!w.full());
            w.add(i * 10, 1);
        }
        assert!(w.full());
        w.free_le(15);
        assert_eq!(w.count(), 2);
        assert!(!w.full());
        w.free_first_one();
        assert_eq!(w.count(), 1);
        w.free_le(100);
        assert_eq!((w.count(), w.bytes()), (0, 0));
    }

    /// Leaving Replicate forgets the window: nothing sent before counts any more.
    #[test]
    fn reset_empties_the_window() {
        let mut w = Inflights::new(2, 1000);
        w.add(1, 600);
        w.add(2, 600);
        assert!(w.full());
        w.reset();
        assert_eq!((w.count(), w.bytes()), (0, 0));
        assert!(!w.full());
    }

    #[test]
    fn full_by_bytes() {
        let mut w = Inflights::new(100, 1000);
        w.add(1, 600);
        assert!(!w.full());
        w.add(2, 600);
        assert!(w.full());
        w.free_le(1);
        assert_eq!(w.bytes(), 600);
        assert!(!w.full());
    }
}
