//! Where the messages of x-delayed-message exchanges wait: on the shard
//! whose connection published them, in memory, until their delay is over;
//! then they are routed on this shard's catalog replica, by the exchange's
//! `x-delayed-type`, and each target gets a `ShardMsg::DeadLetter` (a
//! publish that owes no connection credit), as a dead letter does.
//!
//! A waiting message costs its bytes and one entry in the shard's timer
//! (`shard::timer`); nothing runs for it until it comes due, so delayed
//! messages never hold up a shard. A mandatory one with no route now is
//! returned at publish, as the plugin does, and an exchange deleted
//! meanwhile drops the message.
//!
//! A persistent message in a durable exchange survives a restart, as the
//! plugin keeps its messages on disk: it is logged in this shard's message
//! log (a delay record, live until an undelay record says it left), the
//! publisher's confirm waits for that record's fdatasync, and recovery
//! gives it back to a shard, which arms the timer for what is left of its
//! delay. Any other is answered at once and held in memory only.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::timer::Due;
use super::{ConfirmAnswer, ConfirmTag, Shard, ShardMsg};
use crate::ids::ChannelId;
use crate::message::{Message, MessageContent};
use crate::protocol::{FieldTable, ShortStr};
use crate::queue::Clock;
use crate::routing::{delayed, MessageFields};
use crate::store::log::Location;
use crate::store::record::{Delayed, QueueName};

/// A published message waiting for its delay.
#[derive(Debug)]
pub(crate) struct DelayedMessage {
    pub vhost: ShortStr,
    /// The message's routing keys: its own, then CC and BCC.
    pub routing_keys: Vec<ShortStr>,
    pub message: Message,
    pub(crate) delay_ms: u64,
    /// Its exchange is durable (a persistent message is then logged).
    pub(crate) durable: bool,
}

/// A delayed message and, when it is logged, where its delay record is.
#[derive(Debug)]
struct Waiting {
    delayed: DelayedMessage,
    logged: Option<Location>,
}

/// The waiting messages, by id.
#[derive(Debug, Default)]
pub(super) struct DelayedMessages {
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
}

impl DelayedMessages {
    /// Ids of this run's messages on `shard`: unique across runs (a
    /// recovered message keeps its id), as undelay records name them.
    pub(super) fn start_ids(&mut self, epoch: u64, shard: usize) {
        self.next_id = (epoch << 40) | ((shard as u64 & 0xff) << 32);
    }

    /// Whether the delayed message `id` still waits, logged at `at`.
    pub(super) fn holds(&self, id: u64, at: Location) -> bool {
        self.waiting
            .get(&id)
            .is_some_and(|waiting| waiting.logged == Some(at))
    }

    /// Its delay record was copied from `from` to `to` (compaction).
    pub(super) fn relocate(&mut self, id: u64, from: Location, to: Location) {
        if let Some(waiting) = self.waiting.get_mut(&id) {
            if waiting.logged == Some(from) {
                waiting.logged = Some(to);
            }
        }
    }
}

impl Shard {
    /// Holds a message until its delay is over. A persistent one in a
    /// durable exchange is logged, and the publisher (on this shard)
    /// confirmed once it is on disk: true when this shard answers the
    /// publish that way.
    pub(crate) fn delay_message(
        &self,
        delayed: DelayedMessage,
        publisher: ChannelId,
        confirm: ConfirmTag,
    ) -> bool {
        let id = {
            let mut messages = self.delayed.borrow_mut();
            messages.next_id += 1;
            messages.next_id
        };
        let due_ms = unix_ms().saturating_add(delayed.delay_ms);
        if !(delayed.durable && delayed.message.persistent) {
            self.wait(id, delayed, None, due_ms);
            return false;
        }
        let record = delay_record(&delayed, id, due_ms);
        let appended = self.store().store.delay(&record);
        let answer = ConfirmAnswer {
            channel: publisher.number,
            confirm,
            stored: appended.is_some(),
        };
        self.confirm(publisher.conn, answer, appended.map(|a| a.lsn));
        if let Some(appended) = appended {
            self.store().commit_now();
            self.wait(id, delayed, Some(appended.at), due_ms);
        }
        true
    }

    /// Arms the timer for the delayed messages recovery gave this shard,
    /// for what is left of their delays.
    pub(super) fn restore_delayed(&self) {
        let shard_store = self.store();
        self.delayed
            .borrow_mut()
            .start_ids(self.shared.store.epoch(), self.id);
        for (record, at) in shard_store.store.take_recovered_delays() {
            let delayed = DelayedMessage {
                vhost: record.exchange.vhost.clone(),
                routing_keys: record.routing_keys,
                message: record.message,
                delay_ms: record.delay_ms,
                durable: true,
            };
            self.wait(record.id, delayed, Some(at), record.due_ms);
        }
    }

    fn wait(&self, id: u64, delayed: DelayedMessage, logged: Option<Location>, due_ms: u64) {
        let left_ms = due_ms.saturating_sub(unix_ms());
        self.delayed
            .borrow_mut()
            .waiting
            .insert(id, Waiting { delayed, logged });
        self.set_deadline(self.now_ms().saturating_add(left_ms), Due::Delayed(id));
    }

    /// A delayed message came due: route it as its exchange's type would.
    pub(super) fn route_delayed(&self, id: u64) {
        let Some(Waiting { delayed, logged }) = self.delayed.borrow_mut().waiting.remove(&id)
        else {
            return;
        };
        if let Some(at) = logged {
            let exchange = QueueName {
                vhost: delayed.vhost.clone(),
                name: delayed.message.exchange.clone(),
            };
            self.store().store.undelay(&exchange, id, at);
            // Synced at once, not lazily: the message is routed now, maybe
            // to another shard's log, and a crash before this record is on
            // disk routes it again after the restart.
            self.store().commit_now();
        }
        let Ok(message) = routed_message(&delayed) else {
            return;
        };
        let catalog = self.catalog.borrow();
        let (vhost, exchange) = (delayed.vhost.as_bytes(), message.exchange.as_bytes());
        let (Some(_), Some(table)) = (catalog.exchange(vhost, exchange), catalog.routing(vhost))
        else {
            return;
        };
        let headers = table
            .needs_headers(exchange)
            .then(|| decode_headers(&message.properties))
            .flatten();
        let fields = MessageFields {
            headers: headers.as_ref(),
            properties: Some(&message.properties),
            first_routing_key: Some(&message.routing_key),
        };
        let mut routes = Vec::new();
        for key in &delayed.routing_keys {
            table.route(exchange, key.as_bytes(), fields, &mut routes);
        }
        routes.sort_unstable();
        routes.dedup();
        for queue in routes {
            let Some(def) = catalog.queue_by_id(queue) else {
                continue;
            };
            let message = message.clone();
            self.send(def.shard_id, ShardMsg::DeadLetter { queue, message });
        }
    }
}

/// The delay record of `delayed`, under `id`, due at `due_ms`.
fn delay_record(delayed: &DelayedMessage, id: u64, due_ms: u64) -> Delayed {
    Delayed {
        exchange: QueueName {
            vhost: delayed.vhost.clone(),
            name: delayed.message.exchange.clone(),
        },
        id,
        due_ms,
        delay_ms: delayed.delay_ms,
        routing_keys: delayed.routing_keys.clone(),
        message: delayed.message.clone(),
    }
}

/// Wall-clock time in ms since the Unix epoch: a due time that outlives
/// the process.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The message as it is routed: `x-delay` says how long it waited.
fn routed_message(delayed: &DelayedMessage) -> Result<Message, crate::protocol::DecodeError> {
    let original = &delayed.message;
    let properties = delayed::routed_properties(&original.properties, delayed.delay_ms)?;
    Ok(Message::new(MessageContent {
        expiration_ms: original.expiration_ms,
        priority: original.priority,
        persistent: original.persistent,
        exchange: original.exchange.clone(),
        routing_key: original.routing_key.clone(),
        properties,
        body: original.body.clone(),
    }))
}

fn decode_headers(properties: &bytes::Bytes) -> Option<FieldTable> {
    let props =
        crate::protocol::properties::BasicProperties::decode(&mut properties.clone()).ok()?;
    props.headers
}
