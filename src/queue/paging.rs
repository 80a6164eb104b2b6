//! A queue's side of paging: which ready messages may go to disk, swapping
//! a message's content for its place on disk and back, and what the shard
//! must release. The shard decides when and does the I/O
//! (`shard::paging`); this is plain state.
//!
//! A queue keeps its head in memory: the first ready messages, up to a
//! count and a number of body bytes (`head_len`), are never paged out,
//! and the shard reads paged ones among them back. Unacked messages in
//! memory past as many bytes as the head may go too, after the ready ones
//! behind the head: a consumer without a prefetch limit that acks late
//! holds all it was sent, while a prefetch window's worth is acked soon
//! and not worth a write.

use super::ready::Visit;
use super::{Body, DeadLetter, DeathReason, Page, Queue};
use crate::message::Message;
use crate::store::log::Location;

/// A dead letter that cannot go yet (`Queue::waiting_letters`).
#[derive(Debug)]
pub(crate) enum WaitingLetter {
    /// A paged-out message that left: its record is read back first.
    Paged {
        seq: u64,
        page: Page,
        reason: DeathReason,
    },
    /// One that left after it, in memory.
    Read(DeadLetter),
}

/// A message chosen to be paged out.
pub(crate) struct PageOut {
    pub seq: u64,
    pub message: Message,
    /// Where its enqueue record already is, for a logged message.
    pub logged: Option<Location>,
    /// The memory it holds (`Body::held_bytes`).
    pub held_bytes: u64,
}

/// How much of a queue's head stays in memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    pub messages: usize,
    pub bytes: u64,
}

impl Queue {
    /// Memory held by the ready and unacked messages in memory
    /// (`Body::held_bytes`).
    pub(crate) fn resident_bytes(&self) -> u64 {
        self.ready.resident_bytes() + self.unacked_resident
    }

    /// The part of the ready messages' memory held by messages also in
    /// the log.
    pub(crate) fn logged_bytes(&self) -> u64 {
        self.ready.logged_bytes()
    }

    pub(crate) fn paged_count(&self) -> usize {
        self.ready.paged_count()
    }

    /// How the resident bytes changed since the last call.
    pub(crate) fn resident_change(&mut self) -> i64 {
        let now = self.resident_bytes();
        let change = now as i64 - self.reported_resident as i64;
        self.reported_resident = now;
        change
    }

    /// Whether messages may be resident behind the head (more messages
    /// than the head and the paged ones), or unacked in memory past the
    /// head's bytes. A cheap look that spares the pager a walk past a
    /// queue's paged messages when none would go.
    pub(crate) fn may_page_out(&self, head: Head) -> bool {
        self.ready.len() > self.head_len(head) + self.ready.paged_count()
            || self.unacked_resident > head.bytes
    }

    /// How many ready messages from the front make up the head.
    fn head_len(&self, head: Head) -> usize {
        let mut count = 0;
        self.visit_head(head, |_, _| count += 1);
        count
    }

    /// Calls `visit` with each message of the head, from the front.
    fn visit_head(&self, head: Head, mut visit: impl FnMut(u64, &Body)) {
        let mut bytes = 0;
        self.ready.visit_front(head.messages, |seq, body| {
            if bytes < head.bytes {
                bytes += body.body_len();
                visit(seq, body);
            }
        });
    }

    /// The messages in memory behind the head that leave last (only those
    /// in the log, with `logged_only`), up to `bytes_max` of memory
    /// (`Body::held_bytes`), the last to leave first; then, without
    /// `logged_only`, unacked ones in memory past the head's bytes.
    ///
    /// Behind its head, a level holds paged messages and then those in
    /// memory: the pager takes from the back of each level until the
    /// first that is not a candidate, so the walk stops there too and
    /// never goes through the paged ones. With `logged_only` it also
    /// stops at a message that is not logged, so it leaves no message in
    /// memory among paged ones.
    pub(crate) fn page_out_candidates(
        &self,
        head: Head,
        bytes_max: u64,
        logged_only: bool,
    ) -> Vec<PageOut> {
        let mut chosen = Vec::new();
        let mut bytes = 0;
        self.ready.visit_behind(self.head_len(head), |seq, body| {
            if bytes >= bytes_max {
                return Visit::Stop;
            }
            let (message, logged) = match body {
                Body::Resident(message) if !logged_only => (message, None),
                Body::Logged(message, at) => (message, Some(*at)),
                // Paged already: what is resident before it may still go.
                // Stopping here left a queue whose newest messages were
                // paged unable to page the rest, and a flood blocked at
                // the watermark with the budget long passed.
                Body::Paged(_) => return Visit::Next,
                Body::Resident(_) => return Visit::NextLevel,
            };
            let held_bytes = body.held_bytes();
            bytes += held_bytes;
            chosen.push(PageOut {
                seq,
                message: message.clone(),
                logged,
                held_bytes,
            });
            Visit::Next
        });
        if !logged_only {
            let excess = self.unacked_resident.saturating_sub(head.bytes);
            self.unacked_candidates(bytes_max.saturating_sub(bytes).min(excess), &mut chosen);
        }
        chosen
    }

    /// Adds unacked messages in memory to `chosen`, the newest first, up to
    /// about `bytes_max` of memory. Those left in memory are then the
    /// oldest delivered: messages read back together share the buffer
    /// they were read into, so a few kept from every read would keep all
    /// of those buffers.
    fn unacked_candidates(&self, bytes_max: u64, chosen: &mut Vec<PageOut>) {
        if bytes_max == 0 {
            return;
        }
        // Each in memory, with its content and where it is logged.
        let mut in_memory: Vec<(u64, &Message, Option<Location>, u64)> = (self.unacked.iter())
            .filter_map(|(&seq, unacked)| {
                let (message, logged) = match &unacked.body {
                    Body::Resident(message) => (message, None),
                    Body::Logged(message, at) => (message, Some(*at)),
                    Body::Paged(_) => return None,
                };
                Some((seq, message, logged, unacked.body.held_bytes()))
            })
            .collect();
        if in_memory.is_empty() {
            return;
        }
        let average = (self.unacked_resident / in_memory.len() as u64).max(1);
        let wanted = usize::try_from(bytes_max.div_ceil(average)).unwrap_or(usize::MAX);
        if wanted < in_memory.len() {
            in_memory.select_nth_unstable_by(wanted, |a, b| b.0.cmp(&a.0));
            in_memory.truncate(wanted);
        }
        chosen.extend(
            in_memory
                .into_iter()
                .map(|(seq, message, logged, held_bytes)| PageOut {
                    seq,
                    message: message.clone(),
                    logged,
                    held_bytes,
                }),
        );
    }

    /// Drops the content of ready or unacked message `seq`, now on disk at
    /// `at` (a page record, or its enqueue record); false when it is no
    /// longer held as it was chosen (gone, paged, or its record moved by
    /// compaction meanwhile).
    pub(crate) fn page_out(&mut self, seq: u64, at: Location, page_record: bool) -> bool {
        let paged = |body: &Body| {
            let message = match body {
                Body::Resident(message) if page_record => message,
                Body::Logged(message, logged) if !page_record && *logged == at => message,
                _ => return None,
            };
            Some(Body::Paged(Page::of(message, at, page_record)))
        };
        if self.ready.replace_body(seq, paged).is_some() {
            return true;
        }
        let Some(unacked) = self.unacked.get_mut(&seq) else {
            return false;
        };
        let Some(body) = paged(&unacked.body) else {
            return false;
        };
        let held = std::mem::replace(&mut unacked.body, body);
        self.count_unacked(&held, -1);
        true
    }

    /// The paged-out messages in the head, by seq, for the shard to read
    /// back; none while the first of them is in the head's back half, so
    /// reads come in batches.
    pub(crate) fn page_in_candidates(&self, head: Head) -> Vec<(u64, Location)> {
        let mut pages = Vec::new();
        let mut head_len = 0;
        let mut first_paged = None;
        self.visit_head(head, |seq, body| {
            if let Body::Paged(page) = body {
                first_paged.get_or_insert(head_len);
                pages.push((seq, page.at));
            }
            head_len += 1;
        });
        match first_paged {
            Some(first) if first <= head_len / 2 => pages,
            _ => Vec::new(),
        }
    }

    /// Puts back the content of ready message `seq`, read from `at`. A
    /// page record is no longer needed and is returned for the shard to
    /// release. None when the message left (or was read back) meanwhile.
    pub(crate) fn page_in(
        &mut self,
        seq: u64,
        at: Location,
        mut message: Message,
    ) -> Option<Option<Location>> {
        let mut unpaged = None;
        self.ready.replace_body(seq, |body| match body {
            Body::Paged(page) if page.at == at => {
                message.set_persistent(page.persistent);
                Some(match page.page_record {
                    true => {
                        unpaged = Some(at);
                        Body::Resident(message)
                    }
                    false => Body::Logged(message, at),
                })
            }
            _ => None,
        })?;
        Some(unpaged)
    }

    /// A paged-out message that cannot be read back (an I/O error, or
    /// damage on disk) leaves the queue, so the queue does not wait for it
    /// forever.
    pub(crate) fn discard_unreadable(&mut self, seq: u64) {
        if let Some(ready) = self.ready.remove(seq) {
            self.gone(ready.seq, &ready.body);
        }
    }

    /// Page records no longer needed since the last call; `out` sees them
    /// only when there are some.
    pub(crate) fn take_unpaged(&mut self, out: impl FnOnce(&[Location])) {
        if !self.unpaged.is_empty() {
            out(&self.unpaged);
            self.unpaged.clear();
        }
    }

    /// The page records of a queue being deleted (its logged messages
    /// go with the store's delete record).
    pub(crate) fn page_records(&self, mut visit: impl FnMut(Location)) {
        self.ready
            .for_each(|_, body| body.page_record().into_iter().for_each(&mut visit));
        (self.unacked.values())
            .filter_map(|unacked| unacked.body.page_record())
            .for_each(&mut visit);
        self.waiting_pages()
            .filter(|(_, page)| page.page_record)
            .for_each(|(_, page)| visit(page.at));
    }

    /// Whether the logged message `seq` is still in the queue (ready,
    /// unacked, or a dead letter waiting to be read), so its enqueue
    /// record is live.
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.unacked.contains_key(&seq)
            || self.ready.body(seq).is_some()
            || self.waiting_pages().any(|(waiting, _)| waiting == seq)
    }

    /// Whether message `seq` (ready, unacked, or a dead letter waiting to
    /// be read) is paged out to the page record at `at`.
    pub(crate) fn holds_page(&self, seq: u64, at: Location) -> bool {
        self.ready.body(seq).and_then(Body::page_record) == Some(at)
            || (self.unacked.get(&seq)).and_then(|unacked| unacked.body.page_record()) == Some(at)
            || self
                .waiting_pages()
                .any(|(waiting, page)| waiting == seq && page.page_record && page.at == at)
    }

    /// The record of message `seq` was copied from `from` to `to`
    /// (compaction).
    pub(crate) fn relocate(&mut self, seq: u64, from: Location, to: Location) {
        self.ready.relocate(seq, from, to);
        if let Some(unacked) = self.unacked.get_mut(&seq) {
            unacked.body.relocate(from, to);
        }
        for letter in &mut self.waiting_letters {
            match letter {
                WaitingLetter::Paged {
                    seq: waiting, page, ..
                } if *waiting == seq && page.at == from => {
                    page.at = to;
                }
                _ => {}
            }
        }
    }

    /// The paged-out messages among the waiting dead letters.
    fn waiting_pages(&self) -> impl Iterator<Item = (u64, &Page)> {
        self.waiting_letters
            .iter()
            .filter_map(|letter| match letter {
                WaitingLetter::Paged { seq, page, .. } => Some((*seq, page)),
                WaitingLetter::Read(_) => None,
            })
    }

    /// Whether dead letters wait for a paged-out message to be read back.
    pub(crate) fn has_waiting_letters(&self) -> bool {
        !self.waiting_letters.is_empty()
    }

    /// The dead letters to read back before any more can go, by seq and
    /// place on disk.
    pub(crate) fn letters_to_read(&self) -> Vec<(u64, Location)> {
        self.waiting_pages()
            .map(|(seq, page)| (seq, page.at))
            .collect()
    }

    /// The messages of `pages` (from `letters_to_read`) read back, None
    /// for one that could not be: the waiting dead letters go, in order,
    /// up to one that was not read (it waited while the read ran, or its
    /// record moved meanwhile). Returns how many could not be read; they
    /// are dropped.
    pub(crate) fn letters_read(
        &mut self,
        pages: &[(u64, Location)],
        messages: Vec<Option<Message>>,
    ) -> usize {
        let mut read = pages.iter().zip(messages).peekable();
        let mut lost = 0;
        while let Some(letter) = self.waiting_letters.front() {
            let message = match letter {
                WaitingLetter::Read(_) => None,
                WaitingLetter::Paged { seq, page, .. } => match read.peek() {
                    Some(((read_seq, at), _)) if read_seq == seq && *at == page.at => {
                        read.next().map(|(_, message)| message)
                    }
                    _ => break,
                },
            };
            let Some(letter) = self.waiting_letters.pop_front() else {
                break;
            };
            match (letter, message) {
                (WaitingLetter::Read(letter), _) => self.dead_letters.push(letter),
                (WaitingLetter::Paged { seq, page, reason }, message) => {
                    self.gone(seq, &Body::Paged(page));
                    match message.flatten() {
                        Some(mut message) => {
                            message.set_persistent(page.persistent);
                            self.dead_letters.push(DeadLetter { message, reason });
                        }
                        None => lost += 1,
                    }
                }
            }
        }
        lost
    }

    /// Whether the next message to leave is paged out.
    pub(crate) fn head_is_paged(&self) -> bool {
        self.ready.head_is_paged()
    }
}
