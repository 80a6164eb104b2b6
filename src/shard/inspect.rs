//! What the management API asks of a shard, run on the shard's own thread
//! (from a `bridge` command): figures of the queues it owns,
//! its connections, and the queue and publish operations the API offers.
//! Nothing here is on the data path.

use std::rc::Rc;

use super::{ConfirmTag, ConnectionInfo, Shard, ShardMsg};
use crate::ids::{ConnectionId, QueueId, ShardId, MANAGEMENT_CHANNEL};
use crate::message::{parse_expiration, Message, MessageContent};
use crate::protocol::properties::scan_properties;
use crate::protocol::{AmqpError, FieldTable, ShortStr};
use crate::queue::{GetResult, MessageTotals, Settlement};
use crate::routing::MessageFields;

/// One queue's figures, as its owning shard sees them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueSample {
    pub id: QueueId,
    pub ready: u32,
    pub unacked: u32,
    pub consumers: u32,
    pub totals: MessageTotals,
}

/// The node's memory and disk against their limits, and the alarms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeResources {
    /// Resident bytes; None where the kernel does not say.
    pub mem_used: Option<u64>,
    pub mem_limit: u64,
    pub mem_alarm: bool,
    /// Free bytes under the data directory; None where the file system
    /// does not say.
    pub disk_free: Option<u64>,
    pub disk_free_limit: u64,
    /// Short of disk space, or the message store failed.
    pub disk_free_alarm: bool,
}

impl Shard {
    /// What `/api/nodes` and the alarms health check show: the same
    /// readings and limits the shards' watches use.
    pub(crate) fn node_resources(&self) -> NodeResources {
        let (config, load) = (&self.shared.config, &self.shared.load);
        let total = crate::memory::total_memory();
        let (disk_free, disk_free_limit) = self.disk_watch().free_and_limit();
        NodeResources {
            mem_used: crate::memory::ResidentSet::open().bytes(),
            mem_limit: config.memory_high_watermark.bytes(total),
            mem_alarm: load.memory_alarm(),
            disk_free,
            disk_free_limit,
            disk_free_alarm: load.disk_alarm(),
        }
    }

    /// Every queue this shard owns, with its counts.
    pub(crate) fn queue_samples(&self) -> Vec<QueueSample> {
        self.queues
            .borrow()
            .iter()
            .map(|(&id, q)| QueueSample {
                id,
                ready: q.message_count(),
                unacked: q.unacked_count(),
                consumers: q.consumer_count(),
                totals: q.totals(),
            })
            .collect()
    }

    /// (vhost, exchange, publish_in, publish_out) of every exchange that
    /// saw a publish on this shard.
    pub(crate) fn exchange_counts(&self) -> Vec<(ShortStr, ShortStr, u64, u64)> {
        let catalog = self.catalog.borrow();
        let mut counts = Vec::new();
        for vhost in catalog.vhost_names() {
            let Some(table) = catalog.routing(vhost.as_bytes()) else {
                continue;
            };
            counts.extend(
                table
                    .exchange_counts()
                    .map(|(name, published_in, published_out)| {
                        (vhost.clone(), name.clone(), published_in, published_out)
                    }),
            );
        }
        counts
    }

    /// Adds what a closing connection's channels did to the shard's total.
    pub(crate) fn retire_connection_totals(&self, totals: MessageTotals) {
        let mut retired = self.retired_totals.get();
        retired += totals;
        self.retired_totals.set(retired);
    }

    /// What the channels of this shard's closed connections did.
    pub(crate) fn retired_totals(&self) -> MessageTotals {
        self.retired_totals.get()
    }

    /// Every consumer of the queues this shard owns: (queue, connection,
    /// channel, tag).
    pub(crate) fn consumer_list(&self) -> Vec<(QueueId, ConnectionId, u16, ShortStr)> {
        let queues = self.queues.borrow();
        let mut list = Vec::new();
        for (&id, q) in queues.iter() {
            for key in q.consumer_keys() {
                list.push((id, key.channel.conn, key.channel.number, key.tag.clone()));
            }
        }
        list
    }

    pub(crate) fn connection_infos(&self) -> Vec<ConnectionInfo> {
        self.connections
            .borrow()
            .all()
            .iter()
            .map(|conn| conn.info())
            .collect()
    }

    /// Closes the connection called `name` with 320 and `reason`; false if
    /// this shard has none by that name.
    pub(crate) fn close_connection_named(&self, name: &str, reason: &str) -> bool {
        let found: Vec<_> = self
            .connections
            .borrow()
            .all()
            .into_iter()
            .filter(|conn| conn.info().name == name)
            .collect();
        let any = !found.is_empty();
        for conn in found {
            conn.force_close(reason);
        }
        any
    }

    /// Takes up to `count` messages from a queue this shard owns; with
    /// `requeue` they go back (marked redelivered), as the API's
    /// `ack_requeue_true` does. A head on disk is read back first.
    pub(crate) async fn queue_take(
        self: Rc<Self>,
        queue: QueueId,
        count: usize,
        requeue: bool,
    ) -> Vec<GetResult> {
        let mut taken = Vec::new();
        while self.take_resident(queue, count, requeue, &mut taken) {
            self.read_head_back(queue).await;
        }
        if requeue {
            let seqs: Vec<u64> = taken.iter().map(|got| got.seq).collect();
            if let Some(q) = self.queues.borrow_mut().get_mut(&queue) {
                q.settle(MANAGEMENT_CHANNEL, &seqs, Settlement::Requeue);
            }
        }
        self.dispatch(queue);
        taken
    }

    /// Takes messages until `taken` has `count` or the queue's head is not
    /// in memory; true when more are to come once the head is read back.
    fn take_resident(
        self: &Rc<Self>,
        queue: QueueId,
        count: usize,
        requeue: bool,
        taken: &mut Vec<GetResult>,
    ) -> bool {
        let mut queues = self.queues.borrow_mut();
        let Some(q) = queues.get_mut(&queue) else {
            return false;
        };
        while taken.len() < count {
            let Some(got) = q.get(MANAGEMENT_CHANNEL, !requeue, &**self) else {
                break;
            };
            taken.push(got);
        }
        taken.len() < count && q.head_is_paged()
    }

    /// Purges a queue this shard owns; None if it has no such queue.
    pub fn queue_purge(&self, queue: QueueId) -> Option<u32> {
        let purged = self.queues.borrow_mut().get_mut(&queue).map(|q| q.purge());
        // The purged messages leave the log too.
        self.dispatch(queue);
        purged
    }

    /// Routes a message on this shard's replica, as basic.publish does, and
    /// sends it to the owners of the queues it reached. Returns whether it
    /// was routed.
    pub(crate) fn publish_message(
        &self,
        vhost: &[u8],
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: bytes::Bytes,
        headers: Option<&FieldTable>,
        body: bytes::Bytes,
    ) -> Result<bool, AmqpError> {
        let catalog = self.catalog.borrow();
        catalog.exchange_accepts_publish(vhost, &exchange)?;
        let table = catalog
            .routing(vhost)
            .ok_or_else(|| AmqpError::not_found("no vhost"))?;
        let mut routes = Vec::new();
        let fields = MessageFields {
            headers,
            properties: Some(&properties),
            first_routing_key: None,
        };
        table.route(&exchange, &routing_key, fields, &mut routes);
        let summary = scan_properties(&properties)?;
        let expiration_ms = summary
            .expiration
            .as_ref()
            .map(parse_expiration)
            .transpose()?;
        let message = Message::new(MessageContent {
            exchange,
            routing_key,
            properties,
            body,
            priority: summary.priority.unwrap_or(0),
            persistent: summary.delivery_mode == Some(2),
            expiration_ms,
        });
        for &queue in &routes {
            if let Some(def) = catalog.queue_by_id(queue) {
                let owner: ShardId = def.shard_id;
                let message = message.clone();
                self.send(
                    owner,
                    ShardMsg::Publish {
                        queue,
                        message,
                        publisher: MANAGEMENT_CHANNEL,
                        confirm: ConfirmTag::NONE,
                    },
                );
            }
        }
        Ok(!routes.is_empty())
    }
}
