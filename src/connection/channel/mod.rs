//! One channel's state and what it decides on its own: the publish being
//! assembled from its frames, publisher confirms, the transaction's buffer,
//! consumers and prefetch, and the deliveries awaiting an ack.
//!
//! Nothing here touches a socket or a shard. Each method takes what a
//! decoded method says and returns what should happen (a reply to write,
//! the messages to settle with their queues, an error), and the handlers in
//! `connection::methods` carry it out, so a channel is tested on its own
//! (`tests`).

mod confirms;
mod incoming;
#[cfg(test)]
mod tests;
mod unacked;

use std::collections::VecDeque;

use bytes::Bytes;
use hashbrown::HashMap;

use crate::ids::QueueId;
use crate::protocol::method::{BasicAck, BasicNack, BasicPublish, BasicQos, Method, TxCommitOk};
use crate::protocol::properties::ContentHeader;
use crate::protocol::{reply_code, AmqpError, ShortStr};
use crate::queue::{MessageTotals, Settlement};
use crate::shard::{ConfirmTag, Deliver};
use confirms::Confirms;
use incoming::{Body, Incoming};
use unacked::Unacked;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChannelState {
    Open,
    /// We sent channel.close; everything but close-ok is discarded.
    Closing,
}

pub(super) struct Channel {
    /// This channel's incarnation on its connection: answers for an earlier
    /// channel with the same number carry another serial.
    serial: u32,
    pub(super) state: ChannelState,
    incoming: Option<Incoming>,
    confirm: Option<Confirms>,
    tx: Option<Vec<TxAction>>,
    /// The committed publishes of a transactional channel, and the
    /// commit-oks waiting for them.
    tx_confirms: Confirms,
    /// Content this channel holds against the connection's cap: the message
    /// being assembled and the transaction's publishes (see `content`).
    pub(super) content_held: u64,
    /// basic.qos prefetch_count (global=false) for consumers created from
    /// now on; the queue enforces it per consumer.
    prefetch_count: u16,
    /// basic.qos prefetch_count with global=true: a cap on the channel's
    /// unacked deliveries across all its consumers, enforced here.
    prefetch_global: u16,
    /// Ack-mode deliveries over the global cap, waiting for acks to make
    /// room. Their queues already count them as held by this channel, so
    /// closing the channel requeues them there.
    held: VecDeque<Deliver>,
    /// Consumer tags and the queue each consumes.
    consumers: HashMap<ShortStr, QueueId>,
    unacked: Unacked,
    /// Queues this channel consumed from or holds messages of: the ones to
    /// tell when it closes.
    touched: Vec<QueueId>,
    /// The queue this channel declared last: what an empty queue name in
    /// bind, consume, get, purge and delete refers to.
    pub(super) last_queue: Option<ShortStr>,
    /// This channel's direct reply-to queue, once it consumed
    /// `amq.rabbitmq.reply-to`.
    pub(super) reply_queue: Option<ShortStr>,
    /// Messages published and acked on this channel, for the API's rates
    /// (deliveries are `unacked.next_tag`: one tag per delivery or get).
    published: u64,
    acked: u64,
}

/// What a transaction defers to tx.commit.
pub(super) enum TxAction {
    Publish(Publish),
    Settle {
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    },
}

/// A complete publish: the method, its content header and its body.
#[derive(Clone)]
pub(super) struct Publish {
    pub(super) method: BasicPublish,
    pub(super) header: ContentHeader,
    pub(super) body: Bytes,
}

/// A message taken back from the client: its queue and its seq there.
pub(super) type Settled = (QueueId, u64);

impl Channel {
    pub(super) fn new(serial: u32) -> Channel {
        Channel {
            serial,
            state: ChannelState::Open,
            incoming: None,
            confirm: None,
            tx: None,
            tx_confirms: Confirms::default(),
            content_held: 0,
            prefetch_count: 0,
            prefetch_global: 0,
            held: VecDeque::new(),
            consumers: HashMap::new(),
            unacked: Unacked::default(),
            touched: Vec::new(),
            last_queue: None,
            reply_queue: None,
            published: 0,
            acked: 0,
        }
    }

    /// What this channel published, delivered (one tag per delivery or
    /// get) and had acked.
    pub(super) fn totals(&self) -> MessageTotals {
        MessageTotals {
            published: self.published,
            delivered: self.unacked.next_tag,
            acked: self.acked,
        }
    }

    pub(super) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    pub(super) fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// The channel is closing: its consumers, the publish being assembled
    /// and its unacked deliveries are dropped here (its queues requeue
    /// them); returns the queues to tell.
    pub(super) fn release(&mut self) -> Vec<QueueId> {
        self.consumers.clear();
        self.incoming = None;
        self.unacked.drain().for_each(drop);
        std::mem::take(&mut self.touched)
    }

    /// Queues this channel used, for a connection that is going away.
    pub(super) fn take_touched(&mut self) -> Vec<QueueId> {
        std::mem::take(&mut self.touched)
    }

    pub(super) fn touch(&mut self, queue: QueueId) {
        if !self.touched.contains(&queue) {
            self.touched.push(queue);
        }
    }

    /// basic.qos: prefetch_size is not supported (540, as RabbitMQ).
    pub(super) fn qos(&mut self, qos: &BasicQos) -> Result<(), AmqpError> {
        if qos.prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format!(
                "prefetch_size!=0 ({})",
                qos.prefetch_size
            )));
        }
        match qos.global {
            true => self.prefetch_global = qos.prefetch_count,
            false => self.prefetch_count = qos.prefetch_count,
        }
        Ok(())
    }

    // Content assembly.

    /// A method frame while a publish waits for its content is an error.
    pub(super) fn is_assembling(&self) -> bool {
        self.incoming.is_some()
    }

    /// basic.publish: its header and body frames follow.
    pub(super) fn start_publish(&mut self, method: BasicPublish) -> Result<(), AmqpError> {
        if method.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.incoming = Some(Incoming {
            publish: method,
            header: None,
            body: Body::Empty,
        });
        Ok(())
    }

    /// The content header of the publish being assembled; returns the body
    /// size it announces. Errors are hard (the frame was not expected).
    pub(super) fn content_header(&mut self, header: ContentHeader) -> Result<u64, AmqpError> {
        let Some(incoming) = self.incoming.as_mut().filter(|i| i.header.is_none()) else {
            return Err(unexpected_content());
        };
        if header.class_id != BasicPublish::CLASS_ID {
            return Err(AmqpError::new(
                reply_code::UNEXPECTED_FRAME,
                format!(
                    "content header for class {} after basic.publish",
                    header.class_id
                ),
            ));
        }
        let body_size = header.body_size;
        incoming.header = Some(header);
        Ok(body_size)
    }

    /// A body frame; returns whether the body is complete. Errors are hard.
    pub(super) fn content_body(&mut self, chunk: Bytes) -> Result<bool, AmqpError> {
        let Some(Incoming {
            header: Some(header),
            body,
            ..
        }) = self.incoming.as_mut()
        else {
            return Err(unexpected_content());
        };
        let expected = header.body_size;
        body.push(chunk, usize::try_from(expected).unwrap_or(usize::MAX));
        let received = body.len() as u64;
        if received > expected {
            return Err(AmqpError::new(
                reply_code::FRAME_ERROR,
                format!("body larger than the {expected} bytes its header announced"),
            ));
        }
        Ok(received == expected)
    }

    /// The publish whose content is complete.
    pub(super) fn take_publish(&mut self) -> Option<Publish> {
        match self.incoming.take()? {
            Incoming {
                publish,
                header: Some(header),
                body,
            } => Some(Publish {
                method: publish,
                header,
                body: body.into_bytes(),
            }),
            Incoming { .. } => None,
        }
    }

    // Consumers and deliveries.

    /// basic.consume with `tag`: the prefetch its consumer gets, or 530
    /// for a tag in use.
    pub(super) fn check_new_consumer(&self, tag: &ShortStr) -> Result<u16, AmqpError> {
        if self.consumers.contains_key(tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        Ok(self.prefetch_count)
    }

    pub(super) fn consumer_started(&mut self, tag: ShortStr, queue: QueueId) {
        self.consumers.insert(tag, queue);
        self.touch(queue);
    }

    pub(super) fn consumer_queue(&self, tag: &ShortStr) -> Option<QueueId> {
        self.consumers.get(tag).copied()
    }

    /// Forgets a consumer; false if there was none by that tag.
    pub(super) fn remove_consumer(&mut self, tag: &ShortStr) -> bool {
        self.consumers.remove(tag).is_some()
    }

    /// Takes a delivery from a queue: returns it with its delivery tag when
    /// it may be written now, or keeps it while the global prefetch is full.
    /// None also when the channel or consumer is gone (`accepts`).
    pub(super) fn admit(&mut self, deliver: Deliver) -> Option<(Deliver, u64)> {
        if !deliver.no_ack && (!self.held.is_empty() || self.global_prefetch_full()) {
            self.held.push_back(deliver);
            return None;
        }
        let delivery_tag = self
            .unacked
            .next(deliver.queue, deliver.seq, !deliver.no_ack);
        Some((deliver, delivery_tag))
    }

    /// Whether a delivery for consumer `tag` can be taken at all.
    pub(super) fn accepts(&self, tag: &ShortStr) -> bool {
        self.state == ChannelState::Open && self.consumers.contains_key(tag)
    }

    /// The next held delivery, once acks have made room for it: with its
    /// delivery tag, or as an orphan to requeue when its consumer has gone.
    pub(super) fn release_held(&mut self) -> Option<Result<(Deliver, u64), Deliver>> {
        if self.global_prefetch_full() {
            return None;
        }
        let deliver = self.held.pop_front()?;
        if !self.consumers.contains_key(&deliver.consumer_tag) {
            return Some(Err(deliver));
        }
        let delivery_tag = self.unacked.next(deliver.queue, deliver.seq, true);
        Some(Ok((deliver, delivery_tag)))
    }

    fn global_prefetch_full(&self) -> bool {
        self.prefetch_global != 0 && self.unacked.len() >= usize::from(self.prefetch_global)
    }

    /// basic.get-ok: the delivery tag for a message got from `queue`.
    pub(super) fn got(&mut self, queue: QueueId, seq: u64, no_ack: bool) -> u64 {
        self.touch(queue);
        self.unacked.next(queue, seq, !no_ack)
    }

    // Acks.

    /// basic.ack / reject / nack in a transaction: kept for tx.commit
    /// (true), or not transactional (false: settle it now).
    pub(super) fn defer_settle(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    ) -> bool {
        let Some(actions) = self.tx.as_mut() else {
            return false;
        };
        actions.push(TxAction::Settle {
            delivery_tag,
            multiple,
            action,
        });
        true
    }

    /// Settles `delivery_tag` (and, with `multiple`, every earlier one)
    /// into `settled`; 406 for a tag this channel does not hold.
    pub(super) fn settle(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
        settled: &mut Vec<Settled>,
    ) -> Result<(), AmqpError> {
        let before = settled.len();
        let known = self.unacked.settle(delivery_tag, multiple, |entry| {
            settled.push((entry.queue, entry.seq))
        });
        if !known {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {delivery_tag}"
            )));
        }
        if action == Settlement::Ack {
            self.acked += (settled.len() - before) as u64;
        }
        Ok(())
    }

    /// basic.recover: everything unacked goes back to its queue.
    pub(super) fn recover(&mut self, settled: &mut Vec<Settled>) {
        settled.extend(self.unacked.drain().map(|entry| (entry.queue, entry.seq)));
    }

    // Confirms and transactions.

    pub(super) fn confirm_select(&mut self) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        self.confirm.get_or_insert_with(Confirms::default);
        Ok(())
    }

    pub(super) fn tx_select(&mut self) -> Result<(), AmqpError> {
        if self.confirm.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from confirm to tx mode",
            ));
        }
        self.tx.get_or_insert_with(Vec::new);
        Ok(())
    }

    /// A complete publish: kept for tx.commit in a transaction (returned
    /// as None), or to be routed now.
    pub(super) fn defer_publish(&mut self, publish: Publish) -> Option<Publish> {
        match self.tx.as_mut() {
            Some(actions) => {
                actions.push(TxAction::Publish(publish));
                None
            }
            None => Some(publish),
        }
    }

    /// tx.commit: what the transaction deferred, in order.
    pub(super) fn take_tx(&mut self) -> Result<Vec<TxAction>, AmqpError> {
        match self.tx.as_mut() {
            Some(actions) => Ok(std::mem::take(actions)),
            None => Err(not_transactional()),
        }
    }

    /// tx.rollback: drops what the transaction deferred.
    pub(super) fn rollback(&mut self) -> Result<(), AmqpError> {
        match self.tx.as_mut() {
            Some(actions) => {
                actions.clear();
                Ok(())
            }
            None => Err(not_transactional()),
        }
    }

    /// The answer the next routed publish wants from its shards: a
    /// confirm tag, a transaction's own count, or none.
    pub(super) fn next_publish_tag(&mut self, committed: bool) -> ConfirmTag {
        self.published += 1;
        let tag = match (&self.confirm, committed) {
            (_, true) => self.tx_confirms.next_tag(),
            (Some(confirm), false) => confirm.next_tag(),
            (None, false) => return ConfirmTag::NONE,
        };
        ConfirmTag {
            serial: self.serial,
            tag,
        }
    }

    /// The publish numbered by `next_publish_tag` went to `shards` queues.
    pub(super) fn routed(&mut self, confirm: ConfirmTag, shards: u32) {
        if confirm.tag == 0 {
            return;
        }
        match self.confirm.as_mut() {
            Some(confirm) => confirm.publish(shards),
            None => self.tx_confirms.publish(shards),
        }
    }

    /// One queue's shard answered a publish; an answer meant for an
    /// earlier channel with this number is dropped.
    pub(super) fn answer(&mut self, answered: ConfirmTag, stored: bool) {
        if answered.serial != self.serial {
            return;
        }
        match self.confirm.as_mut() {
            Some(confirm) => confirm.answer(answered.tag, stored),
            None => self.tx_confirms.answer(answered.tag, stored),
        }
    }

    /// tx.commit: commit-ok once every publish so far is answered.
    pub(super) fn commit(&mut self) {
        let last = self.tx_confirms.published();
        self.tx_confirms.commits.push_back(last);
    }

    /// The replies the answered publishes allow, in order: basic.ack and
    /// basic.nack runs (with `multiple`) on a confirming channel, the
    /// commit-oks whose publishes are all answered on a transactional one.
    pub(super) fn answered(&mut self, mut out: impl FnMut(Method)) {
        let Some(confirm) = self.confirm.as_mut() else {
            let tx = &mut self.tx_confirms;
            tx.take_answered(|_, _, _| {});
            while tx
                .commits
                .front()
                .is_some_and(|&last| last <= tx.answered())
            {
                tx.commits.pop_front();
                out(Method::TxCommitOk(TxCommitOk {}));
            }
            return;
        };
        confirm.take_answered(|delivery_tag, count, acked| {
            let multiple = count > 1;
            out(match acked {
                true => Method::BasicAck(BasicAck {
                    delivery_tag,
                    multiple,
                }),
                false => Method::BasicNack(BasicNack {
                    delivery_tag,
                    multiple,
                    requeue: false,
                }),
            });
        });
    }
}

/// A header or body frame where a method was due (RabbitMQ's words).
pub(super) fn unexpected_content() -> AmqpError {
    AmqpError::new(
        reply_code::UNEXPECTED_FRAME,
        "expected method frame, got non method frame instead",
    )
}

fn not_transactional() -> AmqpError {
    AmqpError::precondition_failed("channel is not transactional")
}
