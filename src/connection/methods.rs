//! Channel frames: channel lifecycle, content assembly, and the exchange and
//! queue methods, which become requests to the coordinator or to the queue's
//! shard. The replies come back through [`Connection::on_reply`].

use std::rc::Rc;

use super::channel::{Body, Channel, ChannelState, Incoming};
use super::{Connection, Next};
use crate::catalog::access::Access;
use crate::catalog::{BindingOp, DestinationName, MetaOp, MetaOutcome};
use crate::ids::{QueueId, ShardId};
use crate::protocol::frame::{Frame, FrameType};
use crate::protocol::method::*;
use crate::protocol::properties::ContentHeader;
use crate::protocol::{reply_code, AmqpError, FieldTable, ShortStr};
use crate::shard::{QueueRequest, Reply, ShardMsg};

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
    pub(super) fn channel_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let channel_id = frame.channel;
        let channel_state = self
            .state
            .borrow()
            .channels
            .get(&channel_id)
            .map(|c| c.state);
        match channel_state {
            None => self.unopened_channel_frame(frame),
            Some(ChannelState::Closing) => self.closing_channel_frame(frame),
            Some(ChannelState::Open) => match frame.frame_type {
                FrameType::Method => self.channel_method_frame(frame),
                FrameType::Header => self.content_header(channel_id, frame),
                FrameType::Body => self.content_body(channel_id, frame),
                FrameType::Heartbeat => Next::Continue,
            },
        }
    }

    fn unopened_channel_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let method = match frame.frame_type {
            FrameType::Method => Method::decode(frame.payload),
            _ => return self.hard_error(unexpected_content()),
        };
        match method {
            Ok(Method::ChannelOpen(_)) => self.open_channel(frame.channel),
            Ok(other) => {
                let err = AmqpError::new(reply_code::CHANNEL_ERROR, "expected 'channel.open'");
                self.close_connection(err, other.class_id(), other.method_id());
                Next::Continue
            }
            Err(err) => self.hard_error(err.into()),
        }
    }

    /// channel.open: channel_max limits how many channels are open at once
    /// (closing ones included), not their numbers, as in RabbitMQ.
    fn open_channel(self: &Rc<Self>, channel_id: u16) -> Next {
        let (channel_max, open) = {
            let state = self.state.borrow();
            (state.tune.channel_max, state.channels.len())
        };
        if channel_max != 0 && open >= usize::from(channel_max) {
            let err = AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max \
                 ({channel_max})"
            ));
            self.close_connection(err, 0, 0);
            return Next::Continue;
        }
        self.state
            .borrow_mut()
            .channels
            .insert(channel_id, Channel::new());
        self.out
            .method(channel_id, &Method::ChannelOpenOk(ChannelOpenOk::default()));
        Next::Continue
    }

    /// After we closed a channel: only close-ok (or a crossing close) counts.
    /// The channel number stays taken until close-ok arrives.
    fn closing_channel_frame(&self, frame: Frame) -> Next {
        if frame.frame_type != FrameType::Method {
            return Next::Continue;
        }
        match Method::decode(frame.payload) {
            Ok(Method::ChannelCloseOk(_)) => {
                self.state.borrow_mut().remove_channel(frame.channel);
            }
            // A crossing close: answer it, and keep waiting for the close-ok
            // to our own close (RabbitMQ's reader does the same).
            Ok(Method::ChannelClose(_)) => {
                self.out
                    .method(frame.channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
            }
            _ => {}
        }
        Next::Continue
    }

    fn channel_method_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let channel_id = frame.channel;
        let method = match Method::decode(frame.payload) {
            Ok(method) => method,
            Err(err) => return self.hard_error(err.into()),
        };
        let ids = (method.class_id(), method.method_id());
        let publishing = self
            .state
            .borrow()
            .channels
            .get(&channel_id)
            .is_some_and(|channel| channel.incoming.is_some());
        if publishing {
            let err = AmqpError::new(
                reply_code::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            );
            self.close_connection(err, ids.0, ids.1);
            return Next::Continue;
        }
        match self.channel_method(channel_id, method) {
            Ok(next) => next,
            Err(err) => self.method_error(channel_id, err, ids),
        }
    }

    /// A soft error closes the channel; a hard one the connection.
    pub(super) fn method_error(
        self: &Rc<Self>,
        channel_id: u16,
        err: AmqpError,
        ids: (u16, u16),
    ) -> Next {
        if err.is_hard() {
            self.close_connection(err, ids.0, ids.1);
        } else {
            self.channel_error(channel_id, err, ids.0, ids.1);
        }
        Next::Continue
    }

    fn channel_method(self: &Rc<Self>, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method.class_id() {
            ChannelOpen::CLASS_ID | AccessRequest::CLASS_ID => {
                self.channel_class_method(ch, method)
            }
            ExchangeDeclare::CLASS_ID => self.exchange_method(ch, method),
            QueueDeclare::CLASS_ID => self.queue_method(ch, method),
            _ => self.basic_method(ch, method),
        }
    }

    fn channel_class_method(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::ChannelOpen(_) => Err(AmqpError::new(
                reply_code::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            Method::ChannelClose(_) => {
                let mut state = self.state.borrow_mut();
                if let Some(mut channel) = state.remove_channel(ch) {
                    self.release_channel(ch, &mut channel);
                }
                drop(state);
                self.out
                    .method(ch, &Method::ChannelCloseOk(ChannelCloseOk {}));
                Ok(Next::Continue)
            }
            Method::ChannelCloseOk(_) | Method::ChannelFlowOk(_) => Ok(Next::Continue),
            Method::ChannelFlow(flow) if flow.active => {
                self.out
                    .method(ch, &Method::ChannelFlowOk(ChannelFlowOk { active: true }));
                Ok(Next::Continue)
            }
            Method::ChannelFlow(_) => Err(AmqpError::not_implemented("active=false")),
            Method::AccessRequest(_) => {
                self.out
                    .method(ch, &Method::AccessRequestOk(AccessRequestOk { ticket: 1 }));
                Ok(Next::Continue)
            }
            other => Err(not_from_client(&other)),
        }
    }

    fn exchange_method(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::ExchangeDeclare(m) => self.exchange_declare(ch, m),
            Method::ExchangeDelete(m) => {
                self.check_access(Access::Configure, "exchange", &m.exchange)?;
                let op = MetaOp::ExchangeDelete {
                    vhost: self.vhost(),
                    name: m.exchange,
                    if_unused: m.if_unused,
                };
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeDelete,
                    m.no_wait,
                    (ExchangeDelete::CLASS_ID, ExchangeDelete::METHOD_ID),
                )
            }
            Method::ExchangeBind(m) => {
                self.check_exchange_binding(&m.destination, &m.source)?;
                let destination = DestinationName::Exchange(m.destination);
                let op =
                    MetaOp::Bind(self.binding(m.source, destination, m.routing_key, m.arguments));
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeBind,
                    m.no_wait,
                    (ExchangeBind::CLASS_ID, ExchangeBind::METHOD_ID),
                )
            }
            Method::ExchangeUnbind(m) => {
                self.check_exchange_binding(&m.destination, &m.source)?;
                let destination = DestinationName::Exchange(m.destination);
                let op =
                    MetaOp::Unbind(self.binding(m.source, destination, m.routing_key, m.arguments));
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeUnbind,
                    m.no_wait,
                    (ExchangeUnbind::CLASS_ID, ExchangeUnbind::METHOD_ID),
                )
            }
            other => Err(not_from_client(&other)),
        }
    }

    fn queue_method(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
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

    /// The authenticated user's name.
    pub(crate) fn user(&self) -> String {
        self.state.borrow().user.to_str_lossy().into_owned()
    }

    pub(crate) fn vhost(&self) -> ShortStr {
        self.state.borrow().vhost.clone()
    }

    fn exchange_declare(&self, ch: u16, m: ExchangeDeclare) -> Result<Next, AmqpError> {
        if !m.passive {
            self.check_access(Access::Configure, "exchange", &m.exchange)?;
        }
        let op = MetaOp::ExchangeDeclare {
            vhost: self.vhost(),
            name: m.exchange,
            kind: m.exchange_type,
            passive: m.passive,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: m.arguments,
        };
        self.meta(
            ch,
            op,
            MetaOk::ExchangeDeclare,
            m.no_wait,
            (ExchangeDeclare::CLASS_ID, ExchangeDeclare::METHOD_ID),
        )
    }

    fn binding(
        &self,
        source: ShortStr,
        destination: DestinationName,
        routing_key: ShortStr,
        arguments: FieldTable,
    ) -> BindingOp {
        BindingOp {
            vhost: self.vhost(),
            source,
            destination,
            routing_key,
            arguments,
            conn: self.id,
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

    /// Sends a metadata change to the coordinator and waits for its reply.
    fn meta(
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

    /// The queue a method names; the empty name means the channel's last
    /// declared queue, as the spec says.
    pub(super) fn queue_name(&self, ch: u16, name: ShortStr) -> Result<ShortStr, AmqpError> {
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

    /// Resolves a queue this connection may read from (consume, get,
    /// purge): read permission first, then as [`Self::accessible_queue`].
    pub(super) fn readable_queue(&self, ch: u16, name: ShortStr) -> Result<QueueId, AmqpError> {
        let name = self.queue_name(ch, name)?;
        self.check_access(Access::Read, "queue", &name)?;
        self.accessible_queue(ch, name)
    }

    /// queue.bind / unbind: write on the queue, read on the exchange.
    fn check_queue_binding(&self, queue: &[u8], exchange: &[u8]) -> Result<(), AmqpError> {
        self.check_access(Access::Write, "queue", queue)?;
        self.check_access(Access::Read, "exchange", exchange)
    }

    /// exchange.bind / unbind: write on the destination, read on the source.
    fn check_exchange_binding(&self, destination: &[u8], source: &[u8]) -> Result<(), AmqpError> {
        self.check_access(Access::Write, "exchange", destination)?;
        self.check_access(Access::Read, "exchange", source)
    }

    /// Resolves a queue this connection may use (404 missing, 405 exclusive
    /// to another connection).
    pub(super) fn accessible_queue(&self, ch: u16, name: ShortStr) -> Result<QueueId, AmqpError> {
        let name = self.queue_name(ch, name)?;
        let catalog = self.shard.catalog.borrow();
        catalog
            .check_queue_access(&self.vhost(), &name, self.id)
            .map(|def| def.id)
    }

    /// A reply from another shard: write the -ok (or the error) now, in ring
    /// order, then let the reader go on.
    pub fn on_reply(self: &Rc<Self>, channel: u16, reply: Reply) {
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
                        self.state.borrow_mut().phase = super::Phase::ClosedByClient;
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

    fn content_header(self: &Rc<Self>, ch: u16, frame: Frame) -> Next {
        let message_size_max = self.shard.shared.config.message_size_max;
        // decode validates the property list; route reads what it needs.
        let header = match ContentHeader::decode(frame.payload) {
            Ok(header) => header,
            Err(err) => return self.hard_error(err.into()),
        };
        let mut state = self.state.borrow_mut();
        let channel = state.channels.get_mut(&ch);
        let Some(incoming) = channel
            .and_then(|c| c.incoming.as_mut())
            .filter(|i| i.header.is_none())
        else {
            drop(state);
            return self.hard_error(unexpected_content());
        };
        if header.class_id != BasicPublish::CLASS_ID {
            drop(state);
            return self.hard_error(AmqpError::new(
                reply_code::UNEXPECTED_FRAME,
                format!(
                    "content header for class {} after basic.publish",
                    header.class_id
                ),
            ));
        }
        let body_size = header.body_size;
        incoming.header = Some(header);
        drop(state);
        let held = if body_size > message_size_max {
            Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {message_size_max}"
            )))
        } else {
            self.hold_content(ch, body_size)
        };
        if let Err(err) = held {
            self.channel_error(ch, err, BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
            return Next::Continue;
        }
        if body_size == 0 {
            return self.publish_complete(ch);
        }
        Next::Continue
    }

    fn content_body(self: &Rc<Self>, ch: u16, frame: Frame) -> Next {
        let mut state = self.state.borrow_mut();
        let incoming = state
            .channels
            .get_mut(&ch)
            .and_then(|c| c.incoming.as_mut())
            .filter(|i| i.header.is_some());
        let Some(Incoming {
            header: Some(header),
            body,
            ..
        }) = incoming
        else {
            drop(state);
            return self.hard_error(unexpected_content());
        };
        let expected = header.body_size;
        body.push(
            frame.payload,
            usize::try_from(expected).unwrap_or(usize::MAX),
        );
        let received = body.len() as u64;
        drop(state);
        if received > expected {
            return self.hard_error(AmqpError::new(
                reply_code::FRAME_ERROR,
                format!("body larger than the {expected} bytes its header announced"),
            ));
        }
        if received == expected {
            return self.publish_complete(ch);
        }
        Next::Continue
    }

    fn publish_complete(self: &Rc<Self>, ch: u16) -> Next {
        let incoming = self
            .state
            .borrow_mut()
            .channels
            .get_mut(&ch)
            .and_then(|c| c.incoming.take());
        let Some(Incoming {
            publish,
            header: Some(header),
            body,
        }) = incoming
        else {
            return Next::Continue;
        };
        match self.publish(ch, publish, header, body.into_bytes()) {
            Ok(next) => next,
            Err(err) => {
                self.method_error(ch, err, (BasicPublish::CLASS_ID, BasicPublish::METHOD_ID))
            }
        }
    }
}

/// A method only a server sends, or one of another class, arriving from the
/// client on a channel.
pub(super) fn not_from_client(method: &Method) -> AmqpError {
    AmqpError::command_invalid(format!(
        "method {} is not valid from a client on a channel",
        method.name()
    ))
}

/// A header or body frame where a method was due (RabbitMQ's words).
fn unexpected_content() -> AmqpError {
    AmqpError::new(
        reply_code::UNEXPECTED_FRAME,
        "expected method frame, got non method frame instead",
    )
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

fn meta_ok(ok: &MetaOk, done: &crate::shard::MetaDone) -> Option<Method> {
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

/// A server-generated name as RabbitMQ makes them: a prefix and 22
/// characters of URL-safe base64 over 128 random bits.
pub(super) fn generated_name(prefix: &str) -> ShortStr {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let random = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    let bits = (u128::from(random(1)) << 64) | u128::from(random(2));
    let mut name = String::with_capacity(prefix.len() + 22);
    name.push_str(prefix);
    for i in 0..22 {
        name.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    ShortStr::from(name)
}

impl Channel {
    pub(super) fn start_publish(&mut self, publish: BasicPublish) {
        self.incoming = Some(Incoming {
            publish,
            header: None,
            body: Body::Empty,
        });
    }
}
