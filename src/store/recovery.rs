//! Reading the message logs back at start-up.
//!
//! Every segment of every earlier run is replayed, oldest epoch first and
//! each shard's segments in order, whatever the shard count was: a queue
//! lives on one shard during a run, so the order of its records within
//! one run is its shard's order. What remains is each durable queue's
//! persistent messages, by seq, which the new owners write into this
//! run's logs before the old segments are deleted (`Store::adopt`).
//!
//! A record cut short or failing its checksum at the end of a shard's
//! last segment is a write that a crash interrupted: it was never
//! confirmed, and reading stops there. Anywhere else it is damage: the
//! rest of that segment is skipped and the segment is renamed
//! `*.quarantined`, with one line in the log. Nothing here panics, whatever
//! the bytes.

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;

use super::disk::{Disk, DiskFile, BLOCK};
use super::log::parse_segment_name;
use super::record::{scan, QueueName, Record, Scan};
use crate::message::Message;

/// The messages the logs held, per queue by seq.
pub(crate) type QueueMessages = BTreeMap<QueueName, BTreeMap<u64, Message>>;

pub(crate) struct Recovered {
    pub queues: QueueMessages,
    /// The epoch this run writes (one past the last one found).
    pub(crate) epoch: u64,
    /// The segments read, deleted once their messages are in this run's
    /// logs.
    pub(crate) old_segments: Vec<String>,
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
    let mut segments: Vec<((u64, usize, u64), String)> = disk
        .list()
        .await?
        .into_iter()
        .filter_map(|name| Some((parse_segment_name(&name)?, name)))
        .collect();
    segments.sort();
    let mut queues = QueueMessages::new();
    let mut old_segments = Vec::new();
    for (i, ((epoch, shard, _), name)) in segments.iter().enumerate() {
        let last_of_stream = segments
            .get(i + 1)
            .is_none_or(|((next_epoch, next_shard, _), _)| {
                (next_epoch, next_shard) != (epoch, shard)
            });
        let file = disk.open(name).await?;
        let bytes = Bytes::from(file.read_at(0, file.size().await? as usize).await?);
        match replay_segment(&bytes, &mut queues) {
            Ending::Bad { at } if !last_of_stream => {
                tracing::error!(
                    "message log segment {name} is damaged at byte {at}: its records from there \
                     on are skipped and the file is kept as {name}.quarantined"
                );
                disk.rename(name, &format!("{name}.quarantined")).await?;
                continue;
            }
            Ending::Bad { at } => {
                tracing::info!(
                    "message log segment {name}: an unfinished write at byte {at} is dropped"
                );
            }
            Ending::Clean => {}
        }
        old_segments.push(name.clone());
    }
    let epoch = segments.last().map_or(1, |((epoch, _, _), _)| epoch + 1);
    Ok(Recovered {
        queues,
        epoch,
        old_segments,
    })
}

/// Applies a segment's records to `queues`, up to the end of its data.
fn replay_segment(bytes: &Bytes, queues: &mut QueueMessages) -> Ending {
    let mut pos = 0usize;
    while pos < bytes.len() {
        match scan(&bytes.slice(pos..)) {
            Scan::Record(record, used) => {
                apply(record, queues);
                pos += used;
            }
            // A zero block start is where the written data ends; inside a
            // block, zeros pad a commit to its end.
            Scan::Zero if pos as u64 % BLOCK == 0 => break,
            Scan::Zero => pos = pos.next_multiple_of(BLOCK as usize),
            // A commit that ended less than a record header before a block
            // boundary is padded by fewer zeros than a length field: the
            // length read there runs into the next commit's first record.
            Scan::Truncated | Scan::Corrupt if pads_to_block_end(bytes, pos) => {
                pos = pos.next_multiple_of(BLOCK as usize);
            }
            Scan::Truncated | Scan::Corrupt => return Ending::Bad { at: pos as u64 },
        }
    }
    Ending::Clean
}

/// Whether `bytes` from `pos` (inside a block) to the end of its block are
/// all zeros: the padding after a commit.
pub(super) fn pads_to_block_end(bytes: &Bytes, pos: usize) -> bool {
    let end = pos.next_multiple_of(BLOCK as usize).min(bytes.len());
    end > pos && bytes[pos..end].iter().all(|&b| b == 0)
}

fn apply(record: Record, queues: &mut QueueMessages) {
    match record {
        Record::Enqueue {
            queue,
            seq,
            message,
        } => {
            queues.entry(queue).or_default().insert(seq, message);
        }
        Record::Settle { queue, seqs } => {
            if let Some(messages) = queues.get_mut(&queue) {
                for seq in seqs {
                    messages.remove(&seq);
                }
                if messages.is_empty() {
                    queues.remove(&queue);
                }
            }
        }
        Record::Delete { queue } => {
            queues.remove(&queue);
        }
        // A transient message's copy: it does not survive a restart.
        Record::Page { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageContent;
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
            let mut queues = QueueMessages::new();
            assert_eq!(
                replay_segment(&Bytes::from(segment), &mut queues),
                Ending::Clean,
                "{short} bytes of padding"
            );
            assert_eq!(queues[&queue].len(), 2, "{short} bytes of padding");
        }
    }
}
