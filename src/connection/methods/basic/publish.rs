//! basic.publish: a complete message is checked, routed on this shard's
//! replica of the routing table and handed to each queue's owning shard.

use std::rc::Rc;

use bytes::Bytes;

use crate::catalog::access::Access;
use crate::connection::channel::Publish;
use crate::connection::content::content_cost;
use crate::connection::{direct_reply, Connection, Next};
use crate::ids::{QueueId, ShardId};
use crate::message::{parse_expiration, Message, MessageContent};
use crate::protocol::method::*;
use crate::protocol::properties::{scan_properties, PropertySummary};
use crate::protocol::{reply_code, AmqpError, FieldTable, ShortStr};
use crate::routing::sender_selected::{self, SenderSelected};
use crate::routing::{delayed, MessageFields, RoutingTable, Slot};
use crate::shard::delayed::DelayedMessage;
use crate::shard::{ConfirmTag, ShardMsg};

impl Connection {
    /// A complete message: kept by a transaction until commit, or routed
    /// now and counted against the publisher's credit.
    pub(in crate::connection) fn publish(
        self: &Rc<Self>,
        ch: u16,
        publish: Publish,
    ) -> Result<Next, AmqpError> {
        self.check_access(Access::Write, "exchange", &publish.method.exchange)?;
        let body_size = publish.header.body_size;
        let Some(publish) = self.with_channel(ch, |channel| channel.defer_publish(publish))? else {
            return Ok(Next::Continue);
        };
        self.release_content(ch, content_cost(body_size));
        let tag = self.with_channel(ch, |channel| channel.next_publish_tag(false))?;
        let routed = self.route(ch, publish, tag)?;
        self.with_channel(ch, |channel| channel.routed(tag, routed.shards))?;
        Ok(Next::Published {
            congested: routed.congested,
        })
    }

    /// Routes and enqueues; `confirm` numbers the publish for its shards'
    /// answers (`ConfirmTag::NONE`: none wanted).
    pub(in crate::connection::methods) fn route(
        &self,
        ch: u16,
        publish: Publish,
        confirm: ConfirmTag,
    ) -> Result<Routed, AmqpError> {
        let Publish {
            method: publish,
            header,
            body,
        } = publish;
        let vhost = self.vhost();
        let catalog = self.shard.catalog.borrow();
        let (delayed, durable) = {
            let exchange = catalog.exchange_accepts_publish(&vhost, &publish.exchange)?;
            (exchange.delayed, exchange.durable)
        };
        let summary = scan_properties(&header.properties)?;
        self.check_user_id(summary.user_id.as_ref())?;
        let expiration_ms = summary
            .expiration
            .as_ref()
            .map(parse_expiration)
            .transpose()?;
        let selected = match &summary.headers {
            Some(raw) => sender_selected::parse(raw)?,
            None => None,
        };
        let properties =
            self.stored_properties(ch, &summary, header.properties, selected.as_ref())?;
        let table = catalog
            .routing(&vhost)
            .ok_or_else(|| AmqpError::not_found(format!("no vhost '{vhost}'")))?;
        // An x-delayed-message exchange routes a delayed message nowhere
        // now (a mandatory one is returned, as the plugin does).
        let delay_ms = match &summary.headers {
            Some(raw) if delayed => delayed::delay_ms(raw),
            _ => None,
        };
        let headers = match summary
            .headers
            .filter(|_| table.needs_headers(&publish.exchange))
        {
            Some(raw) => Some(FieldTable::decode(&mut raw.clone())?),
            None => None,
        };
        let mut routes = self.routes.borrow_mut();
        routes.clear();
        let slot = match delay_ms {
            None => {
                let fields = MessageFields {
                    headers: headers.as_ref(),
                    properties: Some(&properties),
                    first_routing_key: Some(&publish.routing_key),
                };
                route_all(table, &publish, fields, selected.as_ref(), &mut routes)
            }
            Some(_) => table.exchange_slot(&publish.exchange),
        };
        table.count_publish(slot, !routes.is_empty());
        if routes.is_empty() && !publish.mandatory && delay_ms.is_none() {
            // Unroutable and not mandatory: dropped, so no handle is made.
            return Ok(Routed::default());
        }
        let message = Message::new(MessageContent {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            properties,
            body,
            priority: summary.priority.unwrap_or(0),
            persistent: summary.delivery_mode == Some(2),
            expiration_ms,
        });
        if routes.is_empty() && publish.mandatory {
            let returned = BasicReturn {
                reply_code: reply_code::NO_ROUTE,
                reply_text: ShortStr::from_static("NO_ROUTE"),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            };
            self.out
                .content(ch, &Method::BasicReturn(returned), &message);
        }
        if let Some(delay_ms) = delay_ms {
            let mut message = message;
            // It may wait long: it must not keep the read buffer alive.
            message.compact();
            let routing_keys = routing_keys(&message.routing_key, selected.as_ref());
            let delayed = DelayedMessage {
                vhost,
                routing_keys,
                message,
                delay_ms,
                durable,
            };
            // No queue has it yet: this shard answers a confirm, once it
            // is on disk when it is logged, else at once.
            let answers = self
                .shard
                .delay_message(delayed, self.channel_id(ch), confirm);
            return Ok(Routed {
                shards: u32::from(answers),
                congested: None,
            });
        }
        let mut routed = Routed::default();
        let publisher = self.channel_id(ch);
        let bytes = message.body_size() as u64;
        for &queue in routes.iter() {
            let Some(owner) = catalog.queue_by_id(queue).map(|def| def.shard_id) else {
                continue;
            };
            self.shard.send(
                owner,
                ShardMsg::Publish {
                    queue,
                    message: message.clone(),
                    publisher,
                    confirm,
                },
            );
            routed.shards += 1;
            self.flow.sent(owner, bytes);
            if self.shard.mesh.is_congested(owner) {
                routed.congested = Some(owner);
            }
        }
        Ok(routed)
    }

    /// The properties as queues keep them: a direct reply-to address
    /// rewritten to its queue, and BCC removed.
    fn stored_properties(
        &self,
        ch: u16,
        summary: &PropertySummary,
        properties: Bytes,
        selected: Option<&SenderSelected>,
    ) -> Result<Bytes, AmqpError> {
        let properties = match &summary.reply_to {
            Some(reply_to) if reply_to.as_bytes() == direct_reply::PSEUDO_QUEUE.as_bytes() => {
                self.direct_reply_properties(ch, &properties)?
            }
            _ => properties,
        };
        match selected {
            Some(selected) if selected.has_bcc => sender_selected::strip_bcc(&properties),
            _ => Ok(properties),
        }
    }

    /// RabbitMQ's rule: a message may not claim to be from another user.
    fn check_user_id(&self, user_id: Option<&ShortStr>) -> Result<(), AmqpError> {
        let state = self.state.borrow();
        match user_id {
            Some(claimed) if *claimed != state.user => {
                Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{claimed}' but authenticated user was '{}'",
                    state.user
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Where a publish went.
#[derive(Default)]
pub(in crate::connection::methods) struct Routed {
    /// Queues it was sent to (each answers a confirming channel once).
    pub(in crate::connection::methods) shards: u32,
    /// An owner shard whose ring is congested: the reader waits for it
    /// before reading more.
    pub(in crate::connection::methods) congested: Option<ShardId>,
}

/// A message's routing keys: its own, then the CC and BCC ones.
fn routing_keys(routing_key: &ShortStr, selected: Option<&SenderSelected>) -> Vec<ShortStr> {
    let more = selected
        .map(|s| s.routing_keys.as_slice())
        .unwrap_or_default();
    std::iter::once(routing_key).chain(more).cloned().collect()
}

/// Routes a publish by its routing key and, for sender-selected
/// distribution, its CC and BCC keys; a queue reached by several keys gets
/// one copy.
fn route_all(
    table: &RoutingTable,
    publish: &BasicPublish,
    fields: MessageFields<'_>,
    selected: Option<&SenderSelected>,
    routes: &mut Vec<QueueId>,
) -> Option<Slot> {
    let slot = table.route(&publish.exchange, &publish.routing_key, fields, routes);
    let Some(selected) = selected else {
        return slot;
    };
    for key in &selected.routing_keys {
        table.route(&publish.exchange, key, fields, routes);
    }
    routes.sort_unstable();
    routes.dedup();
    slot
}
