//! The message handle that travels from the publishing connection to every
//! queue it was routed to and on to each consumer.
//!
//! A message is published once and may sit in many queues on many shards, so
//! it is one `Arc` around bytes that are never copied: the content header's
//! property bytes exactly as the publisher sent them (so all fourteen
//! properties and their header tables pass through unchanged) and the body,
//! a slice of the buffer it was read into when it arrived in one frame.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::types::ShortStr;

#[derive(Clone, Debug)]
pub struct Message(Arc<MessageContent>);

#[derive(Debug)]
pub struct MessageContent {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// The property flags and property list of the content header, verbatim.
    pub properties: Bytes,
    pub body: Bytes,
}

/// Bodies up to this size are copied out of the read buffer they arrived in
/// when a queue keeps the message (`Message::compact`).
const COMPACT_BODY_MAX: usize = 4096;

impl Message {
    pub fn new(content: MessageContent) -> Message {
        Message(Arc::new(content))
    }

    /// A small message arrives as slices of its connection's read buffer,
    /// and keeps the whole buffer (up to the 256 KiB read window) alive for
    /// as long as any queue holds it. A message that is going to wait in a
    /// queue copies its properties and body into allocations of their own,
    /// so it holds only its own bytes. Only the sole holder may: copying a
    /// handle that several queues share would multiply the bytes. Returns
    /// whether it copied.
    pub fn compact(&mut self) -> bool {
        if self.0.body.len() > COMPACT_BODY_MAX {
            return false;
        }
        let Some(content) = Arc::get_mut(&mut self.0) else {
            return false;
        };
        content.properties = Bytes::copy_from_slice(&content.properties);
        content.body = Bytes::copy_from_slice(&content.body);
        true
    }

    pub fn body_size(&self) -> usize {
        self.0.body.len()
    }
}

impl std::ops::Deref for Message {
    type Target = MessageContent;

    fn deref(&self) -> &MessageContent {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(read_buffer: &Bytes) -> Message {
        Message::new(MessageContent {
            exchange: ShortStr::default(),
            routing_key: ShortStr::default(),
            properties: read_buffer.slice(0..2),
            body: read_buffer.slice(2..18),
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
        });
        assert!(!large.compact());
    }
}
