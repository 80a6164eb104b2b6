//! Queue arguments with a real client (lapin): validation, TTLs and expiry,
//! dead-lettering (with the target on the other shard of a warren), length
//! limits, priorities, single active consumer, delivery limits; and
//! sender-selected distribution (CC/BCC).
//!
//! The header shapes (x-death, x-delivery-count) are asserted value by
//! value, so the same tests check RabbitMQ in the differential mode; lapin
//! reads tables into sorted maps, so the order of their fields is checked
//! by the unit tests of `queue::dead_letter` instead.

use std::time::Instant;

use super::*;
use warren::catalog::queue_shard;

/// A fresh queue name whose queue lives on `shard` of a two-shard warren.
pub(crate) fn unique_on_shard(what: &str, shard: usize) -> String {
    loop {
        let name = unique(what);
        if queue_shard(b"/", name.as_bytes(), 2) == shard {
            return name;
        }
    }
}

pub(crate) async fn declare_with(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> lapin::Result<()> {
    within(
        "queue.declare",
        channel.queue_declare(name, QueueDeclareOptions::default(), arguments),
    )
    .await
    .map(drop)
}

fn int(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

/// The reply text of the close that `result` reports.
pub(crate) fn reply_text<T: std::fmt::Debug>(result: lapin::Result<T>) -> String {
    match result {
        Err(lapin::Error::ProtocolError(error)) => error.get_message().to_string(),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

pub(crate) fn header<'a>(delivery: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(key))
}

fn text(value: Option<&AMQPValue>) -> String {
    match value {
        Some(AMQPValue::LongString(text)) => text.to_string(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

/// The x-death entries of a dead-lettered delivery.
fn deaths(delivery: &Delivery) -> Vec<std::collections::BTreeMap<ShortString, AMQPValue>> {
    match header(delivery, "x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .iter()
            .map(|entry| match entry {
                AMQPValue::FieldTable(table) => table.inner().clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("x-death {other:?}"),
    }
}

/// Asserts one x-death entry: RabbitMQ's fields and types.
fn assert_death(
    entry: &std::collections::BTreeMap<ShortString, AMQPValue>,
    (queue, reason, count): (&str, &str, i64),
    (exchange, routing_keys): (&str, &[&str]),
    original_expiration: Option<&str>,
) {
    let get = |key: &str| entry.get(&ShortString::from(key));
    assert_eq!(text(get("queue")), queue, "{entry:?}");
    assert_eq!(text(get("reason")), reason, "{entry:?}");
    assert_eq!(get("count"), Some(&int(count)), "{entry:?}");
    assert_eq!(text(get("exchange")), exchange, "{entry:?}");
    let keys: Vec<AMQPValue> = routing_keys.iter().map(|key| long_string(key)).collect();
    assert_eq!(
        get("routing-keys"),
        Some(&AMQPValue::FieldArray(FieldArray::from(keys))),
        "{entry:?}"
    );
    assert!(
        matches!(get("time"), Some(AMQPValue::Timestamp(_))),
        "{entry:?}"
    );
    let expected_len = 6 + usize::from(original_expiration.is_some());
    assert_eq!(entry.len(), expected_len, "{entry:?}");
    if let Some(expiration) = original_expiration {
        assert_eq!(text(get("original-expiration")), expiration);
    }
}

/// Asserts the x-first-death-* (and on warren, RabbitMQ 3.13's
/// x-last-death-*) headers.
fn assert_first_and_last_death(
    broker: &Broker,
    delivery: &Delivery,
    first: (&str, &str, &str),
    last: (&str, &str, &str),
) {
    let triple = |prefix: &str| {
        (
            text(header(delivery, &format!("{prefix}-queue"))),
            text(header(delivery, &format!("{prefix}-reason"))),
            text(header(delivery, &format!("{prefix}-exchange"))),
        )
    };
    let owned = |(a, b, c): (&str, &str, &str)| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(triple("x-first-death"), owned(first));
    // RabbitMQ 3.10 has no x-last-death-*; 3.13 and warren add them.
    if !broker.is_external() {
        assert_eq!(triple("x-last-death"), owned(last));
    }
}

/// Waits until `name` is gone: x-expires has no event to await, so this
/// asks, with a deadline. It asks with queue.bind, which (unlike a passive
/// declare, in RabbitMQ and warren) does not count as using the queue.
async fn await_queue_gone(connection: &Connection, name: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let probe = channel(connection).await;
        let bound = within(
            "queue.bind",
            probe.queue_bind(
                name,
                "amq.fanout",
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        match bound {
            Err(error) => {
                assert_eq!(reply_code::<()>(Err(error)), 404);
                return;
            }
            Ok(()) => {
                close_channel(&probe).await;
                assert!(Instant::now() < deadline, "{name} did not expire");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// RabbitMQ 3.10's texts, checked in the differential mode.
#[tokio::test]
async fn queue_arguments_are_validated_with_rabbitmq_texts() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let name = unique("invalid");
    let resource = format!("queue '{name}' in vhost '/'");
    let cases: Vec<(FieldTable, String)> = vec![
        (
            table(&[("x-message-ttl", int(-1))]),
            format!("invalid arg 'x-message-ttl' for {resource}: {{value_negative,-1}}"),
        ),
        (
            table(&[("x-message-ttl", long_string("10"))]),
            format!("invalid arg 'x-message-ttl' for {resource}: \"expected integer, got longstr\""),
        ),
        (
            table(&[("x-expires", int(0))]),
            format!("invalid arg 'x-expires' for {resource}: {{value_zero,0}}"),
        ),
        (
            table(&[("x-max-length", int(-1))]),
            format!("invalid arg 'x-max-length' for {resource}: {{value_negative,-1}}"),
        ),
        (
            table(&[("x-max-priority", int(256))]),
            format!("invalid arg 'x-max-priority' for {resource}: {{max_value_exceeded,256}}"),
        ),
        (
            table(&[("x-overflow", long_string("foo"))]),
            format!("invalid arg 'x-overflow' for {resource}: invalid_overflow"),
        ),
        (
            table(&[("x-single-active-consumer", long_string("yes"))]),
            format!("invalid arg 'x-single-active-consumer' for {resource}: {{unacceptable_type,longstr}}"),
        ),
        (
            table(&[("x-dead-letter-routing-key", long_string("k"))]),
            format!("invalid arg 'x-dead-letter-routing-key' for {resource}: routing_key_but_no_dlx_defined"),
        ),
        // default and lazy are accepted (and ignored: warren has one mode).
        (
            table(&[("x-queue-mode", long_string("bogus"))]),
            format!("invalid arg 'x-queue-mode' for {resource}: \"unsupported queue mode 'bogus'\""),
        ),
        (
            table(&[("x-queue-mode", int(5))]),
            format!("invalid arg 'x-queue-mode' for {resource}: {{unacceptable_type,long}}"),
        ),
    ];
    for (arguments, expected) in cases {
        let channel = channel(&connection).await;
        let result = declare_with(&channel, &name, arguments).await;
        assert_eq!(
            reply_text(result),
            format!("PRECONDITION_FAILED - {expected}")
        );
    }
    close(&connection).await;
}

#[tokio::test]
async fn redeclaring_with_other_arguments_is_precondition_failed() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = channel(&connection).await;
    let name = unique("inequivalent");
    declare_with(&channel, &name, table(&[("x-message-ttl", int(100))]))
        .await
        .expect("declare");
    declare_with(&channel, &name, table(&[("x-message-ttl", int(100))]))
        .await
        .expect("an equal redeclare");
    let result = declare_with(&channel, &name, table(&[("x-message-ttl", int(200))])).await;
    assert_eq!(
        reply_text(result),
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{name}' in \
             vhost '/': received '200' but current is '100'"
        )
    );
    let channel = super::channel(&connection).await;
    delete_queue(&channel, &name).await;
    close(&connection).await;
}

/// A queue on shard 0 whose dead letters go through the default exchange
/// to a queue on shard 1, consumed there.
struct DeadLetterPair {
    source: String,
    target: String,
    consumer: Consumer,
}

async fn dead_letter_pair(
    channel: &Channel,
    what: &str,
    arguments: &[(&str, AMQPValue)],
) -> DeadLetterPair {
    let source = unique_on_shard(what, 0);
    let target = unique_on_shard(&format!("{what}-dlq"), 1);
    declare_queue(channel, &target, QueueDeclareOptions::default()).await;
    let mut all = vec![
        ("x-dead-letter-exchange", long_string("")),
        ("x-dead-letter-routing-key", long_string(&target)),
    ];
    all.extend(arguments.iter().cloned());
    declare_with(channel, &source, table(&all))
        .await
        .expect("declare the source");
    let consumer = consume(channel, &target, true).await;
    DeadLetterPair {
        source,
        target,
        consumer,
    }
}

impl DeadLetterPair {
    async fn delete(self, channel: &Channel) {
        delete_queue(channel, &self.source).await;
        delete_queue(channel, &self.target).await;
    }
}

// The message expires with nothing else happening on its queue (the
// shard's timer), and reaches the other shard with RabbitMQ's x-death.
#[tokio::test]
async fn expired_messages_are_dead_lettered_across_shards() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let mut pair = dead_letter_pair(&channel, "ttl", &[("x-message-ttl", int(50))]).await;
    let mut headers = FieldTable::default();
    headers.insert("h".into(), int(1));
    let properties = BasicProperties::default()
        .with_expiration("60000".into())
        .with_headers(headers)
        .with_priority(3);
    publish_with(&channel, "", &pair.source, b"late", properties).await;
    let delivery = next_delivery(&mut pair.consumer).await;
    assert_eq!(delivery.data, b"late");
    assert_eq!(delivery.routing_key.as_str(), pair.target);
    assert_eq!(delivery.exchange.as_str(), "");
    assert_eq!(
        delivery.properties.expiration(),
        &None,
        "expiration moves to x-death"
    );
    assert_eq!(delivery.properties.priority(), &Some(3));
    assert_eq!(header(&delivery, "h"), Some(&int(1)));
    let deaths = deaths(&delivery);
    assert_eq!(deaths.len(), 1);
    assert_death(
        &deaths[0],
        (&pair.source, "expired", 1),
        ("", &[&pair.source]),
        Some("60000"),
    );
    assert_first_and_last_death(
        &broker,
        &delivery,
        (&pair.source, "expired", ""),
        (&pair.source, "expired", ""),
    );
    pair.delete(&channel).await;
    close(&connection).await;
}

// expiration "0": nobody is consuming, so the message expires at once;
// basic.get and the ready count never see it.
#[tokio::test]
async fn per_message_expiration_expires_and_counts_leave_it_out() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let mut pair = dead_letter_pair(&channel, "expiration", &[]).await;
    let properties = BasicProperties::default().with_expiration("0".into());
    publish_with(&channel, "", &pair.source, b"now-or-never", properties).await;
    let delivery = next_delivery(&mut pair.consumer).await;
    assert_eq!(delivery.data, b"now-or-never");
    assert_death(
        &deaths(&delivery)[0],
        (&pair.source, "expired", 1),
        ("", &[&pair.source]),
        Some("0"),
    );
    assert!(get(&channel, &pair.source, true).await.is_none());
    assert_eq!(queue_counts(&channel, &pair.source).await, (0, 0));
    pair.delete(&channel).await;
    close(&connection).await;
}

#[tokio::test]
async fn invalid_expiration_is_precondition_failed() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let errors = channel_errors(&channel);
    let name = declare_exclusive_queue(&channel, "bad-expiration").await;
    let properties = BasicProperties::default().with_expiration("10x".into());
    publish_with(&channel, "", &name, b"x", properties).await;
    let mut errors = errors;
    let error = within("channel.close", errors.recv())
        .await
        .expect("an error");
    assert_eq!(
        reply_text::<()>(Err(error)),
        "PRECONDITION_FAILED - invalid expiration '10x': {leftover_string,\"x\"}"
    );
    close(&connection).await;
}

// Rejected twice: the second death of the same queue and reason counts 2
// in the one x-death entry; a reject is never a cycle.
#[tokio::test]
async fn rejected_messages_are_dead_lettered_and_counted() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let source = unique_on_shard("rejected", 1);
    let target = unique_on_shard("rejected-dlq", 0);
    declare_queue(&channel, &target, QueueDeclareOptions::default()).await;
    bind_queue(
        &channel,
        &target,
        "amq.direct",
        &source,
        FieldTable::default(),
    )
    .await;
    let arguments = table(&[("x-dead-letter-exchange", long_string("amq.direct"))]);
    declare_with(&channel, &source, arguments)
        .await
        .expect("declare");
    publish(&channel, "", &source, b"no").await;
    for round in 1..=2 {
        let mut consumer = consume(&channel, &source, false).await;
        let delivery = next_delivery(&mut consumer).await;
        within(
            "basic.reject",
            delivery.acker.reject(BasicRejectOptions { requeue: false }),
        )
        .await
        .expect("basic.reject");
        within(
            "basic.cancel",
            channel.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()),
        )
        .await
        .expect("basic.cancel");
        let mut target_consumer = consume(&channel, &target, false).await;
        let dead = next_delivery(&mut target_consumer).await;
        assert_eq!(dead.exchange.as_str(), "amq.direct");
        assert_eq!(dead.routing_key.as_str(), source);
        assert_death(
            &deaths(&dead)[0],
            (&source, "rejected", round),
            ("", &[&source]),
            None,
        );
        assert_first_and_last_death(
            &broker,
            &dead,
            (&source, "rejected", ""),
            (&source, "rejected", ""),
        );
        // Send it round again: publish it back to the source as it is.
        let properties = dead.properties.clone();
        ack(&dead, false).await;
        within(
            "basic.cancel",
            channel.basic_cancel(
                target_consumer.tag().as_str(),
                BasicCancelOptions::default(),
            ),
        )
        .await
        .expect("basic.cancel");
        if round == 1 {
            publish_with(&channel, "", &source, b"no", properties).await;
        }
    }
    delete_queue(&channel, &source).await;
    delete_queue(&channel, &target).await;
    close(&connection).await;
}

// A queue that dead-letters expired messages to itself drops them
// (RabbitMQ's cycle check), while another target of the same dead-letter
// exchange still gets them.
#[tokio::test]
async fn dead_letter_cycles_are_dropped() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let exchange = unique("cycle-x");
    declare_exchange(&channel, &exchange, ExchangeKind::Fanout).await;
    let looping = unique_on_shard("cycle", 0);
    let witness = unique_on_shard("cycle-witness", 0);
    let arguments = table(&[
        ("x-dead-letter-exchange", long_string(&exchange)),
        ("x-message-ttl", int(20)),
    ]);
    declare_with(&channel, &looping, arguments)
        .await
        .expect("declare");
    declare_queue(&channel, &witness, QueueDeclareOptions::default()).await;
    bind_queue(&channel, &looping, &exchange, "", FieldTable::default()).await;
    bind_queue(&channel, &witness, &exchange, "", FieldTable::default()).await;
    publish(&channel, "", &looping, b"round").await;
    let mut consumer = consume(&channel, &witness, true).await;
    let delivery = next_delivery(&mut consumer).await;
    assert_death(
        &deaths(&delivery)[0],
        (&looping, "expired", 1),
        ("", &[&looping]),
        None,
    );
    assert_eq!(queue_counts(&channel, &looping).await, (0, 0));
    delete_queue(&channel, &looping).await;
    delete_queue(&channel, &witness).await;
    delete_exchange(&channel, &exchange).await;
    close(&connection).await;
}

// drop-head: the oldest goes, dead-lettered "maxlen".
#[tokio::test]
async fn max_length_drops_the_head_into_the_dead_letter_queue() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let mut pair = dead_letter_pair(&channel, "maxlen", &[("x-max-length", int(2))]).await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2", b"3"] {
        publish_confirmed(&confirms, "", &pair.source, body).await;
    }
    let delivery = next_delivery(&mut pair.consumer).await;
    assert_eq!(delivery.data, b"1");
    assert_death(
        &deaths(&delivery)[0],
        (&pair.source, "maxlen", 1),
        ("", &[&pair.source]),
        None,
    );
    assert_eq!(
        drain(&channel, &pair.source).await,
        [b"2".to_vec(), b"3".to_vec()]
    );
    pair.delete(&channel).await;
    close(&connection).await;
}

// x-max-length-bytes counts body bytes of ready messages.
#[tokio::test]
async fn max_length_bytes_keeps_the_newest_that_fit() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let name =
        declare_exclusive_queue_with(&channel, "maxbytes", &[("x-max-length-bytes", int(5))]).await;
    let confirms = confirm_channel(&connection).await;
    for body in [&b"abc"[..], b"de", b"fgh"] {
        publish_confirmed(&confirms, "", &name, body).await;
    }
    assert_eq!(
        drain(&channel, &name).await,
        [b"de".to_vec(), b"fgh".to_vec()]
    );
    close(&connection).await;
}

async fn declare_exclusive_queue_with(
    channel: &Channel,
    what: &str,
    arguments: &[(&str, AMQPValue)],
) -> String {
    let name = unique(what);
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "queue.declare",
        channel.queue_declare(&name, options, table(arguments)),
    )
    .await
    .unwrap_or_else(|error| panic!("queue.declare {name}: {error}"));
    name
}

// reject-publish keeps what is there and refuses the newcomer;
// reject-publish-dlx also dead-letters it.
#[tokio::test]
async fn reject_publish_refuses_the_new_message() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let mut pair = dead_letter_pair(
        &channel,
        "reject-publish-dlx",
        &[
            ("x-max-length", int(1)),
            ("x-overflow", long_string("reject-publish-dlx")),
        ],
    )
    .await;
    let plain = declare_exclusive_queue_with(
        &channel,
        "reject-publish",
        &[
            ("x-max-length", int(1)),
            ("x-overflow", long_string("reject-publish")),
        ],
    )
    .await;
    for queue in [&pair.source, &plain] {
        publish(&channel, "", queue, b"first").await;
        publish(&channel, "", queue, b"second").await;
    }
    let delivery = next_delivery(&mut pair.consumer).await;
    assert_eq!(delivery.data, b"second");
    assert_death(
        &deaths(&delivery)[0],
        (&pair.source, "maxlen", 1),
        ("", &[&pair.source]),
        None,
    );
    assert_eq!(drain(&channel, &plain).await, [b"first".to_vec()]);
    assert_eq!(drain(&channel, &pair.source).await, [b"first".to_vec()]);
    pair.delete(&channel).await;
    close(&connection).await;
}

// Higher priority first, FIFO within a priority, a requeued message keeps
// its place within its priority, and basic.get honours it all.
#[tokio::test]
async fn priorities_order_delivery_and_requeue_keeps_place() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let name =
        declare_exclusive_queue_with(&channel, "priority", &[("x-max-priority", int(5))]).await;
    let confirms = confirm_channel(&connection).await;
    for (body, priority) in [
        ("low", 1),
        ("high-a", 5),
        ("mid", 3),
        ("high-b", 9),
        ("none", 0),
    ] {
        let properties = BasicProperties::default().with_priority(priority);
        publish_confirmed_with(&confirms, "", &name, body.as_bytes(), properties).await;
    }
    let first = get(&channel, &name, false).await.expect("a message");
    assert_eq!(first.delivery.data, b"high-a");
    within(
        "basic.nack",
        first.delivery.acker.nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        }),
    )
    .await
    .expect("basic.nack");
    let bodies: Vec<String> = drain(&channel, &name)
        .await
        .into_iter()
        .map(|body| String::from_utf8_lossy(&body).into_owned())
        .collect();
    assert_eq!(bodies, ["high-a", "high-b", "mid", "low", "none"]);
    close(&connection).await;
}

#[tokio::test]
async fn unused_queue_expires() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let name = unique("expires");
    declare_with(&channel, &name, table(&[("x-expires", int(100))]))
        .await
        .expect("declare");
    publish(&channel, "", &name, b"kept until the queue goes").await;
    await_queue_gone(&connection, &name).await;
    close(&connection).await;
}

// One consumer receives at a time; when it cancels, the next takes over.
#[tokio::test]
async fn single_active_consumer_hands_over_on_cancel() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let name = declare_exclusive_queue_with(
        &channel,
        "sac",
        &[("x-single-active-consumer", AMQPValue::Boolean(true))],
    )
    .await;
    let mut first = consume(&channel, &name, true).await;
    let second_channel = super::channel(&connection).await;
    let mut second = consume(&second_channel, &name, true).await;
    let confirms = confirm_channel(&connection).await;
    for body in [b"1", b"2", b"3"] {
        publish_confirmed(&confirms, "", &name, body).await;
    }
    for body in [b"1", b"2", b"3"] {
        assert_eq!(next_delivery(&mut first).await.data, body);
    }
    within(
        "basic.cancel",
        channel.basic_cancel(first.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("basic.cancel");
    publish_confirmed(&confirms, "", &name, b"4").await;
    assert_eq!(next_delivery(&mut second).await.data, b"4");
    close(&connection).await;
}

// x-delivery-count counts the returns; past x-delivery-limit the message
// is dead-lettered "delivery_limit", without the x-delivery-count header.
#[tokio::test]
async fn delivery_limit_dead_letters_after_too_many_returns() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let source = unique_on_shard("delivery-limit", 1);
    let target = unique_on_shard("delivery-limit-dlq", 0);
    declare_queue(&channel, &target, QueueDeclareOptions::default()).await;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let arguments = table(&[
        ("x-queue-type", long_string("quorum")),
        ("x-delivery-limit", int(1)),
        ("x-dead-letter-exchange", long_string("")),
        ("x-dead-letter-routing-key", long_string(&target)),
    ]);
    within(
        "queue.declare",
        channel.queue_declare(&source, options, arguments),
    )
    .await
    .expect("declare the quorum queue");
    let confirms = confirm_channel(&connection).await;
    publish_confirmed(&confirms, "", &source, b"poison").await;
    let mut consumer = consume(&channel, &source, false).await;
    for count in 0..=1 {
        let delivery = next_delivery(&mut consumer).await;
        // RabbitMQ 3.10 adds the header to a consumer's delivery once the
        // message came back (basic.get always has it).
        let expected = (count > 0).then(|| int(count));
        assert_eq!(header(&delivery, "x-delivery-count"), expected.as_ref());
        within(
            "basic.nack",
            delivery.acker.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            }),
        )
        .await
        .expect("basic.nack");
    }
    let mut dead_consumer = consume(&channel, &target, true).await;
    let dead = next_delivery(&mut dead_consumer).await;
    assert_eq!(dead.data, b"poison");
    assert_eq!(header(&dead, "x-delivery-count"), None);
    assert_death(
        &deaths(&dead)[0],
        (&source, "delivery_limit", 1),
        ("", &[&source]),
        None,
    );
    delete_queue(&channel, &source).await;
    delete_queue(&channel, &target).await;
    close(&connection).await;
}

// Sender-selected distribution: CC and BCC name more routing keys; each
// queue gets one copy, and nobody sees BCC.
#[tokio::test]
async fn cc_and_bcc_route_to_more_keys_and_bcc_is_stripped() {
    let broker = Broker::start();
    let (connection, channel) = open(&broker).await;
    let [a, b, c] = [0, 1, 0].map(|shard| unique_on_shard("cc", shard));
    for name in [&a, &b, &c] {
        declare_queue(&channel, name, QueueDeclareOptions::default()).await;
    }
    let mut headers = FieldTable::default();
    let array = |names: &[&str]| {
        AMQPValue::FieldArray(FieldArray::from(
            names
                .iter()
                .map(|name| long_string(name))
                .collect::<Vec<_>>(),
        ))
    };
    headers.insert("CC".into(), array(&[&b, &a]));
    headers.insert("BCC".into(), array(&[&c]));
    let confirms = confirm_channel(&connection).await;
    let properties = BasicProperties::default().with_headers(headers);
    publish_confirmed_with(&confirms, "", &a, b"selected", properties).await;
    for name in [&a, &b, &c] {
        let got = get(&channel, name, true).await.expect("one copy");
        assert_eq!(got.delivery.data, b"selected");
        assert_eq!(got.delivery.routing_key.as_str(), a);
        let headers = got
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert_eq!(headers.inner().get("CC"), Some(&array(&[&b, &a])));
        assert_eq!(headers.inner().get("BCC"), None, "BCC is stripped");
        assert!(get(&channel, name, true).await.is_none(), "only one copy");
    }
    for name in [&a, &b, &c] {
        delete_queue(&channel, name).await;
    }
    close(&connection).await;
}
