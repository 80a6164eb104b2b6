//! AMQP 0-9-1 field types: short and long strings, field values and field
//! tables, with their wire encoding.
//!
//! Strings are `Bytes`-backed so that decoding a method slices the frame
//! payload instead of allocating: a publish's exchange and routing key are
//! views into the bytes read off the socket. AMQP strings are octet strings,
//! not necessarily UTF-8, so they are compared as bytes.
//!
//! Field-value type tags follow RabbitMQ's errata of the 0-9-1 spec (the
//! table every real client uses): `t` bool, `b` i8, `B` u8, `s` i16, `u` u16,
//! `I` i32, `i` u32, `l` i64, `f` f32, `d` f64, `D` decimal, `S` long string,
//! `x` byte array, `A` array, `T` timestamp, `F` table, `V` void.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;

/// A short string: at most 255 octets.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

/// A long string: at most 2^32 - 1 octets.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LongStr(Bytes);

impl ShortStr {
    pub(crate) const MAX_LEN: usize = 255;

    /// Wraps bytes that the caller knows fit in a short string.
    ///
    /// Longer input is truncated at 255 octets: a short string cannot carry
    /// more, and every caller passing broker-made text stays far below it.
    pub fn from_bytes(bytes: Bytes) -> ShortStr {
        if bytes.len() > Self::MAX_LEN {
            ShortStr(bytes.slice(..Self::MAX_LEN))
        } else {
            ShortStr(bytes)
        }
    }

    pub const fn from_static(text: &'static str) -> ShortStr {
        assert!(text.len() <= Self::MAX_LEN);
        ShortStr(Bytes::from_static(text.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text for messages and logs; invalid UTF-8 is shown replaced.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn decode(buf: &mut Bytes) -> Result<ShortStr, DecodeError> {
        need(buf, 1)?;
        let len = buf.get_u8() as usize;
        need(buf, len)?;
        Ok(ShortStr(buf.split_to(len)))
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.0.len() as u8);
        out.put_slice(&self.0);
    }
}

impl From<&str> for ShortStr {
    fn from(text: &str) -> ShortStr {
        ShortStr::from_bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for ShortStr {
    fn from(text: String) -> ShortStr {
        ShortStr::from_bytes(Bytes::from(text))
    }
}

/// A short string reads as its octets wherever a byte slice is wanted
/// (routing, catalog lookups).
impl std::ops::Deref for ShortStr {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::borrow::Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_str_lossy())
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

impl LongStr {
    pub fn from_bytes(bytes: Bytes) -> LongStr {
        LongStr(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn decode(buf: &mut Bytes) -> Result<LongStr, DecodeError> {
        need(buf, 4)?;
        let len = buf.get_u32() as usize;
        need(buf, len)?;
        Ok(LongStr(buf.split_to(len)))
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.0.len() as u32);
        out.put_slice(&self.0);
    }
}

impl From<&str> for LongStr {
    fn from(text: &str) -> LongStr {
        LongStr(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A decimal: `value / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub scale: u8,
    pub value: u32,
}

/// One value in a field table or field array.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(Decimal),
    LongStr(LongStr),
    Bytes(LongStr),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(FieldTable),
    Void,
}

/// A field table: named values in wire order. Lookup is a linear scan: tables
/// are short (arguments, headers, capabilities) and keeping wire order makes
/// re-encoding exact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

/// Nesting limit for tables and arrays, so hostile input cannot recurse the
/// decoder off the stack.
const NESTING_MAX: usize = 64;

impl FieldTable {
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(key, _)| key.as_bytes() == name.as_bytes())
            .map(|(_, value)| value)
    }

    pub fn insert(&mut self, name: impl Into<ShortStr>, value: FieldValue) {
        let name = name.into();
        match self.0.iter_mut().find(|(key, _)| *key == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ShortStr, FieldValue)> {
        self.0.iter()
    }

    pub fn decode(buf: &mut Bytes) -> Result<FieldTable, DecodeError> {
        Self::decode_nested(buf, 0)
    }

    fn decode_nested(buf: &mut Bytes, depth: usize) -> Result<FieldTable, DecodeError> {
        if depth > NESTING_MAX {
            return Err(DecodeError::TooDeep);
        }
        need(buf, 4)?;
        let len = buf.get_u32() as usize;
        need(buf, len)?;
        let mut body = buf.split_to(len);
        let mut entries = Vec::new();
        while body.has_remaining() {
            let name = ShortStr::decode(&mut body)?;
            let value = FieldValue::decode_nested(&mut body, depth + 1)?;
            entries.push((name, value));
        }
        Ok(FieldTable(entries))
    }

    /// Steps over an encoded table, checking it exactly as `decode` would,
    /// without building it. The publish path uses this to validate message
    /// headers it only passes along: no allocation, and no reference count
    /// traffic on the payload, since the walk runs on a plain slice.
    pub fn skip(buf: &mut Bytes) -> Result<(), DecodeError> {
        skip_with(buf, Self::skip_slice)
    }

    /// `skip` over a plain slice, for walks that hold no `Bytes` handle.
    pub(crate) fn skip_slice(buf: &mut &[u8]) -> Result<(), DecodeError> {
        skip_table(buf, 0)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        with_length_prefix(out, |out| {
            for (name, value) in &self.0 {
                name.encode(out);
                value.encode(out);
            }
        });
    }
}

impl FieldValue {
    pub fn decode(buf: &mut Bytes) -> Result<FieldValue, DecodeError> {
        Self::decode_nested(buf, 0)
    }

    fn decode_nested(buf: &mut Bytes, depth: usize) -> Result<FieldValue, DecodeError> {
        need(buf, 1)?;
        let tag = buf.get_u8();
        let value = match tag {
            b't' => FieldValue::Bool(take(buf, 1)?.get_u8() != 0),
            b'b' => FieldValue::I8(take(buf, 1)?.get_i8()),
            b'B' => FieldValue::U8(take(buf, 1)?.get_u8()),
            b's' => FieldValue::I16(take(buf, 2)?.get_i16()),
            b'u' => FieldValue::U16(take(buf, 2)?.get_u16()),
            b'I' => FieldValue::I32(take(buf, 4)?.get_i32()),
            b'i' => FieldValue::U32(take(buf, 4)?.get_u32()),
            b'l' => FieldValue::I64(take(buf, 8)?.get_i64()),
            b'f' => FieldValue::F32(take(buf, 4)?.get_f32()),
            b'd' => FieldValue::F64(take(buf, 8)?.get_f64()),
            b'D' => {
                let mut raw = take(buf, 5)?;
                FieldValue::Decimal(Decimal {
                    scale: raw.get_u8(),
                    value: raw.get_u32(),
                })
            }
            b'S' => FieldValue::LongStr(LongStr::decode(buf)?),
            b'x' => FieldValue::Bytes(LongStr::decode(buf)?),
            b'A' => FieldValue::Array(decode_array(buf, depth)?),
            b'T' => FieldValue::Timestamp(take(buf, 8)?.get_u64()),
            b'F' => FieldValue::Table(FieldTable::decode_nested(buf, depth)?),
            b'V' => FieldValue::Void,
            other => return Err(DecodeError::BadFieldType(other)),
        };
        Ok(value)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            FieldValue::Bool(v) => {
                out.put_u8(b't');
                out.put_u8(*v as u8);
            }
            FieldValue::I8(v) => {
                out.put_u8(b'b');
                out.put_i8(*v);
            }
            FieldValue::U8(v) => {
                out.put_u8(b'B');
                out.put_u8(*v);
            }
            FieldValue::I16(v) => {
                out.put_u8(b's');
                out.put_i16(*v);
            }
            FieldValue::U16(v) => {
                out.put_u8(b'u');
                out.put_u16(*v);
            }
            FieldValue::I32(v) => {
                out.put_u8(b'I');
                out.put_i32(*v);
            }
            FieldValue::U32(v) => {
                out.put_u8(b'i');
                out.put_u32(*v);
            }
            FieldValue::I64(v) => {
                out.put_u8(b'l');
                out.put_i64(*v);
            }
            FieldValue::F32(v) => {
                out.put_u8(b'f');
                out.put_f32(*v);
            }
            FieldValue::F64(v) => {
                out.put_u8(b'd');
                out.put_f64(*v);
            }
            FieldValue::Decimal(d) => {
                out.put_u8(b'D');
                out.put_u8(d.scale);
                out.put_u32(d.value);
            }
            FieldValue::LongStr(s) => {
                out.put_u8(b'S');
                s.encode(out);
            }
            FieldValue::Bytes(s) => {
                out.put_u8(b'x');
                s.encode(out);
            }
            FieldValue::Array(values) => {
                out.put_u8(b'A');
                with_length_prefix(out, |out| values.iter().for_each(|v| v.encode(out)));
            }
            FieldValue::Timestamp(v) => {
                out.put_u8(b'T');
                out.put_u64(*v);
            }
            FieldValue::Table(table) => {
                out.put_u8(b'F');
                table.encode(out);
            }
            FieldValue::Void => out.put_u8(b'V'),
        }
    }

    /// Steps over one encoded value (tag included), checking it exactly as
    /// `decode` would, without building it.
    pub fn skip(buf: &mut Bytes) -> Result<(), DecodeError> {
        skip_with(buf, |slice| skip_value(slice, 0))
    }

    /// The value as a string, for arguments such as `x-match` or
    /// `x-queue-type` that clients send as long strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(s) | FieldValue::Bytes(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    /// The value as an integer, whatever integer width the client chose.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::Timestamp(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

fn decode_array(buf: &mut Bytes, depth: usize) -> Result<Vec<FieldValue>, DecodeError> {
    if depth > NESTING_MAX {
        return Err(DecodeError::TooDeep);
    }
    need(buf, 4)?;
    let len = buf.get_u32() as usize;
    need(buf, len)?;
    let mut body = buf.split_to(len);
    let mut values = Vec::new();
    while body.has_remaining() {
        values.push(FieldValue::decode_nested(&mut body, depth + 1)?);
    }
    Ok(values)
}

/// Whether an encoded table names any of `keys` at its top level, found
/// without decoding or allocating (the publish path asks this of every
/// message's headers). A malformed table names nothing.
pub(crate) fn table_names_any(raw: &[u8], keys: &[&[u8]]) -> bool {
    let mut buf = raw;
    let Ok(mut body) = take_long_prefixed(&mut buf) else {
        return false;
    };
    while let Ok(&[name_len]) = take_slice(&mut body, 1) {
        let Ok(name) = take_slice(&mut body, name_len.into()) else {
            return false;
        };
        if keys.contains(&name) {
            return true;
        }
        if skip_value(&mut body, 1).is_err() {
            return false;
        }
    }
    false
}

/// The encoded value (type tag included) of `key` at the top level of an
/// encoded table, found without decoding or allocating. None when the key
/// is absent or the table is malformed.
pub(crate) fn table_value_raw<'a>(raw: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut buf = raw;
    let mut body = take_long_prefixed(&mut buf).ok()?;
    while let Ok(&[name_len]) = take_slice(&mut body, 1) {
        let name = take_slice(&mut body, name_len.into()).ok()?;
        let value_start = body;
        skip_value(&mut body, 1).ok()?;
        if name == key {
            return value_start.get(..value_start.len() - body.len());
        }
    }
    None
}

/// Runs a slice walker over `buf` and advances `buf` past what it consumed.
fn skip_with(
    buf: &mut Bytes,
    walk: impl FnOnce(&mut &[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut slice: &[u8] = buf;
    walk(&mut slice)?;
    let consumed = buf.len() - slice.len();
    buf.advance(consumed);
    Ok(())
}

/// The walkers below mirror `decode_nested`, `decode_array` and
/// `FieldValue::decode_nested` step for step, including the nesting limit,
/// so that skipping accepts exactly what decoding accepts.
fn skip_table(buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    if depth > NESTING_MAX {
        return Err(DecodeError::TooDeep);
    }
    let mut body = take_long_prefixed(buf)?;
    while !body.is_empty() {
        let name_len = take_slice(&mut body, 1)?.get_u8();
        take_slice(&mut body, name_len.into())?;
        skip_value(&mut body, depth + 1)?;
    }
    Ok(())
}

fn skip_array(buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    if depth > NESTING_MAX {
        return Err(DecodeError::TooDeep);
    }
    let mut body = take_long_prefixed(buf)?;
    while !body.is_empty() {
        skip_value(&mut body, depth + 1)?;
    }
    Ok(())
}

fn skip_value(buf: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    let tag = take_slice(buf, 1)?.get_u8();
    let width = match tag {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'l' | b'd' | b'T' => 8,
        b'S' | b'x' => return take_long_prefixed(buf).map(drop),
        b'A' => return skip_array(buf, depth),
        b'F' => return skip_table(buf, depth),
        other => return Err(DecodeError::BadFieldType(other)),
    };
    take_slice(buf, width).map(drop)
}

/// Splits a u32 length and that many bytes off `buf`, returning the bytes.
fn take_long_prefixed<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_slice(buf, 4)?.get_u32();
    take_slice(buf, len as usize)
}

/// Splits `len` bytes off the front of a slice, or fails with `Truncated`.
pub(crate) fn take_slice<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    let (head, rest) = buf.split_at_checked(len).ok_or(DecodeError::Truncated)?;
    *buf = rest;
    Ok(head)
}

/// Writes a u32 length, then what `write` writes, and patches the length in.
fn with_length_prefix(out: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_u32(0);
    write(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Fails with `Truncated` unless `buf` holds at least `len` more bytes.
pub(crate) fn need(buf: &Bytes, len: usize) -> Result<(), DecodeError> {
    if buf.remaining() < len {
        Err(DecodeError::Truncated)
    } else {
        Ok(())
    }
}

/// Splits `len` bytes off the front of `buf`, or fails with `Truncated`.
pub(crate) fn take(buf: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    need(buf, len)?;
    Ok(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with one value of every type, a nested table and an array
    /// that itself holds a table and an array.
    fn every_type() -> FieldTable {
        let mut inner = FieldTable::new();
        inner.insert("depth", FieldValue::U8(2));
        let values = vec![
            ("bool", FieldValue::Bool(true)),
            ("i8", FieldValue::I8(-8)),
            ("u8", FieldValue::U8(0xf8)),
            ("i16", FieldValue::I16(-16)),
            ("u16", FieldValue::U16(0xfff0)),
            ("i32", FieldValue::I32(-32)),
            ("u32", FieldValue::U32(0xffff_ffe0)),
            ("i64", FieldValue::I64(-64)),
            ("f32", FieldValue::F32(1.5)),
            ("f64", FieldValue::F64(-2.25)),
            (
                "decimal",
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 314,
                }),
            ),
            ("longstr", FieldValue::LongStr("text".into())),
            (
                "bytes",
                FieldValue::Bytes(LongStr::from_bytes(Bytes::from_static(b"\x00\xff"))),
            ),
            ("timestamp", FieldValue::Timestamp(1_700_000_000)),
            ("void", FieldValue::Void),
            ("table", FieldValue::Table(inner.clone())),
            (
                "array",
                FieldValue::Array(vec![
                    FieldValue::I32(1),
                    FieldValue::Table(inner),
                    FieldValue::Array(vec![FieldValue::LongStr("deep".into())]),
                    FieldValue::Array(vec![]),
                ]),
            ),
        ];
        let mut table = FieldTable::new();
        for (name, value) in values {
            table.insert(name, value);
        }
        table
    }

    fn encoded(table: &FieldTable) -> Bytes {
        let mut out = BytesMut::new();
        table.encode(&mut out);
        out.freeze()
    }

    #[test]
    fn every_value_type_round_trips() {
        let table = every_type();
        let mut wire = encoded(&table);
        assert_eq!(FieldTable::decode(&mut wire), Ok(table));
        assert!(wire.is_empty());
    }

    #[test]
    fn skip_steps_over_exactly_what_decode_reads() {
        let mut wire = encoded(&every_type());
        wire = [&wire[..], b"rest"].concat().into();
        let mut skipped = wire.clone();
        FieldTable::skip(&mut skipped).expect("valid table");
        assert_eq!(&skipped[..], b"rest");
        let mut value = Bytes::from_static(b"Zrest");
        assert_eq!(
            FieldValue::skip(&mut value),
            Err(DecodeError::BadFieldType(b'Z'))
        );
        let mut value = Bytes::from_static(b"S\x00\x00\x00\x01!rest");
        FieldValue::skip(&mut value).expect("valid value");
        assert_eq!(&value[..], b"rest");
    }

    #[test]
    fn every_strict_prefix_is_truncated_for_decode_and_skip() {
        let wire = encoded(&every_type());
        for len in 0..wire.len() {
            let prefix = wire.slice(..len);
            assert_eq!(
                FieldTable::decode(&mut prefix.clone()),
                Err(DecodeError::Truncated)
            );
            assert_eq!(
                FieldTable::skip(&mut prefix.clone()),
                Err(DecodeError::Truncated)
            );
        }
    }

    #[test]
    fn a_length_that_cuts_a_value_short_is_truncated() {
        // The table claims 3 octets, but its one entry needs 4 ("k" + 'B' + 1).
        let wire = Bytes::from_static(b"\x00\x00\x00\x03\x01kB\x07");
        assert_eq!(
            FieldTable::decode(&mut wire.clone()),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            FieldTable::skip(&mut wire.clone()),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn type_tags_follow_rabbitmq_errata() {
        let tags: Vec<u8> = every_type()
            .iter()
            .map(|(_, value)| {
                let mut out = BytesMut::new();
                value.encode(&mut out);
                out[0]
            })
            .collect();
        assert_eq!(&tags[..], b"tbBsuIilfdDSxTVFA");
        let mut table = FieldTable::new();
        table.insert("n", FieldValue::U32(5));
        table.insert("s", FieldValue::I16(-2));
        assert_eq!(
            &encoded(&table)[..],
            b"\x00\x00\x00\x0c\x01ni\x00\x00\x00\x05\x01ss\xff\xfe"
        );
    }

    #[test]
    fn unknown_type_tags_are_rejected_by_decode_and_skip() {
        // 'U' is a signed short in the 0-9-1 spec but not in RabbitMQ's errata.
        let wire = Bytes::from_static(b"\x00\x00\x00\x05\x01kU\x00\x01");
        let bad = DecodeError::BadFieldType(b'U');
        assert_eq!(FieldTable::decode(&mut wire.clone()), Err(bad.clone()));
        assert_eq!(FieldTable::skip(&mut wire.clone()), Err(bad));
    }

    #[test]
    fn nesting_past_the_limit_is_too_deep_for_decode_and_skip() {
        let nested = |depth: usize| {
            let mut value = FieldValue::Void;
            for _ in 0..depth {
                value = FieldValue::Array(vec![value]);
            }
            let mut table = FieldTable::new();
            table.insert("a", value);
            encoded(&table)
        };
        let deep = nested(NESTING_MAX + 1);
        assert_eq!(
            FieldTable::decode(&mut deep.clone()),
            Err(DecodeError::TooDeep)
        );
        assert_eq!(
            FieldTable::skip(&mut deep.clone()),
            Err(DecodeError::TooDeep)
        );
        let fine = nested(NESTING_MAX / 2);
        assert!(FieldTable::decode(&mut fine.clone()).is_ok());
        assert!(FieldTable::skip(&mut fine.clone()).is_ok());
    }
}
