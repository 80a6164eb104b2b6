//! The ring mesh between shards, as seen from one shard.
//!
//! Each ordered pair of shards has one bounded lock-free SPSC ring (glommio's
//! `shared_channel`, which wakes a parked executor through an eventfd). Every
//! message takes one of two lanes: the bulk lane carries what may pile up
//! (publishes, and the requests that must stay in order with them); the
//! urgent lane carries what keeps consumers going (acks, deliveries, credit,
//! replies). Order is kept per lane and sender, not across lanes.
//!
//! - The task that drains a ring handles an urgent message at once and
//!   moves a bulk one to this shard's bulk queue, so an ack never waits
//!   behind the processing of a backlog of publishes.
//! - One task drains the bulk queue (and the bulk messages this shard sends
//!   itself); another drains the urgent messages it sends itself.
//! - Every drain task handles at most `TURN_MESSAGES_MAX` messages per turn
//!   before the shard's other tasks (socket readers and writers) have one.
//!
//! At a clean stop, [`Mesh::settle`] waits until nothing is left in flight
//! between the shards (`Traffic`), so that what a closed connection sent
//! to another shard (an ack, a publish) is handled before that shard makes
//! its log durable and stops.
//!
//! One mesh, not one per lane: every mesh join is a round of cross-shard
//! handshakes, and a second one made start-up hang now and then.
//!
//! On top of each outgoing ring sits an outbox (urgent messages first): a
//! local FIFO per lane that takes what the ring cannot take right now,
//! drained by one flusher task.
//!
//! Why an outbox: the task that drains incoming rings must never wait on an
//! outgoing one, or two shards whose rings to each other are full would wait
//! on each other forever. So `send` never waits. Back-pressure is applied at
//! the edges instead: a connection that publishes checks [`Mesh::is_congested`]
//! and stops reading its socket until [`Mesh::wait_uncongested`] returns, so
//! TCP pushes back on the publisher; publish credit, consumer credit and
//! prefetch bound the rest. Only one task (the flusher) ever awaits a given
//! ring, as glommio's sender requires.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{GlommioError, ResourceType};

use super::notify::{Notify, Waiters};
use crate::ids::ShardId;

/// Messages a drain task handles before it lets the shard's other tasks
/// (socket readers and writers, the other lane) have a turn.
const TURN_MESSAGES_MAX: usize = 128;

/// How often `Mesh::settle` looks at the traffic counts.
const SETTLE_POLL: Duration = Duration::from_millis(1);

/// Which lane a message takes.
pub trait Urgency {
    /// True for messages that must not wait behind bulk traffic.
    fn is_urgent(&self) -> bool;
}

pub struct Mesh<T: Send> {
    shard_id: ShardId,
    shard_count: usize,
    senders: Senders<T>,
    receivers: RefCell<Option<Receivers<T>>>,
    outboxes: Vec<Outbox<T>>,
    /// Bulk messages for this shard: sent by itself or received from others.
    bulk: LocalQueue<T>,
    /// Urgent messages this shard sends itself.
    urgent: LocalQueue<T>,
    /// Outbox (or bulk queue) length at which a destination counts as
    /// congested.
    congestion_limit: usize,
    /// Tasks waiting for some outbox to drain below the limit.
    uncongested_waiters: Waiters,
    traffic: Arc<Traffic>,
}

/// Every shard's count of the messages it sent and of those it handled or
/// dropped, shared by the shards of one mesh: when every shard has stopped
/// taking new work and the two sums are equal, nothing is in flight.
///
/// Each count has one writer, its shard, so counting is a plain store on
/// the hot path. Each is stored with Release after the handler that may
/// have sent more, and `is_quiet` reads every `done` before any `sent`:
/// whatever it sees handled, it sees sent, with what its handler sent.
pub(super) struct Traffic {
    shards: Box<[ShardTraffic]>,
    /// Shards that have stopped taking new work (`Mesh::settle`).
    stopped: AtomicUsize,
}

/// One shard's counts, on a cache line of their own.
#[repr(align(128))]
#[derive(Default)]
struct ShardTraffic {
    sent: AtomicU64,
    done: AtomicU64,
}

impl Traffic {
    pub(super) fn new(shard_count: usize) -> Traffic {
        Traffic {
            shards: (0..shard_count).map(|_| ShardTraffic::default()).collect(),
            stopped: AtomicUsize::new(0),
        }
    }

    /// Adds `more` to `count`, which only its own shard writes.
    fn add(count: &AtomicU64, more: u64) {
        count.store(count.load(Ordering::Relaxed) + more, Ordering::Release);
    }

    fn is_quiet(&self) -> bool {
        if self.stopped.load(Ordering::Acquire) < self.shards.len() {
            return false;
        }
        let done: u64 = self
            .shards
            .iter()
            .map(|shard| shard.done.load(Ordering::Acquire))
            .sum();
        let sent: u64 = self
            .shards
            .iter()
            .map(|shard| shard.sent.load(Ordering::Acquire))
            .sum();
        done == sent
    }
}

/// What waits for the ring to another shard, urgent messages first.
struct Outbox<T> {
    urgent: RefCell<VecDeque<T>>,
    bulk: RefCell<VecDeque<T>>,
    flushing: Cell<bool>,
}

/// Messages for this shard's own drain tasks.
struct LocalQueue<T> {
    queue: RefCell<VecDeque<T>>,
    ready: Notify,
}

impl<T> LocalQueue<T> {
    fn new() -> LocalQueue<T> {
        LocalQueue {
            queue: RefCell::new(VecDeque::new()),
            ready: Notify::new(),
        }
    }

    fn push(&self, msg: T) {
        self.queue.borrow_mut().push_back(msg);
        self.ready.notify();
    }
}

impl<T> Outbox<T> {
    fn is_empty(&self) -> bool {
        self.urgent.borrow().is_empty() && self.bulk.borrow().is_empty()
    }

    fn pop(&self) -> Option<T> {
        let urgent = self.urgent.borrow_mut().pop_front();
        urgent.or_else(|| self.bulk.borrow_mut().pop_front())
    }
}

impl<T: Send + Urgency + 'static> Mesh<T> {
    pub(super) async fn join(
        builder: MeshBuilder<T, Full>,
        shard_id: ShardId,
        traffic: Arc<Traffic>,
    ) -> Result<Rc<Mesh<T>>, String> {
        let shard_count = builder.nr_peers();
        let (senders, receivers) = builder
            .join()
            .await
            .map_err(|err| format!("mesh join failed: {err}"))?;
        debug_assert_eq!(senders.peer_id(), shard_id);
        let outboxes = (0..shard_count)
            .map(|_| Outbox {
                urgent: RefCell::new(VecDeque::new()),
                bulk: RefCell::new(VecDeque::new()),
                flushing: Cell::new(false),
            })
            .collect();
        Ok(Rc::new(Mesh {
            shard_id,
            shard_count,
            senders,
            receivers: RefCell::new(Some(receivers)),
            outboxes,
            bulk: LocalQueue::new(),
            urgent: LocalQueue::new(),
            congestion_limit: 1024,
            uncongested_waiters: Waiters::new(),
            traffic,
        }))
    }

    pub fn shard_id(&self) -> ShardId {
        self.shard_id
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Queues `msg` for shard `to`; never waits. Order is kept per lane and
    /// destination.
    pub fn send(self: &Rc<Self>, to: ShardId, msg: T) {
        if to >= self.shard_count {
            tracing::error!(to, "message for a shard that does not exist");
            return;
        }
        Traffic::add(&self.own_traffic().sent, 1);
        if to == self.shard_id {
            match msg.is_urgent() {
                true => self.urgent.push(msg),
                false => self.bulk.push(msg),
            }
            return;
        }
        let outbox = &self.outboxes[to];
        // While the flusher holds a message it popped, sending directly
        // would overtake it: only an idle, empty outbox may try the ring.
        if !outbox.flushing.get() && outbox.is_empty() {
            match self.senders.try_send_to(to, msg) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                    self.hold(outbox, msg);
                }
                // The peer has shut down: nothing left to deliver to.
                Err(_) => return self.dropped(1),
            }
        } else {
            self.hold(outbox, msg);
        }
        if !outbox.flushing.replace(true) {
            let mesh = self.clone();
            super::spawn(async move { mesh.flush(to).await });
        }
    }

    fn hold(&self, outbox: &Outbox<T>, msg: T) {
        match msg.is_urgent() {
            true => outbox.urgent.borrow_mut().push_back(msg),
            false => outbox.bulk.borrow_mut().push_back(msg),
        }
    }

    /// Whether shard `to`'s bulk backlog holds so much that senders which
    /// can wait (connections reading publishes) should.
    pub fn is_congested(&self, to: ShardId) -> bool {
        let held = if to == self.shard_id {
            self.bulk.queue.borrow().len()
        } else {
            self.outboxes
                .get(to)
                .map_or(0, |outbox| outbox.bulk.borrow().len())
        };
        held >= self.congestion_limit
    }

    pub async fn wait_uncongested(&self, to: ShardId) {
        self.uncongested_waiters
            .wait_until(|| !self.is_congested(to))
            .await
    }

    async fn flush(self: Rc<Self>, to: ShardId) {
        let outbox = &self.outboxes[to];
        while let Some(msg) = outbox.pop() {
            if self.senders.send_to(to, msg).await.is_err() {
                // The peer has shut down; drop what is left.
                let left = outbox.urgent.take().len() + outbox.bulk.take().len();
                self.dropped(1 + left as u64);
                break;
            }
            if outbox.bulk.borrow().len() + 1 == self.congestion_limit / 2 {
                self.uncongested_waiters.wake_all();
            }
        }
        outbox.flushing.set(false);
        self.uncongested_waiters.wake_all();
    }

    /// Starts the tasks that drain the incoming rings and the local queues,
    /// calling `handle` for each message in arrival order per lane and
    /// sender.
    pub fn start_receivers(self: &Rc<Self>, handle: Rc<dyn Fn(T)>) {
        let Some(mut receivers) = self.receivers.borrow_mut().take() else {
            return;
        };
        for (_, receiver) in receivers.streams() {
            let (mesh, handle) = (self.clone(), handle.clone());
            super::spawn(async move {
                let mut handled = 0;
                while let Some(msg) = receiver.recv().await {
                    match msg.is_urgent() {
                        true => mesh.handle(&handle, msg),
                        false => mesh.bulk.push(msg),
                    }
                    handled += 1;
                    if handled == TURN_MESSAGES_MAX {
                        handled = 0;
                        super::yield_now().await;
                    }
                }
            });
        }
        for urgent in [true, false] {
            let (mesh, handle) = (self.clone(), handle.clone());
            super::spawn(async move { mesh.drain_local(urgent, handle).await });
        }
    }

    async fn drain_local(&self, urgent: bool, handle: Rc<dyn Fn(T)>) {
        let local = if urgent { &self.urgent } else { &self.bulk };
        loop {
            local.ready.wait().await;
            let mut handled = 0;
            loop {
                let next = local.queue.borrow_mut().pop_front();
                let Some(msg) = next else { break };
                self.handle(&handle, msg);
                handled += 1;
                if handled == TURN_MESSAGES_MAX {
                    handled = 0;
                    super::yield_now().await;
                }
            }
            self.uncongested_waiters.wake_all();
        }
    }

    fn handle(&self, handle: &Rc<dyn Fn(T)>, msg: T) {
        handle(msg);
        Traffic::add(&self.own_traffic().done, 1);
    }

    fn dropped(&self, count: u64) {
        Traffic::add(&self.own_traffic().done, count);
    }

    fn own_traffic(&self) -> &ShardTraffic {
        &self.traffic.shards[self.shard_id]
    }

    /// At a clean stop, once this shard takes no new work (its connections
    /// are closed): waits until every shard has got here and every message
    /// sent between them has been handled, for at most `limit`. False if
    /// the time ran out.
    pub async fn settle(&self, limit: Duration) -> bool {
        self.traffic.stopped.fetch_add(1, Ordering::AcqRel);
        let quiet = async {
            while !self.traffic.is_quiet() {
                super::sleep(SETTLE_POLL).await;
            }
        };
        super::timeout(limit, quiet).await.is_some()
    }

    /// Closes this shard's outgoing rings, so peers see it has gone.
    pub fn close(&self) {
        self.senders.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::Urgency;

    /// A test message: urgent or bulk.
    struct Note(bool);

    impl Urgency for Note {
        fn is_urgent(&self) -> bool {
            self.0
        }
    }

    /// Shard 0 sends more than the ring holds (most of it waits in the
    /// outbox) on both lanes; shard 1 answers each urgent one. Once
    /// `settle` returns on a shard, it has handled everything sent to it,
    /// answers included.
    #[test]
    fn settle_returns_once_every_message_between_shards_is_handled() {
        const SENT: usize = 500;
        let handled: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        let seen_after_settle = Arc::new(Mutex::new([0; 2]));
        let (counts, seen) = (handled.clone(), seen_after_settle.clone());
        super::super::run_shards(2, 4, 1, move |shard, mesh| {
            let (counts, seen) = (counts.clone(), seen.clone());
            async move {
                let (answers, counted) = (mesh.clone(), counts.clone());
                mesh.start_receivers(std::rc::Rc::new(move |note: Note| {
                    counted[shard].fetch_add(1, Ordering::Relaxed);
                    if shard == 1 && note.0 {
                        answers.send(0, Note(true));
                    }
                }));
                if shard == 0 {
                    for n in 0..SENT {
                        mesh.send(1, Note(n % 2 == 0));
                    }
                }
                assert!(mesh.settle(Duration::from_secs(10)).await);
                seen.lock().unwrap()[shard] = counts[shard].load(Ordering::Relaxed);
                mesh.close();
            }
        })
        .expect("the shards ran");
        assert_eq!(*seen_after_settle.lock().unwrap(), [SENT / 2, SENT]);
    }
}
