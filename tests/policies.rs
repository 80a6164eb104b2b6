//! Policies applied: set and cleared through the HTTP API, seen over AMQP
//! with a real client (lapin) on queues of both shards of a warren, and in
//! the API's `policy` fields.
//!
//! What RabbitMQ 3.10 does, and these tests check (also against it, in the
//! differential mode with `WARREN_TEST_MANAGEMENT_URL`): a policy applies to
//! queues that exist and to those declared later; for the limits the smaller
//! of the queue's argument and the policy's value wins, for the other keys
//! the queue's argument; the highest priority wins among matching policies;
//! `alternate-exchange` applies to exchanges unless they name their own.
//! Patterns are anchored on names unique to the run, so runs against a
//! shared RabbitMQ do not meet each other's policies.

mod common;

use std::time::{Duration, Instant};

use common::amqp::{names_on_shard, open_confirming, within, STEP};
use common::http::Http;
use common::Broker;
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde_json::{json, Value};

const POLICIES: &str = "/api/policies";
const OPERATOR: &str = "/api/operator-policies";

/// A prefix no earlier run used.
fn unique(what: &str) -> String {
    format!("policytests-{what}-{:08x}", rand::random::<u32>())
}

/// `prefix-<n>`, for the first n that puts the queue on `shard`.
fn name_on_shard(prefix: &str, shard: usize) -> String {
    names_on_shard(prefix, shard).next().unwrap_or_default()
}

struct Fixture {
    api: Http,
    /// Held open for the channel's sake.
    _connection: Connection,
    channel: Channel,
    /// (API path, name) of the policies set, cleared at the end.
    policies: Vec<(&'static str, String)>,
}

impl Fixture {
    async fn new(broker: &Broker) -> Fixture {
        let api = Http::new(&broker.management_url(), "guest", "guest");
        let (connection, channel) = open_confirming(broker).await;
        Fixture {
            api,
            _connection: connection,
            channel,
            policies: Vec::new(),
        }
    }

    fn set_policy(
        &mut self,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Value,
    ) {
        self.set(POLICIES, name, pattern, apply_to, priority, definition);
    }

    /// Sets a user policy (`POLICIES`) or an operator policy (`OPERATOR`).
    fn set(
        &mut self,
        path: &'static str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Value,
    ) {
        let body = json!({
            "pattern": pattern, "apply-to": apply_to, "priority": priority, "definition": definition,
        });
        self.api.ok("PUT", &format!("{path}/%2F/{name}"), &body);
        self.policies.push((path, name.to_owned()));
    }

    fn clear_policy(&mut self, name: &str) {
        self.clear(POLICIES, name);
    }

    fn clear(&mut self, path: &'static str, name: &str) {
        let (status, _) = self.api.delete(&format!("{path}/%2F/{name}"));
        assert_eq!(status, 204, "clear {name}");
        self.policies
            .retain(|(p, n)| (*p, n.as_str()) != (path, name));
    }

    async fn declare(&self, queue: &str, arguments: FieldTable) {
        within(
            "queue.declare",
            self.channel
                .queue_declare(queue, QueueDeclareOptions::default(), arguments),
        )
        .await
        .unwrap_or_else(|error| panic!("queue.declare {queue}: {error}"));
    }

    async fn publish(&self, exchange: &str, key: &str, count: usize) {
        for _ in 0..count {
            let confirm = within(
                "basic.publish",
                self.channel.basic_publish(
                    exchange,
                    key,
                    BasicPublishOptions::default(),
                    b"m",
                    BasicProperties::default(),
                ),
            )
            .await
            .expect("basic.publish");
            within("confirm", confirm).await.expect("confirm");
        }
    }

    async fn ready(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        within(
            "queue.declare passive",
            self.channel
                .queue_declare(queue, passive, FieldTable::default()),
        )
        .await
        .unwrap_or_else(|error| panic!("queue.declare passive {queue}: {error}"))
        .message_count()
    }

    /// Publishes to `queue` until it holds `count` ready: a policy reaches
    /// RabbitMQ's queue processes a moment after the API answered (warren
    /// answers once every shard applied it), so the first publishes may
    /// predate it there.
    async fn ready_settles_at(&self, queue: &str, count: u32) {
        let deadline = Instant::now() + STEP;
        loop {
            self.publish("", queue, 3).await;
            if self.ready(queue).await == count {
                return;
            }
            assert!(Instant::now() < deadline, "{queue} never held {count}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete(&self, queue: &str) {
        within(
            "queue.delete",
            self.channel
                .queue_delete(queue, QueueDeleteOptions::default()),
        )
        .await
        .expect("queue.delete");
    }

    /// The API's view of a queue once `ready` holds (RabbitMQ refreshes
    /// its figures every 5 s).
    fn queue_view(&self, queue: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, view) = self.api.get(&format!("/api/queues/%2F/{queue}"));
            assert_eq!(status, 200, "{queue}");
            if ready(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{queue}: still {view}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for (path, name) in &self.policies {
            self.api.delete(&format!("{path}/%2F/{name}"));
        }
    }
}

fn long_int(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

fn arguments(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}

#[tokio::test]
async fn a_policy_limits_existing_and_new_queues_on_every_shard_until_cleared() {
    let broker = Broker::start_managed(&[]);
    let mut fixture = Fixture::new(&broker).await;
    let prefix = unique("maxlen");
    let plain = [name_on_shard(&prefix, 0), name_on_shard(&prefix, 1)];
    for queue in &plain {
        fixture.declare(queue, FieldTable::default()).await;
    }
    // Its own limit is smaller than the policy's: its own stays.
    let own_limit = format!("{prefix}-own");
    fixture
        .declare(&own_limit, arguments(&[("x-max-length", long_int(1))]))
        .await;
    // Its own limit is larger: the policy's smaller one wins.
    let larger = format!("{prefix}-larger");
    fixture
        .declare(&larger, arguments(&[("x-max-length", long_int(50))]))
        .await;
    let policy = format!("{prefix}-policy");
    fixture.set_policy(
        &policy,
        &format!("^{prefix}"),
        "queues",
        0,
        json!({"max-length": 2}),
    );
    for queue in plain.iter().chain([&larger]) {
        fixture.ready_settles_at(queue, 2).await;
    }
    fixture.ready_settles_at(&own_limit, 1).await;
    let later = format!("{prefix}-later");
    fixture.declare(&later, FieldTable::default()).await;
    fixture.publish("", &later, 5).await;
    assert_eq!(fixture.ready(&later).await, 2, "a queue declared later");
    let view = fixture.queue_view(&later, |q| q["policy"] == json!(policy));
    assert_eq!(
        view["effective_policy_definition"],
        json!({"max-length": 2})
    );
    fixture.clear_policy(&policy);
    fixture.ready_settles_at(&plain[0], 5).await;
    fixture.queue_view(&plain[0], |q| q["policy"].is_null());
    for queue in plain.iter().chain([&own_limit, &larger, &later]) {
        fixture.delete(queue).await;
    }
}

#[tokio::test]
async fn the_highest_priority_policy_dead_letters_what_its_ttl_expires() {
    let broker = Broker::start_managed(&[]);
    let mut fixture = Fixture::new(&broker).await;
    let prefix = unique("ttl");
    let (queue, target) = (name_on_shard(&prefix, 0), format!("dead-{prefix}"));
    let target = name_on_shard(&target, 1);
    fixture.declare(&queue, FieldTable::default()).await;
    fixture.declare(&target, FieldTable::default()).await;
    let (low, high) = (format!("{prefix}-low"), format!("{prefix}-high"));
    fixture.set_policy(
        &low,
        &format!("^{prefix}"),
        "all",
        1,
        json!({"max-length": 100}),
    );
    let definition = json!({
        "message-ttl": 1, "dead-letter-exchange": "", "dead-letter-routing-key": target,
    });
    fixture.set_policy(&high, &format!("^{prefix}"), "queues", 7, definition);
    // Messages expire and are dead-lettered to the target on the other
    // shard (in RabbitMQ, once the policy reached the queue).
    let deadline = Instant::now() + STEP;
    while fixture.ready(&target).await == 0 {
        fixture.publish("", &queue, 1).await;
        assert!(Instant::now() < deadline, "nothing dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture.queue_view(&queue, |q| q["policy"] == json!(high));
    fixture.delete(&queue).await;
    fixture.delete(&target).await;
}

#[tokio::test]
async fn an_alternate_exchange_policy_applies_unless_the_exchange_names_its_own() {
    let broker = Broker::start_managed(&[]);
    let mut fixture = Fixture::new(&broker).await;
    let prefix = unique("ae");
    let channel = &fixture.channel;
    let declare = |name: String, kind: ExchangeKind, arguments: FieldTable| async move {
        within(
            "exchange.declare",
            channel.exchange_declare(&name, kind, ExchangeDeclareOptions::default(), arguments),
        )
        .await
        .expect("exchange.declare");
    };
    let (plain, own) = (format!("{prefix}-plain"), format!("{prefix}-own"));
    let (policy_ae, own_ae) = (format!("ae-policy-{prefix}"), format!("ae-own-{prefix}"));
    let own_argument = arguments(&[(
        "alternate-exchange",
        AMQPValue::LongString(LongString::from(own_ae.as_str())),
    )]);
    declare(plain.clone(), ExchangeKind::Direct, FieldTable::default()).await;
    declare(own.clone(), ExchangeKind::Direct, own_argument).await;
    let mut queues = Vec::new();
    for (ae, shard) in [(&policy_ae, 0), (&own_ae, 1)] {
        declare(ae.clone(), ExchangeKind::Fanout, FieldTable::default()).await;
        let queue = name_on_shard(&format!("q-{ae}"), shard);
        fixture.declare(&queue, FieldTable::default()).await;
        within(
            "queue.bind",
            fixture.channel.queue_bind(
                &queue,
                ae,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.bind");
        queues.push(queue);
    }
    let policy = format!("{prefix}-policy");
    let definition = json!({"alternate-exchange": policy_ae});
    fixture.set_policy(&policy, &format!("^{prefix}"), "exchanges", 0, definition);
    let deadline = Instant::now() + STEP;
    while fixture.ready(&queues[0]).await == 0 {
        fixture.publish(&plain, "unbound", 1).await;
        assert!(Instant::now() < deadline, "the policy's AE never applied");
    }
    fixture.publish(&own, "unbound", 1).await;
    assert_eq!(fixture.ready(&queues[1]).await, 1, "its own AE");
    let (_, view) = fixture.api.get(&format!("/api/exchanges/%2F/{plain}"));
    assert_eq!(view["policy"], json!(policy));
    for queue in &queues {
        fixture.delete(queue).await;
    }
    for exchange in [&plain, &own, &policy_ae, &own_ae] {
        fixture
            .api
            .delete(&format!("/api/exchanges/%2F/{exchange}"));
    }
}

#[tokio::test]
async fn an_operator_policy_caps_the_user_policy_beside_it_until_cleared() {
    let broker = Broker::start_managed(&[]);
    let mut fixture = Fixture::new(&broker).await;
    let prefix = unique("operator");
    let queue = name_on_shard(&prefix, 1);
    let lazy = arguments(&[("x-queue-mode", AMQPValue::LongString("lazy".into()))]);
    fixture.declare(&queue, lazy).await;
    let (user, operator) = (format!("{prefix}-user"), format!("{prefix}-operator"));
    let pattern = format!("^{prefix}");
    let user_definition = json!({"max-length": 50, "expires": 600_000, "queue-mode": "lazy"});
    fixture.set_policy(&user, &pattern, "queues", 0, user_definition);
    let capped = json!({"max-length": 2, "message-ttl": 600_000});
    fixture.set(OPERATOR, &operator, &pattern, "queues", 0, capped.clone());
    fixture.ready_settles_at(&queue, 2).await;
    let view = fixture.queue_view(&queue, |q| q["operator_policy"] == json!(operator));
    assert_eq!(view["policy"], json!(user));
    assert_eq!(view["arguments"], json!({"x-queue-mode": "lazy"}));
    assert_eq!(
        view["effective_policy_definition"],
        json!({"max-length": 2, "expires": 600_000, "message-ttl": 600_000, "queue-mode": "lazy"})
    );
    // Listed apart from user policies, and exported as RabbitMQ exports
    // them: a runtime parameter.
    let (_, listed) = fixture.api.get(&format!("{OPERATOR}/%2F"));
    assert!(listed
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["name"] == json!(operator))));
    let (_, users) = fixture.api.get(&format!("{POLICIES}/%2F"));
    assert!(users
        .as_array()
        .is_some_and(|l| l.iter().all(|p| p["name"] != json!(operator))));
    let (_, definitions) = fixture.api.get("/api/definitions");
    let parameter = definitions["parameters"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == json!(operator)).cloned())
        .expect("exported");
    assert_eq!(parameter["component"], "operator_policy");
    assert_eq!(parameter["value"]["definition"], capped);
    fixture.clear(OPERATOR, &operator);
    // 2 ready, 3 more each round: the user policy's 50 applies again.
    fixture.ready_settles_at(&queue, 5).await;
    fixture.delete(&queue).await;
}

#[test]
fn operator_policies_are_an_administrators_and_refuse_what_rabbitmq_refuses() {
    let broker = Broker::start_managed(&[]);
    let api = Http::new(&broker.management_url(), "guest", "guest");
    let name = unique("refused");
    let path = format!("{OPERATOR}/%2F/{name}");
    let body = |definition: Value| json!({"pattern": "^none$", "definition": definition});
    for (definition, complaint) in [
        (
            json!({"overflow": "drop-head"}),
            "are not recognised policy settings",
        ),
        (
            json!({"queue-mode": "lazy"}),
            "are not recognised policy settings",
        ),
        (
            json!({"max-length": -1}),
            "-1 is not a valid maximum length",
        ),
    ] {
        let (status, error) = api.put(&path, &body(definition));
        assert_eq!(status, 400, "{error}");
        let reason = error["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(complaint), "{reason}");
    }
    // A user policy takes queue-mode default or lazy, and nothing else.
    let (status, error) = api.put(
        &format!("{POLICIES}/%2F/{name}"),
        &body(json!({"queue-mode": "bogus"})),
    );
    assert_eq!(status, 400, "{error}");
    let reason = error["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("is not a valid queue-mode value"),
        "{reason}"
    );
    // A policymaker sees them, but may not set one.
    let user = unique("policymaker");
    let account = json!({"password": "pw", "tags": "policymaker"});
    api.ok("PUT", &format!("/api/users/{user}"), &account);
    let permit = json!({"configure": ".*", "write": ".*", "read": ".*"});
    api.ok("PUT", &format!("/api/permissions/%2F/{user}"), &permit);
    let policymaker = Http::new(&broker.management_url(), &user, "pw");
    let (status, _) = policymaker.put(&path, &body(json!({"max-length": 1})));
    assert_eq!(status, 401);
    let (status, _) = policymaker.get(&format!("{OPERATOR}/%2F"));
    assert_eq!(status, 200);
    api.delete(&format!("/api/users/{user}"));
}
