//! What the management API shows of a connection and its channels: a
//! snapshot taken on the connection's own shard.

use super::{Connection, Phase};
use crate::ids::ConnectionId;
use crate::queue::MessageTotals;

/// A connection as `/api/connections` lists it.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
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
    pub channel_list: Vec<ChannelInfo>,
    /// What its closed channels did.
    pub closed_channels: MessageTotals,
}

/// A channel as `/api/channels` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub number: u16,
    pub consumers: usize,
    pub unacked: usize,
    pub totals: MessageTotals,
}

impl Connection {
    pub fn info(&self) -> ConnectionInfo {
        let listener = self.shard.shared.config.listen_addr();
        let state = self.state.borrow();
        let mut channel_list: Vec<_> = state
            .channels
            .iter()
            .map(|(&number, channel)| ChannelInfo {
                number,
                consumers: channel.consumers.len(),
                unacked: channel.unacked.len(),
                totals: channel.totals(),
            })
            .collect();
        channel_list.sort_unstable_by_key(|channel| channel.number);
        ConnectionInfo {
            id: self.id,
            name: format!("{} -> {listener}", self.peer),
            peer_host: self.peer.ip().to_string(),
            peer_port: self.peer.port(),
            user: state.user.to_str_lossy().into_owned(),
            vhost: state.vhost.to_str_lossy().into_owned(),
            channels: state.channels.len(),
            frame_max: state.tune.frame_max,
            channel_max: state.tune.channel_max,
            heartbeat_s: state.tune.heartbeat_s,
            state: match state.phase {
                Phase::Open => "running",
                Phase::AwaitStartOk | Phase::AwaitTuneOk | Phase::AwaitOpen => "starting",
                Phase::Closing | Phase::ClosedByClient | Phase::Closed => "closing",
            },
            channel_list,
            closed_channels: state.closed_channels,
        }
    }
}
