//! Paging: a shard keeps its queues' ready messages in memory up to its
//! share of `--queue-memory-budget` (bodies and `MESSAGE_OVERHEAD_BYTES`
//! each); past it, the newest ones go to disk and only their place in the
//! log stays in memory. Logged messages behind a queue's head leave memory
//! past `LOGGED_IN_MEMORY_MAX` whatever the budget. A
//! queue's head stays in memory (`HEAD`), read back ahead of delivery, so
//! a backlog larger than memory drains in order.
//!
//! Two tasks do the I/O, because handlers never wait:
//! - `page_out_loop`, woken when the shard's resident bytes pass the
//!   budget or a queue holds too much that is logged: picks the queues
//!   holding the most, writes the messages that
//!   are not logged as page records (`Store::page`; a logged message's
//!   enqueue record is already there), waits for the commit that makes
//!   them durable, then drops their content (`Queue::page_out`) if they
//!   are still ready. Pages down to three quarters of the budget.
//! - `page_in_loop`, woken by `Shard::dispatch` for a queue with paged
//!   messages: reads back the paged messages its dead letters wait for
//!   (`read_back_letters`) and the paged ones in the head
//!   (`Store::read_back`), puts them in (`Queue::page_in`), then
//!   dispatches, and answers the basic.gets that found the head on disk
//!   (`park_get`).
//!
//! Each checks again, when its I/O is done, that the message is still
//! where it was, so the handlers may deliver, requeue or purge meanwhile.
//! A page record stays live in its segment (the log's live counts) until
//! its message is read back or leaves the queue.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ahash::RandomState;
use hashbrown::HashSet;

use super::{QueueRequest, Shard};
use crate::config::Config;
use crate::ids::ChannelId;
use crate::ids::QueueId;
use crate::queue::paging::{Head, PageOut};
use crate::queue::Queue;
use crate::runtime::notify::{Notify, Waiters};
use crate::store::log::Location;
use crate::store::record::QueueName;

/// What each queue keeps in memory at its head.
const HEAD: Head = Head {
    messages: 1024,
    bytes: 1 << 20,
};

/// How long the pager waits when over budget with nothing it may page.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Memory (bodies and `MESSAGE_OVERHEAD_BYTES` each) paged out of one queue
/// per write.
const PAGE_OUT_BATCH_BYTES: u64 = 1 << 20;

/// Memory a queue's messages that are also in the log may hold, whatever
/// the budget: past it, those behind the head are dropped from memory
/// (no write: their enqueue record is there), as RabbitMQ 3.12's classic
/// queues keep only a small head in memory. Above the largest head (1 MiB
/// of bodies and 1024 x `MESSAGE_OVERHEAD_BYTES`), so they go in batches.
const LOGGED_IN_MEMORY_MAX: u64 = 4 << 20;

pub(super) struct Pager {
    /// This shard's share of the budget, in bytes.
    budget: u64,
    /// No budget was given: pages also when resident memory nears the
    /// watermark (`LoadBoard::memory_pressure`).
    under_pressure_too: bool,
    /// Memory held by ready messages in memory, over the shard's queues
    /// (`Queue::resident_bytes`).
    resident: Cell<u64>,
    page_out_due: Notify,
    /// Queues holding more than `LOGGED_IN_MEMORY_MAX` of logged messages.
    logged_due: RefCell<HashSet<QueueId, RandomState>>,
    page_in_due: Notify,
    /// Queues with paged messages, to look at for reading back.
    wanted: RefCell<HashSet<QueueId, RandomState>>,
    /// basic.gets that found their queue's head on disk.
    parked_gets: RefCell<Vec<(QueueId, ChannelId, bool)>>,
    /// Woken after every commit of the log.
    pub(super) synced: Waiters,
    /// Woken after each read back.
    paged_in: Waiters,
}

impl Pager {
    pub(super) fn new(config: &Config, shard_count: usize) -> Pager {
        let total = crate::memory::total_memory();
        let budget = match config.queue_memory_budget {
            Some(budget) => budget.bytes(total),
            // RabbitMQ pages at half the memory watermark.
            None => config.memory_high_watermark.bytes(total) / 2,
        };
        Pager {
            budget: budget / shard_count.max(1) as u64,
            under_pressure_too: config.queue_memory_budget.is_none(),
            resident: Cell::new(0),
            page_out_due: Notify::new(),
            logged_due: RefCell::default(),
            page_in_due: Notify::new(),
            wanted: RefCell::default(),
            parked_gets: RefCell::default(),
            synced: Waiters::new(),
            paged_in: Waiters::new(),
        }
    }
}

impl Shard {
    pub(super) fn start_paging(self: &Rc<Self>) {
        crate::runtime::spawn(self.clone().page_out_loop());
        crate::runtime::spawn(self.clone().page_in_loop());
        crate::runtime::spawn(self.clone().compaction_loop());
    }

    /// After any change to `q`: counts its resident bytes into the
    /// shard's, wakes the pager when over budget or when `q` holds too
    /// much that is also in the log, or when `q` has messages on disk and
    /// its head shrank or is on disk, and releases the page records it no
    /// longer needs.
    pub(super) fn after_paging_change(&self, queue: QueueId, q: &mut Queue) {
        let pager = &self.paging;
        let change = q.resident_change();
        let resident = pager.resident.get().wrapping_add_signed(change);
        pager.resident.set(resident);
        if resident > pager.budget {
            pager.page_out_due.notify();
        }
        if q.logged_bytes() > LOGGED_IN_MEMORY_MAX {
            pager.logged_due.borrow_mut().insert(queue);
            pager.page_out_due.notify();
        }
        if q.paged_count() > 0 && (change < 0 || q.head_is_paged()) || q.has_waiting_letters() {
            pager.wanted.borrow_mut().insert(queue);
            pager.page_in_due.notify();
        }
        q.take_unpaged(|records| self.unpage(records));
    }

    /// A queue is deleted: its bytes leave the count and its page records
    /// are released.
    pub(super) fn forget_paged(&self, q: &mut Queue) {
        self.after_paging_change(q.id(), q);
        let pager = &self.paging;
        pager
            .resident
            .set(pager.resident.get() - q.resident_bytes());
        q.page_records(|at| self.unpage(&[at]));
    }

    /// basic.get on a queue whose head is on disk: answered once it is
    /// read back. True when parked.
    pub(super) fn park_get(
        &self,
        queue: QueueId,
        reply_to: ChannelId,
        request: &QueueRequest,
    ) -> bool {
        let QueueRequest::Get { no_ack } = *request else {
            return false;
        };
        let head_paged = self
            .queues
            .borrow()
            .get(&queue)
            .is_some_and(Queue::head_is_paged);
        if head_paged {
            self.paging
                .parked_gets
                .borrow_mut()
                .push((queue, reply_to, no_ack));
            self.paging.wanted.borrow_mut().insert(queue);
            self.paging.page_in_due.notify();
        }
        head_paged
    }

    /// Returns once `queue`'s head is in memory (or the queue is gone or
    /// empty), asking for it to be read back.
    pub(super) async fn read_head_back(&self, queue: QueueId) {
        let head_paged = || {
            self.queues
                .borrow()
                .get(&queue)
                .is_some_and(Queue::head_is_paged)
        };
        if head_paged() {
            self.paging.wanted.borrow_mut().insert(queue);
            self.paging.page_in_due.notify();
            self.paging.paged_in.wait_until(|| !head_paged()).await;
        }
    }

    /// Resident memory is near the watermark (`LoadBoard::memory_pressure`):
    /// the pager runs whatever the budget's count says, unless the budget
    /// was given (then it alone decides).
    pub(super) fn page_under_pressure(&self) {
        if self.paging.under_pressure_too {
            self.paging.page_out_due.notify();
        }
    }

    async fn page_out_loop(self: Rc<Self>) {
        loop {
            self.paging.page_out_due.wait().await;
            let target = self.paging.budget / 4 * 3;
            let pressed = || self.paging.under_pressure_too && self.shared.load.memory_pressure();
            while self.paging.resident.get() > target || pressed() {
                if !self.page_out_some().await {
                    // Only heads are left in memory: look again later
                    // rather than on every change.
                    crate::runtime::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
            self.page_out_logged().await;
        }
    }

    /// Drops the logged messages behind their heads from the memory of
    /// the queues holding more than `LOGGED_IN_MEMORY_MAX` of them.
    async fn page_out_logged(&self) {
        loop {
            let next = self.paging.logged_due.borrow().iter().next().copied();
            let Some(queue) = next else {
                return;
            };
            self.paging.logged_due.borrow_mut().remove(&queue);
            let over = |shard: &Self| {
                shard
                    .queues
                    .borrow()
                    .get(&queue)
                    .is_some_and(|q| q.logged_bytes() > LOGGED_IN_MEMORY_MAX)
            };
            // A batch short of the limit found the rest not logged, or
            // in the head.
            while over(self) && self.page_out_batch(queue, true).await >= PAGE_OUT_BATCH_BYTES {}
        }
    }

    /// Pages out a batch from the queue holding the most bytes that has
    /// something to page; false when none has.
    async fn page_out_some(&self) -> bool {
        let mut by_size: Vec<(u64, QueueId)> = self
            .queues
            .borrow()
            .iter()
            .filter(|(_, q)| q.resident_bytes() > 0 && q.may_page_out(HEAD))
            .map(|(&id, q)| (q.resident_bytes(), id))
            .collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        for (_, queue) in by_size {
            if self.page_out_batch(queue, false).await > 0 {
                return true;
            }
        }
        false
    }

    /// Pages out a batch of `queue`'s messages behind its head (only
    /// logged ones, with `logged_only`); returns the memory it held, 0
    /// when it has none or the log has failed.
    async fn page_out_batch(&self, queue: QueueId, logged_only: bool) -> u64 {
        let (name, chosen) = match self.queues.borrow().get(&queue) {
            Some(q) => (
                QueueName {
                    vhost: q.vhost().clone(),
                    name: q.name().clone(),
                },
                q.page_out_candidates(HEAD, PAGE_OUT_BATCH_BYTES, logged_only),
            ),
            None => return 0,
        };
        let held_bytes = chosen.iter().map(|page_out| page_out.held_bytes).sum();
        match !chosen.is_empty() && self.page_out(queue, &name, chosen).await {
            true => held_bytes,
            false => 0,
        }
    }

    /// Writes what is not on disk yet, waits until all of it is durable,
    /// then drops the content of what is still ready. False when the log
    /// has failed.
    async fn page_out(&self, queue: QueueId, name: &QueueName, chosen: Vec<PageOut>) -> bool {
        let store = self.store();
        let mut placed = Vec::with_capacity(chosen.len());
        for PageOut {
            seq,
            message,
            logged,
            ..
        } in chosen
        {
            match logged {
                Some(at) => placed.push((seq, at, false)),
                None => match store.store.page(name, seq, &message) {
                    Some(appended) => placed.push((seq, appended.at, true)),
                    None => break,
                },
            }
        }
        store.commit_now();
        let log = store.store.log();
        self.paging
            .synced
            .wait_until(|| log.is_failed() || placed.iter().all(|(_, at, _)| log.is_durable(*at)))
            .await;
        if log.is_failed() {
            return false;
        }
        let mut queues = self.queues.borrow_mut();
        let mut q = queues.get_mut(&queue);
        for (seq, at, page_record) in placed {
            let paged = q.as_mut().is_some_and(|q| q.page_out(seq, at, page_record));
            if !paged && page_record {
                store.store.unpage(at);
            }
        }
        if let Some(q) = q {
            self.after_paging_change(queue, q);
        }
        true
    }

    async fn page_in_loop(self: Rc<Self>) {
        loop {
            self.paging.page_in_due.wait().await;
            let wanted: Vec<QueueId> = self.paging.wanted.borrow_mut().drain().collect();
            for queue in wanted {
                self.page_in(queue).await;
            }
        }
    }

    /// Reads `queue`'s waiting dead letters and the paged messages of its
    /// head back, then delivers.
    async fn page_in(self: &Rc<Self>, queue: QueueId) {
        self.read_back_letters(queue).await;
        let pages = match self.queues.borrow().get(&queue) {
            Some(q) => q.page_in_candidates(HEAD),
            None => return,
        };
        if !pages.is_empty() {
            let read = self.read_back(&pages).await;
            let mut queues = self.queues.borrow_mut();
            let Some(q) = queues.get_mut(&queue) else {
                return;
            };
            match read {
                Ok(messages) => self.put_back(q, &pages, messages),
                Err(err) => {
                    tracing::error!(
                        "cannot read {} paged messages of queue '{}' back: {err}; they are dropped",
                        pages.len(),
                        q.name()
                    );
                    pages.iter().for_each(|&(seq, _)| q.discard_unreadable(seq));
                }
            }
            drop(queues);
            // Delivering what came back may wake this task again, for the
            // next batch; with nothing read, nothing changed.
            self.dispatch(queue);
            self.paging.paged_in.wake_all();
        }
        self.answer_parked_gets(queue);
    }

    /// Reads back the records of `pages` once they are durable (a record
    /// compaction just copied may not be yet).
    async fn read_back(
        &self,
        pages: &[(u64, Location)],
    ) -> std::io::Result<Vec<Option<crate::message::Message>>> {
        let log = self.store().store.log();
        self.paging
            .synced
            .wait_until(|| log.is_failed() || pages.iter().all(|(_, at)| log.is_durable(*at)))
            .await;
        self.store().store.read_back(pages).await
    }

    /// Dead letters wait for the paged-out messages among them: reads
    /// those back, then sends the dead letters that can go.
    async fn read_back_letters(&self, queue: QueueId) {
        let pages = match self.queues.borrow().get(&queue) {
            Some(q) => q.letters_to_read(),
            None => return,
        };
        if pages.is_empty() {
            return;
        }
        let read = self.read_back(&pages).await;
        let mut queues = self.queues.borrow_mut();
        let Some(q) = queues.get_mut(&queue) else {
            return;
        };
        let messages = read.unwrap_or_else(|err| {
            tracing::error!(
                "cannot read dead letters of queue '{}' back: {err}",
                q.name()
            );
            vec![None; pages.len()]
        });
        let lost = q.letters_read(&pages, messages);
        if lost > 0 {
            tracing::error!(
                "{lost} paged messages of queue '{}' cannot be read back to be dead-lettered; \
                 they are dropped",
                q.name()
            );
        }
        self.publish_dead_letters(q);
        self.log_gone(queue, q);
        self.after_paging_change(queue, q);
    }

    fn put_back(
        &self,
        q: &mut Queue,
        pages: &[(u64, Location)],
        messages: Vec<Option<crate::message::Message>>,
    ) {
        for (&(seq, at), message) in pages.iter().zip(messages) {
            let Some(message) = message else {
                tracing::error!(
                    "paged message {seq} of queue '{}' is damaged on disk; it is dropped",
                    q.name()
                );
                q.discard_unreadable(seq);
                continue;
            };
            if let Some(Some(record)) = q.page_in(seq, at, message) {
                self.store().store.unpage(record);
            }
        }
    }

    /// Runs again the basic.gets parked on `queue`, in order.
    fn answer_parked_gets(self: &Rc<Self>, queue: QueueId) {
        let parked: Vec<_> = {
            let mut gets = self.paging.parked_gets.borrow_mut();
            let (mine, others) = gets.drain(..).partition(|(q, _, _)| *q == queue);
            *gets = others;
            mine
        };
        for (queue, reply_to, no_ack) in parked {
            self.queue_request(queue, reply_to, QueueRequest::Get { no_ack });
        }
    }

    fn unpage(&self, records: &[Location]) {
        let store = self.store();
        for &at in records {
            store.store.unpage(at);
        }
        store.commit_later();
    }
}
