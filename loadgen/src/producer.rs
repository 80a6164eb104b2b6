//! Publishing: one writer thread and one reader thread per connection.
//!
//! The writer drives every producer channel of its connection round-robin,
//! encoding a batch of publishes per channel into one reused buffer and
//! writing the whole round with one syscall. The body buffer is allocated
//! once per producer; each publish overwrites its stamp. Nothing is
//! allocated per message.
//!
//! The reader handles what the broker sends back: confirms (recording their
//! latency), connection.blocked and connection.unblocked (counting them and
//! the time spent blocked), and closes, which fail the run. It unparks the
//! writer after each batch so a full confirm window reopens at once.
//!
//! A blocked connection's socket is not read by the broker, so the writer
//! waits in its write; it keeps waiting after publishing time is up, for at
//! most the drain time, so that what it wrote is all delivered or the run
//! fails.
//!
//! With `--rate`, message n of a producer is due at start + n/rate and is
//! stamped with that due time, not the time it was written, so a stalled
//! producer or broker shows up in the latency instead of being hidden by
//! sending late (coordinated omission, as wrk2 avoids it).

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use warren::protocol::frame::{self, FrameType};
use warren::protocol::method::{BasicPublish, ConfirmSelect, Method};
use warren::protocol::properties::BasicProperties;
use warren::protocol::types::ShortStr;

use crate::amqp::{self, Connection, Error};
use crate::meter::Meter;
use crate::shared::Shared;
use crate::stamp::{now_ns, Stamp, STAMP_SIZE};
use crate::uri::AmqpUri;

/// Upper bound on publishes one channel adds to a write.
const BATCH_MESSAGES_MAX: usize = 256;
/// Upper bound on the octets of one write, before the round ends.
const BATCH_BYTES_MAX: usize = 256 * 1024;
/// Longest the writer sleeps, or waits in a write, before looking at the
/// stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(20);
const BASIC_CLASS_ID: u16 = 60;

/// How every producer publishes.
#[derive(Clone, Debug)]
pub struct PublishSettings {
    pub run_id: u32,
    pub size: usize,
    /// Messages per second per producer; 0 for no limit.
    pub rate: f64,
    /// Unconfirmed publishes allowed per producer; 0 for no confirms.
    pub confirm_window: u32,
    pub persistent: bool,
    /// Messages per producer; `u64::MAX` for no limit.
    pub count: u64,
    pub exchange: String,
    /// How long to wait for outstanding confirms after publishing stops.
    pub drain: Duration,
}

/// One producer: its id (the stamp's), its channel, its routing key.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    pub producer: u16,
    pub channel: u16,
    pub routing_key: String,
}

/// What a producer did, once it is done.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProducerResult {
    pub producer: u16,
    pub sent: u64,
    pub nacked: u64,
    pub unconfirmed: u64,
}

/// The publisher-confirm bookkeeping of one channel, shared by its writer
/// and the connection's reader.
///
/// Slot `s mod len` holds the send time of unconfirmed sequence `s`, or 0
/// once it is settled. The writer never runs more than `len` ahead of
/// `floor`, the first unsettled sequence, so a slot is only reused after it
/// is settled, even when confirms arrive out of order.
struct ConfirmWindow {
    window: u64,
    slots: Box<[AtomicU64]>,
    /// Sequences written; the reader ignores confirms beyond it.
    published: AtomicU64,
    floor: AtomicU64,
    outstanding: AtomicU64,
    nacked: AtomicU64,
}

impl ConfirmWindow {
    fn new(window: u32) -> ConfirmWindow {
        let len = (2 * window as usize).next_power_of_two();
        ConfirmWindow {
            window: u64::from(window),
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            published: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
        }
    }

    fn slot(&self, sequence: u64) -> &AtomicU64 {
        &self.slots[sequence as usize & (self.slots.len() - 1)]
    }

    /// Publishes the writer may add now.
    fn room(&self, sent: u64) -> u64 {
        let outstanding = self.outstanding.load(Ordering::Acquire);
        let ring_room = self.slots.len() as u64 - (sent - self.floor.load(Ordering::Acquire));
        self.window.saturating_sub(outstanding).min(ring_room)
    }

    /// Settles sequences `from..=to`; returns how many were still unsettled.
    fn settle(&self, from: u64, to: u64, ack: bool, now: u64, latencies: &mut Vec<u64>) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        let mut settled = 0;
        for sequence in from..=to.min(published.saturating_sub(1)) {
            let sent_ns = self.slot(sequence).swap(0, Ordering::AcqRel);
            if sent_ns == 0 {
                continue;
            }
            settled += 1;
            if ack {
                latencies.push(now.saturating_sub(sent_ns));
            }
        }
        if !ack {
            self.nacked.fetch_add(settled, Ordering::Relaxed);
        }
        self.outstanding.fetch_sub(settled, Ordering::AcqRel);
        let mut floor = self.floor.load(Ordering::Relaxed);
        while floor < published && self.slot(floor).load(Ordering::Acquire) == 0 {
            floor += 1;
        }
        self.floor.store(floor, Ordering::Release);
        settled
    }
}

/// The writer's state for one producer channel.
struct PublishChannel {
    spec: ProducerSpec,
    /// The basic.publish method frame, identical for every message.
    method_frame: BytesMut,
    sent: u64,
    confirms: Option<Arc<ConfirmWindow>>,
}

/// Opens a producer connection with its channels, reports readiness, waits
/// for the gate and publishes until told to stop. Runs on its own thread.
pub fn run_connection(
    uri: &AmqpUri,
    local_port: Option<u16>,
    specs: Vec<ProducerSpec>,
    settings: &PublishSettings,
    shared: &Arc<Shared>,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<ProducerResult> {
    let name = format!(
        "loadgen producers {}",
        specs.first().map_or(0, |s| s.producer)
    );
    let setup = Connection::open_from(uri, &name, local_port).and_then(|mut connection| {
        let channels = open_channels(&mut connection, specs, settings)?;
        Ok((connection, channels))
    });
    let _ = ready.send(());
    let (connection, mut channels) = match setup {
        Ok(opened) => opened,
        Err(error) => {
            shared.fail(error);
            return Vec::new();
        }
    };
    if shared.wait_gate() {
        if let Err(error) = publish(connection, &mut channels, settings, shared) {
            shared.fail(error);
        }
    } else {
        connection.close();
    }
    channels.iter().map(result).collect()
}

fn result(channel: &PublishChannel) -> ProducerResult {
    let confirms = channel.confirms.as_deref();
    ProducerResult {
        producer: channel.spec.producer,
        sent: channel.sent,
        nacked: confirms.map_or(0, |c| c.nacked.load(Ordering::Relaxed)),
        unconfirmed: confirms.map_or(0, |c| c.outstanding.load(Ordering::Relaxed)),
    }
}

fn open_channels(
    connection: &mut Connection,
    specs: Vec<ProducerSpec>,
    settings: &PublishSettings,
) -> Result<Vec<PublishChannel>, Error> {
    let mut channels = Vec::with_capacity(specs.len());
    for spec in specs {
        connection.open_channel(spec.channel)?;
        let confirms = if settings.confirm_window > 0 {
            connection.call(spec.channel, ConfirmSelect::default().into())?;
            Some(Arc::new(ConfirmWindow::new(settings.confirm_window)))
        } else {
            None
        };
        let publish = BasicPublish {
            exchange: ShortStr::from(settings.exchange.as_str()),
            routing_key: ShortStr::from(spec.routing_key.as_str()),
            ..BasicPublish::default()
        };
        let mut method_frame = BytesMut::new();
        frame::encode_method(&mut method_frame, spec.channel, &publish.into());
        channels.push(PublishChannel {
            spec,
            method_frame,
            sent: 0,
            confirms,
        });
    }
    Ok(channels)
}

/// The writer loop, then the wait for the last confirms, then the close.
fn publish(
    mut connection: Connection,
    channels: &mut [PublishChannel],
    settings: &PublishSettings,
    shared: &Arc<Shared>,
) -> Result<(), Error> {
    connection
        .stream
        .set_write_timeout(Some(IDLE_WAIT))
        .map_err(Error::io("set a write timeout"))?;
    let closing = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(&connection, channels, shared, &closing)?;
    let outcome = write_loop(&mut connection, channels, settings, shared);
    if outcome.is_ok() {
        wait_for_confirms(channels, settings.drain, shared);
    }
    // The reader owns the socket's incoming side now: it sees close-ok.
    closing.store(true, Ordering::Release);
    close(
        &mut connection,
        reader,
        outcome.is_ok(),
        settings.drain,
        shared,
    );
    outcome
}

/// Sends connection.close and waits for the reader to see close-ok.
///
/// The broker reads the close only after everything written before it,
/// which takes a while when it holds this publisher back (credit flow), so
/// the close is written as patiently as the publishes and close-ok awaited
/// for up to `drain`. A broker that never reads this socket again never
/// answers, and the reader is already in a read that no timeout set now
/// applies to: then a shutdown wakes it. After a failed write the buffer
/// may end in a partial frame, so no close is sent at all.
fn close(
    connection: &mut Connection,
    reader: thread::JoinHandle<()>,
    wrote_all: bool,
    drain: Duration,
    shared: &Shared,
) {
    let mut stopped_at = None;
    let sent = wrote_all
        && connection.queue_close().is_ok()
        // Reads that start from now on wait as long as this does.
        && connection
            .stream
            .set_read_timeout(Some(drain.max(IDLE_WAIT)))
            .is_ok()
        && connection
            .flush_patiently(|| blocked_too_long(shared, drain, &mut stopped_at))
            .is_ok();
    let deadline = Instant::now() + if sent { drain } else { Duration::ZERO };
    while !reader.is_finished() && Instant::now() < deadline {
        thread::park_timeout(IDLE_WAIT);
    }
    if !reader.is_finished() {
        if sent {
            // What the broker had not read by now is lost to it; the
            // summary says why.
            Meter::add(&shared.meter.unclosed, 1);
        }
        let _ = connection.stream.shutdown(Shutdown::Both);
    }
    let _ = reader.join();
}

fn write_loop(
    connection: &mut Connection,
    channels: &mut [PublishChannel],
    settings: &PublishSettings,
    shared: &Shared,
) -> Result<(), Error> {
    let properties = properties(settings.persistent);
    let mut body = vec![b'.'; settings.size.max(STAMP_SIZE)];
    let batch_max = (BATCH_BYTES_MAX / (settings.size + 64)).clamp(1, BATCH_MESSAGES_MAX) as u64;
    let start_ns = now_ns();
    let ns_per_message = if settings.rate > 0.0 {
        1e9 / settings.rate
    } else {
        0.0
    };
    let frame_max = connection.frame_max;
    let mut stopped_at = None;
    while !shared.stopping_producers() {
        let now = now_ns();
        let mut next_due_ns = u64::MAX;
        let mut written = 0;
        let mut all_done = true;
        for channel in channels.iter_mut() {
            let remaining = settings.count - channel.sent;
            all_done &= remaining == 0;
            let mut n = batch_max.min(remaining);
            if ns_per_message > 0.0 {
                let due = ((now - start_ns) as f64 / ns_per_message) as u64 + 1;
                n = n.min(due.saturating_sub(channel.sent));
                let next = start_ns + (channel.sent as f64 * ns_per_message) as u64;
                next_due_ns = next_due_ns.min(next.max(now + 1));
            }
            if let Some(confirms) = &channel.confirms {
                n = n.min(confirms.room(channel.sent));
            }
            for _ in 0..n {
                let sequence = channel.sent;
                let sent_ns = if ns_per_message > 0.0 {
                    start_ns + (sequence as f64 * ns_per_message) as u64
                } else {
                    now_ns()
                };
                let stamp = Stamp {
                    run: Stamp::run_of(settings.run_id),
                    producer: channel.spec.producer,
                    sequence,
                    sent_ns,
                };
                stamp.write(&mut body);
                connection.write_buf.put_slice(&channel.method_frame);
                frame::encode_content(
                    &mut connection.write_buf,
                    channel.spec.channel,
                    BASIC_CLASS_ID,
                    &properties,
                    &body,
                    frame_max,
                );
                channel.sent += 1;
                if let Some(confirms) = &channel.confirms {
                    confirms
                        .slot(sequence)
                        .store(sent_ns.max(1), Ordering::Relaxed);
                }
            }
            if let Some(confirms) = &channel.confirms {
                confirms.outstanding.fetch_add(n, Ordering::AcqRel);
                confirms.published.store(channel.sent, Ordering::Release);
            }
            written += n;
        }
        if written > 0 {
            connection
                .flush_patiently(|| blocked_too_long(shared, settings.drain, &mut stopped_at))?;
            Meter::add(&shared.meter.sent, written);
        } else if all_done {
            return Ok(());
        } else {
            let wait = Duration::from_nanos(next_due_ns.saturating_sub(now_ns()));
            thread::park_timeout(wait.min(IDLE_WAIT));
        }
    }
    Ok(())
}

/// Whether a writer held back by the broker should give up: once the run
/// failed, or `drain` after publishing time ran out.
fn blocked_too_long(shared: &Shared, drain: Duration, stopped_at: &mut Option<Instant>) -> bool {
    if shared.failed() {
        return true;
    }
    shared.stopping_producers() && stopped_at.get_or_insert_with(Instant::now).elapsed() >= drain
}

fn properties(persistent: bool) -> Vec<u8> {
    let properties = BasicProperties {
        delivery_mode: persistent.then_some(2),
        ..BasicProperties::default()
    };
    let mut encoded = BytesMut::new();
    properties.encode(&mut encoded);
    encoded.to_vec()
}

fn wait_for_confirms(channels: &[PublishChannel], drain: Duration, shared: &Shared) {
    let deadline = Instant::now() + drain;
    let outstanding = || {
        channels
            .iter()
            .filter_map(|c| c.confirms.as_deref())
            .map(|c| c.outstanding.load(Ordering::Acquire))
            .sum::<u64>()
    };
    while outstanding() > 0 && Instant::now() < deadline && !shared.failed() {
        thread::park_timeout(IDLE_WAIT);
    }
}

fn spawn_reader(
    connection: &Connection,
    channels: &[PublishChannel],
    shared: &Arc<Shared>,
    closing: &Arc<AtomicBool>,
) -> Result<thread::JoinHandle<()>, Error> {
    let stream = connection
        .stream
        .try_clone()
        .map_err(Error::io("clone the socket"))?;
    let mut windows: Vec<Option<Arc<ConfirmWindow>>> = Vec::new();
    for channel in channels {
        let index = usize::from(channel.spec.channel);
        windows.resize(windows.len().max(index + 1), None);
        windows[index] = channel.confirms.clone();
    }
    let reader = ConfirmReader {
        stream,
        buf: BytesMut::with_capacity(amqp::READ_CHUNK),
        frame_max: connection.frame_max,
        windows,
        writer: thread::current(),
        shared: Arc::clone(shared),
        closing: Arc::clone(closing),
        blocked_since_ns: None,
    };
    thread::Builder::new()
        .name("loadgen-confirms".into())
        .spawn(move || reader.run())
        .map_err(Error::io("start a reader thread"))
}

struct ConfirmReader {
    stream: TcpStream,
    buf: BytesMut,
    frame_max: u32,
    /// By channel number.
    windows: Vec<Option<Arc<ConfirmWindow>>>,
    writer: Thread,
    shared: Arc<Shared>,
    closing: Arc<AtomicBool>,
    /// When the broker last sent connection.blocked, until it unblocks.
    blocked_since_ns: Option<u64>,
}

impl ConfirmReader {
    fn run(mut self) {
        self.read_loop();
        // Still blocked at the end: that time counts too.
        self.unblocked(now_ns());
    }

    fn read_loop(&mut self) {
        let mut latencies = Vec::with_capacity(4096);
        loop {
            if let Err(error) = amqp::fill(&mut self.stream, &mut self.buf) {
                if !self.closing.load(Ordering::Acquire) {
                    self.shared.fail(Error::Io {
                        during: "read from the broker".into(),
                        source: error,
                    });
                }
                return;
            }
            let now = now_ns();
            let done = self.handle_frames(now, &mut latencies);
            self.shared.meter.confirm_latency.record_ns(&mut latencies);
            self.writer.unpark();
            match done {
                Ok(false) => {}
                Ok(true) => return,
                Err(error) => {
                    self.shared.fail(error);
                    self.writer.unpark();
                    return;
                }
            }
        }
    }

    /// Handles every whole frame read so far; true once the connection is
    /// closed.
    fn handle_frames(&mut self, now: u64, latencies: &mut Vec<u64>) -> Result<bool, Error> {
        while let Some(frame) = frame::decode_frame(&mut self.buf, self.frame_max)? {
            if frame.frame_type != FrameType::Method {
                continue;
            }
            let window = self
                .windows
                .get(usize::from(frame.channel))
                .and_then(Option::as_deref);
            match Method::decode(frame.payload)? {
                Method::BasicAck(ack) => {
                    if let Some(window) = window {
                        let confirmed =
                            settle(window, ack.delivery_tag, ack.multiple, true, now, latencies);
                        Meter::add(&self.shared.meter.confirmed, confirmed);
                    }
                }
                Method::BasicNack(nack) => {
                    if let Some(window) = window {
                        let nacked = settle(
                            window,
                            nack.delivery_tag,
                            nack.multiple,
                            false,
                            now,
                            latencies,
                        );
                        Meter::add(&self.shared.meter.nacked, nacked);
                    }
                }
                Method::ConnectionBlocked(_) => {
                    Meter::add(&self.shared.meter.blocked, 1);
                    self.blocked_since_ns.get_or_insert(now);
                }
                Method::ConnectionUnblocked(_) => {
                    Meter::add(&self.shared.meter.unblocked, 1);
                    self.unblocked(now);
                }
                Method::ConnectionCloseOk(_) => return Ok(true),
                Method::ConnectionClose(close) => {
                    return Err(Error::ConnectionClosed {
                        code: close.reply_code,
                        text: close.reply_text.to_string(),
                    })
                }
                Method::ChannelClose(close) => {
                    return Err(Error::Channel {
                        code: close.reply_code,
                        text: close.reply_text.to_string(),
                        during: "basic.publish".into(),
                    })
                }
                _ => {}
            }
        }
        Ok(false)
    }
}

impl ConfirmReader {
    /// Ends a blocked spell, if one is on, adding its length to the meter.
    fn unblocked(&mut self, now: u64) {
        if let Some(since) = self.blocked_since_ns.take() {
            Meter::add(&self.shared.meter.blocked_ns, now.saturating_sub(since));
        }
    }
}

/// Applies a basic.ack or basic.nack; delivery tags count from 1.
fn settle(
    window: &ConfirmWindow,
    tag: u64,
    multiple: bool,
    ack: bool,
    now: u64,
    latencies: &mut Vec<u64>,
) -> u64 {
    let Some(sequence) = tag.checked_sub(1) else {
        return 0;
    };
    let from = if multiple {
        window.floor.load(Ordering::Acquire)
    } else {
        sequence
    };
    window.settle(from, sequence, ack, now, latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(window: &ConfirmWindow, sent: &mut u64, n: u64) {
        for sequence in *sent..*sent + n {
            window
                .slot(sequence)
                .store(1000 + sequence, Ordering::Relaxed);
        }
        *sent += n;
        window.outstanding.fetch_add(n, Ordering::AcqRel);
        window.published.store(*sent, Ordering::Release);
    }

    #[test]
    fn a_confirm_window_fills_and_reopens_as_confirms_arrive() {
        let window = ConfirmWindow::new(4);
        let mut sent = 0;
        let mut latencies = Vec::new();
        assert_eq!(window.room(sent), 4);
        publish(&window, &mut sent, 4);
        assert_eq!(window.room(sent), 0);
        assert_eq!(settle(&window, 2, true, true, 2000, &mut latencies), 2);
        assert_eq!(latencies, [1000, 999]);
        assert_eq!(window.room(sent), 2);
        assert_eq!(window.floor.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn out_of_order_confirms_are_counted_once_and_hold_the_floor() {
        let window = ConfirmWindow::new(4);
        let (mut sent, mut latencies) = (0, Vec::new());
        publish(&window, &mut sent, 4);
        assert_eq!(settle(&window, 3, false, true, 2000, &mut latencies), 1);
        assert_eq!(window.floor.load(Ordering::Relaxed), 0);
        assert_eq!(settle(&window, 4, true, false, 2000, &mut latencies), 3);
        assert_eq!(window.nacked.load(Ordering::Relaxed), 3);
        assert_eq!(window.outstanding.load(Ordering::Relaxed), 0);
        assert_eq!(window.floor.load(Ordering::Relaxed), 4);
        assert_eq!(
            settle(&window, 9, false, true, 2000, &mut latencies),
            0,
            "unpublished tag"
        );
    }
}
