//! The consumers of one queue: who they are, how much each may still take,
//! and whose turn it is.
//!
//! Owns the round-robin order and each consumer's flow-control state (credit
//! from its connection, unacknowledged count against its prefetch). It knows
//! nothing of messages: the queue asks it for the next consumer that can take
//! one and tells it when a delivered message is settled.
//!
//! Invariants:
//! - `by_key`, `order` and the occupied `slots` name the same consumers.
//! - `taker_count` is the number of consumers whose `can_take()` is true; every
//!   change to a consumer goes through `update`, which keeps it exact, so the
//!   queue can ask "can anything be dispatched" in O(1).
//! - A consumer's `serial` is never reused within a queue, so a `ConsumerRef`
//!   kept in an unacked entry never charges a later consumer that happens to
//!   occupy the same slot. With x-single-active-consumer the lowest serial
//!   (the longest-standing consumer) is the only one charged.

use ahash::RandomState;
use hashbrown::HashMap;

use crate::ids::ChannelId;
use crate::protocol::types::ShortStr;

/// A consumer's identity: the consumer tag is unique per channel, so the
/// channel qualifies it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerKey {
    pub channel: ChannelId,
    pub tag: ShortStr,
}

/// What basic.consume asked for, as the channel resolved it.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub key: ConsumerKey,
    /// basic.consume no-ack: deliveries are settled when sent.
    pub no_ack: bool,
    /// basic.consume exclusive: no other consumer on this queue meanwhile.
    pub exclusive: bool,
    /// Most unacknowledged deliveries this consumer may hold; 0 = unlimited.
    pub prefetch_count: u16,
    /// Deliveries the connection is ready to write now (see `Queue::add_credit`).
    pub credit: u32,
    /// basic.consume's `x-priority` (default 0): messages go to the
    /// highest-priority consumers that can take them, round-robin among
    /// equals, as RabbitMQ's consumer priorities do.
    pub priority: i32,
}

/// Names the consumer a delivery counts against, as long as it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConsumerRef {
    slot: u32,
    serial: u64,
}

/// The consumer a message was just handed to.
pub(super) struct Charged {
    pub key: ConsumerKey,
    pub no_ack: bool,
    pub consumer: ConsumerRef,
}

#[derive(Debug)]
struct Consumer {
    key: ConsumerKey,
    no_ack: bool,
    exclusive: bool,
    prefetch_count: u16,
    credit: u32,
    priority: i32,
    /// Deliveries not yet acked, rejected or requeued. Bounded by
    /// `prefetch_count` when that is set.
    unacked: u32,
    serial: u64,
}

impl Consumer {
    fn can_take(&self) -> bool {
        self.credit > 0
            && (self.prefetch_count == 0 || self.unacked < u32::from(self.prefetch_count))
    }
}

/// Consumers in slots (stable indices for `ConsumerRef`), a dense
/// round-robin order over the slots (grouped by priority, highest first),
/// and a key index for cancel and credit.
#[derive(Debug, Default)]
pub(super) struct Consumers {
    slots: Vec<Option<Consumer>>,
    free_slots: Vec<u32>,
    /// Round-robin order: by priority, highest first, then in the order
    /// consumers were added.
    order: Vec<u32>,
    /// Position in `order` where the next search for a taker starts, so
    /// round-robin resumes where the last dispatch left off.
    cursor: usize,
    by_key: HashMap<ConsumerKey, u32, RandomState>,
    taker_count: usize,
    exclusive_count: usize,
    next_serial: u64,
    /// x-single-active-consumer: only the longest-standing consumer takes
    /// messages; when it goes, the next in line does.
    single_active: bool,
}

impl Consumers {
    pub fn new(single_active: bool) -> Consumers {
        Consumers {
            single_active,
            ..Consumers::default()
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ConsumerKey> {
        self.slots.iter().flatten().map(|consumer| &consumer.key)
    }

    pub fn contains(&self, key: &ConsumerKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub(crate) fn has_exclusive(&self) -> bool {
        self.exclusive_count > 0
    }

    /// Consumers that could take a message right now.
    #[cfg(test)]
    pub(crate) fn taker_count(&self) -> usize {
        self.taker_count
    }

    /// Adds a consumer the caller has checked is new and allowed.
    pub fn insert(&mut self, spec: ConsumerSpec) {
        let consumer = Consumer {
            key: spec.key.clone(),
            no_ack: spec.no_ack,
            exclusive: spec.exclusive,
            prefetch_count: spec.prefetch_count,
            credit: spec.credit,
            priority: spec.priority,
            unacked: 0,
            serial: self.next_serial,
        };
        let priority = consumer.priority;
        self.next_serial += 1;
        self.taker_count += usize::from(consumer.can_take());
        self.exclusive_count += usize::from(consumer.exclusive);
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(consumer);
                slot
            }
            None => {
                // Slots are bounded by the consumers alive at once, which the
                // channel limits; u32 is far beyond any real count.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(consumer));
                slot
            }
        };
        // After every consumer of the same or a higher priority.
        let position = self
            .order
            .iter()
            .position(|&other| self.slot(other).is_some_and(|c| c.priority < priority))
            .unwrap_or(self.order.len());
        self.order.insert(position, slot);
        if position < self.cursor {
            self.cursor += 1;
        }
        self.by_key.insert(spec.key, slot);
    }

    /// Removes one consumer; false if there was none by that key.
    pub fn remove(&mut self, key: &ConsumerKey) -> bool {
        let Some(slot) = self.by_key.remove(key) else {
            return false;
        };
        if let Some(consumer) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.taker_count -= usize::from(consumer.can_take());
            self.exclusive_count -= usize::from(consumer.exclusive);
        }
        self.free_slots.push(slot);
        if let Some(position) = self.order.iter().position(|&s| s == slot) {
            self.order.remove(position);
            // Keep the cursor on the consumer that was next in line.
            if position < self.cursor {
                self.cursor -= 1;
            }
        }
        if self.cursor >= self.order.len() {
            self.cursor = 0;
        }
        true
    }

    /// Removes every consumer whose key matches; returns how many.
    pub(crate) fn remove_where(&mut self, matches: impl Fn(&ConsumerKey) -> bool) -> usize {
        let mut removed = 0;
        // Consumers per queue are few and this runs when a channel closes,
        // not per message, so a scan per removal is cheaper than bookkeeping.
        while let Some(key) = self.by_key.keys().find(|key| matches(key)).cloned() {
            self.remove(&key);
            removed += 1;
        }
        removed
    }

    /// Adds credit to a consumer; false if there is no such consumer.
    pub fn add_credit(&mut self, key: &ConsumerKey, credit: u32) -> bool {
        match self.by_key.get(key) {
            Some(&slot) => {
                self.update(slot, |c| c.credit = c.credit.saturating_add(credit));
                true
            }
            None => false,
        }
    }

    /// Picks the next consumer that can take a message, from the highest
    /// priority that has one, round-robin within that priority, and charges
    /// it one credit and, unless no-ack, one unacked slot.
    pub(crate) fn charge_next(&mut self) -> Option<Charged> {
        if self.taker_count == 0 {
            return None;
        }
        if self.single_active {
            return self.charge_active();
        }
        let mut start = 0;
        while let Some(&first) = self.order.get(start) {
            let priority = self.slot(first).map_or(0, |c| c.priority);
            let len = self.order[start..]
                .iter()
                .take_while(|&&slot| self.slot(slot).is_some_and(|c| c.priority == priority))
                .count()
                .max(1);
            if let Some(charged) = self.charge_in(start, len) {
                return Some(charged);
            }
            start += len;
        }
        None
    }

    /// Charges the single active consumer, the one added first, if it can
    /// take a message; the others wait their turn.
    fn charge_active(&mut self) -> Option<Charged> {
        let position = (0..self.order.len()).min_by_key(|&position| {
            self.slot(self.order[position])
                .map_or(u64::MAX, |c| c.serial)
        })?;
        self.charge_in(position, 1)
    }

    /// Round-robin over `order[start..start + len]` (one priority),
    /// resuming at the cursor when it points into that range.
    fn charge_in(&mut self, start: usize, len: usize) -> Option<Charged> {
        let resume = self
            .cursor
            .checked_sub(start)
            .filter(|&offset| offset < len)
            .unwrap_or(0);
        for step in 0..len {
            let position = start + (resume + step) % len;
            let slot = self.order[position];
            let Some(consumer) = self.slot(slot) else {
                continue;
            };
            if !consumer.can_take() {
                continue;
            }
            let no_ack = consumer.no_ack;
            let charged = Charged {
                key: consumer.key.clone(),
                no_ack,
                consumer: ConsumerRef {
                    slot,
                    serial: consumer.serial,
                },
            };
            self.update(slot, |c| {
                c.credit -= 1;
                c.unacked += u32::from(!no_ack);
            });
            self.cursor = start + (position - start + 1) % len;
            return Some(charged);
        }
        None
    }

    /// A delivery was acked, rejected or requeued: frees its prefetch slot
    /// if the consumer it went to is still here.
    pub fn release(&mut self, consumer: ConsumerRef) {
        let current = self.slot(consumer.slot).map(|c| c.serial);
        if current == Some(consumer.serial) {
            self.update(consumer.slot, |c| c.unacked = c.unacked.saturating_sub(1));
        }
    }

    fn slot(&self, slot: u32) -> Option<&Consumer> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The one way a consumer's flow-control state changes, so that
    /// `taker_count` stays exact.
    fn update(&mut self, slot: u32, change: impl FnOnce(&mut Consumer)) {
        if let Some(consumer) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            let could_take = consumer.can_take();
            change(consumer);
            let can_take = consumer.can_take();
            self.taker_count = self.taker_count + usize::from(can_take) - usize::from(could_take);
        }
    }

    /// Recounts takers the slow way; tests compare it with `taker_count`.
    #[cfg(test)]
    pub(crate) fn recount_takers(&self) -> usize {
        self.slots.iter().flatten().filter(|c| c.can_take()).count()
    }
}
