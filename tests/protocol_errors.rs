//! Protocol corners, byte for byte: a raw `TcpStream` client performs the
//! handshake with frames built by warren's own codec, then sends input a real
//! client never would, and asserts the exact close the broker answers with
//! and that the socket then closes (the shape of mini-redis's
//! `tests/server.rs`).
//!
//! Each test records what RabbitMQ 3.10 answered to the same bytes; the
//! tests assert the reply code and the class/method ids, and that the text
//! starts with the code's name. After every hard error a bystander
//! connection, opened before the error, must still work, and so must a new
//! connection.
//!
//! Against an external broker (`WARREN_TEST_AMQP_URL`) the same tests check
//! RabbitMQ itself; see `tests/common/mod.rs`.

mod common;
mod raw;

use bytes::BytesMut;
use common::Broker;
use std::io::Write;

use raw::{close_ok_frame, raw_frame, RawClient, Received};
use warren::protocol::frame::{
    encode_method, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_METHOD, PROTOCOL_HEADER,
};
use warren::protocol::method::{BasicPublish, ChannelClose, ChannelOpen, ExchangeDeclare, Method};
use warren::protocol::properties::ContentHeader;
use warren::protocol::reply_code;

/// The class and method ids of the methods these tests send.
const CHANNEL_OPEN: (u16, u16) = (ChannelOpen::CLASS_ID, ChannelOpen::METHOD_ID);
const EXCHANGE_DECLARE: (u16, u16) = (ExchangeDeclare::CLASS_ID, ExchangeDeclare::METHOD_ID);
/// What a close names when no method caused it (a framing error).
const NO_METHOD: (u16, u16) = (0, 0);

/// A method payload of bare ids: class, then method, no arguments.
fn method_ids(class_id: u16, method_id: u16) -> [u8; 4] {
    let [c0, c1] = class_id.to_be_bytes();
    let [m0, m1] = method_id.to_be_bytes();
    [c0, c1, m0, m1]
}

/// A basic.publish method frame to the default exchange.
fn publish_frame(channel: u16) -> BytesMut {
    let mut out = BytesMut::new();
    let publish = BasicPublish {
        routing_key: "protocol-errors-nowhere".into(),
        ..Default::default()
    };
    encode_method(&mut out, channel, &publish.into());
    out
}

/// A content header frame for a basic body of `body_size` octets with no
/// properties.
fn content_header_frame(channel: u16, body_size: usize) -> BytesMut {
    let mut payload = BytesMut::new();
    // Flags word 0: no properties.
    ContentHeader::encode_parts(
        &mut payload,
        BasicPublish::CLASS_ID,
        body_size as u64,
        &[0, 0],
    );
    raw_frame(FRAME_HEADER, channel, &payload, FRAME_END)
}

/// A broker that lived through a hard error still serves: the bystander,
/// opened before the error, opens a channel and closes cleanly, and so does
/// a connection opened after the error.
fn assert_broker_still_serves(broker: &Broker, mut bystander: RawClient) {
    bystander.open_channel(7);
    bystander.close();
    let mut fresh = RawClient::open(&broker.addr());
    fresh.open_channel(1);
    fresh.close();
}

/// Runs `provoke` on a fresh connection while a bystander connection is
/// open, then checks the broker still serves both old and new connections.
fn with_bystander(broker: &Broker, provoke: impl FnOnce(&Broker)) {
    let bystander = RawClient::open(&broker.addr());
    provoke(broker);
    assert_broker_still_serves(broker, bystander);
}

/// The server answers a header it does not speak with the one it does, then
/// closes the socket.
fn assert_header_refused(header: &[u8]) {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::connect(&broker.addr());
        client.send_bytes(header);
        let answer = client.read_until_closed();
        assert_eq!(answer, PROTOCOL_HEADER, "the server names AMQP 0-9-1");
    });
}

// RabbitMQ 3.10: writes "AMQP\x00\x00\x09\x01", then resets the socket
// (its listener uses SO_LINGER 0).
#[test]
fn unsupported_protocol_version_is_answered_with_0_9_1_header() {
    assert_header_refused(b"AMQP\x00\x00\x09\x00");
}

// RabbitMQ 3.10: writes "AMQP\x00\x00\x09\x01", then resets the socket
// (its listener uses SO_LINGER 0).
#[test]
fn http_request_is_answered_with_0_9_1_header() {
    assert_header_refused(b"HTTP/1.1");
}

// RabbitMQ 3.10: connection.close 501 class 0 method 0, "FRAME_ERROR - type 1,
// all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}".
#[test]
fn bad_frame_end_is_frame_error() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open(&broker.addr());
        let mut payload = BytesMut::new();
        Method::from(ChannelOpen::default()).encode(&mut payload);
        client.send_bytes(&raw_frame(FRAME_METHOD, 1, &payload, 0x00));
        client.expect_connection_close(reply_code::FRAME_ERROR, NO_METHOD);
    });
}

// RabbitMQ 3.10: connection.close 501 class 0 method 0, "FRAME_ERROR - type 3,
// all octets = <<>>: {frame_too_large,131073,131064}" (frame_max 131072). The
// limit it names is frame_max less the 8 octets of framing, but it refuses
// only payloads over frame_max itself: see the next test.
#[test]
fn frame_larger_than_frame_max_is_frame_error() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        let body = vec![b'x'; body_payload_max(&client) + FRAME_SIZE_FUDGE + 1];
        client.send_bytes(&publish_frame(1));
        client.send_bytes(&content_header_frame(1, body.len()));
        client.send_bytes(&raw_frame(FRAME_BODY, 1, &body, FRAME_END));
        client.expect_connection_close(reply_code::FRAME_ERROR, NO_METHOD);
    });
}

/// RabbitMQ's `?FRAME_SIZE_FUDGE` (rabbit_reader): it lets a frame's payload
/// reach frame_max, 8 octets past the strict limit, because some clients
/// count frame_max as the payload size rather than the whole frame's.
const FRAME_SIZE_FUDGE: usize = 8;

// RabbitMQ 3.10: accepts a body frame whose payload is frame_max octets (the
// whole frame 8 octets over frame_max); the channel.open sent after it is
// answered.
#[test]
fn frame_within_rabbitmq_fudge_over_frame_max_is_accepted() {
    assert_body_frame_accepted(FRAME_SIZE_FUDGE);
}

// RabbitMQ 3.10: accepts it; the channel.open sent after it is answered.
#[test]
fn frame_of_exactly_frame_max_is_accepted() {
    assert_body_frame_accepted(0);
}

/// Publishes a body in one frame `over` octets longer than frame_max allows
/// and checks that the broker goes on serving the connection.
fn assert_body_frame_accepted(over: usize) {
    let broker = Broker::start();
    let mut client = RawClient::open_with_channel(&broker.addr());
    let body = vec![b'x'; body_payload_max(&client) + over];
    client.send_bytes(&publish_frame(1));
    client.send_bytes(&content_header_frame(1, body.len()));
    client.send_bytes(&raw_frame(FRAME_BODY, 1, &body, FRAME_END));
    client.open_channel(2);
    client.close();
}

/// The largest payload a frame may carry: frame_max less the 7-octet
/// header and the end octet.
fn body_payload_max(client: &RawClient) -> usize {
    assert!(client.frame_max >= 4096, "frame_max {}", client.frame_max);
    client.frame_max as usize - 8
}

/// Sends a method frame of bare, unknown ids on an open channel. The
/// broker must not keep the connection: it either closes the socket at once
/// or first sends connection.close with 503 COMMAND_INVALID or 540
/// NOT_IMPLEMENTED (naming no method, since it could not decode one).
fn assert_unknown_method_refused(class_id: u16, method_id: u16) {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        let ids = method_ids(class_id, method_id);
        client.send_bytes(&raw_frame(FRAME_METHOD, 1, &ids, FRAME_END));
        match client.receive() {
            Received::Closed => {}
            Received::Frame(frame) => {
                let method = Method::decode(frame.payload).expect("a decodable method");
                let Method::ConnectionClose(close) = method else {
                    panic!("expected connection.close or a closed socket, got {method:?}");
                };
                assert!(
                    [reply_code::COMMAND_INVALID, reply_code::NOT_IMPLEMENTED]
                        .contains(&close.reply_code),
                    "reply code of {close:?}"
                );
                let _ = client.stream.write_all(&close_ok_frame());
                client.expect_socket_closed();
            }
        }
    });
}

// RabbitMQ 3.10: no connection.close at all. The reader process crashes with
// {unknown_method_id,{60,999}} (logged as an error report) and the socket is
// reset.
#[test]
fn unknown_method_id_closes_the_connection() {
    assert_unknown_method_refused(60, 999);
}

// RabbitMQ 3.10: as for an unknown method id, the socket is reset without a
// connection.close ({unknown_method_id,{99,10}} in its log).
#[test]
fn unknown_class_id_closes_the_connection() {
    assert_unknown_method_refused(99, 10);
}

// RabbitMQ 3.10: connection.close 504 class 40 method 10 (the method sent),
// "CHANNEL_ERROR - expected 'channel.open'".
#[test]
fn method_on_unopened_channel_is_channel_error() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open(&broker.addr());
        client.send_method(
            3,
            ExchangeDeclare {
                exchange: "protocol-errors-never".into(),
                exchange_type: "direct".into(),
                passive: true,
                ..Default::default()
            },
        );
        client.expect_connection_close(reply_code::CHANNEL_ERROR, EXCHANGE_DECLARE);
    });
}

// RabbitMQ 3.10: connection.close 504 class 20 method 10,
// "CHANNEL_ERROR - second 'channel.open' seen".
#[test]
fn channel_open_twice_is_channel_error() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        client.send_method(1, ChannelOpen::default());
        client.expect_connection_close(reply_code::CHANNEL_ERROR, CHANNEL_OPEN);
    });
}

// RabbitMQ 3.10: connection.close 505 class 0 method 0,
// "UNEXPECTED_FRAME - expected method frame, got non method frame instead".
#[test]
fn content_header_on_unopened_channel_is_unexpected_frame() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open(&broker.addr());
        client.send_bytes(&content_header_frame(5, 5));
        client.expect_connection_close(reply_code::UNEXPECTED_FRAME, NO_METHOD);
    });
}

// RabbitMQ 3.10: connection.close 505 class 0 method 0,
// "UNEXPECTED_FRAME - expected method frame, got non method frame instead".
#[test]
fn content_header_after_channel_close_is_unexpected_frame() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        client.send_method(
            1,
            ChannelClose {
                reply_code: reply_code::REPLY_SUCCESS,
                reply_text: "done".into(),
                ..Default::default()
            },
        );
        let Method::ChannelCloseOk(_) = client.expect_method(1) else {
            panic!("expected channel.close-ok");
        };
        client.send_bytes(&content_header_frame(1, 5));
        client.expect_connection_close(reply_code::UNEXPECTED_FRAME, NO_METHOD);
    });
}

// RabbitMQ 3.10: connection.close 505 class 0 method 0,
// "UNEXPECTED_FRAME - expected method frame, got non method frame instead".
#[test]
fn body_without_publish_is_unexpected_frame() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        client.send_bytes(&raw_frame(FRAME_BODY, 1, b"orphan body", FRAME_END));
        client.expect_connection_close(reply_code::UNEXPECTED_FRAME, NO_METHOD);
    });
}

// RabbitMQ 3.10: connection.close 505 class 0 method 0,
// "UNEXPECTED_FRAME - expected method frame, got non method frame instead".
#[test]
fn content_header_without_publish_is_unexpected_frame() {
    let broker = Broker::start();
    with_bystander(&broker, |broker| {
        let mut client = RawClient::open_with_channel(&broker.addr());
        client.send_bytes(&content_header_frame(1, 5));
        client.expect_connection_close(reply_code::UNEXPECTED_FRAME, NO_METHOD);
    });
}

/// The happy path of the raw client itself, so that a broken helper cannot
/// make every error test pass or fail for the wrong reason.
#[test]
fn raw_handshake_opens_a_channel_and_closes() {
    let broker = Broker::start();
    let mut client = RawClient::open_with_channel(&broker.addr());
    assert!(client.frame_max >= 4096, "frame_max {}", client.frame_max);
    client.open_channel(2);
    client.close();
}
