//! A client that speaks AMQP frames by hand over a blocking `TcpStream`,
//! built on warren's own codec: for the protocol corners no real client
//! reaches (bad frames, out-of-order content) and for what real clients hide
//! (lapin does not expose the server properties of connection.start).
//!
//! Invariants: every read has a deadline (`READ_TIMEOUT`); a read that gives
//! nothing in time fails the test instead of hanging it.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use warren::protocol::frame::{decode_frame, encode_method, Frame, FrameType, PROTOCOL_HEADER};
use warren::protocol::method::{
    ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionStart,
    ConnectionStartOk, ConnectionTuneOk, Method,
};
use warren::protocol::reply_code;
use warren::protocol::types::{FieldTable, FieldValue, LongStr};

/// Upper bound for any one read from the broker.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that speaks frames by hand.
pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read but not yet split into frames.
    read_buffer: BytesMut,
    /// The frame_max both sides agreed on in the handshake; 0 before it.
    pub frame_max: u32,
}

/// What `RawClient::open_with` negotiates.
#[derive(Default)]
pub struct Options {
    /// Heartbeat interval asked for; 0 turns heartbeats off.
    pub heartbeat_s: u16,
    /// channel_max asked for in tune-ok; None takes the broker's.
    pub channel_max: Option<u16>,
    /// Announce the `consumer_cancel_notify` capability, so the broker
    /// sends basic.cancel when a consumed queue goes away.
    pub consumer_cancel_notify: bool,
}

impl Options {
    fn client_properties(&self) -> FieldTable {
        let mut properties = FieldTable::new();
        if self.consumer_cancel_notify {
            let mut capabilities = FieldTable::new();
            capabilities.insert("consumer_cancel_notify", FieldValue::Bool(true));
            properties.insert("capabilities", FieldValue::Table(capabilities));
        }
        properties
    }
}

/// What one read from the broker gave.
#[derive(Debug)]
pub enum Received {
    Frame(Frame),
    /// The broker closed the socket (EOF or reset).
    Closed,
}

impl RawClient {
    /// A TCP connection to `addr` on which nothing is sent yet.
    pub fn connect(addr: &str) -> RawClient {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|error| panic!("connect {addr}: {error}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            read_buffer: BytesMut::new(),
            frame_max: 0,
        }
    }

    /// Sends the protocol header and returns the broker's connection.start.
    pub fn start(addr: &str) -> (RawClient, ConnectionStart) {
        let mut client = RawClient::connect(addr);
        client.send_bytes(&PROTOCOL_HEADER);
        let Method::ConnectionStart(start) = client.expect_method(0) else {
            panic!("expected connection.start");
        };
        (client, start)
    }

    /// A connection through connection.open-ok on vhost "/", as guest with
    /// PLAIN, at the broker's frame_max and with heartbeats off.
    pub fn open(addr: &str) -> RawClient {
        RawClient::open_with_heartbeat(addr, 0)
    }

    /// Like `open`, asking for heartbeats every `heartbeat_s` seconds.
    pub fn open_with_heartbeat(addr: &str, heartbeat_s: u16) -> RawClient {
        RawClient::open_with(
            addr,
            Options {
                heartbeat_s,
                ..Options::default()
            },
        )
    }

    /// A connection through connection.open-ok as `options` ask.
    pub fn open_with(addr: &str, options: Options) -> RawClient {
        let (mut client, start) = RawClient::start(addr);
        assert!(
            start
                .mechanisms
                .as_bytes()
                .split(|&octet| octet == b' ')
                .any(|mechanism| mechanism == b"PLAIN"),
            "the broker offers PLAIN"
        );
        client.send_method(
            0,
            ConnectionStartOk {
                client_properties: options.client_properties(),
                mechanism: "PLAIN".into(),
                response: LongStr::from("\0guest\0guest"),
                locale: "en_US".into(),
            },
        );
        let Method::ConnectionTune(tune) = client.expect_method(0) else {
            panic!("expected connection.tune");
        };
        client.frame_max = tune.frame_max;
        client.send_method(
            0,
            ConnectionTuneOk {
                channel_max: options.channel_max.unwrap_or(tune.channel_max),
                frame_max: tune.frame_max,
                heartbeat: options.heartbeat_s,
            },
        );
        client.send_method(
            0,
            ConnectionOpen {
                virtual_host: "/".into(),
                ..Default::default()
            },
        );
        let Method::ConnectionOpenOk(_) = client.expect_method(0) else {
            panic!("expected connection.open-ok");
        };
        client
    }

    /// An open connection with channel 1 open.
    pub fn open_with_channel(addr: &str) -> RawClient {
        let mut client = RawClient::open(addr);
        client.open_channel(1);
        client
    }

    pub fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, ChannelOpen::default());
        let Method::ChannelOpenOk(_) = self.expect_method(channel) else {
            panic!("expected channel.open-ok on channel {channel}");
        };
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to broker");
    }

    pub fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &method.into());
        self.send_bytes(&out);
    }

    /// Every octet the broker sends until it closes the socket. RabbitMQ
    /// closes with SO_LINGER 0, so a reset counts as the close.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = std::mem::take(&mut self.read_buffer).to_vec();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return received,
                Ok(read) => received.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return received,
                Err(error) => panic!("read from broker (deadline {READ_TIMEOUT:?}): {error}"),
            }
        }
    }

    /// Reads the next frame, or learns that the broker closed the socket.
    pub fn receive(&mut self) -> Received {
        loop {
            match decode_frame(&mut self.read_buffer, 0) {
                Ok(Some(frame)) => return Received::Frame(frame),
                Ok(None) => {}
                Err(error) => panic!("the broker sent a malformed frame: {error}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Received::Closed,
                Ok(read) => self.read_buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                    return Received::Closed
                }
                Err(error) => panic!("read from broker (deadline {READ_TIMEOUT:?}): {error}"),
            }
        }
    }

    /// The next frame, which must be a method on `channel`.
    pub fn expect_method(&mut self, channel: u16) -> Method {
        match self.receive() {
            Received::Frame(frame) if frame.frame_type == FrameType::Method => {
                assert_eq!(frame.channel, channel, "the channel the method came on");
                Method::decode(frame.payload).expect("the broker sent a decodable method")
            }
            other => panic!("expected a method on channel {channel}, got {other:?}"),
        }
    }

    /// Expects the broker's connection.close with `code` and the failing
    /// method's `(class_id, method_id)`, and a reply text that starts with
    /// the code's name; answers close-ok, then expects the socket to close.
    pub fn expect_connection_close(&mut self, code: u16, ids: (u16, u16)) -> ConnectionClose {
        let Method::ConnectionClose(close) = self.expect_method(0) else {
            panic!("expected connection.close");
        };
        assert_eq!(
            (close.reply_code, close.class_id, close.method_id),
            (code, ids.0, ids.1),
            "reply code, class id, method id of {close:?} (text {:?})",
            close.reply_text.to_str_lossy()
        );
        let name = reply_code::name(code);
        assert!(
            close.reply_text.as_bytes().starts_with(name.as_bytes()),
            "reply text {:?} starts with {name}",
            close.reply_text.to_str_lossy()
        );
        // The broker may have closed the socket before our close-ok arrives.
        let _ = self.stream.write_all(&close_ok_frame());
        self.expect_socket_closed();
        close
    }

    /// The broker must close the socket without sending anything more.
    pub fn expect_socket_closed(&mut self) {
        match self.receive() {
            Received::Closed => {}
            Received::Frame(frame) => panic!("expected the socket to close, got {frame:?}"),
        }
    }

    /// A polite close from the client side, answered with close-ok.
    pub fn close(mut self) {
        self.send_method(
            0,
            ConnectionClose {
                reply_code: reply_code::REPLY_SUCCESS,
                reply_text: "bye".into(),
                ..Default::default()
            },
        );
        let Method::ConnectionCloseOk(_) = self.expect_method(0) else {
            panic!("expected connection.close-ok");
        };
    }
}

pub fn close_ok_frame() -> BytesMut {
    let mut out = BytesMut::new();
    encode_method(&mut out, 0, &ConnectionCloseOk {}.into());
    out
}

/// Frames a raw payload with any type octet, channel and end octet.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(u32::try_from(payload.len()).expect("payload under 4 GiB"));
    out.put_slice(payload);
    out.put_u8(end);
    out
}
