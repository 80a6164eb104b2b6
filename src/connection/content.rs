//! The content a connection holds before it reaches any queue: bodies being
//! assembled from their frames on any channel, and publishes a transaction
//! has buffered. Each message counts its announced body size (reserved when
//! its header arrives, before a body byte is read) plus a fixed overhead, and
//! the connection's total is capped at twice `--message-size-max`: one
//! largest message always fits, but 2047 channels each assembling one, or a
//! transaction that never commits, cannot exhaust memory.

use crate::message::MESSAGE_OVERHEAD_BYTES;
use crate::protocol::AmqpError;

use super::channel::Channel;
use super::{Connection, State};

/// What a message costs: its body and `MESSAGE_OVERHEAD_BYTES`, which
/// also bounds how many empty messages a transaction may buffer.
pub(super) fn content_cost(body_size: u64) -> u64 {
    body_size.saturating_add(MESSAGE_OVERHEAD_BYTES)
}

impl Connection {
    /// Reserves room for a message of `body_size` on channel `ch`; 406 when
    /// the connection would hold more than its cap.
    pub(super) fn hold_content(&self, ch: u16, body_size: u64) -> Result<(), AmqpError> {
        let cap = self.shard.shared.config.message_size_max.saturating_mul(2);
        let cost = content_cost(body_size);
        let mut state = self.state.borrow_mut();
        if state.content_held.saturating_add(cost) > cap {
            return Err(AmqpError::precondition_failed(format!(
                "connection holds {} bytes of unrouted content (messages being received \
                 and uncommitted transactions); a message of {body_size} bytes would exceed \
                 the limit of {cap}",
                state.content_held
            )));
        }
        if let Some(channel) = state.channels.get_mut(&ch) {
            channel.content_held += cost;
            state.content_held += cost;
        }
        Ok(())
    }

    /// Channel `ch` no longer holds `bytes` of content (a publish went to
    /// its queues, a transaction ended).
    pub(super) fn release_content(&self, ch: u16, bytes: u64) {
        let mut state = self.state.borrow_mut();
        if let Some(channel) = state.channels.get_mut(&ch) {
            let bytes = bytes.min(channel.content_held);
            channel.content_held -= bytes;
            state.content_held -= bytes;
        }
    }

    /// Everything channel `ch` holds (a transaction committed or rolled
    /// back: nothing is being assembled between methods).
    pub(super) fn release_all_content(&self, ch: u16) {
        let held = self
            .state
            .borrow()
            .channels
            .get(&ch)
            .map(|c| c.content_held);
        if let Some(held) = held {
            self.release_content(ch, held);
        }
    }
}

impl State {
    /// Removes a channel, and what it held from the connection's total.
    pub(super) fn remove_channel(&mut self, ch: u16) -> Option<Channel> {
        let channel = self.channels.remove(&ch)?;
        self.content_held -= channel.content_held;
        self.closed_channels += channel.totals();
        Some(channel)
    }
}
