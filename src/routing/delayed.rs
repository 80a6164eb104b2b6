//! The `x-delay` header of the `x-delayed-message` exchange, read and
//! rewritten as the community plugin (rabbitmq-delayed-message-exchange)
//! does.
//!
//! Owns: what delay a publish asks for, and the header a delayed message
//! carries once it is routed. Plain functions; where delayed messages wait
//! is the shard's business (`shard::delayed`).
//!
//! The plugin's rules: an integer `x-delay` is the delay in milliseconds; a
//! string is parsed as an integer and a float truncated; anything else, an
//! absent header, and a delay outside 1 to 2^32-1 ms route at once. A
//! delayed message is routed with `x-delay` set to minus its delay (a
//! signed int), so consumers can tell it was delayed.

use bytes::{Bytes, BytesMut};

use crate::protocol::properties::BasicProperties;
use crate::protocol::types::{table_value_raw, FieldValue};
use crate::protocol::DecodeError;

/// Erlang's largest timer, which bounds the plugin's delays.
const DELAY_MS_MAX: i64 = 4_294_967_295;

/// The delay a publish with these raw headers (the encoded table) asks
/// for; None when it is to be routed at once.
pub(crate) fn delay_ms(raw_headers: &[u8]) -> Option<u64> {
    let mut raw = Bytes::copy_from_slice(table_value_raw(raw_headers, b"x-delay")?);
    let delay = match FieldValue::decode(&mut raw).ok()? {
        FieldValue::I8(v) => v.into(),
        FieldValue::U8(v) => v.into(),
        FieldValue::I16(v) => v.into(),
        FieldValue::U16(v) => v.into(),
        FieldValue::I32(v) => v.into(),
        FieldValue::U32(v) => v.into(),
        FieldValue::I64(v) => v,
        FieldValue::F32(v) => v as i64,
        FieldValue::F64(v) => v as i64,
        FieldValue::LongStr(text) => std::str::from_utf8(text.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    (1..=DELAY_MS_MAX)
        .contains(&delay)
        .then_some(delay.unsigned_abs())
}

/// The raw properties of a delayed message as it is routed: `x-delay` is
/// minus the delay it waited.
pub(crate) fn routed_properties(properties: &Bytes, delay_ms: u64) -> Result<Bytes, DecodeError> {
    let mut props = BasicProperties::decode(&mut properties.clone())?;
    let delay = -i64::try_from(delay_ms).unwrap_or(DELAY_MS_MAX);
    let value = match i32::try_from(delay) {
        Ok(delay) => FieldValue::I32(delay),
        Err(_) => FieldValue::I64(delay),
    };
    props
        .headers
        .get_or_insert_with(Default::default)
        .insert("x-delay", value);
    let mut out = BytesMut::new();
    props.encode(&mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::{FieldTable, LongStr};

    fn headers(value: FieldValue) -> BytesMut {
        let mut table = FieldTable::new();
        table.insert("other", FieldValue::Bool(true));
        table.insert("x-delay", value);
        let mut out = BytesMut::new();
        table.encode(&mut out);
        out
    }

    #[test]
    fn delays_are_read_as_the_plugin_reads_them() {
        assert_eq!(delay_ms(&headers(FieldValue::I32(1500))), Some(1500));
        assert_eq!(delay_ms(&headers(FieldValue::U8(7))), Some(7));
        assert_eq!(delay_ms(&headers(FieldValue::F64(2.9))), Some(2));
        assert_eq!(
            delay_ms(&headers(FieldValue::LongStr(LongStr::from("250")))),
            Some(250)
        );
        for at_once in [
            FieldValue::I32(0),
            FieldValue::I32(-5),
            FieldValue::I64(1 << 33),
            FieldValue::Bool(true),
            FieldValue::LongStr(LongStr::from("soon")),
        ] {
            assert_eq!(delay_ms(&headers(at_once.clone())), None, "{at_once:?}");
        }
        let mut empty = BytesMut::new();
        FieldTable::new().encode(&mut empty);
        assert_eq!(delay_ms(&empty), None);
    }

    #[test]
    fn a_routed_delayed_message_carries_minus_its_delay() {
        let mut table = FieldTable::new();
        table.insert("x-delay", FieldValue::I64(300));
        table.insert("keep", FieldValue::Bool(true));
        let props = BasicProperties {
            headers: Some(table),
            message_id: Some("m".into()),
            ..Default::default()
        };
        let mut raw = BytesMut::new();
        props.encode(&mut raw);
        let routed = routed_properties(&raw.freeze(), 300).expect("valid properties");
        let decoded = BasicProperties::decode(&mut routed.clone()).expect("decodable");
        let headers = decoded.headers.expect("headers");
        assert_eq!(headers.get("x-delay"), Some(&FieldValue::I32(-300)));
        assert_eq!(headers.get("keep"), Some(&FieldValue::Bool(true)));
        assert_eq!(decoded.message_id, Some("m".into()));
    }
}
