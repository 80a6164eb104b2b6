//! Where the messages of x-delayed-message exchanges wait: on the shard
//! whose connection published them, in memory, until their delay is over;
//! then they are routed on this shard's catalog replica, by the exchange's
//! `x-delayed-type`, and each target gets a `ShardMsg::DeadLetter` (a
//! publish that owes no connection credit), as a dead letter does.
//!
//! A waiting message costs its bytes and one entry in the shard's timer
//! (`shard::timer`); nothing runs for it until it comes due, so delayed
//! messages never hold up a shard. The publisher was answered at publish
//! (confirmed, or returned when mandatory, as the plugin does), and an
//! exchange deleted meanwhile drops the message. They do not survive a
//! restart (the plugin keeps them on disk).

use std::collections::HashMap;

use super::timer::Due;
use super::{Shard, ShardMsg};
use crate::message::{Message, MessageContent};
use crate::protocol::{FieldTable, ShortStr};
use crate::queue::Clock;
use crate::routing::{delayed, MessageFields};

/// A published message waiting for its delay.
#[derive(Debug)]
pub(crate) struct DelayedMessage {
    pub vhost: ShortStr,
    /// The message's routing keys: its own, then CC and BCC.
    pub routing_keys: Vec<ShortStr>,
    pub message: Message,
    pub(crate) delay_ms: u64,
}

/// The waiting messages, by number.
#[derive(Debug, Default)]
pub(super) struct DelayedMessages {
    waiting: HashMap<u64, DelayedMessage>,
    next_number: u64,
}

impl Shard {
    /// Holds a message until its delay is over.
    pub(crate) fn delay_message(&self, delayed: DelayedMessage) {
        let at = self.now_ms().saturating_add(delayed.delay_ms);
        let number = {
            let mut messages = self.delayed.borrow_mut();
            let number = messages.next_number;
            messages.next_number += 1;
            messages.waiting.insert(number, delayed);
            number
        };
        self.set_deadline(at, Due::Delayed(number));
    }

    /// A delayed message came due: route it as its exchange's type would.
    pub(super) fn route_delayed(&self, number: u64) {
        let Some(delayed) = self.delayed.borrow_mut().waiting.remove(&number) else {
            return;
        };
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
