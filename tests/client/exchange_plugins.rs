//! The exchange types of RabbitMQ's plugins, with a real client (lapin):
//! `x-consistent-hash` (rabbitmq_consistent_hash_exchange, which ships with
//! RabbitMQ: these tests run in the differential mode too) and
//! `x-delayed-message` (the community plugin, not in Debian's RabbitMQ:
//! warren only). Bound queues sit on both shards of a warren.

use std::time::Instant;

use super::queue_arguments::{declare_with, header, reply_text, unique_on_shard};
use super::*;

fn consistent_hash() -> ExchangeKind {
    ExchangeKind::Custom("x-consistent-hash".to_owned())
}

/// Three exclusive queues on alternating shards, bound with `weights`.
async fn bound_queues(channel: &Channel, exchange: &str, weights: &[&str]) -> Vec<String> {
    let mut queues = Vec::new();
    for (n, weight) in weights.iter().enumerate() {
        let queue = unique_on_shard("chash", n % 2);
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        declare_queue(channel, &queue, exclusive).await;
        bind_queue(channel, &queue, exchange, weight, FieldTable::default()).await;
        queues.push(queue);
    }
    queues
}

/// Publishes one message per routing key and waits for every confirm.
async fn publish_all(channel: &Channel, exchange: &str, messages: &[(String, BasicProperties)]) {
    let mut confirms = Vec::new();
    for (key, properties) in messages {
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                exchange,
                key,
                BasicPublishOptions::default(),
                b"m",
                properties.clone(),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = within("confirm", confirm).await.expect("confirm");
        assert!(confirmation.is_ack(), "{confirmation:?}");
    }
}

async fn ready_counts(channel: &Channel, queues: &[String]) -> Vec<u32> {
    let mut counts = Vec::new();
    for queue in queues {
        counts.push(queue_counts(channel, queue).await.0);
    }
    counts
}

#[tokio::test]
async fn consistent_hash_spreads_routing_keys_by_binding_weight() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = unique("chash");
    declare_exchange(&channel, &exchange, consistent_hash()).await;
    let queues = bound_queues(&channel, &exchange, &["1", "1", "2"]).await;
    let messages: Vec<_> = (0..2000)
        .map(|n| (format!("key-{n}"), BasicProperties::default()))
        .collect();
    publish_all(&channel, &exchange, &messages).await;
    let counts = ready_counts(&channel, &queues).await;
    assert_eq!(
        counts.iter().sum::<u32>(),
        2000,
        "each message once: {counts:?}"
    );
    for (count, share) in counts.iter().zip([0.25, 0.25, 0.5]) {
        let seen = f64::from(*count) / 2000.0;
        assert!(
            (seen - share).abs() < 0.08,
            "{counts:?} for weights 1, 1, 2"
        );
    }
    // One routing key always lands on the same queue.
    let same: Vec<_> = (0..20)
        .map(|_| ("one key".to_owned(), BasicProperties::default()))
        .collect();
    publish_all(&channel, &exchange, &same).await;
    let after = ready_counts(&channel, &queues).await;
    let grown: Vec<u32> = after.iter().zip(&counts).map(|(a, b)| a - b).collect();
    assert!(grown.contains(&20), "one queue took all 20: {grown:?}");
    // CC keys do not make copies: the plugin hashes the message's first
    // routing key, whichever key it routes.
    let cc = AMQPValue::FieldArray(FieldArray::from(
        ["cc-a", "cc-b", "cc-c", "cc-d"].map(long_string).to_vec(),
    ));
    let with_cc: Vec<_> = (0..20)
        .map(|n| {
            let properties = BasicProperties::default().with_headers(table(&[("CC", cc.clone())]));
            (format!("cc-key-{n}"), properties)
        })
        .collect();
    publish_all(&channel, &exchange, &with_cc).await;
    let total = ready_counts(&channel, &queues).await.iter().sum::<u32>();
    assert_eq!(total, 2040, "each CC'd message once");
    delete_exchange(&channel, &exchange).await;
    close(&connection).await;
}

#[tokio::test]
async fn consistent_hash_on_a_header_or_a_property_ignores_the_routing_key() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    for (argument, value) in [("hash-header", "tenant"), ("hash-property", "message_id")] {
        let exchange = unique("chash-on");
        let arguments = table(&[(argument, long_string(value))]);
        declare_exchange_with(&channel, &exchange, consistent_hash(), arguments).await;
        let queues = bound_queues(&channel, &exchange, &["5", "5", "5"]).await;
        let properties = |id: &str| match argument {
            "hash-header" => {
                BasicProperties::default().with_headers(table(&[("tenant", long_string(id))]))
            }
            _ => BasicProperties::default().with_message_id(id.into()),
        };
        // Many routing keys, one value: one queue.
        let messages: Vec<_> = (0..30)
            .map(|n| (format!("key-{n}"), properties("tenant-a")))
            .collect();
        publish_all(&channel, &exchange, &messages).await;
        let counts = ready_counts(&channel, &queues).await;
        assert!(
            counts.contains(&30),
            "{argument}: one queue took all: {counts:?}"
        );
        // Many values: more than one queue.
        let messages: Vec<_> = (0..60)
            .map(|n| ("key".to_owned(), properties(&format!("tenant-{n}"))))
            .collect();
        publish_all(&channel, &exchange, &messages).await;
        let counts = ready_counts(&channel, &queues).await;
        let used = counts.iter().filter(|&&count| count > 0).count();
        assert!(used > 1, "{argument}: values spread: {counts:?}");
        delete_exchange(&channel, &exchange).await;
    }
    close(&connection).await;
}

#[tokio::test]
async fn consistent_hash_refuses_bad_weights_and_arguments_as_the_plugin_does() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = super::channel(&connection).await;
    let exchange = unique("chash-bad");
    declare_exchange(&channel, &exchange, consistent_hash()).await;
    let queue = declare_exclusive_queue(&channel, "chash-bad").await;
    for (key, text) in [
        (
            "abc",
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>",
        ),
        (
            "0",
            "PRECONDITION_FAILED - The binding key must be greater than 0",
        ),
    ] {
        let channel = super::channel(&connection).await;
        let bind = channel.queue_bind(
            &queue,
            &exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        assert_eq!(reply_text(within("queue.bind", bind).await), text);
    }
    let channel = super::channel(&connection).await;
    declare_passive(&channel, &queue)
        .await
        .expect("queue still there");
    delete_exchange(&channel, &exchange).await;
    for (arguments, text) in [
        (
            table(&[("hash-property", long_string("app_id"))]),
            "PRECONDITION_FAILED - Unsupported property: app_id",
        ),
        (
            table(&[
                ("hash-header", long_string("h")),
                ("hash-property", long_string("message_id")),
            ]),
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive",
        ),
    ] {
        let channel = super::channel(&connection).await;
        let name = unique("chash-args");
        let declare = channel.exchange_declare(
            &name,
            consistent_hash(),
            ExchangeDeclareOptions::default(),
            arguments,
        );
        assert_eq!(reply_text(within("exchange.declare", declare).await), text);
    }
    close(&connection).await;
}

fn delayed_message() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".to_owned())
}

fn delay(ms: i64) -> BasicProperties {
    BasicProperties::default().with_headers(table(&[("x-delay", AMQPValue::LongLongInt(ms))]))
}

#[tokio::test]
async fn delayed_messages_are_routed_by_the_delayed_type_once_their_delay_is_over() {
    let broker = Broker::start();
    if broker.is_external() {
        return; // Debian's RabbitMQ has no delayed-message plugin.
    }
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = unique("delayed");
    let arguments = table(&[("x-delayed-type", long_string("direct"))]);
    declare_exchange_with(&channel, &exchange, delayed_message(), arguments).await;
    let mut queues = Vec::new();
    for shard in 0..2 {
        let queue = unique_on_shard("delayed", shard);
        declare_with(&channel, &queue, FieldTable::default())
            .await
            .expect("queue.declare");
        bind_queue(&channel, &queue, &exchange, "k", FieldTable::default()).await;
        queues.push(queue);
    }
    let published = Instant::now();
    publish_confirmed_with(&channel, &exchange, "k", b"later", delay(1000)).await;
    // No delay, a negative one, or none at all: routed at once.
    publish_confirmed_with(&channel, &exchange, "k", b"now", delay(-5)).await;
    publish_confirmed_with(&channel, &exchange, "k", b"now", BasicProperties::default()).await;
    publish_confirmed_with(&channel, &exchange, "other", b"x", delay(1)).await;
    for queue in &queues {
        assert_eq!(
            queue_counts(&channel, queue).await.0,
            2,
            "only the undelayed, at once"
        );
        assert_eq!(
            drain(&channel, queue).await,
            vec![b"now".to_vec(), b"now".to_vec()]
        );
    }
    for queue in &queues {
        let mut consumer = consume(&channel, queue, true).await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, b"later");
        assert!(
            published.elapsed() >= Duration::from_millis(1000),
            "delivered after {:?}",
            published.elapsed()
        );
        assert_eq!(
            header(&delivery, "x-delay"),
            Some(&AMQPValue::LongInt(-1000))
        );
        delete_queue(&channel, queue).await;
    }
    delete_exchange(&channel, &exchange).await;
    close(&connection).await;
}

#[tokio::test]
async fn a_delayed_exchange_needs_its_delayed_type() {
    let broker = Broker::start();
    if broker.is_external() {
        return;
    }
    let connection = connect(&broker).await;
    for arguments in [
        FieldTable::default(),
        table(&[("x-delayed-type", AMQPValue::LongInt(1))]),
    ] {
        let channel = super::channel(&connection).await;
        let name = unique("delayed-bad");
        let declare = channel.exchange_declare(
            &name,
            delayed_message(),
            ExchangeDeclareOptions::default(),
            arguments,
        );
        assert_eq!(
            reply_text(within("exchange.declare", declare).await),
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must bean existing exchnage type"
        );
    }
    // An unknown delayed type is an unknown exchange type: 503 closes the
    // connection, as RabbitMQ's check_type does.
    let channel = super::channel(&connection).await;
    let name = unique("delayed-bad");
    let declare = channel.exchange_declare(
        &name,
        delayed_message(),
        ExchangeDeclareOptions::default(),
        table(&[("x-delayed-type", long_string("nonsense"))]),
    );
    assert_eq!(reply_code(within("exchange.declare", declare).await), 503);
}
