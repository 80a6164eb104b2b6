//! A queue's settings (type, TTLs, length limits, dead-lettering,
//! priorities, single active consumer, delivery limit), resolved once from
//! the `x-` arguments of queue.declare and validated with RabbitMQ's rules
//! and 406 texts.
//!
//! A policy supplies the same settings (its keys in their `x-` spelling,
//! `catalog::policy`): `Settings::resolve` combines the queue's arguments
//! with the policy's as RabbitMQ's queues do: for the limits (TTL, expiry,
//! lengths, delivery limit) the smaller value wins, for the rest the
//! queue's own argument.
//!
//! Plain data, no I/O: the catalog validates on declare and keeps the
//! result in the queue's definition; the owning shard builds the queue from
//! it.

use crate::protocol::error::AmqpError;
use crate::protocol::types::{FieldTable, FieldValue, ShortStr};
use crate::routing::headers::type_name;

/// The queue types warren accepts in `x-queue-type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

/// What happens when a publish would take the queue past a length limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// The oldest messages are dropped (dead-lettered `maxlen`).
    #[default]
    DropHead,
    /// The new message is refused (basic.nack to a confirming publisher).
    RejectPublish,
    /// As `RejectPublish`, and the refused message is dead-lettered.
    RejectPublishDlx,
}

/// RabbitMQ's largest TTL and expiry, in milliseconds (its timer limit).
const EXPIRY_MS_MAX: u64 = 4_294_967_295;

/// A queue's behaviour beyond the basics; the default is a plain queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub queue_type: QueueType,
    /// `x-message-ttl`: how long a message may wait in the queue.
    pub(crate) message_ttl_ms: Option<u64>,
    /// `x-expires`: the queue goes after this long unused.
    pub(crate) expires_ms: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub(crate) max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub(crate) max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`; the empty name is the default exchange.
    pub(crate) dead_letter_exchange: Option<ShortStr>,
    /// `x-dead-letter-routing-key`; without it the message's own keys.
    pub(crate) dead_letter_routing_key: Option<ShortStr>,
    /// `x-max-priority`: message priorities above it count as it.
    pub(crate) max_priority: Option<u8>,
    pub(crate) single_active_consumer: bool,
    /// `x-delivery-limit` (quorum): deliveries after which a returned
    /// message is dead-lettered `delivery_limit`.
    pub delivery_limit: Option<u64>,
}

/// The `x-` arguments RabbitMQ 3.10 knows for classic queues but refuses
/// on quorum queues.
const CLASSIC_ONLY: &[&str] = &[
    "x-max-priority",
    "x-queue-mode",
    "x-queue-version",
    "x-queue-master-locator",
];

impl QueueType {
    /// The `x-` arguments RabbitMQ compares on redeclaration, per type.
    pub(crate) fn equivalence_arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => &[
                "x-expires",
                "x-message-ttl",
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-priority",
                "x-overflow",
                "x-queue-mode",
                "x-queue-version",
                "x-single-active-consumer",
                "x-queue-type",
                "x-queue-master-locator",
            ],
            QueueType::Quorum => &[
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-dead-letter-strategy",
                "x-expires",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-in-memory-length",
                "x-max-in-memory-bytes",
                "x-overflow",
                "x-single-active-consumer",
                "x-queue-type",
                "x-quorum-initial-group-size",
                "x-delivery-limit",
                "x-message-ttl",
                "x-queue-leader-locator",
            ],
        }
    }

    /// RabbitMQ's module name for the type, as its error texts print it.
    fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
        }
    }
}

/// The keys for which RabbitMQ takes the smaller of argument and policy
/// (`res_min` in rabbit_amqqueue_process and rabbit_quorum_queue); for the
/// others the argument wins (`res_arg`).
const SMALLER_WINS: [&str; 5] = [
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-delivery-limit",
];

/// An argument's complaint, formatted as RabbitMQ prints the Erlang term.
type Invalid = String;

/// The value as an integer if it has one of RabbitMQ's integer types.
fn integer(value: &FieldValue) -> Result<i64, Invalid> {
    match *value {
        FieldValue::I8(v) => Ok(v.into()),
        FieldValue::U8(v) => Ok(v.into()),
        FieldValue::I16(v) => Ok(v.into()),
        FieldValue::U16(v) => Ok(v.into()),
        FieldValue::I32(v) => Ok(v.into()),
        FieldValue::U32(v) => Ok(v.into()),
        FieldValue::I64(v) => Ok(v),
        ref other => Err(format!("\"expected integer, got {}\"", type_name(other))),
    }
}

fn non_negative(value: &FieldValue) -> Result<u64, Invalid> {
    let n = integer(value)?;
    u64::try_from(n).map_err(|_| format!("{{value_negative,{n}}}"))
}

/// RabbitMQ's `check_expiry`: 0 to 2^32-1 milliseconds.
fn expiry(value: &FieldValue) -> Result<u64, Invalid> {
    let n = non_negative(value)?;
    if n > EXPIRY_MS_MAX {
        return Err(format!("{{value_too_large,{n}}}"));
    }
    Ok(n)
}

fn expires(value: &FieldValue) -> Result<u64, Invalid> {
    if integer(value)? == 0 {
        return Err("{value_zero,0}".to_owned());
    }
    expiry(value)
}

/// RabbitMQ's highest priority is 255, which is what a u8 holds.
fn max_priority(value: &FieldValue) -> Result<u8, Invalid> {
    let n = non_negative(value)?;
    u8::try_from(n).map_err(|_| format!("{{max_value_exceeded,{n}}}"))
}

fn long_string(value: &FieldValue) -> Result<ShortStr, Invalid> {
    match value {
        FieldValue::LongStr(text) => Ok(ShortStr::from_bytes(text.bytes().clone())),
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

fn overflow(value: &FieldValue) -> Result<Overflow, Invalid> {
    match long_string(value)?.as_bytes() {
        b"drop-head" => Ok(Overflow::DropHead),
        b"reject-publish" => Ok(Overflow::RejectPublish),
        b"reject-publish-dlx" => Ok(Overflow::RejectPublishDlx),
        _ => Err("invalid_overflow".to_owned()),
    }
}

fn boolean(value: &FieldValue) -> Result<bool, Invalid> {
    match value {
        FieldValue::Bool(flag) => Ok(*flag),
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

fn queue_type(value: &FieldValue) -> Result<QueueType, Invalid> {
    match value {
        FieldValue::LongStr(text) => match text.as_bytes() {
            b"classic" => Ok(QueueType::Classic),
            b"quorum" => Ok(QueueType::Quorum),
            b"stream" => Err("queue type 'stream' is not supported by warren (yet)".to_owned()),
            other => Err(format!(
                "\"unsupported queue type '{}'\"",
                String::from_utf8_lossy(other)
            )),
        },
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

fn queue_mode(value: &FieldValue) -> Result<(), Invalid> {
    match long_string(value)?.as_bytes() {
        b"default" | b"lazy" => Ok(()),
        other => Err(format!(
            "\"unsupported queue mode '{}'\"",
            String::from_utf8_lossy(other)
        )),
    }
}

fn queue_version(value: &FieldValue) -> Result<(), Invalid> {
    match integer(value)? {
        1 | 2 => Ok(()),
        other => Err(format!("\"unsupported queue version '{other}'\"")),
    }
}

/// The quorum queue's `x-delivery-limit` is not checked on declare by
/// RabbitMQ: a value that is not a non-negative integer means no limit.
fn delivery_limit(value: &FieldValue) -> Option<u64> {
    integer(value).ok().and_then(|n| u64::try_from(n).ok())
}

impl Settings {
    /// Resolves and validates the settings of a queue named by `resource`
    /// ("queue 'q' in vhost '/'") from its arguments alone.
    pub(crate) fn from_arguments(
        arguments: &FieldTable,
        resource: &str,
    ) -> Result<Settings, AmqpError> {
        Settings::resolve(arguments, None, resource)
    }

    /// Resolves from the queue's arguments and the policy's (see the
    /// module doc for which wins). Checks run in RabbitMQ's order, so the
    /// first complaint is the one RabbitMQ makes.
    pub(crate) fn resolve(
        arguments: &FieldTable,
        policy: Option<&FieldTable>,
        resource: &str,
    ) -> Result<Settings, AmqpError> {
        let lookup = |key: &str| {
            let own = arguments.get(key);
            match (own, policy.and_then(|table| table.get(key))) {
                (Some(own), Some(from_policy)) if SMALLER_WINS.contains(&key) => {
                    match (integer(own), integer(from_policy)) {
                        (Ok(a), Ok(p)) if p < a => Some(from_policy),
                        _ => Some(own),
                    }
                }
                (own, from_policy) => own.or(from_policy),
            }
        };
        let invalid = |key: &str, detail: Invalid| {
            AmqpError::precondition_failed(format!("invalid arg '{key}' for {resource}: {detail}"))
        };
        // One check per key: parse if present, and name the key on error.
        macro_rules! check {
            ($key:literal, $parse:expr) => {
                match lookup($key) {
                    Some(value) => Some($parse(value).map_err(|detail| invalid($key, detail))?),
                    None => None,
                }
            };
        }
        let mut settings = Settings {
            expires_ms: check!("x-expires", expires),
            message_ttl_ms: check!("x-message-ttl", expiry),
            ..Settings::default()
        };
        settings.dead_letter_exchange = check!("x-dead-letter-exchange", long_string);
        settings.dead_letter_routing_key = check!("x-dead-letter-routing-key", long_string);
        // Checked on the queue's own arguments, as RabbitMQ's declare does.
        if arguments.get("x-dead-letter-routing-key").is_some()
            && arguments.get("x-dead-letter-exchange").is_none()
        {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".to_owned(),
            ));
        }
        settings.max_length = check!("x-max-length", non_negative);
        settings.max_length_bytes = check!("x-max-length-bytes", non_negative);
        check!("x-max-in-memory-length", non_negative);
        check!("x-max-in-memory-bytes", non_negative);
        settings.max_priority = check!("x-max-priority", max_priority);
        settings.overflow = check!("x-overflow", overflow).unwrap_or_default();
        check!("x-queue-mode", queue_mode);
        check!("x-queue-version", queue_version);
        settings.single_active_consumer =
            check!("x-single-active-consumer", boolean).unwrap_or(false);
        settings.queue_type = check!("x-queue-type", queue_type).unwrap_or_default();
        if settings.queue_type == QueueType::Quorum {
            if let Some(key) = CLASSIC_ONLY.iter().find(|key| lookup(key).is_some()) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{key}' for {resource} of queue type {}",
                    settings.queue_type.module()
                )));
            }
            settings.delivery_limit = lookup("x-delivery-limit").and_then(delivery_limit);
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::LongStr;

    const RESOURCE: &str = "queue 'q' in vhost '/'";

    fn arguments(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut table = FieldTable::new();
        for (key, value) in entries {
            table.insert(*key, value.clone());
        }
        table
    }

    fn text(value: &str) -> FieldValue {
        FieldValue::LongStr(LongStr::from(value))
    }

    fn complaint(entries: &[(&str, FieldValue)]) -> String {
        match Settings::from_arguments(&arguments(entries), RESOURCE) {
            Err(err) => err.reply_text(),
            Ok(settings) => panic!("accepted {settings:?}"),
        }
    }

    #[test]
    fn every_argument_resolves() {
        let settings = Settings::from_arguments(
            &arguments(&[
                ("x-message-ttl", FieldValue::I32(0)),
                ("x-expires", FieldValue::U16(10)),
                ("x-max-length", FieldValue::I64(5)),
                ("x-max-length-bytes", FieldValue::U8(7)),
                ("x-overflow", text("reject-publish-dlx")),
                ("x-dead-letter-exchange", text("dlx")),
                ("x-dead-letter-routing-key", text("rk")),
                ("x-max-priority", FieldValue::I8(10)),
                ("x-single-active-consumer", FieldValue::Bool(true)),
                ("x-queue-mode", text("lazy")),
                ("x-queue-version", FieldValue::I32(2)),
            ]),
            RESOURCE,
        )
        .expect("valid arguments");
        assert_eq!(
            settings,
            Settings {
                queue_type: QueueType::Classic,
                message_ttl_ms: Some(0),
                expires_ms: Some(10),
                max_length: Some(5),
                max_length_bytes: Some(7),
                overflow: Overflow::RejectPublishDlx,
                dead_letter_exchange: Some(ShortStr::from("dlx")),
                dead_letter_routing_key: Some(ShortStr::from("rk")),
                max_priority: Some(10),
                single_active_consumer: true,
                delivery_limit: None,
            }
        );
    }

    // Texts from RabbitMQ 3.10.
    #[test]
    fn invalid_values_get_rabbitmq_texts() {
        let prefix = "PRECONDITION_FAILED - invalid arg";
        assert_eq!(
            complaint(&[("x-message-ttl", FieldValue::I64(1 << 40))]),
            format!("{prefix} 'x-message-ttl' for {RESOURCE}: {{value_too_large,1099511627776}}")
        );
        assert_eq!(
            complaint(&[("x-expires", FieldValue::I32(-5))]),
            format!("{prefix} 'x-expires' for {RESOURCE}: {{value_negative,-5}}")
        );
        assert_eq!(
            complaint(&[("x-overflow", FieldValue::I32(1))]),
            format!("{prefix} 'x-overflow' for {RESOURCE}: {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            complaint(&[("x-queue-mode", text("foo"))]),
            format!("{prefix} 'x-queue-mode' for {RESOURCE}: \"unsupported queue mode 'foo'\"")
        );
        assert_eq!(
            complaint(&[("x-queue-version", FieldValue::I32(3))]),
            format!("{prefix} 'x-queue-version' for {RESOURCE}: \"unsupported queue version '3'\"")
        );
        assert_eq!(
            complaint(&[
                ("x-queue-type", text("quorum")),
                ("x-max-priority", FieldValue::I32(5))
            ]),
            format!("{prefix} 'x-max-priority' for {RESOURCE} of queue type rabbit_quorum_queue")
        );
    }

    #[test]
    fn limits_take_the_smaller_of_argument_and_policy_and_the_rest_the_argument() {
        let own = arguments(&[
            ("x-message-ttl", FieldValue::I32(10)),
            ("x-max-length", FieldValue::I32(7)),
            ("x-overflow", text("reject-publish")),
            ("x-dead-letter-exchange", text("own")),
        ]);
        let policy = arguments(&[
            ("x-message-ttl", FieldValue::I64(99)),
            ("x-max-length", FieldValue::I64(3)),
            ("x-max-length-bytes", FieldValue::I64(100)),
            ("x-overflow", text("drop-head")),
            ("x-dead-letter-exchange", text("policy")),
            ("x-dead-letter-routing-key", text("rk")),
        ]);
        let settings = Settings::resolve(&own, Some(&policy), RESOURCE).expect("valid");
        assert_eq!(settings.message_ttl_ms, Some(10));
        assert_eq!(settings.max_length, Some(3));
        assert_eq!(settings.max_length_bytes, Some(100));
        assert_eq!(settings.overflow, Overflow::RejectPublish);
        assert_eq!(settings.dead_letter_exchange, Some(ShortStr::from("own")));
        assert_eq!(settings.dead_letter_routing_key, Some(ShortStr::from("rk")));
        // A policy's routing key without any exchange is no error.
        let policy = arguments(&[("x-dead-letter-routing-key", text("rk"))]);
        let settings = Settings::resolve(&FieldTable::new(), Some(&policy), RESOURCE);
        assert!(settings.is_ok(), "{settings:?}");
    }

    #[test]
    fn quorum_delivery_limit_is_taken_as_given() {
        let quorum = |limit: FieldValue| {
            Settings::from_arguments(
                &arguments(&[
                    ("x-queue-type", text("quorum")),
                    ("x-delivery-limit", limit),
                ]),
                RESOURCE,
            )
            .expect("RabbitMQ accepts any x-delivery-limit")
            .delivery_limit
        };
        assert_eq!(quorum(FieldValue::I32(3)), Some(3));
        assert_eq!(quorum(text("x")), None);
        assert_eq!(quorum(FieldValue::I32(-1)), None);
    }
}
