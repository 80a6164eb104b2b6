//! Closing: a connection (ours with connection.close and a wait for
//! close-ok, the client's, or the broker's shutdown), a channel with a soft
//! error, and releasing what they held in the queues' shards.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::channel::{Channel, ChannelState};
use super::{Connection, Next, Phase, CLIENT_CLOSE_WAIT, CLOSE_LINGER, CLOSE_OK_TIMEOUT};
use crate::ids::{QueueId, ShardId};
use crate::protocol::frame::{Frame, FrameType};
use crate::protocol::method::{ChannelClose, ConnectionClose, Method};
use crate::protocol::{reply_code, AmqpError, ShortStr};
use crate::runtime;
use crate::runtime::net::ReadHalf;
use crate::shard::ShardMsg;

impl Connection {
    /// Closing a socket with unread input resets it, which can destroy our
    /// last frames before the peer reads them. So keep reading until the
    /// peer closes: after a client's close it is the client's to close (we
    /// only give up after a while); otherwise we half-close first.
    pub(super) async fn linger(&self, mut read: ReadHalf, closed_by_client: bool) {
        let linger = if closed_by_client {
            CLIENT_CLOSE_WAIT
        } else {
            self.out.close_after_flush();
            CLOSE_LINGER
        };
        let mut discard = BytesMut::new();
        let _ = runtime::timeout(linger, async {
            while let Ok(1..) = read.read_buf(&mut discard).await {
                discard.clear();
            }
        })
        .await;
        self.out.close_after_flush();
    }

    /// After we sent connection.close, only close-ok ends it (or a crossing
    /// close, answered with close-ok); everything else is discarded.
    pub(super) fn while_closing(&self, frame: Frame) -> Next {
        if frame.channel != 0 || frame.frame_type != FrameType::Method {
            return Next::Continue;
        }
        match Method::decode(frame.payload) {
            Ok(Method::ConnectionCloseOk(_)) => self.finish_close(),
            Ok(Method::ConnectionClose(_)) => {
                self.out
                    .method(0, &Method::ConnectionCloseOk(Default::default()));
                self.finish_close()
            }
            _ => Next::Continue,
        }
    }

    pub(super) fn finish_close(&self) -> Next {
        self.state.borrow_mut().phase = Phase::Closed;
        Next::Stop
    }

    /// A hard error: connection.close with the code, then wait for close-ok.
    pub(super) fn hard_error(self: &Rc<Self>, err: AmqpError) -> Next {
        self.close_connection(err, 0, 0);
        Next::Continue
    }

    pub(super) fn close_connection(self: &Rc<Self>, err: AmqpError, class_id: u16, method_id: u16) {
        tracing::info!(conn = %self.id, peer = %self.peer, "closing connection: {err}");
        let close = ConnectionClose {
            reply_code: err.code,
            reply_text: ShortStr::from(err.reply_text()),
            class_id,
            method_id,
        };
        self.out.method(0, &Method::ConnectionClose(close));
        self.state.borrow_mut().phase = Phase::Closing;
        let conn = self.clone();
        runtime::spawn(async move {
            runtime::sleep(CLOSE_OK_TIMEOUT).await;
            if conn.phase() == Phase::Closing {
                conn.state.borrow_mut().phase = Phase::Closed;
                conn.out.close_after_flush();
            }
        });
    }

    /// Closes a channel with a soft error: channel.close with the code, and
    /// the channel's consumers and unacked messages are released at once.
    pub(super) fn channel_error(
        &self,
        channel_id: u16,
        err: AmqpError,
        class_id: u16,
        method_id: u16,
    ) {
        let mut state = self.state.borrow_mut();
        let Some(channel) = state.channels.get_mut(&channel_id) else {
            return;
        };
        if channel.state == ChannelState::Closing {
            return;
        }
        channel.state = ChannelState::Closing;
        self.release_channel(channel_id, channel);
        let close = ChannelClose {
            reply_code: err.code,
            reply_text: ShortStr::from(err.reply_text()),
            class_id,
            method_id,
        };
        self.out.method(channel_id, &Method::ChannelClose(close));
    }

    /// Tells the queues this channel used that it is gone: its consumers go
    /// and what it held unacked is requeued, in the original order.
    pub(super) fn release_channel(&self, channel_id: u16, channel: &mut Channel) {
        self.notify_owners(Some(channel_id), channel.release());
    }

    /// Sends one `HolderClosed` per owning shard for `queues`.
    pub(super) fn notify_owners(&self, channel: Option<u16>, queues: Vec<QueueId>) {
        let mut by_owner: Vec<(ShardId, Vec<QueueId>)> = Vec::new();
        for queue in queues {
            let Some(owner) = self.shard.owner_of(queue) else {
                continue;
            };
            match by_owner.iter_mut().find(|(shard, _)| *shard == owner) {
                Some((_, list)) => list.push(queue),
                None => by_owner.push((owner, vec![queue])),
            }
        }
        for (owner, queues) in by_owner {
            let msg = ShardMsg::HolderClosed {
                conn: self.id,
                channel,
                queues,
            };
            self.shard.send(owner, msg);
        }
    }

    /// The connection is gone: release every channel, drop its exclusive
    /// queues, and leave the shard's registry.
    pub(super) fn release(&self) {
        let mut state = self.state.borrow_mut();
        state.phase = Phase::Closed;
        let mut queues = Vec::new();
        for channel in state.channels.values_mut() {
            for queue in channel.take_touched() {
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
        }
        let mut totals = state.closed_channels;
        for channel in state.channels.values() {
            totals += channel.totals();
        }
        self.shard.retire_connection_totals(totals);
        state.channels.clear();
        let declared_exclusive = state.declared_exclusive;
        drop(state);
        self.notify_owners(None, queues);
        if declared_exclusive {
            self.shard.request_meta(
                None,
                crate::catalog::MetaOp::ConnectionClosed { conn: self.id },
            );
        }
        self.shard.unregister_connection(self.id);
        self.reply_ready.notify();
    }

    /// Broker shutdown: connection.close 320 to the client.
    pub(crate) fn force_close(self: &Rc<Self>, text: &str) {
        if matches!(self.phase(), Phase::Open) {
            self.close_connection(AmqpError::new(reply_code::CONNECTION_FORCED, text), 0, 0);
        } else {
            self.out.close_after_flush();
        }
    }

    pub(crate) async fn wait_closed(&self, limit: Duration) {
        let _ = runtime::timeout(limit, async {
            while !self.writer_done.get() {
                self.writer_finished.wait().await;
            }
        })
        .await;
    }

    pub(super) fn writer_done(&self) {
        self.writer_done.set(true);
        self.writer_finished.notify();
        // The socket is shut: make sure a reader waiting on a reply wakes.
        self.state.borrow_mut().phase = Phase::Closed;
        self.reply_ready.notify();
        self.flow.wake();
        self.shard.alarm_cleared.wake_all();
    }
}
