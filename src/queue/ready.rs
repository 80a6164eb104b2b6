//! A queue's ready messages: one FIFO per priority level (one level for a
//! queue without `x-max-priority`), each sorted by seq, with the count and
//! body bytes the length limits look at.
//!
//! Invariants:
//! - Each level is sorted by seq: publishing appends the largest seq and a
//!   requeue inserts at the message's original position within its level,
//!   so redeliveries come first within their priority.
//! - The head of the queue is the head of the highest non-empty level.
//! - `len`, `bytes` and `expiring` are the sums over all levels.

use std::collections::VecDeque;

use crate::message::Message;

/// A deadline that never comes.
pub const NEVER: u64 = u64::MAX;

/// A ready message.
#[derive(Debug)]
pub struct Ready {
    pub seq: u64,
    pub message: Message,
    pub redelivered: bool,
    /// When the message expires, on the shard's clock (ms); `NEVER`.
    pub expires_at_ms: u64,
    /// Times it was delivered and returned (x-delivery-count).
    pub returns: u32,
}

#[derive(Debug)]
pub struct ReadyQueue {
    levels: Vec<VecDeque<Ready>>,
    len: usize,
    /// Counted only when `count_bytes`: reading a body's size touches the
    /// message, which a queue without a byte limit need not do.
    bytes: u64,
    count_bytes: bool,
    /// Ready messages with a deadline: none (no TTL anywhere) spares the
    /// expiry check on every dispatch a look at the head message.
    expiring: usize,
}

impl ReadyQueue {
    /// A queue with priorities 0 to `max_priority` (None: one level), that
    /// counts body bytes if asked (x-max-length-bytes).
    pub fn new(max_priority: Option<u8>, count_bytes: bool) -> ReadyQueue {
        let level_count = max_priority.map_or(1, |max| usize::from(max) + 1);
        ReadyQueue {
            levels: (0..level_count).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            count_bytes,
            expiring: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts or stops counting body bytes (a policy set or cleared
    /// x-max-length-bytes).
    pub fn count_bytes(&mut self, count_bytes: bool) {
        if count_bytes == self.count_bytes {
            return;
        }
        self.count_bytes = count_bytes;
        self.bytes = match count_bytes {
            true => self
                .levels
                .iter()
                .flatten()
                .map(|ready| ready.message.body_size() as u64)
                .sum(),
            false => 0,
        };
    }

    /// Body bytes of the ready messages, if counted (x-max-length-bytes).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A priority above the queue's maximum counts as the maximum.
    fn level(&self, message: &Message) -> usize {
        match self.levels.len() {
            1 => 0,
            len => usize::from(message.priority).min(len - 1),
        }
    }

    pub fn push_back(&mut self, ready: Ready) {
        let level = self.level(&ready.message);
        self.count_in(&ready);
        debug_assert!(
            self.levels[level]
                .back()
                .is_none_or(|last| last.seq < ready.seq),
            "a level stays sorted by seq"
        );
        self.levels[level].push_back(ready);
    }

    /// Puts a message back where its seq belongs within its priority.
    pub fn requeue(&mut self, ready: Ready) {
        let level = self.level(&ready.message);
        self.count_in(&ready);
        let level = &mut self.levels[level];
        // Requeued messages are older than most ready ones, so the position
        // is near the front, and VecDeque::insert shifts the shorter side.
        let position = level.partition_point(|other| other.seq < ready.seq);
        level.insert(position, ready);
    }

    fn count_in(&mut self, ready: &Ready) {
        self.len += 1;
        self.expiring += usize::from(ready.expires_at_ms != NEVER);
        if self.count_bytes {
            self.bytes += ready.message.body_size() as u64;
        }
    }

    fn count_out(&mut self, ready: &Ready) {
        self.len -= 1;
        self.expiring -= usize::from(ready.expires_at_ms != NEVER);
        if self.count_bytes {
            self.bytes -= ready.message.body_size() as u64;
        }
    }

    /// The level the next message comes from.
    fn head_level(&self) -> Option<usize> {
        self.levels.iter().rposition(|level| !level.is_empty())
    }

    pub fn pop_front(&mut self) -> Option<Ready> {
        let level = self.head_level()?;
        let ready = self.levels[level].pop_front()?;
        self.count_out(&ready);
        Some(ready)
    }

    /// The earliest expiry among the heads of the levels: messages expire
    /// only at the head, as in RabbitMQ's classic queues.
    pub fn next_expiry(&self) -> Option<u64> {
        if self.expiring == 0 {
            return None;
        }
        self.levels
            .iter()
            .filter_map(|level| level.front())
            .map(|ready| ready.expires_at_ms)
            .min()
            .filter(|&at| at != NEVER)
    }

    /// Takes a head message that has expired by `now_ms`, if any.
    pub fn pop_expired(&mut self, now_ms: u64) -> Option<Ready> {
        let level = self
            .levels
            .iter()
            .position(|level| level.front().is_some_and(|r| r.expires_at_ms <= now_ms))?;
        let ready = self.levels[level].pop_front()?;
        self.count_out(&ready);
        Some(ready)
    }

    /// Visits every ready message, in no particular order.
    pub fn for_each(&self, mut visit: impl FnMut(&Ready)) {
        self.levels.iter().flatten().for_each(&mut visit);
    }

    /// Drops every ready message; returns how many.
    pub fn clear(&mut self) -> usize {
        let cleared = self.len;
        self.levels.iter_mut().for_each(VecDeque::clear);
        self.len = 0;
        self.bytes = 0;
        self.expiring = 0;
        cleared
    }
}
