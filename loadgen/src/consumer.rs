//! Consuming: one thread per connection, reading and acking for every
//! consumer channel on it.
//!
//! Each read syscall brings many frames; they are decoded in place (method
//! arguments and bodies are views into the read buffer), the stamps read,
//! latencies recorded with the one timestamp taken when the read returned,
//! and the acks the batch calls for written back with one syscall. Only the
//! first 16 body octets of a message are looked at.
//!
//! With a start delay, consumers connect and set their prefetch at once but
//! subscribe only that long after publishing starts, all in one write
//! without waiting for the replies, so deliveries on one channel are never
//! read past while another waits for its consume-ok.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::protocol::frame::{self, FrameType};
use warren::protocol::method::{BasicAck, BasicConsume, BasicQos, Method};
use warren::protocol::properties::ContentHeader;
use warren::protocol::types::ShortStr;

use crate::amqp::{self, Connection, Error};
use crate::meter::Meter;
use crate::shared::Shared;
use crate::stamp::{now_ns, Stamp, STAMP_SIZE};
use crate::tracker::ConsumerTracker;
use crate::uri::AmqpUri;

/// How often a consumer blocked in a read looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct ConsumeSettings {
    pub run_id: u32,
    pub auto_ack: bool,
    /// Ack with multiple=true every this many messages; 1 acks each.
    pub ack_every: u64,
    pub prefetch: u16,
    pub producer_count: usize,
    /// How long after publishing starts the consumers subscribe.
    pub start_after: Duration,
}

#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub consumer: usize,
    pub channel: u16,
    pub queue: String,
    pub queue_index: usize,
}

/// Where a channel is in the method, header, body sequence of a delivery.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Deliver,
    Header {
        delivery_tag: u64,
    },
    Body {
        delivery_tag: u64,
        remaining: u64,
        stamp: [u8; STAMP_SIZE],
        stamp_len: usize,
    },
}

struct ConsumeChannel {
    spec: ConsumerSpec,
    delivery: Expect,
    unacked: u64,
    tracker: ConsumerTracker,
}

/// Opens a consumer connection and its consumers, reports readiness, and
/// consumes until told to stop; returns each consumer's tracker.
pub fn run_connection(
    uri: &AmqpUri,
    local_port: Option<u16>,
    specs: Vec<ConsumerSpec>,
    settings: &ConsumeSettings,
    shared: &Arc<Shared>,
    ready: Sender<()>,
) -> Vec<ConsumerTracker> {
    let name = format!(
        "loadgen consumers {}",
        specs.first().map_or(0, |s| s.consumer)
    );
    let late = !settings.start_after.is_zero();
    let setup = Connection::open_from(uri, &name, local_port).and_then(|mut connection| {
        let channels = open_channels(&mut connection, specs, settings)?;
        if !late {
            for channel in &channels {
                connection.call(
                    channel.spec.channel,
                    consume_method(&channel.spec, settings),
                )?;
            }
        }
        Ok((connection, channels))
    });
    let _ = ready.send(());
    let (mut connection, mut channels) = match setup {
        Ok(started) => started,
        Err(error) => {
            shared.fail(error);
            return Vec::new();
        }
    };
    // Consumers read from the moment consume-ok arrives, before the gate:
    // a pre-filled queue starts delivering at once, and that is fine.
    let subscribed = if late {
        subscribe_late(&mut connection, &channels, settings, shared)
    } else {
        Ok(true)
    };
    let consumed = subscribed.and_then(|go| match go {
        true => consume(&mut connection, &mut channels, settings, shared),
        false => Ok(()),
    });
    if let Err(error) = consumed {
        shared.fail(error);
    }
    connection.close();
    channels.into_iter().map(|c| c.tracker).collect()
}

/// Waits for the gate and then `start_after`, and subscribes every channel
/// in one write; false if the run ended first.
fn subscribe_late(
    connection: &mut Connection,
    channels: &[ConsumeChannel],
    settings: &ConsumeSettings,
    shared: &Shared,
) -> Result<bool, Error> {
    if !shared.wait_gate() {
        return Ok(false);
    }
    let start = Instant::now() + settings.start_after;
    while Instant::now() < start {
        if shared.stopping_consumers() {
            return Ok(false);
        }
        std::thread::sleep(STOP_POLL.min(start.saturating_duration_since(Instant::now())));
    }
    for channel in channels {
        let method = consume_method(&channel.spec, settings);
        frame::encode_method(&mut connection.write_buf, channel.spec.channel, &method);
    }
    connection.flush()?;
    Ok(true)
}

fn consume_method(spec: &ConsumerSpec, settings: &ConsumeSettings) -> Method {
    BasicConsume {
        queue: ShortStr::from(spec.queue.as_str()),
        consumer_tag: ShortStr::from(format!("loadgen-{}", spec.consumer)),
        no_ack: settings.auto_ack,
        ..BasicConsume::default()
    }
    .into()
}

fn open_channels(
    connection: &mut Connection,
    specs: Vec<ConsumerSpec>,
    settings: &ConsumeSettings,
) -> Result<Vec<ConsumeChannel>, Error> {
    let mut channels = Vec::with_capacity(specs.len());
    for spec in specs {
        connection.open_channel(spec.channel)?;
        if settings.prefetch > 0 {
            let qos = BasicQos {
                prefetch_count: settings.prefetch,
                ..BasicQos::default()
            };
            connection.call(spec.channel, qos.into())?;
        }
        let tracker = ConsumerTracker::new(spec.queue_index, settings.producer_count);
        channels.push(ConsumeChannel {
            spec,
            delivery: Expect::Deliver,
            unacked: 0,
            tracker,
        });
    }
    Ok(channels)
}

fn consume(
    connection: &mut Connection,
    channels: &mut [ConsumeChannel],
    settings: &ConsumeSettings,
    shared: &Shared,
) -> Result<(), Error> {
    connection
        .stream
        .set_read_timeout(Some(STOP_POLL))
        .map_err(Error::io("set a read timeout"))?;
    let mut latencies = Vec::with_capacity(4096);
    // Deliveries may have come in one read with consume-ok: with a full
    // prefetch window nothing more arrives until they are handled and acked.
    handle_buffered(connection, channels, settings, shared, &mut latencies)?;
    while !shared.stopping_consumers() {
        match amqp::fill(&mut connection.stream, &mut connection.read_buf) {
            Ok(_) => {}
            Err(error) if amqp::is_timeout(&error) => continue,
            Err(error) if shared.stopping_consumers() && amqp::is_closed(&error) => return Ok(()),
            Err(source) => {
                return Err(Error::Io {
                    during: "read from the broker".into(),
                    source,
                })
            }
        }
        handle_buffered(connection, channels, settings, shared, &mut latencies)?;
    }
    Ok(())
}

/// Handles what has been read so far, with the one timestamp of the read
/// that brought it, and writes the acks it calls for.
fn handle_buffered(
    connection: &mut Connection,
    channels: &mut [ConsumeChannel],
    settings: &ConsumeSettings,
    shared: &Shared,
    latencies: &mut Vec<u64>,
) -> Result<(), Error> {
    let now = now_ns();
    let received = handle_frames(connection, channels, settings, now, latencies)?;
    shared.meter.latency.record_ns(latencies);
    Meter::add(&shared.meter.received, received);
    if !connection.write_buf.is_empty() {
        connection.flush()?;
    }
    Ok(())
}

/// Handles every whole frame read so far, queueing acks; returns the
/// number of messages completed.
fn handle_frames(
    connection: &mut Connection,
    channels: &mut [ConsumeChannel],
    settings: &ConsumeSettings,
    now: u64,
    latencies: &mut Vec<u64>,
) -> Result<u64, Error> {
    let mut received = 0;
    while let Some(frame) = frame::decode_frame(&mut connection.read_buf, connection.frame_max)? {
        let Some(channel) = usize::from(frame.channel)
            .checked_sub(1)
            .and_then(|i| channels.get_mut(i))
        else {
            if frame.frame_type == FrameType::Method {
                check_connection_method(Method::decode(frame.payload)?)?;
            }
            continue;
        };
        let completed = match frame.frame_type {
            FrameType::Method => channel.on_method(Method::decode(frame.payload)?)?,
            FrameType::Header => channel.on_header(frame.payload)?,
            FrameType::Body => channel.on_body(&frame.payload)?,
            FrameType::Heartbeat => None,
        };
        let Some((delivery_tag, stamp)) = completed else {
            continue;
        };
        received += 1;
        match Stamp::read(&stamp).filter(|s| s.run == Stamp::run_of(settings.run_id)) {
            Some(stamp) => {
                latencies.push(now.saturating_sub(stamp.sent_ns));
                channel.tracker.record(stamp.producer, stamp.sequence);
            }
            None => channel.tracker.foreign += 1,
        }
        if !settings.auto_ack {
            channel.unacked += 1;
            if channel.unacked >= settings.ack_every {
                let ack = BasicAck {
                    delivery_tag,
                    multiple: settings.ack_every > 1,
                };
                frame::encode_method(&mut connection.write_buf, channel.spec.channel, &ack.into());
                channel.unacked = 0;
            }
        }
    }
    Ok(received)
}

fn check_connection_method(method: Method) -> Result<(), Error> {
    match method {
        Method::ConnectionClose(close) => Err(Error::ConnectionClosed {
            code: close.reply_code,
            text: close.reply_text.to_string(),
        }),
        _ => Ok(()),
    }
}

impl ConsumeChannel {
    fn on_method(&mut self, method: Method) -> Result<Option<(u64, [u8; STAMP_SIZE])>, Error> {
        match method {
            Method::BasicDeliver(deliver) => {
                self.delivery = Expect::Header {
                    delivery_tag: deliver.delivery_tag,
                };
                Ok(None)
            }
            Method::BasicCancel(_) => Err(Error::Channel {
                code: 0,
                text: format!(
                    "the broker cancelled the consumer of queue '{}'",
                    self.spec.queue
                ),
                during: "basic.consume".into(),
            }),
            Method::ChannelClose(close) => Err(Error::Channel {
                code: close.reply_code,
                text: close.reply_text.to_string(),
                during: format!("consuming from queue '{}'", self.spec.queue),
            }),
            _ => Ok(None),
        }
    }

    fn on_header(&mut self, payload: Bytes) -> Result<Option<(u64, [u8; STAMP_SIZE])>, Error> {
        let Expect::Header { delivery_tag } = self.delivery else {
            return Err(Error::Protocol(
                "content header without basic.deliver".into(),
            ));
        };
        let header = ContentHeader::decode(payload)?;
        self.delivery = Expect::Body {
            delivery_tag,
            remaining: header.body_size,
            stamp: [0; STAMP_SIZE],
            stamp_len: 0,
        };
        // An empty body has no body frame; it cannot carry a stamp.
        Ok(self.complete_if_whole())
    }

    fn on_body(&mut self, payload: &[u8]) -> Result<Option<(u64, [u8; STAMP_SIZE])>, Error> {
        let Expect::Body {
            remaining,
            stamp,
            stamp_len,
            ..
        } = &mut self.delivery
        else {
            return Err(Error::Protocol(
                "body frame without a content header".into(),
            ));
        };
        let take = (STAMP_SIZE - *stamp_len).min(payload.len());
        stamp[*stamp_len..*stamp_len + take].copy_from_slice(&payload[..take]);
        *stamp_len += take;
        *remaining = remaining.saturating_sub(payload.len() as u64);
        Ok(self.complete_if_whole())
    }

    fn complete_if_whole(&mut self) -> Option<(u64, [u8; STAMP_SIZE])> {
        match self.delivery {
            Expect::Body {
                delivery_tag,
                remaining: 0,
                stamp,
                ..
            } => {
                self.delivery = Expect::Deliver;
                Some((delivery_tag, stamp))
            }
            _ => None,
        }
    }
}
