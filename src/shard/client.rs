//! How a shard reaches the client connections it accepted: through the
//! [`Client`] interface, which the connection implements. The shard keeps
//! only weak handles (`Clients`), so it never names the connection module
//! and no reference cycle ties a connection to its shard.

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;

use ahash::RandomState;
use hashbrown::HashMap;

use super::{ConfirmAnswer, Deliver, PublishCredit, Reply};
use crate::ids::{ConnectionId, ShardId};
use crate::protocol::ShortStr;
use crate::queue::MessageTotals;

/// What a shard asks of a client connection. Every call comes from a ring
/// handler or the management API on the connection's own shard, and none
/// waits.
pub(crate) trait Client {
    /// A delivery for one of its consumers. False when the channel or the
    /// consumer is gone, so the shard requeues it.
    fn deliver(&self, deliver: Deliver) -> bool;
    /// The answer to the request the channel `channel` waits for.
    fn reply(self: Rc<Self>, channel: u16, reply: Reply);
    /// Queues' shards are done with these publishes (publisher confirms).
    fn confirmed(&self, answers: &[ConfirmAnswer]);
    /// Shard `from` has processed this much of what the connection sent it.
    fn publish_credit(&self, from: ShardId, credit: PublishCredit);
    /// The queue under consumer `tag` on `channel` went away.
    fn consumer_gone(&self, channel: u16, tag: &ShortStr);
    /// Closes the connection with 320 CONNECTION_FORCED and `text`.
    fn force_close(self: Rc<Self>, text: &str);
    /// Resolves once its socket is closed, or after `limit`.
    fn wait_closed(&self, limit: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>>;
    fn vhost(&self) -> ShortStr;
    fn user(&self) -> String;
    /// A snapshot for the management API.
    fn info(&self) -> ConnectionInfo;
}

/// The connections a shard accepted, by local id.
#[derive(Default)]
pub(crate) struct Clients {
    by_id: HashMap<u32, Weak<dyn Client>, RandomState>,
}

impl Clients {
    pub(crate) fn insert(&mut self, id: ConnectionId, client: Weak<dyn Client>) {
        self.by_id.insert(id.local_id, client);
    }

    pub(crate) fn remove(&mut self, id: ConnectionId) {
        self.by_id.remove(&id.local_id);
    }

    pub(crate) fn get(&self, id: ConnectionId) -> Option<Rc<dyn Client>> {
        self.by_id.get(&id.local_id)?.upgrade()
    }

    /// Every live connection, for calls that may re-enter the shard.
    pub(crate) fn all(&self) -> Vec<Rc<dyn Client>> {
        self.by_id.values().filter_map(Weak::upgrade).collect()
    }
}

/// A connection as `/api/connections` lists it.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionInfo {
    pub id: ConnectionId,
    /// RabbitMQ's name: "peer -> listener".
    pub name: String,
    pub peer_host: String,
    pub peer_port: u16,
    pub user: String,
    pub vhost: String,
    pub channels: usize,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_s: u16,
    pub state: &'static str,
    /// Per open channel, by number.
    pub(crate) channel_list: Vec<ChannelInfo>,
    /// What its closed channels did.
    pub(crate) closed_channels: MessageTotals,
    pub traffic: TrafficTotals,
    /// Bytes appended and not yet written (RabbitMQ's `send_pend`).
    pub send_pend: usize,
}

/// What a connection read and wrote, as RabbitMQ reports its socket's
/// statistics: bytes (`recv_oct`, `send_oct`) and socket reads and writes
/// (`recv_cnt`, `send_cnt`, which RabbitMQ takes from the socket's packet
/// counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrafficTotals {
    pub recv_oct: u64,
    pub recv_cnt: u64,
    pub send_oct: u64,
    pub send_cnt: u64,
}

/// A channel as `/api/channels` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelInfo {
    pub number: u16,
    pub consumers: usize,
    pub unacked: usize,
    pub totals: MessageTotals,
}
