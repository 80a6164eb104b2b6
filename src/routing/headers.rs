//! Matching for headers exchanges: a binding's arguments against a
//! message's `headers` table, with RabbitMQ's rules.
//!
//! Owns: `x-match` parsing and validation, and value comparison. It holds no
//! state beyond one compiled binding.
//!
//! Rules (RabbitMQ's `rabbit_exchange_type_headers`):
//! - `x-match` is `all` (the default), `any`, `all-with-x` or `any-with-x`.
//!   The `x-match` entry itself never takes part in matching; other
//!   arguments starting with `x-` are ignored unless the mode is one of the
//!   `-with-x` ones.
//! - `all` with no matchable arguments matches every message; `any` with none
//!   matches no message.
//! - A binding value of type void matches the header's presence alone.
//! - Values compare as Erlang's `==` compares them in RabbitMQ: type is
//!   ignored, numbers compare by value across widths (`1` equals `1.0`),
//!   long strings and byte arrays compare by their bytes.

use crate::protocol::types::{FieldTable, FieldValue};

/// The `x-match` mode of a headers binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    /// The mode a binding's arguments ask for; anything unrecognised is
    /// `all`, as in RabbitMQ (validation rejects it earlier).
    pub fn of(arguments: &FieldTable) -> XMatch {
        match arguments.get("x-match").and_then(FieldValue::as_str) {
            Some("any") => XMatch::Any,
            Some("all-with-x") => XMatch::AllWithX,
            Some("any-with-x") => XMatch::AnyWithX,
            _ => XMatch::All,
        }
    }

    fn is_any(self) -> bool {
        matches!(self, XMatch::Any | XMatch::AnyWithX)
    }

    fn matches_x_arguments(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

/// Checks a binding's `x-match` argument, with RabbitMQ's error text (the
/// catalog answers it with PRECONDITION_FAILED).
pub(crate) fn validate_binding_arguments(arguments: &FieldTable) -> Result<(), String> {
    match arguments.get("x-match") {
        None => Ok(()),
        Some(FieldValue::LongStr(text)) => match text.as_bytes() {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => Ok(()),
            other => Err(format!(
                "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                String::from_utf8_lossy(other)
            )),
        },
        Some(other) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(other),
            format_value(other)
        )),
    }
}

/// RabbitMQ's name for a field value's type, as its error texts print it.
pub(crate) fn type_name(value: &FieldValue) -> &'static str {
    match value {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(_) => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Bytes(_) => "binary",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
    }
}

/// A field value as RabbitMQ's error texts print it: strings as text,
/// numbers and booleans plainly, anything else in a debug form.
pub(crate) fn format_value(value: &FieldValue) -> String {
    match value {
        FieldValue::LongStr(s) | FieldValue::Bytes(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(v) => v.to_string(),
        FieldValue::F64(v) => v.to_string(),
        FieldValue::Void => "undefined".to_owned(),
        other => match other.as_i64() {
            Some(v) => v.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// A number as Erlang compares it: integers and floats by value.
fn number(value: &FieldValue) -> Option<f64> {
    match *value {
        FieldValue::F32(v) => Some(f64::from(v)),
        FieldValue::F64(v) => Some(v),
        FieldValue::U32(v) => Some(f64::from(v)),
        FieldValue::Timestamp(v) => Some(v as f64),
        _ => value.as_i64().map(|v| v as f64),
    }
}

/// Whether two values are equal under Erlang's `==` on RabbitMQ's decoded
/// representation (see the module doc).
pub(crate) fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (
            FieldValue::LongStr(x) | FieldValue::Bytes(x),
            FieldValue::LongStr(y) | FieldValue::Bytes(y),
        ) => x.as_bytes() == y.as_bytes(),
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x == y,
        // Exact integer comparison first, so large i64 values do not lose
        // precision through f64.
        _ => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (number(a), number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
        },
    }
}

/// One compiled headers binding.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeadersBinding {
    x_match: XMatch,
    /// The binding's arguments as given (they are also its identity).
    arguments: FieldTable,
}

impl HeadersBinding {
    pub fn new(arguments: FieldTable) -> HeadersBinding {
        HeadersBinding {
            x_match: XMatch::of(&arguments),
            arguments,
        }
    }

    pub fn arguments(&self) -> &FieldTable {
        &self.arguments
    }

    /// Whether a message with `headers` (absent headers: `None`) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let any = self.x_match.is_any();
        for (key, expected) in self.arguments.iter() {
            let key = key.as_bytes();
            if key == b"x-match" || (key.starts_with(b"x-") && !self.x_match.matches_x_arguments())
            {
                continue;
            }
            let found = headers.and_then(|table| {
                table
                    .iter()
                    .find(|(name, _)| name.as_bytes() == key)
                    .map(|(_, value)| value)
            });
            let hit = match (expected, found) {
                (_, None) => false,
                (FieldValue::Void, Some(_)) => true,
                (expected, Some(actual)) => values_equal(expected, actual),
            };
            if hit && any {
                return true;
            }
            if !hit && !any {
                return false;
            }
        }
        !any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::LongStr;

    fn s(text: &str) -> FieldValue {
        FieldValue::LongStr(LongStr::from(text))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut table = FieldTable::new();
        for (key, value) in entries {
            table.insert(*key, value.clone());
        }
        table
    }

    fn matches(binding: &[(&str, FieldValue)], headers: &[(&str, FieldValue)]) -> bool {
        HeadersBinding::new(table(binding)).matches(Some(&table(headers)))
    }

    #[test]
    fn all_is_the_default_and_needs_every_key() {
        let binding = [("format", s("pdf")), ("type", s("report"))];
        assert!(matches(
            &binding,
            &[("format", s("pdf")), ("type", s("report")), ("x", s("y"))]
        ));
        assert!(!matches(&binding, &[("format", s("pdf"))]));
        assert!(!matches(
            &binding,
            &[("format", s("pdf")), ("type", s("log"))]
        ));
        let explicit = [("x-match", s("all")), ("format", s("pdf"))];
        assert!(matches(&explicit, &[("format", s("pdf"))]));
    }

    #[test]
    fn any_needs_one_key() {
        let binding = [
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ];
        assert!(matches(&binding, &[("type", s("report"))]));
        assert!(!matches(&binding, &[("type", s("log"))]));
        assert!(!matches(&binding, &[]));
    }

    #[test]
    fn empty_bindings_all_matches_everything_any_nothing() {
        assert!(matches(&[], &[]));
        assert!(HeadersBinding::new(FieldTable::new()).matches(None));
        assert!(!matches(&[("x-match", s("any"))], &[("a", s("b"))]));
    }

    #[test]
    fn x_arguments_are_ignored_unless_with_x() {
        let binding = [("x-match", s("all")), ("x-tenant", s("a")), ("k", s("v"))];
        assert!(matches(&binding, &[("k", s("v"))]));
        let with_x = [
            ("x-match", s("all-with-x")),
            ("x-tenant", s("a")),
            ("k", s("v")),
        ];
        assert!(!matches(&with_x, &[("k", s("v"))]));
        assert!(matches(&with_x, &[("k", s("v")), ("x-tenant", s("a"))]));
        let any_with_x = [("x-match", s("any-with-x")), ("x-tenant", s("a"))];
        assert!(matches(&any_with_x, &[("x-tenant", s("a"))]));
        let any = [("x-match", s("any")), ("x-tenant", s("a"))];
        assert!(!matches(&any, &[("x-tenant", s("a"))]));
    }

    #[test]
    fn void_matches_presence() {
        let binding = [("flag", FieldValue::Void)];
        assert!(matches(&binding, &[("flag", FieldValue::I32(7))]));
        assert!(!matches(&binding, &[("other", FieldValue::I32(7))]));
    }

    #[test]
    fn values_compare_like_erlang() {
        assert!(values_equal(&FieldValue::I8(1), &FieldValue::I64(1)));
        assert!(values_equal(&FieldValue::U32(1), &FieldValue::F64(1.0)));
        assert!(values_equal(
            &s("a"),
            &FieldValue::Bytes(LongStr::from("a"))
        ));
        assert!(!values_equal(&s("1"), &FieldValue::I32(1)));
        assert!(!values_equal(&FieldValue::Bool(true), &FieldValue::I8(1)));
        assert!(matches(
            &[("n", FieldValue::I16(5))],
            &[("n", FieldValue::I64(5))]
        ));
    }

    #[test]
    fn validation_rejects_unknown_x_match() {
        assert!(validate_binding_arguments(&table(&[("x-match", s("any-with-x"))])).is_ok());
        assert!(validate_binding_arguments(&FieldTable::new()).is_ok());
        let err = validate_binding_arguments(&table(&[("x-match", s("some"))]));
        assert_eq!(
            err,
            Err("Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x".into())
        );
        let err = validate_binding_arguments(&table(&[("x-match", FieldValue::I32(1))]));
        assert_eq!(
            err,
            Err("Invalid x-match field type signedint (value 1); expected longstr".into())
        );
    }
}
