//! Persistent messages across restarts: a real warren process on a data
//! directory of the test's own, stopped (SIGTERM, or SIGKILL while
//! publishers with confirms are mid-stream) and started again on it,
//! sometimes with another shard count. The queues are re-declared after
//! each restart, which is a no-op once definitions are durable.
//!
//! These tests need a broker they can restart, so they do nothing in
//! differential mode.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use common::amqp::{
    declare_durable, names_on_shard, open as open_unconfirmed, open_confirming as open, within,
    STEP,
};
use common::http::Http;
use common::Broker;
use futures_lite::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const STOP: Duration = Duration::from_secs(15);

/// A data directory that outlives the brokers started on it.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("warren-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the data directory");
        DataDir(dir)
    }

    fn start(&self, shards: &str) -> Broker {
        let dir = self.0.display().to_string();
        Broker::start_with(&[
            "--data-dir",
            &dir,
            "--shards",
            shards,
            "--segment-size",
            "65536",
        ])
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two queue names for each shard of a 2-shard broker.
fn queues(prefix: &str) -> Vec<String> {
    (0..2)
        .flat_map(|shard| names_on_shard(prefix, shard).take(2))
        .collect()
}

/// Every property set, headers included: they must come back byte for
/// byte.
fn properties(n: usize, persistent: bool) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongLongInt(n as i64));
    headers.insert("s".into(), AMQPValue::LongString(LongString::from("text")));
    BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_content_encoding("identity".into())
        .with_headers(headers)
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_priority(3)
        .with_correlation_id(format!("c{n}").into())
        .with_reply_to("replies".into())
        .with_message_id(format!("m{n}").into())
        .with_timestamp(1_700_000_000 + n as u64)
        .with_type("kind".into())
        .with_app_id("app".into())
}

fn body(n: usize) -> Vec<u8> {
    let mut body = format!("message {n} ").into_bytes();
    body.resize(body.len() + (n * 97) % 3000, (n % 251) as u8);
    body
}

async fn publish(channel: &Channel, queue: &str, n: usize, persistent: bool) -> Confirmation {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            &body(n),
            properties(n, persistent),
        ),
    )
    .await
    .expect("basic.publish");
    within("confirm", confirm).await.expect("confirm")
}

async fn get(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    within(
        "basic.get",
        channel.basic_get(queue, BasicGetOptions::default()),
    )
    .await
    .expect("basic.get")
}

/// Takes (and acks) every message of `queue`.
async fn drain(channel: &Channel, queue: &str) -> Vec<BasicGetMessage> {
    let mut messages = Vec::new();
    while let Some(message) = get(channel, queue).await {
        within(
            "ack",
            message.delivery.acker.ack(BasicAckOptions::default()),
        )
        .await
        .expect("basic.ack");
        messages.push(message);
    }
    messages
}

fn message_number(message: &BasicGetMessage) -> usize {
    let text = String::from_utf8_lossy(&message.delivery.data);
    let number = text.split(' ').nth(1).unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("not one of ours: {text:.40}"))
}

fn assert_intact(message: &BasicGetMessage) {
    let n = message_number(message);
    assert_eq!(message.delivery.data, body(n), "body of message {n}");
    assert_eq!(
        message.delivery.properties,
        properties(n, true),
        "properties of message {n}"
    );
}

#[tokio::test]
async fn persistent_messages_come_back_in_order_after_restarts_with_any_shard_count() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let dir = DataDir::new("restart");
    let names = queues("durable");
    let mut broker = dir.start("2");
    let (connection, channel) = open(&broker).await;
    let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (q, queue) in names.iter().enumerate() {
        declare_durable(&channel, queue, FieldTable::default()).await;
        for i in 0..20 {
            let n = q * 1000 + i;
            let persistent = i % 4 != 3;
            assert!(publish(&channel, queue, n, persistent).await.is_ack());
            if persistent {
                expected.entry(queue.clone()).or_default().push(n);
            }
        }
        // The first one is consumed and acked: it must not come back.
        let first = get(&channel, queue).await.expect("a message");
        within("ack", first.delivery.acker.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
        expected.get_mut(queue).expect("published").remove(0);
        // The next one is delivered and left unacked: it comes back.
        let unacked = get(&channel, queue).await.expect("a message");
        assert_eq!(message_number(&unacked), q * 1000 + 1);
    }
    // A queue that is deleted leaves nothing behind.
    declare_durable(&channel, "deleted-q", FieldTable::default()).await;
    assert!(publish(&channel, "deleted-q", 1, true).await.is_ack());
    within(
        "delete",
        channel.queue_delete("deleted-q", Default::default()),
    )
    .await
    .expect("queue.delete");
    let _ = connection.close(200, "bye").await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    for shards in ["2", "1", "3"] {
        broker = dir.start(shards);
        let (connection, channel) = open(&broker).await;
        for queue in &names {
            declare_durable(&channel, queue, FieldTable::default()).await;
            let mut messages = Vec::new();
            while let Some(message) = get(&channel, queue).await {
                messages.push(message);
            }
            let numbers: Vec<usize> = messages.iter().map(message_number).collect();
            assert_eq!(
                numbers, expected[queue],
                "{queue} after restart, {shards} shards"
            );
            for message in &messages {
                assert_intact(message);
                assert!(message.delivery.redelivered);
            }
        }
        declare_durable(&channel, "deleted-q", FieldTable::default()).await;
        assert!(
            get(&channel, "deleted-q").await.is_none(),
            "a deleted queue's message came back"
        );
        // Closing the connection requeues what the gets took.
        let _ = connection.close(200, "bye").await;
        assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    }
}

/// RabbitMQ keeps a persistent message that reached a durable queue
/// before a clean stop, confirmed or not. Without confirms nothing is
/// waited for, so the stop finds publishes still on their way to the
/// queue's shard and records not yet synced.
#[tokio::test]
async fn a_clean_stop_keeps_every_message_published_before_it() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    const EACH: usize = 300;
    let dir = DataDir::new("clean-stop");
    let names = queues("clean");
    let broker = dir.start("2");
    let (connection, channel) = open_unconfirmed(&broker).await;
    for queue in &names {
        declare_durable(&channel, queue, FieldTable::default()).await;
    }
    for i in 0..EACH {
        for (q, queue) in names.iter().enumerate() {
            let answer = publish(&channel, queue, q * 1000 + i, true).await;
            assert!(matches!(answer, Confirmation::NotRequested));
        }
    }
    let (_broker, found) = drain_after_a_clean_stop(&dir, broker, connection, &names).await;
    for (q, (queue, messages)) in names.iter().zip(found).enumerate() {
        let numbers: Vec<usize> = messages.iter().map(message_number).collect();
        let expected: Vec<usize> = (0..EACH).map(|i| q * 1000 + i).collect();
        assert_eq!(numbers, expected, "{queue} after a clean stop");
        messages.iter().for_each(assert_intact);
    }
}

/// Closes `connection`, stops `broker` cleanly, starts it again on `dir`
/// and drains each of `queues`: the broker, and what each queue held.
async fn drain_after_a_clean_stop(
    dir: &DataDir,
    mut broker: Broker,
    connection: Connection,
    queues: &[String],
) -> (Broker, Vec<Vec<BasicGetMessage>>) {
    let _ = connection.close(200, "bye").await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    let broker = dir.start("2");
    let (_connection, channel) = open(&broker).await;
    let mut found = Vec::new();
    for queue in queues {
        declare_durable(&channel, queue, FieldTable::default()).await;
        found.push(drain(&channel, queue).await);
    }
    (broker, found)
}

/// Declares each of `names` durable and publishes `each` persistent
/// messages to it, numbered `q * 1000 + i` for the queue's index q, each
/// confirmed.
async fn fill_confirmed(channel: &Channel, names: &[String], each: usize) {
    for (q, queue) in names.iter().enumerate() {
        declare_durable(channel, queue, FieldTable::default()).await;
        for i in 0..each {
            assert!(publish(channel, queue, q * 1000 + i, true).await.is_ack());
        }
    }
}

/// Consumes `queue` on `channel` and acks its first `count` deliveries;
/// the consumer holds the rest unacked.
async fn ack_first(channel: &Channel, queue: &str, count: usize) -> lapin::Consumer {
    let mut consumer = consume(channel, queue).await;
    for _ in 0..count {
        let delivery = next_delivery(&mut consumer).await;
        within("ack", delivery.acker.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    consumer
}

/// An ack that reached the broker before a clean stop is kept, even one
/// sent just before it: nothing waits for an ack's record, and the store
/// lets such records gather before it syncs them.
#[tokio::test]
async fn acks_sent_just_before_a_clean_stop_are_kept() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    const EACH: usize = 50;
    const ACKED: usize = 40;
    let dir = DataDir::new("acked-stop");
    let names = queues("acked");
    let broker = dir.start("2");
    let (connection, channel) = open(&broker).await;
    fill_confirmed(&channel, &names, EACH).await;
    for queue in &names {
        ack_first(&channel, queue, ACKED).await;
    }
    // The close is answered after the acks before it are handled; the
    // unacked rest goes back to the queues.
    let (_broker, found) = drain_after_a_clean_stop(&dir, broker, connection, &names).await;
    for (q, (queue, messages)) in names.iter().zip(found).enumerate() {
        let numbers: Vec<usize> = messages.iter().map(message_number).collect();
        let expected: Vec<usize> = (ACKED..EACH).map(|i| q * 1000 + i).collect();
        assert_eq!(numbers, expected, "{queue}: an acked message came back");
    }
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_confirmed_message() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let dir = DataDir::new("kill9");
    let names = queues("crash");
    let mut confirmed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut next = 0;
    for cycle in 0..3 {
        let broker = dir.start("2");
        let mut publishers = Vec::new();
        for queue in names.clone() {
            let (connection, channel) = open(&broker).await;
            declare_durable(&channel, &queue, FieldTable::default()).await;
            let first = next;
            next += 1_000_000;
            publishers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut window = Vec::new();
                for n in first.. {
                    let sent = channel
                        .basic_publish(
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            &body(n),
                            properties(n, true),
                        )
                        .await;
                    let Ok(confirm) = sent else { break };
                    window.push((n, confirm));
                    if window.len() == 64 {
                        for (n, confirm) in window.drain(..) {
                            match confirm.await {
                                Ok(confirmation) if confirmation.is_ack() => acked.push(n),
                                _ => return (queue, acked, connection),
                            }
                        }
                    }
                }
                (queue, acked, connection)
            }));
        }
        // Let them run, then pull the plug while they are mid-stream.
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(broker);
        for publisher in publishers {
            let (queue, acked, _connection) = tokio::time::timeout(STEP, publisher)
                .await
                .expect("a publisher notices the broker is gone")
                .expect("publisher task");
            assert!(
                !acked.is_empty() || cycle > 0,
                "nothing was confirmed in {queue}"
            );
            confirmed.entry(queue).or_default().extend(acked);
        }
        let broker = dir.start("2");
        let (connection, channel) = open(&broker).await;
        for queue in &names {
            declare_durable(&channel, queue, FieldTable::default()).await;
            let mut present = std::collections::BTreeSet::new();
            let mut taken = Vec::new();
            while let Some(message) = get(&channel, queue).await {
                assert_intact(&message);
                present.insert(message_number(&message));
                taken.push(message);
            }
            for n in &confirmed[queue] {
                assert!(
                    present.contains(n),
                    "cycle {cycle}: confirmed message {n} in {queue} is lost"
                );
            }
        }
        // Requeued by the close, so the next cycle checks them again.
        let _ = connection.close(200, "bye").await;
        drop(broker);
    }
}

/// A consumer acks the first messages of each queue, holds the rest
/// unacked, and the broker is killed: every message it had not acked
/// comes back, intact and once; one it acked may come back too (an ack's
/// record is not waited for). The acks kill segments (64 KiB each), and
/// a confirmed publish after them waits for the commit that deletes
/// those, so the kill comes after the deletions.
#[tokio::test]
async fn kill_9_after_acks_loses_no_unacked_message() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    const EACH: usize = 400;
    const ACKED: usize = 100;
    let dir = DataDir::new("kill9-acks");
    let names = queues("acking");
    let broker = dir.start("2");
    let (_connection, channel) = open(&broker).await;
    fill_confirmed(&channel, &names, EACH).await;
    let mut consumers = Vec::new();
    for (q, queue) in names.iter().enumerate() {
        let (connection, channel) = open(&broker).await;
        let consumer = ack_first(&channel, queue, ACKED).await;
        // The marker, after the acks on the same channel.
        assert!(publish(&channel, queue, q * 1000 + EACH, true)
            .await
            .is_ack());
        consumers.push((connection, channel, consumer));
    }
    drop(broker);
    let broker = dir.start("2");
    let (_connection, channel) = open(&broker).await;
    for (q, queue) in names.iter().enumerate() {
        declare_durable(&channel, queue, FieldTable::default()).await;
        let messages = drain(&channel, queue).await;
        messages.iter().for_each(assert_intact);
        let back: Vec<usize> = messages.iter().map(message_number).collect();
        assert!(
            back.windows(2).all(|pair| pair[0] < pair[1]),
            "{queue}: in order and once each"
        );
        let never_acked: Vec<usize> = (q * 1000 + ACKED..=q * 1000 + EACH).collect();
        let acked = q * 1000..q * 1000 + ACKED;
        let (came_back, rest): (Vec<usize>, Vec<usize>) =
            back.iter().partition(|n| acked.contains(n));
        assert_eq!(
            rest, never_acked,
            "{queue}: the unacked messages and the marker"
        );
        assert!(came_back.len() <= ACKED, "{queue}");
    }
}

#[tokio::test]
async fn a_reject_publish_queue_nacks_what_it_refuses() {
    let broker = Broker::start();
    let (_connection, channel) = open(&broker).await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = format!("rejecting-{}", std::process::id());
    declare_durable(&channel, &queue, arguments).await;
    assert!(publish(&channel, &queue, 1, true).await.is_ack());
    let refused = publish(&channel, &queue, 2, true).await;
    assert!(matches!(refused, Confirmation::Nack(_)), "got {refused:?}");
    assert!(publish(&channel, &queue, 3, false).await.is_nack());
    let left = drain(&channel, &queue).await;
    assert_eq!(left.iter().map(message_number).collect::<Vec<_>>(), [1]);
    assert!(
        publish(&channel, &queue, 4, true).await.is_ack(),
        "room again"
    );
}

#[tokio::test]
async fn tx_commit_ok_means_the_committed_messages_survive_kill_9() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let dir = DataDir::new("tx");
    let broker = dir.start("2");
    let url = broker.amqp_url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let connection = within("connect", connect).await.expect("connect");
    let channel = within("channel", connection.create_channel())
        .await
        .expect("channel");
    declare_durable(&channel, "tx-q", FieldTable::default()).await;
    within("tx.select", channel.tx_select())
        .await
        .expect("tx.select");
    for n in 0..50 {
        within(
            "publish",
            channel.basic_publish(
                "",
                "tx-q",
                BasicPublishOptions::default(),
                &body(n),
                properties(n, true),
            ),
        )
        .await
        .expect("publish");
    }
    within("tx.commit", channel.tx_commit())
        .await
        .expect("tx.commit");
    drop(broker);
    let broker = dir.start("2");
    let (_connection, channel) = open(&broker).await;
    declare_durable(&channel, "tx-q", FieldTable::default()).await;
    let messages = drain(&channel, "tx-q").await;
    assert_eq!(
        messages.iter().map(message_number).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    drop(broker);
}

#[tokio::test]
async fn confirms_keep_coming_when_messages_fill_many_segments() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let dir = DataDir::new("segments");
    let broker = dir.start("2");
    let (_connection, channel) = open(&broker).await;
    declare_durable(&channel, "big-q", FieldTable::default()).await;
    let started = Instant::now();
    for n in 0..300 {
        assert!(publish(&channel, "big-q", n, true).await.is_ack());
    }
    let consumed = drain(&channel, "big-q").await;
    assert_eq!(consumed.len(), 300);
    // Everything was acked: only the segment being written remains.
    let messages = dir.0.join("messages");
    let wait_until = Instant::now() + STEP;
    loop {
        let segments = std::fs::read_dir(&messages)
            .expect("the message store directory")
            .count();
        if segments <= 2 {
            break;
        }
        assert!(
            Instant::now() < wait_until,
            "{segments} segments remain after everything was acked"
        );
        assert!(publish(&channel, "big-q", 1, false).await.is_ack());
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn free_disk_below_the_limit_blocks_publishers_as_rabbitmq_does() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    // No disk here has this much free.
    let broker = Broker::start_with(&["--disk-free-limit", "1000000GB"]);
    let queue = format!("disk-alarm-{}", std::process::id());
    let mut publisher = common::PyProcess::spawn(
        "blocked_publisher.py",
        &[&queue, "1"],
        &broker.amqp_url(),
        &[],
    );
    publisher.wait_for_line("blocked low on disk", STEP);
    assert!(
        broker.log_tail().contains("disk resource limit alarm set"),
        "{}",
        broker.log_tail()
    );
    publisher.kill();
}

/// After a restart every recovered message waits on disk until it is read
/// back, and only a queue's head (about 1 MiB) is read back unasked: the
/// management API's get of more than that reads on rather than stopping
/// at the first message on disk, and requeues what it took.
#[tokio::test]
async fn the_management_api_gets_recovered_messages_from_disk() {
    const COUNT: usize = 1200;
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let mut broker = Broker::start_managed(&[]);
    let (connection, channel) = open(&broker).await;
    declare_durable(&channel, "api-get", FieldTable::default()).await;
    let mut confirms = Vec::new();
    for n in 0..COUNT {
        let confirm = channel
            .basic_publish(
                "",
                "api-get",
                BasicPublishOptions::default(),
                &body(n),
                properties(n, true),
            )
            .await
            .expect("basic.publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(within("confirm", confirm).await.expect("confirm").is_ack());
    }
    let _ = connection.close(200, "bye").await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    broker.restart(&[]);
    let http = Http::new(&broker.management_url(), "guest", "guest");
    let request =
        serde_json::json!({"count": COUNT, "ackmode": "ack_requeue_true", "encoding": "base64"});
    let (status, got) = tokio::task::spawn_blocking(move || {
        http.call("POST", "/api/queues/%2F/api-get/get", Some(&request))
    })
    .await
    .expect("the request runs");
    assert_eq!(status, 200, "{got}");
    let payloads: Vec<Vec<u8>> = got
        .as_array()
        .expect("an array of messages")
        .iter()
        .map(|message| {
            let payload = message["payload"].as_str().expect("a payload");
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .expect("base64")
        })
        .collect();
    assert_eq!(payloads.len(), COUNT, "every message, from disk too");
    assert!(
        payloads == (0..COUNT).map(body).collect::<Vec<_>>(),
        "in order, intact"
    );
    let (_connection, channel) = open(&broker).await;
    let numbers: Vec<usize> = drain(&channel, "api-get")
        .await
        .iter()
        .map(message_number)
        .collect();
    assert_eq!(
        numbers,
        (0..COUNT).collect::<Vec<_>>(),
        "all requeued, in order"
    );
}

/// A persistent message waiting in a durable x-delayed-message exchange is
/// confirmed once it is on disk, survives kill -9 and is routed once its
/// delay is over, once; a transient one does not survive, as with the
/// plugin.
#[tokio::test]
async fn delayed_persistent_messages_survive_kill_9_and_are_routed_once() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let mut broker = Broker::start();
    let (_connection, channel) = open(&broker).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("direct".into()),
    );
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let kind = ExchangeKind::Custom("x-delayed-message".to_owned());
    within(
        "exchange.declare",
        channel.exchange_declare("later", kind, options, arguments),
    )
    .await
    .expect("exchange.declare");
    declare_durable(&channel, "delayed-to", FieldTable::default()).await;
    within(
        "queue.bind",
        channel.queue_bind(
            "delayed-to",
            "later",
            "k",
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind");
    for (body, delivery_mode) in [(&b"kept"[..], 2), (&b"lost"[..], 1)] {
        let mut headers = FieldTable::default();
        headers.insert("x-delay".into(), AMQPValue::LongInt(1500));
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(delivery_mode);
        let confirm = within(
            "basic.publish",
            channel.basic_publish("later", "k", Default::default(), body, properties),
        )
        .await
        .expect("basic.publish");
        assert!(within("confirm", confirm).await.expect("confirm").is_ack());
    }
    broker.kill_9();
    broker.restart(&[]);
    let (connection, channel) = open(&broker).await;
    let mut consumer = consume(&channel, "delayed-to").await;
    let routed = next_delivery(&mut consumer).await;
    assert_eq!(routed.data, b"kept");
    let delay = routed
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delay").cloned());
    assert_eq!(delay, Some(AMQPValue::LongInt(-1500)));
    // Left unacked, it goes back to its queue at the clean stop. Routed
    // once: after the restart, a message delayed by 1 ms comes after
    // anything re-armed would (due already, it would go first), and the
    // transient one never comes.
    let _ = connection.close(200, "bye").await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    broker.restart(&[]);
    let (_connection, channel) = open(&broker).await;
    let mut headers = FieldTable::default();
    headers.insert("x-delay".into(), AMQPValue::LongInt(1));
    let properties = BasicProperties::default().with_headers(headers);
    let confirm = within(
        "basic.publish",
        channel.basic_publish("later", "k", Default::default(), b"marker", properties),
    )
    .await
    .expect("basic.publish");
    assert!(within("confirm", confirm).await.expect("confirm").is_ack());
    let mut consumer = consume(&channel, "delayed-to").await;
    let first = next_delivery(&mut consumer).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!(
        [first.data, second.data],
        [b"kept".to_vec(), b"marker".to_vec()],
        "nothing routed twice, nothing transient back"
    );
}

async fn consume(channel: &Channel, queue: &str) -> lapin::Consumer {
    within(
        "basic.consume",
        channel.basic_consume(queue, "", Default::default(), FieldTable::default()),
    )
    .await
    .expect("basic.consume")
}

async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery")
}
