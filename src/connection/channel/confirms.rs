//! Publisher confirms and transaction commits: which publishes the queues'
//! shards have answered, answered to the client in order.

use std::collections::VecDeque;

/// Publisher confirms, and what a tx.commit-ok waits for: publishes are
/// numbered from 1, and each waits for an answer from the shard of every
/// queue it was routed to (`shard::confirms`: after the fdatasync for a
/// persistent message in a durable queue). They are answered to the client
/// in order, as a contiguous prefix: runs of acks and nacks, each one
/// basic.ack or basic.nack with `multiple`.
#[derive(Default)]
pub(super) struct Confirms {
    /// The last number handed out.
    published: u64,
    /// Every publish up to here has been answered to the client.
    answered: u64,
    /// The publishes after `answered`, in order.
    pending: VecDeque<Pending>,
    /// Transactions: the last publish of each commit awaiting commit-ok.
    pub(super) commits: VecDeque<u64>,
}

#[derive(Clone, Copy)]
struct Pending {
    /// Shards yet to answer.
    outstanding: u32,
    /// A queue refused it (reject-publish), or the store failed.
    rejected: bool,
}

impl Confirms {
    /// The number the next publish gets.
    pub(super) fn next_tag(&self) -> u64 {
        self.published + 1
    }

    pub(super) fn published(&self) -> u64 {
        self.published
    }

    pub(super) fn answered(&self) -> u64 {
        self.answered
    }

    /// The publish numbered `next_tag()` went to `shards` queues.
    pub(super) fn publish(&mut self, shards: u32) {
        self.published += 1;
        self.pending.push_back(Pending {
            outstanding: shards,
            rejected: false,
        });
    }

    /// One queue's shard answered publish `tag`; unknown tags are ignored.
    pub(super) fn answer(&mut self, tag: u64, stored: bool) {
        let Some(index) = tag.checked_sub(self.answered + 1) else {
            return;
        };
        if let Some(pending) = usize::try_from(index)
            .ok()
            .and_then(|index| self.pending.get_mut(index))
        {
            pending.outstanding = pending.outstanding.saturating_sub(1);
            pending.rejected |= !stored;
        }
    }

    /// Takes the answered prefix as runs: `out(last_tag, count, acked)`.
    pub(super) fn take_answered(&mut self, mut out: impl FnMut(u64, u64, bool)) {
        while let Some(&first) = self.pending.front() {
            if first.outstanding > 0 {
                return;
            }
            let mut count = 0;
            while self
                .pending
                .front()
                .is_some_and(|p| p.outstanding == 0 && p.rejected == first.rejected)
            {
                self.pending.pop_front();
                count += 1;
            }
            self.answered += count;
            out(self.answered, count, !first.rejected);
        }
        debug_assert_eq!(
            self.answered + self.pending.len() as u64,
            self.published,
            "every publish is answered or pending, in order"
        );
    }
}
