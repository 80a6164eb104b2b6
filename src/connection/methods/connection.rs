//! The connection class, on channel 0: establishment as RabbitMQ does it
//! (start with server properties, capabilities and mechanisms; start-ok
//! with PLAIN or AMQPLAIN; tune / tune-ok negotiation; open), heartbeats
//! for the life of the connection, and the client's connection.close.

use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::catalog::MetaOp;
use crate::config::Config;
use crate::connection::requests::{Awaiting, MetaOk};
use crate::connection::{Connection, Next, Phase};
use crate::protocol::frame::FRAME_MIN_SIZE;
use crate::protocol::method::*;
use crate::protocol::{AmqpError, FieldTable, FieldValue, LongStr, ShortStr};
use crate::runtime;

/// The connection's negotiated limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tune {
    pub(crate) channel_max: u16,
    pub(crate) frame_max: u32,
    pub(crate) heartbeat_s: u16,
}

impl Tune {
    /// What connection.tune offers, from the configuration.
    pub(crate) fn offered(config: &Config) -> Tune {
        Tune {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat_s: config.heartbeat_s,
        }
    }
}

/// RabbitMQ's capabilities: every client checks some of these.
const CAPABILITIES: [&str; 9] = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

pub(in crate::connection) fn start_method(_config: &Config) -> Method {
    let mut capabilities = FieldTable::new();
    for name in CAPABILITIES {
        capabilities.insert(name, FieldValue::Bool(true));
    }
    let mut properties = FieldTable::new();
    let text = |s: &str| FieldValue::LongStr(LongStr::from(s));
    properties.insert("product", text("warren"));
    properties.insert("version", text(env!("CARGO_PKG_VERSION")));
    properties.insert("platform", text("Rust"));
    properties.insert(
        "information",
        text("An AMQP 0-9-1 broker, wire-compatible with RabbitMQ; see README.md"),
    );
    properties.insert("copyright", text("The warren developers"));
    properties.insert("capabilities", FieldValue::Table(capabilities));
    Method::ConnectionStart(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: properties,
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    })
}

impl Connection {
    /// Methods on channel 0: the handshake, then close.
    pub(in crate::connection) fn connection_method(self: &Rc<Self>, method: Method) -> Next {
        let phase = self.phase();
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let result = match (phase, method) {
            (Phase::AwaitStartOk, Method::ConnectionStartOk(start_ok)) => self.start_ok(start_ok),
            (Phase::AwaitTuneOk, Method::ConnectionTuneOk(tune_ok)) => self.tune_ok(tune_ok),
            (Phase::AwaitOpen, Method::ConnectionOpen(open)) => self.open(open),
            (Phase::Open, Method::ConnectionClose(_)) => return self.client_close(),
            (Phase::Open, Method::ConnectionUpdateSecret(_)) => {
                self.out.method(
                    0,
                    &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                );
                Ok(())
            }
            (Phase::Open, Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => Ok(()),
            (_, other) => Err(AmqpError::command_invalid(format!(
                "unexpected method {} on channel 0",
                other.name()
            ))),
        };
        match result {
            Ok(()) => Next::Continue,
            Err(err) => {
                self.close_connection(err, class_id, method_id);
                Next::Continue
            }
        }
    }

    /// The client closes: its exclusive queues go first (as in RabbitMQ, a
    /// client that sees close-ok can rely on them being gone), then
    /// close-ok, and the client closes the socket.
    fn client_close(&self) -> Next {
        let exclusive = std::mem::take(&mut self.state.borrow_mut().declared_exclusive);
        if !exclusive {
            self.out
                .method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}));
            self.state.borrow_mut().phase = Phase::ClosedByClient;
            return Next::Stop;
        }
        let awaiting = Awaiting::Meta {
            ok: MetaOk::ConnectionClose,
            class_method: (ConnectionClose::CLASS_ID, ConnectionClose::METHOD_ID),
        };
        self.state.borrow_mut().awaiting = Some((0, awaiting));
        let op = MetaOp::ConnectionClosed { conn: self.id };
        self.shard.request_meta(Some(self.channel_id(0)), op);
        Next::AwaitReply
    }

    fn start_ok(&self, start_ok: ConnectionStartOk) -> Result<(), AmqpError> {
        let mechanism = start_ok.mechanism.to_str_lossy().into_owned();
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => parse_plain(start_ok.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(start_ok.response.bytes()),
            _ => {
                return Err(AmqpError::command_invalid(format!(
                    "unknown authentication mechanism '{mechanism}'"
                )))
            }
        }
        .unwrap_or_default();
        if !self.authenticate(&user, &password) {
            tracing::warn!(peer = %self.peer, "login refused for user '{user}' ({mechanism})");
            return Err(AmqpError::access_refused(format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            )));
        }
        let properties = &start_ok.client_properties;
        let mut state = self.state.borrow_mut();
        state.user = ShortStr::from(user);
        state.consumer_cancel_notify = client_capability(properties, "consumer_cancel_notify");
        state.blocked_notify = client_capability(properties, "connection.blocked");
        state.phase = Phase::AwaitTuneOk;
        let tune = state.tune;
        drop(state);
        self.out.method(
            0,
            &Method::ConnectionTune(ConnectionTune {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: tune.heartbeat_s,
            }),
        );
        Ok(())
    }

    fn tune_ok(self: &Rc<Self>, tune_ok: ConnectionTuneOk) -> Result<(), AmqpError> {
        let mut state = self.state.borrow_mut();
        let offered = state.tune;
        let frame_max = negotiate("frame_max", offered.frame_max, tune_ok.frame_max)?;
        if frame_max < FRAME_MIN_SIZE {
            return Err(AmqpError::not_allowed(format!(
                "frame_max={frame_max} < {FRAME_MIN_SIZE} min size"
            )));
        }
        let channel_max = negotiate(
            "channel_max",
            u32::from(offered.channel_max),
            u32::from(tune_ok.channel_max),
        )?;
        state.tune = Tune {
            channel_max: u16::try_from(channel_max).unwrap_or(u16::MAX),
            frame_max,
            heartbeat_s: tune_ok.heartbeat,
        };
        state.phase = Phase::AwaitOpen;
        drop(state);
        self.out.set_frame_max(frame_max);
        if tune_ok.heartbeat > 0 {
            let conn = self.clone();
            runtime::spawn(async move { conn.keep_heartbeats(tune_ok.heartbeat).await });
        }
        Ok(())
    }

    fn open(&self, open: ConnectionOpen) -> Result<(), AmqpError> {
        self.admit_to_vhost(&open.virtual_host)?;
        let mut state = self.state.borrow_mut();
        state.vhost = open.virtual_host;
        state.phase = Phase::Open;
        drop(state);
        self.out
            .method(0, &Method::ConnectionOpenOk(ConnectionOpenOk::default()));
        Ok(())
    }

    /// Sends a heartbeat when we have been silent for half the interval, and
    /// drops a peer silent for two intervals (RabbitMQ's rule).
    async fn keep_heartbeats(self: Rc<Self>, heartbeat_s: u16) {
        let interval = Duration::from_secs(u64::from(heartbeat_s));
        loop {
            runtime::sleep(interval / 2).await;
            if self.is_closed() || self.writer_done.get() {
                return;
            }
            if self.out.idle_since_write() >= interval / 2 {
                self.out.heartbeat();
            }
            if !self.paused.get() && self.last_read.get().elapsed() > interval * 2 {
                tracing::warn!(peer = %self.peer, "missed heartbeats from client, timeout: {heartbeat_s}s");
                self.state.borrow_mut().phase = Phase::Closed;
                self.out.close_after_flush();
                return;
            }
        }
    }
}

/// Whether the client's properties announce capability `name`.
fn client_capability(properties: &FieldTable, name: &str) -> bool {
    properties
        .get("capabilities")
        .and_then(|caps| match caps {
            FieldValue::Table(caps) => caps.get(name),
            _ => None,
        })
        .is_some_and(|value| *value == FieldValue::Bool(true))
}

/// RabbitMQ's rule: the client may lower a limit, not raise it; 0 means
/// "no limit", which is a raise when we have one.
fn negotiate(name: &str, server: u32, client: u32) -> Result<u32, AmqpError> {
    match (server, client) {
        (0, client) => Ok(client),
        (server, 0) => Ok(server),
        (server, client) if client > server => Err(AmqpError::not_allowed(format!(
            "{name}={client} > {server} max size"
        ))),
        (_, client) => Ok(client),
    }
}

/// PLAIN: "authzid \0 user \0 password".
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, password))
}

/// AMQPLAIN: a field table's entries without the table's length prefix.
fn parse_amqplain(response: &Bytes) -> Option<(String, String)> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.put_u32(u32::try_from(response.len()).ok()?);
    framed.extend_from_slice(response);
    let table = FieldTable::decode(&mut framed.freeze()).ok()?;
    let text = |name| {
        table
            .get(name)
            .and_then(FieldValue::as_str)
            .map(str::to_owned)
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}
