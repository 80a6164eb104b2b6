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
    pub epoch: u64,
    /// The segments read, deleted once their messages are in this run's
    /// logs.
    pub old_segments: Vec<String>,
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
            Scan::Truncated | Scan::Corrupt => return Ending::Bad { at: pos as u64 },
        }
    }
    Ending::Clean
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
    }
}
