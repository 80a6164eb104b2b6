//! The basic class, the data plane of a channel: publish (`publish`),
//! consume, cancel and the deliveries (`consume`), get and qos (here), ack,
//! reject, nack and recover (`ack`).

mod ack;
mod consume;
mod publish;

use std::rc::Rc;

use super::not_from_client;
use crate::connection::requests::Awaiting;
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::AmqpError;
use crate::queue::Settlement;
use crate::shard::{Got, QueueRequest};

impl Connection {
    pub(super) fn basic_class(self: &Rc<Self>, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::BasicPublish(m) => {
                self.with_channel(ch, |channel| channel.start_publish(m))??;
                Ok(Next::Continue)
            }
            Method::BasicQos(m) => {
                self.with_channel(ch, |channel| channel.qos(&m))??;
                self.out.method(ch, &Method::BasicQosOk(BasicQosOk {}));
                Ok(Next::Continue)
            }
            Method::BasicConsume(m) => self.consume(ch, m),
            Method::BasicCancel(m) => self.cancel(ch, m.consumer_tag, m.no_wait),
            Method::BasicGet(m) => {
                let queue = self.readable_queue(ch, m.queue)?;
                let request = QueueRequest::Get { no_ack: m.no_ack };
                self.queue_request(ch, queue, request, Awaiting::Get { no_ack: m.no_ack })
            }
            Method::BasicAck(m) => {
                self.client_settle(ch, m.delivery_tag, m.multiple, Settlement::Ack)
            }
            Method::BasicReject(m) => {
                self.client_settle(ch, m.delivery_tag, false, reject_action(m.requeue))
            }
            Method::BasicNack(m) => {
                self.client_settle(ch, m.delivery_tag, m.multiple, reject_action(m.requeue))
            }
            Method::BasicRecover(_) => {
                self.recover(ch);
                self.out
                    .method(ch, &Method::BasicRecoverOk(BasicRecoverOk {}));
                Ok(Next::Continue)
            }
            Method::BasicRecoverAsync(_) => {
                self.recover(ch);
                Ok(Next::Continue)
            }
            other => Err(not_from_client(&other)),
        }
    }

    /// The reply to basic.get: get-ok with the message, or get-empty.
    pub(in crate::connection) fn got(&self, ch: u16, no_ack: bool, got: Option<Got>) {
        let Some(got) = got else {
            self.out
                .method(ch, &Method::BasicGetEmpty(BasicGetEmpty::default()));
            return;
        };
        let Ok(delivery_tag) =
            self.with_channel(ch, |channel| channel.got(got.queue, got.seq, no_ack))
        else {
            return;
        };
        let method = BasicGetOk {
            delivery_tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.clone(),
            routing_key: got.message.routing_key.clone(),
            message_count: got.message_count,
        };
        self.out
            .content(ch, &Method::BasicGetOk(method), &got.message);
    }
}

fn reject_action(requeue: bool) -> Settlement {
    match requeue {
        true => Settlement::Requeue,
        false => Settlement::Discard,
    }
}
