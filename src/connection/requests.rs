//! Requests to other shards and their replies. A method that needs the
//! coordinator (declare, bind, delete) or a queue's shard (consume, get,
//! purge...) sends a request and the reader waits (`Next::AwaitReply`);
//! the reply handler writes the -ok (or the error) at once, in ring order,
//! then lets the reader go on.

use std::rc::Rc;

use super::channel::ChannelState;
use super::{Connection, Next, Phase};
use crate::catalog::{MetaOp, MetaOutcome};
use crate::ids::{QueueId, ShardId};
use crate::protocol::method::*;
use crate::protocol::{reply_code, AmqpError, ShortStr};
use crate::shard::{MetaDone, QueueRequest, Reply, ShardMsg};

/// The request whose reply the reader is waiting for.
pub(super) enum Awaiting {
    /// A metadata change; `ok` is the -ok method to send (None: no-wait).
    Meta {
        ok: MetaOk,
        class_method: (u16, u16),
    },
    Consume {
        tag: ShortStr,
        queue: QueueId,
        no_wait: bool,
    },
    Cancel {
        tag: ShortStr,
        no_wait: bool,
    },
    Get {
        no_ack: bool,
    },
    Purge {
        no_wait: bool,
    },
}

/// Which -ok answers a metadata request.
#[derive(Clone, PartialEq)]
pub(super) enum MetaOk {
    ExchangeDeclare,
    ExchangeDelete,
    ExchangeBind,
    ExchangeUnbind,
    QueueDeclare,
    QueueBind,
    QueueUnbind,
    QueueDelete,
    /// connection.close-ok, once the connection's exclusive queues are gone.
    ConnectionClose,
    /// No -ok yet: the direct reply-to queue is declared, now consume it.
    DirectReply(Box<BasicConsume>),
    NoWait,
}

impl Connection {
    /// Sends a metadata change to the coordinator and waits for its reply.
    pub(super) fn meta(
        &self,
        ch: u16,
        op: MetaOp,
        ok: MetaOk,
        no_wait: bool,
        class_method: (u16, u16),
    ) -> Result<Next, AmqpError> {
        let ok = if no_wait { MetaOk::NoWait } else { ok };
        self.request(ch, op, Awaiting::Meta { ok, class_method })
    }

    /// Sends `op` to the coordinator; the reader waits for `awaiting`.
    pub(super) fn request(
        &self,
        ch: u16,
        op: MetaOp,
        awaiting: Awaiting,
    ) -> Result<Next, AmqpError> {
        self.state.borrow_mut().awaiting = Some((ch, awaiting));
        self.shard.request_meta(Some(self.channel_id(ch)), op);
        Ok(Next::AwaitReply)
    }

    pub(super) fn queue_request(
        &self,
        ch: u16,
        queue: QueueId,
        request: QueueRequest,
        awaiting: Awaiting,
    ) -> Result<Next, AmqpError> {
        let owner = self.owner(queue)?;
        self.state.borrow_mut().awaiting = Some((ch, awaiting));
        let msg = ShardMsg::QueueRequest {
            queue,
            reply_to: self.channel_id(ch),
            request,
        };
        self.shard.send(owner, msg);
        Ok(Next::AwaitReply)
    }

    pub(super) fn owner(&self, queue: QueueId) -> Result<ShardId, AmqpError> {
        self.shard
            .owner_of(queue)
            .ok_or_else(|| AmqpError::not_found("queue was deleted"))
    }

    /// A reply from another shard: write the -ok (or the error) now, in ring
    /// order, then let the reader go on.
    pub(super) fn on_reply(self: &Rc<Self>, channel: u16, reply: Reply) {
        let awaiting = self.state.borrow_mut().awaiting.take();
        let Some((ch, awaiting)) = awaiting else {
            return;
        };
        debug_assert_eq!(ch, channel);
        let ids = awaiting.class_method();
        if let Err(err) = self.complete(ch, awaiting, reply) {
            self.method_error(ch, err, ids);
        }
        let deferred = std::mem::take(&mut self.state.borrow_mut().deferred_cancels);
        for (channel, tag) in deferred {
            let open = self.state.borrow().channels.get(&channel).map(|c| c.state);
            if open == Some(ChannelState::Open) {
                self.notify_cancel(channel, tag);
            }
        }
        self.reply_ready.notify();
    }

    fn complete(&self, ch: u16, awaiting: Awaiting, reply: Reply) -> Result<(), AmqpError> {
        match (awaiting, reply) {
            (_, Reply::Error(err)) | (_, Reply::Meta(Err(err))) => Err(err),
            (Awaiting::Meta { ok, .. }, Reply::Meta(Ok(done))) => {
                if let Some(method) = meta_ok(&ok, &done) {
                    self.out.method(ch, &method);
                }
                match (ok, done.outcome) {
                    (MetaOk::ConnectionClose, _) => {
                        self.state.borrow_mut().phase = Phase::ClosedByClient;
                    }
                    (MetaOk::DirectReply(consume), MetaOutcome::QueueDeclared { def, .. }) => {
                        self.reply_queue_declared(ch, def.name, *consume)?;
                    }
                    _ => {}
                }
                Ok(())
            }
            (
                Awaiting::Consume {
                    tag,
                    queue,
                    no_wait,
                },
                Reply::ConsumeOk,
            ) => {
                self.consumer_started(ch, tag, queue, no_wait);
                Ok(())
            }
            // The last consumer of an auto-delete queue: the queue's
            // deletion answers for the cancel.
            (Awaiting::Cancel { tag, no_wait }, Reply::CancelOk | Reply::Meta(Ok(_))) => {
                self.consumer_cancelled(ch, tag, no_wait);
                Ok(())
            }
            (Awaiting::Get { no_ack }, Reply::Got(got)) => {
                self.got(ch, no_ack, got);
                Ok(())
            }
            (Awaiting::Purge { no_wait }, Reply::Purged { message_count }) => {
                if !no_wait {
                    self.out
                        .method(ch, &Method::QueuePurgeOk(QueuePurgeOk { message_count }));
                }
                Ok(())
            }
            _ => Err(AmqpError::new(
                reply_code::INTERNAL_ERROR,
                "mismatched reply",
            )),
        }
    }
}

impl Awaiting {
    fn class_method(&self) -> (u16, u16) {
        match self {
            Awaiting::Meta { class_method, .. } => *class_method,
            Awaiting::Consume { .. } => (BasicConsume::CLASS_ID, BasicConsume::METHOD_ID),
            Awaiting::Cancel { .. } => (BasicCancel::CLASS_ID, BasicCancel::METHOD_ID),
            Awaiting::Get { .. } => (BasicGet::CLASS_ID, BasicGet::METHOD_ID),
            Awaiting::Purge { .. } => (QueuePurge::CLASS_ID, QueuePurge::METHOD_ID),
        }
    }
}

fn meta_ok(ok: &MetaOk, done: &MetaDone) -> Option<Method> {
    let method = match ok {
        MetaOk::NoWait | MetaOk::DirectReply(_) => return None,
        MetaOk::ExchangeDeclare => Method::ExchangeDeclareOk(ExchangeDeclareOk {}),
        MetaOk::ExchangeDelete => Method::ExchangeDeleteOk(ExchangeDeleteOk {}),
        MetaOk::ExchangeBind => Method::ExchangeBindOk(ExchangeBindOk {}),
        MetaOk::ExchangeUnbind => Method::ExchangeUnbindOk(ExchangeUnbindOk {}),
        MetaOk::QueueBind => Method::QueueBindOk(QueueBindOk {}),
        MetaOk::QueueUnbind => Method::QueueUnbindOk(QueueUnbindOk {}),
        MetaOk::ConnectionClose => Method::ConnectionCloseOk(ConnectionCloseOk {}),
        MetaOk::QueueDelete => Method::QueueDeleteOk(QueueDeleteOk {
            message_count: done.message_count,
        }),
        MetaOk::QueueDeclare => {
            let queue = match &done.outcome {
                MetaOutcome::QueueDeclared { def, .. } => def.name.clone(),
                _ => ShortStr::default(),
            };
            Method::QueueDeclareOk(QueueDeclareOk {
                queue,
                message_count: done.message_count,
                consumer_count: done.consumer_count,
            })
        }
    };
    Some(method)
}
