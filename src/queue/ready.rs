//! A queue's ready messages: one FIFO per priority level (one level for a
//! queue without `x-max-priority`; `level::Level`), each sorted by seq,
//! with the count and body bytes the length limits look at.
//!
//! Invariants:
//! - Each level is sorted by seq: publishing appends the largest seq and a
//!   requeue inserts at the message's original position within its level,
//!   so redeliveries come first within their priority.
//! - The head of the queue is the head of the highest non-empty level.
//! - `len`, `bytes`, `resident`, `paged` and `expiring` are the sums over
//!   all levels.
//! - A paged message (`Body::Paged`) stays in its priority's level: its
//!   `Page` keeps the priority, for a queue that reads it and for one that
//!   restores it.

use super::level::{Entry, Extra, Level, Spot};
use crate::message::{Message, MESSAGE_OVERHEAD_BYTES};
use crate::store::log::Location;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

/// What a visit does next.
pub(crate) enum Visit {
    Next,
    NextLevel,
    Stop,
}

/// A ready message on its way in or out: a level keeps it in a smaller
/// form (`level::Entry`).
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
    /// The priority property, for the level it belongs to.
    pub(crate) priority: u8,
    pub persistent: bool,
    /// `at` is a page record written for paging (else the message's
    /// enqueue record), released once the message is back or gone.
    pub(crate) page_record: bool,
}

impl Page {
    /// `message`, to be kept only by its record at `at`.
    pub(crate) fn of(message: &Message, at: Location, page_record: bool) -> Page {
        Page {
            at,
            body_len: message.body_size() as u32,
            priority: message.priority,
            persistent: message.persistent,
            page_record,
        }
    }
}

impl Body {
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

    /// The memory it holds: none paged out, else its body and
    /// `MESSAGE_OVERHEAD_BYTES`.
    pub(crate) fn held_bytes(&self) -> u64 {
        match self {
            Body::Resident(message) | Body::Logged(message, _) => {
                message.body_size() as u64 + MESSAGE_OVERHEAD_BYTES
            }
            Body::Paged(_) => 0,
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
        match self {
            Body::Resident(message) | Body::Logged(message, _) => message.priority,
            Body::Paged(page) => page.priority,
        }
    }

    /// Its record was copied from `from` to `to` (compaction).
    pub(crate) fn relocate(&mut self, from: Location, to: Location) {
        match self {
            Body::Logged(_, at) | Body::Paged(Page { at, .. }) if *at == from => *at = to,
            _ => {}
        }
    }
}

#[derive(Debug)]
pub(crate) struct ReadyQueue {
    levels: Vec<Level>,
    len: usize,
    /// Body bytes of all ready messages (x-max-length-bytes).
    bytes: u64,
    /// Memory held by the ready messages in memory: their bodies and
    /// `MESSAGE_OVERHEAD_BYTES` each.
    resident: u64,
    /// The part of `resident` held by messages also in the log.
    logged: u64,
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
            levels: (0..level_count).map(|_| Level::default()).collect(),
            len: 0,
            bytes: 0,
            resident: 0,
            logged: 0,
            paged: 0,
            expiring: 0,
        }
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

    /// Memory held by the ready messages in memory (bodies and
    /// `MESSAGE_OVERHEAD_BYTES` each).
    pub fn resident_bytes(&self) -> u64 {
        self.resident
    }

    /// The part of `resident_bytes` held by messages also in the log.
    pub(crate) fn logged_bytes(&self) -> u64 {
        self.logged
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
        let level = self.level(ready.body.priority());
        let (entry, extra) = self.count_in(ready);
        self.levels[level].push_back(entry, extra);
    }

    /// Puts a message back where its seq belongs within its priority.
    pub fn requeue(&mut self, ready: Ready) {
        let level = self.level(ready.body.priority());
        let (entry, extra) = self.count_in(ready);
        self.levels[level].insert(entry, extra);
    }

    /// Counts a message in, as a level keeps it.
    fn count_in(&mut self, ready: Ready) -> (Entry, Extra) {
        self.len += 1;
        self.expiring += usize::from(ready.expires_at_ms != NEVER);
        self.count_body(&ready.body, 1);
        let extra = Extra {
            expires_at_ms: ready.expires_at_ms,
            returns: ready.returns,
        };
        (Entry::new(ready.seq, ready.redelivered, ready.body), extra)
    }

    /// Counts a message out, as it leaves.
    fn count_out(&mut self, (entry, extra): (Entry, Extra)) -> Ready {
        self.len -= 1;
        self.expiring -= usize::from(extra.expires_at_ms != NEVER);
        self.count_body(&entry.body, -1);
        Ready {
            seq: entry.seq(),
            redelivered: entry.redelivered(),
            body: entry.body,
            expires_at_ms: extra.expires_at_ms,
            returns: extra.returns,
        }
    }

    /// Adds (`sign` 1) or takes away (-1) a body from the byte counts.
    fn count_body(&mut self, body: &Body, sign: i64) {
        let len = body.body_len();
        self.bytes = self.bytes.wrapping_add_signed(sign * len as i64);
        let held = sign * body.held_bytes() as i64;
        match body {
            Body::Paged(_) => self.paged = self.paged.wrapping_add_signed(sign as isize),
            Body::Resident(_) => self.resident = self.resident.wrapping_add_signed(held),
            Body::Logged(..) => {
                self.resident = self.resident.wrapping_add_signed(held);
                self.logged = self.logged.wrapping_add_signed(held);
            }
        }
    }

    /// Whether the next message to leave is paged out.
    pub(crate) fn head_is_paged(&self) -> bool {
        self.head_level()
            .and_then(|level| self.levels[level].front())
            .is_some_and(|(entry, _)| matches!(entry.body, Body::Paged(_)))
    }

    /// Replaces the body of the ready message `seq` with what `change`
    /// returns for it, if it returns something; the old body is handed
    /// back.
    pub(crate) fn replace_body(
        &mut self,
        seq: u64,
        change: impl FnOnce(&Body) -> Option<Body>,
    ) -> Option<Body> {
        let (level, spot) = self.position(seq)?;
        let new = change(&self.levels[level].get(spot).body)?;
        self.count_body(&new, 1);
        let old = std::mem::replace(&mut self.levels[level].get_mut(spot).body, new);
        self.count_body(&old, -1);
        Some(old)
    }

    /// The level of the ready message `seq` and where it is there.
    fn position(&self, seq: u64) -> Option<(usize, Spot)> {
        self.levels
            .iter()
            .enumerate()
            .find_map(|(number, level)| level.find(seq).map(|spot| (number, spot)))
    }

    /// The message just pushed under `seq` is in the log at `at`.
    pub(crate) fn set_logged(&mut self, seq: u64, at: Location) {
        let mut logged = 0;
        for level in &mut self.levels {
            let Some(entry) = level.back_mut().filter(|entry| entry.seq() == seq) else {
                continue;
            };
            let placeholder = Body::Paged(Page {
                at,
                body_len: 0,
                priority: 0,
                persistent: false,
                page_record: false,
            });
            entry.body = match std::mem::replace(&mut entry.body, placeholder) {
                Body::Resident(message) => {
                    let body = Body::Logged(message, at);
                    logged = body.held_bytes();
                    body
                }
                other => other,
            };
            break;
        }
        self.logged += logged;
    }

    /// The body of the ready message `seq`, whatever its level.
    pub fn body(&self, seq: u64) -> Option<&Body> {
        let (level, spot) = self.position(seq)?;
        Some(&self.levels[level].get(spot).body)
    }

    /// The record of ready message `seq` moved from `from` to `to`.
    pub(crate) fn relocate(&mut self, seq: u64, from: Location, to: Location) {
        if let Some((level, spot)) = self.position(seq) {
            self.levels[level].get_mut(spot).body.relocate(from, to);
        }
    }

    /// Takes the ready message `seq` out, whatever its level.
    pub fn remove(&mut self, seq: u64) -> Option<Ready> {
        let (level, spot) = self.position(seq)?;
        let removed = self.levels[level].remove(spot)?;
        Some(self.count_out(removed))
    }

    /// Visits the ready messages (seq and body) behind the first
    /// `head_len` to leave, level by level from the lowest, each from its
    /// newest back, as `visit` says.
    pub(crate) fn visit_behind(&self, head_len: usize, mut visit: impl FnMut(u64, &Body) -> Visit) {
        // The head is the front of the highest levels.
        let mut in_head = head_len;
        let mut behind: Vec<usize> = self
            .levels
            .iter()
            .rev()
            .map(|level| {
                let taken = in_head.min(level.len());
                in_head -= taken;
                level.len() - taken
            })
            .collect();
        behind.reverse();
        for (level, behind) in self.levels.iter().zip(behind) {
            for entry in level.iter().rev().take(behind) {
                match visit(entry.seq(), &entry.body) {
                    Visit::Next => {}
                    Visit::NextLevel => break,
                    Visit::Stop => return,
                }
            }
        }
    }

    /// Visits the first `count` ready messages (seq and body) to leave,
    /// in the order they leave (the highest level first).
    pub(crate) fn visit_front(&self, count: usize, mut visit: impl FnMut(u64, &Body)) {
        self.levels
            .iter()
            .rev()
            .flat_map(Level::iter)
            .take(count)
            .for_each(|entry| visit(entry.seq(), &entry.body));
    }

    /// The level the next message comes from.
    fn head_level(&self) -> Option<usize> {
        self.levels.iter().rposition(|level| !level.is_empty())
    }

    pub fn pop_front(&mut self) -> Option<Ready> {
        let level = self.head_level()?;
        let popped = self.levels[level].pop_front()?;
        Some(self.count_out(popped))
    }

    /// The earliest expiry among the heads of the levels: messages expire
    /// only at the head, as in RabbitMQ's classic queues.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        if self.expiring == 0 {
            return None;
        }
        self.levels
            .iter()
            .filter_map(Level::front)
            .map(|(_, extra)| extra.expires_at_ms)
            .min()
            .filter(|&at| at != NEVER)
    }

    /// Takes a head message that has expired by `now_ms`, if any.
    pub(crate) fn pop_expired(&mut self, now_ms: u64) -> Option<Ready> {
        let level = self.levels.iter().position(|level| {
            level
                .front()
                .is_some_and(|(_, extra)| extra.expires_at_ms <= now_ms)
        })?;
        let popped = self.levels[level].pop_front()?;
        Some(self.count_out(popped))
    }

    /// Visits every ready message (seq and body), in no particular order.
    pub fn for_each(&self, mut visit: impl FnMut(u64, &Body)) {
        self.levels
            .iter()
            .flat_map(Level::iter)
            .for_each(|entry| visit(entry.seq(), &entry.body));
    }

    /// Drops every ready message; returns how many.
    pub fn clear(&mut self) -> usize {
        let cleared = self.len;
        self.levels.iter_mut().for_each(Level::clear);
        self.len = 0;
        self.bytes = 0;
        self.resident = 0;
        self.logged = 0;
        self.paged = 0;
        self.expiring = 0;
        cleared
    }
}
