//! The message handle that travels from the publishing connection to every
//! queue it was routed to and on to each consumer.
//!
//! A message is published once and may sit in many queues on many shards, so
//! it is one `Arc` around bytes that are never copied: the content header's
//! property bytes exactly as the publisher sent them (so all fourteen
//! properties and their header tables pass through unchanged) and the body,
//! a slice of the buffer it was read into when it arrived in one frame.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::protocol::types::ShortStr;
use crate::protocol::AmqpError;

#[derive(Clone, Debug)]
pub struct Message(Arc<Held>);

/// The content, with the body's length beside the `Arc`'s counts: a queue
/// counts the bytes it holds on every enqueue and dequeue, and reading the
/// length there costs no cache line the queue's shard does not touch anyway.
#[derive(Debug)]
#[repr(C)]
struct Held {
    body_len: u32,
    content: MessageContent,
}

/// `repr(C)` with the two fields the queue's shard reads first: they share
/// the cache line of the `Arc`'s counts, which that shard writes anyway, so
/// a queue on another shard than the publisher costs no further line.
#[derive(Debug)]
#[repr(C)]
pub struct MessageContent {
    /// The expiration property in milliseconds, validated at publish.
    pub expiration_ms: Option<u64>,
    /// The priority property (0 when absent), for `x-max-priority` queues.
    pub priority: u8,
    /// delivery_mode 2: kept on disk in a durable queue.
    pub persistent: bool,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// The property flags and property list of the content header, verbatim.
    pub properties: Bytes,
    pub body: Bytes,
}

/// What a message in memory costs beyond its body, in bytes: the `Arc`'s
/// counts and `MessageContent` (176 B, in a 192 B block), its properties,
/// exchange and routing key, and the header of the block its bytes share
/// (`compact`), rounded up by the allocator. A 2M x 16 B backlog measured
/// 300 B per message over its body, a queue's `Ready` entry included.
/// Queues count it into the memory they hold (`Body::held_bytes`), so the
/// queue memory budget bounds a backlog of small messages as well as one
/// of large.
pub(crate) const MESSAGE_OVERHEAD_BYTES: u64 = 256;

/// Bodies up to this size are copied out of the read buffer they arrived in
/// when a queue keeps the message (`Message::compact`).
const COMPACT_BODY_MAX: usize = 4096;

impl Message {
    pub fn new(content: MessageContent) -> Message {
        Message(Arc::new(Held {
            // Bodies are capped by --message-size-max, far below 4 GiB.
            body_len: u32::try_from(content.body.len()).unwrap_or(u32::MAX),
            content,
        }))
    }

    /// A small message arrives as slices of its connection's read buffer,
    /// and keeps the whole buffer (up to the 256 KiB read window) alive for
    /// as long as any queue holds it. A message that is going to wait in a
    /// queue copies its exchange, routing key, properties and body into an
    /// allocation of its own, so it holds only its own bytes. Only the sole holder may: copying a
    /// handle that several queues share would multiply the bytes. Returns
    /// whether it copied.
    pub(crate) fn compact(&mut self) -> bool {
        if self.0.content.body.len() > COMPACT_BODY_MAX {
            return false;
        }
        let Some(Held { content, .. }) = Arc::get_mut(&mut self.0) else {
            return false;
        };
        // The exchange and routing key are slices of the same buffer (the
        // method frame's). All four go into one allocation: one malloc
        // instead of four, and a queued message holds fewer headers.
        let parts = [
            content.exchange.bytes(),
            content.routing_key.bytes(),
            &content.properties,
            &content.body,
        ];
        let mut joined = BytesMut::with_capacity(parts.iter().map(|part| part.len()).sum());
        parts.iter().for_each(|part| joined.extend_from_slice(part));
        let mut joined = joined.freeze();
        let mut next = |len: usize| joined.split_to(len);
        content.exchange = ShortStr::from_bytes(next(content.exchange.len()));
        content.routing_key = ShortStr::from_bytes(next(content.routing_key.len()));
        content.properties = next(content.properties.len());
        content.body = next(content.body.len());
        true
    }

    /// Marks a message read back from disk persistent or not, as it was
    /// published; only its sole holder can.
    pub(crate) fn set_persistent(&mut self, persistent: bool) {
        if let Some(held) = Arc::get_mut(&mut self.0) {
            held.content.persistent = persistent;
        }
    }

    pub fn body_size(&self) -> usize {
        self.0.body_len as usize
    }
}

impl std::ops::Deref for Message {
    type Target = MessageContent;

    fn deref(&self) -> &MessageContent {
        &self.0.content
    }
}

/// The expiration property as RabbitMQ reads it (Erlang's
/// `string:to_integer`: an optional sign, digits, nothing after), in
/// milliseconds; anything else is 406 with RabbitMQ's text.
pub(crate) fn parse_expiration(text: &ShortStr) -> Result<u64, AmqpError> {
    let bytes = text.as_bytes();
    let invalid =
        |why: String| AmqpError::precondition_failed(format!("invalid expiration '{text}': {why}"));
    let (negative, unsigned) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let digits = unsigned.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(invalid("no_integer".to_owned()));
    }
    let value = unsigned[..digits].iter().fold(0u64, |value, &digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    if digits < unsigned.len() {
        let rest = String::from_utf8_lossy(&unsigned[digits..]);
        return Err(invalid(format!("{{leftover_string,\"{rest}\"}}")));
    }
    if negative && value > 0 {
        return Err(invalid(format!("{{value_negative,-{value}}}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(read_buffer: &Bytes) -> Message {
        Message::new(MessageContent {
            exchange: ShortStr::from_bytes(read_buffer.slice(18..20)),
            routing_key: ShortStr::from_bytes(read_buffer.slice(20..24)),
            properties: read_buffer.slice(0..2),
            body: read_buffer.slice(2..18),
            priority: 0,
            persistent: false,
            expiration_ms: None,
        })
    }

    #[test]
    fn a_compacted_message_no_longer_pins_its_read_buffer() {
        let read_buffer = Bytes::from(vec![7u8; 256 << 10]);
        let mut kept = message(&read_buffer);
        assert!(kept.compact());
        assert_eq!(
            (&kept.properties[..], &kept.body[..]),
            (&[7u8; 2][..], &[7u8; 16][..])
        );
        assert_eq!(
            (kept.exchange.as_bytes(), kept.routing_key.as_bytes()),
            (&[7u8; 2][..], &[7u8; 4][..])
        );
        // The buffer is now referenced only by `read_buffer` itself.
        assert!(read_buffer.is_unique());
    }

    #[test]
    fn a_shared_or_large_message_is_not_copied() {
        let read_buffer = Bytes::from(vec![7u8; 256 << 10]);
        let mut shared = message(&read_buffer);
        let _other_queue = shared.clone();
        assert!(!shared.compact());
        let mut large = Message::new(MessageContent {
            exchange: ShortStr::default(),
            routing_key: ShortStr::default(),
            properties: Bytes::new(),
            body: read_buffer.slice(..COMPACT_BODY_MAX + 1),
            priority: 0,
            persistent: false,
            expiration_ms: None,
        });
        assert!(!large.compact());
    }
}
