//! Reading the message logs back at start-up.
//!
//! Every segment of every earlier run is replayed, oldest epoch first and
//! each shard's segments in order, whatever the shard count was: a queue
//! lives on one shard during a run, so the order of its records within
//! one run is its shard's order. What remains is an index, not the
//! messages: each durable queue's live messages by seq, with where each
//! enqueue record is and what the queue needs without the content (body
//! length, priority, expiration). Contents stay on disk until a queue
//! reads them back ahead of delivery (`shard::paging`), so a backlog
//! larger than memory recovers, and recovery reads each segment once.
//!
//! Then `plan` gives the old segments to the shards that own their queues
//! now. When every stream of segments (one earlier run's shard) holds
//! queues of one new owner only, as after a restart with the same shard
//! count or a divisor of it, the owner's log takes the stream's segments
//! over as they are: nothing is copied, and they are deleted as any of its
//! segments, from the front, once nothing in them is live. Otherwise (a
//! stream split between new owners, or a segment quarantined, whose
//! settles would be forgotten by the next recovery) `rewrite` first writes
//! the live messages again, one old segment at a time, into a stream per
//! new owner; once that is durable the old segments are deleted, and the
//! logs are read again, now split by owner. Memory holds one segment at a
//! time, whatever the backlog. A crash halfway leaves the old segments
//! beside part of the new: the next start reads both, a message written
//! twice counts once, and rewrites again.
//!
//! A record cut short or failing its checksum at the end of a shard's
//! last segment is a write that a crash interrupted: it was never
//! confirmed, and reading stops there. Anywhere else it is damage: the
//! rest of that segment is skipped, with one line in the log, and once the
//! rewrite has made its readable part durable elsewhere the segment is
//! renamed `*.quarantined` (kept for inspection, no longer read). Nothing
//! here panics, whatever the bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use bytes::Bytes;

use super::disk::{Disk, DiskFile, BLOCK};
use super::log::{parse_segment_name, Location, Log};
use super::record::{self, scan, Delayed, QueueName, Record, Scan};
use crate::message::{Message, MessageContent};

/// Rewrites one start may make before the logs split by owner: one, and
/// one more should the first leave a damaged segment.
const REWRITES_MAX: usize = 2;

/// What a queue keeps of a recovered message while its content is on
/// disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecoveredMessage {
    pub seq: u64,
    /// Its enqueue record. While recovering, `segment` indexes
    /// `Recovered::segments`; once planned, it is a segment of the owning
    /// shard's log.
    pub at: Location,
    pub body_len: u32,
    pub persistent: bool,
    pub priority: u8,
    pub expiration_ms: Option<u64>,
}

/// Each queue's recovered messages, by seq.
pub(crate) type QueueIndex = BTreeMap<QueueName, Vec<RecoveredMessage>>;

/// A segment file of an earlier run.
#[derive(Debug)]
pub(crate) struct OldSegment {
    pub name: String,
    /// Message records in it (enqueue and page records), and how many of
    /// them are live.
    pub written: u64,
    pub live: u64,
    /// The earlier run's epoch and shard that wrote it.
    stream: (u64, usize),
    /// Damaged: renamed, not deleted, once rewritten.
    quarantined: bool,
}

pub(crate) struct Recovered {
    pub queues: QueueIndex,
    /// Messages waiting in durable x-delayed-message exchanges, with
    /// their contents (as they wait in memory while the broker runs),
    /// where their delay record is, and the stream it is in.
    delayed: Vec<(Delayed, Location, (u64, usize))>,
    /// The segments read, in log order.
    pub segments: Vec<OldSegment>,
    /// The epoch this run writes (one past the last one found).
    pub(crate) epoch: u64,
    /// The queues each stream has records of.
    stream_queues: BTreeMap<(u64, usize), BTreeSet<QueueName>>,
    /// A segment was quarantined.
    damaged: bool,
}

/// Which shard takes what of the earlier runs.
pub(crate) struct Plan {
    /// The epoch this run writes (one past the last one on disk).
    pub epoch: u64,
    /// By shard.
    pub shares: Vec<Share>,
}

/// What a shard's log takes over as it is: old segments (they become its
/// segments 1 to n, in order), its queues' messages in them, and the
/// delayed messages whose records are in them.
#[derive(Default)]
pub(crate) struct Share {
    pub segments: Vec<OldSegment>,
    pub queues: QueueIndex,
    pub delayed: Vec<(Delayed, Location)>,
}

impl Share {
    /// How many messages: in queues, and delayed.
    pub(crate) fn message_counts(&self) -> (usize, usize) {
        (self.queues.values().map(Vec::len).sum(), self.delayed.len())
    }
}

/// How a segment's records ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Clean,
    /// A bad record at `at`: a torn tail, or damage.
    Bad {
        at: u64,
    },
}

pub(crate) async fn recover<D: Disk>(disk: &D) -> io::Result<Recovered> {
    let mut names: Vec<((u64, usize, u64), String)> = disk
        .list()
        .await?
        .into_iter()
        .filter_map(|name| Some((parse_segment_name(&name)?, name)))
        .collect();
    names.sort();
    let mut replay = Replay::default();
    let mut segments = Vec::new();
    let mut damaged = false;
    for (i, ((epoch, shard, _), name)) in names.iter().enumerate() {
        let last_of_stream = names
            .get(i + 1)
            .is_none_or(|((next_epoch, next_shard, _), _)| {
                (next_epoch, next_shard) != (epoch, shard)
            });
        let file = disk.open_for_reading(name).await?;
        let bytes = Bytes::from(file.read_at(0, file.size().await? as usize).await?);
        let index = u32::try_from(segments.len()).unwrap_or(u32::MAX);
        let stream = (*epoch, *shard);
        let mut quarantined = false;
        let ending = replay.segment(&bytes, index, stream);
        // Past the last written segment there may be one made ahead and
        // never written (`Log::prepare_spare`): the tail is still here.
        let last_written = match ending {
            Ending::Bad { .. } if !last_of_stream => {
                only_spares_follow(disk, &names[i + 1..]).await?
            }
            _ => true,
        };
        match ending {
            Ending::Bad { at } if !last_written => {
                tracing::error!(
                    "message log segment {name} is damaged at byte {at}: its records from there \
                     on are skipped and the file is kept as {name}.quarantined"
                );
                quarantined = true;
                damaged = true;
            }
            Ending::Bad { at } => {
                tracing::info!(
                    "message log segment {name}: an unfinished write at byte {at} is dropped"
                );
            }
            Ending::Clean => {}
        }
        segments.push(OldSegment {
            name: name.clone(),
            written: std::mem::take(&mut replay.written),
            live: 0,
            stream,
            quarantined,
        });
    }
    let stream_queues = std::mem::take(&mut replay.stream_queues);
    let delayed: Vec<_> = std::mem::take(&mut replay.delayed).into_values().collect();
    let queues = replay.index(&mut segments, &delayed);
    Ok(Recovered {
        queues,
        delayed,
        epoch: names.last().map_or(1, |((epoch, _, _), _)| epoch + 1),
        segments,
        stream_queues,
        damaged,
    })
}

/// Whether the segments after one, up to the end of its stream (`rest`
/// starts with the next one), hold nothing: a zero block start.
async fn only_spares_follow<D: Disk>(
    disk: &D,
    rest: &[((u64, usize, u64), String)],
) -> io::Result<bool> {
    let Some(((epoch, shard, _), _)) = rest.first() else {
        return Ok(true);
    };
    for ((next_epoch, next_shard, _), name) in rest {
        if (next_epoch, next_shard) != (epoch, shard) {
            break;
        }
        let head = disk.open_for_reading(name).await?.read_at(0, 8).await?;
        if head.iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn quarantined_name(name: &str) -> String {
    format!("{name}.quarantined")
}

/// Reads the logs on `disk` and decides which shard takes what (see the
/// module doc), writing the live messages again first when the earlier
/// runs' streams do not split by `owner`, a queue's shard now.
/// `segment_size` is the rewritten segments' size.
pub(crate) async fn plan<D: Disk + Clone>(
    disk: &D,
    shard_count: usize,
    segment_size: u64,
    owner: impl Fn(&QueueName) -> usize,
) -> io::Result<Plan> {
    let shard_count = shard_count.max(1);
    let mut recovered = recover(disk).await?;
    let mut rewrites = 0;
    loop {
        if let Some(stream_owner) = stream_owners(&recovered, shard_count, &owner) {
            return Ok(in_place(recovered, &stream_owner, shard_count, &owner));
        }
        if rewrites == REWRITES_MAX {
            return Err(io::Error::other(
                "the rewritten message log still does not split by shard",
            ));
        }
        rewrite(disk, recovered, shard_count, segment_size, &owner).await?;
        rewrites += 1;
        recovered = recover(disk).await?;
    }
}

/// The shard that takes each stream as it is; None when a stream holds
/// queues of two owners now, or a segment was quarantined.
fn stream_owners(
    recovered: &Recovered,
    shard_count: usize,
    owner: impl Fn(&QueueName) -> usize,
) -> Option<BTreeMap<(u64, usize), usize>> {
    if recovered.damaged {
        return None;
    }
    let mut stream_owner = BTreeMap::new();
    for (&stream, queues) in &recovered.stream_queues {
        let owners: BTreeSet<usize> = queues.iter().map(&owner).collect();
        if owners.len() > 1 {
            return None;
        }
        let first = owners.first().copied();
        stream_owner.insert(stream, first.unwrap_or(stream.1 % shard_count));
    }
    Some(stream_owner)
}

/// Gives each stream's segments, with their queues and delayed messages,
/// to the shard that owns them now.
fn in_place(
    recovered: Recovered,
    stream_owner: &BTreeMap<(u64, usize), usize>,
    shard_count: usize,
    owner: impl Fn(&QueueName) -> usize,
) -> Plan {
    let shard_of = |stream: (u64, usize)| {
        stream_owner
            .get(&stream)
            .copied()
            .unwrap_or(stream.1 % shard_count)
    };
    let mut shares: Vec<Share> = (0..shard_count).map(|_| Share::default()).collect();
    // Each old segment's number in its new shard's log.
    let mut renumbered = Vec::with_capacity(recovered.segments.len());
    for segment in recovered.segments {
        let inherited = &mut shares[shard_of(segment.stream)].segments;
        inherited.push(segment);
        renumbered.push(inherited.len() as u32);
    }
    for (name, mut messages) in recovered.queues {
        for message in &mut messages {
            message.at.segment = renumbered[message.at.segment as usize];
        }
        shares[owner(&name)].queues.insert(name, messages);
    }
    for (delayed, mut at, stream) in recovered.delayed {
        at.segment = renumbered[at.segment as usize];
        shares[shard_of(stream)].delayed.push((delayed, at));
    }
    Plan {
        epoch: recovered.epoch,
        shares,
    }
}

/// Writes every live message of `recovered` again, into a log per owner
/// under the epoch after the last one read, reading one old segment at a
/// time and syncing what it gave before the next; delayed messages go
/// with the stream that held them. Once all of it is durable, deletes the
/// old segments, and renames a damaged one `*.quarantined`, for
/// inspection: until then a crash leaves it to be read again.
async fn rewrite<D: Disk + Clone>(
    disk: &D,
    recovered: Recovered,
    shard_count: usize,
    segment_size: u64,
    owner: impl Fn(&QueueName) -> usize,
) -> io::Result<()> {
    tracing::info!(
        "message store: the earlier runs' segments do not split by this run's shards (another \
         shard count, or a damaged segment); their live messages are written again"
    );
    // Synced whatever --unsafe-no-fsync says: the old segments, deleted
    // next, may be the only copy.
    let logs: Vec<Log<D>> = (0..shard_count)
        .map(|shard| Log::new(disk.clone(), recovered.epoch, shard, segment_size, true))
        .collect();
    for (segment, messages) in live_by_segment(&recovered.queues) {
        let name = &recovered.segments[segment as usize].name;
        for (queue, message, content) in read_live(disk, name, messages).await? {
            logs[owner(queue)].append(true, |out| {
                record::encode_enqueue(out, queue, message.seq, &content);
            });
        }
        for log in &logs {
            log.commit().await?;
        }
    }
    for (delayed, _, stream) in &recovered.delayed {
        logs[stream.1 % shard_count].append(true, |out| record::encode_delay(out, delayed));
    }
    for log in &logs {
        log.commit().await?;
    }
    for segment in &recovered.segments {
        match segment.quarantined {
            true => {
                disk.rename(&segment.name, &quarantined_name(&segment.name))
                    .await?
            }
            false => disk.remove(&segment.name).await?,
        }
    }
    // Before this run appends settles to the new streams: an old segment
    // back after a crash would bring back what they settled.
    disk.sync_dir().await
}

/// The live messages of `queues`, by the old segment their record is in.
pub(super) fn live_by_segment(
    queues: &QueueIndex,
) -> BTreeMap<u32, Vec<(&QueueName, RecoveredMessage)>> {
    let mut by_segment: BTreeMap<u32, Vec<(&QueueName, RecoveredMessage)>> = BTreeMap::new();
    for (name, messages) in queues {
        for &message in messages {
            by_segment
                .entry(message.at.segment)
                .or_default()
                .push((name, message));
        }
    }
    by_segment
}

/// Reads back `messages`, whose records are in the segment file `name`;
/// one that does not read back as indexed is left out with a log line.
pub(super) async fn read_live<'q, D: Disk>(
    disk: &D,
    name: &str,
    messages: Vec<(&'q QueueName, RecoveredMessage)>,
) -> io::Result<Vec<(&'q QueueName, RecoveredMessage, Message)>> {
    let file = disk.open_for_reading(name).await?;
    let bytes = Bytes::from(file.read_at(0, file.size().await? as usize).await?);
    let mut read = Vec::with_capacity(messages.len());
    for (queue, message) in messages {
        let (start, len) = (message.at.offset as usize, message.at.len as usize);
        let record = (start + len <= bytes.len()).then(|| bytes.slice(start..start + len));
        match record.and_then(|record| super::message_of(&record, message.seq)) {
            Some(content) => read.push((queue, message, content)),
            None => tracing::error!(
                "message {} of queue '{}' does not read back from {name}; it is dropped",
                message.seq,
                queue.name
            ),
        }
    }
    Ok(read)
}

/// The replay's state: each queue's messages so far, and the current
/// segment's counts.
#[derive(Default)]
struct Replay {
    queues: BTreeMap<QueueName, Slots>,
    /// Message records in the segment being read.
    written: u64,
    stream_queues: BTreeMap<(u64, usize), BTreeSet<QueueName>>,
    /// Delayed messages not yet routed, by id.
    delayed: BTreeMap<u64, (Delayed, Location, (u64, usize))>,
}

/// A queue's messages by seq, with those settled since marked dead and
/// swept out when they are half.
#[derive(Default)]
struct Slots {
    slots: Vec<(RecoveredMessage, bool)>,
    dead: usize,
}

impl Replay {
    /// Applies a segment's records, up to the end of its data.
    fn segment(&mut self, bytes: &Bytes, index: u32, stream: (u64, usize)) -> Ending {
        let mut pos = 0usize;
        while pos < bytes.len() {
            match scan(&bytes.slice(pos..)) {
                Scan::Record(record, used) => {
                    let at = Location {
                        segment: index,
                        offset: pos as u32,
                        len: used as u32,
                    };
                    self.apply(record, at, stream);
                    pos += used;
                }
                // A zero block start is where the written data ends; inside
                // a block, zeros pad a commit to its end.
                Scan::Zero if pos as u64 % BLOCK == 0 => break,
                Scan::Zero => pos = pos.next_multiple_of(BLOCK as usize),
                // A commit that ended less than a record header before a
                // block boundary is padded by fewer zeros than a length
                // field: the length read there runs into the next commit's
                // first record.
                Scan::Truncated | Scan::Corrupt if pads_to_block_end(bytes, pos) => {
                    pos = pos.next_multiple_of(BLOCK as usize);
                }
                Scan::Truncated | Scan::Corrupt => return Ending::Bad { at: pos as u64 },
            }
        }
        Ending::Clean
    }

    fn apply(&mut self, record: Record, at: Location, stream: (u64, usize)) {
        match record {
            Record::Enqueue {
                queue,
                seq,
                message,
            } => {
                self.written += 1;
                self.note_stream(stream, &queue);
                self.queues
                    .entry(queue)
                    .or_default()
                    .enqueue(RecoveredMessage {
                        seq,
                        at,
                        body_len: message.body_size() as u32,
                        persistent: message.persistent,
                        priority: message.priority,
                        expiration_ms: message.expiration_ms,
                    });
            }
            Record::Settle { queue, seqs } => {
                self.note_stream(stream, &queue);
                if let Some(slots) = self.queues.get_mut(&queue) {
                    seqs.into_iter().for_each(|seq| slots.settle(seq));
                }
            }
            Record::Delete { queue } => {
                self.note_stream(stream, &queue);
                self.queues.remove(&queue);
            }
            // A transient message's copy: it does not survive a restart.
            Record::Page { .. } => self.written += 1,
            Record::Delay(mut delayed) => {
                self.written += 1;
                // Kept until it is due: it must not keep the segment's
                // buffer alive.
                delayed.message = owned(&delayed.message);
                self.delayed.insert(delayed.id, (delayed, at, stream));
            }
            Record::Undelay { id, .. } => {
                self.delayed.remove(&id);
            }
        }
    }

    /// `stream` has records of `queue` (delayed messages do not count:
    /// they go with the stream that holds them, to whichever shard).
    fn note_stream(&mut self, stream: (u64, usize), queue: &QueueName) {
        let queues = self.stream_queues.entry(stream).or_default();
        if !queues.contains(queue) {
            queues.insert(queue.clone());
        }
    }

    /// The live messages of each queue, counted into their segments
    /// (with the delayed ones, taken before).
    fn index(
        self,
        segments: &mut [OldSegment],
        delayed: &[(Delayed, Location, (u64, usize))],
    ) -> QueueIndex {
        for (_, at, _) in delayed {
            segments[at.segment as usize].live += 1;
        }
        let mut index = QueueIndex::new();
        for (name, slots) in self.queues {
            let live: Vec<RecoveredMessage> = slots
                .slots
                .into_iter()
                .filter_map(|(message, live)| live.then_some(message))
                .collect();
            for message in &live {
                segments[message.at.segment as usize].live += 1;
            }
            if !live.is_empty() {
                index.insert(name, live);
            }
        }
        index
    }
}

impl Slots {
    /// A message entered under `seq`: at the end as a rule; a seq seen
    /// before (a message written again by an interrupted rewrite) now is
    /// the later record.
    fn enqueue(&mut self, message: RecoveredMessage) {
        if self
            .slots
            .last()
            .is_none_or(|(last, _)| last.seq < message.seq)
        {
            self.slots.push((message, true));
            return;
        }
        match self.position(message.seq) {
            Ok(i) => {
                if !self.slots[i].1 {
                    self.dead -= 1;
                }
                self.slots[i] = (message, true);
            }
            Err(i) => self.slots.insert(i, (message, true)),
        }
    }

    fn settle(&mut self, seq: u64) {
        let Ok(i) = self.position(seq) else { return };
        if std::mem::replace(&mut self.slots[i].1, false) {
            self.dead += 1;
            if self.dead * 2 > self.slots.len() {
                self.slots.retain(|(_, live)| *live);
                self.dead = 0;
            }
        }
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        self.slots
            .binary_search_by_key(&seq, |(message, _)| message.seq)
    }
}

/// A copy of `message` that holds only its own bytes.
fn owned(message: &Message) -> Message {
    Message::new(MessageContent {
        expiration_ms: message.expiration_ms,
        priority: message.priority,
        persistent: message.persistent,
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        properties: Bytes::copy_from_slice(&message.properties),
        body: Bytes::copy_from_slice(&message.body),
    })
}

/// Whether `bytes` from `pos` (inside a block) to the end of its block are
/// all zeros: the padding after a commit.
pub(super) fn pads_to_block_end(bytes: &Bytes, pos: usize) -> bool {
    let end = pos.next_multiple_of(BLOCK as usize).min(bytes.len());
    end > pos && bytes[pos..end].iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ShortStr;
    use crate::store::record::{encode_enqueue, HEADER};

    fn message(body_len: usize) -> Message {
        Message::new(MessageContent {
            expiration_ms: None,
            priority: 0,
            persistent: true,
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("q"),
            properties: Bytes::from_static(b"\x00\x00"),
            body: Bytes::from(vec![7u8; body_len]),
        })
    }

    /// Padding shorter than a record header (and no longer) must not hide
    /// the next commit: the bug that lost confirmed messages after kill -9.
    #[test]
    fn a_commit_ending_just_short_of_a_block_boundary_is_followed_by_the_next() {
        let queue = QueueName {
            vhost: ShortStr::from_static("/"),
            name: ShortStr::from_static("q"),
        };
        let block = BLOCK as usize;
        let mut empty = Vec::new();
        encode_enqueue(&mut empty, &queue, 1, &message(0));
        for short in 1..=HEADER + 1 {
            let mut segment = Vec::new();
            encode_enqueue(
                &mut segment,
                &queue,
                1,
                &message(block - short - empty.len()),
            );
            assert_eq!(segment.len(), block - short);
            segment.resize(block, 0);
            encode_enqueue(&mut segment, &queue, 2, &message(3));
            segment.resize(2 * block, 0);
            let mut replay = Replay::default();
            assert_eq!(
                replay.segment(&Bytes::from(segment), 0, (1, 0)),
                Ending::Clean,
                "{short} bytes of padding"
            );
            assert_eq!(
                replay.queues[&queue].slots.len(),
                2,
                "{short} bytes of padding"
            );
        }
    }
}
