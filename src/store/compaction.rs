//! Compaction of the log's front segment.
//!
//! Segments are deleted only from the front (a later segment may hold the
//! settles of messages in an earlier one), so one long-lived message in
//! the front segment would keep every later segment on disk. When fewer
//! than a quarter of the front segment's messages are live
//! (`Log::compaction_candidate`), its live records are appended again at
//! the log's head, byte for byte, and it is released; it is deleted by
//! the commit that makes the copies durable, as any dead front segment.
//!
//! Why this is safe:
//! - Nothing before the front segment exists, so its settle and delete
//!   records refer only to its own records; those that are not live are
//!   not copied, and dropping the settles loses nothing.
//! - A copy comes after everything else in the log, so recovery applies
//!   any later settle after it; a crash before the copies are synced
//!   leaves the front segment in place (recovery then sees the original,
//!   or the original and an identical copy under the same seq: the same
//!   message once).
//! - The copies are appended, never written over a synced block.
//! - Deciding what is live, appending and moving the live counts happen
//!   in one synchronous step after the read, so no handler runs between.

use std::io;

use ahash::RandomState;
use bytes::Bytes;
use hashbrown::HashMap;

use super::disk::{Disk, BLOCK};
use super::log::Location;
use super::record::{scan, QueueName, Record, Scan};
use super::recovery::pads_to_block_end;
use super::Store;
use crate::ids::QueueId;

/// A live record of the front segment, as the caller is asked about it.
pub(crate) enum LiveRecord<'a> {
    /// A logged message of a queue this store tracks.
    Enqueue { queue: QueueId, seq: u64 },
    /// A page record.
    Page {
        queue: &'a QueueName,
        seq: u64,
        at: Location,
    },
    /// A delayed message's record.
    Delay { id: u64, at: Location },
}

/// A record copied to the head: what holds `from` must now hold `to`.
#[derive(Clone, Debug)]
pub(crate) struct Moved {
    /// The queue, or for a delayed message its exchange.
    pub queue: QueueName,
    /// The message's seq, or a delayed message's id.
    pub seq: u64,
    pub from: Location,
    pub to: Location,
    pub delayed: bool,
}

impl<D: Disk> Store<D> {
    /// Compacts the front segment if it is mostly dead; `is_live` says
    /// whether a queue still holds a record's message. Returns the
    /// records moved (empty when nothing was to do, or the segment does
    /// not read back whole: then it stays).
    pub(crate) async fn compact_front(
        &self,
        is_live: impl Fn(&LiveRecord) -> bool,
    ) -> io::Result<Vec<Moved>> {
        let Some(segment) = self.log.compaction_candidate() else {
            return Ok(Vec::new());
        };
        let bytes = Bytes::from(self.log.read_segment(segment).await?);
        // The read awaited: the segment may have died or moved meanwhile.
        if self.log.compaction_candidate() != Some(segment) {
            return Ok(Vec::new());
        }
        let Some(records) = records_of(&bytes, segment) else {
            tracing::warn!("log segment {segment} does not read back whole; it is not compacted");
            return Ok(Vec::new());
        };
        Ok(self.copy_live(segment, &bytes, records, is_live))
    }

    fn copy_live(
        &self,
        segment: u64,
        bytes: &Bytes,
        records: Vec<(Record, Location)>,
        is_live: impl Fn(&LiveRecord) -> bool,
    ) -> Vec<Moved> {
        let ids: HashMap<QueueName, QueueId, RandomState> = self
            .queues
            .borrow()
            .iter()
            .filter_map(|(&id, runs)| Some((runs.name.clone()?, id)))
            .collect();
        let mut moved = Vec::new();
        let mut enqueues = Vec::new();
        for (record, from) in records {
            // Some(Some(queue)): a live enqueue record; Some(None): a
            // live page or delay record.
            let (queue, seq, live, delayed) = match record {
                Record::Enqueue { queue, seq, .. } => {
                    let id = ids.get(&queue).copied();
                    let live = id.filter(|&id| is_live(&LiveRecord::Enqueue { queue: id, seq }));
                    (queue, seq, live.map(Some), false)
                }
                Record::Page { queue, seq, .. } => {
                    let live = is_live(&LiveRecord::Page {
                        queue: &queue,
                        seq,
                        at: from,
                    });
                    (queue, seq, live.then_some(None), false)
                }
                Record::Delay(delayed) => {
                    let live = is_live(&LiveRecord::Delay {
                        id: delayed.id,
                        at: from,
                    });
                    (delayed.exchange, delayed.id, live.then_some(None), true)
                }
                Record::Settle { .. } | Record::Delete { .. } | Record::Undelay { .. } => continue,
            };
            let Some(enqueue_of) = live else { continue };
            let start = from.offset as usize;
            let raw = &bytes[start..start + from.len as usize];
            let Some(appended) = self.log.append(true, |out| out.extend_from_slice(raw)) else {
                break;
            };
            match enqueue_of {
                Some(id) => enqueues.push((id, seq, appended.segment)),
                None => self.log.release(segment, 1),
            }
            moved.push(Moved {
                queue,
                seq,
                from,
                to: appended.at,
                delayed,
            });
        }
        self.move_runs(&enqueues);
        moved
    }

    /// The copied messages' runs: out of the front segment first (a run
    /// may start at a seq that also moves), then each a run of its own.
    fn move_runs(&self, enqueues: &[(QueueId, u64, u64)]) {
        let mut queues = self.queues.borrow_mut();
        for &(queue, seq, _) in enqueues {
            if let Some(old) = queues.get_mut(&queue).and_then(|runs| runs.remove(seq)) {
                self.log.release(old, 1);
            }
        }
        for &(queue, seq, to) in enqueues {
            if let Some(runs) = queues.get_mut(&queue) {
                runs.runs.insert(seq, (to, 1));
            }
        }
    }
}

/// The records of a segment with their places; None if one is damaged.
fn records_of(bytes: &Bytes, segment: u64) -> Option<Vec<(Record, Location)>> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        match scan(&bytes.slice(pos..)) {
            Scan::Record(record, used) => {
                let at = Location {
                    segment: u32::try_from(segment).ok()?,
                    offset: u32::try_from(pos).ok()?,
                    len: u32::try_from(used).ok()?,
                };
                records.push((record, at));
                pos += used;
            }
            Scan::Zero if pos as u64 % BLOCK == 0 => break,
            Scan::Zero => pos = pos.next_multiple_of(BLOCK as usize),
            Scan::Truncated | Scan::Corrupt if pads_to_block_end(bytes, pos) => {
                pos = pos.next_multiple_of(BLOCK as usize);
            }
            Scan::Truncated | Scan::Corrupt => return None,
        }
    }
    Some(records)
}
