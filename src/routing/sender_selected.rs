//! Sender-selected distribution, as RabbitMQ does it: a message's `CC` and
//! `BCC` headers (arrays of long strings) name more routing keys, routed
//! like the publish's own; `BCC` is removed before the message is stored.
//!
//! Plain functions over the raw properties. A message without these
//! headers is recognised by a walk over its header table that allocates
//! nothing; only a message that has them is decoded and rebuilt.

use bytes::{Bytes, BytesMut};

use crate::protocol::error::AmqpError;
use crate::protocol::properties::BasicProperties;
use crate::protocol::types::{table_names_any, FieldTable, FieldValue, ShortStr};
use crate::routing::headers::type_name;

const CC: &str = "CC";
const BCC: &str = "BCC";

/// The extra routing keys of a message, and whether it had BCC.
#[derive(Debug, PartialEq)]
pub(crate) struct SenderSelected {
    pub routing_keys: Vec<ShortStr>,
    pub(crate) has_bcc: bool,
}

/// Reads CC and BCC from a publish's raw header table; None when it names
/// neither. A CC or BCC that is not an array is 406, with RabbitMQ's text;
/// array entries that are not long strings are ignored, as RabbitMQ does.
pub fn parse(raw_headers: &Bytes) -> Result<Option<SenderSelected>, AmqpError> {
    if !table_names_any(raw_headers, &[CC.as_bytes(), BCC.as_bytes()]) {
        return Ok(None);
    }
    let headers = FieldTable::decode(&mut raw_headers.clone())?;
    let mut routing_keys = Vec::new();
    for key in [CC, BCC] {
        match headers.get(key) {
            None => {}
            Some(FieldValue::Array(values)) => {
                routing_keys.extend(values.iter().filter_map(|value| match value {
                    FieldValue::LongStr(text) => Some(ShortStr::from_bytes(text.bytes().clone())),
                    _ => None,
                }))
            }
            Some(other) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid message: {{unacceptable_type_in_header,\"{key}\",{}}}",
                    type_name(other)
                )))
            }
        }
    }
    Ok(Some(SenderSelected {
        routing_keys,
        has_bcc: headers.get(BCC).is_some(),
    }))
}

/// The properties without the BCC header, which receivers must not see.
pub(crate) fn strip_bcc(properties: &Bytes) -> Result<Bytes, AmqpError> {
    let mut decoded = BasicProperties::decode(&mut properties.clone())?;
    if let Some(headers) = decoded.headers.as_mut() {
        headers
            .0
            .retain(|(name, _)| name.as_bytes() != BCC.as_bytes());
    }
    let mut out = BytesMut::new();
    decoded.encode(&mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::LongStr;

    fn raw(table: &FieldTable) -> Bytes {
        let mut out = BytesMut::new();
        table.encode(&mut out);
        out.freeze()
    }

    fn keys(names: &[&str]) -> FieldValue {
        FieldValue::Array(
            names
                .iter()
                .map(|n| FieldValue::LongStr(LongStr::from(*n)))
                .collect(),
        )
    }

    #[test]
    fn cc_and_bcc_add_routing_keys_and_bcc_is_stripped() {
        let mut headers = FieldTable::new();
        headers.insert("CC", keys(&["a", "b"]));
        headers.insert("BCC", keys(&["c"]));
        headers.insert("x", FieldValue::I32(1));
        assert_eq!(
            parse(&raw(&headers)).unwrap(),
            Some(SenderSelected {
                routing_keys: ["a", "b", "c"].map(ShortStr::from).to_vec(),
                has_bcc: true,
            })
        );
        let properties = BasicProperties {
            headers: Some(headers),
            ..BasicProperties::default()
        };
        let mut encoded = BytesMut::new();
        properties.encode(&mut encoded);
        let stripped = strip_bcc(&encoded.freeze()).unwrap();
        let headers = BasicProperties::decode(&mut stripped.clone())
            .unwrap()
            .headers
            .unwrap();
        let names: Vec<_> = headers.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(names, ["CC", "x"]);
    }

    #[test]
    fn headers_without_cc_or_bcc_are_not_sender_selected() {
        let mut headers = FieldTable::new();
        headers.insert("CCX", keys(&["a"]));
        headers.insert("nested", FieldValue::Table(FieldTable::new()));
        assert_eq!(parse(&raw(&headers)).unwrap(), None);
    }

    // RabbitMQ 3.10's text.
    #[test]
    fn cc_that_is_not_an_array_is_precondition_failed() {
        let mut headers = FieldTable::new();
        headers.insert("CC", FieldValue::LongStr(LongStr::from("a")));
        let err = parse(&raw(&headers)).unwrap_err();
        assert_eq!(
            err.reply_text(),
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
        );
    }
}
