//! A small blocking AMQP 0-9-1 client over `std::net`, built on warren's
//! protocol codec: the handshake, synchronous requests for the control
//! plane, and frame-level reading and writing for the data plane.
//!
//! It owns nothing beyond one TCP connection and its two buffers. The data
//! plane (publishing, consuming) lives in `producer` and `consumer`, which
//! take the socket over after setup; this module does not know about them.
//!
//! Every failure becomes an [`Error`] whose `Display` is one line a user can
//! act on: which address refused, which login was refused, which request the
//! broker closed the channel for.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use socket2::{Domain, Protocol, Socket, Type};
use warren::protocol::frame::{self, Frame, FrameType, PROTOCOL_HEADER};
use warren::protocol::method::{
    ChannelOpen, ConnectionClose, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, Method,
};
use warren::protocol::types::{FieldTable, FieldValue, LongStr, ShortStr};
use warren::protocol::{reply_code, DecodeError};

use crate::uri::AmqpUri;

/// How long connecting and each step of the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for connection.close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest frame we ask for; RabbitMQ's default.
pub const FRAME_MAX: u32 = 131_072;
/// Read buffer size: big enough that a read syscall picks up many frames.
pub const READ_CHUNK: usize = 256 * 1024;

/// Everything that ends a run early, each with its one-line explanation.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line input, including a bad URI (exit status 2).
    Usage(String),
    /// TCP connect failed: refused, unreachable, unresolvable.
    Connect { address: String, source: io::Error },
    /// The broker answered the login with connection.close.
    LoginRefused {
        address: String,
        user: String,
        code: u16,
        text: String,
    },
    /// The socket closed during the handshake, which is how a broker may
    /// refuse a login without saying why.
    HandshakeClosed { address: String, user: String },
    /// The broker closed the connection after the handshake.
    ConnectionClosed { code: u16, text: String },
    /// The broker closed a channel because of a request we made.
    Channel {
        code: u16,
        text: String,
        during: String,
    },
    /// A socket error or an unexpected end of stream after setup.
    Io { during: String, source: io::Error },
    /// The broker sent something we cannot read.
    Protocol(String),
}

impl Error {
    /// Exit status: 2 for what the user typed, 1 for what happened.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn io(during: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let during = during.into();
        move |source| Error::Io { during, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => f.write_str(text),
            Error::Connect { address, source } => {
                write!(f, "cannot connect to {address}: {source}")
            }
            Error::LoginRefused {
                address,
                user,
                code,
                text,
            } => write!(
                f,
                "{address} refused the connection for user '{user}': {code} {text}"
            ),
            Error::HandshakeClosed { address, user } => write!(
                f,
                "{address} closed the connection during the handshake \
                 (wrong user '{user}' or password, or no access to the vhost?)"
            ),
            Error::ConnectionClosed { code, text } => {
                write!(f, "the broker closed the connection: {code} {text}")
            }
            Error::Channel { code, text, during } => {
                write!(
                    f,
                    "the broker closed the channel on {during}: {code} {text}"
                )
            }
            Error::Io { during, source } => write!(f, "{during}: {source}"),
            Error::Protocol(text) => write!(f, "protocol error: {text}"),
        }
    }
}

impl From<DecodeError> for Error {
    fn from(error: DecodeError) -> Error {
        Error::Protocol(format!("{error:?}"))
    }
}

/// The handshake's steps, client side, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    Start,
    Tune,
    OpenOk,
}

/// One open AMQP connection with its buffers.
pub struct Connection {
    pub stream: TcpStream,
    pub read_buf: BytesMut,
    pub write_buf: BytesMut,
    /// As negotiated in connection.tune.
    pub frame_max: u32,
    pub channel_max: u16,
}

impl Connection {
    /// Connects and completes the handshake; `name` shows up in the
    /// broker's connection list.
    pub fn open(uri: &AmqpUri, name: &str) -> Result<Connection, Error> {
        Connection::open_from(uri, name, None)
    }

    /// As [`Connection::open`], from `local_port` if given.
    pub fn open_from(
        uri: &AmqpUri,
        name: &str,
        local_port: Option<u16>,
    ) -> Result<Connection, Error> {
        let address = uri.address();
        let stream = connect(&address, local_port)?;
        stream
            .set_nodelay(true)
            .map_err(Error::io("set TCP_NODELAY"))?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(Error::io("set a read timeout"))?;
        let mut connection = Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(64 * 1024),
            frame_max: FRAME_MAX,
            channel_max: u16::MAX,
        };
        connection.handshake(uri, name)?;
        connection
            .stream
            .set_read_timeout(None)
            .map_err(Error::io("clear the read timeout"))?;
        Ok(connection)
    }

    fn handshake(&mut self, uri: &AmqpUri, name: &str) -> Result<(), Error> {
        let closed = || Error::HandshakeClosed {
            address: uri.address(),
            user: uri.user.clone(),
        };
        self.write_buf.extend_from_slice(&PROTOCOL_HEADER);
        self.flush()?;
        let mut step = Awaiting::Start;
        loop {
            let method = match self.read_method(0) {
                Ok(method) => method,
                Err(Error::Io { source, .. }) if is_closed(&source) => return Err(closed()),
                Err(error) => return Err(error),
            };
            step = match (step, method) {
                (_, Method::ConnectionClose(close)) => {
                    return Err(Error::LoginRefused {
                        address: uri.address(),
                        user: uri.user.clone(),
                        code: close.reply_code,
                        text: close.reply_text.to_string(),
                    })
                }
                (Awaiting::Start, Method::ConnectionStart(start)) => {
                    if !start
                        .mechanisms
                        .as_bytes()
                        .split(|&b| b == b' ')
                        .any(|m| m == b"PLAIN")
                    {
                        return Err(Error::Protocol(
                            "the broker does not offer PLAIN login".into(),
                        ));
                    }
                    self.send(0, &start_ok(uri, name))?;
                    Awaiting::Tune
                }
                (Awaiting::Tune, Method::ConnectionTune(tune)) => {
                    self.frame_max = negotiate(tune.frame_max, FRAME_MAX);
                    self.channel_max = if tune.channel_max == 0 {
                        u16::MAX
                    } else {
                        tune.channel_max
                    };
                    // Heartbeats off: a load generator's connections are
                    // never idle long enough for a broker to need them, and
                    // the idle connections of a memory test should cost the
                    // broker nothing but their state.
                    let tune_ok = ConnectionTuneOk {
                        channel_max: self.channel_max,
                        frame_max: self.frame_max,
                        heartbeat: 0,
                    };
                    self.send(0, &tune_ok.into())?;
                    let open = ConnectionOpen {
                        virtual_host: ShortStr::from(uri.vhost.as_str()),
                        ..ConnectionOpen::default()
                    };
                    self.send(0, &open.into())?;
                    Awaiting::OpenOk
                }
                (Awaiting::OpenOk, Method::ConnectionOpenOk(_)) => return Ok(()),
                (step, other) => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} during the handshake ({step:?})",
                        other.name()
                    )))
                }
            };
        }
    }

    /// Opens `channel` and waits for channel.open-ok.
    pub fn open_channel(&mut self, channel: u16) -> Result<(), Error> {
        self.call(channel, ChannelOpen::default().into()).map(drop)
    }

    /// Sends a synchronous request and returns the broker's reply.
    pub fn call(&mut self, channel: u16, request: Method) -> Result<Method, Error> {
        let mut replies = self.call_many(channel, std::iter::once(request))?;
        Ok(replies.pop().expect("one request has one reply"))
    }

    /// Pipelines synchronous requests (bindings by the thousand) and
    /// returns their replies in order.
    pub fn call_many(
        &mut self,
        channel: u16,
        requests: impl IntoIterator<Item = Method>,
    ) -> Result<Vec<Method>, Error> {
        /// Requests in flight at once: bounds what the broker must buffer.
        const PIPELINE_DEPTH: usize = 512;
        let mut names = Vec::new();
        let mut replies = Vec::new();
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            for request in requests.by_ref().take(PIPELINE_DEPTH) {
                names.push(request.name());
                frame::encode_method(&mut self.write_buf, channel, &request);
            }
            self.flush()?;
            while replies.len() < names.len() {
                match self.read_method(channel) {
                    Ok(reply) => replies.push(reply),
                    Err(Error::Channel { code, text, .. }) => {
                        let during = names[replies.len()].to_owned();
                        return Err(Error::Channel { code, text, during });
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(replies)
    }

    /// Queues a method frame for the next flush.
    pub fn send(&mut self, channel: u16, method: &Method) -> Result<(), Error> {
        frame::encode_method(&mut self.write_buf, channel, method);
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        self.stream
            .write_all(&self.write_buf)
            .map_err(Error::io("write to the broker"))?;
        self.write_buf.clear();
        Ok(())
    }

    /// Writes the whole buffer on a socket with a write timeout, asking
    /// `give_up` each time a write times out. A broker that blocks a
    /// publisher (connection.blocked) stops reading its socket, so one
    /// write may wait as long as the broker holds it back.
    pub fn flush_patiently(&mut self, mut give_up: impl FnMut() -> bool) -> Result<(), Error> {
        let mut written = 0;
        while written < self.write_buf.len() {
            match self.stream.write(&self.write_buf[written..]) {
                Ok(0) => {
                    return Err(Error::io("write to the broker")(
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if give_up() {
                        return Err(Error::Io {
                            during: "write to the broker".into(),
                            source: io::Error::new(
                                io::ErrorKind::TimedOut,
                                "it stopped reading this connection (connection.blocked?) \
                                 and did not resume in time",
                            ),
                        });
                    }
                }
                Err(e) => return Err(Error::io("write to the broker")(e)),
            }
        }
        self.write_buf.clear();
        Ok(())
    }

    /// Reads the next method on `channel` (or a close on channel 0),
    /// turning the broker's closes into errors. Content and heartbeats are
    /// skipped: they do not occur on a connection during its setup.
    fn read_method(&mut self, channel: u16) -> Result<Method, Error> {
        loop {
            let frame = self.read_frame()?;
            if frame.frame_type != FrameType::Method {
                continue;
            }
            match Method::decode(frame.payload)? {
                Method::ConnectionClose(close) if channel != 0 => {
                    return Err(Error::ConnectionClosed {
                        code: close.reply_code,
                        text: close.reply_text.to_string(),
                    })
                }
                Method::ChannelClose(close) if frame.channel == channel => {
                    return Err(Error::Channel {
                        code: close.reply_code,
                        text: close.reply_text.to_string(),
                        during: String::new(),
                    })
                }
                method if frame.channel == channel => return Ok(method),
                _ => {}
            }
        }
    }

    /// Sends connection.close, and bounds how long any reader of this
    /// socket then waits for close-ok.
    pub fn send_close(&mut self) -> Result<(), Error> {
        self.queue_close()?;
        self.flush()
    }

    /// Queues connection.close for the next flush, and bounds how long a
    /// read of this socket that starts from now on waits for close-ok.
    pub fn queue_close(&mut self) -> Result<(), Error> {
        self.stream
            .set_read_timeout(Some(CLOSE_TIMEOUT))
            .map_err(Error::io("set a read timeout"))?;
        let close = ConnectionClose {
            reply_code: reply_code::REPLY_SUCCESS,
            reply_text: ShortStr::from_static("loadgen done"),
            ..ConnectionClose::default()
        };
        frame::encode_method(&mut self.write_buf, 0, &close.into());
        Ok(())
    }

    /// Reads one whole frame, blocking.
    pub fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some(frame) = frame::decode_frame(&mut self.read_buf, self.frame_max)? {
                return Ok(frame);
            }
            fill(&mut self.stream, &mut self.read_buf)
                .map_err(Error::io("read from the broker"))?;
        }
    }

    /// Sends connection.close and waits (briefly) for close-ok, so that the
    /// broker logs a clean close rather than a dropped socket.
    pub fn close(mut self) {
        if self.send_close().is_err() {
            return;
        }
        while let Ok(frame) = self.read_frame() {
            if frame.frame_type == FrameType::Method
                && matches!(
                    Method::decode(frame.payload),
                    Ok(Method::ConnectionCloseOk(_))
                )
            {
                return;
            }
        }
    }
}

fn connect(address: &str, local_port: Option<u16>) -> Result<TcpStream, Error> {
    let failed = |source| Error::Connect {
        address: address.to_owned(),
        source,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found for the host");
    for socket_address in address.to_socket_addrs().map_err(failed)? {
        let connected = match local_port {
            None => TcpStream::connect_timeout(&socket_address, HANDSHAKE_TIMEOUT),
            Some(port) => connect_from(socket_address, port),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(failed(last))
}

/// Connects from a chosen local port, on the unspecified address of the
/// peer's family.
fn connect_from(peer: SocketAddr, port: u16) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a port whose last connection is in TIME_WAIT be bound again.
    socket.set_reuse_address(true)?;
    let local = match peer {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
    };
    socket.bind(&local.into())?;
    socket.connect_timeout(&peer.into(), HANDSHAKE_TIMEOUT)?;
    Ok(socket.into())
}

fn start_ok(uri: &AmqpUri, name: &str) -> Method {
    let mut capabilities = FieldTable::new();
    for capability in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "connection.blocked",
    ] {
        capabilities.insert(capability, FieldValue::Bool(true));
    }
    let mut client_properties = FieldTable::new();
    client_properties.insert("product", long_str("warren loadgen"));
    client_properties.insert("version", long_str(env!("CARGO_PKG_VERSION")));
    client_properties.insert("connection_name", long_str(name));
    client_properties.insert("capabilities", FieldValue::Table(capabilities));
    let mut response = Vec::with_capacity(2 + uri.user.len() + uri.password.len());
    response.push(0);
    response.extend_from_slice(uri.user.as_bytes());
    response.push(0);
    response.extend_from_slice(uri.password.as_bytes());
    ConnectionStartOk {
        client_properties,
        mechanism: ShortStr::from_static("PLAIN"),
        response: LongStr::from_bytes(Bytes::from(response)),
        locale: ShortStr::from_static("en_US"),
    }
    .into()
}

fn long_str(text: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from_bytes(Bytes::copy_from_slice(text.as_bytes())))
}

/// The smaller of two limits where 0 means none.
fn negotiate(server: u32, client: u32) -> u32 {
    match (server, client) {
        (0, limit) | (limit, 0) => limit,
        (server, client) => server.min(client),
    }
}

/// Reads once into the spare capacity of `buf`, growing it if needed; an
/// end of stream is an `UnexpectedEof` error.
pub fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let start = buf.len();
    // Zero-filling the spare capacity costs a memset per read, which is
    // cheap next to the syscall and keeps this free of `unsafe`.
    buf.resize(start + READ_CHUNK, 0);
    let read = stream.read(&mut buf[start..]);
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    match read? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}

/// A read or write that ran into the socket's timeout.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
