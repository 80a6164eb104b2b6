//! One shard's message log: numbered segment files, appended to in whole
//! blocks, with group commit.
//!
//! Handlers append records to an in-memory batch (`append`, synchronous,
//! never waits); the shard's commits (`commit`: `begin_commit`, then
//! `finish_commit`) write everything appended so far, fdatasync it, and
//! report how far the log is durable. A commit
//! starts as soon as one of the shard's two commit slots is free, so
//! whatever arrives during an fdatasync rides on the next: one sync
//! covers every publisher that was waiting, with no timer.
//!
//! Every commit starts at a block boundary and pads its last block with
//! zeros, so a block that was synced is never written again (a torn
//! rewrite could destroy records already confirmed). The next segment is
//! made ahead, filled with zeros (`spare`); one made at the commit that
//! needs it is preallocated. A record larger than a segment gets a
//! segment of its own size. A file is named `EPOCH-SHARD-INDEX.seg`: the
//! epoch counts the broker's starts, so a log written by an earlier run,
//! with another shard count, is never appended to (see `recovery`). A log may take an earlier
//! run's segments over (`inherit`): they come first in its order, are read
//! and deleted as its own, and this run's segments are numbered after
//! them.
//!
//! Each segment counts its live messages; a segment at the front of the
//! log with none left is deleted. Only from the front: a later segment
//! may hold the acks of messages in an earlier one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::disk::{Disk, DiskFile, BLOCK};
use super::recovery::OldSegment;
use crate::runtime::notify::Waiters;

mod commit;
mod spare;

pub(crate) use commit::Commit;

/// A position in the log: the number of records appended before and with
/// it. A commit makes a prefix of the log durable.
pub(crate) type Lsn = u64;

/// Segment files kept open for reading paged-out messages back.
const READERS_MAX: usize = 8;

pub(crate) fn segment_name(epoch: u64, shard: usize, index: u64) -> String {
    format!("{epoch:010}-{shard:03}-{index:010}.seg")
}

/// `(epoch, shard, index)` of a segment file's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, usize, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let mut parts = stem.split('-');
    let epoch = parts.next()?.parse().ok()?;
    let shard = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((epoch, shard, index))
}

/// Records for one segment, written by one commit.
struct Batch {
    segment: u64,
    /// Where the batch starts in its segment (a block boundary).
    pos: u64,
    /// The segment starts with this batch and has this capacity.
    creates: Option<u64>,
    bytes: Vec<u8>,
}

struct State<F> {
    batches: Vec<Batch>,
    appended: Lsn,
    durable: Lsn,
    /// The segment appended to, its logical end and its capacity.
    tail: Option<(u64, u64, u64)>,
    tail_file: Option<(u64, Rc<F>)>,
    /// Live messages per segment, in segment order.
    live: BTreeMap<u64, u64>,
    /// Message records ever appended per live segment (for compaction).
    messages: BTreeMap<u64, u64>,
    /// Segments to delete at the end of the next commit.
    doomed: Vec<u64>,
    failed: Option<String>,
    /// Commits that wrote something (one fdatasync per file written).
    commits: u64,
    /// Segment and end of what the last commit made durable: a record
    /// before it can be read back.
    durable_end: (u64, u64),
    /// Files opened to read paged-out messages back, by segment.
    readers: BTreeMap<u64, Rc<F>>,
    /// Segments of earlier runs taken over (`inherit`), by number: their
    /// file names.
    inherited: BTreeMap<u64, String>,
    /// The number of this run's first segment.
    first_new: u64,
    /// The next segment, made ahead (`prepare_spare`), and the one being
    /// made.
    spare: Option<(u64, Rc<F>)>,
    preparing: Option<u64>,
    /// The commits in flight.
    pipeline: commit::Pipeline,
}

pub(crate) struct Log<D: Disk> {
    disk: D,
    epoch: u64,
    shard: usize,
    segment_size: u64,
    /// fdatasync before reporting a commit durable (off only with
    /// `--unsafe-no-fsync`).
    fsync: bool,
    state: RefCell<State<D::File>>,
    /// Woken when a spare segment is made (or failed to be).
    spare_made: Waiters,
    /// Woken when a commit has its files, when the log is durable further,
    /// and when it fails (`commit::place` waits for these).
    placed: Waiters,
}

/// Where an appended record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) lsn: Lsn,
    pub segment: u64,
    pub at: Location,
}

/// A record's place in a shard's log: its segment (by its number in this
/// log), where it starts and its length with the header. What a paged-out message keeps in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u32,
    pub(crate) offset: u32,
    pub len: u32,
}

impl Location {
    fn end(self) -> (u64, u64) {
        (
            u64::from(self.segment),
            u64::from(self.offset) + u64::from(self.len),
        )
    }
}

impl<D: Disk> Log<D> {
    pub(crate) fn new(disk: D, epoch: u64, shard: usize, segment_size: u64, fsync: bool) -> Self {
        Log {
            disk,
            epoch,
            shard,
            segment_size: segment_size.max(BLOCK).next_multiple_of(BLOCK),
            fsync,
            state: RefCell::new(State {
                batches: Vec::new(),
                appended: 0,
                durable: 0,
                tail: None,
                tail_file: None,
                live: BTreeMap::new(),
                messages: BTreeMap::new(),
                doomed: Vec::new(),
                failed: None,
                commits: 0,
                durable_end: (0, 0),
                readers: BTreeMap::new(),
                inherited: BTreeMap::new(),
                first_new: 1,
                spare: None,
                preparing: None,
                pipeline: commit::Pipeline::default(),
            }),
            spare_made: Waiters::new(),
            placed: Waiters::new(),
        }
    }

    /// Why the log stopped, if a write or sync failed: it takes nothing
    /// more after that.
    #[cfg(test)]
    pub(crate) fn failed(&self) -> Option<String> {
        self.state.borrow().failed.clone()
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.state.borrow().failed.is_some()
    }

    /// Takes over segments of earlier runs, before anything is appended
    /// (`recovery::plan`): they become segments 1 to n of this log, with
    /// their counts, read, compacted and deleted as its own; this run's
    /// segments are numbered after them.
    pub(crate) fn inherit(&self, segments: Vec<OldSegment>) {
        let mut state = self.state.borrow_mut();
        debug_assert!(state.tail.is_none(), "inherit before the first append");
        for (index, segment) in (1..).zip(segments) {
            state.live.insert(index, segment.live);
            state.messages.insert(index, segment.written);
            state.inherited.insert(index, segment.name);
        }
        state.first_new = state.inherited.len() as u64 + 1;
        // Everything in them is on disk.
        state.durable_end = (state.first_new, 0);
        self.doom_dead_front(&mut state);
    }

    /// Records appended so far (the position a commit now would make
    /// durable).
    pub(crate) fn appended(&self) -> Lsn {
        self.state.borrow().appended
    }

    pub(crate) fn durable(&self) -> Lsn {
        self.state.borrow().durable
    }

    /// Records made durable, and the commits that did it.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.durable, state.commits)
    }

    /// Appends the record `encode` writes; `message` counts it as a live
    /// message of its segment. None once the log has failed.
    pub(crate) fn append(
        &self,
        message: bool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Option<Appended> {
        let mut state = self.state.borrow_mut();
        if state.failed.is_some() {
            return None;
        }
        let batch = self.batch_for_tail(&mut state);
        let start = batch.bytes.len();
        encode(&mut batch.bytes);
        let len = (batch.bytes.len() - start) as u64;
        let (segment, end, capacity) = state.tail.expect("batch_for_tail sets the tail");
        let mut offset = end;
        if end + len > capacity && end > 0 {
            offset = 0;
            // Does not fit: the record opens the next segment.
            let record = state
                .batches
                .last_mut()
                .expect("batch_for_tail pushed a batch")
                .bytes
                .split_off(start);
            if state.batches.last().is_some_and(|b| b.bytes.is_empty()) {
                state.batches.pop();
            }
            self.roll(&mut state, segment + 1, record);
        } else {
            // A record larger than a segment fills a segment of its own.
            let fitted = capacity.max((end + len).next_multiple_of(BLOCK));
            if let Some(batch) = state.batches.last_mut().filter(|b| b.creates.is_some()) {
                batch.creates = Some(fitted);
            }
            state.tail = Some((segment, end + len, fitted));
        }
        state.appended += 1;
        let segment = state.tail.expect("the tail is set").0;
        if message {
            *state.live.entry(segment).or_default() += 1;
            *state.messages.entry(segment).or_default() += 1;
        }
        Some(Appended {
            lsn: state.appended,
            segment,
            // Segments are numbered from 1 per log, and a record's offset
            // and length are below its segment's size, which --segment-size
            // and --message-size-max keep far under 4 GiB.
            at: Location {
                segment: u32::try_from(segment).unwrap_or(u32::MAX),
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                len: u32::try_from(len).unwrap_or(u32::MAX),
            },
        })
    }

    /// The front segment, when it is durable, not the tail, and fewer than
    /// a quarter of the messages written to it are still live: one old
    /// message there keeps every later segment from being deleted.
    pub(crate) fn compaction_candidate(&self) -> Option<u64> {
        let state = self.state.borrow();
        let (&segment, &live) = state.live.first_key_value()?;
        let written = state.messages.get(&segment).copied().unwrap_or(0);
        let tail = state.tail.map_or(state.first_new, |(tail, _, _)| tail);
        (segment < tail && segment < state.durable_end.0 && live * 4 < written).then_some(segment)
    }

    /// The whole of a durable segment.
    pub(crate) async fn read_segment(&self, segment: u64) -> io::Result<Vec<u8>> {
        let file = self.reader(segment).await?;
        let len = file.size().await? as usize;
        file.read_at(0, len).await
    }

    /// Whether the record at `at` is on disk, so it can be read back.
    pub(crate) fn is_durable(&self, at: Location) -> bool {
        at.end() <= self.state.borrow().durable_end
    }

    /// Reads `len` bytes at `offset` of `segment`, which must be durable
    /// (`is_durable`) and live (a message in it keeps it from deletion).
    pub(crate) async fn read(&self, segment: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.reader(segment).await?;
        let bytes = file.read_at(offset, len).await?;
        if bytes.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "short read in log segment {segment}: {} of {len} bytes",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// A file to read `segment` from, kept open for the next reads (a
    /// few, the most recently opened).
    async fn reader(&self, segment: u64) -> io::Result<Rc<D::File>> {
        if let Some(file) = self.state.borrow().readers.get(&segment) {
            return Ok(file.clone());
        }
        let name = self.file_name(&self.state.borrow(), segment);
        let file = Rc::new(self.disk.open_for_reading(&name).await?);
        let mut state = self.state.borrow_mut();
        if state.readers.len() >= READERS_MAX {
            state.readers.pop_first();
        }
        state.readers.insert(segment, file.clone());
        Ok(file)
    }

    /// The file that holds `segment`.
    fn file_name(&self, state: &State<D::File>, segment: u64) -> String {
        match state.inherited.get(&segment) {
            Some(name) => name.clone(),
            None => segment_name(self.epoch, self.shard, segment),
        }
    }

    /// The open batch of the tail segment, opening the first segment or a
    /// new batch (after a commit took the last one) as needed.
    fn batch_for_tail<'s>(&self, state: &'s mut State<D::File>) -> &'s mut Batch {
        let Some((segment, end, _)) = state.tail else {
            self.roll(state, state.first_new, Vec::new());
            return state.batches.last_mut().expect("roll pushed a batch");
        };
        if state.batches.last().is_none_or(|b| b.segment != segment) {
            state.batches.push(Batch {
                segment,
                pos: end,
                creates: None,
                bytes: Vec::new(),
            });
        }
        state.batches.last_mut().expect("a batch was pushed")
    }

    /// Starts segment `index` with `bytes` (one record, or nothing).
    fn roll(&self, state: &mut State<D::File>, index: u64, bytes: Vec<u8>) {
        let capacity = self
            .segment_size
            .max((bytes.len() as u64).next_multiple_of(BLOCK));
        state.tail = Some((index, bytes.len() as u64, capacity));
        state.live.entry(index).or_default();
        state.batches.push(Batch {
            segment: index,
            pos: 0,
            creates: Some(capacity),
            bytes,
        });
        self.doom_dead_front(state);
    }

    /// `count` messages of `segment` left their queues.
    pub(crate) fn release(&self, segment: u64, count: u64) {
        let mut state = self.state.borrow_mut();
        if let Some(live) = state.live.get_mut(&segment) {
            *live = live.saturating_sub(count);
        }
        self.doom_dead_front(&mut state);
    }

    /// Front segments with no live message, before the tail, are deleted
    /// by the next commit.
    fn doom_dead_front(&self, state: &mut State<D::File>) {
        let tail = state
            .tail
            .map_or(state.first_new, |(segment, _, _)| segment);
        while let Some((&segment, &live)) = state.live.first_key_value() {
            if live > 0 || segment >= tail {
                break;
            }
            state.live.pop_first();
            state.messages.remove(&segment);
            state.doomed.push(segment);
        }
    }
}
