//! What the management API shows of a connection and its channels: a
//! snapshot taken on the connection's own shard; and the connection's
//! traffic counters, which its reader and writer bump.

use std::cell::Cell;

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
    pub traffic: TrafficTotals,
    /// Bytes appended and not yet written (RabbitMQ's `send_pend`).
    pub send_pend: usize,
}

/// What a connection read and wrote, as RabbitMQ reports its socket's
/// statistics: bytes (`recv_oct`, `send_oct`) and socket reads and writes
/// (`recv_cnt`, `send_cnt`, which RabbitMQ takes from the socket's packet
/// counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    pub recv_oct: u64,
    pub recv_cnt: u64,
    pub send_oct: u64,
    pub send_cnt: u64,
}

/// The live counters: plain cells, since only the connection's shard
/// touches them; one add per socket read or write, none per frame.
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
            traffic: self.traffic.totals.get(),
            send_pend: self.out.buffered(),
        }
    }
}
