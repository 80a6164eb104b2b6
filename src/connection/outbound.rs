//! A connection's outgoing bytes: frames are appended synchronously by
//! whoever produces them (the reader answering a method, the shard handing
//! over a delivery), and one writer task moves them to the socket.
//!
//! Appending in arrival order is what orders frames: a consume-ok written by
//! the reply handler precedes the deliveries that follow it on the same ring.
//! Deliveries earn their queue more credit only once the writer has handed
//! them to the kernel, so a client that stops reading stops its queues from
//! sending, and nothing here grows without bound.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use super::Connection;
use crate::ids::{QueueId, ShardId};
use crate::message::Message;
use crate::protocol::frame;
use crate::protocol::method::{BasicPublish, DeliverArgs, Method};
use crate::protocol::ShortStr;
use crate::queue::ConsumerKey;
use crate::runtime;
use crate::runtime::net::WriteHalf;
use crate::runtime::notify::Notify;
use crate::shard::ShardMsg;

/// Above this many buffered bytes the reader stops reading the socket
/// until the writer catches up (a client that publishes but never reads
/// its confirms must not grow our buffer).
pub(crate) const BUFFERED_BYTES_MAX: usize = 4 << 20;

/// A write smaller than this first lets the shard's other tasks run once,
/// so that deliveries appended over two bounded turns leave in one send: on
/// loopback every send also runs the receiver's side of TCP, and one send
/// per reader turn cost a tenth of the auto-ack rate. More rounds gained
/// little there and delayed manual acks' round trips (measured: 0, 1, 4
/// and 16 rounds; 1 was best for prefetch 100).
const GATHER_BYTES: usize = 64 << 10;

pub(crate) struct Outbound {
    buf: RefCell<BytesMut>,
    ready: Notify,
    drained: Notify,
    frame_max: Cell<u32>,
    last_write: Cell<Instant>,
    /// Deliveries appended since the last write, per consumer: credit to
    /// return once they are on the socket.
    credits: RefCell<Vec<Credit>>,
    /// Close the socket once everything appended so far is written.
    close_after_flush: Cell<bool>,
}

struct Credit {
    owner: ShardId,
    queue: QueueId,
    channel: u16,
    tag: ShortStr,
    count: u32,
}

impl Outbound {
    pub fn new() -> Outbound {
        Outbound {
            // Small: idle connections keep it; it grows for busy ones.
            buf: RefCell::new(BytesMut::with_capacity(4 << 10)),
            ready: Notify::new(),
            drained: Notify::new(),
            frame_max: Cell::new(frame::FRAME_MIN_SIZE),
            last_write: Cell::new(Instant::now()),
            credits: RefCell::new(Vec::new()),
            close_after_flush: Cell::new(false),
        }
    }

    pub(crate) fn set_frame_max(&self, frame_max: u32) {
        self.frame_max.set(frame_max);
    }

    pub fn method(&self, channel: u16, method: &Method) {
        frame::encode_method(&mut self.buf.borrow_mut(), channel, method);
        self.ready.notify();
    }

    /// A method with content (get-ok, return), split per frame_max.
    pub fn content(&self, channel: u16, method: &Method, message: &Message) {
        let mut buf = self.buf.borrow_mut();
        frame::encode_method(&mut buf, channel, method);
        self.append_content(&mut buf, channel, message);
        self.ready.notify();
    }

    fn append_content(&self, buf: &mut BytesMut, channel: u16, message: &Message) {
        frame::encode_content(
            buf,
            channel,
            BasicPublish::CLASS_ID,
            &message.properties,
            &message.body,
            self.frame_max.get(),
        );
    }

    pub fn raw(&self, bytes: &[u8]) {
        self.buf.borrow_mut().extend_from_slice(bytes);
        self.ready.notify();
    }

    pub fn heartbeat(&self) {
        frame::encode_heartbeat(&mut self.buf.borrow_mut());
        self.ready.notify();
    }

    /// Writes a basic.deliver and counts it toward the consumer's credit.
    pub fn deliver(
        &self,
        owner: ShardId,
        queue: QueueId,
        channel: u16,
        deliver: &DeliverArgs<'_>,
        message: &Message,
    ) {
        {
            let mut buf = self.buf.borrow_mut();
            frame::encode_deliver(&mut buf, channel, deliver);
            self.append_content(&mut buf, channel, message);
        }
        self.ready.notify();
        let tag = deliver.consumer_tag;
        let mut credits = self.credits.borrow_mut();
        match credits
            .iter_mut()
            .find(|credit| credit.queue == queue && credit.channel == channel && credit.tag == *tag)
        {
            Some(credit) => credit.count += 1,
            None => credits.push(Credit {
                owner,
                queue,
                channel,
                tag: tag.clone(),
                count: 1,
            }),
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.borrow().len()
    }

    pub(crate) fn idle_since_write(&self) -> std::time::Duration {
        self.last_write.get().elapsed()
    }

    pub(crate) fn close_after_flush(&self) {
        self.close_after_flush.set(true);
        self.ready.notify();
    }

    pub(crate) async fn wait_drained(&self) {
        while self.buffered() > BUFFERED_BYTES_MAX / 2 {
            self.drained.wait().await;
        }
    }
}

/// The writer task: moves appended frames to the socket until the
/// connection closes, returning consumer credit after each write.
pub(crate) async fn run_writer(conn: Rc<Connection>, mut socket: WriteHalf) {
    let out = &conn.out;
    // Credit for what the current write carries; swapped with the
    // accumulating list, so neither is reallocated per write.
    let mut written = Vec::new();
    loop {
        gather(out).await;
        let chunk = out.buf.borrow_mut().split();
        if chunk.is_empty() {
            if out.close_after_flush.get() {
                break;
            }
            out.ready.wait().await;
            continue;
        }
        std::mem::swap(&mut *out.credits.borrow_mut(), &mut written);
        if socket.write_all(&chunk).await.is_err() {
            break;
        }
        out.last_write.set(Instant::now());
        conn.traffic.sent(chunk.len());
        out.drained.notify();
        return_credit(&conn, &mut written);
        // Give the emptied buffer's capacity back for reuse.
        drop(chunk);
    }
    socket.shutdown();
    conn.writer_done();
}

/// Yields once before a small write (see `GATHER_BYTES`).
async fn gather(out: &Outbound) {
    let buffered = out.buffered();
    if buffered > 0 && buffered < GATHER_BYTES {
        runtime::yield_now().await;
    }
}

fn return_credit(conn: &Connection, credits: &mut Vec<Credit>) {
    for credit in credits.drain(..) {
        let consumer = ConsumerKey {
            channel: conn.channel_id(credit.channel),
            tag: credit.tag,
        };
        conn.shard.send(
            credit.owner,
            ShardMsg::Credit {
                queue: credit.queue,
                consumer,
                credit: credit.count,
            },
        );
    }
}
