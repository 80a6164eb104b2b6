//! What the management API shows of a connection and its channels: a
//! snapshot taken on the connection's own shard.

use super::{Connection, Phase};
use crate::shard::{ChannelInfo, ConnectionInfo};

impl Connection {
    pub(super) fn snapshot(&self) -> ConnectionInfo {
        let listener = self.shard.shared.config.listen_addr();
        let state = self.state.borrow();
        let mut channel_list: Vec<_> = state
            .channels
            .iter()
            .map(|(&number, channel)| ChannelInfo {
                number,
                consumers: channel.consumer_count(),
                unacked: channel.unacked_count(),
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
