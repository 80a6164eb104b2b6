//! What the management API shows of a connection and its channels: a
//! snapshot taken on the connection's own shard; and the connection's
//! traffic counters, which its reader and writer bump.

use std::cell::Cell;

use super::{Connection, Phase};
use crate::shard::{ChannelInfo, ConnectionInfo, TrafficTotals};

/// Bytes and socket reads and writes: plain cells, since only the
/// connection's shard touches them; one add per read or write system
/// call, none per frame.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    totals: Cell<TrafficTotals>,
}

impl Traffic {
    pub(super) fn received(&self, bytes: usize) {
        let mut totals = self.totals.get();
        totals.recv_oct += bytes as u64;
        totals.recv_cnt += 1;
        self.totals.set(totals);
    }

    pub(super) fn sent(&self, bytes: usize) {
        let mut totals = self.totals.get();
        totals.send_oct += bytes as u64;
        totals.send_cnt += 1;
        self.totals.set(totals);
    }
}

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
            traffic: self.traffic.totals.get(),
            send_pend: self.out.buffered(),
        }
    }
}
