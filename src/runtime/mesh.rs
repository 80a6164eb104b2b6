//! The ring mesh between shards, as seen from one shard.
//!
//! Each ordered pair of shards has one bounded lock-free SPSC ring (glommio's
//! `shared_channel`, which wakes a parked executor through an eventfd). On top
//! of each outgoing ring sits an outbox: a local FIFO that takes what the ring
//! cannot take right now, drained by one flusher task.
//!
//! Why an outbox: the task that drains incoming rings must never wait on an
//! outgoing one, or two shards whose rings to each other are full would wait
//! on each other forever. So `send` never waits. Back-pressure is applied at
//! the edges instead: a connection that publishes checks [`Mesh::is_congested`]
//! and stops reading its socket until [`Mesh::wait_uncongested`] returns, so
//! TCP pushes back on the publisher and the outbox stays bounded; deliveries
//! are bounded by per-consumer credit and prefetch. Only one task (the
//! flusher) ever awaits a given ring, as glommio's sender requires.
//!
//! Messages to the shard itself go through the same kind of outbox (a local
//! queue drained by its own task), so every handler runs from a drain task
//! and never re-enters state that its caller holds borrowed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{GlommioError, ResourceType};

use super::notify::Notify;
use crate::ids::ShardId;

pub struct Mesh<T: Send> {
    shard_id: ShardId,
    shard_count: usize,
    senders: Senders<T>,
    receivers: RefCell<Option<Receivers<T>>>,
    outboxes: Vec<Outbox<T>>,
    /// Outbox length at which a destination counts as congested.
    congestion_limit: usize,
    /// Tasks waiting for some outbox to drain below the limit.
    uncongested_waiters: RefCell<Vec<Waker>>,
}

struct Outbox<T> {
    queue: RefCell<VecDeque<T>>,
    flushing: Cell<bool>,
    /// Wakes the local drain task (loopback outbox only).
    loopback_ready: Notify,
}

impl<T: Send + 'static> Mesh<T> {
    pub(super) async fn join(
        builder: MeshBuilder<T, Full>,
        shard_id: ShardId,
    ) -> Result<Rc<Mesh<T>>, String> {
        let shard_count = builder.nr_peers();
        let congestion_limit = 1024;
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
        Ok(Rc::new(Mesh {
            shard_id,
            shard_count,
            senders,
            receivers: RefCell::new(Some(receivers)),
            outboxes,
            congestion_limit,
            uncongested_waiters: RefCell::new(Vec::new()),
        }))
    }

    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Queues `msg` for shard `to`; never waits. Order is kept per
    /// destination.
    pub fn send(self: &Rc<Self>, to: ShardId, msg: T) {
        let Some(outbox) = self.outboxes.get(to) else {
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
            match self.senders.try_send_to(to, msg) {
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
            super::spawn(async move { mesh.flush(to).await });
        }
    }

    /// Whether shard `to`'s outbox holds so much that senders which can wait
    /// (connections reading publishes) should.
    pub fn is_congested(&self, to: ShardId) -> bool {
        self.outboxes
            .get(to)
            .is_some_and(|outbox| outbox.queue.borrow().len() >= self.congestion_limit)
    }

    pub async fn wait_uncongested(&self, to: ShardId) {
        poll_fn(|cx| {
            if self.is_congested(to) {
                self.uncongested_waiters
                    .borrow_mut()
                    .push(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    async fn flush(self: Rc<Self>, to: ShardId) {
        let outbox = &self.outboxes[to];
        loop {
            let next = outbox.queue.borrow_mut().pop_front();
            let Some(msg) = next else { break };
            if self.senders.send_to(to, msg).await.is_err() {
                // The peer has shut down; drop what is left.
                outbox.queue.borrow_mut().clear();
                break;
            }
            if outbox.queue.borrow().len() + 1 == self.congestion_limit / 2 {
                self.wake_uncongested();
            }
        }
        outbox.flushing.set(false);
        self.wake_uncongested();
    }

    fn wake_uncongested(&self) {
        for waker in self.uncongested_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Starts the tasks that drain the incoming rings and the loopback queue,
    /// calling `handle` for each message in arrival order per sender.
    pub fn start_receivers(self: &Rc<Self>, handle: Rc<dyn Fn(T)>) {
        let Some(mut receivers) = self.receivers.borrow_mut().take() else {
            return;
        };
        for (_, receiver) in receivers.streams() {
            let handle = handle.clone();
            super::spawn(async move {
                while let Some(msg) = receiver.recv().await {
                    handle(msg);
                }
            });
        }
        let mesh = self.clone();
        super::spawn(async move {
            let outbox = &mesh.outboxes[mesh.shard_id];
            loop {
                outbox.loopback_ready.wait().await;
                loop {
                    let next = outbox.queue.borrow_mut().pop_front();
                    let Some(msg) = next else { break };
                    handle(msg);
                    // Handlers may queue more to ourselves: let sockets and
                    // other rings have their turn.
                    super::yield_now().await;
                }
                mesh.wake_uncongested();
            }
        });
    }

    /// Closes this shard's outgoing rings, so peers see it has gone.
    pub fn close(&self) {
        self.senders.close();
    }
}
