//! Per-channel state: the publish being assembled from its frames, publisher
//! confirms, transactions, consumers, and the deliveries awaiting an ack.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use crate::ids::QueueId;
use crate::protocol::method::BasicPublish;
use crate::protocol::properties::ContentHeader;
use crate::protocol::ShortStr;
use crate::queue::MessageTotals;
use crate::shard::{Deliver, Settlement};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Open,
    /// We sent channel.close; everything but close-ok is discarded.
    Closing,
}

pub struct Channel {
    pub state: ChannelState,
    pub incoming: Option<Incoming>,
    pub confirm: Option<Confirms>,
    pub tx: Option<Vec<TxAction>>,
    /// The committed publishes of a transactional channel, and the
    /// commit-oks waiting for them.
    pub tx_confirms: Confirms,
    /// Content this channel holds against the connection's cap: the message
    /// being assembled and the transaction's publishes (see `content`).
    pub content_held: u64,
    /// basic.qos prefetch_count (global=false) for consumers created from
    /// now on; the queue enforces it per consumer.
    pub prefetch_count: u16,
    /// basic.qos prefetch_count with global=true: a cap on the channel's
    /// unacked deliveries across all its consumers, enforced here.
    pub prefetch_global: u16,
    /// Ack-mode deliveries over the global cap, waiting for acks to make
    /// room. Their queues already count them as held by this channel, so
    /// closing the channel requeues them there.
    pub held: VecDeque<Deliver>,
    pub consumers: HashMap<ShortStr, Consumer>,
    pub unacked: Unacked,
    /// Queues this channel consumed from or holds messages of: the ones to
    /// tell when it closes.
    pub touched: Vec<QueueId>,
    /// The queue this channel declared last: what an empty queue name in
    /// bind, consume, get, purge and delete refers to.
    pub last_queue: Option<ShortStr>,
    /// This channel's direct reply-to queue, once it consumed
    /// `amq.rabbitmq.reply-to`.
    pub reply_queue: Option<ShortStr>,
    /// Messages published and acked on this channel, for the API's rates
    /// (deliveries are `unacked.next_tag`: one tag per delivery or get).
    pub published: u64,
    pub acked: u64,
}

pub struct Consumer {
    pub queue: QueueId,
}

/// A basic.publish waiting for its header and body frames.
pub struct Incoming {
    pub publish: BasicPublish,
    pub header: Option<ContentHeader>,
    pub body: Body,
}

/// The most a joined body reserves up front; a larger one (only with a
/// huge `--message-size-max`) grows as its frames arrive.
const JOIN_PREALLOCATION_MAX: usize = 512 << 20;

/// Body frames as they arrive: one frame stays a zero-copy slice of the read
/// buffer; several are joined.
pub enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len(),
            Body::Many(bytes) => bytes.len(),
        }
    }

    /// Adds a body frame of a body announced as `body_size` bytes: a body
    /// of several frames is joined into one allocation of exactly that size
    /// (growing by doubling would hold up to twice the bytes).
    pub fn push(&mut self, chunk: Bytes, body_size: usize) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let joined_size = body_size
                    .min(JOIN_PREALLOCATION_MAX)
                    .max(first.len() + chunk.len());
                let mut joined = BytesMut::with_capacity(joined_size);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
            Body::Many(mut joined) => {
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
        }
    }

    pub fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Many(bytes) => bytes.freeze(),
        }
    }
}

/// Publisher confirms, and what a tx.commit-ok waits for: publishes are
/// numbered from 1, and each waits for an answer from the shard of every
/// queue it was routed to (`shard::confirms`: after the fdatasync for a
/// persistent message in a durable queue). They are answered to the client
/// in order, as a contiguous prefix: runs of acks and nacks, each one
/// basic.ack or basic.nack with `multiple`.
#[derive(Default)]
pub struct Confirms {
    /// The last number handed out.
    published: u64,
    /// Every publish up to here has been answered to the client.
    answered: u64,
    /// The publishes after `answered`, in order.
    pending: VecDeque<Pending>,
    /// Transactions: the last publish of each commit awaiting commit-ok.
    pub commits: VecDeque<u64>,
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
    pub fn next_tag(&self) -> u64 {
        self.published + 1
    }

    pub fn published(&self) -> u64 {
        self.published
    }

    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// The publish numbered `next_tag()` went to `shards` queues.
    pub fn publish(&mut self, shards: u32) {
        self.published += 1;
        self.pending.push_back(Pending {
            outstanding: shards,
            rejected: false,
        });
    }

    /// One queue's shard answered publish `tag`; unknown tags are ignored.
    pub fn answer(&mut self, tag: u64, stored: bool) {
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
    pub fn take_answered(&mut self, mut out: impl FnMut(u64, u64, bool)) {
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
    }
}

/// What a transaction defers to tx.commit.
pub enum TxAction {
    Publish {
        publish: BasicPublish,
        header: ContentHeader,
        body: Bytes,
    },
    Settle {
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    },
}

/// Settled entries an `Unacked` may keep beyond twice its live ones.
const COMPACT_SLACK: usize = 64;

/// Delivery tags this channel handed out with ack required, in tag order.
/// Acks mostly come in order, so a deque with settled entries popped from
/// the front is cheaper than a tree and allocates nothing in steady state.
#[derive(Default)]
pub struct Unacked {
    entries: VecDeque<UnackedEntry>,
    /// Entries not yet settled (settled ones linger until the front moves).
    live: usize,
    pub next_tag: u64,
}

#[derive(Clone, Copy)]
pub struct UnackedEntry {
    pub delivery_tag: u64,
    pub queue: QueueId,
    pub seq: u64,
    settled: bool,
}

impl Unacked {
    /// The next delivery tag; `track` records it as awaiting an ack.
    pub fn next(&mut self, queue: QueueId, seq: u64, track: bool) -> u64 {
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
    pub fn settle(
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
        true
    }

    fn position(&self, delivery_tag: u64) -> Option<usize> {
        let index = self
            .entries
            .binary_search_by_key(&delivery_tag, |e| e.delivery_tag)
            .ok()?;
        (!self.entries[index].settled).then_some(index)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Entries kept, settled or not (for tests of the memory bound).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.entries.len()
    }

    /// Everything still unacked, oldest first; leaves the set empty.
    pub fn drain(&mut self) -> impl Iterator<Item = UnackedEntry> + '_ {
        self.live = 0;
        self.entries.drain(..).filter(|e| !e.settled)
    }
}

impl Channel {
    pub fn new() -> Channel {
        Channel {
            state: ChannelState::Open,
            incoming: None,
            confirm: None,
            tx_confirms: Confirms::default(),
            tx: None,
            content_held: 0,
            prefetch_count: 0,
            prefetch_global: 0,
            held: VecDeque::new(),
            consumers: HashMap::new(),
            unacked: Unacked::default(),
            touched: Vec::new(),
            last_queue: None,
            reply_queue: None,
            published: 0,
            acked: 0,
        }
    }

    /// What this channel published, delivered (one tag per delivery or
    /// get) and had acked.
    pub fn totals(&self) -> MessageTotals {
        MessageTotals {
            published: self.published,
            delivered: self.unacked.next_tag,
            acked: self.acked,
        }
    }

    /// Takes a delivery from a queue: returns it with its delivery tag when
    /// it may be written now, or keeps it while the global prefetch is full.
    pub fn admit(&mut self, deliver: Deliver) -> Option<(Deliver, u64)> {
        if !deliver.no_ack && (!self.held.is_empty() || self.global_prefetch_full()) {
            self.held.push_back(deliver);
            return None;
        }
        let delivery_tag = self
            .unacked
            .next(deliver.queue, deliver.seq, !deliver.no_ack);
        Some((deliver, delivery_tag))
    }

    /// The next held delivery, once acks have made room for it.
    pub fn release_held(&mut self) -> Option<Deliver> {
        if self.global_prefetch_full() {
            return None;
        }
        self.held.pop_front()
    }

    fn global_prefetch_full(&self) -> bool {
        self.prefetch_global != 0 && self.unacked.len() >= usize::from(self.prefetch_global)
    }

    pub fn touch(&mut self, queue: QueueId) {
        if !self.touched.contains(&queue) {
            self.touched.push(queue);
        }
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
