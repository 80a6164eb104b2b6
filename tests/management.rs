//! Users, vhosts and permissions, end to end: made through the HTTP API,
//! enforced over AMQP with a real client (lapin), with the reply codes and
//! texts RabbitMQ 3.10 uses; the API's own errors and JSON field names;
//! and a definitions file exported from RabbitMQ imported into warren.
//!
//! Differential mode runs the same tests against RabbitMQ (with
//! `WARREN_TEST_MANAGEMENT_URL` naming its management API); names carry a
//! random suffix and every test removes the users and vhosts it made.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::amqp::{within, STEP};
use common::http::Http;
use common::Broker;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

fn unique(what: &str) -> String {
    format!("mgmttests-{what}-{:08x}", rand::random::<u32>())
}

fn guest(broker: &Broker) -> Http {
    Http::new(&broker.management_url(), "guest", "guest")
}

/// `%2F`-style path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A user and a vhost made for one test, removed when it ends.
struct Tenant<'a> {
    api: &'a Http,
    user: String,
    vhost: String,
}

impl<'a> Tenant<'a> {
    /// User `user-*` (password "pw", no tags) and vhost `vhost-*`; guest
    /// gets full permissions there.
    fn new(api: &'a Http) -> Tenant<'a> {
        let tenant = Tenant {
            api,
            user: unique("user"),
            vhost: unique("vhost"),
        };
        api.ok(
            "PUT",
            &format!("/api/users/{}", tenant.user),
            &json!({"password": "pw", "tags": ""}),
        );
        api.ok("PUT", &format!("/api/vhosts/{}", tenant.vhost), &json!({}));
        tenant.permit("guest", ".*", ".*", ".*");
        tenant
    }

    fn permit(&self, user: &str, configure: &str, write: &str, read: &str) {
        let body = json!({"configure": configure, "write": write, "read": read});
        self.api.ok(
            "PUT",
            &format!("/api/permissions/{}/{user}", self.vhost),
            &body,
        );
    }

    fn url(&self, broker: &Broker, user: &str, password: &str) -> String {
        let authority = broker.amqp_url();
        let host = authority
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("amqp url with host");
        format!("amqp://{user}:{password}@{host}/{}", segment(&self.vhost))
    }
}

impl Drop for Tenant<'_> {
    fn drop(&mut self) {
        self.api.delete(&format!("/api/vhosts/{}", self.vhost));
        self.api.delete(&format!("/api/users/{}", self.user));
    }
}

async fn connect(url: &str) -> lapin::Result<Connection> {
    within(
        "connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

/// The (code, text) of the close a failed operation reports.
fn refusal<T: std::fmt::Debug>(result: lapin::Result<T>) -> (u16, String) {
    match result {
        Err(lapin::Error::ProtocolError(error)) => {
            (error.get_id(), error.get_message().to_string())
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_without_a_permission_on_the_vhost_is_refused_at_open() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    let result = connect(&tenant.url(&broker, &tenant.user, "pw")).await;
    let expected = format!(
        "NOT_ALLOWED - access to vhost '{}' refused for user '{}'",
        tenant.vhost, tenant.user
    );
    assert_eq!(refusal(result), (530, expected));
    let wrong_password = connect(&tenant.url(&broker, &tenant.user, "nope")).await;
    assert!(wrong_password.is_err(), "a wrong password is refused");
    tenant.permit(&tenant.user, ".*", ".*", ".*");
    let connection = connect(&tenant.url(&broker, &tenant.user, "pw")).await;
    connection.expect("with a permission the user gets in");
}

/// A tenant whose user may configure `^c`, write `^w` and read `^r`, with
/// queues wq, rq and direct exchanges wx, rx declared by guest; and the
/// user's connection.
async fn restricted<'a>(broker: &Broker, api: &'a Http) -> (Tenant<'a>, Connection) {
    let tenant = Tenant::new(api);
    tenant.permit(&tenant.user, "^c", "^w", "^r");
    let guest = connect(&tenant.url(broker, "guest", "guest"))
        .await
        .expect("guest");
    let setup = open_channel(&guest).await;
    for queue in ["wq", "rq"] {
        let declared =
            setup.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default());
        within("declare", declared).await.expect("declare");
    }
    for exchange in ["wx", "rx"] {
        let kind = ExchangeKind::Direct;
        let options = ExchangeDeclareOptions::default();
        let declared = setup.exchange_declare(exchange, kind, options, FieldTable::default());
        within("declare", declared).await.expect("declare");
    }
    let connection = connect(&tenant.url(broker, &tenant.user, "pw"))
        .await
        .expect("user");
    (tenant, connection)
}

async fn open_channel(connection: &Connection) -> lapin::Channel {
    within("channel", connection.create_channel())
        .await
        .expect("channel")
}

impl Tenant<'_> {
    /// RabbitMQ 3.10's refusal text for this tenant's user.
    fn refused(&self, kind: &str, name: &str) -> (u16, String) {
        let text = format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        );
        (403, text)
    }
}

#[tokio::test]
async fn declare_needs_configure_and_publish_needs_write_on_the_exchange() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let (tenant, connection) = restricted(&broker, &api).await;
    let channel = open_channel(&connection).await;
    let declared =
        channel.queue_declare("q1", QueueDeclareOptions::default(), FieldTable::default());
    assert_eq!(
        refusal(within("declare", declared).await),
        tenant.refused("queue", "q1")
    );
    // Checked before the name is looked at: amq.* is refused for access.
    let channel = open_channel(&connection).await;
    let declared = channel.exchange_declare(
        "amq.x",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    assert_eq!(
        refusal(within("declare", declared).await),
        tenant.refused("exchange", "amq.x")
    );
    let channel = open_channel(&connection).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel.queue_declare("wq", passive, FieldTable::default());
    within("passive declare", declared)
        .await
        .expect("passive declares are not checked");
    // The refusal closes the channel with no RPC waiting: lapin reports it
    // through on_error. The default exchange is checked as amq.default.
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    channel.on_error(move |error| {
        let _ = errors_tx.send(error);
    });
    let published = channel.basic_publish(
        "",
        "cq",
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    );
    within("publish", published)
        .await
        .expect("publish is asynchronous");
    let error = within("channel close", errors.recv())
        .await
        .expect("an error");
    assert_eq!(
        refusal::<()>(Err(error)),
        tenant.refused("exchange", "amq.default")
    );
}

#[tokio::test]
async fn get_needs_read_and_binds_need_write_on_the_destination_and_read_on_the_source() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let (tenant, connection) = restricted(&broker, &api).await;
    let no_args = FieldTable::default;
    let channel = open_channel(&connection).await;
    let got = channel.basic_get("wq", BasicGetOptions::default());
    assert_eq!(
        refusal(within("get", got).await),
        tenant.refused("queue", "wq")
    );
    // Refused before the lookup: a missing queue is 403, not 404.
    let channel = open_channel(&connection).await;
    let got = channel.basic_get("wmissing", BasicGetOptions::default());
    assert_eq!(
        refusal(within("get", got).await),
        tenant.refused("queue", "wmissing")
    );
    let channel = open_channel(&connection).await;
    let bound = channel.queue_bind("rq", "rx", "k", QueueBindOptions::default(), no_args());
    assert_eq!(
        refusal(within("bind", bound).await),
        tenant.refused("queue", "rq")
    );
    let channel = open_channel(&connection).await;
    let bound = channel.queue_bind("wq", "wx", "k", QueueBindOptions::default(), no_args());
    assert_eq!(
        refusal(within("bind", bound).await),
        tenant.refused("exchange", "wx")
    );
    let channel = open_channel(&connection).await;
    let bound = channel.queue_bind("wq", "rx", "k", QueueBindOptions::default(), no_args());
    within("bind", bound)
        .await
        .expect("write on wq and read on rx suffice");
    let options = ExchangeBindOptions::default();
    let bound = channel.exchange_bind("wx", "amq.direct", "k", options, no_args());
    assert_eq!(
        refusal(within("exchange.bind", bound).await),
        tenant.refused("exchange", "amq.direct")
    );
}

#[tokio::test]
async fn consume_and_purge_need_read_and_deletes_need_configure() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let (tenant, connection) = restricted(&broker, &api).await;
    let no_args = FieldTable::default;
    let consume = refused_on(&connection, "consume", |c| async move {
        c.basic_consume("wq", "", Default::default(), no_args())
            .await
    });
    assert_eq!(consume.await, tenant.refused("queue", "wq"));
    let purge = refused_on(&connection, "purge", |c| async move {
        c.queue_purge("wq", Default::default()).await
    });
    assert_eq!(purge.await, tenant.refused("queue", "wq"));
    let delete = refused_on(&connection, "queue.delete", |c| async move {
        c.queue_delete("rq", Default::default()).await
    });
    assert_eq!(delete.await, tenant.refused("queue", "rq"));
    let delete = refused_on(&connection, "exchange.delete", |c| async move {
        c.exchange_delete("rx", Default::default()).await
    });
    assert_eq!(delete.await, tenant.refused("exchange", "rx"));
    // What the user may read it may consume and purge.
    let channel = open_channel(&connection).await;
    let purged = channel.queue_purge("rq", Default::default());
    within("purge", purged).await.expect("read on rq suffices");
    let consumed = channel.basic_consume("rq", "", Default::default(), no_args());
    within("consume", consumed)
        .await
        .expect("read on rq suffices");
}

/// The refusal `op` meets on a channel of its own (a refusal closes the
/// channel).
async fn refused_on<T, F, Fut>(connection: &Connection, what: &str, op: F) -> (u16, String)
where
    T: std::fmt::Debug,
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    let channel = open_channel(connection).await;
    refusal(within(what, op(channel)).await)
}

#[test]
fn api_errors_and_tag_rules_are_rabbitmqs() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let base = broker.management_url();
    let tenant = Tenant::new(&api);
    let (status, body) = Http::new(&base, "guest", "wrong").get("/api/overview");
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "not_authorized", "reason": "Login failed"})
        )
    );
    let (status, body) = Http::new(&base, &tenant.user, "pw").get("/api/overview");
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "not_authorised", "reason": "Not management user"})
        )
    );
    api.ok(
        "PUT",
        &format!("/api/users/{}", tenant.user),
        &json!({"password": "pw", "tags": "management"}),
    );
    let manager = Http::new(&base, &tenant.user, "pw");
    let (status, body) = manager.get("/api/whoami");
    assert_eq!(
        (status, body),
        (200, json!({"name": tenant.user, "tags": ["management"]}))
    );
    let (status, body) = manager.get("/api/users");
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "not_authorised", "reason": "Not administrator user"})
        )
    );
    let (status, permissions) = api.get(&format!("/api/vhosts/{}/permissions", tenant.vhost));
    let guest_everything = json!([{"user": "guest", "vhost": tenant.vhost, "configure": ".*", "write": ".*", "read": ".*"}]);
    assert_eq!((status, permissions), (200, guest_everything));
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    let missing_vhost = format!("/api/vhosts/{}/permissions", unique("nowhere"));
    assert_eq!(api.get(&missing_vhost), (404, not_found.clone()));
    assert_eq!(
        api.get("/api/queues/%2F/no-such-queue"),
        (404, not_found.clone())
    );
    assert_eq!(
        api.delete(&format!("/api/users/{}", unique("nobody"))),
        (404, not_found)
    );
    let (status, body) = api.call(
        "PUT",
        &format!("/api/permissions/%2F/{}", unique("nobody")),
        Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "bad_request", "reason": "vhost_or_user_not_found"})
        )
    );
}

#[test]
fn declare_publish_get_and_purge_over_http() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    let v = segment(&tenant.vhost);
    let (status, _) = api.put(&format!("/api/queues/{v}/hq"), &json!({"durable": true}));
    assert_eq!(status, 201);
    let (status, _) = api.put(&format!("/api/queues/{v}/hq"), &json!({"durable": true}));
    assert_eq!(status, 204, "an equivalent redeclare changes nothing");
    let (status, body) = api.put(&format!("/api/queues/{v}/hq"), &json!({"durable": false}));
    let reason = format!("inequivalent arg 'durable' for queue 'hq' in vhost '{}': received 'false' but current is 'true'", tenant.vhost);
    assert_eq!(
        (status, body),
        (400, json!({"error": "bad_request", "reason": reason}))
    );
    api.ok(
        "PUT",
        &format!("/api/exchanges/{v}/hx"),
        &json!({"type": "direct"}),
    );
    api.ok(
        "POST",
        &format!("/api/bindings/{v}/e/hx/q/hq"),
        &json!({"routing_key": "k"}),
    );
    let publish = json!({"properties": {"delivery_mode": 2}, "routing_key": "k", "payload": "hello", "payload_encoding": "string"});
    let (status, body) = api.call(
        "POST",
        &format!("/api/exchanges/{v}/hx/publish"),
        Some(&publish),
    );
    assert_eq!((status, body), (200, json!({"routed": true})));
    let get = json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"});
    let (status, got) = api.call("POST", &format!("/api/queues/{v}/hq/get"), Some(&get));
    assert_eq!(status, 200);
    assert_eq!(got.as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["routing_key"], "k");
    assert_eq!(got[0]["properties"], json!({"delivery_mode": 2}));
    let queue = queue_when(&api, &format!("/api/queues/{v}/hq"), |q| {
        q["messages_ready"] == 1
    });
    assert_eq!(queue["messages"], 1, "requeued: {queue}");
    if !broker.is_external() {
        // RabbitMQ's counters lag by its statistics interval; warren's are
        // current: one publish, one get.
        assert_eq!(queue["message_stats"]["publish"], 1, "{queue}");
        assert_eq!(queue["message_stats"]["deliver_get"], 1, "{queue}");
    }
    let (status, page) = api.get(&format!("/api/queues/{v}?page=1&page_size=1&columns=name"));
    let expected = json!({
        "filtered_count": 1, "item_count": 1, "items": [{"name": "hq"}],
        "page": 1, "page_count": 1, "page_size": 1, "total_count": 1,
    });
    assert_eq!((status, page), (200, expected), "RabbitMQ's page object");
    let (status, _) = api.delete(&format!("/api/queues/{v}/hq/contents"));
    assert_eq!(status, 204);
    queue_when(&api, &format!("/api/queues/{v}/hq"), |q| q["messages"] == 0);
}

/// The JSON at `path` once `ready` holds: warren's figures are current,
/// RabbitMQ's are refreshed every 5 s, so this polls, with a deadline.
fn queue_when(api: &Http, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, queue) = api.get(path);
        assert_eq!(status, 200, "{path}");
        if ready(&queue) {
            return queue;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: still {queue}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keys of the first object of `value` (a list) or of `value` itself.
fn keys(value: &Value) -> BTreeSet<String> {
    let object = match value {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    object
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

const POLICY_FIELDS: &[&str] = &[
    "vhost",
    "name",
    "pattern",
    "apply-to",
    "definition",
    "priority",
];

/// Fields every client relies on, which RabbitMQ and warren must both
/// show, per endpoint.
const REQUIRED_FIELDS: &[(&str, &[&str])] = &[
    (
        "/api/overview",
        &[
            "management_version",
            "rabbitmq_version",
            "node",
            "object_totals",
            "queue_totals",
            "listeners",
            "exchange_types",
        ],
    ),
    ("/api/whoami", &["name", "tags"]),
    ("/api/vhosts", &["name", "description", "tags", "tracing"]),
    (
        "/api/users",
        &[
            "name",
            "password_hash",
            "hashing_algorithm",
            "tags",
            "limits",
        ],
    ),
    (
        "/api/permissions",
        &["user", "vhost", "configure", "write", "read"],
    ),
    ("/api/policies", POLICY_FIELDS),
    ("/api/operator-policies", POLICY_FIELDS),
    (
        "/api/exchanges",
        &[
            "name",
            "vhost",
            "type",
            "durable",
            "auto_delete",
            "internal",
            "arguments",
        ],
    ),
    (
        "/api/queues",
        &[
            "name",
            "vhost",
            "durable",
            "auto_delete",
            "exclusive",
            "arguments",
            "node",
            "state",
            "type",
            "consumers",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
        ],
    ),
    (
        "/api/bindings",
        &[
            "source",
            "vhost",
            "destination",
            "destination_type",
            "routing_key",
            "arguments",
            "properties_key",
        ],
    ),
    (
        "/api/connections",
        &[
            "name",
            "node",
            "vhost",
            "user",
            "state",
            "channels",
            "peer_host",
            "peer_port",
            "protocol",
        ],
    ),
    (
        "/api/channels",
        &[
            "name",
            "number",
            "vhost",
            "user",
            "consumer_count",
            "messages_unacknowledged",
            "connection_details",
        ],
    ),
    (
        "/api/consumers",
        &["consumer_tag", "queue", "channel_details"],
    ),
    (
        "/api/definitions",
        &[
            "rabbit_version",
            "users",
            "vhosts",
            "permissions",
            "policies",
            "queues",
            "exchanges",
            "bindings",
        ],
    ),
];

#[tokio::test]
async fn json_field_names_are_rabbitmqs() {
    let recorded: Value =
        serde_json::from_str(include_str!("fixtures/rabbitmq-3.10-keys.json")).expect("fixture");
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let connection = connect(&broker.amqp_url()).await.expect("connect");
    let channel = within("channel", connection.create_channel())
        .await
        .expect("channel");
    let queue = unique("shape");
    let declared = channel.queue_declare(
        &queue,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    );
    within("declare", declared).await.expect("declare");
    let consumed = channel.basic_consume(&queue, "", Default::default(), FieldTable::default());
    let _consumer = within("consume", consumed).await.expect("consume");
    let policy = json!({"pattern": format!("^{queue}$"), "definition": {"max-length": 9}});
    let policies =
        ["/api/policies", "/api/operator-policies"].map(|base| format!("{base}/%2F/{queue}"));
    for path in &policies {
        api.ok("PUT", path, &policy);
    }
    for (path, fields) in REQUIRED_FIELDS {
        // RabbitMQ lists a connection once it has collected its stats,
        // and a queue a policy just reached without them for a moment.
        let complete = |shown: &Value| fields.iter().all(|f| keys(shown).contains(*f));
        let shown = keys(&queue_when(&api, path, complete));
        let rabbitmq: BTreeSet<String> = recorded["keys"][*path]
            .as_array()
            .expect("recorded")
            .iter()
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect();
        for field in *fields {
            assert!(rabbitmq.contains(*field), "{path}: RabbitMQ shows {field}");
            assert!(
                shown.contains(*field),
                "{path}: {field} missing from {shown:?}"
            );
        }
        // RabbitMQ adds statistics fields as it collects them; the check
        // is that warren invents none.
        let invented: Vec<_> = shown.difference(&rabbitmq).collect();
        assert!(
            broker.is_external() || invented.is_empty(),
            "{path}: fields RabbitMQ does not have: {invented:?}"
        );
    }
    for path in &policies {
        api.delete(path);
    }
}

#[tokio::test]
async fn definitions_exported_by_rabbitmq_import_and_their_users_log_in() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let definitions: Value =
        serde_json::from_str(include_str!("fixtures/rabbitmq-3.10-definitions.json"))
            .expect("fixture");
    if broker.is_external() {
        // The fixture's names are fixed; a shared broker may hold them.
        api.delete("/api/vhosts/imp");
    }
    let (status, _) = api.call("POST", "/api/definitions", Some(&definitions));
    assert!(status == 204 || status == 201, "import: {status}");
    let (_, queue) = api.get("/api/queues/imp/orders");
    assert_eq!(queue["arguments"], json!({"x-max-length": 10}));
    let (_, bindings) = api.get("/api/bindings/imp/e/events/q/orders");
    assert_eq!(bindings[0]["routing_key"], "order.*");
    let (_, policy) = api.get("/api/policies/imp/cap");
    assert_eq!(policy["definition"], json!({"max-length": 100}));
    let url = broker.amqp_url();
    let host = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host");
    // The password hash came from RabbitMQ; the password is "secret".
    let connection = connect(&format!("amqp://imported:secret@{host}/imp")).await;
    connection.expect("the imported user logs in with RabbitMQ's hash");
    let wrong = connect(&format!("amqp://imported:wrong@{host}/imp")).await;
    assert!(wrong.is_err());
    api.delete("/api/vhosts/imp");
    api.delete("/api/users/imported");
}

/// The error lapin reports for `connection` from now on.
fn connection_errors(connection: &Connection) -> std::sync::mpsc::Receiver<lapin::Error> {
    let (errors_tx, errors) = std::sync::mpsc::channel();
    connection.on_error(move |error| {
        let _ = errors_tx.send(error);
    });
    errors
}

/// Waits for the connection's close and checks it is 320 with `text`.
/// RabbitMQ sends the same close, but lapin may see its socket reset
/// before it reads it, so against RabbitMQ any error counts.
async fn assert_forced(
    broker: &Broker,
    errors: std::sync::mpsc::Receiver<lapin::Error>,
    text: String,
) {
    let error = tokio::task::spawn_blocking(move || errors.recv_timeout(STEP))
        .await
        .expect("join")
        .expect("the connection is closed");
    if !broker.is_external() {
        assert_eq!(
            refusal::<()>(Err(error)),
            (320, format!("CONNECTION_FORCED - {text}"))
        );
    }
}

#[tokio::test]
async fn deleting_a_vhost_closes_its_connections_and_drops_its_queues() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    let connection = connect(&tenant.url(&broker, "guest", "guest"))
        .await
        .expect("connect");
    let errors = connection_errors(&connection);
    let channel = open_channel(&connection).await;
    let options = QueueDeclareOptions::default();
    let declared = channel.queue_declare("doomed", options, FieldTable::default());
    within("declare", declared).await.expect("declare");
    let (status, _) = api.delete(&format!("/api/vhosts/{}", tenant.vhost));
    assert_eq!(status, 204);
    assert_forced(
        &broker,
        errors,
        format!("vhost '{}' is deleted", tenant.vhost),
    )
    .await;
    let (status, _) = api.get(&format!("/api/queues/{}/doomed", tenant.vhost));
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    tenant.permit(&tenant.user, ".*", ".*", ".*");
    let connection = connect(&tenant.url(&broker, &tenant.user, "pw"))
        .await
        .expect("connect");
    let errors = connection_errors(&connection);
    let (status, _) = api.delete(&format!("/api/users/{}", tenant.user));
    assert_eq!(status, 204);
    assert_forced(
        &broker,
        errors,
        format!("user '{}' is deleted", tenant.user),
    )
    .await;
}

/// The first element of the list at `path` for which `pick` holds, once
/// one does (RabbitMQ refreshes its statistics every 5 s).
fn listed_when(api: &Http, path: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, list) = api.get(path);
        assert_eq!(status, 200, "{path}");
        if let Some(found) = list.as_array().and_then(|l| l.iter().find(|v| pick(v))) {
            return found.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{path}: never {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes until the item `pick` finds at `path` shows a positive rate
/// at `rate` (a JSON pointer), which takes a second or more after the
/// API's first look (RabbitMQ: its next 5 s collection). The item, and
/// how many were published.
async fn publish_until_rate<F, Fut>(
    api: &Http,
    path: &str,
    pick: impl Fn(&Value) -> bool,
    rate: &str,
    mut publish: F,
) -> (Value, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = lapin::Result<lapin::publisher_confirm::PublisherConfirm>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut published = 0;
    loop {
        within("publish", publish()).await.expect("publish");
        published += 1;
        let shown = listed_when(api, path, &pick);
        if shown.pointer(rate).and_then(Value::as_f64) > Some(0.0) {
            return (shown, published);
        }
        assert!(std::time::Instant::now() < deadline, "no {rate}: {shown}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn message_stats_count_per_exchange_and_channel_and_rates_follow() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    let connection = connect(&tenant.url(&broker, "guest", "guest"))
        .await
        .expect("connect");
    let channel = open_channel(&connection).await;
    let declared = channel.exchange_declare(
        "stats-x",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    within("declare", declared).await.expect("exchange.declare");
    let declared = channel.queue_declare(
        "stats-q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    );
    within("declare", declared).await.expect("queue.declare");
    let bound = channel.queue_bind(
        "stats-q",
        "stats-x",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within("bind", bound).await.expect("queue.bind");
    let publish = |key: &'static str| {
        channel.basic_publish(
            "stats-x",
            key,
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
    };
    for key in ["k", "k", "k", "nowhere"] {
        within("publish", publish(key)).await.expect("publish");
    }
    for _ in 0..2 {
        let got = channel.basic_get("stats-q", BasicGetOptions::default());
        let message = within("get", got).await.expect("get").expect("a message");
        let acked = message.delivery.acker.ack(Default::default());
        within("ack", acked).await.expect("ack");
    }
    let v = segment(&tenant.vhost);
    let exchange = queue_when(&api, &format!("/api/exchanges/{v}/stats-x"), |x| {
        x["message_stats"]["publish_in"] == 4
    });
    assert_eq!(exchange["message_stats"]["publish_out"], 3, "{exchange}");
    assert!(exchange["message_stats"]["publish_in_details"]["rate"].is_number());
    let in_vhost = |c: &Value| c["vhost"] == json!(tenant.vhost);
    let stats = listed_when(&api, "/api/channels", |c| {
        in_vhost(c) && c["message_stats"]["ack"] == 2
    })["message_stats"]
        .clone();
    assert_eq!(
        (stats["publish"].clone(), stats["deliver_get"].clone()),
        (json!(4), json!(2))
    );
    // The overview counts by channel, closed ones included (checked on
    // a broker of our own: a shared one counts other tests' too).
    // Message counts carry their rates of change, as RabbitMQ's do.
    let (_, overview) = api.get("/api/overview");
    for count in ["messages", "messages_ready", "messages_unacknowledged"] {
        let rate = &overview["queue_totals"][format!("{count}_details")]["rate"];
        assert!(rate.is_number(), "{count}: {overview}");
    }
    let queue = queue_when(&api, &format!("/api/queues/{v}/stats-q"), |q| {
        q["messages_ready_details"]["rate"].is_number()
    });
    assert_eq!(queue["messages_ready"], 1, "{queue}");
    let overview_stats = || api.get("/api/overview").1["message_stats"].clone();
    if !broker.is_external() {
        let stats = overview_stats();
        let counts = [&stats["publish"], &stats["deliver_get"], &stats["ack"]];
        assert_eq!(counts, [&json!(4), &json!(2), &json!(2)], "{stats}");
    }
    // Publishing on: the channel's publish rate shows it.
    let rate = "/message_stats/publish_details/rate";
    let (_, more) =
        publish_until_rate(&api, "/api/channels", in_vhost, rate, || publish("k")).await;
    let published = 4 + more;
    within("close", connection.close(200, "bye"))
        .await
        .expect("close");
    if !broker.is_external() {
        let overview = queue_when(&api, "/api/overview", |o| {
            o["object_totals"]["connections"] == 0
        });
        assert_eq!(
            overview["message_stats"]["publish"], published,
            "after the close"
        );
    }
    drop(tenant);
}

#[tokio::test]
async fn connections_count_their_bytes_and_socket_operations_with_rates() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let tenant = Tenant::new(&api);
    let connection = connect(&tenant.url(&broker, "guest", "guest"))
        .await
        .expect("connect");
    let channel = open_channel(&connection).await;
    let body = vec![b'x'; 1000];
    let publish = || {
        channel.basic_publish(
            "",
            "nowhere",
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
    };
    for _ in 0..10 {
        within("publish", publish()).await.expect("publish");
    }
    let in_vhost = |c: &Value| c["vhost"] == json!(tenant.vhost);
    let shown = listed_when(&api, "/api/connections", |c| {
        in_vhost(c) && c["recv_oct"].as_u64() >= Some(10_000)
    });
    let count = |field: &str| shown[field].as_u64().unwrap_or(0);
    // The handshake alone is several reads and writes of both ways.
    assert!(
        count("recv_cnt") >= 1 && count("recv_cnt") < count("recv_oct"),
        "{shown}"
    );
    assert!(count("send_oct") > 0 && count("send_cnt") >= 1, "{shown}");
    assert!(shown["send_pend"].is_u64(), "{shown}");
    let name = segment(shown["name"].as_str().expect("name"));
    let (status, one) = api.get(&format!("/api/connections/{name}"));
    assert_eq!(status, 200);
    assert!(one["recv_oct"].as_u64() >= Some(10_000), "{one}");
    // Publishing on: the byte rate shows it.
    let rate = "/recv_oct_details/rate";
    let (shown, _) = publish_until_rate(&api, "/api/connections", in_vhost, rate, publish).await;
    assert!(shown["send_oct_details"]["rate"].is_number(), "{shown}");
    within("close", connection.close(200, "bye"))
        .await
        .expect("close");
    drop(tenant);
}

/// `path`'s answer once `ready` holds it (RabbitMQ: after its next
/// statistics emission; warren: after the watch's next tick).
fn answer_when(api: &Http, path: &str, ready: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api.get(path);
        if ready(status, &body) {
            return (status, body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: still {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nodes_health_and_aliveness_show_memory_disk_and_the_alarms() {
    let broker = Broker::start_managed(&[]);
    let api = guest(&broker);
    let (status, nodes) = api.get("/api/nodes");
    assert_eq!(status, 200);
    let node = &nodes[0];
    let figure = |key: &str| {
        node[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {node}"))
    };
    assert!(
        figure("mem_used") > 0 && figure("mem_used") < figure("mem_limit"),
        "{node}"
    );
    assert!(figure("disk_free") > figure("disk_free_limit"), "{node}");
    assert_eq!(node["mem_alarm"], false);
    assert_eq!(node["disk_free_alarm"], false);
    let ok = json!({"status": "ok"});
    assert_eq!(api.get("/api/health/checks/alarms"), (200, ok.clone()));
    assert_eq!(api.get("/api/aliveness-test/%2F"), (200, ok));
    let (status, _) = api.get(&format!("/api/aliveness-test/{}", unique("nowhere")));
    assert_eq!(status, 404);
    // Monitoring, not management, reads the node; the alarms health check
    // only needs management.
    let tenant = Tenant::new(&api);
    let account = json!({"password": "pw", "tags": "management"});
    api.ok("PUT", &format!("/api/users/{}", tenant.user), &account);
    let manager = Http::new(&broker.management_url(), &tenant.user, "pw");
    let refused = json!({"error": "not_authorised", "reason": "Not monitor user"});
    assert_eq!(manager.get("/api/nodes"), (401, refused));
    assert_eq!(manager.get("/api/health/checks/alarms").0, 200);
    drop(tenant);
    if broker.is_external() {
        return;
    }
    // Past its memory watermark from the start: the alarm shows, with
    // RabbitMQ's status and body.
    let alarmed = Broker::start_managed(&["--memory-high-watermark", "1MiB"]);
    let api = guest(&alarmed);
    let (_, health) = answer_when(&api, "/api/health/checks/alarms", |status, _| status == 503);
    let node_name = api.get("/api/nodes").1[0]["name"].clone();
    assert_eq!(
        health,
        json!({
            "status": "failed",
            "reason": "There are alarms in effect in the cluster",
            "alarms": [{"node": node_name, "resource": "memory"}],
        })
    );
    let (_, nodes) = api.get("/api/nodes");
    assert_eq!(nodes[0]["mem_alarm"], true, "{nodes}");
    assert!(
        nodes[0]["mem_used"].as_u64() > nodes[0]["mem_limit"].as_u64(),
        "{nodes}"
    );
}
