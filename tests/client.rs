//! A real Rust client (lapin 2.x) against a real broker over a socket, area
//! by area: connection, exchanges, queues, basic, publisher confirms,
//! transactions, and traffic between the two shards of a warren.
//!
//! Every await on the broker is bounded by `STEP` (a deadline, never a
//! sleep standing in for an event). Names carry a random suffix and every
//! test deletes what it declares (exclusive queues go with their
//! connection), so reruns against a shared RabbitMQ (`WARREN_TEST_AMQP_URL`,
//! see `tests/common/mod.rs`) do not collide.
//!
//! Absence is checked without waiting: a queue's ready count in
//! queue.declare-ok (passive), or basic.get-empty after the publishes were
//! confirmed, since a confirm comes only once the message is routed.

mod common;
#[path = "client/exchange_plugins.rs"]
mod exchange_plugins;
#[path = "client/queue_arguments.rs"]
mod queue_arguments;
mod raw;

use std::collections::HashMap;
use std::time::Duration;

use common::amqp::{within, STEP};
use common::Broker;
use futures_lite::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use raw::RawClient;
use tokio::sync::mpsc;
use warren::protocol::types::FieldValue;

/// A name no earlier run used: `clienttests-<what>-<random>`.
fn unique(what: &str) -> String {
    format!("clienttests-{what}-{:016x}", rand::random::<u64>())
}

async fn connect(broker: &Broker) -> Connection {
    connect_url(&broker.amqp_url()).await.expect("connect")
}

async fn connect_url(url: &str) -> lapin::Result<Connection> {
    within(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

async fn channel(connection: &Connection) -> Channel {
    within("channel.open", connection.create_channel())
        .await
        .expect("channel.open")
}

/// A new connection and one channel on it.
async fn open(broker: &Broker) -> (Connection, Channel) {
    let connection = connect(broker).await;
    let channel = channel(&connection).await;
    (connection, channel)
}

/// The reply code of a channel or connection close that `result` reports.
fn reply_code<T: std::fmt::Debug>(result: lapin::Result<T>) -> u16 {
    match result {
        Err(lapin::Error::ProtocolError(error)) => error.get_id(),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Asserts that an operation failed with `code`, then that its channel is
/// no longer usable.
async fn assert_closed_with<T: std::fmt::Debug>(
    channel: &Channel,
    result: lapin::Result<T>,
    code: u16,
) {
    assert_eq!(reply_code(result), code, "reply code");
    assert!(
        !channel.status().connected(),
        "the channel is closed after a {code}"
    );
}

/// The errors lapin reports for `channel` from now on, such as a close the
/// broker sends while no RPC is waiting.
fn channel_errors(channel: &Channel) -> mpsc::UnboundedReceiver<lapin::Error> {
    let (sender, receiver) = mpsc::unbounded_channel();
    channel.on_error(move |error| {
        let _ = sender.send(error);
    });
    receiver
}

async fn declare_queue(channel: &Channel, name: &str, options: QueueDeclareOptions) {
    within(
        "queue.declare",
        channel.queue_declare(name, options, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|error| panic!("queue.declare {name}: {error}"));
}

/// A plain queue, deleted by the test (or by a later cleanup) by name.
async fn declare_plain_queue(channel: &Channel, what: &str) -> String {
    let name = unique(what);
    declare_queue(channel, &name, QueueDeclareOptions::default()).await;
    name
}

/// An exclusive queue: it goes with its connection.
async fn declare_exclusive_queue(channel: &Channel, what: &str) -> String {
    let name = unique(what);
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue(channel, &name, options).await;
    name
}

/// (ready messages, consumers) of a queue, from a passive declare.
async fn queue_counts(channel: &Channel, name: &str) -> (u32, u32) {
    let queue = declare_passive(channel, name)
        .await
        .unwrap_or_else(|error| panic!("queue.declare passive {name}: {error}"));
    (queue.message_count(), queue.consumer_count())
}

async fn declare_passive(channel: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "queue.declare passive",
        channel.queue_declare(name, options, FieldTable::default()),
    )
    .await
}

async fn delete_queue(channel: &Channel, name: &str) {
    within(
        "queue.delete",
        channel.queue_delete(name, QueueDeleteOptions::default()),
    )
    .await
    .unwrap_or_else(|error| panic!("queue.delete {name}: {error}"));
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    declare_exchange_with(channel, name, kind, FieldTable::default()).await;
}

async fn declare_exchange_with(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) {
    within(
        "exchange.declare",
        channel.exchange_declare(name, kind, ExchangeDeclareOptions::default(), arguments),
    )
    .await
    .unwrap_or_else(|error| panic!("exchange.declare {name}: {error}"));
}

async fn declare_exchange_passive(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> lapin::Result<()> {
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "exchange.declare passive",
        channel.exchange_declare(name, kind, passive, FieldTable::default()),
    )
    .await
}

async fn delete_exchange(channel: &Channel, name: &str) {
    within(
        "exchange.delete",
        channel.exchange_delete(name, ExchangeDeleteOptions::default()),
    )
    .await
    .unwrap_or_else(|error| panic!("exchange.delete {name}: {error}"));
}

async fn bind_queue(channel: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within(
        "queue.bind",
        channel.queue_bind(queue, exchange, key, QueueBindOptions::default(), args),
    )
    .await
    .unwrap_or_else(|error| panic!("queue.bind {queue} to {exchange}: {error}"));
}

/// Publishes without waiting for anything.
async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_with(channel, exchange, key, body, BasicProperties::default()).await;
}

async fn publish_with(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    within(
        "basic.publish",
        channel.basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
}

/// A channel in confirm mode.
async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = channel(connection).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    channel
}

/// Publishes on a confirm channel and waits for the broker's ack, so the
/// message is in its queues when this returns.
async fn publish_confirmed(channel: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_confirmed_with(channel, exchange, key, body, BasicProperties::default()).await;
}

async fn publish_confirmed_with(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            body,
            properties,
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
    assert!(
        confirmation.is_ack(),
        "confirmed with ack: {confirmation:?}"
    );
}

async fn get(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within(
        "basic.get",
        channel.basic_get(queue, BasicGetOptions { no_ack }),
    )
    .await
    .expect("basic.get")
}

/// The bodies `basic.get` (no-ack) takes from `queue` until get-empty.
async fn drain(channel: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while let Some(message) = get(channel, queue, true).await {
        bodies.push(message.delivery.data);
    }
    bodies
}

async fn consume(channel: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        channel.basic_consume(
            queue,
            "",
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|error| panic!("basic.consume {queue}: {error}"))
}

/// The consumer's next delivery; fails on an error, an end or a timeout.
async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("delivery", consumer.next()).await {
        Some(Ok(delivery)) => delivery,
        Some(Err(error)) => panic!("consumer {}: {error}", consumer.tag()),
        None => panic!("consumer {} ended", consumer.tag()),
    }
}

async fn ack(delivery: &Delivery, multiple: bool) {
    within(
        "basic.ack",
        delivery.acker.ack(BasicAckOptions { multiple }),
    )
    .await
    .expect("basic.ack");
}

async fn qos(channel: &Channel, prefetch_count: u16) {
    within(
        "basic.qos",
        channel.basic_qos(prefetch_count, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
}

async fn close_channel(channel: &Channel) {
    within("channel.close", channel.close(200, "done"))
        .await
        .expect("channel.close");
}

async fn close(connection: &Connection) {
    within("connection.close", connection.close(200, "done"))
        .await
        .expect("connection.close");
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert((*name).into(), value.clone());
    }
    table
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

// ---------------------------------------------------------------- connection

#[tokio::test]
async fn connection_opens_a_channel_and_closes() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    assert!(connection.status().connected());
    assert!(channel.status().connected());
    close(&connection).await;
    assert!(
        !connection.status().connected(),
        "{:?}",
        connection.status()
    );
    let result = within("channel.open", connection.create_channel()).await;
    assert!(
        result.is_err(),
        "no channel on a closed connection: {result:?}"
    );
}

/// lapin does not expose the server properties, so connection.start is read
/// with the raw client.
#[test]
fn server_properties_name_product_and_capabilities() {
    let broker = Broker::start();
    let (_client, start) = RawClient::start(&broker.addr());
    let properties = &start.server_properties;
    assert!(
        matches!(properties.get("product"), Some(FieldValue::LongStr(product)) if !product.is_empty()),
        "product in {properties:?}"
    );
    let Some(FieldValue::Table(capabilities)) = properties.get("capabilities") else {
        panic!("capabilities table in {properties:?}");
    };
    for capability in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            capabilities.get(capability),
            Some(&FieldValue::Bool(true)),
            "capability {capability}"
        );
    }
    assert_eq!((start.version_major, start.version_minor), (0, 9));
}

#[tokio::test]
async fn wrong_password_is_access_refused() {
    let broker = Broker::start();
    let url = format!("amqp://guest:not-the-password@{}/%2f", broker.addr());
    assert_eq!(reply_code(connect_url(&url).await), 403);
    // The broker still serves the right credentials.
    let (connection, _channel) = open(&broker).await;
    close(&connection).await;
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let broker = Broker::start();
    let url = format!("amqp://guest:guest@{}/{}", broker.addr(), unique("vhost"));
    assert_eq!(reply_code(connect_url(&url).await), 530);
}

// ----------------------------------------------------------------- exchanges

#[tokio::test]
async fn exchanges_of_every_type_declare_and_redeclare() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let kinds = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ];
    for kind in kinds {
        let name = unique("exchange");
        declare_exchange(&channel, &name, kind.clone()).await;
        // Redeclaring with the same type is a no-op; passive finds it.
        declare_exchange(&channel, &name, kind.clone()).await;
        declare_exchange_passive(&channel, &name, kind)
            .await
            .expect("passive declare of an existing exchange");
        delete_exchange(&channel, &name).await;
    }
    close(&connection).await;
}

#[tokio::test]
async fn exchange_redeclared_with_other_type_closes_only_the_channel() {
    let broker = Broker::start();
    let (connection, first) = open(&broker).await;
    let name = unique("exchange");
    declare_exchange(&first, &name, ExchangeKind::Direct).await;
    let second = channel(&connection).await;
    let result = within(
        "exchange.declare",
        second.exchange_declare(
            &name,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_closed_with(&second, result, 406).await;
    // The connection and its other channels carry on, and new ones open.
    assert!(connection.status().connected());
    assert!(first.status().connected());
    let third = channel(&connection).await;
    let queue = declare_exclusive_queue(&third, "after-406").await;
    publish_confirmed(
        &confirm_channel(&connection).await,
        "",
        &queue,
        b"still here",
    )
    .await;
    assert_eq!(drain(&third, &queue).await, vec![b"still here".to_vec()]);
    delete_exchange(&first, &name).await;
    close(&connection).await;
}

#[tokio::test]
async fn passive_declare_of_missing_exchange_is_not_found() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let result = declare_exchange_passive(&channel, &unique("missing"), ExchangeKind::Direct).await;
    assert_closed_with(&channel, result, 404).await;
    close(&connection).await;
}

#[tokio::test]
async fn exchange_delete_if_unused_with_a_binding_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let exchange = unique("exchange");
    declare_exchange(&channel, &exchange, ExchangeKind::Direct).await;
    let queue = declare_exclusive_queue(&channel, "bound").await;
    bind_queue(&channel, &queue, &exchange, "key", FieldTable::default()).await;
    let result = within(
        "exchange.delete if-unused",
        channel.exchange_delete(
            &exchange,
            ExchangeDeleteOptions {
                if_unused: true,
                ..ExchangeDeleteOptions::default()
            },
        ),
    )
    .await;
    assert_closed_with(&channel, result, 406).await;
    let cleanup = self::channel(&connection).await;
    delete_exchange(&cleanup, &exchange).await;
    close(&connection).await;
}

#[tokio::test]
async fn declaring_an_amq_prefixed_exchange_is_access_refused() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let name = format!("amq.{}", unique("foo"));
    let result = within(
        "exchange.declare",
        channel.exchange_declare(
            &name,
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_closed_with(&channel, result, 403).await;
    close(&connection).await;
}

#[tokio::test]
async fn binding_a_queue_to_the_default_exchange_is_access_refused() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "default-bind").await;
    let result = within(
        "queue.bind",
        channel.queue_bind(
            &queue,
            "",
            "some-key",
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_closed_with(&channel, result, 403).await;
    close(&connection).await;
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let source = unique("e2e-source");
    let destination = unique("e2e-destination");
    declare_exchange(&channel, &source, ExchangeKind::Direct).await;
    declare_exchange(&channel, &destination, ExchangeKind::Fanout).await;
    within(
        "exchange.bind",
        channel.exchange_bind(
            &destination,
            &source,
            "routed",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
    let queue = declare_exclusive_queue(&channel, "e2e").await;
    bind_queue(&channel, &queue, &destination, "", FieldTable::default()).await;

    let confirms = confirm_channel(&connection).await;
    publish_confirmed(&confirms, &source, "not-routed", b"dropped").await;
    publish_confirmed(&confirms, &source, "routed", b"through two exchanges").await;
    assert_eq!(
        drain(&channel, &queue).await,
        vec![b"through two exchanges".to_vec()]
    );
    delete_exchange(&channel, &source).await;
    delete_exchange(&channel, &destination).await;
    close(&connection).await;
}

#[tokio::test]
async fn alternate_exchange_takes_unroutable_messages() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let alternate = unique("alternate");
    let main = unique("main");
    declare_exchange(&channel, &alternate, ExchangeKind::Fanout).await;
    let arguments = table(&[("alternate-exchange", long_string(&alternate))]);
    declare_exchange_with(&channel, &main, ExchangeKind::Direct, arguments).await;
    let routed = declare_exclusive_queue(&channel, "routed").await;
    let unrouted = declare_exclusive_queue(&channel, "unrouted").await;
    bind_queue(&channel, &routed, &main, "known", FieldTable::default()).await;
    bind_queue(&channel, &unrouted, &alternate, "", FieldTable::default()).await;

    let confirms = confirm_channel(&connection).await;
    publish_confirmed(&confirms, &main, "known", b"direct").await;
    publish_confirmed(&confirms, &main, "unknown", b"via alternate").await;
    assert_eq!(drain(&channel, &routed).await, vec![b"direct".to_vec()]);
    assert_eq!(
        drain(&channel, &unrouted).await,
        vec![b"via alternate".to_vec()]
    );
    delete_exchange(&channel, &main).await;
    delete_exchange(&channel, &alternate).await;
    close(&connection).await;
}

#[tokio::test]
async fn headers_exchange_matches_all_and_any() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let exchange = unique("headers");
    declare_exchange(&channel, &exchange, ExchangeKind::Headers).await;
    let match_all = declare_exclusive_queue(&channel, "match-all").await;
    let match_any = declare_exclusive_queue(&channel, "match-any").await;
    let binding = |x_match: &str| {
        table(&[
            ("x-match", long_string(x_match)),
            ("colour", long_string("red")),
            ("size", AMQPValue::LongInt(3)),
        ])
    };
    bind_queue(&channel, &match_all, &exchange, "", binding("all")).await;
    bind_queue(&channel, &match_any, &exchange, "", binding("any")).await;

    let confirms = confirm_channel(&connection).await;
    let messages = [
        (
            &b"both"[..],
            table(&[
                ("colour", long_string("red")),
                ("size", AMQPValue::LongInt(3)),
            ]),
        ),
        (
            &b"colour only"[..],
            table(&[("colour", long_string("red"))]),
        ),
        (
            &b"wrong size"[..],
            table(&[
                ("colour", long_string("blue")),
                ("size", AMQPValue::LongInt(4)),
            ]),
        ),
        (&b"no headers"[..], FieldTable::default()),
    ];
    for (body, headers) in messages {
        let properties = BasicProperties::default().with_headers(headers);
        publish_confirmed_with(&confirms, &exchange, "", body, properties).await;
    }
    assert_eq!(drain(&channel, &match_all).await, vec![b"both".to_vec()]);
    assert_eq!(
        drain(&channel, &match_any).await,
        vec![b"both".to_vec(), b"colour only".to_vec()]
    );
    delete_exchange(&channel, &exchange).await;
    close(&connection).await;
}

// -------------------------------------------------------------------- queues

#[tokio::test]
async fn server_named_queue_starts_with_amq_gen() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = within(
        "queue.declare",
        channel.queue_declare("", options, FieldTable::default()),
    )
    .await
    .expect("queue.declare");
    assert!(
        queue.name().as_str().starts_with("amq.gen-"),
        "server-named queue {}",
        queue.name()
    );
    // The name is usable: a message to it arrives.
    publish_confirmed(
        &confirm_channel(&connection).await,
        "",
        queue.name().as_str(),
        b"x",
    )
    .await;
    assert_eq!(queue_counts(&channel, queue.name().as_str()).await, (1, 0));
    close(&connection).await;
}

#[tokio::test]
async fn passive_declare_of_missing_queue_is_not_found() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let result = declare_passive(&channel, &unique("missing")).await;
    assert_closed_with(&channel, result, 404).await;
    close(&connection).await;
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = Broker::start();
    let (owner, owner_channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&owner_channel, "exclusive").await;
    let (other, declaring) = open(&broker).await;

    let result = declare_passive(&declaring, &queue).await;
    assert_closed_with(&declaring, result, 405).await;

    let consuming = channel(&other).await;
    let result = within(
        "basic.consume",
        consuming.basic_consume(
            &queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_closed_with(&consuming, result, 405).await;
    close(&other).await;
    close(&owner).await;
}

/// Expects the queue gone once the owner's connection.close-ok is answered,
/// as RabbitMQ has it then (checked repeatedly against 3.10).
#[tokio::test]
async fn exclusive_queue_goes_with_its_connection() {
    let broker = Broker::start();
    let (owner, owner_channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&owner_channel, "exclusive").await;
    let (other, checking) = open(&broker).await;
    close(&owner).await;
    let result = declare_passive(&checking, &queue).await;
    assert_closed_with(&checking, result, 404).await;
    close(&other).await;
}

#[tokio::test]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = unique("auto-delete");
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue(&channel, &queue, options).await;
    let first = consume(&channel, &queue, true).await;
    let second = consume(&channel, &queue, true).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 2));
    for consumer in [&first, &second] {
        within(
            "basic.cancel",
            channel.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()),
        )
        .await
        .expect("basic.cancel");
    }
    let result = declare_passive(&channel, &queue).await;
    assert_closed_with(&channel, result, 404).await;
    close(&connection).await;
}

#[tokio::test]
async fn declare_ok_counts_ready_messages_and_consumers() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "counts").await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2", b"3"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }
    assert_eq!(queue_counts(&channel, &queue).await, (3, 0));

    let consuming = self::channel(&connection).await;
    let mut consumer = consume(&consuming, &queue, false).await;
    for expected in [b"1", b"2", b"3"] {
        assert_eq!(next_delivery(&mut consumer).await.data, expected);
    }
    // Delivered but unacked messages are not ready.
    assert_eq!(queue_counts(&channel, &queue).await, (0, 1));
    close(&connection).await;
}

#[tokio::test]
async fn purge_answers_the_count_it_removed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "purge").await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2", b"3"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }
    let purged = within(
        "queue.purge",
        channel.queue_purge(&queue, QueuePurgeOptions::default()),
    )
    .await
    .expect("queue.purge");
    assert_eq!(purged, 3);
    assert!(
        get(&channel, &queue, true).await.is_none(),
        "purged queue is empty"
    );
    close(&connection).await;
}

#[tokio::test]
async fn delete_if_empty_of_a_non_empty_queue_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_plain_queue(&channel, "if-empty").await;
    publish_confirmed(&confirm_channel(&connection).await, "", &queue, b"x").await;
    let result = within(
        "queue.delete if-empty",
        channel.queue_delete(
            &queue,
            QueueDeleteOptions {
                if_empty: true,
                ..QueueDeleteOptions::default()
            },
        ),
    )
    .await;
    assert_closed_with(&channel, result, 406).await;
    let cleanup = self::channel(&connection).await;
    let deleted = within(
        "queue.delete",
        cleanup.queue_delete(&queue, QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
    assert_eq!(deleted, 1, "delete-ok counts the message it dropped");
    close(&connection).await;
}

#[tokio::test]
async fn delete_if_unused_of_a_consumed_queue_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_plain_queue(&channel, "if-unused").await;
    let consuming = self::channel(&connection).await;
    let _consumer = consume(&consuming, &queue, true).await;
    let result = within(
        "queue.delete if-unused",
        channel.queue_delete(
            &queue,
            QueueDeleteOptions {
                if_unused: true,
                ..QueueDeleteOptions::default()
            },
        ),
    )
    .await;
    assert_closed_with(&channel, result, 406).await;
    delete_queue(&consuming, &queue).await;
    close(&connection).await;
}

#[tokio::test]
async fn quorum_queue_type_is_accepted() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = unique("quorum");
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let arguments = table(&[("x-queue-type", long_string("quorum"))]);
    within(
        "queue.declare quorum",
        channel.queue_declare(&queue, options, arguments),
    )
    .await
    .expect("a durable quorum queue is accepted");
    publish_confirmed(&confirm_channel(&connection).await, "", &queue, b"q").await;
    let message = get(&channel, &queue, true).await.expect("a message");
    assert_eq!(message.delivery.data, b"q");
    delete_queue(&channel, &queue).await;
    close(&connection).await;
}

/// RabbitMQ 3.10 has streams in its core and accepts a durable stream queue;
/// it refuses a non-durable one with 406 PRECONDITION_FAILED.
/// warren has no streams, so this case is where the two must agree.
#[tokio::test]
async fn non_durable_stream_queue_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let arguments = table(&[("x-queue-type", long_string("stream"))]);
    let result = within(
        "queue.declare stream",
        channel.queue_declare(&unique("stream"), QueueDeclareOptions::default(), arguments),
    )
    .await;
    assert_closed_with(&channel, result, 406).await;
    close(&connection).await;
}

// --------------------------------------------------------------------- basic

/// Headers with a value of every field type lapin writes in a way RabbitMQ
/// reads back the same (lapin writes `ShortString` and `LongLongUInt` with
/// type octets RabbitMQ does not know).
fn headers_of_every_type() -> FieldTable {
    let nested = table(&[
        ("inner", long_string("nested value")),
        (
            "deeper",
            AMQPValue::FieldTable(table(&[("n", AMQPValue::LongLongInt(-7))])),
        ),
    ]);
    let array = FieldArray::from(vec![
        AMQPValue::LongInt(1),
        long_string("two"),
        AMQPValue::Boolean(false),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
    ]);
    table(&[
        ("table", AMQPValue::FieldTable(nested)),
        ("array", AMQPValue::FieldArray(array)),
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-6_400_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25e100)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("long string", long_string(&"long ".repeat(100))),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
        ),
        ("void", AMQPValue::Void),
    ])
}

#[tokio::test]
async fn every_property_and_header_type_round_trips() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "properties").await;
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/x-test"))
        .with_content_encoding(ShortString::from("identity"))
        .with_headers(headers_of_every_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id(ShortString::from("correlation-1"))
        .with_reply_to(ShortString::from("reply-queue"))
        .with_expiration(ShortString::from("600000"))
        .with_message_id(ShortString::from("message-1"))
        .with_timestamp(1_700_000_123)
        .with_type(ShortString::from("test.kind"))
        .with_user_id(ShortString::from("guest"))
        .with_app_id(ShortString::from("warren-client-tests"))
        .with_cluster_id(ShortString::from("cluster-1"));
    let body = b"every property".to_vec();
    let mut consumer = consume(&channel, &queue, true).await;
    publish_with(&channel, "", &queue, &body, properties.clone()).await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, body);
    assert_eq!(delivery.properties, properties);
    close(&connection).await;
}

#[tokio::test]
async fn body_larger_than_frame_max_arrives_intact() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let frame_max = connection.configuration().frame_max() as usize;
    let queue = declare_exclusive_queue(&channel, "large").await;
    let body: Vec<u8> = (0..1024 * 1024)
        .map(|index: u32| (index % 251) as u8)
        .collect();
    assert!(
        body.len() > frame_max,
        "{} > frame_max {frame_max}",
        body.len()
    );
    let mut consumer = consume(&channel, &queue, true).await;
    publish(&channel, "", &queue, &body).await;
    let delivery = next_delivery(&mut consumer).await;
    assert!(delivery.data == body, "the 1 MiB body arrives unchanged");
    close(&connection).await;
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_with_no_route() {
    let broker = Broker::start();
    let (connection, _channel) = open(&broker).await;
    let confirms = confirm_channel(&connection).await;
    let confirm = within(
        "basic.publish",
        confirms.basic_publish(
            "amq.direct",
            &unique("nobody-bound"),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"comes back",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm).await.expect("confirm");
    let Confirmation::Ack(Some(returned)) = confirmation else {
        panic!("expected an ack carrying the returned message, got {confirmation:?}");
    };
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"comes back");
    close(&connection).await;
}

#[tokio::test]
async fn get_counts_what_remains_and_get_empty_ends() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "get").await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"a", b"b"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }
    let first = get(&channel, &queue, true).await.expect("first");
    assert_eq!(
        (first.delivery.data.as_slice(), first.message_count),
        (&b"a"[..], 1)
    );
    let second = get(&channel, &queue, false).await.expect("second");
    assert_eq!(
        (second.delivery.data.as_slice(), second.message_count),
        (&b"b"[..], 0)
    );
    ack(&second.delivery, false).await;
    assert!(get(&channel, &queue, true).await.is_none(), "get-empty");
    close(&connection).await;
}

#[tokio::test]
async fn ack_multiple_acks_every_tag_up_to_it() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "ack-multiple").await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2", b"3"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }
    let consuming = self::channel(&connection).await;
    let mut consumer = consume(&consuming, &queue, false).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(next_delivery(&mut consumer).await);
    }
    ack(&deliveries[1], true).await;
    // Closing the channel requeues what it left unacked: only message 3.
    close_channel(&consuming).await;
    assert_eq!(queue_counts(&channel, &queue).await, (1, 0));
    let left = get(&channel, &queue, true).await.expect("message 3");
    assert_eq!(left.delivery.data, b"3");
    assert!(left.delivery.redelivered);
    close(&connection).await;
}

#[tokio::test]
async fn nack_with_requeue_redelivers() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "nack").await;
    let mut consumer = consume(&channel, &queue, false).await;
    publish(&channel, "", &queue, b"again").await;
    let first = next_delivery(&mut consumer).await;
    assert!(!first.redelivered);
    within(
        "basic.nack",
        first.acker.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await
    .expect("basic.nack");
    let second = next_delivery(&mut consumer).await;
    assert_eq!(second.data, b"again");
    assert!(
        second.redelivered,
        "a requeued message is marked redelivered"
    );
    ack(&second, false).await;
    close(&connection).await;
}

#[tokio::test]
async fn reject_without_requeue_drops_the_message() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "reject").await;
    let confirms = confirm_channel(&connection).await;
    publish_confirmed(&confirms, "", &queue, b"rejected").await;
    let message = get(&channel, &queue, false).await.expect("a message");
    within(
        "basic.reject",
        message
            .delivery
            .acker
            .reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("basic.reject");
    publish_confirmed(&confirms, "", &queue, b"marker").await;
    assert_eq!(drain(&channel, &queue).await, vec![b"marker".to_vec()]);
    // Nothing comes back when the channel closes either.
    close_channel(&channel).await;
    let checking = self::channel(&connection).await;
    assert_eq!(queue_counts(&checking, &queue).await, (0, 0));
    close(&connection).await;
}

#[tokio::test]
async fn prefetch_one_round_robins_and_holds_back_until_ack() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "prefetch").await;
    let (first_channel, second_channel) = (
        self::channel(&connection).await,
        self::channel(&connection).await,
    );
    qos(&first_channel, 1).await;
    qos(&second_channel, 1).await;
    let mut first = consume(&first_channel, &queue, false).await;
    let mut second = consume(&second_channel, &queue, false).await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"m1", b"m2", b"m3", b"m4"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }
    let first_delivery = next_delivery(&mut first).await;
    let second_delivery = next_delivery(&mut second).await;
    let mut bodies = [first_delivery.data.clone(), second_delivery.data.clone()];
    bodies.sort();
    assert_eq!(
        bodies,
        [b"m1".to_vec(), b"m2".to_vec()],
        "one each, in turn"
    );
    // Both consumers are at their prefetch limit: m3 and m4 stay ready.
    assert_eq!(queue_counts(&channel, &queue).await, (2, 2));

    ack(&first_delivery, false).await;
    assert_eq!(next_delivery(&mut first).await.data, b"m3");
    assert_eq!(queue_counts(&channel, &queue).await, (1, 2));
    ack(&second_delivery, false).await;
    assert_eq!(next_delivery(&mut second).await.data, b"m4");
    close(&connection).await;
}

#[tokio::test]
async fn unacked_messages_are_requeued_in_order_when_the_channel_closes() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "requeue").await;
    let bodies: Vec<Vec<u8>> = (0..5)
        .map(|index| format!("m{index}").into_bytes())
        .collect();
    let consuming = self::channel(&connection).await;
    let mut consumer = consume(&consuming, &queue, false).await;
    for body in &bodies {
        publish(&channel, "", &queue, body).await;
    }
    for body in &bodies {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.data, body);
        assert!(!delivery.redelivered);
    }
    close_channel(&consuming).await;

    let again = self::channel(&connection).await;
    let mut consumer = consume(&again, &queue, false).await;
    for body in &bodies {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.data, body, "original order");
        assert!(delivery.redelivered, "marked redelivered");
    }
    close(&connection).await;
}

#[tokio::test]
async fn cancelled_consumer_ends_and_gets_nothing_more() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "cancel").await;
    let mut consumer = consume(&channel, &queue, true).await;
    publish(&channel, "", &queue, b"before").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"before");
    within(
        "basic.cancel",
        channel.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("basic.cancel");
    assert!(
        within("consumer end", consumer.next()).await.is_none(),
        "stream ends"
    );
    let confirms = confirm_channel(&connection).await;
    publish_confirmed(&confirms, "", &queue, b"after").await;
    assert_eq!(queue_counts(&channel, &queue).await, (1, 0));
    close(&connection).await;
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_plain_queue(&channel, "deleted-under-consumer").await;
    let consuming = self::channel(&connection).await;
    let mut consumer = consume(&consuming, &queue, true).await;
    delete_queue(&channel, &queue).await;
    // The broker's basic.cancel ends lapin's consumer stream.
    assert!(
        within("consumer end", consumer.next()).await.is_none(),
        "stream ends"
    );
    assert!(consuming.status().connected(), "the channel stays open");
    close(&connection).await;
}

#[tokio::test]
async fn ack_of_unknown_delivery_tag_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let mut errors = channel_errors(&channel);
    within(
        "basic.ack",
        channel.basic_ack(999, BasicAckOptions::default()),
    )
    .await
    .expect("basic.ack is sent");
    // basic.ack has no reply: the broker's channel.close comes on its own.
    let error = within("channel.close from the broker", errors.recv())
        .await
        .expect("the channel reports its close");
    assert_closed_with(&channel, Err::<(), _>(error), 406).await;
    let still = self::channel(&connection).await;
    declare_exclusive_queue(&still, "after-bad-ack").await;
    close(&connection).await;
}

#[tokio::test]
async fn order_is_kept_over_ten_thousand_messages() {
    const COUNT: usize = 10_000;
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "order").await;
    let consuming = self::channel(&connection).await;
    let mut consumer = consume(&consuming, &queue, true).await;
    let publisher = async {
        for index in 0..COUNT {
            publish(&channel, "", &queue, &index.to_be_bytes()).await;
        }
    };
    let receiver = async {
        for expected in 0..COUNT {
            let delivery = next_delivery(&mut consumer).await;
            assert_eq!(delivery.data, expected.to_be_bytes(), "message {expected}");
        }
    };
    tokio::join!(publisher, receiver);
    close(&connection).await;
}

// -------------------------------------------------------- publisher confirms

#[tokio::test]
async fn a_thousand_publishes_are_all_confirmed() {
    const COUNT: usize = 1000;
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "confirms").await;
    let confirms = confirm_channel(&connection).await;
    let mut pending = Vec::with_capacity(COUNT);
    for index in 0..COUNT {
        let confirm = within(
            "basic.publish",
            confirms.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &index.to_be_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("basic.publish");
        pending.push(confirm);
    }
    for (index, confirm) in pending.into_iter().enumerate() {
        let confirmation = within("publisher confirm", confirm)
            .await
            .expect("publisher confirm");
        assert!(confirmation.is_ack(), "message {index}: {confirmation:?}");
    }
    assert_eq!(queue_counts(&channel, &queue).await, (COUNT as u32, 0));
    close(&connection).await;
}

#[tokio::test]
async fn publish_to_a_missing_exchange_closes_the_channel_with_not_found() {
    let broker = Broker::start();
    let (connection, _channel) = open(&broker).await;
    let confirms = confirm_channel(&connection).await;
    let confirm = within(
        "basic.publish",
        confirms.basic_publish(
            &unique("missing"),
            "key",
            BasicPublishOptions::default(),
            b"lost",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish is sent");
    let result = within("publisher confirm", confirm).await;
    assert_closed_with(&confirms, result, 404).await;
    close(&connection).await;
}

#[tokio::test]
async fn a_user_id_naming_another_user_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, _channel) = open(&broker).await;
    let confirms = confirm_channel(&connection).await;
    let queue = declare_exclusive_queue(&confirms, "user-id").await;
    let confirm = within(
        "basic.publish",
        confirms.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            b"forged",
            BasicProperties::default().with_user_id("mallory".into()),
        ),
    )
    .await
    .expect("basic.publish is sent");
    let result = within("publisher confirm", confirm).await;
    assert_closed_with(&confirms, result, 406).await;
    close(&connection).await;
}

// -------------------------------------------------------------- transactions

async fn tx_channel(connection: &Connection) -> Channel {
    let channel = channel(connection).await;
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
    channel
}

/// RabbitMQ's direct reply-to: the client consumes the pseudo-queue
/// `amq.rabbitmq.reply-to` without acks, its request's reply_to comes to
/// the server rewritten to a name that routes back to that consumer.
#[tokio::test]
async fn direct_reply_to_routes_the_reply_to_the_requesting_consumer() {
    let broker = Broker::start();
    let (client_connection, client) = open(&broker).await;
    let (server_connection, server) = open(&broker).await;
    let requests = declare_plain_queue(&server, "rpc").await;
    let mut replies = consume(&client, "amq.rabbitmq.reply-to", true).await;
    let request = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("42".into());
    publish_with(&client, "", &requests, b"ping", request).await;

    let mut served = consume(&server, &requests, true).await;
    let delivered = next_delivery(&mut served).await;
    let reply_to = delivered
        .properties
        .reply_to()
        .clone()
        .expect("the request carries reply_to");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "reply_to rewritten to a routable name, got {reply_to}"
    );
    let reply = BasicProperties::default().with_correlation_id("42".into());
    publish_with(&server, "", reply_to.as_str(), b"pong", reply).await;

    let answer = next_delivery(&mut replies).await;
    assert_eq!(answer.data, b"pong");
    assert_eq!(
        answer
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some("42")
    );
    delete_queue(&server, &requests).await;
    close(&client_connection).await;
    close(&server_connection).await;
}

#[tokio::test]
async fn rolled_back_publishes_are_dropped_and_committed_ones_delivered() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "tx-publish").await;
    let tx = tx_channel(&connection).await;
    publish(&tx, "", &queue, b"rolled back").await;
    within("tx.rollback", tx.tx_rollback())
        .await
        .expect("tx.rollback");
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
    publish(&tx, "", &queue, b"committed").await;
    assert_eq!(
        queue_counts(&channel, &queue).await,
        (0, 0),
        "not before commit"
    );
    within("tx.commit", tx.tx_commit())
        .await
        .expect("tx.commit");
    assert_eq!(drain(&channel, &queue).await, vec![b"committed".to_vec()]);
    close(&connection).await;
}

#[tokio::test]
async fn acks_in_a_transaction_apply_only_on_commit() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let queue = declare_exclusive_queue(&channel, "tx-ack").await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2"] {
        publish_confirmed(&confirms, "", &queue, body).await;
    }

    // Rolled back: the acks are forgotten, so closing requeues both.
    let tx = tx_channel(&connection).await;
    let _first = get(&tx, &queue, false).await.expect("1");
    let second = get(&tx, &queue, false).await.expect("2");
    ack(&second.delivery, true).await;
    within("tx.rollback", tx.tx_rollback())
        .await
        .expect("tx.rollback");
    close_channel(&tx).await;
    assert_eq!(queue_counts(&channel, &queue).await, (2, 0));

    // Committed: the acks take effect.
    let tx = tx_channel(&connection).await;
    let _first = get(&tx, &queue, false).await.expect("1");
    let second = get(&tx, &queue, false).await.expect("2");
    ack(&second.delivery, true).await;
    within("tx.commit", tx.tx_commit())
        .await
        .expect("tx.commit");
    close_channel(&tx).await;
    assert_eq!(queue_counts(&channel, &queue).await, (0, 0));
    close(&connection).await;
}

// ---------------------------------------------------------------- cross-shard

/// With two shards a queue may live on the other shard than the connection
/// that publishes to it or consumes from it. Eight queues and two
/// publishing and two consuming connections cover both shards and both
/// directions without knowing the hash; each (publisher, queue) stream must
/// arrive whole and in order.
#[tokio::test]
async fn traffic_between_connections_and_queues_on_either_shard_keeps_order() {
    const QUEUES: usize = 8;
    const PER_PUBLISHER: usize = 200;
    let broker = Broker::start();
    let (admin, admin_channel) = open(&broker).await;
    let mut queues = Vec::new();
    for _ in 0..QUEUES {
        queues.push(declare_plain_queue(&admin_channel, "shard").await);
    }
    let consumer_connections = [connect(&broker).await, connect(&broker).await];
    let mut consumers = Vec::new();
    for (index, queue) in queues.iter().enumerate() {
        let channel = channel(&consumer_connections[index % 2]).await;
        consumers.push((queue.clone(), consume(&channel, queue, true).await, channel));
    }
    let publisher_connections = [connect(&broker).await, connect(&broker).await];
    for (publisher, connection) in publisher_connections.iter().enumerate() {
        let confirms = confirm_channel(connection).await;
        for sequence in 0..PER_PUBLISHER {
            for queue in &queues {
                let body = format!("{publisher}:{sequence}");
                publish(&confirms, "", queue, body.as_bytes()).await;
            }
        }
        within("wait_for_confirms", confirms.wait_for_confirms())
            .await
            .expect("every publish confirmed");
    }
    for (queue, consumer, _channel) in &mut consumers {
        let mut next_sequence: HashMap<usize, usize> = HashMap::new();
        for _ in 0..2 * PER_PUBLISHER {
            let delivery = next_delivery(consumer).await;
            let text = String::from_utf8(delivery.data).expect("utf-8 body");
            let (publisher, sequence) = text.split_once(':').expect("publisher:sequence");
            let publisher: usize = publisher.parse().expect("publisher");
            let sequence: usize = sequence.parse().expect("sequence");
            let expected = next_sequence.entry(publisher).or_default();
            assert_eq!(sequence, *expected, "queue {queue}, publisher {publisher}");
            *expected += 1;
        }
        assert_eq!(
            next_sequence,
            HashMap::from([(0, PER_PUBLISHER), (1, PER_PUBLISHER)]),
            "queue {queue} got every message"
        );
    }
    for queue in &queues {
        delete_queue(&admin_channel, queue).await;
    }
    for connection in publisher_connections.iter().chain(&consumer_connections) {
        close(connection).await;
    }
    close(&admin).await;
}
