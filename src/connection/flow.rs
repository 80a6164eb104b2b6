//! Publisher flow control, the connection side: how far this connection's
//! publishes may run ahead of the shards that process them, and the memory
//! alarm's block.
//!
//! For each shard, the connection counts the publishes (and body bytes) it
//! has routed there that the shard has not yet paid credit for
//! (`shard::flow`). When a shard is owed a whole window the reader stops
//! reading the socket until credit comes back, so TCP pushes back on the
//! client and a flood can never be more than one window per shard ahead of
//! the queues it feeds. While the memory alarm is raised, a connection that
//! publishes is blocked the same way, after telling clients that asked for
//! it (connection.blocked / connection.unblocked, as RabbitMQ does).

use std::cell::RefCell;

use crate::ids::ShardId;
use crate::protocol::method::{ConnectionBlocked, ConnectionUnblocked, Method};
use crate::protocol::ShortStr;
use crate::runtime::notify::Notify;
use crate::shard::{PublishCredit, DISK_ALARM_REASON, PUBLISH_CREDIT_BYTES};

use super::Connection;

/// The reason RabbitMQ gives in connection.blocked for the memory alarm.
const MEMORY_ALARM_REASON: &str = "low on memory";

pub(super) struct PublisherFlow {
    window: PublishCredit,
    /// Per shard: routed there and not yet paid for.
    in_flight: RefCell<Vec<PublishCredit>>,
    credit_returned: Notify,
}

impl PublisherFlow {
    pub(super) fn new(shard_count: usize, publish_credit: u32) -> PublisherFlow {
        PublisherFlow {
            window: PublishCredit {
                messages: publish_credit,
                bytes: PUBLISH_CREDIT_BYTES,
            },
            in_flight: RefCell::new(vec![PublishCredit::default(); shard_count]),
            credit_returned: Notify::new(),
        }
    }

    /// A publish of `bytes` went to shard `to`.
    pub(super) fn sent(&self, to: ShardId, bytes: u64) {
        if let Some(in_flight) = self.in_flight.borrow_mut().get_mut(to) {
            in_flight.messages += 1;
            in_flight.bytes += bytes;
        }
    }

    pub(super) fn returned(&self, from: ShardId, credit: PublishCredit) {
        if let Some(in_flight) = self.in_flight.borrow_mut().get_mut(from) {
            debug_assert!(
                in_flight.messages >= credit.messages && in_flight.bytes >= credit.bytes,
                "shard {from} paid more credit than it was owed"
            );
            in_flight.messages = in_flight.messages.saturating_sub(credit.messages);
            in_flight.bytes = in_flight.bytes.saturating_sub(credit.bytes);
        }
        self.credit_returned.notify();
    }

    /// Whether some shard is owed a whole window.
    fn exhausted(&self) -> bool {
        self.in_flight.borrow().iter().any(|in_flight| {
            in_flight.messages >= self.window.messages || in_flight.bytes >= self.window.bytes
        })
    }

    /// Wakes a reader waiting for credit (the connection is closing).
    pub(super) fn wake(&self) {
        self.credit_returned.notify();
    }
}

impl Connection {
    /// After a publish: waits, without reading, while the memory alarm
    /// blocks publishers, while a shard is owed a whole window, and while
    /// `congested` (a shard's outbox) is full.
    pub(super) async fn pace_publisher(&self, congested: Option<ShardId>) {
        let board = &self.shard.shared.load;
        let alarm = board.memory_alarm() || board.disk_alarm();
        if !alarm && congested.is_none() && !self.flow.exhausted() {
            return;
        }
        // What was routed is confirmed before the reader stops.
        self.flush_confirms();
        if alarm {
            self.pause(self.block_while_alarm()).await;
        }
        if self.flow.exhausted() {
            self.pause(async {
                while self.flow.exhausted() && !self.is_closed() {
                    self.flow.credit_returned.wait().await;
                }
            })
            .await;
        }
        if let Some(shard) = congested {
            self.pause(self.shard.mesh.wait_uncongested(shard)).await;
        }
    }

    async fn block_while_alarm(&self) {
        let notify = self.state.borrow().blocked_notify;
        let board = &self.shard.shared.load;
        if notify {
            let reason = ShortStr::from_static(if board.disk_alarm() {
                DISK_ALARM_REASON
            } else {
                MEMORY_ALARM_REASON
            });
            let blocked = ConnectionBlocked { reason };
            self.out.method(0, &Method::ConnectionBlocked(blocked));
        }
        self.shard
            .alarm_cleared
            .wait_until(|| !(board.memory_alarm() || board.disk_alarm()) || self.is_closed())
            .await;
        if notify && !self.is_closed() {
            let unblocked = Method::ConnectionUnblocked(ConnectionUnblocked {});
            self.out.method(0, &unblocked);
        }
    }

    /// Credit from a shard that processed what this connection sent it.
    pub(crate) fn publish_credit(&self, from: ShardId, credit: PublishCredit) {
        self.flow.returned(from, credit);
    }
}
