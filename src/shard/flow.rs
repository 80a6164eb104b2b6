//! Publisher flow control, the queue side: credit for the publishes this
//! shard has processed goes back to the connections that sent them.
//!
//! A connection may have only so many publishes routed to a shard and not
//! yet processed there (`connection::flow`). This shard owes it credit for
//! each one it handles and pays in batches: at once when half a window is
//! owed to one connection, and otherwise when the shard's flusher task gets
//! its turn, which is after the ring drain that handled them yields.
//!
//! Throttling a backlog: while some shard is saturated, a queue that has
//! consumers and a backlog of ready messages does not pay for a new publish
//! at once. It records the credit as debt and pays one message's credit for
//! each message it hands to a consumer, so its publishers go exactly as fast
//! as its consumers: the backlog stops growing, and the CPU the publishers
//! would have used serves the consumers. A queue whose consumers are slow
//! while no shard is saturated is not throttled (that backlog is the memory
//! alarm's business), and neither is a queue with no consumers.

use std::collections::VecDeque;

use ahash::RandomState;
use hashbrown::HashMap;

use crate::ids::{ConnectionId, QueueId};

/// Ready messages above which a consumed queue counts as backlogged.
pub(crate) const BACKLOG_MESSAGES: u32 = 1024;

/// Bytes one connection may have routed to a shard and not yet processed
/// (the message count is `--publish-credit`).
pub(crate) const PUBLISH_CREDIT_BYTES: u64 = 16 << 20;

/// An amount of publish credit: messages, and their body bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishCredit {
    pub messages: u32,
    pub bytes: u64,
}

impl PublishCredit {
    fn add(&mut self, other: PublishCredit) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }

    /// Whether this much is due at once against a window `window`: half
    /// of it in either dimension.
    fn is_due(&self, window: PublishCredit) -> bool {
        self.messages >= window.messages / 2 || self.bytes >= window.bytes / 2
    }
}

/// Credit held back by a throttled queue: per publisher, in arrival order.
struct Debt {
    conn: ConnectionId,
    credit: PublishCredit,
}

pub(crate) struct Flow {
    window: PublishCredit,
    /// What the connection that published last is owed: a run of publishes
    /// from one connection adds up here without hashing.
    recent: Option<(ConnectionId, PublishCredit)>,
    owed: HashMap<ConnectionId, PublishCredit, RandomState>,
    debts: HashMap<QueueId, VecDeque<Debt>, RandomState>,
}

impl Flow {
    pub(crate) fn new(publish_credit: u32) -> Flow {
        Flow {
            window: PublishCredit {
                messages: publish_credit,
                bytes: PUBLISH_CREDIT_BYTES,
            },
            recent: None,
            owed: HashMap::default(),
            debts: HashMap::default(),
        }
    }

    /// A publish from `conn` to `queue` was handled. Returns credit due to
    /// `conn` at once, if half a window is now owed to it.
    pub(crate) fn processed(
        &mut self,
        conn: ConnectionId,
        queue: QueueId,
        bytes: u64,
        throttled: bool,
    ) -> Option<PublishCredit> {
        let credit = PublishCredit { messages: 1, bytes };
        if throttled {
            let debts = self.debts.entry(queue).or_default();
            match debts.back_mut() {
                Some(last) if last.conn == conn => last.credit.add(credit),
                _ => debts.push_back(Debt { conn, credit }),
            }
            return None;
        }
        self.owe(conn, credit)
    }

    fn owe(&mut self, conn: ConnectionId, credit: PublishCredit) -> Option<PublishCredit> {
        let owed = match &mut self.recent {
            Some((last, owed)) if *last == conn => {
                owed.add(credit);
                *owed
            }
            _ => {
                self.settle_recent();
                self.recent = Some((conn, credit));
                credit
            }
        };
        if owed.is_due(self.window) {
            self.recent = None;
            return Some(owed);
        }
        None
    }

    /// Moves what the last publisher is owed into the map of all owed.
    fn settle_recent(&mut self) {
        if let Some((conn, credit)) = self.recent.take() {
            self.owed.entry(conn).or_default().add(credit);
        }
    }

    /// `queue` handed out `messages`: that much of its debt becomes owed,
    /// oldest first. `pay` gets what falls due at once.
    pub(crate) fn repay(
        &mut self,
        queue: QueueId,
        mut messages: u32,
        pay: &mut impl FnMut(ConnectionId, PublishCredit),
    ) {
        let Some(debts) = self.debts.get_mut(&queue) else {
            return;
        };
        while messages > 0 {
            let Some(debt) = debts.front_mut() else { break };
            let part = debt.credit.messages.min(messages);
            // Bytes go back in proportion; the last part takes the rest.
            let bytes = if part == debt.credit.messages {
                debt.credit.bytes
            } else {
                debt.credit.bytes / u64::from(debt.credit.messages) * u64::from(part)
            };
            debt.credit.messages -= part;
            debt.credit.bytes -= bytes;
            messages -= part;
            let conn = debt.conn;
            if debt.credit.messages == 0 {
                debts.pop_front();
            }
            let credit = PublishCredit {
                messages: part,
                bytes,
            };
            if let Some(due) = owe(&mut self.owed, self.window, conn, credit) {
                pay(conn, due);
            }
        }
        if debts.is_empty() {
            self.debts.remove(&queue);
        }
    }

    /// `queue` is no longer throttled (or is gone): all its debt is owed.
    pub(crate) fn forgive(&mut self, queue: QueueId) {
        // Called for every publish: an unthrottled shard hashes nothing.
        if self.debts.is_empty() {
            return;
        }
        for debt in self.debts.remove(&queue).into_iter().flatten() {
            self.owed.entry(debt.conn).or_default().add(debt.credit);
        }
    }

    /// No shard is saturated any more: every queue's debt is owed.
    pub(crate) fn forgive_all(&mut self) {
        let queues: Vec<QueueId> = self.debts.keys().copied().collect();
        for queue in queues {
            self.forgive(queue);
        }
    }

    pub(crate) fn has_debts(&self) -> bool {
        !self.debts.is_empty()
    }

    /// Whether some credit is owed and not yet paid.
    pub(crate) fn has_owed(&self) -> bool {
        self.recent.is_some() || !self.owed.is_empty()
    }

    /// Pays everything owed (the flusher's turn).
    pub(crate) fn pay_all(&mut self, pay: &mut impl FnMut(ConnectionId, PublishCredit)) {
        self.settle_recent();
        for (conn, credit) in self.owed.drain() {
            pay(conn, credit);
        }
    }
}

/// Adds `credit` to what `conn` is owed; returns it all when it is due.
fn owe(
    owed: &mut HashMap<ConnectionId, PublishCredit, RandomState>,
    window: PublishCredit,
    conn: ConnectionId,
    credit: PublishCredit,
) -> Option<PublishCredit> {
    let entry = owed.entry(conn).or_default();
    entry.add(credit);
    if entry.is_due(window) {
        return owed.remove(&conn);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: ConnectionId = ConnectionId {
        shard_id: 0,
        local_id: 1,
    };
    const OTHER: ConnectionId = ConnectionId {
        shard_id: 1,
        local_id: 7,
    };
    const QUEUE: QueueId = QueueId(3);

    fn credit(messages: u32, bytes: u64) -> PublishCredit {
        PublishCredit { messages, bytes }
    }

    fn paid(flow: &mut Flow) -> Vec<(ConnectionId, PublishCredit)> {
        let mut paid = Vec::new();
        flow.pay_all(&mut |conn, credit| paid.push((conn, credit)));
        paid.sort_by_key(|(conn, _)| *conn);
        paid
    }

    #[test]
    fn half_a_window_is_paid_at_once() {
        let mut flow = Flow::new(10);
        for _ in 0..4 {
            assert_eq!(flow.processed(CONN, QUEUE, 1, false), None);
        }
        let due = flow.processed(CONN, QUEUE, 1, false);
        assert_eq!(due, Some(credit(5, 5)));
        assert!(paid(&mut flow).is_empty());
    }

    #[test]
    fn credit_owed_to_interleaved_publishers_is_all_paid() {
        let mut flow = Flow::new(1000);
        for conn in [CONN, OTHER, CONN, CONN, OTHER] {
            assert_eq!(flow.processed(conn, QUEUE, 10, false), None);
        }
        assert!(flow.has_owed());
        assert_eq!(
            paid(&mut flow),
            vec![(CONN, credit(3, 30)), (OTHER, credit(2, 20))]
        );
        assert!(!flow.has_owed());
    }

    #[test]
    fn large_bodies_fall_due_by_bytes() {
        let mut flow = Flow::new(1000);
        let due = flow.processed(CONN, QUEUE, PUBLISH_CREDIT_BYTES / 2, false);
        assert_eq!(due.map(|credit| credit.messages), Some(1));
    }

    #[test]
    fn a_throttled_queue_repays_as_it_delivers_oldest_first() {
        let mut flow = Flow::new(1000);
        for _ in 0..3 {
            flow.processed(CONN, QUEUE, 10, true);
        }
        flow.processed(OTHER, QUEUE, 10, true);
        assert!(paid(&mut flow).is_empty(), "throttled credit is not owed");
        flow.repay(QUEUE, 2, &mut |_, _| panic!("nothing is due yet"));
        assert_eq!(paid(&mut flow), vec![(CONN, credit(2, 20))]);
        flow.repay(QUEUE, 5, &mut |_, _| {});
        assert_eq!(
            paid(&mut flow),
            vec![(CONN, credit(1, 10)), (OTHER, credit(1, 10))]
        );
        assert!(!flow.has_debts(), "repaid debt leaves no entry behind");
    }

    #[test]
    fn forgiving_a_queue_owes_all_its_debt() {
        let mut flow = Flow::new(1000);
        flow.processed(CONN, QUEUE, 10, true);
        flow.processed(CONN, QueueId(4), 10, true);
        flow.forgive_all();
        assert_eq!(paid(&mut flow), vec![(CONN, credit(2, 20))]);
        assert!(!flow.has_debts());
    }
}
