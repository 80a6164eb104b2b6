//! The records of a shard's message log, and their bytes.
//!
//! ```text
//! record:  len u32 LE | crc32 u32 LE | kind u8 | payload      (len = 1 + payload)
//! enqueue: vhost s8 | queue s8 | seq u64 | exchange s8 | routing_key s8
//!          | properties u32-prefixed | body u32-prefixed
//! settle:  vhost s8 | queue s8 | count u32 | seq u64 * count
//! delete:  vhost s8 | queue s8
//! page:    as enqueue
//! delay:   vhost s8 | exchange s8 | id u64 | due u64 | delay u64
//!          | count u8 | routing_key s8 * count | routing_key s8
//!          | properties u32-prefixed | body u32-prefixed
//! undelay: vhost s8 | exchange s8 | id u64
//! ```
//! (s8: a length octet and that many bytes.) The CRC covers kind and
//! payload. A zero length is never a record: it is padding up to the next
//! block, or, at a block boundary, the end of the written log.
//!
//! A page record holds a message that is not logged (transient, or in a
//! non-durable queue) while its queue keeps it out of memory; recovery
//! skips it. A delay record holds a persistent message waiting in a
//! durable x-delayed-message exchange (`due` in ms since the Unix epoch,
//! `delay` as published, the routing keys it will be routed by); an
//! undelay record says it was routed or dropped.
//!
//! Queues are named, not numbered: queue ids are assigned per process, and
//! a log outlives its process. Decoding never panics, whatever the bytes.

use bytes::{Buf, BufMut, Bytes};

use crate::message::{Message, MessageContent};
use crate::protocol::ShortStr;

pub(crate) const HEADER: usize = 8;

const ENQUEUE: u8 = 1;
const SETTLE: u8 = 2;
const DELETE: u8 = 4;
const PAGE: u8 = 5;
const DELAY: u8 = 6;
const UNDELAY: u8 = 7;

/// A durable queue (or, in delay records, an exchange), by the name it
/// will have after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct QueueName {
    pub vhost: ShortStr,
    pub name: ShortStr,
}

#[derive(Debug)]
pub(crate) enum Record {
    /// A persistent message entered the queue under `seq`.
    Enqueue {
        queue: QueueName,
        seq: u64,
        message: Message,
    },
    /// The messages left the queue (acked, rejected, expired, dropped,
    /// purged).
    Settle { queue: QueueName, seqs: Vec<u64> },
    /// The queue was deleted: everything before is void.
    Delete { queue: QueueName },
    /// A message that is not logged, written out of its queue's memory
    /// (read back by seq); void after a restart.
    Page {
        queue: QueueName,
        seq: u64,
        message: Message,
    },
    /// A message waits in an x-delayed-message exchange.
    Delay(Delayed),
    /// The delayed message `id` was routed or dropped (the record names
    /// its exchange too, for whoever reads the bytes).
    Undelay { id: u64 },
}

/// A message waiting in a durable x-delayed-message exchange.
#[derive(Clone, Debug)]
pub(crate) struct Delayed {
    pub exchange: QueueName,
    /// Unique across runs (it names the message in its undelay record).
    pub id: u64,
    /// When it is to be routed, in ms since the Unix epoch.
    pub due_ms: u64,
    /// The delay it was published with (its `x-delay`).
    pub delay_ms: u64,
    /// Its routing key, then its CC and BCC ones.
    pub routing_keys: Vec<ShortStr>,
    pub message: Message,
}

/// Appends an enqueue record to `out`.
pub(crate) fn encode_enqueue(out: &mut Vec<u8>, queue: &QueueName, seq: u64, message: &Message) {
    encode_message(out, ENQUEUE, queue, seq, message);
}

/// Appends a page record to `out`.
pub(crate) fn encode_page(out: &mut Vec<u8>, queue: &QueueName, seq: u64, message: &Message) {
    encode_message(out, PAGE, queue, seq, message);
}

fn encode_message(out: &mut Vec<u8>, kind: u8, queue: &QueueName, seq: u64, message: &Message) {
    framed(out, kind, |out| {
        put_queue(out, queue);
        out.put_u64_le(seq);
        put_short(out, &message.exchange);
        put_short(out, &message.routing_key);
        put_long(out, &message.properties);
        put_long(out, &message.body);
    });
}

pub(crate) fn encode_delay(out: &mut Vec<u8>, delayed: &Delayed) {
    framed(out, DELAY, |out| {
        put_queue(out, &delayed.exchange);
        out.put_u64_le(delayed.id);
        out.put_u64_le(delayed.due_ms);
        out.put_u64_le(delayed.delay_ms);
        // A message has at most a few CC and BCC keys: the frame's size
        // bounds them far below 255.
        out.push(delayed.routing_keys.len().min(255) as u8);
        for key in delayed.routing_keys.iter().take(255) {
            put_short(out, key);
        }
        put_short(out, &delayed.message.routing_key);
        put_long(out, &delayed.message.properties);
        put_long(out, &delayed.message.body);
    });
}

pub(crate) fn encode_undelay(out: &mut Vec<u8>, exchange: &QueueName, id: u64) {
    framed(out, UNDELAY, |out| {
        put_queue(out, exchange);
        out.put_u64_le(id);
    });
}

pub(crate) fn encode_settle(out: &mut Vec<u8>, queue: &QueueName, seqs: &[u64]) {
    framed(out, SETTLE, |out| {
        put_queue(out, queue);
        put_seqs(out, seqs);
    });
}

pub(crate) fn encode_delete(out: &mut Vec<u8>, queue: &QueueName) {
    framed(out, DELETE, |out| put_queue(out, queue));
}

/// Writes a record's header around what `payload` appends.
fn framed(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.push(kind);
    payload(out);
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_queue(out: &mut Vec<u8>, queue: &QueueName) {
    put_short(out, &queue.vhost);
    put_short(out, &queue.name);
}

fn put_short(out: &mut Vec<u8>, text: &ShortStr) {
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn put_seqs(out: &mut Vec<u8>, seqs: &[u64]) {
    out.put_u32_le(seqs.len() as u32);
    for &seq in seqs {
        out.put_u64_le(seq);
    }
}

/// What lies at a position of a segment.
#[derive(Debug)]
pub(crate) enum Scan {
    /// A whole, intact record, and the bytes it took.
    Record(Record, usize),
    /// Zero length: padding, or the end of the log at a block boundary.
    Zero,
    /// The bytes end inside the record (a torn or unfinished write).
    Truncated,
    /// The checksum or the contents do not hold up.
    Corrupt,
}

/// Reads the record at the start of `bytes`.
pub(crate) fn scan(bytes: &Bytes) -> Scan {
    if bytes.len() < HEADER {
        return if bytes.iter().all(|&b| b == 0) {
            Scan::Zero
        } else {
            Scan::Truncated
        };
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len == 0 {
        return Scan::Zero;
    }
    let Some(end) = HEADER.checked_add(len).filter(|&end| end <= bytes.len()) else {
        return Scan::Truncated;
    };
    let body = bytes.slice(HEADER..end);
    if crc32fast::hash(&body) != crc {
        return Scan::Corrupt;
    }
    match decode(body) {
        Some(record) => Scan::Record(record, end),
        None => Scan::Corrupt,
    }
}

fn decode(mut buf: Bytes) -> Option<Record> {
    let kind = get_u8(&mut buf)?;
    let queue = QueueName {
        vhost: get_short(&mut buf)?,
        name: get_short(&mut buf)?,
    };
    let record = match kind {
        ENQUEUE | PAGE => {
            let seq = get_u64(&mut buf)?;
            let exchange = get_short(&mut buf)?;
            let routing_key = get_short(&mut buf)?;
            let properties = get_long(&mut buf)?;
            let body = get_long(&mut buf)?;
            let message = restored_message(exchange, routing_key, properties, body)?;
            match kind {
                ENQUEUE => Record::Enqueue {
                    queue,
                    seq,
                    message,
                },
                _ => Record::Page {
                    queue,
                    seq,
                    message,
                },
            }
        }
        SETTLE => Record::Settle {
            queue,
            seqs: get_seqs(&mut buf)?,
        },
        DELETE => Record::Delete { queue },
        DELAY => Record::Delay(decode_delayed(queue, &mut buf)?),
        UNDELAY => Record::Undelay {
            id: get_u64(&mut buf)?,
        },
        _ => return None,
    };
    buf.is_empty().then_some(record)
}

fn decode_delayed(exchange: QueueName, buf: &mut Bytes) -> Option<Delayed> {
    let id = get_u64(buf)?;
    let due_ms = get_u64(buf)?;
    let delay_ms = get_u64(buf)?;
    let count = get_u8(buf)?;
    let routing_keys = (0..count)
        .map(|_| get_short(buf))
        .collect::<Option<Vec<_>>>()?;
    let routing_key = get_short(buf)?;
    let properties = get_long(buf)?;
    let body = get_long(buf)?;
    let message = restored_message(exchange.name.clone(), routing_key, properties, body)?;
    Some(Delayed {
        exchange,
        id,
        due_ms,
        delay_ms,
        routing_keys,
        message,
    })
}

/// A message as it was published, from its stored parts; the properties
/// are scanned again for what the queue reads (priority, expiration).
fn restored_message(
    exchange: ShortStr,
    routing_key: ShortStr,
    properties: Bytes,
    body: Bytes,
) -> Option<Message> {
    let summary = crate::protocol::properties::scan_properties(&properties).ok()?;
    let expiration_ms = match &summary.expiration {
        Some(text) => crate::message::parse_expiration(text).ok(),
        None => None,
    };
    Some(Message::new(MessageContent {
        expiration_ms,
        priority: summary.priority.unwrap_or(0),
        persistent: true,
        exchange,
        routing_key,
        properties,
        body,
    }))
}

fn get_u8(buf: &mut Bytes) -> Option<u8> {
    (buf.remaining() >= 1).then(|| buf.get_u8())
}

fn get_u64(buf: &mut Bytes) -> Option<u64> {
    (buf.remaining() >= 8).then(|| buf.get_u64_le())
}

fn get_short(buf: &mut Bytes) -> Option<ShortStr> {
    let len = usize::from(get_u8(buf)?);
    (buf.remaining() >= len).then(|| ShortStr::from_bytes(buf.split_to(len)))
}

fn get_long(buf: &mut Bytes) -> Option<Bytes> {
    let len = (buf.remaining() >= 4).then(|| buf.get_u32_le())? as usize;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

fn get_seqs(buf: &mut Bytes) -> Option<Vec<u64>> {
    let count = (buf.remaining() >= 4).then(|| buf.get_u32_le())? as usize;
    if buf.remaining() / 8 < count {
        return None;
    }
    Some((0..count).map(|_| buf.get_u64_le()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName {
            vhost: ShortStr::from_static("/"),
            name: ShortStr::from_static("q"),
        }
    }

    fn message() -> Message {
        // delivery_mode 2, content-type "text/plain"
        let properties = Bytes::from_static(b"\x90\x00\x0atext/plain\x02");
        restored_message(
            ShortStr::from_static("amq.direct"),
            ShortStr::from_static("key"),
            properties,
            Bytes::from_static(b"body bytes"),
        )
        .unwrap()
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let mut out = Vec::new();
        let m = message();
        encode_enqueue(&mut out, &queue(), 7, &m);
        encode_settle(&mut out, &queue(), &[1, 7]);
        encode_delete(&mut out, &queue());
        encode_page(&mut out, &queue(), 9, &m);
        let delayed = Delayed {
            exchange: queue(),
            id: 1 << 40,
            due_ms: 1_700_000_000_000,
            delay_ms: 1500,
            routing_keys: vec![ShortStr::from_static("key"), ShortStr::from_static("cc")],
            message: m.clone(),
        };
        encode_delay(&mut out, &delayed);
        encode_undelay(&mut out, &queue(), 1 << 40);
        let mut bytes = Bytes::from(out);
        let mut records = Vec::new();
        while let Scan::Record(record, used) = scan(&bytes) {
            records.push(record);
            bytes.advance(used);
        }
        assert_eq!(records.len(), 6);
        match &records[0] {
            Record::Enqueue { seq, message, .. } => {
                assert_eq!(*seq, 7);
                assert_eq!(message.properties, m.properties);
                assert_eq!(message.body, m.body);
                assert_eq!(message.routing_key, m.routing_key);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&records[1], Record::Settle { seqs, .. } if seqs == &[1, 7]));
        assert!(matches!(&records[2], Record::Delete { .. }));
        match &records[3] {
            Record::Page { seq, message, .. } => {
                assert_eq!(*seq, 9);
                assert_eq!(message.properties, m.properties);
                assert_eq!(message.body, m.body);
            }
            other => panic!("{other:?}"),
        }
        match &records[4] {
            Record::Delay(got) => {
                assert_eq!(
                    (got.id, got.due_ms, got.delay_ms),
                    (delayed.id, delayed.due_ms, delayed.delay_ms)
                );
                assert_eq!(got.routing_keys, delayed.routing_keys);
                assert_eq!(got.exchange, queue());
                assert_eq!(got.message.exchange.as_bytes(), b"q");
                assert_eq!(got.message.routing_key, m.routing_key);
                assert_eq!(got.message.properties, m.properties);
                assert_eq!(got.message.body, m.body);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&records[5], Record::Undelay { id } if *id == 1 << 40));
    }

    #[test]
    fn any_prefix_or_flipped_byte_is_refused_without_panic() {
        let mut out = Vec::new();
        encode_enqueue(&mut out, &queue(), 1, &message());
        for cut in 1..out.len() {
            let prefix = Bytes::copy_from_slice(&out[..cut]);
            assert!(!matches!(scan(&prefix), Scan::Record(..)), "cut at {cut}");
        }
        for at in 0..out.len() {
            let mut flipped = out.clone();
            flipped[at] ^= 0x40;
            assert!(
                !matches!(scan(&Bytes::from(flipped)), Scan::Record(..)),
                "flip at {at}"
            );
        }
    }
}
