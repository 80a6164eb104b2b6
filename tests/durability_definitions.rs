//! Durable definitions across restarts: a real warren process on a
//! temporary data directory, stopped (SIGTERM or kill -9) and started again
//! on the same directory, sometimes with another shard count.
//!
//! What RabbitMQ 3.10 does is the reference (checked on a private node):
//! durable exchanges and queues (auto-delete ones included, if nothing
//! deleted them before the stop) and bindings between durable ends come
//! back; transient and exclusive queues do not; users, vhosts, permissions
//! and policies do, and a deleted guest stays deleted.
//!
//! These tests need a broker they can restart, so they do nothing in
//! differential mode.

mod common;

use std::time::Duration;

use common::amqp::{open, within, STEP};
use common::http::Http;
use common::Broker;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::json;

/// Upper bound for a clean stop.
const STOP: Duration = Duration::from_secs(15);

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The names in a management list (`/api/queues`, ...), sorted.
fn names(http: &Http, path: &str) -> Vec<String> {
    let (status, list) = http.get(path);
    assert_eq!(status, 200, "GET {path}: {list}");
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|item| item["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn guest(broker: &Broker) -> Http {
    Http::new(&broker.management_url(), "guest", "guest")
}

/// Publishes `body` (with confirms) and expects it back from `queue`:
/// the route exists and the queue's owner serves it.
async fn round_trip(channel: &Channel, exchange: &str, key: &str, queue: &str) {
    let publish = channel
        .basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            b"ping",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    within("confirm", publish).await.expect("confirmed");
    let got = within(
        "get",
        channel.basic_get(queue, BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get");
    let message = got.unwrap_or_else(|| panic!("{queue} got nothing via '{exchange}' '{key}'"));
    assert_eq!(message.delivery.data, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_exchanges_queues_and_bindings_survive_a_clean_restart() {
    let mut broker = Broker::start_managed(&[]);
    if broker.is_external() {
        return;
    }
    let (connection, channel) = open(&broker).await;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let alternate = table(&[("alternate-exchange", text("ae"))]);
    let declares = [
        (
            "ae",
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        ),
        ("dx", ExchangeKind::Topic, durable_exchange, alternate),
        (
            "dx2",
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        ),
        (
            "tx",
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    ];
    for (name, kind, options, arguments) in declares {
        within(
            "exchange.declare",
            channel.exchange_declare(name, kind, options, arguments),
        )
        .await
        .expect("exchange.declare");
    }
    let queues = [
        (
            "classic",
            durable(),
            table(&[("x-max-length", AMQPValue::LongInt(5))]),
        ),
        (
            "quorum",
            durable(),
            table(&[("x-queue-type", text("quorum"))]),
        ),
        ("unrouted", durable(), FieldTable::default()),
        (
            "auto",
            QueueDeclareOptions {
                auto_delete: true,
                ..durable()
            },
            FieldTable::default(),
        ),
        (
            "transient",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
        (
            "exclusive",
            QueueDeclareOptions {
                exclusive: true,
                ..durable()
            },
            FieldTable::default(),
        ),
    ];
    for (name, options, arguments) in queues {
        within(
            "queue.declare",
            channel.queue_declare(name, options, arguments),
        )
        .await
        .expect("queue.declare");
    }
    let binds = [
        ("classic", "dx", "a.#"),
        ("quorum", "dx2", "q"),
        ("transient", "dx", "t.#"),
        ("unrouted", "ae", ""),
    ];
    for (queue, exchange, key) in binds {
        let bind = channel.queue_bind(
            queue,
            exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        within("queue.bind", bind).await.expect("queue.bind");
    }
    let e2e = channel.exchange_bind(
        "dx2",
        "dx",
        "q.#",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    );
    within("exchange.bind", e2e).await.expect("exchange.bind");
    drop(connection);

    assert!(broker.terminate(STOP).success(), "a clean stop");
    broker.restart(&[]);

    let http = guest(&broker);
    assert_eq!(
        names(&http, "/api/queues"),
        ["auto", "classic", "quorum", "unrouted"]
    );
    let exchanges = names(&http, "/api/exchanges");
    for name in ["ae", "dx", "dx2"] {
        assert!(
            exchanges.contains(&name.to_owned()),
            "{name} in {exchanges:?}"
        );
    }
    assert!(!exchanges.contains(&"tx".to_owned()));
    let (_, quorum) = http.get("/api/queues/%2F/quorum");
    assert_eq!(quorum["arguments"]["x-queue-type"], "quorum", "{quorum}");
    let (_, classic) = http.get("/api/queues/%2F/classic");
    assert_eq!(classic["arguments"]["x-max-length"], 5, "{classic}");
    let (_, dx) = http.get("/api/exchanges/%2F/dx");
    assert_eq!(dx["type"], "topic");
    assert_eq!(dx["arguments"]["alternate-exchange"], "ae", "{dx}");

    let (_connection, channel) = open(&broker).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    round_trip(&channel, "dx", "a.b", "classic").await;
    round_trip(&channel, "dx", "q", "quorum").await; // dx -> dx2 -> quorum
    round_trip(&channel, "dx", "t.x", "unrouted").await; // no binding left: ae
                                                         // The exclusive queue's name is free again.
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "queue.declare",
        channel.queue_declare("exclusive", exclusive, FieldTable::default()),
    )
    .await
    .expect("an exclusive queue did not survive");
}

/// Declares `count` durable queues `prefix-N` one after another,
/// reporting each declare-ok; stops at the first failure (the broker went
/// away).
async fn declare_until_gone(
    channel: Channel,
    prefix: String,
    count: usize,
    acked: tokio::sync::mpsc::UnboundedSender<String>,
) {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let declare = channel.queue_declare(&name, durable(), FieldTable::default());
        match tokio::time::timeout(STEP, declare).await {
            Ok(Ok(_)) => {
                if acked.send(name).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declare_answered_before_a_kill_9_survives_it() {
    let mut broker = Broker::start_managed(&[]);
    if broker.is_external() {
        return;
    }
    // Several connections at once, so changes queue up behind a write and
    // go to disk together.
    let (acked, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let mut declarers = Vec::new();
    let mut connections = Vec::new();
    for declarer in 0..4 {
        let (connection, channel) = open(&broker).await;
        let prefix = format!("crash{declarer}");
        declarers.push(tokio::spawn(declare_until_gone(
            channel,
            prefix,
            10_000,
            acked.clone(),
        )));
        connections.push(connection);
    }
    drop(acked);
    let mut answered = Vec::new();
    while answered.len() < 200 {
        let name = within("declare-ok", acks.recv())
            .await
            .expect("the declarers run");
        answered.push(name);
    }
    // Mid-way: the declarers are still going.
    broker.kill_9();
    while let Ok(Some(name)) = tokio::time::timeout(STEP, acks.recv()).await {
        answered.push(name);
    }
    for declarer in declarers {
        within("declarer", declarer).await.expect("declarer");
    }
    drop(connections);

    broker.restart(&[]);
    let queues = names(&guest(&broker), "/api/queues");
    for name in &answered {
        assert!(queues.contains(name), "{name} was declared-ok but is gone");
    }
    assert!(queues.len() < 40_000, "the kill came mid-way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_come_back_on_their_owners_under_another_shard_count() {
    let mut broker = Broker::start_managed(&["--shards", "1"]);
    if broker.is_external() {
        return;
    }
    let queues: Vec<String> = (0..12).map(|i| format!("spread-{i}")).collect();
    {
        let (_connection, channel) = open(&broker).await;
        for name in &queues {
            within(
                "declare",
                channel.queue_declare(name, durable(), FieldTable::default()),
            )
            .await
            .expect("queue.declare");
        }
    }
    for shards in ["2", "1", "2"] {
        assert!(broker.terminate(STOP).success());
        broker.restart(&["--shards", shards]);
        let (_connection, channel) = open(&broker).await;
        within(
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .expect("confirm.select");
        for name in &queues {
            round_trip(&channel, "", name, name).await;
        }
    }
}

#[test]
fn users_vhosts_permissions_policies_and_operator_policies_survive_and_a_deleted_guest_stays_deleted(
) {
    let mut broker = Broker::start_managed(&[]);
    if broker.is_external() {
        return;
    }
    let http = guest(&broker);
    http.ok(
        "PUT",
        "/api/users/ann",
        &json!({"password": "s3cret", "tags": "administrator"}),
    );
    http.ok("PUT", "/api/vhosts/v1", &json!({}));
    let all = json!({"configure": ".*", "write": ".*", "read": "^r"});
    http.ok("PUT", "/api/permissions/v1/ann", &all);
    let policy = json!({"pattern": "^q", "definition": {"max-length": 3}, "apply-to": "queues", "priority": 2});
    http.ok("PUT", "/api/policies/v1/short", &policy);
    // Imported definitions go through the same log, an operator policy
    // (a runtime parameter in RabbitMQ's files) too.
    let operator = json!({"pattern": "^imp", "definition": {"max-length": 1}, "apply-to": "queues", "priority": 0});
    let imported = json!({
        "users": [], "vhosts": [], "permissions": [], "policies": [], "exchanges": [],
        "parameters": [{"vhost": "v1", "component": "operator_policy", "name": "cap", "value": operator}],
        "queues": [{"name": "imported", "vhost": "v1", "durable": true, "auto_delete": false, "arguments": {}}],
        "bindings": [],
    });
    http.ok("POST", "/api/definitions", &imported);
    let ann = Http::new(&broker.management_url(), "ann", "s3cret");
    let (status, _) = ann.delete("/api/users/guest");
    assert_eq!(status, 204);

    assert!(broker.terminate(STOP).success());
    broker.restart(&[]);

    let ann = Http::new(&broker.management_url(), "ann", "s3cret");
    assert_eq!(names(&ann, "/api/users"), ["ann"]);
    let (status, _) = guest(&broker).get("/api/overview");
    assert_eq!(status, 401, "guest was deleted before the restart");
    assert!(names(&ann, "/api/vhosts").contains(&"v1".to_owned()));
    let (_, permission) = ann.get("/api/permissions/v1/ann");
    assert_eq!(permission["read"], "^r", "{permission}");
    let (_, policy) = ann.get("/api/policies/v1/short");
    assert_eq!(policy["definition"]["max-length"], 3, "{policy}");
    assert_eq!(policy["priority"], 2);
    assert_eq!(names(&ann, "/api/queues/v1"), ["imported"]);
    let (_, cap) = ann.get("/api/operator-policies/v1/cap");
    assert_eq!(cap["definition"], json!({"max-length": 1}), "{cap}");
    let (_, queue) = ann.get("/api/queues/v1/imported");
    assert_eq!(queue["operator_policy"], "cap", "{queue}");
    // ann's password hash came back, not just the name.
    let (status, _) = Http::new(&broker.management_url(), "ann", "wrong").get("/api/overview");
    assert_eq!(status, 401);
}

fn log_path(broker: &Broker) -> std::path::PathBuf {
    broker.data_dir().join("definitions.log")
}

#[test]
fn a_torn_or_garbled_log_starts_with_what_it_could_read() {
    let mut broker = Broker::start_managed(&[]);
    if broker.is_external() {
        return;
    }
    let http = guest(&broker);
    for name in ["first", "second", "third"] {
        http.ok(
            "PUT",
            &format!("/api/queues/%2F/{name}"),
            &json!({"durable": true}),
        );
    }
    assert!(broker.terminate(STOP).success());

    // A crash in the middle of the last append: its record is cut short.
    let whole = std::fs::read(log_path(&broker)).expect("the log");
    std::fs::write(log_path(&broker), &whole[..whole.len() - 3]).expect("tear");
    broker.restart(&[]);
    assert_eq!(names(&guest(&broker), "/api/queues"), ["first", "second"]);
    assert!(
        broker.log_tail().contains("partial last record"),
        "{}",
        broker.log_tail()
    );
    assert!(broker.terminate(STOP).success());

    // A flipped byte inside the first queue's record.
    let mut bytes = std::fs::read(log_path(&broker)).expect("the log");
    let at = find(&bytes, b"first").expect("the first queue's record");
    bytes[at] ^= 0x20;
    std::fs::write(log_path(&broker), &bytes).expect("garble");
    broker.restart(&[]);
    assert_eq!(names(&guest(&broker), "/api/queues"), ["second"]);
    let damaged: Vec<String> = broker
        .log_tail()
        .lines()
        .filter(|line| line.contains("damaged"))
        .map(str::to_owned)
        .collect();
    assert_eq!(damaged.len(), 1, "one clear line: {damaged:?}");
    assert!(!broker.log_tail().contains("panicked"));
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs warren on `data_dir` expecting it to refuse to start.
fn refused(data_dir: &str) -> common::command::Output {
    let args = [
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--management-port",
        "0",
        "--data-dir",
        data_dir,
    ];
    let output = common::command::run(env!("CARGO_BIN_EXE_warren"), &args, &[]);
    assert_ne!(
        output.code, 0,
        "warren started on {data_dir}: {}",
        output.stderr
    );
    assert!(!output.stderr.contains("panicked"), "{}", output.stderr);
    output
}

#[test]
fn an_unusable_or_locked_data_dir_is_refused_in_one_line() {
    let broker = Broker::start_managed(&[]);
    if broker.is_external() {
        return;
    }
    // A directory cannot be made under a regular file.
    let file = broker.data_dir().join("a-file");
    std::fs::write(&file, b"").expect("a file");
    let output = refused(&file.join("data").display().to_string());
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(
        output.stderr.contains("cannot use data directory"),
        "{}",
        output.stderr
    );

    // The running broker holds its own directory.
    let output = refused(&broker.data_dir().display().to_string());
    let last = output.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("in use by another warren"),
        "{}",
        output.stderr
    );
    assert_eq!(
        output
            .stderr
            .lines()
            .filter(|l| l.contains("ERROR"))
            .count(),
        1
    );
    // And it was left alone.
    assert_eq!(guest(&broker).get("/api/overview").0, 200);
}
