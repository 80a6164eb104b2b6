//! The ring mesh between shards, as seen from one shard.
//!
//! Each ordered pair of shards has two bounded lock-free SPSC rings (glommio's
//! `shared_channel`, which wakes a parked executor through an eventfd), one
//! per lane. The bulk lane carries what may pile up (publishes, and the
//! requests that must stay in order with them); the urgent lane carries what
//! keeps consumers going (acks, deliveries, credit, replies). Each lane has
//! its own drain task, and every drain task handles at most
//! `TURN_MESSAGES_MAX` messages per turn, so an ack never waits behind a
//! backlog of publishes: that is what keeps a work queue served under a
//! publish flood. Order is kept per lane and destination, not across lanes.
//!
//! On top of each outgoing ring sits an outbox: a local FIFO that takes what
//! the ring cannot take right now, drained by one flusher task.
//!
//! Why an outbox: the task that drains incoming rings must never wait on an
//! outgoing one, or two shards whose rings to each other are full would wait
//! on each other forever. So `send` never waits. Back-pressure is applied at
//! the edges instead: a connection that publishes checks [`Mesh::is_congested`]
//! and stops reading its socket until [`Mesh::wait_uncongested`] returns, so
//! TCP pushes back on the publisher and the outbox stays bounded; publish
//! credit, consumer credit and prefetch bound the rest. Only one task (the
//! flusher) ever awaits a given ring, as glommio's sender requires.
//!
//! Messages to the shard itself go through the same kind of outbox (a local
//! queue per lane drained by its own task), so every handler runs from a
//! drain task and never re-enters state that its caller holds borrowed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{GlommioError, ResourceType};

use super::notify::{Notify, Waiters};
use crate::ids::ShardId;

/// Messages a drain task handles before it lets the shard's other tasks
/// (socket readers and writers, the other lane) have a turn.
const TURN_MESSAGES_MAX: usize = 128;

/// Which lane a message takes.
pub trait Urgency {
    /// True for messages that must not wait behind bulk traffic.
    fn is_urgent(&self) -> bool;
}

/// The two lanes' builders: one mesh of rings each.
pub(super) type Builders<T> = [MeshBuilder<T, Full>; 2];

const BULK: usize = 0;
const URGENT: usize = 1;

pub struct Mesh<T: Send> {
    shard_id: ShardId,
    shard_count: usize,
    lanes: [Lane<T>; 2],
    /// Bulk outbox length at which a destination counts as congested.
    congestion_limit: usize,
    /// Tasks waiting for some outbox to drain below the limit.
    uncongested_waiters: Waiters,
}

struct Lane<T: Send> {
    senders: Senders<T>,
    receivers: RefCell<Option<Receivers<T>>>,
    outboxes: Vec<Outbox<T>>,
}

struct Outbox<T> {
    queue: RefCell<VecDeque<T>>,
    flushing: Cell<bool>,
    /// Wakes the local drain task (loopback outbox only).
    loopback_ready: Notify,
}

impl<T: Send + Urgency + 'static> Mesh<T> {
    pub(super) async fn join(
        builders: Builders<T>,
        shard_id: ShardId,
    ) -> Result<Rc<Mesh<T>>, String> {
        let [bulk, urgent] = builders;
        let shard_count = bulk.nr_peers();
        let lanes = [
            Lane::join(bulk, shard_id).await?,
            Lane::join(urgent, shard_id).await?,
        ];
        Ok(Rc::new(Mesh {
            shard_id,
            shard_count,
            lanes,
            congestion_limit: 1024,
            uncongested_waiters: Waiters::new(),
        }))
    }

    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Queues `msg` for shard `to` on its lane; never waits. Order is kept
    /// per lane and destination.
    pub fn send(self: &Rc<Self>, to: ShardId, msg: T) {
        let lane_id = if msg.is_urgent() { URGENT } else { BULK };
        let lane = &self.lanes[lane_id];
        let Some(outbox) = lane.outboxes.get(to) else {
            tracing::error!(to, "message for a shard that does not exist");
            return;
        };
        if to == self.shard_id {
            outbox.queue.borrow_mut().push_back(msg);
            outbox.loopback_ready.notify();
            return;
        }
        // While the flusher holds a message it popped, sending directly
        // would overtake it: only an idle, empty outbox may try the ring.
        if !outbox.flushing.get() && outbox.queue.borrow().is_empty() {
            match lane.senders.try_send_to(to, msg) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                    outbox.queue.borrow_mut().push_back(msg);
                }
                // The peer has shut down: nothing left to deliver to.
                Err(_) => return,
            }
        } else {
            outbox.queue.borrow_mut().push_back(msg);
        }
        if !outbox.flushing.replace(true) {
            let mesh = self.clone();
            super::spawn(async move { mesh.flush(lane_id, to).await });
        }
    }

    /// Whether shard `to`'s bulk outbox holds so much that senders which can
    /// wait (connections reading publishes) should.
    pub fn is_congested(&self, to: ShardId) -> bool {
        self.lanes[BULK]
            .outboxes
            .get(to)
            .is_some_and(|outbox| outbox.queue.borrow().len() >= self.congestion_limit)
    }

    pub async fn wait_uncongested(&self, to: ShardId) {
        self.uncongested_waiters
            .wait_until(|| !self.is_congested(to))
            .await
    }

    async fn flush(self: Rc<Self>, lane_id: usize, to: ShardId) {
        let lane = &self.lanes[lane_id];
        let outbox = &lane.outboxes[to];
        loop {
            let next = outbox.queue.borrow_mut().pop_front();
            let Some(msg) = next else { break };
            if lane.senders.send_to(to, msg).await.is_err() {
                // The peer has shut down; drop what is left.
                outbox.queue.borrow_mut().clear();
                break;
            }
            if outbox.queue.borrow().len() + 1 == self.congestion_limit / 2 {
                self.uncongested_waiters.wake_all();
            }
        }
        outbox.flushing.set(false);
        self.uncongested_waiters.wake_all();
    }

    /// Starts the tasks that drain the incoming rings and the loopback
    /// queues, calling `handle` for each message in arrival order per lane
    /// and sender.
    pub fn start_receivers(self: &Rc<Self>, handle: Rc<dyn Fn(T)>) {
        for lane_id in [URGENT, BULK] {
            let Some(mut receivers) = self.lanes[lane_id].receivers.borrow_mut().take() else {
                continue;
            };
            for (_, receiver) in receivers.streams() {
                let handle = handle.clone();
                super::spawn(async move {
                    let mut handled = 0;
                    while let Some(msg) = receiver.recv().await {
                        handle(msg);
                        handled += 1;
                        if handled == TURN_MESSAGES_MAX {
                            handled = 0;
                            super::yield_now().await;
                        }
                    }
                });
            }
            let mesh = self.clone();
            let handle = handle.clone();
            super::spawn(async move { mesh.drain_loopback(lane_id, handle).await });
        }
    }

    async fn drain_loopback(&self, lane_id: usize, handle: Rc<dyn Fn(T)>) {
        let outbox = &self.lanes[lane_id].outboxes[self.shard_id];
        loop {
            outbox.loopback_ready.wait().await;
            let mut handled = 0;
            loop {
                let next = outbox.queue.borrow_mut().pop_front();
                let Some(msg) = next else { break };
                handle(msg);
                handled += 1;
                if handled == TURN_MESSAGES_MAX {
                    handled = 0;
                    super::yield_now().await;
                }
            }
            self.uncongested_waiters.wake_all();
        }
    }

    /// Closes this shard's outgoing rings, so peers see it has gone.
    pub fn close(&self) {
        for lane in &self.lanes {
            lane.senders.close();
        }
    }
}

impl<T: Send + 'static> Lane<T> {
    async fn join(builder: MeshBuilder<T, Full>, shard_id: ShardId) -> Result<Lane<T>, String> {
        let shard_count = builder.nr_peers();
        let (senders, receivers) = builder
            .join()
            .await
            .map_err(|err| format!("mesh join failed: {err}"))?;
        debug_assert_eq!(senders.peer_id(), shard_id);
        let outboxes = (0..shard_count)
            .map(|_| Outbox {
                queue: RefCell::new(VecDeque::new()),
                flushing: Cell::new(false),
                loopback_ready: Notify::new(),
            })
            .collect();
        Ok(Lane {
            senders,
            receivers: RefCell::new(Some(receivers)),
            outboxes,
        })
    }
}
