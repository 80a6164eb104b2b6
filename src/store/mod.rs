//! The message store: persistent messages of durable queues on disk, so
//! they survive a restart, a `kill -9` and a power loss.
//!
//! One append-only log per shard (`log`), shared by every queue the shard
//! owns, holds the facts as records (`record`): a message entered a queue,
//! messages left it, the queue was deleted; a message waits in a delayed
//! exchange, and left it. The shard appends as it handles publishes, acks
//! and deletes, without waiting; its commit task writes and fdatasyncs
//! (group commit) and then answers the publishers waiting for that sync
//! (`shard::confirms`). At start-up `recovery` reads the logs of earlier
//! runs into an index, and each shard takes its part over
//! (`Store::take_over`): old segments as they are, written again first
//! when the shard count split them (`recovery::plan`).
//!
//! What is logged: a message with delivery_mode 2 (or any message of a
//! quorum queue) entering a durable, non-exclusive queue; what leaves such
//! a queue; the queue's deletion; a persistent message waiting in a
//! durable x-delayed-message exchange. Nothing else touches the store, so
//! the transient path costs one flag test.
//!
//! The store keeps, per queue, only runs of seqs by segment with a live
//! count, so a segment knows when its last message left. Messages stay in
//! their queue's memory until the shard pages them out (`shard::paging`):
//! a logged message is then only its record's `Location`; any other is
//! first written as a page record (`Store::page`), which keeps its segment
//! alive until the message is read back (`Store::read_back`) or leaves.

pub(crate) mod compaction;
pub(crate) mod disk;
pub(crate) mod log;
pub(crate) mod record;
pub(crate) mod recovery;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;

use ahash::RandomState;
use hashbrown::HashMap;

use crate::ids::QueueId;
use crate::message::Message;
use disk::Disk;
use log::{Appended, Location, Log};
use record::{Delayed, QueueName};
use recovery::{QueueIndex, RecoveredMessage, Share};

/// A queue's logged messages: from a first seq on, in one segment, with
/// how many of them are still in the queue.
#[derive(Default)]
struct Runs {
    name: Option<QueueName>,
    runs: BTreeMap<u64, (u64, u64)>,
}

impl Runs {
    fn add(&mut self, seq: u64, segment: u64) {
        match self.runs.last_entry() {
            Some(mut last) if last.get().0 == segment => last.get_mut().1 += 1,
            _ => {
                self.runs.insert(seq, (segment, 1));
            }
        }
    }

    /// The segment that holds `seq`, counted out of its run.
    fn remove(&mut self, seq: u64) -> Option<u64> {
        let mut entry = self.runs.range_mut(..=seq).next_back()?;
        let (segment, live) = &mut entry.1;
        *live = live.saturating_sub(1);
        let (segment, start, empty) = (*segment, *entry.0, *live == 0);
        if empty {
            self.runs.remove(&start);
        }
        Some(segment)
    }
}

/// Recovered messages whose queue has not been declared yet this run.
struct Unclaimed {
    runs: Runs,
    messages: Vec<RecoveredMessage>,
}

/// Records read back in one read when they lie this close together.
const READ_GAP_MAX: u64 = 64 << 10;
/// The most one read back takes at once.
const READ_SPAN_MAX: u64 = 1 << 20;

pub(crate) struct Store<D: Disk> {
    log: Log<D>,
    queues: RefCell<HashMap<QueueId, Runs, RandomState>>,
    unclaimed: RefCell<BTreeMap<QueueName, Unclaimed>>,
    recovered_delays: RefCell<Vec<(Delayed, Location)>>,
}

impl<D: Disk> Store<D> {
    pub(crate) fn new(log: Log<D>) -> Self {
        Store {
            log,
            queues: RefCell::new(HashMap::default()),
            unclaimed: RefCell::new(BTreeMap::new()),
            recovered_delays: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn log(&self) -> &Log<D> {
        &self.log
    }

    /// Takes this shard's part of the earlier runs (`recovery::plan`),
    /// before anything else is logged: it is on disk already.
    pub(crate) fn take_over(&self, share: Share) {
        self.log.inherit(share.segments);
        self.inherit(share.queues);
        *self.recovered_delays.borrow_mut() = share.delayed;
    }

    /// The delayed messages recovered for this shard, with where their
    /// delay records are now (once: the shard's timer takes them).
    pub(crate) fn take_recovered_delays(&self) -> Vec<(Delayed, Location)> {
        std::mem::take(&mut *self.recovered_delays.borrow_mut())
    }

    /// Logs a message waiting in a durable x-delayed-message exchange,
    /// live until `undelay`; None once the log has failed.
    pub(crate) fn delay(&self, delayed: &Delayed) -> Option<Appended> {
        self.log
            .append(true, |out| record::encode_delay(out, delayed))
    }

    /// The delayed message `id`, logged at `at`, was routed or dropped.
    pub(crate) fn undelay(&self, exchange: &QueueName, id: u64, at: Location) {
        self.log
            .append(false, |out| record::encode_undelay(out, exchange, id));
        self.log.release(u64::from(at.segment), 1);
    }

    /// Takes the recovered messages of this shard's queues whose records
    /// stay where they are, in segments the log inherited, to be claimed
    /// by their queues when declared.
    fn inherit(&self, queues: QueueIndex) {
        let mut unclaimed = self.unclaimed.borrow_mut();
        for (name, messages) in queues {
            let mut runs = Runs::default();
            for message in &messages {
                runs.add(message.seq, u64::from(message.at.segment));
            }
            runs.name = Some(name.clone());
            unclaimed.insert(name, Unclaimed { runs, messages });
        }
    }

    /// A durable queue now exists on this shard: its messages are logged
    /// from now on. Returns what recovery found for it, by seq, each
    /// on disk (durable once `Log::is_durable` says so).
    pub(crate) fn track(&self, queue: QueueId, name: QueueName) -> Vec<RecoveredMessage> {
        let (runs, messages) = match self.unclaimed.borrow_mut().remove(&name) {
            Some(Unclaimed { runs, messages }) => (runs, messages),
            None => (
                Runs {
                    name: Some(name),
                    runs: BTreeMap::new(),
                },
                Vec::new(),
            ),
        };
        self.queues.borrow_mut().insert(queue, runs);
        messages
    }

    /// Drops the recovered messages that no queue claimed once the
    /// durable definitions are applied: their queue was deleted, and a
    /// crash came before its delete record. Logs the delete now, so they
    /// do not come back, and returns how many messages of which queues.
    pub(crate) fn drop_unclaimed(&self) -> Vec<(QueueName, usize)> {
        let unclaimed = std::mem::take(&mut *self.unclaimed.borrow_mut());
        let mut dropped = Vec::new();
        for (name, Unclaimed { runs, messages }) in unclaimed {
            self.log
                .append(false, |out| record::encode_delete(out, &name));
            for (segment, live) in runs.runs.into_values() {
                self.log.release(segment, live);
            }
            dropped.push((name, messages.len()));
        }
        dropped
    }

    /// Logs a message entering `queue` under `seq`; None when the queue
    /// is not logged or the log has failed.
    pub(crate) fn enqueue(&self, queue: QueueId, seq: u64, message: &Message) -> Option<Appended> {
        let mut queues = self.queues.borrow_mut();
        let runs = queues.get_mut(&queue)?;
        let name = runs.name.as_ref()?;
        let appended = self
            .log
            .append(true, |out| record::encode_enqueue(out, name, seq, message))?;
        runs.add(seq, appended.segment);
        Some(appended)
    }

    /// Writes a message that is not logged out of its queue's memory: a
    /// page record, live until `unpage`. None once the log has failed.
    pub(crate) fn page(&self, queue: &QueueName, seq: u64, message: &Message) -> Option<Appended> {
        self.log
            .append(true, |out| record::encode_page(out, queue, seq, message))
    }

    /// The page record at `at` is no longer needed (read back, or its
    /// message left the queue).
    pub(crate) fn unpage(&self, at: Location) {
        self.log.release(u64::from(at.segment), 1);
    }

    /// Reads paged-out messages back: `pages` by seq and location, each
    /// durable (`Log::is_durable`). Records close together in a segment
    /// are read at once. A record that does not read back as the message
    /// asked for (damage on disk) comes back as None.
    pub(crate) async fn read_back(
        &self,
        pages: &[(u64, Location)],
    ) -> std::io::Result<Vec<Option<Message>>> {
        let mut order: Vec<usize> = (0..pages.len()).collect();
        order.sort_by_key(|&i| (pages[i].1.segment, pages[i].1.offset));
        let mut messages = vec![None; pages.len()];
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            let span = span_len(pages, rest);
            let at = pages[first].1;
            let (start, end) = (u64::from(at.offset), span_end(pages, &rest[..span]));
            let bytes = bytes::Bytes::from(
                self.log
                    .read(u64::from(at.segment), start, (end - start) as usize)
                    .await?,
            );
            let sparse = wanted_len(pages, &rest[..span]) * 2 < bytes.len() as u64;
            for &i in &rest[..span] {
                let (seq, at) = pages[i];
                let from = (u64::from(at.offset) - start) as usize;
                let record = &bytes[from..from + at.len as usize];
                // A message's body is a slice of what was read, which stays
                // in memory as long as any message of it does. Where the
                // records are a small part of it (a commit of one record
                // takes a whole block), each gets a copy of its own.
                let record = match sparse {
                    true => bytes::Bytes::copy_from_slice(record),
                    false => bytes.slice_ref(record),
                };
                messages[i] = message_of(&record, seq);
            }
            rest = &rest[span..];
        }
        Ok(messages)
    }

    /// Logs that messages left `queue` (not waited for: a settle that a
    /// crash loses only brings a message back).
    pub(crate) fn settle(&self, queue: QueueId, seqs: &[u64]) {
        let mut queues = self.queues.borrow_mut();
        let Some(runs) = queues.get_mut(&queue) else {
            return;
        };
        let Some(name) = runs.name.clone() else {
            return;
        };
        if self
            .log
            .append(false, |out| record::encode_settle(out, &name, seqs))
            .is_none()
        {
            return;
        }
        for &seq in seqs {
            if let Some(segment) = runs.remove(seq) {
                self.log.release(segment, 1);
            }
        }
    }

    /// Logs a queue's deletion; its messages are dead.
    pub(crate) fn delete(&self, queue: QueueId) {
        let Some(runs) = self.queues.borrow_mut().remove(&queue) else {
            return;
        };
        if let Some(name) = &runs.name {
            self.log
                .append(false, |out| record::encode_delete(out, name));
        }
        for (segment, live) in runs.runs.into_values() {
            self.log.release(segment, live);
        }
    }
}

/// How many of `sorted` (indexes into `pages`, by position) one read takes:
/// the same segment, gaps up to `READ_GAP_MAX`, at most `READ_SPAN_MAX`.
fn span_len(pages: &[(u64, Location)], sorted: &[usize]) -> usize {
    let first = pages[sorted[0]].1;
    let mut end = u64::from(first.offset) + u64::from(first.len);
    let mut taken = 1;
    for &i in &sorted[1..] {
        let at = pages[i].1;
        let next_end = u64::from(at.offset) + u64::from(at.len);
        if at.segment != first.segment
            || u64::from(at.offset) > end + READ_GAP_MAX
            || next_end - u64::from(first.offset) > READ_SPAN_MAX
        {
            break;
        }
        end = end.max(next_end);
        taken += 1;
    }
    taken
}

/// The bytes of the records `span` asks for.
fn wanted_len(pages: &[(u64, Location)], span: &[usize]) -> u64 {
    span.iter().map(|&i| u64::from(pages[i].1.len)).sum()
}

fn span_end(pages: &[(u64, Location)], span: &[usize]) -> u64 {
    span.iter()
        .map(|&i| u64::from(pages[i].1.offset) + u64::from(pages[i].1.len))
        .max()
        .unwrap_or(0)
}

/// The message of the record in `bytes`, if it is one and has `seq`.
pub(super) fn message_of(bytes: &bytes::Bytes, seq: u64) -> Option<Message> {
    match record::scan(bytes) {
        record::Scan::Record(
            record::Record::Enqueue {
                seq: found,
                message,
                ..
            }
            | record::Record::Page {
                seq: found,
                message,
                ..
            },
            _,
        ) if found == seq => Some(message),
        _ => None,
    }
}
