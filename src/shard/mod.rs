//! One shard: the state a single pinned thread owns, and the handlers for
//! every message the ring mesh brings it.
//!
//! A shard owns the queues that hash to it, the connections it accepted and
//! a replica of the metadata catalog. Nothing here is shared with another
//! thread: other shards are reached only by [`ShardMsg`]s on the mesh.
//! Handlers are synchronous and never wait, which is what keeps the mesh
//! free of deadlock (see `runtime::mesh`).
//!
//! Shard 0 doubles as the metadata coordinator: every declare, bind and
//! delete goes to it, is validated against its replica, then applied on
//! every shard in the same order; the -ok is sent only after all shards have
//! applied it (see `coordinator`).

pub(crate) mod bridge;
mod client;
mod compaction;
mod confirms;
mod coordinator;
mod dead_letters;
pub(crate) mod delayed;
mod flow;
mod inspect;
mod load;
pub mod message;
mod paging;
mod storage;
pub(crate) use storage::DISK_ALARM_REASON;
pub(crate) use storage::{StoreSetup, STORE_BLOCKING_THREADS};
mod timer;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::RandomState;
use hashbrown::HashMap;

use crate::catalog::{Catalog, MetaOp, MetaOutcome, QueueDef};
use crate::config::Config;
use crate::definitions::log::DefinitionsLog;
use crate::ids::{ChannelId, ConnectionId, QueueId, ShardId, MANAGEMENT_CONNECTION};
use crate::message::Message;
use crate::protocol::AmqpError;
use crate::queue::{Clock, MessageTotals, Published, Queue};
use crate::runtime::notify::{Notify, Waiters};
use crate::runtime::{self, mesh::Mesh};
use crate::store;
use bridge::Bridge;
pub(crate) use client::Client;
use client::Clients;
pub(crate) use client::{ChannelInfo, ConnectionInfo, TrafficTotals};
use confirms::Confirms;
use coordinator::Coordinator;
pub(crate) use coordinator::Requester;
use delayed::DelayedMessages;
use flow::Flow;
pub(crate) use flow::PublishCredit;
pub(crate) use flow::PUBLISH_CREDIT_BYTES;
pub(crate) use load::LoadBoard;
pub use message::*;
use timer::Timer;

/// Process-wide facts every shard reads and none writes.
pub struct Shared {
    pub config: Config,
    pub shutdown: Arc<AtomicBool>,
    /// The management API's command inboxes, one per shard.
    pub(crate) bridge: Bridge,
    pub load: LoadBoard,
    /// The message store's start: what recovery read.
    pub store: StoreSetup,
    /// The durable definitions as declares, which every shard applies to
    /// its catalog replica before it accepts a connection.
    pub replay: Vec<MetaOp>,
    /// The definitions log, which shard 0 takes for its coordinator.
    pub definitions: Mutex<Option<DefinitionsLog>>,
}

pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub mesh: Rc<Mesh<ShardMsg>>,
    pub catalog: RefCell<Catalog>,
    queues: RefCell<HashMap<QueueId, Queue, RandomState>>,
    connections: RefCell<Clients>,
    next_connection_id: Cell<u32>,
    coordinator: RefCell<Coordinator>,
    /// The start of this shard's clock (queue TTLs and expiry).
    epoch: Instant,
    timer: Timer,
    /// Messages of x-delayed-message exchanges, waiting for their delay.
    delayed: RefCell<DelayedMessages>,
    /// What the channels of this shard's closed connections did, for the
    /// overview's `message_stats`.
    retired_totals: Cell<MessageTotals>,
    /// Publish credit owed to connections (see `flow`).
    flow: RefCell<Flow>,
    /// Something is owed: the flusher should pay it.
    flow_owed: Notify,
    /// Changes wait for the definitions log: its writer should run.
    definitions_due: Notify,
    /// Publisher confirms owed, or waiting for the log's sync.
    confirms: RefCell<Confirms>,
    store: OnceCell<storage::ShardStore>,
    paging: paging::Pager,
    /// Connections blocked by the memory alarm, waiting for it to clear.
    pub(crate) alarm_cleared: Waiters,
}

/// How often a shard runs the management API's commands: often enough
/// for an HTTP answer to feel immediate, rare enough to cost nothing.
const MANAGEMENT_POLL: Duration = Duration::from_millis(5);

/// How long a clean stop waits for the messages still in flight between
/// shards once every connection is closed (acks and publishes the closed
/// connections forwarded): normally a few milliseconds.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

impl Shard {
    /// Sets up one shard on its executor: its store, the replayed
    /// definitions, its ring handlers and background tasks. Connections
    /// come from the listener the caller starts (`connection::listen`).
    pub fn start(shared: Arc<Shared>, id: ShardId, mesh: Rc<Mesh<ShardMsg>>) -> Rc<Shard> {
        let catalog = Catalog::new(mesh.shard_count());
        let flow = Flow::new(shared.config.publish_credit);
        let paging = paging::Pager::new(&shared.config, mesh.shard_count());
        let coordinator = match id {
            0 => Coordinator::new(
                shared
                    .definitions
                    .lock()
                    .ok()
                    .and_then(|mut log| log.take()),
            ),
            _ => Coordinator::default(),
        };
        let shard = Rc::new(Shard {
            id,
            shared,
            mesh: mesh.clone(),
            catalog: RefCell::new(catalog),
            queues: RefCell::new(HashMap::default()),
            connections: RefCell::default(),
            next_connection_id: Cell::new(0),
            coordinator: RefCell::new(coordinator),
            epoch: Instant::now(),
            timer: Timer::default(),
            delayed: RefCell::default(),
            retired_totals: Cell::default(),
            flow: RefCell::new(flow),
            flow_owed: Notify::new(),
            definitions_due: Notify::new(),
            confirms: RefCell::new(Confirms::default()),
            store: OnceCell::new(),
            paging,
            alarm_cleared: Waiters::new(),
        });
        shard.open_store();
        shard.restore_delayed();
        shard.start_paging();
        let timekeeper = shard.clone();
        runtime::spawn(async move { timekeeper.run_timer().await });
        shard.replay();
        shard.drop_unclaimed();
        if shard.coordinator.borrow().is_logged() {
            runtime::spawn(shard.clone().write_definitions());
        }
        let handler = shard.clone();
        mesh.start_receivers(Rc::new(move |msg| handler.handle(msg)));
        if shard.shared.config.management_addr().is_some() {
            runtime::spawn(shard.clone().serve_management());
        }
        let flusher = shard.clone();
        runtime::spawn(async move { flusher.pay_credit_owed().await });
        shard
    }

    /// Runs the shard's tick until shutdown, then closes its connections,
    /// waits for what they sent to other shards to be handled, makes the
    /// log durable and closes its side of the mesh.
    pub(crate) async fn serve_until_shutdown(&self) {
        self.tick_until_shutdown().await;
        self.close_all_connections().await;
        if !self.mesh.settle(SETTLE_LIMIT).await {
            tracing::warn!(
                "shard {}: messages between shards were still in flight after {SETTLE_LIMIT:?}; \
                 stopping without them",
                self.id
            );
        }
        self.drain_store().await;
        self.log_store_totals();
        self.mesh.close();
    }

    /// Applies the durable definitions to this shard's fresh catalog, and
    /// creates the queues this shard owns, as if they were declared now.
    /// Every shard replays the same declares in the same order, so the
    /// replicas start equal, as after any broadcast change.
    fn replay(&self) {
        for op in &self.shared.replay {
            let applied = self.catalog.borrow_mut().apply(op);
            match applied {
                Ok(outcome) => {
                    self.apply_outcome(&outcome);
                }
                Err(err) if self.id == 0 => {
                    tracing::warn!("a durable definition did not apply: {err} ({op:?})");
                }
                Err(_) => {}
            }
        }
        if self.id == 0 {
            let catalog = self.catalog.borrow();
            tracing::info!(
                "recovered {} durable definitions: {} vhosts, {} queues, {} users",
                self.shared.replay.len(),
                catalog.vhost_names().count(),
                catalog.queues().count(),
                catalog.users().count()
            );
        }
    }

    /// Runs the management API's commands for this shard until shutdown.
    async fn serve_management(self: Rc<Self>) {
        let inbox = self.shared.bridge.inbox(self.id);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            runtime::sleep(MANAGEMENT_POLL).await;
            bridge::drain(&inbox, &self);
        }
    }

    /// A new connection's id: this shard's, and a number unique here.
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        let local_id = self.next_connection_id.get();
        self.next_connection_id.set(local_id.wrapping_add(1));
        ConnectionId {
            shard_id: self.id as u32,
            local_id,
        }
    }

    /// RabbitMQ's shutdown: every client gets connection.close 320.
    async fn close_all_connections(&self) {
        let connections = self.connections.borrow().all();
        for conn in &connections {
            conn.clone()
                .force_close("broker forced connection closure with reason 'shutdown'");
        }
        for conn in connections {
            conn.wait_closed(Duration::from_secs(2)).await;
        }
    }

    /// A connection this shard accepted; the shard holds it weakly.
    pub(crate) fn register_connection(&self, id: ConnectionId, conn: Weak<dyn Client>) {
        self.connections.borrow_mut().insert(id, conn);
    }

    pub(crate) fn unregister_connection(&self, id: ConnectionId) {
        self.connections.borrow_mut().remove(id);
    }

    fn connection(&self, id: ConnectionId) -> Option<Rc<dyn Client>> {
        self.connections.borrow().get(id)
    }

    pub fn send(&self, to: ShardId, msg: ShardMsg) {
        self.mesh.send(to, msg);
    }

    /// The shard that owns `queue`, from this shard's catalog replica.
    pub(crate) fn owner_of(&self, queue: QueueId) -> Option<ShardId> {
        self.catalog
            .borrow()
            .queue_by_id(queue)
            .map(|def| def.shard_id)
    }

    /// Sends a metadata change to the coordinator (shard 0).
    pub(crate) fn request_meta(&self, reply_to: Option<ChannelId>, op: MetaOp) {
        self.send_meta_request(reply_to, op, 0);
    }

    fn send_meta_request(&self, reply_to: Option<ChannelId>, op: MetaOp, message_count: u32) {
        let request = MetaMsg::Request {
            reply_to,
            op,
            message_count,
        };
        self.send(0, ShardMsg::Meta(Box::new(request)));
    }

    fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish {
                queue,
                message,
                publisher,
                confirm,
            } => self.publish(queue, message, publisher, confirm),
            ShardMsg::DeadLetter { queue, message } => {
                self.enqueue(queue, message);
                self.dispatch(queue);
            }
            ShardMsg::Confirms { conn, answers } => {
                if let Some(connection) = self.connection(conn) {
                    connection.confirmed(&answers);
                }
            }
            ShardMsg::PublishCredit { conn, from, credit } => {
                if let Some(connection) = self.connection(conn) {
                    connection.publish_credit(from, credit);
                }
            }
            ShardMsg::Settle {
                queue,
                holder,
                seq,
                action,
            } => self.settle(queue, holder, std::slice::from_ref(&seq), action),
            ShardMsg::SettleMany {
                queue,
                holder,
                seqs,
                action,
            } => self.settle(queue, holder, &seqs, action),
            ShardMsg::Credit {
                queue,
                consumer,
                credit,
            } => {
                if let Some(q) = self.queues.borrow_mut().get_mut(&queue) {
                    q.add_credit(&consumer, credit);
                }
                self.dispatch(queue);
            }
            ShardMsg::HolderClosed {
                conn,
                channel,
                queues,
            } => self.holder_closed(conn, channel, &queues),
            ShardMsg::QueueRequest {
                queue,
                reply_to,
                request,
            } => self.queue_request(queue, reply_to, request),
            ShardMsg::Deliver(deliver) => self.deliver(deliver),
            ShardMsg::ConsumerGone {
                channel,
                consumer_tag,
            } => {
                if let Some(connection) = self.connection(channel.conn) {
                    connection.consumer_gone(channel.number, &consumer_tag);
                }
            }
            ShardMsg::Reply { to, reply } => {
                if let Some(connection) = self.connection(to.conn) {
                    connection.reply(to.number, reply);
                }
            }
            ShardMsg::Meta(meta) => self.handle_meta(*meta),
        }
    }

    /// Hands a delivery to its connection; one that can no longer take it
    /// (channel or consumer gone) goes back to its queue.
    fn deliver(&self, deliver: Deliver) {
        let holder = deliver.channel;
        let (queue, seq, no_ack) = (deliver.queue, deliver.seq, deliver.no_ack);
        let accepted = self
            .connection(holder.conn)
            .is_some_and(|connection| connection.deliver(deliver));
        if !accepted && !no_ack {
            if let Some(owner) = self.owner_of(queue) {
                self.send(
                    owner,
                    ShardMsg::Settle {
                        queue,
                        holder,
                        seq,
                        action: Settlement::Requeue,
                    },
                );
            }
        }
    }

    fn settle(
        self: &Rc<Self>,
        queue: QueueId,
        holder: ChannelId,
        seqs: &[u64],
        action: Settlement,
    ) {
        if let Some(q) = self.queues.borrow_mut().get_mut(&queue) {
            q.settle(holder, seqs, action);
        }
        self.dispatch(queue);
    }

    /// Enqueues a routed message and owes its publisher the credit for it,
    /// or holds that back while the queue is throttled (see `flow`).
    /// A confirming publisher is answered when the message is stored
    /// (`storage::confirm`).
    fn publish(&self, queue: QueueId, message: Message, publisher: ChannelId, confirm: ConfirmTag) {
        let bytes = message.body_size() as u64;
        let enqueued = self.enqueue(queue, message);
        let answer = ConfirmAnswer {
            channel: publisher.number,
            confirm,
            stored: enqueued != Enqueued::Rejected,
        };
        let lsn = match enqueued {
            Enqueued::Logged(lsn) => Some(lsn),
            _ => None,
        };
        self.confirm(publisher.conn, answer, lsn);
        let throttled = self.dispatch(queue);
        let due = self
            .flow
            .borrow_mut()
            .processed(publisher.conn, queue, bytes, throttled);
        match due {
            Some(credit) => self.pay(publisher.conn, credit),
            None => self.flow_owed.notify(),
        }
    }

    fn enqueue(&self, queue: QueueId, mut message: Message) -> Enqueued {
        let mut queues = self.queues.borrow_mut();
        let Some(q) = queues.get_mut(&queue) else {
            // Deleted meanwhile: RabbitMQ confirms such a publish.
            return Enqueued::InMemory;
        };
        // Behind other ready messages it will wait: it should not keep
        // its connection's read buffer alive meanwhile.
        if q.message_count() > 0 {
            message.compact();
        }
        // Only the store path pays for a second handle.
        let logged = q.is_logged(&message).then(|| message.clone());
        match (q.publish(message, self), logged) {
            (Published::Rejected, _) => Enqueued::Rejected,
            (Published::Accepted { .. }, None) => Enqueued::InMemory,
            (Published::Accepted { seq }, Some(message)) => {
                match self.log_enqueue(queue, q, seq, &message) {
                    Some(lsn) => Enqueued::Logged(lsn),
                    None => Enqueued::Rejected,
                }
            }
        }
    }

    fn pay(&self, conn: ConnectionId, credit: PublishCredit) {
        // The management API publishes one message per request, on no
        // shard's connection: it needs no credit back.
        if conn == MANAGEMENT_CONNECTION {
            return;
        }
        let from = self.id;
        self.send(
            conn.shard_id as ShardId,
            ShardMsg::PublishCredit { conn, from, credit },
        );
    }

    /// The flusher: pays what is owed once the tasks that ran up the debt
    /// have yielded, so credit goes back in batches.
    async fn pay_credit_owed(&self) {
        loop {
            self.flow_owed.wait().await;
            let mut flow = self.flow.borrow_mut();
            flow.pay_all(&mut |conn, credit| self.pay(conn, credit));
            drop(flow);
            let mut confirms = self.confirms.borrow_mut();
            confirms.pay_all(&mut |conn, answers| {
                self.send(
                    conn.shard_id as ShardId,
                    ShardMsg::Confirms { conn, answers },
                );
            });
        }
    }

    /// Whatever is owed is paid within a tick, whatever else happens: a
    /// publisher waiting for credit has no other way to get it.
    fn pay_owed_credit_soon(&self) {
        if self.flow.borrow().has_owed() {
            self.flow_owed.notify();
        }
    }

    /// No shard is saturated: throttled queues owe their publishers again.
    fn forgive_debts(&self) {
        let mut flow = self.flow.borrow_mut();
        if flow.has_debts() {
            flow.forgive_all();
            self.flow_owed.notify();
        }
    }

    /// Sends `queue`'s ready messages to consumers that can take them, sends
    /// what the queue dead-lettered meanwhile to its dead-letter exchange,
    /// re-arms the timer if the queue's deadline moved, then settles its
    /// publishers' credit: a throttled queue repays one message
    /// per delivery (none while its backlog is above twice the threshold,
    /// so that a burst from before the throttle drains), any other owes them
    /// all. Returns whether the queue is throttled.
    fn dispatch(&self, queue: QueueId) -> bool {
        let mut queues = self.queues.borrow_mut();
        let Some(q) = queues.get_mut(&queue) else {
            return false;
        };
        let delivered = self.deliver_ready(queue, q);
        self.publish_dead_letters(q);
        self.log_gone(queue, q);
        self.after_paging_change(queue, q);
        self.rearm(queue, q);
        let backlog = q.message_count();
        let throttled = q.consumer_count() > 0
            && backlog > flow::BACKLOG_MESSAGES
            && self.shared.load.any_saturated();
        drop(queues);
        let mut flow = self.flow.borrow_mut();
        if !throttled {
            flow.forgive(queue);
        } else if backlog <= 2 * flow::BACKLOG_MESSAGES {
            let delivered = u32::try_from(delivered).unwrap_or(u32::MAX);
            flow.repay(queue, delivered, &mut |conn, credit| self.pay(conn, credit));
        }
        // Debt turned into credit owed must reach the flusher: a publisher
        // that is out of credit sends nothing that would wake it.
        if flow.has_owed() {
            self.flow_owed.notify();
        }
        throttled
    }

    fn deliver_ready(&self, queue: QueueId, q: &mut Queue) -> usize {
        q.dispatch(self, &mut |delivery| {
            let to = delivery.consumer.channel.conn.shard_id as ShardId;
            let deliver = Deliver {
                owner: self.id,
                channel: delivery.consumer.channel,
                consumer_tag: delivery.consumer.tag,
                queue,
                seq: delivery.seq,
                redelivered: delivery.redelivered,
                no_ack: delivery.no_ack,
                message: delivery.message,
            };
            self.mesh.send(to, ShardMsg::Deliver(deliver));
        })
    }

    fn holder_closed(
        self: &Rc<Self>,
        conn: ConnectionId,
        channel: Option<u16>,
        queues: &[QueueId],
    ) {
        for &queue in queues {
            let removed = self.queues.borrow_mut().get_mut(&queue).map(|q| {
                let removed = match channel {
                    Some(number) => q.remove_channel(ChannelId { conn, number }),
                    None => q.remove_connection(conn),
                };
                q.touch(&**self);
                removed
            });
            match removed {
                Some(removed) if removed.auto_delete_now => self.auto_delete(queue),
                Some(_) => {
                    self.dispatch(queue);
                }
                None => {}
            }
        }
    }

    /// The last consumer of an auto-delete queue went away.
    fn auto_delete(&self, queue: QueueId) {
        self.delete_queue(queue, None, 0);
    }

    /// Has the coordinator delete `queue` everywhere; the reply, if any,
    /// goes to `reply_to` with the queue's last message count.
    fn delete_queue(&self, queue: QueueId, reply_to: Option<ChannelId>, message_count: u32) {
        let def = self.catalog.borrow().queue_by_id(queue).cloned();
        if let Some(def) = def {
            let op = MetaOp::QueueDelete {
                vhost: def.vhost,
                name: def.name,
            };
            self.send_meta_request(reply_to, op, message_count);
        }
    }

    fn queue_request(self: &Rc<Self>, queue: QueueId, reply_to: ChannelId, request: QueueRequest) {
        if self.park_get(queue, reply_to, &request) {
            return;
        }
        let reply = match self.run_queue_request(queue, reply_to, request) {
            Ok(Answer::Reply(reply)) => reply,
            // The coordinator answers once the queue is gone everywhere.
            Ok(Answer::Delete { message_count }) => {
                return self.delete_queue(queue, Some(reply_to), message_count)
            }
            Err(err) => Reply::Error(err),
        };
        let to = reply_to.conn.shard_id as ShardId;
        self.send(
            to,
            ShardMsg::Reply {
                to: reply_to,
                reply,
            },
        );
        self.dispatch(queue);
    }

    fn run_queue_request(
        &self,
        queue: QueueId,
        reply_to: ChannelId,
        request: QueueRequest,
    ) -> Result<Answer, AmqpError> {
        let mut queues = self.queues.borrow_mut();
        let Some(q) = queues.get_mut(&queue) else {
            // A consumer of a queue that is gone is cancelled already.
            return match request {
                QueueRequest::Cancel(_) => Ok(Answer::Reply(Reply::CancelOk)),
                _ => Err(AmqpError::not_found("queue was deleted")),
            };
        };
        q.touch(self);
        q.expire(self);
        let reply = match request {
            QueueRequest::Consume(spec) => {
                q.add_consumer(spec)?;
                Reply::ConsumeOk
            }
            QueueRequest::Cancel(consumer) => {
                if q.remove_consumer(&consumer).auto_delete_now {
                    return Ok(Answer::Delete { message_count: 0 });
                }
                Reply::CancelOk
            }
            QueueRequest::Get { no_ack } => {
                let got = q.get(reply_to, no_ack, self);
                Reply::Got(got.map(|got| Got {
                    queue,
                    seq: got.seq,
                    redelivered: got.redelivered,
                    message_count: got.message_count,
                    message: got.message,
                }))
            }
            QueueRequest::Purge => Reply::Purged {
                message_count: q.purge(),
            },
            QueueRequest::Delete {
                if_unused,
                if_empty,
            } => {
                let message_count = q.check_delete(if_unused, if_empty)?;
                return Ok(Answer::Delete { message_count });
            }
        };
        Ok(Answer::Reply(reply))
    }

    /// Applies what a metadata change means for this shard's own state:
    /// creates the queues it now owns and drops the ones deleted. Returns
    /// the declared queue's counts when this shard owns it.
    fn apply_outcome(&self, outcome: &MetaOutcome) -> Option<(u32, u32)> {
        match outcome {
            MetaOutcome::QueueDeclared { def, .. } if def.shard_id == self.id => {
                let counts = {
                    let mut queues = self.queues.borrow_mut();
                    let q = queues.entry(def.id).or_insert_with(|| {
                        let mut q = new_queue(def);
                        self.track_queue(def, &mut q);
                        q
                    });
                    q.touch(self);
                    q.expire(self);
                    (q.message_count(), q.consumer_count())
                };
                // Expired messages may have been dead-lettered, and an
                // x-expires queue needs its timer.
                self.dispatch(def.id);
                Some(counts)
            }
            MetaOutcome::QueueDeleted { queues, .. } => {
                self.drop_queues(queues);
                None
            }
            MetaOutcome::PoliciesApplied { queues } => {
                self.apply_policies(queues);
                None
            }
            MetaOutcome::VhostDeleted { vhost, queues } => {
                self.drop_queues(queues);
                let text = format!("vhost '{vhost}' is deleted");
                self.close_connections_where(|conn| conn.vhost() == *vhost, &text);
                None
            }
            MetaOutcome::UserDeleted { name } => {
                let text = format!("user '{name}' is deleted");
                self.close_connections_where(|conn| conn.user() == name.as_str(), &text);
                None
            }
            _ => None,
        }
    }

    /// Gives the queues this shard owns the settings a policy change made.
    fn apply_policies(&self, queues: &[QueueId]) {
        for &queue in queues {
            let settings = self
                .catalog
                .borrow()
                .queue_by_id(queue)
                .and_then(|def| (def.shard_id == self.id).then(|| def.settings.clone()));
            let Some(settings) = settings else {
                continue;
            };
            if let Some(q) = self.queues.borrow_mut().get_mut(&queue) {
                q.set_settings(settings, self);
            }
            // Dropped heads are dead-lettered, and the deadlines moved.
            self.dispatch(queue);
        }
    }

    fn drop_queues(&self, queues: &[QueueDef]) {
        for def in queues.iter().filter(|def| def.shard_id == self.id) {
            self.drop_queue(def.id);
        }
    }

    /// RabbitMQ closes the connections of a deleted vhost or user with
    /// 320 and `text`.
    fn close_connections_where(&self, doomed: impl Fn(&dyn Client) -> bool, text: &str) {
        let connections = self.connections.borrow().all();
        for conn in connections.into_iter().filter(|conn| doomed(&**conn)) {
            conn.force_close(text);
        }
    }

    /// Removes a deleted queue and tells its consumers' connections.
    fn drop_queue(&self, queue: QueueId) {
        let Some(mut q) = self.queues.borrow_mut().remove(&queue) else {
            return;
        };
        self.log_delete(queue);
        self.forget_paged(&mut q);
        self.flow.borrow_mut().forgive(queue);
        self.flow_owed.notify();
        for key in q.consumer_keys() {
            self.send(
                key.channel.conn.shard_id as ShardId,
                ShardMsg::ConsumerGone {
                    channel: key.channel,
                    consumer_tag: key.tag.clone(),
                },
            );
        }
    }
}

/// What became of a routed message on its queue's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enqueued {
    /// In the queue's memory only (or its queue is gone): stored now.
    InMemory,
    /// In the log: stored once the log is durable up to here.
    Logged(store::log::Lsn),
    /// Refused (x-overflow reject-publish, or the store failed).
    Rejected,
}

/// What a queue request comes to: a reply now, or the queue's deletion,
/// which the coordinator answers.
enum Answer {
    Reply(Reply),
    Delete { message_count: u32 },
}

fn new_queue(def: &QueueDef) -> Queue {
    Queue::new(
        def.id,
        def.name.clone(),
        def.vhost.clone(),
        def.auto_delete,
        def.settings.clone(),
    )
}

impl Clock for Shard {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
