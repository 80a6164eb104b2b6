//! The JSON the management API shows, with RabbitMQ's field names, built
//! from catalog definitions and shard figures; and the way back, from
//! JSON arguments to AMQP field tables.
//!
//! Plain functions over plain data: they run on whichever shard owns the
//! data (inside a bridge command) or on the management thread.

use serde_json::{json, Map, Value};

use super::rates::{depth_json, message_stats, DepthRates, Rates};
use crate::catalog::access::{PermissionDef, PolicyDef, User};
use crate::catalog::policy::effective_definition;
use crate::catalog::{Catalog, ExchangeDef, QueueDef};
use crate::protocol::types::{FieldTable, FieldValue, LongStr};
use crate::queue::MessageTotals;
use crate::routing::{BindingView, Destination};

/// The node name warren reports where RabbitMQ reports `rabbit@host`.
pub(crate) const NODE_NAME: &str = "warren@localhost";

/// A queue's figures, from its owning shard, and its rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct QueueFigures {
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub consumers: u64,
    pub totals: MessageTotals,
    pub rates: Rates,
    /// How fast its message counts change.
    pub(crate) depth_rates: DepthRates,
}

pub(crate) fn field_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        FieldValue::LongStr(s) | FieldValue::Bytes(s) => {
            json!(String::from_utf8_lossy(s.as_bytes()))
        }
        FieldValue::Array(items) => Value::Array(items.iter().map(field_value).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(table) => field_table(table),
        FieldValue::Void => Value::Null,
    }
}

pub(crate) fn field_table(table: &FieldTable) -> Value {
    let map: Map<String, Value> = table
        .iter()
        .map(|(name, value)| (name.to_str_lossy().into_owned(), field_value(value)))
        .collect();
    Value::Object(map)
}

/// JSON arguments as RabbitMQ's management plugin converts them: strings
/// are long strings, integers signed 64-bit, objects tables. None when a
/// value has no AMQP form (null) or the table is not an object.
pub(crate) fn to_field_table(value: &Value) -> Option<FieldTable> {
    let mut table = FieldTable::new();
    match value {
        Value::Null => return Some(table),
        Value::Object(map) => {
            for (name, value) in map {
                table.insert(name.as_str(), to_field_value(value)?);
            }
        }
        _ => return None,
    }
    Some(table)
}

fn to_field_value(value: &Value) -> Option<FieldValue> {
    Some(match value {
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64()?),
        },
        Value::String(s) => FieldValue::LongStr(LongStr::from(s.as_str())),
        Value::Array(items) => {
            FieldValue::Array(items.iter().map(to_field_value).collect::<Option<_>>()?)
        }
        Value::Object(_) => FieldValue::Table(to_field_table(value)?),
        Value::Null => return None,
    })
}

pub fn exchange(def: &ExchangeDef) -> Value {
    let mut view = json!({
        "name": def.name.to_str_lossy(),
        "vhost": def.vhost.to_str_lossy(),
        "type": def.type_name(),
        "durable": def.durable,
        "auto_delete": def.auto_delete,
        "internal": def.internal,
        "arguments": field_table(&def.arguments),
        "user_who_performed_action": "rmq-internal",
    });
    // RabbitMQ names an exchange's policy only when it has one.
    if let (Some(policy), Some(fields)) = (&def.policy, view.as_object_mut()) {
        fields.insert("policy".to_owned(), json!(policy.name));
    }
    view
}

pub fn queue(def: &QueueDef, figures: QueueFigures) -> Value {
    let queue_type = match def
        .arguments
        .get("x-queue-type")
        .and_then(FieldValue::as_str)
    {
        Some("quorum") => "quorum",
        _ => "classic",
    };
    let mut view = json!({
        "name": def.name.to_str_lossy(),
        "vhost": def.vhost.to_str_lossy(),
        "durable": def.durable,
        "auto_delete": def.auto_delete,
        "exclusive": def.exclusive_owner.is_some(),
        "arguments": field_table(&def.arguments),
        "node": NODE_NAME,
        "state": "running",
        "type": queue_type,
        "policy": def.policy.as_ref().map(|p| &p.name),
        "operator_policy": def.operator_policy.as_ref().map(|p| &p.name),
        "effective_policy_definition": effective_definition(def.policy.as_deref(), def.operator_policy.as_deref()),
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
        "consumers": figures.consumers,
        "message_stats": message_stats(figures.totals, figures.rates),
    });
    let depth = depth_json(
        figures.messages_ready,
        figures.messages_unacknowledged,
        figures.depth_rates,
    );
    if let (Some(fields), Value::Object(depth)) = (view.as_object_mut(), depth) {
        fields.extend(depth);
    }
    view
}

/// A binding; None when its destination queue is gone from the catalog.
pub fn binding(catalog: &Catalog, vhost: &str, view: &BindingView<'_>) -> Option<Value> {
    let (destination, destination_type) = match view.destination {
        Destination::Queue(id) => (catalog.queue_by_id(*id)?.name.to_str_lossy(), "queue"),
        Destination::Exchange(name) => (name.to_str_lossy(), "exchange"),
    };
    let routing_key = view.routing_key.to_str_lossy();
    Some(json!({
        "source": view.source.to_str_lossy(),
        "vhost": vhost,
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": routing_key,
        "arguments": field_table(view.arguments),
        "properties_key": properties_key(&routing_key, view.arguments),
    }))
}

/// RabbitMQ's binding id in URLs: the routing key, or "~" when empty; with
/// arguments, a hash of them after a "~" (ours is FNV, not Erlang's phash2,
/// so such ids differ from RabbitMQ's but are stable).
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    let key = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        url_encode(routing_key)
    };
    if arguments.is_empty() {
        return key;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in field_table(arguments).to_string().bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{key}~{hash}")
}

/// Percent-encodes what is not unreserved, as RabbitMQ's binding ids are.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn user(user: &User) -> Value {
    json!({
        "name": user.name,
        "password_hash": user.password_hash.to_base64(),
        "hashing_algorithm": user.password_hash.algorithm.name(),
        "tags": user.tags,
        "limits": {},
    })
}

pub fn vhost(name: &str) -> Value {
    let description = if name == crate::catalog::DEFAULT_VHOST {
        "Default virtual host"
    } else {
        ""
    };
    json!({
        "name": name,
        "description": description,
        "tags": [],
        "default_queue_type": "undefined",
        "metadata": {"description": description, "tags": []},
        "tracing": false,
        "cluster_state": {NODE_NAME: "running"},
    })
}

pub fn permission(def: &PermissionDef) -> Value {
    json!({
        "user": def.user,
        "vhost": def.vhost,
        "configure": def.configure,
        "write": def.write,
        "read": def.read,
    })
}

/// An operator policy as RabbitMQ's definitions files hold it: a runtime
/// parameter of component `operator_policy`.
pub(crate) fn operator_policy_parameter(def: &PolicyDef) -> Value {
    json!({
        "vhost": def.vhost,
        "component": "operator_policy",
        "name": def.name,
        "value": {
            "pattern": def.pattern,
            "apply-to": def.apply_to.name(),
            "definition": def.definition,
            "priority": def.priority,
        },
    })
}

pub fn policy(def: &PolicyDef) -> Value {
    json!({
        "vhost": def.vhost,
        "name": def.name,
        "pattern": def.pattern,
        "apply-to": def.apply_to.name(),
        "definition": def.definition,
        "priority": def.priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arguments_become_rabbitmq_field_types_and_back() {
        let arguments = json!({"x-max-length": 10, "x-queue-type": "quorum", "flag": true});
        let table = to_field_table(&arguments).expect("convertible");
        assert_eq!(table.get("x-max-length"), Some(&FieldValue::I64(10)));
        assert_eq!(
            table.get("x-queue-type").and_then(FieldValue::as_str),
            Some("quorum")
        );
        assert_eq!(field_table(&table), arguments);
        assert!(to_field_table(&json!([1])).is_none());
    }

    #[test]
    fn binding_ids_are_rabbitmqs_for_bindings_without_arguments() {
        assert_eq!(properties_key("", &FieldTable::new()), "~");
        assert_eq!(properties_key("a.b#", &FieldTable::new()), "a.b%23");
    }
}
