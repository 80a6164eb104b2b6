//! Small steps of a lapin client that many end-to-end tests share: a time
//! bound on each step against the broker, and opening a connection with a
//! channel (optionally in confirm mode).

use std::future::Future;
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use warren::catalog::queue_shard;

use super::Broker;

/// Upper bound for one step against the broker (an RPC, a delivery).
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than `STEP`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// A new connection to `broker` and one channel on it.
pub async fn open(broker: &Broker) -> (Connection, Channel) {
    let url = broker.amqp_url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let connection = within("connect", connect).await.expect("connect");
    let channel = within("channel.open", connection.create_channel())
        .await
        .expect("channel.open");
    (connection, channel)
}

/// `open`, with the channel in confirm mode.
pub async fn open_confirming(broker: &Broker) -> (Connection, Channel) {
    let (connection, channel) = open(broker).await;
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    (connection, channel)
}

/// The names `prefix-0`, `prefix-1`, ... whose queues live on `shard` of a
/// two-shard warren (`catalog::queue_shard`), in that order: tests put a
/// queue on each shard on purpose.
pub fn names_on_shard(prefix: &str, shard: usize) -> impl Iterator<Item = String> + '_ {
    (0..)
        .map(move |n| format!("{prefix}-{n}"))
        .filter(move |name| queue_shard(b"/", name.as_bytes(), 2) == shard)
}

/// Declares a durable queue with `arguments`.
pub async fn declare_durable(channel: &Channel, queue: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    within(
        "queue.declare",
        channel.queue_declare(queue, options, arguments),
    )
    .await
    .expect("queue.declare");
}
