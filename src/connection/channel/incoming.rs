//! A publish being assembled from its frames: basic.publish, the content
//! header, then body frames until the announced size is reached.

use bytes::{Bytes, BytesMut};

use crate::protocol::method::BasicPublish;
use crate::protocol::properties::ContentHeader;

/// A basic.publish waiting for its header and body frames.
pub(super) struct Incoming {
    pub(super) publish: BasicPublish,
    pub(super) header: Option<ContentHeader>,
    pub(super) body: Body,
}

/// The most a joined body reserves up front; a larger one (only with a
/// huge `--message-size-max`) grows as its frames arrive.
const JOIN_PREALLOCATION_MAX: usize = 512 << 20;

/// Body frames as they arrive: one frame stays a zero-copy slice of the read
/// buffer; several are joined.
pub(super) enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len(),
            Body::Many(bytes) => bytes.len(),
        }
    }

    /// Adds a body frame of a body announced as `body_size` bytes: a body
    /// of several frames is joined into one allocation of exactly that size
    /// (growing by doubling would hold up to twice the bytes).
    pub(super) fn push(&mut self, chunk: Bytes, body_size: usize) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let joined_size = body_size
                    .min(JOIN_PREALLOCATION_MAX)
                    .max(first.len() + chunk.len());
                let mut joined = BytesMut::with_capacity(joined_size);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
            Body::Many(mut joined) => {
                joined.extend_from_slice(&chunk);
                Body::Many(joined)
            }
        }
    }

    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Many(bytes) => bytes.freeze(),
        }
    }
}
