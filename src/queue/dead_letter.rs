//! Dead-lettered messages as RabbitMQ builds them, and the property
//! rewrites a queue makes on the way out.
//!
//! `make` turns a message leaving a queue into the one published to the
//! queue's dead-letter exchange: the `x-death` header updated as RabbitMQ
//! 3.10's `rabbit_dead_letter` does (one entry per queue and reason, the
//! latest first, counted; the first entry's fields in RabbitMQ's order and
//! later ones sorted; the header table sorted by key), `x-first-death-*`
//! on the first death, `x-last-death-*` on every death (as RabbitMQ 3.13
//! adds), the expiration property moved to `original-expiration`, and the
//! routing keys to publish with. `is_cycle` is RabbitMQ's cycle check.
//!
//! Plain functions over bytes: no I/O, no clock (the caller passes the
//! time). They decode and re-encode the properties, so they allocate; they
//! run only for dead letters and quorum-queue deliveries, never on the
//! path of a queue without arguments.

use bytes::BytesMut;

use super::{DeathReason, Settings};
use crate::message::{Message, MessageContent};
use crate::protocol::properties::BasicProperties;
use crate::protocol::types::{FieldTable, FieldValue, LongStr, ShortStr};

/// A message ready to publish to a dead-letter exchange.
pub struct DeadLettered {
    pub message: Message,
    /// The keys to route it with from `message.exchange`.
    pub routing_keys: Vec<ShortStr>,
    /// Its header table, decoded, for headers exchanges and `is_cycle`.
    pub headers: FieldTable,
}

/// Where the message died.
pub(crate) struct Death<'a> {
    pub queue: &'a ShortStr,
    pub reason: DeathReason,
    /// Wall-clock seconds since the epoch (x-death's `time`).
    pub(crate) time_s: u64,
}

fn long_str(text: &[u8]) -> FieldValue {
    FieldValue::LongStr(LongStr::from_bytes(bytes::Bytes::copy_from_slice(text)))
}

fn decode_properties(message: &Message) -> BasicProperties {
    // The properties were validated when the message was published.
    BasicProperties::decode(&mut message.properties.clone()).unwrap_or_default()
}

fn encode_properties(properties: &BasicProperties) -> bytes::Bytes {
    let mut out = BytesMut::new();
    properties.encode(&mut out);
    out.freeze()
}

/// RabbitMQ's `set_table_value`: replace or add, then sort by key.
fn set_sorted(table: &mut FieldTable, key: &str, value: FieldValue) {
    table
        .0
        .retain(|(name, _)| name.as_bytes() != key.as_bytes());
    table.0.push((ShortStr::from(key), value));
    sort(table);
}

fn sort(table: &mut FieldTable) {
    table.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

/// The message with `x-delivery-count` set, as a quorum queue delivers it.
pub(crate) fn with_delivery_count(message: &Message, returns: u32) -> Message {
    let mut properties = decode_properties(message);
    let headers = properties.headers.get_or_insert_with(FieldTable::new);
    set_sorted(headers, "x-delivery-count", FieldValue::I64(returns.into()));
    rebuilt(
        message,
        &properties,
        message.exchange.clone(),
        message.routing_key.clone(),
    )
}

fn rebuilt(
    message: &Message,
    properties: &BasicProperties,
    exchange: ShortStr,
    routing_key: ShortStr,
) -> Message {
    Message::new(MessageContent {
        exchange,
        routing_key,
        properties: encode_properties(properties),
        body: message.body.clone(),
        priority: message.priority,
        persistent: message.persistent,
        expiration_ms: properties.expiration.as_ref().and(message.expiration_ms),
    })
}

/// The CC and BCC keys a message was published with (RabbitMQ's
/// `header_routes`).
fn header_routes(headers: &FieldTable) -> impl Iterator<Item = ShortStr> + '_ {
    ["CC", "BCC"]
        .into_iter()
        .filter_map(|key| match headers.get(key) {
            Some(FieldValue::Array(values)) => Some(values),
            _ => None,
        })
        .flatten()
        .filter_map(|value| match value {
            FieldValue::LongStr(key) => Some(ShortStr::from_bytes(key.bytes().clone())),
            _ => None,
        })
}

/// The message `death` sends to `settings`' dead-letter exchange.
pub(crate) fn make(message: &Message, death: &Death<'_>, settings: &Settings) -> DeadLettered {
    let mut properties = decode_properties(message);
    let mut headers = properties.headers.take().unwrap_or_default();
    let mut routing_keys = vec![message.routing_key.clone()];
    routing_keys.extend(header_routes(&headers));
    let mut info = vec![
        (
            ShortStr::from("reason"),
            long_str(death.reason.as_str().as_bytes()),
        ),
        (ShortStr::from("queue"), long_str(death.queue.as_bytes())),
        (ShortStr::from("time"), FieldValue::Timestamp(death.time_s)),
        (
            ShortStr::from("exchange"),
            long_str(message.exchange.as_bytes()),
        ),
        (
            ShortStr::from("routing-keys"),
            FieldValue::Array(
                routing_keys
                    .iter()
                    .map(|k| long_str(k.as_bytes()))
                    .collect(),
            ),
        ),
    ];
    if let Some(expiration) = properties.expiration.take() {
        info.push((
            ShortStr::from("original-expiration"),
            long_str(expiration.as_bytes()),
        ));
    }
    update_x_death(
        &mut headers,
        info,
        death,
        long_str(message.exchange.as_bytes()),
    );
    let routing_keys = match &settings.dead_letter_routing_key {
        Some(key) => {
            headers.0.retain(|(name, _)| name.as_bytes() != b"CC");
            vec![key.clone()]
        }
        None => routing_keys,
    };
    properties.headers = Some(headers.clone());
    let exchange = settings.dead_letter_exchange.clone().unwrap_or_default();
    let message = rebuilt(message, &properties, exchange, routing_keys[0].clone());
    DeadLettered {
        message,
        routing_keys,
        headers,
    }
}

/// RabbitMQ's `update_x_death_header`, with 3.13's `x-last-death-*`;
/// `exchange` is the one the message was last published to.
fn update_x_death(
    headers: &mut FieldTable,
    info: Vec<(ShortStr, FieldValue)>,
    death: &Death<'_>,
    exchange: FieldValue,
) {
    let reason = death.reason.as_str().as_bytes();
    let queue = death.queue.as_bytes();
    let count_one = (ShortStr::from("count"), FieldValue::I64(1));
    match headers.get("x-death") {
        Some(FieldValue::Array(deaths)) => {
            let (mut matches, others): (Vec<FieldValue>, Vec<FieldValue>) = deaths
                .iter()
                .cloned()
                .partition(|entry| matches_death(entry, queue, reason));
            let mut entry = match matches.pop() {
                Some(FieldValue::Table(entry)) => incremented(entry),
                _ => FieldTable(std::iter::once(count_one).chain(info).collect()),
            };
            sort(&mut entry);
            let deaths = std::iter::once(FieldValue::Table(entry))
                .chain(others)
                .collect();
            set_sorted(headers, "x-death", FieldValue::Array(deaths));
        }
        _ => {
            let entry = FieldTable(std::iter::once(count_one).chain(info).collect());
            set_sorted(headers, "x-first-death-reason", long_str(reason));
            set_sorted(headers, "x-first-death-queue", long_str(queue));
            set_sorted(headers, "x-first-death-exchange", exchange.clone());
            set_sorted(
                headers,
                "x-death",
                FieldValue::Array(vec![FieldValue::Table(entry)]),
            );
        }
    }
    set_sorted(headers, "x-last-death-reason", long_str(reason));
    set_sorted(headers, "x-last-death-queue", long_str(queue));
    set_sorted(headers, "x-last-death-exchange", exchange);
}

fn matches_death(entry: &FieldValue, queue: &[u8], reason: &[u8]) -> bool {
    let FieldValue::Table(entry) = entry else {
        return false;
    };
    let is = |key: &str, expected: &[u8]| matches!(entry.get(key), Some(FieldValue::LongStr(text)) if text.as_bytes() == expected);
    is("queue", queue) && is("reason", reason)
}

/// RabbitMQ's `increment_xdeath_event_count`: the count keeps its type.
fn incremented(mut entry: FieldTable) -> FieldTable {
    let count = match entry.get("count") {
        Some(FieldValue::I32(n)) => FieldValue::I32(n.saturating_add(1)),
        Some(FieldValue::I64(n)) => FieldValue::I64(n.saturating_add(1)),
        _ => FieldValue::I64(1),
    };
    set_sorted(&mut entry, "count", count);
    entry
}

/// RabbitMQ's `is_cycle`: dead-lettering to `queue` would cycle when the
/// message already died there and no death since was a rejection (a
/// client's decision breaks the cycle). Rejections are never cycles.
pub(crate) fn is_cycle(reason: DeathReason, headers: &FieldTable, queue: &[u8]) -> bool {
    if reason == DeathReason::Rejected {
        return false;
    }
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        return false;
    };
    let Some(position) = deaths
        .iter()
        .position(|entry| matches!(entry, FieldValue::Table(e) if is_queue(e, queue)))
    else {
        return false;
    };
    deaths[..=position].iter().all(|entry| match entry {
        FieldValue::Table(entry) => !matches!(
            entry.get("reason"),
            Some(FieldValue::LongStr(text)) if text.as_bytes() == b"rejected"
        ),
        _ => false,
    })
}

fn is_queue(entry: &FieldTable, queue: &[u8]) -> bool {
    matches!(entry.get("queue"), Some(FieldValue::LongStr(text)) if text.as_bytes() == queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_with(properties: &BasicProperties) -> Message {
        Message::new(MessageContent {
            exchange: ShortStr::from("ex"),
            routing_key: ShortStr::from("rk"),
            properties: encode_properties(properties),
            body: bytes::Bytes::from_static(b"body"),
            priority: 0,
            persistent: false,
            expiration_ms: properties.expiration.as_ref().map(|_| 5_000),
        })
    }

    fn keys(table: &FieldTable) -> Vec<String> {
        table.iter().map(|(key, _)| key.to_string()).collect()
    }

    fn dead_letter_to(routing_key: Option<&str>) -> Settings {
        Settings {
            dead_letter_exchange: Some(ShortStr::from("dlx")),
            dead_letter_routing_key: routing_key.map(ShortStr::from),
            ..Settings::default()
        }
    }

    fn first_death(headers: &FieldTable) -> FieldTable {
        match headers.get("x-death") {
            Some(FieldValue::Array(deaths)) => match &deaths[0] {
                FieldValue::Table(entry) => entry.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    // The orders RabbitMQ 3.10 sends, as pika reads them off the wire.
    #[test]
    fn x_death_has_rabbitmq_field_order_first_and_sorted_after() {
        let mut cc = FieldTable::new();
        cc.insert("CC", FieldValue::Array(vec![long_str(b"other")]));
        cc.insert("a", FieldValue::Bool(true));
        let properties = BasicProperties {
            headers: Some(cc),
            expiration: Some(ShortStr::from("5000")),
            ..BasicProperties::default()
        };
        let queue = ShortStr::from("q");
        let death = Death {
            queue: &queue,
            reason: DeathReason::Expired,
            time_s: 7,
        };
        let once = make(&message_with(&properties), &death, &dead_letter_to(None));
        assert_eq!(
            keys(&once.headers),
            [
                "CC",
                "a",
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
                "x-last-death-exchange",
                "x-last-death-queue",
                "x-last-death-reason"
            ]
        );
        let entry = first_death(&once.headers);
        assert_eq!(
            keys(&entry),
            [
                "count",
                "reason",
                "queue",
                "time",
                "exchange",
                "routing-keys",
                "original-expiration"
            ]
        );
        assert_eq!(
            entry.get("routing-keys"),
            Some(&FieldValue::Array(vec![
                long_str(b"rk"),
                long_str(b"other")
            ]))
        );
        assert_eq!(
            once.routing_keys,
            [ShortStr::from("rk"), ShortStr::from("other")]
        );
        assert_eq!(once.message.exchange.as_bytes(), b"dlx");
        assert_eq!(once.message.expiration_ms, None);
        let decoded = decode_properties(&once.message);
        assert_eq!(decoded.expiration, None);
        assert_eq!(decoded.headers.as_ref(), Some(&once.headers));

        let twice = make(&once.message, &death, &dead_letter_to(Some("to")));
        let entry = first_death(&twice.headers);
        assert_eq!(
            keys(&entry),
            [
                "count",
                "exchange",
                "original-expiration",
                "queue",
                "reason",
                "routing-keys",
                "time"
            ]
        );
        assert_eq!(entry.get("count"), Some(&FieldValue::I64(2)));
        assert_eq!(
            twice.headers.get("CC"),
            None,
            "a dead-letter routing key drops CC"
        );
        assert_eq!(twice.routing_keys, [ShortStr::from("to")]);
    }

    #[test]
    fn a_cycle_is_a_queue_seen_again_without_a_rejection_since() {
        let entry = |queue: &[u8], reason: &[u8]| {
            let mut entry = FieldTable::new();
            entry.insert("queue", long_str(queue));
            entry.insert("reason", long_str(reason));
            FieldValue::Table(entry)
        };
        let mut headers = FieldTable::new();
        headers.insert(
            "x-death",
            FieldValue::Array(vec![entry(b"b", b"expired"), entry(b"a", b"maxlen")]),
        );
        assert!(is_cycle(DeathReason::Expired, &headers, b"a"));
        assert!(!is_cycle(DeathReason::Rejected, &headers, b"a"));
        assert!(!is_cycle(DeathReason::Expired, &headers, b"c"));
        headers.insert(
            "x-death",
            FieldValue::Array(vec![entry(b"b", b"rejected"), entry(b"a", b"maxlen")]),
        );
        assert!(!is_cycle(DeathReason::Expired, &headers, b"a"));
    }

    #[test]
    fn delivery_count_is_a_sorted_long_header() {
        let mut headers = FieldTable::new();
        headers.insert("z", FieldValue::Bool(true));
        let message = message_with(&BasicProperties {
            headers: Some(headers),
            ..BasicProperties::default()
        });
        let counted = decode_properties(&with_delivery_count(&message, 2));
        let headers = counted.headers.unwrap_or_default();
        assert_eq!(keys(&headers), ["x-delivery-count", "z"]);
        assert_eq!(headers.get("x-delivery-count"), Some(&FieldValue::I64(2)));
    }
}
