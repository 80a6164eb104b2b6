//! Connection lifecycle corners, spoken in raw frames: heartbeats, the
//! shutdown close, AMQPLAIN, negotiated limits, and the channel-wide
//! prefetch of basic.qos global=true.

mod common;
mod raw;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::Broker;
use raw::{RawClient, Received};
use warren::protocol::frame::{encode_content, encode_method, FrameType};
use warren::protocol::method::*;
use warren::protocol::reply_code;
use warren::protocol::types::{FieldTable, FieldValue, LongStr};

#[test]
fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let broker = Broker::start();
    let mut client = RawClient::open_with_heartbeat(&broker.addr(), 1);
    let opened = Instant::now();
    match client.receive() {
        Received::Frame(frame) => assert_eq!(frame.frame_type, FrameType::Heartbeat),
        Received::Closed => panic!("the broker closed before sending a heartbeat"),
    }
    // We send nothing: the broker must drop us after two missed intervals,
    // sending at most heartbeats before it does.
    while let Received::Frame(frame) = client.receive() {
        assert_eq!(frame.frame_type, FrameType::Heartbeat);
    }
    // Two missed intervals (2 s) counted from the broker's last read,
    // which came a moment before `opened`: allow that moment.
    let silent = opened.elapsed();
    assert!(
        silent >= Duration::from_millis(1900),
        "dropped after {silent:?}, before two heartbeat intervals"
    );
}

#[test]
fn sigterm_closes_clients_with_connection_forced_and_exits_cleanly() {
    let mut broker = Broker::start();
    if broker.is_external() {
        return;
    }
    let mut client = RawClient::open_with_channel(&broker.addr());
    std::thread::scope(|scope| {
        let terminated = scope.spawn(|| broker.terminate(Duration::from_secs(10)));
        let close = client.expect_connection_close(reply_code::CONNECTION_FORCED, (0, 0));
        assert!(
            close
                .reply_text
                .to_str_lossy()
                .contains("broker forced connection closure with reason 'shutdown'"),
            "reply text {:?}",
            close.reply_text
        );
        let status = terminated.join().expect("terminate");
        assert!(status.success(), "warren exited with {status}");
    });
}

#[test]
fn amqplain_login_is_accepted() {
    let broker = Broker::start();
    let (mut client, start) = RawClient::start(&broker.addr());
    assert!(start
        .mechanisms
        .as_bytes()
        .windows(8)
        .any(|w| w == b"AMQPLAIN"));
    // AMQPLAIN's response is a field table without its length prefix.
    let mut credentials = FieldTable::new();
    credentials.insert("LOGIN", FieldValue::LongStr(LongStr::from("guest")));
    credentials.insert("PASSWORD", FieldValue::LongStr(LongStr::from("guest")));
    let mut table = BytesMut::new();
    credentials.encode(&mut table);
    let response = LongStr::from_bytes(Bytes::copy_from_slice(&table[4..]));
    client.send_method(
        0,
        ConnectionStartOk {
            client_properties: FieldTable::new(),
            mechanism: "AMQPLAIN".into(),
            response,
            locale: "en_US".into(),
        },
    );
    let Method::ConnectionTune(_) = client.expect_method(0) else {
        panic!("expected connection.tune after an AMQPLAIN login");
    };
}

#[test]
fn message_over_the_size_limit_closes_only_the_channel() {
    let broker = Broker::start_with(&["--message-size-max", "1024"]);
    if broker.is_external() {
        return;
    }
    let mut client = RawClient::open_with_channel(&broker.addr());
    let mut out = BytesMut::new();
    let publish = BasicPublish {
        routing_key: "nowhere".into(),
        ..Default::default()
    };
    encode_method(&mut out, 1, &publish.into());
    encode_content(&mut out, 1, 60, &[0, 0], &[7u8; 2048], client.frame_max);
    client.send_bytes(&out);
    let Method::ChannelClose(close) = client.expect_method(1) else {
        panic!("expected channel.close");
    };
    assert_eq!(
        (close.reply_code, close.class_id, close.method_id),
        (reply_code::PRECONDITION_FAILED, 60, 40)
    );
    client.send_method(1, ChannelCloseOk {});
    client.open_channel(2);
    client.close();
}

/// basic.qos global=true caps the channel's unacked deliveries across all
/// its consumers, here on two queues.
#[test]
fn global_prefetch_caps_unacked_deliveries_across_consumers() {
    let broker = Broker::start();
    let mut client = RawClient::open_with_channel(&broker.addr());
    let queues = ["global-qos-a", "global-qos-b"];
    for queue in queues {
        client.send_method(1, declare(queue, false));
        let Method::QueueDeclareOk(_) = client.expect_method(1) else {
            panic!("expected queue.declare-ok");
        };
        let mut out = BytesMut::new();
        for _ in 0..5 {
            let publish = BasicPublish {
                routing_key: queue.into(),
                ..Default::default()
            };
            encode_method(&mut out, 1, &publish.into());
            encode_content(&mut out, 1, 60, &[0, 0], b"m", client.frame_max);
        }
        client.send_bytes(&out);
    }
    let qos = BasicQos {
        prefetch_count: 3,
        global: true,
        ..Default::default()
    };
    client.send_method(1, qos);
    for queue in queues {
        let consume = BasicConsume {
            queue: queue.into(),
            consumer_tag: queue.into(),
            ..Default::default()
        };
        client.send_method(1, consume);
    }
    assert_eq!(read_deliveries(&mut client, 3, false), vec![1, 2, 3]);
    // The cap is full: a round trip shows no fourth delivery was written.
    client.send_method(1, declare(queues[0], true));
    let over_cap = read_deliveries(&mut client, 0, true);
    assert!(
        over_cap.is_empty(),
        "deliveries over the global cap: {over_cap:?}"
    );
    // Acking two makes room for exactly two more. RabbitMQ's queues hear of
    // the room only after its channel has handled the ack, so a declare-ok
    // sent right behind the ack may overtake their deliveries there: wait
    // for the two, then a round trip shows no third was written.
    let ack = BasicAck {
        delivery_tag: 2,
        multiple: true,
    };
    client.send_method(1, ack);
    assert_eq!(read_deliveries(&mut client, 2, false), vec![4, 5]);
    client.send_method(1, declare(queues[0], true));
    let over_cap = read_deliveries(&mut client, 0, true);
    assert!(
        over_cap.is_empty(),
        "deliveries over the global cap after the ack: {over_cap:?}"
    );
    client.close();
}

fn declare(queue: &str, passive: bool) -> QueueDeclare {
    QueueDeclare {
        queue: queue.into(),
        passive,
        exclusive: true,
        ..Default::default()
    }
}

/// Reads frames until `count` deliveries (with their content) have come
/// and, with `until_declare_ok`, a queue.declare-ok; returns the delivery
/// tags. Frames on a connection are ordered, so a delivery the broker wrote
/// before it answered the declare is among them.
fn read_deliveries(client: &mut RawClient, count: usize, until_declare_ok: bool) -> Vec<u64> {
    let mut tags = Vec::new();
    let mut declare_ok = !until_declare_ok;
    while tags.len() < count || !declare_ok {
        let Received::Frame(frame) = client.receive() else {
            panic!("the broker closed the connection");
        };
        if frame.frame_type != FrameType::Method {
            continue;
        }
        match Method::decode(frame.payload).expect("decodable method") {
            Method::BasicDeliver(deliver) => {
                tags.push(deliver.delivery_tag);
                // The test's bodies are one byte: a header and one body frame.
                for expected in [FrameType::Header, FrameType::Body] {
                    let Received::Frame(frame) = client.receive() else {
                        panic!("the broker closed the connection mid-delivery");
                    };
                    assert_eq!(frame.frame_type, expected, "a delivery's content");
                }
            }
            Method::QueueDeclareOk(_) => declare_ok = true,
            Method::BasicConsumeOk(_) | Method::BasicQosOk(_) => {}
            other => panic!("unexpected {}", other.name()),
        }
    }
    tags
}
