//! Messages over HTTP, as RabbitMQ's API shows them: properties as a JSON
//! object with the AMQP names (an empty list when there are none, as
//! RabbitMQ's Erlang encoder prints it), payloads as text or base64.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::views::{field_table, to_field_table};
use super::ApiError;
use crate::protocol::properties::BasicProperties;
use crate::protocol::ShortStr;

/// Properties JSON (`{"delivery_mode": 2, "headers": {...}}`) to the
/// content header's property bytes, and the headers table for routing.
pub(crate) fn encode_properties(
    json: &Value,
) -> Result<(Bytes, Option<crate::protocol::FieldTable>), ApiError> {
    let bad = |key: &str| ApiError::bad_request(format!("invalid property '{key}'"));
    let empty = Map::new();
    let map = match json {
        Value::Object(map) => map,
        Value::Null => &empty,
        Value::Array(list) if list.is_empty() => &empty,
        _ => return Err(bad("properties")),
    };
    let mut properties = BasicProperties::default();
    for (key, value) in map {
        let short = || value.as_str().map(ShortStr::from).ok_or_else(|| bad(key));
        let octet = || {
            value
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| bad(key))
        };
        match key.as_str() {
            "content_type" => properties.content_type = Some(short()?),
            "content_encoding" => properties.content_encoding = Some(short()?),
            "headers" => properties.headers = Some(to_field_table(value).ok_or_else(|| bad(key))?),
            "delivery_mode" => properties.delivery_mode = Some(octet()?),
            "priority" => properties.priority = Some(octet()?),
            "correlation_id" => properties.correlation_id = Some(short()?),
            "reply_to" => properties.reply_to = Some(short()?),
            "expiration" => properties.expiration = Some(short()?),
            "message_id" => properties.message_id = Some(short()?),
            "timestamp" => properties.timestamp = Some(value.as_u64().ok_or_else(|| bad(key))?),
            "type" => properties.kind = Some(short()?),
            "user_id" => properties.user_id = Some(short()?),
            "app_id" => properties.app_id = Some(short()?),
            "cluster_id" => properties.cluster_id = Some(short()?),
            _ => return Err(bad(key)),
        }
    }
    let headers = properties.headers.clone();
    let mut raw = BytesMut::new();
    properties.encode(&mut raw);
    Ok((raw.freeze(), headers))
}

/// Property bytes (as stored with a message) to RabbitMQ's JSON.
pub(crate) fn properties_json(raw: &Bytes) -> Value {
    let Ok(properties) = BasicProperties::decode(&mut raw.clone()) else {
        return json!([]);
    };
    let mut map = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    };
    let text = |s: &Option<ShortStr>| s.as_ref().map(|s| json!(s.to_str_lossy()));
    put("content_type", text(&properties.content_type));
    put("content_encoding", text(&properties.content_encoding));
    put("headers", properties.headers.as_ref().map(field_table));
    put("delivery_mode", properties.delivery_mode.map(|n| json!(n)));
    put("priority", properties.priority.map(|n| json!(n)));
    put("correlation_id", text(&properties.correlation_id));
    put("reply_to", text(&properties.reply_to));
    put("expiration", text(&properties.expiration));
    put("message_id", text(&properties.message_id));
    put("timestamp", properties.timestamp.map(|n| json!(n)));
    put("type", text(&properties.kind));
    put("user_id", text(&properties.user_id));
    put("app_id", text(&properties.app_id));
    put("cluster_id", text(&properties.cluster_id));
    if map.is_empty() {
        return json!([]);
    }
    Value::Object(map)
}

/// The payload of a publish request, by `payload_encoding`.
pub(crate) fn decode_payload(body: &Value) -> Result<Bytes, ApiError> {
    let payload = body
        .get("payload")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("key_missing: payload"))?;
    match body
        .get("payload_encoding")
        .and_then(Value::as_str)
        .unwrap_or("string")
    {
        "string" => Ok(Bytes::copy_from_slice(payload.as_bytes())),
        "base64" => BASE64
            .decode(payload)
            .map(Bytes::from)
            .map_err(|_| ApiError::bad_request("payload is not valid base64")),
        other => Err(ApiError::bad_request(format!(
            "unknown payload_encoding '{other}'"
        ))),
    }
}

/// A payload for a get answer: text when `encoding` is "auto" and the
/// bytes are UTF-8, else base64; cut to `truncate` bytes if given.
pub(crate) fn encode_payload(
    body: &Bytes,
    encoding: &str,
    truncate: Option<usize>,
) -> (Value, &'static str) {
    let shown = &body[..truncate.map_or(body.len(), |n| n.min(body.len()))];
    match std::str::from_utf8(shown) {
        Ok(text) if encoding == "auto" => (json!(text), "string"),
        _ => (json!(BASE64.encode(shown)), "base64"),
    }
}
