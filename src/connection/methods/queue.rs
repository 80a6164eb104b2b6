//! The queue class: declare, bind and unbind through the coordinator;
//! purge and delete through the queue's shard.

use super::{generated_name, not_from_client};
use crate::catalog::access::Access;
use crate::catalog::{DestinationName, MetaOp};
use crate::connection::requests::{Awaiting, MetaOk};
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::{reply_code, AmqpError, ShortStr};
use crate::shard::QueueRequest;

impl Connection {
    pub(super) fn queue_class(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::QueueDeclare(m) => self.queue_declare(ch, m),
            Method::QueueBind(m) => {
                let queue = self.queue_name(ch, m.queue)?;
                self.check_queue_binding(&queue, &m.exchange)?;
                let destination = DestinationName::Queue(queue);
                let op =
                    MetaOp::Bind(self.binding(m.exchange, destination, m.routing_key, m.arguments));
                self.meta(
                    ch,
                    op,
                    MetaOk::QueueBind,
                    m.no_wait,
                    (QueueBind::CLASS_ID, QueueBind::METHOD_ID),
                )
            }
            Method::QueueUnbind(m) => {
                let queue = self.queue_name(ch, m.queue)?;
                self.check_queue_binding(&queue, &m.exchange)?;
                let destination = DestinationName::Queue(queue);
                let op = MetaOp::Unbind(self.binding(
                    m.exchange,
                    destination,
                    m.routing_key,
                    m.arguments,
                ));
                self.meta(
                    ch,
                    op,
                    MetaOk::QueueUnbind,
                    false,
                    (QueueUnbind::CLASS_ID, QueueUnbind::METHOD_ID),
                )
            }
            Method::QueuePurge(m) => {
                let queue = self.readable_queue(ch, m.queue)?;
                let awaiting = Awaiting::Purge { no_wait: m.no_wait };
                self.queue_request(ch, queue, QueueRequest::Purge, awaiting)
            }
            Method::QueueDelete(m) => self.queue_delete(ch, m),
            other => Err(not_from_client(&other)),
        }
    }

    fn queue_declare(&self, ch: u16, m: QueueDeclare) -> Result<Next, AmqpError> {
        let server_named = m.queue.is_empty();
        let name = if server_named {
            generated_name("amq.gen-")
        } else {
            m.queue
        };
        if !m.passive {
            self.check_access(Access::Configure, "queue", &name)?;
        }
        let mut state = self.state.borrow_mut();
        if m.exclusive {
            state.declared_exclusive = true;
        }
        if let Some(channel) = state.channels.get_mut(&ch) {
            channel.last_queue = Some(name.clone());
        }
        drop(state);
        let op = MetaOp::QueueDeclare {
            vhost: self.vhost(),
            name,
            passive: m.passive,
            durable: m.durable,
            exclusive: m.exclusive,
            auto_delete: m.auto_delete,
            arguments: m.arguments,
            owner: self.id,
            owner_shard: self.shard.id,
            server_named,
        };
        self.meta(
            ch,
            op,
            MetaOk::QueueDeclare,
            m.no_wait,
            (QueueDeclare::CLASS_ID, QueueDeclare::METHOD_ID),
        )
    }

    fn queue_delete(&self, ch: u16, m: QueueDelete) -> Result<Next, AmqpError> {
        let name = self.queue_name(ch, m.queue)?;
        self.check_access(Access::Configure, "queue", &name)?;
        let found = {
            let catalog = self.shard.catalog.borrow();
            match catalog.check_queue_access(&self.vhost(), &name, self.id) {
                Ok(def) => Some(def.id),
                // Deleting a queue that is not there succeeds (RabbitMQ 3.x).
                Err(err) if err.code == reply_code::NOT_FOUND => None,
                Err(err) => return Err(err),
            }
        };
        let Some(queue) = found else {
            if !m.no_wait {
                let ok = QueueDeleteOk { message_count: 0 };
                self.out.method(ch, &Method::QueueDeleteOk(ok));
            }
            return Ok(Next::Continue);
        };
        let ok = if m.no_wait {
            MetaOk::NoWait
        } else {
            MetaOk::QueueDelete
        };
        let request = QueueRequest::Delete {
            if_unused: m.if_unused,
            if_empty: m.if_empty,
        };
        let awaiting = Awaiting::Meta {
            ok,
            class_method: (QueueDelete::CLASS_ID, QueueDelete::METHOD_ID),
        };
        self.queue_request(ch, queue, request, awaiting)
    }

    /// The queue a method names; the empty name means the channel's last
    /// declared queue, as the spec says.
    pub(in crate::connection) fn queue_name(
        &self,
        ch: u16,
        name: ShortStr,
    ) -> Result<ShortStr, AmqpError> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.state
            .borrow()
            .channels
            .get(&ch)
            .and_then(|channel| channel.last_queue.clone())
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }
}
