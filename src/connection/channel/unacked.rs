//! The deliveries a channel handed out with ack required, by delivery tag.

use std::collections::VecDeque;

use crate::ids::QueueId;

/// Settled entries an `Unacked` may keep beyond twice its live ones.
const COMPACT_SLACK: usize = 64;

/// Delivery tags this channel handed out with ack required, in tag order.
/// Acks mostly come in order, so a deque with settled entries popped from
/// the front is cheaper than a tree and allocates nothing in steady state.
#[derive(Default)]
pub(super) struct Unacked {
    entries: VecDeque<UnackedEntry>,
    /// Entries not yet settled (settled ones linger until the front moves).
    live: usize,
    pub(super) next_tag: u64,
}

#[derive(Clone, Copy)]
pub(super) struct UnackedEntry {
    pub(super) delivery_tag: u64,
    pub(super) queue: QueueId,
    pub(super) seq: u64,
    settled: bool,
}

impl Unacked {
    /// The next delivery tag; `track` records it as awaiting an ack.
    pub(super) fn next(&mut self, queue: QueueId, seq: u64, track: bool) -> u64 {
        self.next_tag += 1;
        if track {
            self.live += 1;
            self.entries.push_back(UnackedEntry {
                delivery_tag: self.next_tag,
                queue,
                seq,
                settled: false,
            });
        }
        self.next_tag
    }

    /// Settles `delivery_tag` (and, with `multiple`, every earlier one; tag
    /// 0 with `multiple` means all), calling `each` per entry. Returns false
    /// when the tag is unknown, which the channel answers with 406.
    pub(super) fn settle(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        mut each: impl FnMut(&UnackedEntry),
    ) -> bool {
        let range = match (multiple, delivery_tag) {
            (true, 0) => 0..self.entries.len(),
            (true, tag) => match self.position(tag) {
                Some(last) => 0..last + 1,
                None => return false,
            },
            (false, tag) => match self.position(tag) {
                Some(index) => index..index + 1,
                None => return false,
            },
        };
        for entry in self.entries.range_mut(range).filter(|e| !e.settled) {
            entry.settled = true;
            self.live -= 1;
            each(entry);
        }
        while self.entries.front().is_some_and(|e| e.settled) {
            self.entries.pop_front();
        }
        // One old unacked tag must not keep an entry alive for every later
        // delivery: once settled entries dominate, drop them. Tags stay in
        // order, so lookups still bisect; the cost is amortised over the
        // settles that made the garbage.
        if self.entries.len() > 2 * self.live + COMPACT_SLACK {
            self.entries.retain(|e| !e.settled);
        }
        debug_assert!(self.live <= self.entries.len(), "live entries are kept");
        true
    }

    fn position(&self, delivery_tag: u64) -> Option<usize> {
        let index = self
            .entries
            .binary_search_by_key(&delivery_tag, |e| e.delivery_tag)
            .ok()?;
        (!self.entries[index].settled).then_some(index)
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Entries kept, settled or not (for tests of the memory bound).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.entries.len()
    }

    /// Everything still unacked, oldest first; leaves the set empty.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = UnackedEntry> + '_ {
        self.live = 0;
        self.entries.drain(..).filter(|e| !e.settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_old_unacked_tag_does_not_keep_every_later_delivery() {
        let mut unacked = Unacked::default();
        let queue = QueueId(1);
        let first = unacked.next(queue, 1, true);
        for seq in 2..10_000 {
            let tag = unacked.next(queue, seq, true);
            assert!(unacked.settle(tag, false, |_| {}));
        }
        assert_eq!(unacked.len(), 1);
        assert!(
            unacked.kept() <= 2 + COMPACT_SLACK,
            "kept {}",
            unacked.kept()
        );
        let mut settled = Vec::new();
        assert!(unacked.settle(first, false, |entry| settled.push(entry.seq)));
        assert_eq!(settled, vec![1]);
        assert_eq!(unacked.kept(), 0);
    }

    #[test]
    fn multiple_settles_still_find_tags_after_compaction() {
        let mut unacked = Unacked::default();
        let queue = QueueId(1);
        let tags: Vec<u64> = (1..=500)
            .map(|seq| unacked.next(queue, seq, true))
            .collect();
        for &tag in tags.iter().skip(1).step_by(2) {
            assert!(unacked.settle(tag, false, |_| {}));
        }
        let mut settled = Vec::new();
        assert!(unacked.settle(tags[200], true, |entry| settled.push(entry.seq)));
        assert_eq!(settled, (1..=201).step_by(2).collect::<Vec<u64>>());
        assert!(
            !unacked.settle(tags[1], false, |_| {}),
            "a settled tag is unknown"
        );
    }
}
