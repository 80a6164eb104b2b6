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
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// The property flags and property list of the content header, verbatim.
    pub properties: Bytes,
    pub body: Bytes,
}

impl Message {
    pub fn new(content: MessageContent) -> Message {
        Message(Arc::new(content))
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
