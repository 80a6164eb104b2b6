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
//! - Each priority level of `ready` (one without `x-max-priority`) is
//!   sorted by seq. Publishing appends the largest seq; requeue puts a
//!   message back at its original position, as RabbitMQ does, so
//!   redeliveries come before newer messages of their priority and in
//!   their original order.
//! - An unacked message counts against the prefetch of the consumer it was
//!   delivered to while that consumer exists; a basic.get or a cancelled
//!   consumer's message counts against no one but stays ackable and is
//!   requeued when its channel closes.
//!
//! The hot path (publish, dispatch, ack) allocates nothing in steady state:
//! a priority level keeps its last block of ready messages and the unacked
//! map its capacity, a delivery clones
//! the message handle (a refcount) and the consumer tag (a `Bytes` refcount).
//!
//! The `x-` arguments (`Settings`) act here: `publish` is the single way a
//! message enters the queue, so x-max-length / x-overflow apply there;
//! expiry (x-message-ttl, the expiration property) applies at the head of
//! each priority level, as in RabbitMQ's classic queues; `dead_letter` is
//! the single way a message leaves without being acked or consumed, and it
//! only collects dead letters: the shard drains them (`drain_dead_letters`),
//! builds the x-death message (`dead_letter::make`) and routes it. Time is
//! the caller's: methods that may need it take a `Clock` and read it only
//! when a message or the queue can expire; `next_deadline` tells the shard
//! when to come back (`expire`) even if nothing else happens.
//!
//! The disk store: a durable queue (`set_durable`) logs its persistent
//! messages (`is_logged`) under their seq; `publish` returns the seq for
//! the shard to log, and every way a logged message leaves for good (ack,
//! discard, expiry, overflow, no-ack delivery, purge) goes through `gone`,
//! which collects its seq for the shard to log as settled
//! (`take_gone`). After a restart `restore` puts recovered messages back
//! under their old seqs.
//!
//! Paging: the shard may swap a ready message's content for where it lies
//! on disk (`page_out`) and back (`page_in`); see `shard::paging`. A queue
//! delivers only messages in memory, so `dispatch` and `get` stop at a
//! paged-out head until it is read back. A paged message stays in its
//! priority's level. One that expires or overflows while paged, in a queue
//! with a dead-letter exchange, waits (`WaitingLetter`) until the shard
//! has read it back, and the dead letters after it wait behind it, so they
//! leave in order. An unacked logged message past `UNACKED_LOGGED_MAX`
//! is held by its record alone (`hold`); unacked messages in memory may
//! be paged out like ready ones; a paged one comes back paged if it is
//! requeued.

mod consumer;
pub mod dead_letter;
mod level;
pub(crate) mod paging;
mod ready;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use ahash::RandomState;
use hashbrown::HashMap;

pub use consumer::{ConsumerKey, ConsumerSpec};
pub use settings::{Overflow, QueueType, Settings};

use crate::ids::{ChannelId, ConnectionId, QueueId};
use crate::message::Message;
use crate::protocol::error::AmqpError;
use crate::protocol::types::ShortStr;
use crate::store::log::Location;
use crate::store::recovery::RecoveredMessage;
use consumer::{ConsumerRef, Consumers};
use paging::WaitingLetter;
pub(crate) use ready::{Body, Page};
use ready::{Ready, ReadyQueue, NEVER};

/// The shard's monotonic clock in milliseconds, read only when needed.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// A fixed instant: for tests, and for callers that already read the clock.
impl Clock for u64 {
    fn now_ms(&self) -> u64 {
        *self
    }
}

/// Why a message is dead-lettered, as x-death's `reason` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeathReason {
    Rejected,
    Expired,
    Maxlen,
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message on its way to the queue's dead-letter exchange.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub message: Message,
    pub reason: DeathReason,
}

/// What `publish` did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Enqueued under this seq (it may have pushed older ones out).
    Accepted { seq: u64 },
    /// Refused by x-overflow reject-publish(-dlx): a confirming publisher
    /// gets basic.nack.
    Rejected,
}

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
pub(crate) struct ConsumerRemoved {
    /// At least one consumer was removed.
    pub(crate) existed: bool,
    /// The queue is auto-delete, has had a consumer, and now has none: the
    /// caller deletes it.
    pub(crate) auto_delete_now: bool,
}

/// How a held message is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Back to its original position, marked redelivered.
    Requeue,
    /// Rejected without requeue: dead-lettered (`rejected`) or dropped.
    Discard,
}

/// Memory that a queue's unacked messages which are also in the log may
/// hold: past it, a delivered logged message keeps only its place in the
/// log and is read back if it is requeued or dead-lettered. Without it a
/// consumer with no prefetch limit that acks late pulled a whole paged
/// backlog into memory (RabbitMQ pages such pending acks out too). The
/// same size as what a queue's ready logged messages may hold
/// (`shard::paging`).
const UNACKED_LOGGED_MAX: u64 = 4 << 20;

/// A message delivered with ack required, waiting for ack, reject or requeue.
#[derive(Debug)]
struct Unacked {
    /// In memory (`Resident`, or `Logged` within `UNACKED_LOGGED_MAX`), or
    /// on disk only (`Paged`, at its enqueue record).
    body: Body,
    /// The channel that received it; closing it requeues the message.
    holder: ChannelId,
    /// The consumer whose prefetch it counts against; None for basic.get.
    consumer: Option<ConsumerRef>,
    /// Kept for a requeue: expiry does not restart.
    expires_at_ms: u64,
    returns: u32,
}

#[derive(Debug)]
pub struct Queue {
    id: QueueId,
    name: ShortStr,
    vhost: ShortStr,
    auto_delete: bool,
    /// Auto-delete fires only once a queue has had a consumer.
    has_had_consumer: bool,
    next_seq: u64,
    settings: Settings,
    ready: ReadyQueue,
    unacked: HashMap<u64, Unacked, RandomState>,
    /// Memory held by the unacked messages in memory (`Body::held_bytes`),
    /// and the part of it held by those also in the log.
    unacked_resident: u64,
    unacked_logged: u64,
    consumers: Consumers,
    /// Reused when a channel closes to collect the seqs it held.
    scratch_seqs: Vec<u64>,
    /// Messages for the dead-letter exchange, until the shard drains them;
    /// the capacity is kept, so a steady trickle allocates nothing.
    dead_letters: Vec<DeadLetter>,
    /// When the queue was last used (x-expires): declared, consumed, got
    /// from, or left by its last consumer.
    last_used_ms: u64,
    /// The deadline last reported by `deadline_change`.
    reported_deadline: Option<u64>,
    /// Lifetime counts the management API turns into rates.
    totals: MessageTotals,
    /// Persistent messages are logged to disk (a durable queue).
    durable: bool,
    /// Seqs of logged messages that left since the shard last looked.
    gone: Vec<u64>,
    /// Page records no longer needed since the shard last looked.
    unpaged: Vec<Location>,
    /// Dead letters waiting for a paged-out message to be read back, in
    /// order (`paging`); empty or headed by a paged one.
    waiting_letters: VecDeque<WaitingLetter>,
    /// The resident bytes last reported by `resident_change`.
    reported_resident: u64,
}

/// A message taken off the head of the ready queue, in memory.
struct Taken {
    seq: u64,
    message: Message,
    /// Its enqueue record, if it is logged.
    logged_at: Option<Location>,
    redelivered: bool,
    expires_at_ms: u64,
    returns: u32,
}

/// What a queue (or a channel) has done since it was created: RabbitMQ's
/// `message_stats` counters (publish, deliver_get, ack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageTotals {
    pub published: u64,
    /// Deliveries to consumers and basic.gets, redeliveries included.
    pub delivered: u64,
    pub acked: u64,
}

impl std::ops::AddAssign for MessageTotals {
    fn add_assign(&mut self, other: MessageTotals) {
        self.published += other.published;
        self.delivered += other.delivered;
        self.acked += other.acked;
    }
}

impl Queue {
    pub fn new(
        id: QueueId,
        name: ShortStr,
        vhost: ShortStr,
        auto_delete: bool,
        settings: Settings,
    ) -> Queue {
        Queue {
            id,
            name,
            vhost,
            auto_delete,
            has_had_consumer: false,
            next_seq: 1,
            ready: ReadyQueue::new(settings.max_priority),
            unacked: HashMap::default(),
            unacked_resident: 0,
            unacked_logged: 0,
            consumers: Consumers::new(settings.single_active_consumer),
            scratch_seqs: Vec::new(),
            dead_letters: Vec::new(),
            last_used_ms: 0,
            reported_deadline: None,
            settings,
            totals: MessageTotals::default(),
            durable: false,
            gone: Vec::new(),
            unpaged: Vec::new(),
            waiting_letters: VecDeque::new(),
            reported_resident: 0,
        }
    }

    /// The queue's persistent messages are logged from now on.
    pub(crate) fn set_durable(&mut self) {
        self.durable = true;
    }

    /// Whether `message` is on disk while in this queue: a persistent one
    /// in a durable queue; every one in a durable quorum queue, as
    /// RabbitMQ's quorum queues keep every message.
    pub(crate) fn is_logged(&self, message: &Message) -> bool {
        self.logs(message.persistent)
    }

    fn logs(&self, persistent: bool) -> bool {
        self.durable && (persistent || self.settings.queue_type == QueueType::Quorum)
    }

    /// A recovered message, back under its seq and at its priority,
    /// marked redelivered (it may have been delivered before the restart),
    /// its content still on disk: read back ahead of delivery like any
    /// paged message. Seqs come in order.
    pub(crate) fn restore(&mut self, recovered: &RecoveredMessage, clock: &impl Clock) {
        let expires_at_ms = self.expiry_after(recovered.expiration_ms, clock);
        self.next_seq = self.next_seq.max(recovered.seq + 1);
        let ready = Ready {
            seq: recovered.seq,
            body: Body::Paged(Page {
                at: recovered.at,
                body_len: recovered.body_len,
                priority: recovered.priority,
                persistent: recovered.persistent,
                page_record: false,
            }),
            redelivered: true,
            expires_at_ms,
            returns: 0,
        };
        self.ready.push_back(ready);
    }

    /// The message just published under `seq` was logged at `at`.
    pub(crate) fn logged_at(&mut self, seq: u64, at: Location) {
        self.ready.set_logged(seq, at);
    }

    /// A message left the queue for good: a logged one is settled in the
    /// log, the page record of a paged-out one is no longer needed.
    fn gone(&mut self, seq: u64, body: &Body) {
        if self.logs(body.persistent()) {
            self.gone.push(seq);
        }
        self.unpaged.extend(body.page_record());
    }

    /// The seqs of logged messages that left since the last call, for the
    /// store; `out` sees them only when there are some.
    pub(crate) fn take_gone(&mut self, out: impl FnOnce(&[u64])) {
        if !self.gone.is_empty() {
            out(&self.gone);
            self.gone.clear();
        }
    }

    pub fn totals(&self) -> MessageTotals {
        MessageTotals {
            // Every publish takes the next seq; requeues keep theirs.
            published: self.next_seq - 1,
            ..self.totals
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes the settings a policy change made, as RabbitMQ's queues do:
    /// messages keep the expiry they were given, x-expires counts from now,
    /// and drop-head applies the length limits at once. The type, the
    /// priorities and single active consumer come from arguments only and
    /// stay.
    pub(crate) fn set_settings(&mut self, settings: Settings, clock: &impl Clock) {
        self.settings = Settings {
            queue_type: self.settings.queue_type,
            max_priority: self.settings.max_priority,
            single_active_consumer: self.settings.single_active_consumer,
            ..settings
        };
        self.touch(clock);
        self.drop_head_over_limit();
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

    /// Ready messages (queue.declare-ok message-count).
    /// queue.delete's conditions: 406 when `if_unused` and the queue has
    /// consumers, or `if_empty` and it holds ready messages (RabbitMQ's
    /// texts); otherwise the ready-message count delete-ok reports.
    pub(crate) fn check_delete(&self, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
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
    pub(crate) fn consumer_keys(&self) -> impl Iterator<Item = &ConsumerKey> {
        self.consumers.keys()
    }

    pub fn message_count(&self) -> u32 {
        count_u32(self.ready.len())
    }

    pub fn consumer_count(&self) -> u32 {
        count_u32(self.consumers.len())
    }

    /// Messages delivered with ack required and not yet settled.
    pub(crate) fn unacked_count(&self) -> u32 {
        count_u32(self.unacked.len())
    }

    /// Appends a message, applying x-max-length / x-overflow, and says
    /// whether it was accepted.
    pub fn publish(&mut self, message: Message, clock: &impl Clock) -> Published {
        if self.would_overflow(&message) {
            if self.settings.overflow == Overflow::RejectPublishDlx {
                self.dead_letter(message, DeathReason::Maxlen);
            }
            return Published::Rejected;
        }
        let expires_at_ms = self.expiry_of(&message, clock);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(Ready {
            seq,
            body: Body::Resident(message),
            redelivered: false,
            expires_at_ms,
            returns: 0,
        });
        self.drop_head_over_limit();
        Published::Accepted { seq }
    }

    /// reject-publish(-dlx): RabbitMQ refuses a message that would take
    /// the ready messages past a limit.
    fn would_overflow(&self, message: &Message) -> bool {
        let Settings {
            max_length,
            max_length_bytes,
            overflow,
            ..
        } = self.settings;
        overflow != Overflow::DropHead
            && (max_length.is_some_and(|max| self.ready.len() as u64 >= max)
                || max_length_bytes
                    .is_some_and(|max| self.ready.bytes() + message.body_size() as u64 > max))
    }

    /// drop-head: the oldest ready messages go (dead-lettered `maxlen`)
    /// until the queue is within its limits.
    fn drop_head_over_limit(&mut self) {
        let Settings {
            max_length,
            max_length_bytes,
            overflow,
            ..
        } = self.settings;
        if overflow != Overflow::DropHead {
            return;
        }
        while max_length.is_some_and(|max| self.ready.len() as u64 > max)
            || max_length_bytes.is_some_and(|max| self.ready.bytes() > max)
        {
            let Some(head) = self.ready.pop_front() else {
                break;
            };
            self.leave_dead(head.seq, head.body, DeathReason::Maxlen);
        }
    }

    /// The clock time a message expires: the smaller of the queue's TTL
    /// and the message's expiration, from now.
    fn expiry_of(&self, message: &Message, clock: &impl Clock) -> u64 {
        self.expiry_after(message.expiration_ms, clock)
    }

    /// The deadline of a message with the expiration property
    /// `expiration_ms`, from now.
    fn expiry_after(&self, expiration_ms: Option<u64>, clock: &impl Clock) -> u64 {
        let ttl_ms = match (self.settings.message_ttl_ms, expiration_ms) {
            (None, None) => return NEVER,
            (Some(queue), Some(own)) => queue.min(own),
            (Some(ttl), None) | (None, Some(ttl)) => ttl,
        };
        clock.now_ms().saturating_add(ttl_ms)
    }

    /// Drops (or dead-letters `expired`) the messages that have expired at
    /// the head of the queue. A message expires once the clock is past its
    /// deadline, so a TTL of 0 still reaches a consumer waiting right now.
    pub fn expire(&mut self, clock: &impl Clock) {
        if self.ready.next_expiry().is_none() {
            return;
        }
        let now_ms = clock.now_ms();
        while let Some(expired) = self.ready.pop_expired(now_ms.saturating_sub(1)) {
            self.leave_dead(expired.seq, expired.body, DeathReason::Expired);
        }
    }

    /// The queue was used (declared, consumed from, got from, or left by a
    /// consumer): x-expires counts from now.
    pub(crate) fn touch(&mut self, clock: &impl Clock) {
        if self.settings.expires_ms.is_some() {
            self.last_used_ms = clock.now_ms();
        }
    }

    /// x-expires: the queue has been unused for its whole expiry period.
    pub(crate) fn is_unused_too_long(&self, clock: &impl Clock) -> bool {
        self.unused_deadline()
            .is_some_and(|deadline| clock.now_ms() >= deadline)
    }

    fn unused_deadline(&self) -> Option<u64> {
        let expires_ms = self.settings.expires_ms?;
        (self.consumers.len() == 0).then(|| self.last_used_ms.saturating_add(expires_ms))
    }

    /// When the shard should next call `expire` or `is_unused_too_long`,
    /// if anything here can expire.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let message = self.ready.next_expiry().map(|at| at.saturating_add(1));
        match (message, self.unused_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `(old, new)` deadlines when the deadline changed since the last
    /// call, so the shard re-arms its timer only then.
    pub(crate) fn deadline_change(&mut self) -> Option<(Option<u64>, Option<u64>)> {
        let deadline = self.next_deadline();
        if deadline == self.reported_deadline {
            return None;
        }
        Some((
            std::mem::replace(&mut self.reported_deadline, deadline),
            deadline,
        ))
    }

    /// The shard's timer fired for the reported deadline and forgot it.
    pub(crate) fn deadline_fired(&mut self) {
        self.reported_deadline = None;
    }

    /// Hands the collected dead letters to `out` (the shard routes them),
    /// with the queue's vhost, name and settings.
    pub(crate) fn drain_dead_letters(
        &mut self,
        mut out: impl FnMut(&ShortStr, &ShortStr, &Settings, DeadLetter),
    ) {
        if self.dead_letters.is_empty() {
            return;
        }
        let mut letters = std::mem::take(&mut self.dead_letters);
        for letter in letters.drain(..) {
            out(&self.vhost, &self.name, &self.settings, letter);
        }
        self.dead_letters = letters;
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
    pub(crate) fn remove_consumer(&mut self, key: &ConsumerKey) -> ConsumerRemoved {
        let removed = usize::from(self.consumers.remove(key));
        self.consumers_removed(removed)
    }

    /// A channel closed: its consumers go and every message it held unacked
    /// (from a consumer or basic.get) is requeued.
    pub(crate) fn remove_channel(&mut self, channel: ChannelId) -> ConsumerRemoved {
        self.remove_holder(|holder| holder == channel)
    }

    /// A connection closed: as `remove_channel` for each of its channels.
    pub(crate) fn remove_connection(&mut self, conn: ConnectionId) -> ConsumerRemoved {
        self.remove_holder(|holder| holder.conn == conn)
    }

    /// Gives a consumer `credit` more deliveries; false if it is unknown
    /// (cancelled meanwhile), which the caller may ignore.
    pub fn add_credit(&mut self, key: &ConsumerKey, credit: u32) -> bool {
        self.consumers.add_credit(key, credit)
    }

    /// True when `dispatch` would deliver something.
    #[cfg(test)]
    pub(crate) fn can_dispatch(&self) -> bool {
        !self.ready.is_empty() && !self.ready.head_is_paged() && self.consumers.taker_count() > 0
    }

    /// Hands ready messages to consumers round-robin, resuming after the
    /// consumer served last, until no message is ready or no consumer can
    /// take one (prefetch full or no credit). Expired messages at the head
    /// are dropped on the way. Returns how many it delivered.
    pub fn dispatch(&mut self, clock: &impl Clock, out: &mut impl FnMut(Delivery)) -> usize {
        let mut delivered = 0;
        loop {
            self.expire(clock);
            // A paged-out head waits to be read back.
            if self.ready.is_empty() || self.ready.head_is_paged() {
                break;
            }
            let Some(charged) = self.consumers.charge_next() else {
                break;
            };
            let Some(ready) = self.take_head() else {
                break;
            };
            if charged.no_ack {
                self.gone_message(ready.seq, &ready.message);
            } else {
                self.hold(&ready, charged.key.channel, Some(charged.consumer));
            }
            let (seq, redelivered) = (ready.seq, ready.redelivered);
            out(Delivery {
                consumer: charged.key,
                seq,
                message: self.delivered_message(ready, false),
                redelivered,
                no_ack: charged.no_ack,
            });
            delivered += 1;
        }
        self.totals.delivered += delivered as u64;
        delivered
    }

    /// The head message, if it is in memory.
    fn take_head(&mut self) -> Option<Taken> {
        if self.ready.head_is_paged() {
            return None;
        }
        let ready = self.ready.pop_front()?;
        let (message, logged_at) = match ready.body {
            Body::Resident(message) => (message, None),
            Body::Logged(message, at) => (message, Some(at)),
            Body::Paged(_) => return None,
        };
        Some(Taken {
            seq: ready.seq,
            message,
            logged_at,
            redelivered: ready.redelivered,
            expires_at_ms: ready.expires_at_ms,
            returns: ready.returns,
        })
    }

    /// Keeps a delivered message until it is settled: a logged one only by
    /// its place in the log once the unacked ones in memory hold
    /// `UNACKED_LOGGED_MAX`.
    fn hold(&mut self, ready: &Taken, holder: ChannelId, consumer: Option<ConsumerRef>) {
        let body = match ready.logged_at {
            None => Body::Resident(ready.message.clone()),
            Some(at) if self.unacked_logged < UNACKED_LOGGED_MAX => {
                Body::Logged(ready.message.clone(), at)
            }
            Some(at) => Body::Paged(Page::of(&ready.message, at, false)),
        };
        self.count_unacked(&body, 1);
        self.unacked.insert(
            ready.seq,
            Unacked {
                body,
                holder,
                consumer,
                expires_at_ms: ready.expires_at_ms,
                returns: ready.returns,
            },
        );
    }

    /// The message as its receiver sees it: a quorum queue adds the
    /// `x-delivery-count` header (the times it came back), as RabbitMQ
    /// 3.10 does: always for basic.get, for a consumer once it came back.
    /// Takes the ready entry, so the common case moves its message instead
    /// of cloning it (a clone and a drop are two atomic operations per body).
    fn delivered_message(&self, ready: Taken, by_get: bool) -> Message {
        if self.settings.queue_type == QueueType::Quorum && (by_get || ready.returns > 0) {
            return dead_letter::with_delivery_count(&ready.message, ready.returns);
        }
        ready.message
    }

    /// basic.get: takes the head message. With ack required it waits in
    /// unacked, held by the channel `holder`, counting against no
    /// consumer's prefetch.
    pub fn get(
        &mut self,
        holder: ChannelId,
        no_ack: bool,
        clock: &impl Clock,
    ) -> Option<GetResult> {
        self.expire(clock);
        let ready = self.take_head()?;
        self.totals.delivered += 1;
        if no_ack {
            self.gone_message(ready.seq, &ready.message);
        } else {
            self.hold(&ready, holder, None);
        }
        self.expire(clock);
        let (seq, redelivered) = (ready.seq, ready.redelivered);
        Some(GetResult {
            seq,
            message: self.delivered_message(ready, true),
            redelivered,
            message_count: self.message_count(),
        })
    }

    /// Settles one delivered message; false if the queue holds no unacked
    /// message by that seq. Callers go through `settle`, which checks the
    /// holder first.
    fn ack(&mut self, seq: u64) -> bool {
        match self.take_unacked(seq) {
            Some(unacked) => {
                self.release(&unacked);
                self.gone(seq, &unacked.body);
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
    pub fn settle(&mut self, holder: ChannelId, seqs: &[u64], settlement: Settlement) -> usize {
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
            let Some(unacked) = self.take_unacked(seq) else {
                continue;
            };
            known += 1;
            self.release(&unacked);
            if requeue {
                self.requeue(seq, unacked);
            } else {
                self.leave_dead(seq, unacked.body, DeathReason::Rejected);
            }
        }
        known
    }

    /// queue.purge: drops the ready messages, not the unacked ones; returns
    /// how many it dropped. Purged messages are not dead-lettered.
    pub fn purge(&mut self) -> u32 {
        if self.durable || self.ready.paged_count() > 0 {
            let (mut gone, mut unpaged) = (
                std::mem::take(&mut self.gone),
                std::mem::take(&mut self.unpaged),
            );
            self.ready.for_each(|seq, body| {
                if self.logs(body.persistent()) {
                    gone.push(seq);
                }
                unpaged.extend(body.page_record());
            });
            (self.gone, self.unpaged) = (gone, unpaged);
        }
        count_u32(self.ready.clear())
    }

    fn remove_holder(&mut self, held_by: impl Fn(ChannelId) -> bool) -> ConsumerRemoved {
        let removed = self.consumers.remove_where(|key| held_by(key.channel));
        let mut seqs = std::mem::take(&mut self.scratch_seqs);
        seqs.extend(
            self.unacked
                .iter()
                .filter(|(_, unacked)| held_by(unacked.holder))
                .map(|(&seq, _)| seq),
        );
        for &seq in &seqs {
            if let Some(unacked) = self.take_unacked(seq) {
                self.release(&unacked);
                self.requeue(seq, unacked);
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

    /// Takes message `seq` out of the unacked ones.
    fn take_unacked(&mut self, seq: u64) -> Option<Unacked> {
        let unacked = self.unacked.remove(&seq)?;
        self.count_unacked(&unacked.body, -1);
        Some(unacked)
    }

    /// Adds (`sign` 1) or takes away (-1) an unacked body from the memory
    /// counts.
    fn count_unacked(&mut self, body: &Body, sign: i64) {
        let held = sign * body.held_bytes() as i64;
        self.unacked_resident = self.unacked_resident.wrapping_add_signed(held);
        if let Body::Logged(..) = body {
            self.unacked_logged = self.unacked_logged.wrapping_add_signed(held);
        }
    }

    /// Frees the prefetch slot an unacked message held, if its consumer is
    /// still here.
    fn release(&mut self, unacked: &Unacked) {
        if let Some(consumer) = unacked.consumer {
            self.consumers.release(consumer);
        }
    }

    /// Puts a message back where its seq belongs among the ready ones,
    /// unless it has been returned more often than x-delivery-limit allows.
    fn requeue(&mut self, seq: u64, unacked: Unacked) {
        let returns = unacked.returns.saturating_add(1);
        if self
            .settings
            .delivery_limit
            .is_some_and(|limit| u64::from(returns) > limit)
        {
            self.leave_dead(seq, unacked.body, DeathReason::DeliveryLimit);
            return;
        }
        self.ready.requeue(Ready {
            seq,
            body: unacked.body,
            redelivered: true,
            expires_at_ms: unacked.expires_at_ms,
            returns,
        });
    }

    /// A message in memory left the queue for good.
    fn gone_message(&mut self, seq: u64, message: &Message) {
        if self.is_logged(message) {
            self.gone.push(seq);
        }
    }

    /// A ready message leaves unacknowledged (expiry, overflow). One that
    /// is paged out, with a dead-letter exchange to go to, waits to be
    /// read back, and its record stays live until then.
    fn leave_dead(&mut self, seq: u64, body: Body, reason: DeathReason) {
        match body {
            Body::Paged(page) if self.settings.dead_letter_exchange.is_some() => {
                self.waiting_letters
                    .push_back(WaitingLetter::Paged { seq, page, reason });
            }
            body => {
                self.gone(seq, &body);
                if let Some(message) = body.into_message() {
                    self.dead_letter(message, reason);
                }
            }
        }
    }

    /// A message leaves the queue unacknowledged: it goes to the
    /// dead-letter exchange when the queue has one, else it is dropped.
    /// It waits behind a paged one that is being read back.
    fn dead_letter(&mut self, message: Message, reason: DeathReason) {
        if self.settings.dead_letter_exchange.is_none() {
            return;
        }
        let letter = DeadLetter { message, reason };
        match self.waiting_letters.is_empty() {
            true => self.dead_letters.push(letter),
            false => self.waiting_letters.push_back(WaitingLetter::Read(letter)),
        }
    }
}

/// Counts go on the wire as AMQP longs; a queue never holds 2^32 messages in
/// practice, and saturating is the honest answer if it did.
fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}
