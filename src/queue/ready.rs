//! A queue's ready messages: one FIFO per priority level (one level for a
//! queue without `x-max-priority`), each sorted by seq, with the count and
//! body bytes the length limits look at.
//!
//! Invariants:
//! - Each level is sorted by seq: publishing appends the largest seq and a
//!   requeue inserts at the message's original position within its level,
//!   so redeliveries come first within their priority.
//! - The head of the queue is the head of the highest non-empty level.
//! - `len`, `bytes`, `resident`, `paged` and `expiring` are the sums over
//!   all levels.
//! - Only a queue with one level is paged (`Body::Paged`), so a paged
//!   message's priority is never asked for.

use std::collections::VecDeque;

use crate::message::Message;
use crate::store::log::Location;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

/// A ready message.
#[derive(Debug)]
pub(crate) struct Ready {
    pub seq: u64,
    pub body: Body,
    pub redelivered: bool,
    /// When the message expires, on the shard's clock (ms); `NEVER`.
    pub(crate) expires_at_ms: u64,
    /// Times it was delivered and returned (x-delivery-count).
    pub returns: u32,
}

/// Where a ready message's content is.
#[derive(Debug)]
pub enum Body {
    /// In memory only.
    Resident(Message),
    /// In memory, and its enqueue record is at this place in the log.
    Logged(Message, Location),
    /// On disk only: read back (`shard::paging`) before it is delivered.
    Paged(Page),
}

/// A paged-out message: where its record is, and what the queue reads
/// without it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    pub at: Location,
    pub(crate) body_len: u32,
    pub persistent: bool,
    /// `at` is a page record written for paging (else the message's
    /// enqueue record), released once the message is back or gone.
    pub(crate) page_record: bool,
}

impl Body {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Body::Resident(message) | Body::Logged(message, _) => Some(message),
            Body::Paged(_) => None,
        }
    }

    pub(crate) fn into_message(self) -> Option<Message> {
        match self {
            Body::Resident(message) | Body::Logged(message, _) => Some(message),
            Body::Paged(_) => None,
        }
    }

    pub(crate) fn body_len(&self) -> u64 {
        match self {
            Body::Resident(message) | Body::Logged(message, _) => message.body_size() as u64,
            Body::Paged(page) => u64::from(page.body_len),
        }
    }

    pub fn persistent(&self) -> bool {
        match self {
            Body::Resident(message) | Body::Logged(message, _) => message.persistent,
            Body::Paged(page) => page.persistent,
        }
    }

    /// The page record that holds this message's content, if any.
    pub(crate) fn page_record(&self) -> Option<Location> {
        match self {
            Body::Paged(page) if page.page_record => Some(page.at),
            _ => None,
        }
    }

    fn priority(&self) -> u8 {
        self.message().map_or(0, |message| message.priority)
    }
}

#[derive(Debug)]
pub(crate) struct ReadyQueue {
    levels: Vec<VecDeque<Ready>>,
    len: usize,
    /// Body bytes of all ready messages (x-max-length-bytes).
    bytes: u64,
    /// Body bytes of the ready messages in memory.
    resident: u64,
    /// Ready messages paged out.
    paged: usize,
    /// Ready messages with a deadline: none (no TTL anywhere) spares the
    /// expiry check on every dispatch a look at the head message.
    expiring: usize,
}

impl ReadyQueue {
    /// A queue with priorities 0 to `max_priority` (None: one level).
    pub fn new(max_priority: Option<u8>) -> ReadyQueue {
        let level_count = max_priority.map_or(1, |max| usize::from(max) + 1);
        ReadyQueue {
            levels: (0..level_count).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            resident: 0,
            paged: 0,
            expiring: 0,
        }
    }

    /// Whether messages may be paged out: a queue with one level.
    pub(crate) fn is_single_level(&self) -> bool {
        self.levels.len() == 1
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Body bytes of the ready messages (x-max-length-bytes).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Body bytes of the ready messages in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.resident
    }

    pub(crate) fn paged_count(&self) -> usize {
        self.paged
    }

    /// A priority above the queue's maximum counts as the maximum.
    fn level(&self, priority: u8) -> usize {
        match self.levels.len() {
            1 => 0,
            len => usize::from(priority).min(len - 1),
        }
    }

    pub fn push_back(&mut self, ready: Ready) {
        self.push_back_at(ready.body.priority(), ready);
    }

    /// Appends a message of priority `priority` (a paged one has no
    /// content to say it).
    pub(crate) fn push_back_at(&mut self, priority: u8, ready: Ready) {
        let level = self.level(priority);
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
        let level = self.level(ready.body.priority());
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
        self.count_body(&ready.body, 1);
    }

    fn count_out(&mut self, ready: &Ready) {
        self.len -= 1;
        self.expiring -= usize::from(ready.expires_at_ms != NEVER);
        self.count_body(&ready.body, -1);
    }

    /// Adds (`sign` 1) or takes away (-1) a body from the byte counts.
    fn count_body(&mut self, body: &Body, sign: i64) {
        let len = body.body_len();
        let signed = |total: u64| total.wrapping_add_signed(sign * len as i64);
        self.bytes = signed(self.bytes);
        match body {
            Body::Paged(_) => self.paged = self.paged.wrapping_add_signed(sign as isize),
            _ => self.resident = signed(self.resident),
        }
    }

    /// Whether the next message to leave is paged out.
    pub(crate) fn head_is_paged(&self) -> bool {
        self.head_level()
            .and_then(|level| self.levels[level].front())
            .is_some_and(|ready| matches!(ready.body, Body::Paged(_)))
    }

    /// Replaces the body of the ready message `seq` (of a one-level queue)
    /// with what `change` returns for it, if it returns something; the
    /// old body is handed back.
    pub(crate) fn replace_body(
        &mut self,
        seq: u64,
        change: impl FnOnce(&Body) -> Option<Body>,
    ) -> Option<Body> {
        let level = &self.levels[0];
        let index = level.partition_point(|ready| ready.seq < seq);
        let new = level.get(index).filter(|ready| ready.seq == seq)?;
        let new = change(&new.body)?;
        self.count_body(&new, 1);
        let old = std::mem::replace(&mut self.levels[0][index].body, new);
        self.count_body(&old, -1);
        Some(old)
    }

    /// The message just pushed under `seq` is in the log at `at`.
    pub(crate) fn set_logged(&mut self, seq: u64, at: Location) {
        for level in &mut self.levels {
            let Some(ready) = level.back_mut().filter(|ready| ready.seq == seq) else {
                continue;
            };
            // Resident and Logged count alike, so the counts stand.
            let placeholder = Body::Paged(Page {
                at,
                body_len: 0,
                persistent: false,
                page_record: false,
            });
            ready.body = match std::mem::replace(&mut ready.body, placeholder) {
                Body::Resident(message) => Body::Logged(message, at),
                other => other,
            };
            return;
        }
    }

    /// The ready message `seq`, whatever its level.
    fn find_mut(&mut self, seq: u64) -> Option<&mut Ready> {
        self.levels.iter_mut().find_map(|level| {
            let index = level.partition_point(|ready| ready.seq < seq);
            level.get_mut(index).filter(|ready| ready.seq == seq)
        })
    }

    /// The body of the ready message `seq`, whatever its level.
    pub fn body(&self, seq: u64) -> Option<&Body> {
        self.levels
            .iter()
            .find_map(|level| {
                let index = level.partition_point(|ready| ready.seq < seq);
                level.get(index).filter(|ready| ready.seq == seq)
            })
            .map(|ready| &ready.body)
    }

    /// The record of ready message `seq` moved from `from` to `to`.
    pub(crate) fn relocate(&mut self, seq: u64, from: Location, to: Location) {
        if let Some(ready) = self.find_mut(seq) {
            match &mut ready.body {
                Body::Logged(_, at) | Body::Paged(Page { at, .. }) if *at == from => *at = to,
                _ => {}
            }
        }
    }

    /// Takes the ready message `seq` out of a one-level queue.
    pub fn remove(&mut self, seq: u64) -> Option<Ready> {
        let level = &mut self.levels[0];
        let index = level.partition_point(|ready| ready.seq < seq);
        let ready = level.remove(index).filter(|ready| ready.seq == seq);
        match ready {
            Some(ready) => {
                self.count_out(&ready);
                Some(ready)
            }
            None => None,
        }
    }

    /// Visits the ready messages of a one-level queue from the newest
    /// back, until `visit` returns false.
    pub(crate) fn visit_from_back(&self, mut visit: impl FnMut(&Ready) -> bool) {
        for ready in self.levels[0].iter().rev() {
            if !visit(ready) {
                break;
            }
        }
    }

    /// Visits the first `count` ready messages of a one-level queue.
    pub(crate) fn visit_front(&self, count: usize, visit: impl FnMut(&Ready)) {
        self.levels[0].iter().take(count).for_each(visit);
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
    pub(crate) fn next_expiry(&self) -> Option<u64> {
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
    pub(crate) fn pop_expired(&mut self, now_ms: u64) -> Option<Ready> {
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
        self.resident = 0;
        self.paged = 0;
        self.expiring = 0;
        cleared
    }
}
