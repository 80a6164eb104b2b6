//! The connection shell: one task reads and handles frames, one writes, one
//! keeps heartbeats; everything they share lives in [`Connection`], which
//! the shard reaches through `shard::Client` (`client`) to hand over
//! deliveries, replies, confirms and credit.
//!
//! Where things are: frames by channel state (`frames`), the methods by
//! AMQP class (`methods`, one file per class), one channel's own state and
//! decisions (`channel`), requests to other shards and their replies
//! (`requests`), closing (`close`), writing (`outbound`), publish credit
//! (`flow`), the cap on held content (`content`), login and permission
//! checks (`permission`).
//!
//! The reader handles a frame to completion before the next. Methods that
//! need another shard (declare, consume, get...) send a request and the
//! reader waits for its reply before reading on, so a channel's methods take
//! effect in the order the client sent them. The reply handler itself writes
//! the -ok frame, synchronously, in ring order: that is what puts a
//! consume-ok on the wire before the first delivery that follows it.

mod channel;
mod client;
mod close;
mod content;
mod direct_reply;
mod flow;
mod frames;
mod info;
mod methods;
mod outbound;
mod permission;
mod requests;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hashbrown::HashMap;

use crate::catalog::access::UserPermission;
use crate::ids::{ChannelId, ConnectionId, QueueId, ShardId};
use crate::protocol::frame::{self, Frame, FrameType};
use crate::protocol::method::Method;
use crate::protocol::{reply_code, AmqpError, ShortStr};
use crate::queue::MessageTotals;
use crate::runtime::net::{Listener, ReadHalf, WriteHalf};
use crate::runtime::notify::Notify;
use crate::runtime::{self};
use crate::shard::{Client, Shard};
use channel::Channel;
use flow::PublisherFlow;
use info::Traffic;
use methods::Tune;
use outbound::Outbound;

/// How long a connection we closed keeps reading for the peer's end of
/// stream, and how long we wait for a client to close its socket after
/// close-ok.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const CLIENT_CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long we wait for the client's close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);
/// The first read waits at most this long for the protocol header
/// (RabbitMQ's handshake_timeout is 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial read buffer: small, since an idle connection keeps it; frames
/// are split off it, and it grows with the read window for busy ones.
const READ_BUFFER_CAPACITY: usize = 4 << 10;
/// Frames the reader handles before it lets the shard's other tasks have a
/// turn: a connection with a full read buffer must not hold up the acks
/// and deliveries of the others.
const TURN_FRAMES_MAX: usize = 256;

pub struct Connection {
    pub id: ConnectionId,
    pub shard: Rc<Shard>,
    peer: SocketAddr,
    out: Outbound,
    state: RefCell<State>,
    /// Set when a reply the reader waits for has been handled.
    reply_ready: Notify,
    /// The writer task has finished: the socket is done.
    writer_finished: Notify,
    writer_done: Cell<bool>,
    last_read: Cell<Instant>,
    /// The reader has stopped reading by our choice (waiting for a reply,
    /// for credit, for the memory alarm): missed heartbeats are not the
    /// peer's fault meanwhile.
    paused: Cell<bool>,
    flow: PublisherFlow,
    /// Bytes and socket reads and writes, for the management API.
    traffic: Traffic,
    /// Scratch for routing results, reused by every publish.
    routes: RefCell<Vec<QueueId>>,
    /// Scratch for acks being sent to queue shards.
    settled: RefCell<Vec<(QueueId, u64)>>,
}

struct State {
    phase: Phase,
    tune: Tune,
    vhost: ShortStr,
    /// The authenticated user, which a message's user_id must name.
    user: ShortStr,
    /// The user's permission in `vhost`, from connection.open on.
    permission: Option<Arc<UserPermission>>,
    consumer_cancel_notify: bool,
    /// The client understands connection.blocked / unblocked.
    blocked_notify: bool,
    channels: HashMap<u16, Channel>,
    /// Channels opened so far: the last one's serial.
    channels_opened: u32,
    /// Content bytes the channels hold, summed (see `content`).
    content_held: u64,
    /// What the closed channels published, delivered and had acked.
    closed_channels: MessageTotals,
    /// The request the reader waits on, and its channel.
    awaiting: Option<(u16, requests::Awaiting)>,
    /// basic.cancel notifications for a channel whose request is pending:
    /// written after its reply, as RabbitMQ's busy channel process does (a
    /// queue.delete on the consuming channel answers delete-ok first).
    deferred_cancels: Vec<(u16, ShortStr)>,
    /// Whether this connection declared an exclusive queue (which must go
    /// when it closes).
    declared_exclusive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close; only close-ok (or close) is read now.
    Closing,
    /// The client closed and we answered close-ok: the client closes the
    /// socket (as the spec says), we wait for it.
    ClosedByClient,
    Closed,
}

/// What the reader does after handling a frame.
enum Next {
    Continue,
    /// Wait for the reply to a request sent to another shard.
    AwaitReply,
    /// A publish was routed: pace the publisher before reading more (see
    /// `flow`); `congested` names a shard whose outbox is full.
    Published {
        congested: Option<ShardId>,
    },
    /// Stop reading; the socket closes once the writer flushes.
    Stop,
}

/// Binds the AMQP port on `shard` (SO_REUSEPORT: every shard binds it) and
/// serves the connections it accepts; a port it cannot bind stops the
/// broker.
pub fn listen(shard: &Rc<Shard>) {
    let addr = shard.shared.config.listen_addr();
    match Listener::bind(addr) {
        Ok(listener) => {
            if shard.id == 0 {
                tracing::info!("AMQP listening on {addr}");
            }
            runtime::spawn(accept_loop(shard.clone(), listener));
        }
        Err(err) => {
            tracing::error!("shard {} cannot listen on {addr}: {err}", shard.id);
            shard.shared.shutdown.store(true, Ordering::SeqCst);
        }
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok((read, write, peer)) => {
                let id = shard.next_connection_id();
                runtime::spawn(serve(shard.clone(), id, read, write, peer));
            }
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                runtime::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one accepted socket until it closes.
async fn serve(
    shard: Rc<Shard>,
    id: ConnectionId,
    mut read: ReadHalf,
    write: WriteHalf,
    peer: SocketAddr,
) {
    let conn = Connection::new(shard.clone(), id, peer);
    let client: Rc<dyn Client> = conn.clone();
    shard.register_connection(id, Rc::downgrade(&client));
    runtime::spawn(outbound::run_writer(conn.clone(), write));
    tracing::debug!(%peer, conn = %id, "accepted");
    if let Err(reason) = conn.clone().read_loop(&mut read).await {
        tracing::debug!(%peer, conn = %id, "closing: {reason}");
    }
    let closed_by_client = conn.phase() == Phase::ClosedByClient;
    conn.release();
    conn.linger(read, closed_by_client).await;
}

impl Connection {
    fn new(shard: Rc<Shard>, id: ConnectionId, peer: SocketAddr) -> Rc<Connection> {
        let state = State {
            phase: Phase::AwaitStartOk,
            tune: Tune::offered(&shard.shared.config),
            vhost: ShortStr::default(),
            user: ShortStr::default(),
            permission: None,
            consumer_cancel_notify: false,
            blocked_notify: false,
            channels: HashMap::new(),
            channels_opened: 0,
            content_held: 0,
            closed_channels: MessageTotals::default(),
            awaiting: None,
            deferred_cancels: Vec::new(),
            declared_exclusive: false,
        };
        Rc::new(Connection {
            id,
            peer,
            out: Outbound::new(),
            state: RefCell::new(state),
            reply_ready: Notify::new(),
            writer_finished: Notify::new(),
            writer_done: Cell::new(false),
            last_read: Cell::new(Instant::now()),
            paused: Cell::new(false),
            flow: PublisherFlow::new(shard.mesh.shard_count(), shard.shared.config.publish_credit),
            traffic: Traffic::default(),
            routes: RefCell::new(Vec::new()),
            settled: RefCell::new(Vec::new()),
            shard,
        })
    }

    async fn read_loop(self: Rc<Self>, read: &mut ReadHalf) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(READ_BUFFER_CAPACITY);
        if !self.read_protocol_header(read, &mut buf).await? {
            return Ok(());
        }
        self.out
            .method(0, &methods::start_method(&self.shard.shared.config));
        loop {
            let mut turn_frames = 0;
            while let Some(frame) = self.next_frame(&mut buf)? {
                match self.handle_frame(frame) {
                    Next::Continue => {}
                    Next::AwaitReply => self.pause(self.wait_reply()).await,
                    Next::Published { congested } => self.pace_publisher(congested).await,
                    Next::Stop => return Ok(()),
                }
                turn_frames += 1;
                if turn_frames == TURN_FRAMES_MAX {
                    turn_frames = 0;
                    runtime::yield_now().await;
                }
            }
            self.flush_confirms();
            self.pause(self.out.wait_drained()).await;
            if !self.fill(read, &mut buf).await? {
                return Ok(());
            }
        }
    }

    /// Reads the 8-byte protocol header; a wrong one is answered with ours
    /// and the socket closes (false).
    async fn read_protocol_header(
        &self,
        read: &mut ReadHalf,
        buf: &mut BytesMut,
    ) -> Result<bool, String> {
        while buf.len() < frame::PROTOCOL_HEADER.len() {
            let filled = runtime::timeout(HANDSHAKE_TIMEOUT, self.fill(read, buf)).await;
            match filled {
                Some(Ok(true)) => {}
                Some(Ok(false)) => return Ok(false),
                Some(Err(err)) => return Err(err),
                None => return Err("handshake timeout".into()),
            }
        }
        let header = buf.split_to(frame::PROTOCOL_HEADER.len());
        if header[..] != frame::PROTOCOL_HEADER[..] {
            self.out.raw(&frame::PROTOCOL_HEADER);
            return Ok(false);
        }
        Ok(true)
    }

    /// Appends what the socket has to `buf`; false when the peer closed.
    async fn fill(&self, read: &mut ReadHalf, buf: &mut BytesMut) -> Result<bool, String> {
        let read_len = read
            .read_buf(buf)
            .await
            .map_err(|err| format!("read failed: {err}"))?;
        self.last_read.set(Instant::now());
        if read_len > 0 {
            self.traffic.received(read_len);
        }
        Ok(read_len > 0 && !self.is_closed())
    }

    fn next_frame(self: &Rc<Self>, buf: &mut BytesMut) -> Result<Option<Frame>, String> {
        let frame_max = self.state.borrow().tune.frame_max;
        match frame::decode_frame(buf, frame_max) {
            Ok(frame) => Ok(frame),
            Err(err) => {
                // A framing error leaves the stream unreadable: say why and
                // stop reading.
                self.close_connection(AmqpError::from(err), 0, 0);
                Err("frame error".into())
            }
        }
    }

    /// Runs `wait` with the reader marked paused, and counts the peer as
    /// heard from when it ends: we were not reading, so its silence meant
    /// nothing.
    async fn pause<T>(&self, wait: impl Future<Output = T>) -> T {
        self.paused.set(true);
        let output = wait.await;
        self.paused.set(false);
        self.last_read.set(Instant::now());
        output
    }

    async fn wait_reply(&self) {
        while self.state.borrow().awaiting.is_some() && !self.is_closed() {
            self.reply_ready.wait().await;
        }
    }

    fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    fn is_closed(&self) -> bool {
        matches!(self.phase(), Phase::Closed | Phase::ClosedByClient)
    }

    fn handle_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let phase = self.phase();
        match (phase, frame.frame_type) {
            (Phase::Closed | Phase::ClosedByClient, _) => Next::Stop,
            (_, FrameType::Heartbeat) if frame.channel == 0 => Next::Continue,
            (_, FrameType::Heartbeat) => self.hard_error(AmqpError::new(
                reply_code::FRAME_ERROR,
                format!("heartbeat frame on channel {}", frame.channel),
            )),
            (Phase::Closing, _) => self.while_closing(frame),
            (Phase::Open, _) if frame.channel != 0 => self.channel_frame(frame),
            (_, FrameType::Method) => match Method::decode(frame.payload) {
                Ok(method) => self.connection_method(method),
                Err(err) => self.hard_error(err.into()),
            },
            (_, _) => self.hard_error(AmqpError::new(
                reply_code::UNEXPECTED_FRAME,
                format!("content frame on channel {}", frame.channel),
            )),
        }
    }

    /// Runs `f` on channel `ch`; 504 when it is not open.
    fn with_channel<T>(&self, ch: u16, f: impl FnOnce(&mut Channel) -> T) -> Result<T, AmqpError> {
        let mut state = self.state.borrow_mut();
        match state.channels.get_mut(&ch) {
            Some(channel) => Ok(f(channel)),
            None => Err(AmqpError::new(
                reply_code::CHANNEL_ERROR,
                format!("channel {ch} is not open"),
            )),
        }
    }

    fn channel_id(&self, number: u16) -> ChannelId {
        ChannelId {
            conn: self.id,
            number,
        }
    }
}
