//! One priority level of a queue's ready messages: a deque sorted by seq,
//! kept in blocks of at most `BLOCK_LEN` entries of 32 bytes.
//!
//! Why blocks: a single `VecDeque` doubles, so a backlog of 10M messages sat
//! in a buffer of 16.7M entries, and while it grew both buffers were live.
//! Blocks of fixed size cost one allocation per `BLOCK_LEN` messages and
//! never copy the backlog; a requeue shifts entries within one block only.
//!
//! Why 32 bytes: a paged-out message keeps nothing in memory but its entry.
//! The seq and the redelivered flag share one word, and a message's
//! deadline and return count (`Extra`), set only in TTL queues and for
//! requeued messages, live in a column beside the entries that a block
//! allocates only once it holds such a message.
//!
//! Invariants:
//! - Entries are sorted by seq, across blocks and within each block.
//! - Only a level's sole block may be empty: it stays for the next message,
//!   so a queue that keeps emptying allocates nothing per message.
//! - A block with `extras` has one for each entry, in the same order.

use std::collections::VecDeque;

use super::ready::{Body, NEVER};

/// Entries in a full block: one short of 32 KiB. mimalloc places a block
/// of exactly 32 KiB with a third more memory around it (measured over 10M
/// entries: 42.8 bytes an entry with 1024 to a block, 32.1 with 1023).
pub(crate) const BLOCK_LEN: usize = 1023;

/// A ready message as a level keeps it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The seq shifted left by one, the redelivered flag in the low bit.
    key: u64,
    pub(crate) body: Body,
}

impl Entry {
    pub(crate) fn new(seq: u64, redelivered: bool, body: Body) -> Entry {
        debug_assert!(seq < 1 << 63, "a seq fits in 63 bits");
        Entry {
            key: seq << 1 | u64::from(redelivered),
            body,
        }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.key >> 1
    }

    pub(crate) fn redelivered(&self) -> bool {
        self.key & 1 == 1
    }
}

/// What few ready messages carry besides their entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extra {
    /// When the message expires, on the shard's clock (ms); `NEVER`.
    pub(crate) expires_at_ms: u64,
    /// Times it was delivered and returned (x-delivery-count).
    pub(crate) returns: u32,
}

impl Extra {
    pub(crate) const NONE: Extra = Extra {
        expires_at_ms: NEVER,
        returns: 0,
    };
}

#[derive(Debug)]
struct Block {
    entries: VecDeque<Entry>,
    /// Each entry's `Extra`, once one of them has any.
    extras: Option<VecDeque<Extra>>,
}

impl Block {
    fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(Entry::seq)
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= BLOCK_LEN
    }

    fn extra(&self, index: usize) -> Extra {
        self.extras
            .as_ref()
            .and_then(|extras| extras.get(index).copied())
            .unwrap_or(Extra::NONE)
    }

    /// The column of extras, made (each entry `Extra::NONE`) if `extra`
    /// needs it; None while the block needs none.
    fn extras_for(&mut self, extra: Extra) -> Option<&mut VecDeque<Extra>> {
        if self.extras.is_none() && extra != Extra::NONE {
            let mut extras = VecDeque::with_capacity(self.entries.capacity());
            extras.resize(self.entries.len(), Extra::NONE);
            self.extras = Some(extras);
        }
        self.extras.as_mut()
    }

    fn push_back(&mut self, entry: Entry, extra: Extra) {
        if let Some(extras) = self.extras_for(extra) {
            reserve_one(extras);
            extras.push_back(extra);
        }
        reserve_one(&mut self.entries);
        self.entries.push_back(entry);
    }

    fn insert(&mut self, index: usize, entry: Entry, extra: Extra) {
        if let Some(extras) = self.extras_for(extra) {
            reserve_one(extras);
            extras.insert(index, extra);
        }
        reserve_one(&mut self.entries);
        self.entries.insert(index, entry);
    }

    fn remove(&mut self, index: usize) -> Option<(Entry, Extra)> {
        let entry = self.entries.remove(index)?;
        let extra = self.extras.as_mut().and_then(|extras| extras.remove(index));
        Some((entry, extra.unwrap_or(Extra::NONE)))
    }

    /// The entries from `at` on, as a block of their own.
    fn split_off(&mut self, at: usize) -> Block {
        Block {
            entries: self.entries.split_off(at),
            extras: self.extras.as_mut().map(|extras| extras.split_off(at)),
        }
    }
}

/// Makes room for one more, doubling as a `VecDeque` does but never past
/// `BLOCK_LEN` (a doubling would make it exactly 32 KiB).
fn reserve_one<T>(deque: &mut VecDeque<T>) {
    let len = deque.len();
    if len == deque.capacity() {
        deque.reserve_exact(len.max(4).min(BLOCK_LEN.saturating_sub(len).max(1)));
    }
}

/// Where an entry is in a level.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spot {
    block: usize,
    index: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Level {
    blocks: VecDeque<Block>,
    len: usize,
}

impl Level {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn front(&self) -> Option<(&Entry, Extra)> {
        let block = self.blocks.front()?;
        Some((block.entries.front()?, block.extra(0)))
    }

    pub(crate) fn back_mut(&mut self) -> Option<&mut Entry> {
        self.blocks.back_mut()?.entries.back_mut()
    }

    /// Appends an entry with a seq above every other.
    pub(crate) fn push_back(&mut self, entry: Entry, extra: Extra) {
        debug_assert!(
            self.back().is_none_or(|last| last.seq() < entry.seq()),
            "a level stays sorted by seq"
        );
        let block = match self.blocks.back_mut() {
            Some(block) if !block.is_full() => block,
            // The first block grows by doubling (`reserve_one`), so a
            // short queue stays small; the next ones are full size from
            // the start.
            last => {
                let capacity = if last.is_some() { BLOCK_LEN } else { 0 };
                self.blocks.push_back(Block {
                    entries: VecDeque::with_capacity(capacity),
                    extras: None,
                });
                self.blocks.back_mut().expect("just pushed")
            }
        };
        block.push_back(entry, extra);
        self.len += 1;
    }

    fn back(&self) -> Option<&Entry> {
        self.blocks.back()?.entries.back()
    }

    /// Inserts an entry where its seq belongs. A full block splits in two
    /// first, so a requeue never shifts more than a block.
    pub(crate) fn insert(&mut self, entry: Entry, extra: Extra) {
        let seq = entry.seq();
        if self.is_empty() || self.back().is_some_and(|last| last.seq() < seq) {
            return self.push_back(entry, extra);
        }
        let mut block = self.block_for(seq);
        if self.blocks[block].is_full() {
            let back = self.blocks[block].split_off(BLOCK_LEN / 2);
            let goes_back = back.first_seq().is_some_and(|first| first < seq);
            self.blocks.insert(block + 1, back);
            block += usize::from(goes_back);
        }
        let entries = &self.blocks[block].entries;
        let index = entries.partition_point(|other| other.seq() < seq);
        self.blocks[block].insert(index, entry, extra);
        self.len += 1;
    }

    /// The block that holds or would hold `seq`: the last that starts at
    /// or below it, or the first.
    fn block_for(&self, seq: u64) -> usize {
        self.blocks
            .partition_point(|block| block.first_seq().is_some_and(|first| first <= seq))
            .saturating_sub(1)
    }

    /// Where the entry `seq` is.
    pub(crate) fn find(&self, seq: u64) -> Option<Spot> {
        let block = self.block_for(seq);
        let entries = &self.blocks.get(block)?.entries;
        let index = entries.partition_point(|entry| entry.seq() < seq);
        entries
            .get(index)
            .filter(|entry| entry.seq() == seq)
            .map(|_| Spot { block, index })
    }

    pub(crate) fn get(&self, spot: Spot) -> &Entry {
        &self.blocks[spot.block].entries[spot.index]
    }

    pub(crate) fn get_mut(&mut self, spot: Spot) -> &mut Entry {
        &mut self.blocks[spot.block].entries[spot.index]
    }

    pub(crate) fn remove(&mut self, spot: Spot) -> Option<(Entry, Extra)> {
        let removed = self.blocks.get_mut(spot.block)?.remove(spot.index)?;
        self.len -= 1;
        if self.blocks[spot.block].entries.is_empty() && self.blocks.len() > 1 {
            self.blocks.remove(spot.block);
        }
        Some(removed)
    }

    pub(crate) fn pop_front(&mut self) -> Option<(Entry, Extra)> {
        self.remove(Spot { block: 0, index: 0 })
    }

    /// The entries, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.blocks.iter().flat_map(|block| &block.entries)
    }

    /// Drops every entry, keeping the first block for the next.
    pub(crate) fn clear(&mut self) {
        self.blocks.truncate(1);
        if let Some(block) = self.blocks.front_mut() {
            block.entries.clear();
            block.extras = None;
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::ready::Page;
    use crate::store::log::Location;

    fn entry(seq: u64) -> Entry {
        let page = Page {
            at: Location {
                segment: 0,
                offset: seq as u32,
                len: 1,
            },
            body_len: 1,
            priority: 0,
            persistent: true,
            page_record: false,
        };
        Entry::new(seq, false, Body::Paged(page))
    }

    fn seqs(level: &Level) -> Vec<u64> {
        level.iter().map(Entry::seq).collect()
    }

    /// A level of the even seqs 2 to 2 * `count`.
    fn evens(count: u64) -> Level {
        let mut level = Level::default();
        (1..=count).for_each(|n| level.push_back(entry(2 * n), Extra::NONE));
        level
    }

    /// A paged-out message costs its entry and nothing else in memory:
    /// 10M paged messages take 10M times this.
    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Body>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn the_seq_and_the_redelivered_flag_share_a_word() {
        let top = (1 << 63) - 1;
        let entry = Entry::new(top, true, entry(0).body);
        assert_eq!((entry.seq(), entry.redelivered()), (top, true));
        assert!(!Entry::new(top, false, entry.body).redelivered());
    }

    #[test]
    fn a_long_level_fills_blocks_and_does_not_double() {
        let level = evens(3 * BLOCK_LEN as u64 + 1);
        assert_eq!(level.blocks.len(), 4);
        let capacities: Vec<usize> = level.blocks.iter().map(|b| b.entries.capacity()).collect();
        assert_eq!(capacities, [BLOCK_LEN; 4], "full size, not doubled past it");
        assert_eq!(level.len(), 3 * BLOCK_LEN + 1);
        assert_eq!(
            seqs(&level),
            (1..=3 * BLOCK_LEN as u64 + 1)
                .map(|n| 2 * n)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn requeue_into_the_middle_of_full_blocks_splits_them_and_keeps_the_order() {
        let count = 3 * BLOCK_LEN as u64;
        let mut level = evens(count);
        // Odd seqs into every block, the first below all, the last in the
        // middle of the last block.
        let odd: Vec<u64> = (0..count).step_by(97).map(|n| 2 * n + 1).collect();
        for &seq in odd.iter().rev() {
            level.insert(entry(seq), Extra::NONE);
        }
        let mut expected: Vec<u64> = (1..=count)
            .map(|n| 2 * n)
            .chain(odd.iter().copied())
            .collect();
        expected.sort_unstable();
        assert_eq!(seqs(&level), expected);
        assert_eq!(level.len(), expected.len());
        assert!(level.blocks.len() > 3, "full blocks split");
        assert!(level
            .blocks
            .iter()
            .all(|block| block.entries.len() <= BLOCK_LEN));
        assert_eq!(level.pop_front().map(|(e, _)| e.seq()), Some(1));
    }

    #[test]
    fn remove_by_seq_finds_entries_in_every_block_and_drops_emptied_blocks() {
        let count = 2 * BLOCK_LEN as u64;
        let mut level = evens(count);
        assert!(level.find(3).is_none(), "an odd seq is not there");
        assert!(level.find(2 * count + 2).is_none(), "nor one past the end");
        // The whole first block, then scattered ones from the second.
        for n in (1..=BLOCK_LEN as u64).rev() {
            let spot = level.find(2 * n).expect("in the first block");
            assert_eq!(level.remove(spot).map(|(e, _)| e.seq()), Some(2 * n));
        }
        assert_eq!(level.blocks.len(), 1, "the emptied block went");
        let spot = level.find(2 * count).expect("the last");
        assert_eq!(level.get(spot).seq(), 2 * count);
        level.remove(spot);
        assert_eq!(level.len(), BLOCK_LEN - 1);
        assert_eq!(
            level.iter().next_back().map(Entry::seq),
            Some(2 * count - 2)
        );
    }

    #[test]
    fn extras_go_in_and_out_with_their_entries_and_others_have_none() {
        let mut level = evens(BLOCK_LEN as u64 + 2);
        let requeued = Extra {
            expires_at_ms: 77,
            returns: 2,
        };
        level.insert(entry(3), requeued);
        level.insert(entry(2 * BLOCK_LEN as u64 + 3), requeued);
        let columns: Vec<bool> = level.blocks.iter().map(|b| b.extras.is_some()).collect();
        assert_eq!(
            columns,
            [true, false, true],
            "columns for the blocks that need one"
        );
        let popped: Vec<(u64, Extra)> = std::iter::from_fn(|| level.pop_front())
            .map(|(entry, extra)| (entry.seq(), extra))
            .filter(|(_, extra)| *extra != Extra::NONE)
            .collect();
        assert_eq!(
            popped,
            [(3, requeued), (2 * BLOCK_LEN as u64 + 3, requeued)]
        );
        assert!(level.is_empty());
        assert_eq!(
            level.blocks.len(),
            1,
            "the last block stays for the next message"
        );
    }
}
