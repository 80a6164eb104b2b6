//! basic.consume and basic.cancel, and the deliveries that come back from
//! the queues' shards for this connection's consumers.

use crate::connection::direct_reply;
use crate::connection::requests::Awaiting;
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::{AmqpError, FieldTable, FieldValue, ShortStr};
use crate::queue::{ConsumerKey, ConsumerSpec, Settlement};
use crate::shard::{Deliver, QueueRequest};

use super::super::generated_name;
use crate::ids::QueueId;

impl Connection {
    pub(in crate::connection) fn consume(
        &self,
        ch: u16,
        m: BasicConsume,
    ) -> Result<Next, AmqpError> {
        if m.queue.as_bytes() == direct_reply::PSEUDO_QUEUE.as_bytes() {
            return self.consume_direct_reply(ch, m);
        }
        let queue = self.readable_queue(ch, m.queue)?;
        let tag = if m.consumer_tag.is_empty() {
            generated_name("amq.ctag-")
        } else {
            m.consumer_tag
        };
        let prefetch_count =
            self.with_channel(ch, |channel| channel.check_new_consumer(&tag))??;
        let spec = ConsumerSpec {
            key: ConsumerKey {
                channel: self.channel_id(ch),
                tag: tag.clone(),
            },
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch_count,
            credit: self.shard.shared.config.consumer_credit,
            priority: consumer_priority(&m.arguments),
        };
        let awaiting = Awaiting::Consume {
            tag,
            queue,
            no_wait: m.no_wait,
        };
        self.queue_request(ch, queue, QueueRequest::Consume(spec), awaiting)
    }

    /// The queue took the consumer: consume-ok.
    pub(in crate::connection) fn consumer_started(
        &self,
        ch: u16,
        tag: ShortStr,
        queue: QueueId,
        no_wait: bool,
    ) {
        let started = self.with_channel(ch, |channel| channel.consumer_started(tag.clone(), queue));
        if started.is_ok() && !no_wait {
            let ok = BasicConsumeOk { consumer_tag: tag };
            self.out.method(ch, &Method::BasicConsumeOk(ok));
        }
    }

    /// basic.cancel: the queue's shard drops the consumer, then
    /// `consumer_cancelled` answers; an unknown tag is answered at once, as
    /// RabbitMQ does.
    pub(super) fn cancel(&self, ch: u16, tag: ShortStr, no_wait: bool) -> Result<Next, AmqpError> {
        let Some(queue) = self.with_channel(ch, |channel| channel.consumer_queue(&tag))? else {
            self.consumer_cancelled(ch, tag, no_wait);
            return Ok(Next::Continue);
        };
        let key = ConsumerKey {
            channel: self.channel_id(ch),
            tag: tag.clone(),
        };
        let awaiting = Awaiting::Cancel { tag, no_wait };
        self.queue_request(ch, queue, QueueRequest::Cancel(key), awaiting)
    }

    /// The consumer is gone from its queue: forget it and send cancel-ok.
    /// Deliveries sent before that came first and were written.
    pub(in crate::connection) fn consumer_cancelled(&self, ch: u16, tag: ShortStr, no_wait: bool) {
        let _ = self.with_channel(ch, |channel| channel.remove_consumer(&tag));
        if !no_wait {
            let ok = BasicCancelOk { consumer_tag: tag };
            self.out.method(ch, &Method::BasicCancelOk(ok));
        }
    }

    /// A delivery from a queue's shard. False when the channel or the
    /// consumer is gone, so the shard requeues it.
    pub(in crate::connection) fn deliver(&self, deliver: Deliver) -> bool {
        let mut state = self.state.borrow_mut();
        let Some(channel) = state.channels.get_mut(&deliver.channel.number) else {
            return false;
        };
        if !channel.accepts(&deliver.consumer_tag) {
            return false;
        }
        let admitted = channel.admit(deliver);
        drop(state);
        if let Some((deliver, delivery_tag)) = admitted {
            self.write_delivery(deliver, delivery_tag);
        }
        true
    }

    fn write_delivery(&self, deliver: Deliver, delivery_tag: u64) {
        let args = DeliverArgs {
            consumer_tag: &deliver.consumer_tag,
            delivery_tag,
            redelivered: deliver.redelivered,
            exchange: &deliver.message.exchange,
            routing_key: &deliver.message.routing_key,
        };
        self.out.deliver(
            deliver.owner,
            deliver.queue,
            deliver.channel.number,
            &args,
            &deliver.message,
        );
    }

    /// Writes the deliveries the global prefetch held back, as far as acks
    /// have made room; one whose consumer has since gone is requeued.
    pub(super) fn release_held(&self, ch: u16) {
        while let Ok(Some(released)) = self.with_channel(ch, |channel| channel.release_held()) {
            match released {
                Ok((deliver, delivery_tag)) => self.write_delivery(deliver, delivery_tag),
                Err(orphan) => {
                    let mut settled = [(orphan.queue, orphan.seq)];
                    self.send_settles(ch, &mut settled, Settlement::Requeue);
                }
            }
        }
    }

    /// The queue went away under a consumer: forget it, and tell clients
    /// that asked for consumer_cancel_notify.
    pub(in crate::connection) fn consumer_gone(&self, ch: u16, tag: &ShortStr) {
        let mut state = self.state.borrow_mut();
        let notify = state.consumer_cancel_notify;
        let removed = state
            .channels
            .get_mut(&ch)
            .is_some_and(|channel| channel.remove_consumer(tag));
        if !removed || !notify {
            return;
        }
        if state.awaiting.as_ref().is_some_and(|(on, _)| *on == ch) {
            state.deferred_cancels.push((ch, tag.clone()));
            return;
        }
        drop(state);
        self.notify_cancel(ch, tag.clone());
    }

    /// Writes the server's basic.cancel for a consumer whose queue is gone.
    pub(in crate::connection) fn notify_cancel(&self, ch: u16, consumer_tag: ShortStr) {
        let cancel = BasicCancel {
            consumer_tag,
            no_wait: true,
        };
        self.out.method(ch, &Method::BasicCancel(cancel));
    }
}

/// basic.consume's `x-priority` argument, clamped to what fits; RabbitMQ
/// takes any integer type.
fn consumer_priority(arguments: &FieldTable) -> i32 {
    arguments
        .get("x-priority")
        .and_then(FieldValue::as_i64)
        .map_or(0, |priority| {
            priority.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        })
}
