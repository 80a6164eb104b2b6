//! One queue's state: its ready messages, its consumers, and the messages
//! delivered but not yet settled, with RabbitMQ classic-queue semantics.
//!
//! A queue lives on its owning shard and only that shard's thread touches it.
//! This module is plain synchronous state and methods: no runtime, no I/O, no
//! channels. The shard code drives it (publish, consume, ack, connection
//! closed) and carries each `Delivery` to the consumer's connection, which may
//! be on another shard; the connection gives credit back with `add_credit`
//! once it has written deliveries to its socket.
//!
//! Invariants:
//! - Every message the queue ever holds gets a sequence number `seq` when it
//!   is published, strictly increasing per queue. A message is in exactly one
//!   of `ready` or `unacked`, under its seq, until it is acked or discarded.
//! - `ready` is sorted by seq. Publishing appends the largest seq; requeue
//!   puts a message back at its original position, as RabbitMQ does, so
//!   redeliveries come before newer messages and in their original order.
//! - An unacked message counts against the prefetch of the consumer it was
//!   delivered to while that consumer exists; a basic.get or a cancelled
//!   consumer's message counts against no one but stays ackable and is
//!   requeued when its channel closes.
//!
//! The hot path (publish, dispatch, ack) allocates nothing in steady state:
//! the ready deque and the unacked map keep their capacity, a delivery clones
//! the message handle (a refcount) and the consumer tag (a `Bytes` refcount).
//!
//! Seams for what comes later:
//! - Disk store: the seq is the natural key for a persistent message in a
//!   per-queue log; `publish` returns it so the store can write it, `ack` and
//!   the discard path are where the store deletes it, and a ready entry could
//!   hold a paged-out reference instead of the `Message` without changing the
//!   order logic here.
//! - x-arguments: `publish` is the single way a message enters the queue, so
//!   x-max-length / x-overflow apply there; x-message-ttl expiry applies at
//!   the head of `ready`, which is in seq (and so arrival) order.
//! - Dead-lettering: `discard` is the single way a message leaves without
//!   being acked.

mod consumer;
#[cfg(test)]
mod tests;

use ahash::RandomState;
use hashbrown::HashMap;
use std::collections::VecDeque;

pub use consumer::{ConsumerKey, ConsumerSpec};

use crate::ids::{ConnectionId, QueueId};
use crate::message::Message;
use crate::protocol::error::AmqpError;
use crate::protocol::types::ShortStr;
use consumer::{ConsumerRef, Consumers};

/// A message handed to a consumer by `Queue::dispatch`.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub consumer: ConsumerKey,
    pub seq: u64,
    pub message: Message,
    pub redelivered: bool,
    /// The consumer is no-ack: the queue already forgot this message.
    pub no_ack: bool,
}

/// The answer to basic.get when the queue had a message.
#[derive(Clone, Debug)]
pub struct GetResult {
    pub seq: u64,
    pub message: Message,
    pub redelivered: bool,
    /// Ready messages left after this one (basic.get-ok message-count).
    pub message_count: u32,
}

/// What removing consumers did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerRemoved {
    /// At least one consumer was removed.
    pub existed: bool,
    /// The queue is auto-delete, has had a consumer, and now has none: the
    /// caller deletes it.
    pub auto_delete_now: bool,
}

/// A ready message.
#[derive(Debug)]
struct Ready {
    seq: u64,
    message: Message,
    redelivered: bool,
}

/// How a held message is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Back to its original position, marked redelivered.
    Requeue,
    /// Rejected without requeue: dropped (dead-lettering will hook here).
    Discard,
}

/// A message delivered with ack required, waiting for ack, reject or requeue.
#[derive(Debug)]
struct Unacked {
    message: Message,
    /// The channel that received it; closing it requeues the message.
    holder: (ConnectionId, u16),
    /// The consumer whose prefetch it counts against; None for basic.get.
    consumer: Option<ConsumerRef>,
}

#[derive(Debug)]
pub struct Queue {
    id: QueueId,
    name: ShortStr,
    vhost: ShortStr,
    auto_delete: bool,
    exclusive_owner: Option<ConnectionId>,
    /// Auto-delete fires only once a queue has had a consumer.
    has_had_consumer: bool,
    next_seq: u64,
    ready: VecDeque<Ready>,
    unacked: HashMap<u64, Unacked, RandomState>,
    consumers: Consumers,
    /// Reused when a channel closes to collect the seqs it held.
    scratch_seqs: Vec<u64>,
    /// Lifetime counts the management API turns into rates.
    totals: QueueTotals,
}

/// What a queue has done since it was created: RabbitMQ's `message_stats`
/// counters (publish, deliver_get, ack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub published: u64,
    /// Deliveries to consumers and basic.gets, redeliveries included.
    pub delivered: u64,
    pub acked: u64,
}

impl Queue {
    pub fn new(
        id: QueueId,
        name: ShortStr,
        vhost: ShortStr,
        auto_delete: bool,
        exclusive_owner: Option<ConnectionId>,
    ) -> Queue {
        Queue {
            id,
            name,
            vhost,
            auto_delete,
            exclusive_owner,
            has_had_consumer: false,
            next_seq: 1,
            ready: VecDeque::new(),
            unacked: HashMap::default(),
            consumers: Consumers::default(),
            scratch_seqs: Vec::new(),
            totals: QueueTotals::default(),
        }
    }

    pub fn totals(&self) -> QueueTotals {
        QueueTotals {
            // Every publish takes the next seq; requeues keep theirs.
            published: self.next_seq - 1,
            ..self.totals
        }
    }

    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn name(&self) -> &ShortStr {
        &self.name
    }

    pub fn vhost(&self) -> &ShortStr {
        &self.vhost
    }

    pub fn auto_delete(&self) -> bool {
        self.auto_delete
    }

    /// The connection that declared the queue exclusive; it is deleted when
    /// that connection closes (the caller's decision, seeing this).
    pub fn exclusive_owner(&self) -> Option<ConnectionId> {
        self.exclusive_owner
    }

    /// An exclusive queue is usable only by the connection that declared it
    /// (consume, get, purge, delete, re-declare); others get 405.
    pub fn check_exclusive_access(&self, conn: ConnectionId) -> Result<(), AmqpError> {
        match self.exclusive_owner {
            Some(owner) if owner != conn => Err(AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. \
                 It could be originally declared on another connection or the \
                 exclusive property value does not match that of the original \
                 declaration.",
                self.name, self.vhost
            ))),
            _ => Ok(()),
        }
    }

    /// Ready messages (queue.declare-ok message-count).
    /// queue.delete's conditions: 406 when `if_unused` and the queue has
    /// consumers, or `if_empty` and it holds ready messages (RabbitMQ's
    /// texts); otherwise the ready-message count delete-ok reports.
    pub fn check_delete(&self, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        let (name, vhost) = (&self.name, &self.vhost);
        if if_unused && self.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
        if if_empty && self.message_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{vhost}' is not empty"
            )));
        }
        Ok(self.message_count())
    }

    /// The consumers, for telling them when the queue goes away.
    pub fn consumer_keys(&self) -> impl Iterator<Item = &ConsumerKey> {
        self.consumers.keys()
    }

    pub fn message_count(&self) -> u32 {
        count_u32(self.ready.len())
    }

    pub fn consumer_count(&self) -> u32 {
        count_u32(self.consumers.len())
    }

    /// Messages delivered with ack required and not yet settled.
    pub fn unacked_count(&self) -> u32 {
        count_u32(self.unacked.len())
    }

    /// Appends a message and returns its seq.
    pub fn publish(&mut self, message: Message) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(Ready {
            seq,
            message,
            redelivered: false,
        });
        seq
    }

    /// Registers a consumer (basic.consume). The caller sends consume-ok and
    /// then calls `dispatch`.
    pub fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), AmqpError> {
        if self.consumers.contains(&spec.key) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{}'",
                spec.key.tag
            )));
        }
        if self.consumers.has_exclusive() || (spec.exclusive && self.consumers.len() > 0) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        self.consumers.insert(spec);
        self.has_had_consumer = true;
        Ok(())
    }

    /// Cancels a consumer (basic.cancel). Its unacked messages stay unacked
    /// and ackable by the channel; they no longer hold anyone's prefetch.
    pub fn remove_consumer(&mut self, key: &ConsumerKey) -> ConsumerRemoved {
        let removed = usize::from(self.consumers.remove(key));
        self.consumers_removed(removed)
    }

    /// A channel closed: its consumers go and every message it held unacked
    /// (from a consumer or basic.get) is requeued.
    pub fn remove_channel(&mut self, conn: ConnectionId, channel: u16) -> ConsumerRemoved {
        self.remove_holder(|holder| holder == (conn, channel))
    }

    /// A connection closed: as `remove_channel` for each of its channels.
    pub fn remove_connection(&mut self, conn: ConnectionId) -> ConsumerRemoved {
        self.remove_holder(|holder| holder.0 == conn)
    }

    /// Gives a consumer `credit` more deliveries; false if it is unknown
    /// (cancelled meanwhile), which the caller may ignore.
    pub fn add_credit(&mut self, key: &ConsumerKey, credit: u32) -> bool {
        self.consumers.add_credit(key, credit)
    }

    /// True when `dispatch` would deliver something.
    pub fn can_dispatch(&self) -> bool {
        !self.ready.is_empty() && self.consumers.taker_count() > 0
    }

    /// Hands ready messages to consumers round-robin, resuming after the
    /// consumer served last, until no message is ready or no consumer can
    /// take one (prefetch full or no credit). Returns how many it delivered.
    pub fn dispatch(&mut self, out: &mut impl FnMut(Delivery)) -> usize {
        let mut delivered = 0;
        while !self.ready.is_empty() {
            let Some(charged) = self.consumers.charge_next() else {
                break;
            };
            let Some(ready) = self.ready.pop_front() else {
                break;
            };
            if !charged.no_ack {
                self.unacked.insert(
                    ready.seq,
                    Unacked {
                        message: ready.message.clone(),
                        holder: (charged.key.conn, charged.key.channel),
                        consumer: Some(charged.consumer),
                    },
                );
            }
            out(Delivery {
                consumer: charged.key,
                seq: ready.seq,
                message: ready.message,
                redelivered: ready.redelivered,
                no_ack: charged.no_ack,
            });
            delivered += 1;
        }
        self.totals.delivered += delivered as u64;
        delivered
    }

    /// basic.get: takes the head message. With ack required it waits in
    /// unacked, held by `holder` (connection, channel), counting against no
    /// consumer's prefetch.
    pub fn get(&mut self, holder: (ConnectionId, u16), no_ack: bool) -> Option<GetResult> {
        let ready = self.ready.pop_front()?;
        self.totals.delivered += 1;
        if !no_ack {
            self.unacked.insert(
                ready.seq,
                Unacked {
                    message: ready.message.clone(),
                    holder,
                    consumer: None,
                },
            );
        }
        Some(GetResult {
            seq: ready.seq,
            message: ready.message,
            redelivered: ready.redelivered,
            message_count: self.message_count(),
        })
    }

    /// Settles one delivered message; false if the queue holds no unacked
    /// message by that seq. Callers go through `settle`, which checks the
    /// holder first.
    fn ack(&mut self, seq: u64) -> bool {
        match self.unacked.remove(&seq) {
            Some(unacked) => {
                self.release(&unacked);
                self.totals.acked += 1;
                true
            }
            None => false,
        }
    }

    /// Settles messages on behalf of the channel that holds them. A seq that
    /// `holder` does not hold is skipped: after a channel closes, its
    /// messages are requeued and may already be with another consumer when
    /// a late ack or requeue from the old channel arrives.
    pub fn settle(
        &mut self,
        holder: (ConnectionId, u16),
        seqs: &[u64],
        settlement: Settlement,
    ) -> usize {
        let mut known = 0;
        for &seq in seqs {
            if self
                .unacked
                .get(&seq)
                .is_none_or(|unacked| unacked.holder != holder)
            {
                continue;
            }
            known += match settlement {
                Settlement::Ack => usize::from(self.ack(seq)),
                Settlement::Requeue => self.reject(&[seq], true),
                Settlement::Discard => self.reject(&[seq], false),
            };
        }
        known
    }

    /// basic.reject / basic.nack: with `requeue` the messages go back to
    /// their original positions, marked redelivered; without, they leave the
    /// queue. Returns how many seqs were known. Callers go through `settle`.
    fn reject(&mut self, seqs: &[u64], requeue: bool) -> usize {
        let mut known = 0;
        for &seq in seqs {
            let Some(unacked) = self.unacked.remove(&seq) else {
                continue;
            };
            known += 1;
            self.release(&unacked);
            if requeue {
                self.requeue(seq, unacked.message);
            } else {
                self.discard(unacked.message);
            }
        }
        known
    }

    /// queue.purge: drops the ready messages, not the unacked ones; returns
    /// how many it dropped.
    pub fn purge(&mut self) -> u32 {
        let purged = self.message_count();
        self.ready.clear();
        purged
    }

    fn remove_holder(&mut self, held_by: impl Fn((ConnectionId, u16)) -> bool) -> ConsumerRemoved {
        let removed = self
            .consumers
            .remove_where(|key| held_by((key.conn, key.channel)));
        let mut seqs = std::mem::take(&mut self.scratch_seqs);
        seqs.extend(
            self.unacked
                .iter()
                .filter(|(_, unacked)| held_by(unacked.holder))
                .map(|(&seq, _)| seq),
        );
        for &seq in &seqs {
            if let Some(unacked) = self.unacked.remove(&seq) {
                self.release(&unacked);
                self.requeue(seq, unacked.message);
            }
        }
        seqs.clear();
        self.scratch_seqs = seqs;
        self.consumers_removed(removed)
    }

    fn consumers_removed(&self, removed: usize) -> ConsumerRemoved {
        ConsumerRemoved {
            existed: removed > 0,
            auto_delete_now: removed > 0
                && self.auto_delete
                && self.has_had_consumer
                && self.consumers.len() == 0,
        }
    }

    /// Frees the prefetch slot an unacked message held, if its consumer is
    /// still here.
    fn release(&mut self, unacked: &Unacked) {
        if let Some(consumer) = unacked.consumer {
            self.consumers.release(consumer);
        }
    }

    /// Puts a message back where its seq belongs among the ready ones.
    fn requeue(&mut self, seq: u64, message: Message) {
        let entry = Ready {
            seq,
            message,
            redelivered: true,
        };
        // Requeued messages are older than most ready ones, so the position
        // is near the front, and VecDeque::insert shifts the shorter side.
        let position = self.ready.partition_point(|ready| ready.seq < seq);
        self.ready.insert(position, entry);
    }

    /// A message leaves the queue unacknowledged (rejected without requeue).
    /// Dead-lettering (x-dead-letter-exchange) will take it from here; until
    /// then it is dropped.
    fn discard(&mut self, message: Message) {
        drop(message);
    }
}

/// Counts go on the wire as AMQP longs; a queue never holds 2^32 messages in
/// practice, and saturating is the honest answer if it did.
fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}
