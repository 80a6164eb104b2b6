//! Backlogs larger than the queues' memory budget: a real warren process
//! with a small `--queue-memory-budget`, two shards, a durable queue on
//! each, and a backlog of 1 KiB messages (persistent and transient) many
//! times the budget. The broker's resident set must stay far below the
//! backlog while it fills, and while a consumer without a prefetch limit
//! holds it unacked, and every message must come back in order and byte
//! for byte, read back from disk (requeued, or dead-lettered); the
//! persistent ones also after a restart.
//!
//! These tests read the broker's memory and restart it, so they do
//! nothing in differential mode.

mod common;

use std::time::{Duration, Instant};

use common::amqp::{declare_durable, names_on_shard, open_confirming as open, within};
use common::Broker;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};

const BUDGET: &str = "4MiB";
const BODY_LEN: usize = 1024;
/// Publishes awaited together.
const WINDOW: usize = 500;
const STOP: Duration = Duration::from_secs(15);
/// How long the broker's memory may take to come down once the pager has
/// caught up with a consumer.
const SETTLE: Duration = Duration::from_secs(15);

fn broker_args() -> [&'static str; 6] {
    [
        "--shards",
        "2",
        "--queue-memory-budget",
        BUDGET,
        "--segment-size",
        "4194304",
    ]
}

/// One durable queue name for each shard of a 2-shard broker.
fn queues(prefix: &str) -> Vec<String> {
    (0..2)
        .map(|shard| {
            names_on_shard(prefix, shard)
                .next()
                .expect("a name for every shard")
        })
        .collect()
}

/// Every third message is transient.
fn is_persistent(n: usize) -> bool {
    n % 3 != 0
}

fn properties(n: usize) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongLongInt(n as i64));
    BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_headers(headers)
        .with_delivery_mode(if is_persistent(n) { 2 } else { 1 })
        .with_message_id(format!("m{n}").into())
        .with_timestamp(1_700_000_000 + n as u64)
}

fn body(n: usize) -> Vec<u8> {
    let mut body = format!("message {n} ").into_bytes();
    body.resize(BODY_LEN, (n % 251) as u8);
    body
}

fn number_of(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let number = text.split(' ').nth(1).unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("not one of ours: {text:.40}"))
}

/// Publishes messages `0..count` round-robin over `queues`, with
/// confirms; returns the broker's largest resident set seen meanwhile.
async fn publish_backlog(
    broker: &Broker,
    channel: &Channel,
    queues: &[String],
    count: usize,
) -> u64 {
    let mut rss_max = 0;
    publish_windows(
        channel,
        |n| queues[n % queues.len()].as_str(),
        count,
        properties,
        || rss_max = rss_max.max(broker.resident_bytes().expect("the broker's VmRSS")),
    )
    .await;
    rss_max
}

/// A consumer on `queue`, acking by hand.
async fn consume(channel: &Channel, queue: &str) -> Consumer {
    within(
        "basic.consume",
        channel.basic_consume(
            queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery `consumer` gets (`what` names it in a timeout).
async fn next_delivery(consumer: &mut Consumer, what: &str) -> Delivery {
    within(what, consumer.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}

/// Acks every this many deliveries at once (`multiple`), below the
/// prefetch the tests set.
const ACK_EVERY: usize = 100;

/// Consumes `expected` from `queue` (acking), asserting order and content
/// (message n published with `properties_of(n)`).
async fn consume_all(
    channel: &Channel,
    queue: &str,
    expected: &[usize],
    redelivered: bool,
    properties_of: fn(usize) -> BasicProperties,
) {
    let mut consumer = consume(channel, queue).await;
    for (i, &n) in expected.iter().enumerate() {
        let delivery = next_delivery(&mut consumer, "delivery").await;
        let got = number_of(&delivery.data);
        assert_eq!(got, n, "{queue}: out of order");
        assert_eq!(delivery.data, body(n), "{queue}: body of message {n}");
        assert_eq!(
            delivery.properties,
            properties_of(n),
            "{queue}: properties of message {n}"
        );
        assert_eq!(delivery.redelivered, redelivered, "{queue}: message {n}");
        if (i + 1) % ACK_EVERY == 0 || i + 1 == expected.len() {
            within(
                "ack",
                delivery.acker.ack(BasicAckOptions { multiple: true }),
            )
            .await
            .expect("basic.ack");
        }
    }
}

/// Consumes every queue of `names` to its end (a prefetch of 200):
/// message n of `0..count` from queue n mod the number of queues,
/// asserting order and content as `consume_all` does.
async fn drain_in_order(
    channel: &Channel,
    names: &[String],
    count: usize,
    redelivered: bool,
    properties_of: fn(usize) -> BasicProperties,
) {
    within(
        "basic.qos",
        channel.basic_qos(200, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    for (q, queue) in names.iter().enumerate() {
        let expected: Vec<usize> = (q..count).step_by(names.len()).collect();
        consume_all(channel, queue, &expected, redelivered, properties_of).await;
        assert_empty(channel, queue).await;
    }
}

async fn assert_empty(channel: &Channel, queue: &str) {
    let got = within(
        "basic.get",
        channel.basic_get(queue, BasicGetOptions::default()),
    )
    .await
    .expect("basic.get");
    assert!(got.is_none(), "{queue}: more messages than published");
}

#[tokio::test]
async fn a_backlog_many_times_the_budget_stays_on_disk_and_comes_back_in_order() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let broker = Broker::start_with(&broker_args());
    let (_connection, channel) = open(&broker).await;
    let names = queues("paged");
    for queue in &names {
        declare_durable(&channel, queue, FieldTable::default()).await;
    }
    let count = 100_000;
    let rss_start = broker.resident_bytes().expect("the broker's VmRSS");
    let rss_max = publish_backlog(&broker, &channel, &names, count).await;
    let backlog = (count * BODY_LEN) as u64;
    let grown = rss_max.saturating_sub(rss_start);
    // Kept in memory: the budget, the heads, an index entry per message,
    // and what the allocator holds on to; without paging the set would
    // grow by more than the backlog.
    assert!(
        grown < backlog / 2,
        "the resident set grew by {} MiB for a {} MiB backlog",
        grown >> 20,
        backlog >> 20
    );
    drain_in_order(&channel, &names, count, false, properties).await;
}

#[tokio::test]
async fn a_paged_backlog_keeps_its_persistent_messages_across_a_restart() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let mut broker = Broker::start_with(&broker_args());
    let names = queues("paged-restart");
    let count = 24_000;
    {
        let (connection, channel) = open(&broker).await;
        for queue in &names {
            declare_durable(&channel, queue, FieldTable::default()).await;
        }
        publish_backlog(&broker, &channel, &names, count).await;
        let _ = connection.close(200, "bye").await;
    }
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    broker.restart(&broker_args());
    let (_connection, channel) = open(&broker).await;
    for (q, queue) in names.iter().enumerate() {
        declare_durable(&channel, queue, FieldTable::default()).await;
        let mut expected = (q..count)
            .step_by(names.len())
            .filter(|&n| is_persistent(n));
        // basic.get past the head kept in memory: a get that finds the
        // head on disk is answered once it is read back.
        for n in expected.by_ref().take(3000) {
            let got = within(
                "basic.get",
                channel.basic_get(queue, BasicGetOptions::default()),
            )
            .await
            .expect("basic.get")
            .unwrap_or_else(|| panic!("{queue}: get-empty before message {n}"));
            assert_eq!(number_of(&got.delivery.data), n, "{queue}: out of order");
            assert_eq!(got.delivery.data, body(n));
            assert_eq!(got.delivery.properties, properties(n));
            within("ack", got.delivery.acker.ack(BasicAckOptions::default()))
                .await
                .expect("basic.ack");
        }
        within(
            "basic.qos",
            channel.basic_qos(200, BasicQosOptions::default()),
        )
        .await
        .expect("basic.qos");
        let expected: Vec<usize> = expected.collect();
        consume_all(&channel, queue, &expected, true, properties).await;
        assert_empty(&channel, queue).await;
    }
}

fn persistent_properties(n: usize) -> BasicProperties {
    properties(n).with_delivery_mode(2)
}

fn transient_properties(n: usize) -> BasicProperties {
    properties(n).with_delivery_mode(1)
}

/// A consumer without a prefetch limit that acks nothing holds a whole
/// paged backlog of persistent messages: the broker keeps a few MiB of
/// them in memory and the rest only by their place in the log; when the
/// consumer's channel closes they come back, in order and intact, read
/// back from disk.
#[tokio::test]
async fn unacked_persistent_messages_stay_on_disk_and_come_back_when_requeued() {
    hold_a_backlog_unacked_then_requeue("unacked", persistent_properties).await;
}

/// The same with transient messages: past the budget, the unacked ones
/// are written out as page records.
#[tokio::test]
async fn unacked_transient_messages_page_out_and_come_back_when_requeued() {
    hold_a_backlog_unacked_then_requeue("unacked-transient", transient_properties).await;
}

/// Publishes a backlog many times the budget to a durable queue on each
/// shard (message n with `properties_of(n)`), has a consumer without a
/// prefetch limit receive all of it without acking, checks the broker's
/// memory, then closes that consumer's channel and consumes everything
/// again, redelivered, in order and intact.
async fn hold_a_backlog_unacked_then_requeue(
    prefix: &str,
    properties_of: fn(usize) -> BasicProperties,
) {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let broker = Broker::start_with(&broker_args());
    let (connection, channel) = open(&broker).await;
    let names = queues(prefix);
    for queue in &names {
        declare_durable(&channel, queue, FieldTable::default()).await;
    }
    let count = 60_000;
    let queue_of = |n: usize| names[n % names.len()].as_str();
    publish_windows(&channel, queue_of, count, properties_of, || {}).await;
    let rss_start = broker.resident_bytes().expect("the broker's VmRSS");
    let holding = within("channel.open", connection.create_channel())
        .await
        .expect("channel.open");
    for queue in &names {
        let mut consumer = consume(&holding, queue).await;
        for _ in 0..count / names.len() {
            next_delivery(&mut consumer, "delivery").await;
        }
    }
    let backlog = (count * BODY_LEN) as u64;
    // With every unacked body in memory it grew by twice the backlog, for
    // good; now by a few MiB of them, an index entry each, and the read
    // buffers the allocator keeps for a while after they are freed. The
    // pager writes transient ones out as the consumer takes them, and on
    // a busy machine it finishes after the last delivery: wait for it.
    let grown = || (broker.resident_bytes().expect("the broker's VmRSS")).saturating_sub(rss_start);
    let settled = Instant::now() + SETTLE;
    while grown() >= backlog && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        grown() < backlog,
        "the resident set grew by {} MiB holding a {} MiB backlog unacked",
        grown() >> 20,
        backlog >> 20
    );
    within("channel.close", holding.close(200, "requeue"))
        .await
        .expect("channel.close");
    drain_in_order(&channel, &names, count, true, properties_of).await;
}

/// Publishes messages `0..count` to `queue` with `properties_of(n)`, with
/// confirms, in windows.
async fn publish_each(
    channel: &Channel,
    queue: &str,
    count: usize,
    properties_of: impl Fn(usize) -> BasicProperties,
) {
    publish_windows(channel, |_| queue, count, properties_of, || {}).await;
}

/// Publishes messages `0..count`, message n to `queue_of(n)` with
/// `properties_of(n)`, `WINDOW` of them in flight; `after_window` runs
/// once each window is confirmed.
async fn publish_windows<'q>(
    channel: &Channel,
    queue_of: impl Fn(usize) -> &'q str,
    count: usize,
    properties_of: impl Fn(usize) -> BasicProperties,
    mut after_window: impl FnMut(),
) {
    let mut window = Vec::with_capacity(WINDOW);
    for n in 0..count {
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                queue_of(n),
                BasicPublishOptions::default(),
                &body(n),
                properties_of(n),
            ),
        )
        .await
        .expect("basic.publish");
        window.push(confirm);
        if window.len() == WINDOW || n + 1 == count {
            for confirm in window.drain(..) {
                let confirmation = within("confirm", confirm).await.expect("confirm");
                assert!(confirmation.is_ack(), "message nacked");
            }
            after_window();
        }
    }
}

const PRIORITY_MAX: usize = 5;

fn priority_properties(n: usize) -> BasicProperties {
    properties(n).with_priority((n % (PRIORITY_MAX + 1)) as u8)
}

#[tokio::test]
async fn a_priority_backlog_past_the_budget_comes_back_in_priority_order() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let broker = Broker::start_with(&broker_args());
    let (_connection, channel) = open(&broker).await;
    let names = queues("paged-priority");
    let count = 25_000;
    let rss_start = broker.resident_bytes().expect("the broker's VmRSS");
    for queue in &names {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-max-priority".into(),
            AMQPValue::ShortShortUInt(PRIORITY_MAX as u8),
        );
        declare_durable(&channel, queue, arguments).await;
        publish_each(&channel, queue, count, priority_properties).await;
    }
    let grown = broker
        .resident_bytes()
        .expect("the broker's VmRSS")
        .saturating_sub(rss_start);
    let backlog = (names.len() * count * BODY_LEN) as u64;
    // Not paged, it grows by about 1.7 times the backlog; paged, by the
    // budget, the heads, the index and what the allocator keeps (25 to 30
    // MiB measured under load).
    assert!(
        grown < backlog,
        "the resident set grew by {} MiB for a {} MiB backlog: not paged",
        grown >> 20,
        backlog >> 20
    );
    within(
        "basic.qos",
        channel.basic_qos(200, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    // The highest priority first; within one, in publishing order.
    let mut expected: Vec<usize> = (0..count).collect();
    expected.sort_by_key(|&n| (std::cmp::Reverse(n % (PRIORITY_MAX + 1)), n));
    for queue in &names {
        let mut consumer = consume(&channel, queue).await;
        for &n in &expected {
            let delivery = next_delivery(&mut consumer, "delivery").await;
            assert_eq!(number_of(&delivery.data), n, "{queue}: out of order");
            assert_eq!(delivery.data, body(n), "{queue}: body of message {n}");
            assert_eq!(delivery.properties, priority_properties(n));
            within("ack", delivery.acker.ack(BasicAckOptions::default()))
                .await
                .expect("basic.ack");
        }
        assert_empty(&channel, queue).await;
    }
}

const TTL_MS: usize = 3000;

/// Queue arguments that dead-letter into queue `dead`.
fn dead_lettering_to(dead: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.into()),
    );
    arguments
}

/// A broker with a durable queue `PREFIX` on each shard that
/// dead-letters into a durable queue `PREFIX-dead` on the other shard,
/// and `count` messages published to each (n with `properties_of(n)`):
/// the broker, a connection, its confirming channel, the queues and their
/// dead-letter queues.
async fn dead_lettering_backlog(
    prefix: &str,
    count: usize,
    properties_of: fn(usize) -> BasicProperties,
) -> (Broker, Connection, Channel, Vec<String>, Vec<String>) {
    let broker = Broker::start_with(&broker_args());
    let (connection, channel) = open(&broker).await;
    let names = queues(prefix);
    let dead = queues(&format!("{prefix}-dead"));
    for (queue, dead) in names.iter().zip(dead.iter().rev()) {
        declare_durable(&channel, dead, FieldTable::default()).await;
        declare_durable(&channel, queue, dead_lettering_to(dead)).await;
        publish_each(&channel, queue, count, properties_of).await;
    }
    (broker, connection, channel, names, dead)
}

fn expiring_properties(n: usize) -> BasicProperties {
    properties(n).with_expiration(TTL_MS.to_string().into())
}

#[tokio::test]
async fn an_expiring_backlog_past_the_budget_is_dead_lettered_with_its_bodies() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let count = 8_000;
    let (_broker, _connection, channel, names, dead) =
        dead_lettering_backlog("paged-ttl", count, expiring_properties).await;
    within(
        "basic.qos",
        channel.basic_qos(200, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    for dead in &dead {
        consume_dead_letters(&channel, dead, count, properties).await;
    }
    for queue in &names {
        assert_empty(&channel, queue).await;
    }
}

/// Consumes the dead letters of messages `0..count` (published with
/// `properties_of(n)`) from `dead`, acking, asserting order, body, the
/// properties kept and the x-death header; then that nothing follows.
async fn consume_dead_letters(
    channel: &Channel,
    dead: &str,
    count: usize,
    properties_of: fn(usize) -> BasicProperties,
) {
    let mut consumer = consume(channel, dead).await;
    for n in 0..count {
        let delivery = next_delivery(&mut consumer, "dead letter").await;
        assert_eq!(number_of(&delivery.data), n, "{dead}: out of order");
        assert_eq!(delivery.data, body(n), "{dead}: body of message {n}");
        let (got, sent) = (&delivery.properties, properties_of(n));
        assert_eq!(got.message_id(), sent.message_id());
        assert_eq!(got.delivery_mode(), sent.delivery_mode());
        assert!(
            got.headers()
                .as_ref()
                .is_some_and(|headers| headers.inner().contains_key("x-death")),
            "{dead}: message {n} has no x-death"
        );
        within("ack", delivery.acker.ack(BasicAckOptions::default()))
            .await
            .expect("basic.ack");
    }
    assert_empty(channel, dead).await;
}

/// Persistent messages that a consumer without a prefetch limit holds
/// unacked (all but 4 MiB of them only on disk) and then rejects without
/// requeue are dead-lettered with their bodies, in order.
#[tokio::test]
async fn unacked_messages_on_disk_are_dead_lettered_with_their_bodies_when_rejected() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let count = 10_000;
    let (_broker, connection, channel, names, dead) =
        dead_lettering_backlog("unacked-reject", count, persistent_properties).await;
    let holding = within("channel.open", connection.create_channel())
        .await
        .expect("channel.open");
    for queue in &names {
        let mut consumer = consume(&holding, queue).await;
        let mut last = next_delivery(&mut consumer, "delivery").await;
        for _ in 1..count {
            last = next_delivery(&mut consumer, "delivery").await;
        }
        let every = BasicNackOptions {
            multiple: true,
            requeue: false,
        };
        within("basic.nack", last.acker.nack(every))
            .await
            .expect("basic.nack");
    }
    for dead in &dead {
        consume_dead_letters(&channel, dead, count, persistent_properties).await;
    }
    for queue in &names {
        assert_empty(&channel, queue).await;
    }
}
