//! Protocol corners real client libraries trip on, byte for byte with the
//! raw client (`tests/raw`): what RabbitMQ 3.10 answered to the same bytes
//! is recorded above each test, and the tests pass against it in the
//! differential mode (`WARREN_TEST_AMQP_URL`, see `tests/common/mod.rs`).

mod common;
mod raw;

use bytes::BytesMut;
use common::Broker;
use raw::{Options, RawClient};
use warren::protocol::frame::{encode_method, FRAME_BODY, FRAME_END, FRAME_HEADER};
use warren::protocol::method::*;
use warren::protocol::properties::ContentHeader;
use warren::protocol::reply_code;

/// A name no earlier run used.
fn unique(what: &str) -> String {
    format!("corners-{what}-{:016x}", rand::random::<u64>())
}

fn declare_queue(client: &mut RawClient, channel: u16, name: &str) {
    client.send_method(
        channel,
        QueueDeclare {
            queue: name.into(),
            exclusive: true,
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(_) = client.expect_method(channel) else {
        panic!("expected queue.declare-ok");
    };
}

// RabbitMQ 3.10: queue.unbind-ok for an unknown binding, an unknown
// exchange and an unknown queue; exchange.unbind-ok for unknown source or
// destination exchanges. Client libraries tear down in any order.
#[test]
fn unbinding_what_does_not_exist_answers_unbind_ok() {
    let broker = Broker::start();
    let mut client = RawClient::open_with_channel(&broker.addr());
    let queue = unique("unbind");
    declare_queue(&mut client, 1, &queue);
    let missing = unique("missing");
    for (exchange, queue) in [
        ("amq.direct", queue.as_str()),
        (missing.as_str(), queue.as_str()),
        ("amq.direct", missing.as_str()),
    ] {
        client.send_method(
            1,
            QueueUnbind {
                queue: queue.into(),
                exchange: exchange.into(),
                routing_key: "no-such-key".into(),
                ..Default::default()
            },
        );
        let answer = client.expect_method(1);
        assert!(
            matches!(answer, Method::QueueUnbindOk(_)),
            "unbind {queue} from {exchange}: {answer:?}"
        );
    }
    for (source, destination) in [
        (missing.as_str(), "amq.direct"),
        ("amq.fanout", missing.as_str()),
        ("amq.fanout", "amq.direct"),
    ] {
        client.send_method(
            1,
            ExchangeUnbind {
                source: source.into(),
                destination: destination.into(),
                routing_key: "no-such-key".into(),
                ..Default::default()
            },
        );
        let answer = client.expect_method(1);
        assert!(
            matches!(answer, Method::ExchangeUnbindOk(_)),
            "unbind {destination} from {source}: {answer:?}"
        );
    }
    client.close();
}

// RabbitMQ 3.10 with channel_max 2: channels 65535 and 1 open; a third
// open is connection.close 530 "NOT_ALLOWED - number of channels opened
// (2) has reached the negotiated channel_max (2)", class 0 method 0.
// Closing one first makes room again.
#[test]
fn channel_max_limits_open_channels_not_channel_numbers() {
    let broker = Broker::start();
    let mut client = RawClient::open_with(
        &broker.addr(),
        Options {
            channel_max: Some(2),
            ..Options::default()
        },
    );
    client.open_channel(65535);
    client.open_channel(1);
    client.send_method(1, ChannelClose::default());
    let Method::ChannelCloseOk(_) = client.expect_method(1) else {
        panic!("expected channel.close-ok");
    };
    client.open_channel(300);
    client.send_method(2, ChannelOpen::default());
    let close = client.expect_connection_close(reply_code::NOT_ALLOWED, (0, 0));
    assert_eq!(
        close.reply_text.to_str_lossy(),
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
}

/// basic.publish of an empty body to `exchange`, as three frames' bytes.
fn publish_bytes(channel: u16, exchange: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let publish = BasicPublish {
        exchange: exchange.into(),
        routing_key: "k".into(),
        ..Default::default()
    };
    encode_method(&mut out, channel, &publish.into());
    let mut header = BytesMut::new();
    ContentHeader::encode_parts(&mut header, BasicPublish::CLASS_ID, 1, &[0, 0]);
    out.extend_from_slice(&raw::raw_frame(FRAME_HEADER, channel, &header, FRAME_END));
    out.extend_from_slice(&raw::raw_frame(FRAME_BODY, channel, b"x", FRAME_END));
    out
}

// RabbitMQ 3.10: the broker's channel.close 404 and the client's
// channel.close cross; the broker answers the client's close with
// close-ok, takes the client's close-ok as the end of its own close, and
// the connection, its other channels and the channel number stay usable.
#[test]
fn crossing_channel_closes_keep_the_connection() {
    let broker = Broker::start();
    let mut client = RawClient::open_with_channel(&broker.addr());
    client.open_channel(2);
    let mut bytes = publish_bytes(1, &unique("no-such-exchange"));
    encode_method(&mut bytes, 1, &ChannelClose::default().into());
    client.send_bytes(&bytes);
    let Method::ChannelClose(close) = client.expect_method(1) else {
        panic!("expected the broker's channel.close");
    };
    assert_eq!(close.reply_code, reply_code::NOT_FOUND);
    let Method::ChannelCloseOk(_) = client.expect_method(1) else {
        panic!("expected close-ok for the client's close");
    };
    client.send_method(1, ChannelCloseOk {});
    client.open_channel(1);
    let queue = unique("crossing");
    declare_queue(&mut client, 2, &queue);
    declare_queue(&mut client, 1, &unique("crossing-again"));
    client.close();
}

// RabbitMQ 3.10: queue.delete on the channel that consumes the queue is
// answered with queue.delete-ok first, then basic.cancel for the consumer
// (py-amqp and kombu raise on a cancel while they wait for delete-ok).
#[test]
fn queue_delete_on_the_consuming_channel_answers_before_the_cancel() {
    let broker = Broker::start();
    let mut client = RawClient::open_with(
        &broker.addr(),
        Options {
            consumer_cancel_notify: true,
            ..Options::default()
        },
    );
    client.open_channel(1);
    // Not exclusive: the queue may live on the other shard.
    let queue = unique("delete-consumed");
    client.send_method(
        1,
        QueueDeclare {
            queue: queue.as_str().into(),
            ..Default::default()
        },
    );
    let Method::QueueDeclareOk(_) = client.expect_method(1) else {
        panic!("expected queue.declare-ok");
    };
    client.send_method(
        1,
        BasicConsume {
            queue: queue.as_str().into(),
            consumer_tag: "the-consumer".into(),
            ..Default::default()
        },
    );
    let Method::BasicConsumeOk(_) = client.expect_method(1) else {
        panic!("expected basic.consume-ok");
    };
    client.send_method(
        1,
        QueueDelete {
            queue: queue.as_str().into(),
            ..Default::default()
        },
    );
    let first = client.expect_method(1);
    assert!(
        matches!(first, Method::QueueDeleteOk(_)),
        "delete-ok comes first: {first:?}"
    );
    let Method::BasicCancel(cancel) = client.expect_method(1) else {
        panic!("expected basic.cancel after delete-ok");
    };
    assert_eq!(cancel.consumer_tag.as_bytes(), b"the-consumer");
    client.close();
}
