//! The shard's one timer for its queues' deadlines: messages that expire
//! (x-message-ttl, the expiration property) and queues that expire unused
//! (x-expires) must go even when nothing else happens on the queue.
//!
//! A queue says when it next needs the clock (`Queue::next_deadline`); the
//! shard keeps one entry per queue in a sorted set and one task sleeps until
//! the earliest, so a thousand queues with TTLs cost one sleeping task.
//! Entries are removed when the deadline moves; a deleted queue's entry is
//! dropped when it comes due.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shard;
use crate::ids::QueueId;
use crate::queue::{Clock, Queue};
use crate::runtime::{self, notify::Notify};

/// The longest the timer sleeps without a deadline, so it sees shutdown.
const IDLE_WAKE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(super) struct Timer {
    /// (deadline in ms on the shard clock, queue).
    deadlines: RefCell<BTreeSet<(u64, QueueId)>>,
    /// An earlier deadline was added: the sleeping task recomputes.
    earlier: Notify,
}

impl Shard {
    /// Records a queue's deadline when it moved (after every operation on
    /// it, in `dispatch`); a queue without one costs a comparison.
    pub(super) fn rearm(&self, queue: QueueId, q: &mut Queue) {
        let Some((old, new)) = q.deadline_change() else {
            return;
        };
        let mut deadlines = self.timer.deadlines.borrow_mut();
        if let Some(old) = old {
            deadlines.remove(&(old, queue));
        }
        if let Some(new) = new {
            deadlines.insert((new, queue));
            if deadlines.first() == Some(&(new, queue)) {
                self.timer.earlier.notify();
            }
        }
    }

    /// Sleeps until the earliest deadline (or an earlier one is added),
    /// then serves the queues that are due.
    pub(super) async fn run_timer(self: Rc<Self>) {
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let first = self.timer.deadlines.borrow().first().map(|&(at, _)| at);
            let wait = first.map_or(IDLE_WAKE, |at| {
                Duration::from_millis(at.saturating_sub(self.now_ms())).min(IDLE_WAKE)
            });
            if !wait.is_zero() {
                runtime::timeout(wait, self.timer.earlier.wait()).await;
            }
            for queue in self.due_queues() {
                self.queue_deadline(queue);
            }
        }
    }

    fn due_queues(&self) -> Vec<QueueId> {
        let now_ms = self.now_ms();
        let mut deadlines = self.timer.deadlines.borrow_mut();
        let mut due = Vec::new();
        while let Some(&(at, queue)) = deadlines.first() {
            if at > now_ms {
                break;
            }
            deadlines.pop_first();
            due.push(queue);
        }
        due
    }

    /// A queue's deadline came: expired messages go, and a queue unused
    /// for its x-expires period is deleted, as RabbitMQ deletes it.
    fn queue_deadline(&self, queue: QueueId) {
        let unused = self.queues.borrow_mut().get_mut(&queue).map(|q| {
            q.deadline_fired();
            q.expire(self);
            q.is_unused_too_long(self)
        });
        match unused {
            Some(true) => self.delete_queue(queue, None, 0),
            Some(false) => {
                self.dispatch(queue);
            }
            None => {}
        }
    }
}
