//! The basic class, confirms and transactions: the data plane of a channel.
//! publish routes on this shard's replica of the routing table and hands the
//! message to each queue's owning shard; deliveries come back through
//! [`Connection::deliver`]; acks go back to the owners.

use std::rc::Rc;

use bytes::Bytes;

use super::channel::{Channel, Confirms, Consumer, TxAction};
use super::content::content_cost;
use super::methods::{generated_name, not_from_client, Awaiting};
use super::{direct_reply, Connection, Next};
use crate::catalog::access::Access;
use crate::ids::{QueueId, ShardId};
use crate::message::{parse_expiration, Message, MessageContent};
use crate::protocol::method::*;
use crate::protocol::properties::{scan_properties, ContentHeader, PropertySummary};
use crate::protocol::{reply_code, AmqpError, FieldTable, FieldValue, ShortStr};
use crate::queue::{ConsumerKey, ConsumerSpec};
use crate::routing::sender_selected::{self, SenderSelected};
use crate::routing::{delayed, MessageFields, RoutingTable, Slot};
use crate::shard::delayed::DelayedMessage;
use crate::shard::{ConfirmAnswer, Deliver, Got, QueueRequest, Settlement, ShardMsg};

impl Connection {
    pub(super) fn basic_method(
        self: &Rc<Self>,
        ch: u16,
        method: Method,
    ) -> Result<Next, AmqpError> {
        match method {
            Method::BasicPublish(m) => {
                if m.immediate {
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                self.with_channel(ch, |channel| channel.start_publish(m))?;
                Ok(Next::Continue)
            }
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({})",
                        m.prefetch_size
                    )));
                }
                self.with_channel(ch, |channel| {
                    if m.global {
                        channel.prefetch_global = m.prefetch_count;
                    } else {
                        channel.prefetch_count = m.prefetch_count;
                    }
                })?;
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
            Method::ConfirmSelect(m) => self.confirm_select(ch, m.no_wait),
            Method::TxSelect(_) => self.tx_select(ch),
            Method::TxCommit(_) => self.tx_commit(ch),
            Method::TxRollback(_) => {
                self.with_channel(ch, |channel| match channel.tx.as_mut() {
                    Some(actions) => {
                        actions.clear();
                        Ok(())
                    }
                    None => Err(not_transactional()),
                })??;
                self.release_all_content(ch);
                self.out.method(ch, &Method::TxRollbackOk(TxRollbackOk {}));
                Ok(Next::Continue)
            }
            other => Err(not_from_client(&other)),
        }
    }

    /// Runs `f` on channel `ch`; 504 when it is not open.
    pub(super) fn with_channel<T>(
        &self,
        ch: u16,
        f: impl FnOnce(&mut Channel) -> T,
    ) -> Result<T, AmqpError> {
        let mut state = self.state.borrow_mut();
        match state.channels.get_mut(&ch) {
            Some(channel) => Ok(f(channel)),
            None => Err(AmqpError::new(
                reply_code::CHANNEL_ERROR,
                format!("channel {ch} is not open"),
            )),
        }
    }

    /// Routes a complete message and hands it to each queue's shard.
    pub(super) fn publish(
        self: &Rc<Self>,
        ch: u16,
        publish: BasicPublish,
        header: ContentHeader,
        body: Bytes,
    ) -> Result<Next, AmqpError> {
        self.check_access(Access::Write, "exchange", &publish.exchange)?;
        let deferred = self.with_channel(ch, |channel| match channel.tx.as_mut() {
            Some(actions) => {
                actions.push(TxAction::Publish {
                    publish: publish.clone(),
                    header: header.clone(),
                    body: body.clone(),
                });
                true
            }
            None => false,
        })?;
        if deferred {
            return Ok(Next::Continue);
        }
        self.release_content(ch, content_cost(header.body_size));
        let tag = self.with_channel(ch, |channel| {
            channel.published += 1;
            channel.confirm.as_ref().map_or(0, Confirms::next_tag)
        })?;
        let routed = self.route(ch, publish, header, body, tag)?;
        if tag != 0 {
            self.with_channel(ch, |channel| {
                if let Some(confirm) = channel.confirm.as_mut() {
                    confirm.publish(routed.shards);
                }
            })?;
        }
        Ok(Next::Published {
            congested: routed.congested,
        })
    }

    /// Routes and enqueues; `confirm` numbers the publish for its shards'
    /// answers (0: none wanted).
    fn route(
        &self,
        ch: u16,
        publish: BasicPublish,
        header: ContentHeader,
        body: Bytes,
        confirm: u64,
    ) -> Result<Routed, AmqpError> {
        let vhost = self.vhost();
        let catalog = self.shard.catalog.borrow();
        let delayed = catalog
            .exchange_accepts_publish(&vhost, &publish.exchange)?
            .delayed;
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
            self.shard.delay_message(DelayedMessage {
                vhost,
                routing_keys,
                message,
                delay_ms,
            });
            // No queue has it yet: a confirm answers it at once.
            return Ok(Routed::default());
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

    /// Answers every publish whose shards have all answered, in order, on
    /// every confirming channel (unroutable publishes need no answer).
    pub(super) fn flush_confirms(&self) {
        let mut state = self.state.borrow_mut();
        for (&ch, channel) in state.channels.iter_mut() {
            self.answer_publishes(ch, channel);
        }
    }

    /// Answers from queues' shards about this connection's publishes.
    pub fn confirmed(&self, answers: &[ConfirmAnswer]) {
        let mut state = self.state.borrow_mut();
        for answer in answers {
            let Some(channel) = state.channels.get_mut(&answer.channel) else {
                continue;
            };
            match channel.confirm.as_mut() {
                Some(confirm) => confirm.answer(answer.tag, answer.stored),
                None => channel.tx_confirms.answer(answer.tag, answer.stored),
            }
        }
        // Answers for one channel usually come in one batch.
        let mut last = None;
        for answer in answers {
            if last == Some(answer.channel) {
                continue;
            }
            last = Some(answer.channel);
            if let Some(channel) = state.channels.get_mut(&answer.channel) {
                self.answer_publishes(answer.channel, channel);
            }
        }
    }

    /// Writes basic.ack / basic.nack for the answered prefix of a
    /// confirming channel, or the commit-oks whose publishes are answered.
    fn answer_publishes(&self, ch: u16, channel: &mut Channel) {
        let Some(confirm) = channel.confirm.as_mut() else {
            let tx = &mut channel.tx_confirms;
            tx.take_answered(|_, _, _| {});
            while tx
                .commits
                .front()
                .is_some_and(|&last| last <= tx.answered())
            {
                tx.commits.pop_front();
                self.out.method(ch, &Method::TxCommitOk(TxCommitOk {}));
            }
            return;
        };
        confirm.take_answered(|delivery_tag, count, acked| {
            let multiple = count > 1;
            let method = if acked {
                Method::BasicAck(BasicAck {
                    delivery_tag,
                    multiple,
                })
            } else {
                Method::BasicNack(BasicNack {
                    delivery_tag,
                    multiple,
                    requeue: false,
                })
            };
            self.out.method(ch, &method);
        });
    }

    pub(super) fn consume(&self, ch: u16, m: BasicConsume) -> Result<Next, AmqpError> {
        if m.queue.as_bytes() == direct_reply::PSEUDO_QUEUE.as_bytes() {
            return self.consume_direct_reply(ch, m);
        }
        let queue = self.readable_queue(ch, m.queue)?;
        let tag = if m.consumer_tag.is_empty() {
            generated_name("amq.ctag-")
        } else {
            m.consumer_tag
        };
        let prefetch_count = self.with_channel(ch, |channel| {
            if channel.consumers.contains_key(&tag) {
                return Err(AmqpError::not_allowed(format!(
                    "attempt to reuse consumer tag '{tag}'"
                )));
            }
            Ok(channel.prefetch_count)
        })??;
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

    pub(super) fn consumer_started(&self, ch: u16, tag: ShortStr, queue: QueueId, no_wait: bool) {
        let started = self.with_channel(ch, |channel| {
            channel.consumers.insert(tag.clone(), Consumer { queue });
            channel.touch(queue);
        });
        if started.is_err() {
            return;
        }
        if !no_wait {
            let ok = BasicConsumeOk { consumer_tag: tag };
            self.out.method(ch, &Method::BasicConsumeOk(ok));
        }
    }

    /// basic.cancel: the queue's shard drops the consumer, then
    /// `consumer_cancelled` answers; an unknown tag is answered at once, as
    /// RabbitMQ does.
    fn cancel(&self, ch: u16, tag: ShortStr, no_wait: bool) -> Result<Next, AmqpError> {
        let queue =
            self.with_channel(ch, |channel| channel.consumers.get(&tag).map(|c| c.queue))?;
        let Some(queue) = queue else {
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
    pub(super) fn consumer_cancelled(&self, ch: u16, tag: ShortStr, no_wait: bool) {
        let _ = self.with_channel(ch, |channel| channel.consumers.remove(&tag));
        if !no_wait {
            let ok = BasicCancelOk { consumer_tag: tag };
            self.out.method(ch, &Method::BasicCancelOk(ok));
        }
    }

    /// A delivery from a queue's shard. False when the channel or the
    /// consumer is gone, so the shard requeues it.
    pub fn deliver(&self, deliver: Deliver) -> bool {
        let mut state = self.state.borrow_mut();
        let Some(channel) = state.channels.get_mut(&deliver.channel.number) else {
            return false;
        };
        if channel.state != super::ChannelState::Open
            || !channel.consumers.contains_key(&deliver.consumer_tag)
        {
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
    fn release_held(&self, ch: u16) {
        loop {
            let released = self.with_channel(ch, |channel| {
                let deliver = channel.release_held()?;
                if !channel.consumers.contains_key(&deliver.consumer_tag) {
                    return Some(Err(deliver));
                }
                let delivery_tag = channel.unacked.next(deliver.queue, deliver.seq, true);
                Some(Ok((deliver, delivery_tag)))
            });
            match released {
                Ok(Some(Ok((deliver, delivery_tag)))) => self.write_delivery(deliver, delivery_tag),
                Ok(Some(Err(orphan))) => {
                    let mut settled = [(orphan.queue, orphan.seq)];
                    self.send_settles(ch, &mut settled, Settlement::Requeue);
                }
                _ => return,
            }
        }
    }

    pub(super) fn got(&self, ch: u16, no_ack: bool, got: Option<Got>) {
        let Some(got) = got else {
            self.out
                .method(ch, &Method::BasicGetEmpty(BasicGetEmpty::default()));
            return;
        };
        let Ok(delivery_tag) = self.with_channel(ch, |channel| {
            channel.touch(got.queue);
            channel.unacked.next(got.queue, got.seq, !no_ack)
        }) else {
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

    /// The queue went away under a consumer: forget it, and tell clients
    /// that asked for consumer_cancel_notify.
    pub fn consumer_gone(&self, ch: u16, tag: &ShortStr) {
        let mut state = self.state.borrow_mut();
        let notify = state.consumer_cancel_notify;
        let removed = state
            .channels
            .get_mut(&ch)
            .and_then(|channel| channel.consumers.remove(tag));
        if removed.is_none() || !notify {
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
    pub(super) fn notify_cancel(&self, ch: u16, consumer_tag: ShortStr) {
        let cancel = BasicCancel {
            consumer_tag,
            no_wait: true,
        };
        self.out.method(ch, &Method::BasicCancel(cancel));
    }

    fn client_settle(
        &self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    ) -> Result<Next, AmqpError> {
        let deferred = self.with_channel(ch, |channel| match channel.tx.as_mut() {
            Some(actions) => {
                actions.push(TxAction::Settle {
                    delivery_tag,
                    multiple,
                    action,
                });
                true
            }
            None => false,
        })?;
        if !deferred {
            self.settle(ch, delivery_tag, multiple, action)?;
        }
        Ok(Next::Continue)
    }

    /// Settles delivery tags with their queues' shards: one message for a
    /// single tag, one per queue for several.
    fn settle(
        &self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    ) -> Result<(), AmqpError> {
        let mut settled = self.settled.borrow_mut();
        settled.clear();
        let known = self.with_channel(ch, |channel| {
            let known = channel.unacked.settle(delivery_tag, multiple, |entry| {
                settled.push((entry.queue, entry.seq))
            });
            if action == Settlement::Ack {
                channel.acked += settled.len() as u64;
            }
            known
        })?;
        if !known {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {delivery_tag}"
            )));
        }
        self.send_settles(ch, &mut settled, action);
        drop(settled);
        self.release_held(ch);
        Ok(())
    }

    fn send_settles(&self, ch: u16, settled: &mut [(QueueId, u64)], action: Settlement) {
        let holder = self.channel_id(ch);
        if let [(queue, seq)] = settled[..] {
            if let Ok(owner) = self.owner(queue) {
                self.shard.send(
                    owner,
                    ShardMsg::Settle {
                        queue,
                        holder,
                        seq,
                        action,
                    },
                );
            }
            return;
        }
        settled.sort_by_key(|&(queue, seq)| (queue, seq));
        for group in settled.chunk_by(|a, b| a.0 == b.0) {
            let queue = group[0].0;
            let Ok(owner) = self.owner(queue) else {
                continue;
            };
            let seqs = group.iter().map(|&(_, seq)| seq).collect();
            self.shard.send(
                owner,
                ShardMsg::SettleMany {
                    queue,
                    holder,
                    seqs,
                    action,
                },
            );
        }
    }

    /// basic.recover: everything unacked on the channel goes back to its
    /// queue (RabbitMQ requeues whatever `requeue` says).
    fn recover(&self, ch: u16) {
        let mut settled = self.settled.borrow_mut();
        settled.clear();
        let drained = self.with_channel(ch, |channel| {
            settled.extend(
                channel
                    .unacked
                    .drain()
                    .map(|entry| (entry.queue, entry.seq)),
            );
        });
        if drained.is_err() {
            return;
        }
        if !settled.is_empty() {
            self.send_settles(ch, &mut settled, Settlement::Requeue);
        }
        drop(settled);
        self.release_held(ch);
    }

    fn confirm_select(&self, ch: u16, no_wait: bool) -> Result<Next, AmqpError> {
        self.with_channel(ch, |channel| {
            if channel.tx.is_some() {
                return Err(AmqpError::precondition_failed(
                    "cannot switch from tx to confirm mode",
                ));
            }
            channel.confirm.get_or_insert_with(Confirms::default);
            Ok(())
        })??;
        if !no_wait {
            self.out
                .method(ch, &Method::ConfirmSelectOk(ConfirmSelectOk {}));
        }
        Ok(Next::Continue)
    }

    fn tx_select(&self, ch: u16) -> Result<Next, AmqpError> {
        self.with_channel(ch, |channel| {
            if channel.confirm.is_some() {
                return Err(AmqpError::precondition_failed(
                    "cannot switch from confirm to tx mode",
                ));
            }
            channel.tx.get_or_insert_with(Vec::new);
            Ok(())
        })??;
        self.out.method(ch, &Method::TxSelectOk(TxSelectOk {}));
        Ok(Next::Continue)
    }

    /// Carries out what the transaction deferred, in order.
    fn tx_commit(self: &Rc<Self>, ch: u16) -> Result<Next, AmqpError> {
        let actions = self.with_channel(ch, |channel| match channel.tx.as_mut() {
            Some(actions) => Ok(std::mem::take(actions)),
            None => Err(not_transactional()),
        })??;
        self.release_all_content(ch);
        let mut congested = None;
        for action in actions {
            match action {
                TxAction::Publish {
                    publish,
                    header,
                    body,
                } => {
                    let tag = self.with_channel(ch, |channel| {
                        channel.published += 1;
                        channel.tx_confirms.next_tag()
                    })?;
                    let routed = self.route(ch, publish, header, body, tag)?;
                    self.with_channel(ch, |channel| channel.tx_confirms.publish(routed.shards))?;
                    congested = routed.congested.or(congested);
                }
                TxAction::Settle {
                    delivery_tag,
                    multiple,
                    action,
                } => self.settle(ch, delivery_tag, multiple, action)?,
            }
        }
        // commit-ok goes out once every committed publish is stored: on
        // disk, for a persistent message in a durable queue.
        self.with_channel(ch, |channel| {
            let last = channel.tx_confirms.published();
            channel.tx_confirms.commits.push_back(last);
            self.answer_publishes(ch, channel);
        })?;
        Ok(Next::Published { congested })
    }
}

/// Where a publish went.
#[derive(Default)]
struct Routed {
    /// Queues it was sent to (each answers a confirming channel once).
    shards: u32,
    /// An owner shard whose ring is congested: the reader waits for it
    /// before reading more.
    congested: Option<ShardId>,
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

fn reject_action(requeue: bool) -> Settlement {
    if requeue {
        Settlement::Requeue
    } else {
        Settlement::Discard
    }
}

fn not_transactional() -> AmqpError {
    AmqpError::precondition_failed("channel is not transactional")
}

/// Routes a publish by its routing key and, for sender-selected
/// distribution, its CC and BCC keys; a queue reached by several keys gets
/// one copy.
/// A message's routing keys: its own, then the CC and BCC ones.
fn routing_keys(routing_key: &ShortStr, selected: Option<&SenderSelected>) -> Vec<ShortStr> {
    let more = selected
        .map(|s| s.routing_keys.as_slice())
        .unwrap_or_default();
    std::iter::once(routing_key).chain(more).cloned().collect()
}

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
