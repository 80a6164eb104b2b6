//! Direct reply-to, RabbitMQ's way for an RPC client to get replies without
//! declaring a queue: it consumes the pseudo-queue `amq.rabbitmq.reply-to`
//! (no-ack), publishes requests with `reply_to` set to that name, and the
//! broker rewrites it to a name that routes back to the consumer.
//!
//! Here the pseudo-queue is a real one: an exclusive, auto-delete,
//! server-named queue `amq.rabbitmq.reply-to.<random>` owned by the
//! connection and living on its shard, so a reply published to the default
//! exchange with that routing key takes the ordinary path and the queue
//! goes with its consumer or connection.

use bytes::{Bytes, BytesMut};

use super::methods::generated_name;
use super::requests::{Awaiting, MetaOk};
use super::{Connection, Next};
use crate::catalog::MetaOp;
use crate::protocol::method::BasicConsume;
use crate::protocol::properties::BasicProperties;
use crate::protocol::{AmqpError, FieldTable, ShortStr};

pub(crate) const PSEUDO_QUEUE: &str = "amq.rabbitmq.reply-to";

impl Connection {
    /// basic.consume on the pseudo-queue: declare this channel's reply
    /// queue, then consume it (see `reply_queue_declared`).
    pub(super) fn consume_direct_reply(
        &self,
        ch: u16,
        consume: BasicConsume,
    ) -> Result<Next, AmqpError> {
        if !consume.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let name = generated_name(&format!("{PSEUDO_QUEUE}."));
        self.state.borrow_mut().declared_exclusive = true;
        let op = MetaOp::QueueDeclare {
            vhost: self.vhost(),
            name,
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: FieldTable::new(),
            owner: self.id,
            owner_shard: self.shard.id,
            server_named: true,
        };
        let awaiting = Awaiting::Meta {
            ok: MetaOk::DirectReply(Box::new(consume)),
            class_method: (BasicConsume::CLASS_ID, BasicConsume::METHOD_ID),
        };
        self.request(ch, op, awaiting)
    }

    /// The reply queue exists: remember it for publishes and consume it
    /// with the client's consume arguments.
    pub(super) fn reply_queue_declared(
        &self,
        ch: u16,
        queue: ShortStr,
        mut consume: BasicConsume,
    ) -> Result<(), AmqpError> {
        self.with_channel(ch, |channel| channel.reply_queue = Some(queue.clone()))?;
        consume.queue = queue;
        self.consume(ch, consume).map(drop)
    }

    /// A publish whose reply_to names the pseudo-queue: the properties with
    /// reply_to naming this channel's reply queue instead (re-encoded; the
    /// only case where properties are not passed through as they came).
    pub(super) fn direct_reply_properties(&self, ch: u16, raw: &Bytes) -> Result<Bytes, AmqpError> {
        let queue = self
            .with_channel(ch, |channel| channel.reply_queue.clone())?
            .ok_or_else(|| AmqpError::precondition_failed("fast reply consumer does not exist"))?;
        let mut properties = BasicProperties::decode(&mut raw.clone())?;
        properties.reply_to = Some(queue);
        let mut encoded = BytesMut::new();
        properties.encode(&mut encoded);
        Ok(encoded.freeze())
    }
}
