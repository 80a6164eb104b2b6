//! Identifiers that cross shards: plain copyable numbers, so a ring message
//! names a queue or a connection without carrying a string.

use std::fmt;

/// Index of a shard, `0..shard_count`.
pub(crate) type ShardId = usize;

/// A queue's identity for its whole life, assigned by the catalog when the
/// queue is created. Every shard's catalog replica assigns the same id,
/// because every replica applies the same operations in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u64);

/// A connection: the shard that accepted it and a number unique there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub shard_id: u32,
    pub local_id: u32,
}

/// A channel's address: its connection and its number there. Deliveries
/// go to it, replies answer it, and a queue's unacked messages are held by
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    pub conn: ConnectionId,
    pub number: u16,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.shard_id, self.local_id)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// The management API's stand-in for a connection: it declares, binds and
/// takes messages (basic.get on its behalf) under this id, which no
/// accepted connection ever has (shard ids are far below `u32::MAX`).
pub(crate) const MANAGEMENT_CONNECTION: ConnectionId = ConnectionId {
    shard_id: u32::MAX,
    local_id: u32::MAX,
};

/// The management API's one channel, which holds what it takes with
/// basic.get (settled at once).
pub(crate) const MANAGEMENT_CHANNEL: ChannelId = ChannelId {
    conn: MANAGEMENT_CONNECTION,
    number: 0,
};
