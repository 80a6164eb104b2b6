//! Publisher confirms, the queue side: each publish a confirming channel
//! routed here is answered once this shard is done with it. A message
//! logged to disk is answered after the fdatasync that covers it (the
//! commit task reports how far the log is durable); any other at once;
//! one that a reject-publish queue refused, or that the failed store could
//! not take, as rejected (basic.nack).
//!
//! Answers are paid per connection in batches by the shard's flusher task,
//! as credit is (`flow`): one ring message per connection per drain.

use std::collections::VecDeque;

use ahash::RandomState;
use hashbrown::HashMap;

use super::message::ConfirmAnswer;
use crate::ids::ConnectionId;
use crate::store::log::Lsn;

#[derive(Default)]
pub(crate) struct Confirms {
    /// Waiting for the log to be durable up to their position, in order.
    awaiting: VecDeque<(Lsn, ConnectionId, ConfirmAnswer)>,
    owed: HashMap<ConnectionId, Vec<ConfirmAnswer>, RandomState>,
}

impl Confirms {
    pub(crate) fn answer(&mut self, conn: ConnectionId, answer: ConfirmAnswer) {
        self.owed.entry(conn).or_default().push(answer);
    }

    /// `answer` is due once the log is durable up to `lsn`.
    pub(crate) fn after_sync(&mut self, lsn: Lsn, conn: ConnectionId, answer: ConfirmAnswer) {
        self.awaiting.push_back((lsn, conn, answer));
    }

    /// The log is durable up to `lsn`: what waited for it is owed.
    pub(crate) fn synced(&mut self, lsn: Lsn) {
        while let Some(&(at, conn, answer)) = self.awaiting.front() {
            if at > lsn {
                break;
            }
            self.awaiting.pop_front();
            self.answer(conn, answer);
        }
    }

    /// The log failed: whatever waited for it is rejected.
    pub(crate) fn fail_waiting(&mut self) {
        while let Some((_, conn, answer)) = self.awaiting.pop_front() {
            let stored = false;
            self.answer(conn, ConfirmAnswer { stored, ..answer });
        }
    }

    pub(crate) fn pay_all(&mut self, pay: &mut impl FnMut(ConnectionId, Vec<ConfirmAnswer>)) {
        for (conn, answers) in self.owed.drain() {
            pay(conn, answers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::message::ConfirmTag;

    const CONN: ConnectionId = ConnectionId {
        shard_id: 1,
        local_id: 2,
    };

    fn answer(tag: u64) -> ConfirmAnswer {
        ConfirmAnswer {
            channel: 1,
            confirm: ConfirmTag { serial: 1, tag },
            stored: true,
        }
    }

    fn paid(confirms: &mut Confirms) -> Vec<(u64, bool)> {
        let mut paid = Vec::new();
        confirms.pay_all(&mut |_, answers| {
            paid.extend(answers.iter().map(|a| (a.confirm.tag, a.stored)));
        });
        paid
    }

    #[test]
    fn a_logged_publish_is_answered_only_after_its_sync() {
        let mut confirms = Confirms::default();
        confirms.after_sync(3, CONN, answer(1));
        confirms.answer(CONN, answer(2));
        confirms.after_sync(5, CONN, answer(3));
        assert_eq!(paid(&mut confirms), vec![(2, true)]);
        confirms.synced(4);
        assert_eq!(paid(&mut confirms), vec![(1, true)]);
        confirms.fail_waiting();
        assert_eq!(paid(&mut confirms), vec![(3, false)]);
    }
}
