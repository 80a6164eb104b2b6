//! The shard's one timer for its queues' deadlines: messages that expire
//! (x-message-ttl, the expiration property) and queues that expire unused
//! (x-expires) must go even when nothing else happens on the queue; and
//! messages an x-delayed-message exchange holds (`shard::delayed`) must be
//! routed when their delay is over.
//!
//! A queue says when it next needs the clock (`Queue::next_deadline`); the
//! shard keeps one entry per queue, and one per delayed message, in a
//! sorted set and one task sleeps until the earliest, so a thousand queues
//! with TTLs cost one sleeping task. Entries are removed when the deadline
//! moves; a deleted queue's entry is dropped when it comes due.

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

/// What comes due at a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    Queue(QueueId),
    /// A delayed message, by its number in `shard::delayed`.
    Delayed(u64),
}

#[derive(Default)]
pub(super) struct Timer {
    /// (deadline in ms on the shard clock, what is due).
    deadlines: RefCell<BTreeSet<(u64, Due)>>,
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
        if let Some(old) = old {
            self.timer
                .deadlines
                .borrow_mut()
                .remove(&(old, Due::Queue(queue)));
        }
        if let Some(new) = new {
            self.set_deadline(new, Due::Queue(queue));
        }
    }

    /// Adds a deadline, waking the timer when it is the earliest.
    pub(super) fn set_deadline(&self, at: u64, due: Due) {
        let mut deadlines = self.timer.deadlines.borrow_mut();
        deadlines.insert((at, due));
        if deadlines.first() == Some(&(at, due)) {
            self.timer.earlier.notify();
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
            for due in self.due() {
                match due {
                    Due::Queue(queue) => self.queue_deadline(queue),
                    Due::Delayed(number) => self.route_delayed(number),
                }
            }
        }
    }

    fn due(&self) -> Vec<Due> {
        let now_ms = self.now_ms();
        let mut deadlines = self.timer.deadlines.borrow_mut();
        let mut due = Vec::new();
        while let Some(&(at, what)) = deadlines.first() {
            if at > now_ms {
                break;
            }
            deadlines.pop_first();
            due.push(what);
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
