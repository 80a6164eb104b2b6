//! Content headers and the basic class's message properties.
//!
//! A content header frame's payload is:
//!
//! ```text
//! class-id: u16 | weight: u16 | body-size: u64 | flags: u16 [flags: u16 ...] | property list
//! ```
//!
//! Flag bit 15 announces the first property, bit 14 the second, and so on
//! down to bit 2 for basic's fourteenth; each present property then appears
//! in the list in that order. Bit 0 announces another flags word, for classes
//! with more than fifteen properties; basic has none, so later words must be
//! empty.
//!
//! The broker does not need most of a message's properties, only to store
//! and forward them, so there are three readers, all generated from or
//! driven by the one table of properties in `basic_properties!`:
//! `ContentHeader::decode` checks the structure and keeps the raw bytes,
//! `scan_properties` picks out the few fields the publish path looks at
//! (both without allocating), and `BasicProperties::decode` builds
//! everything for the rare caller that wants it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::types::{need, take_slice, FieldTable, ShortStr};

/// Bit 0 of a flags word: another flags word follows.
const CONTINUATION: u16 = 1;

/// The wire form of a property's value.
trait PropertyValue: Sized {
    fn decode(buf: &mut Bytes) -> Result<Self, DecodeError>;
    /// Steps over the value, checking it as `decode` would, without
    /// building it. A plain slice: the walk takes no reference counts.
    fn skip(buf: &mut &[u8]) -> Result<(), DecodeError>;
    fn encode(&self, out: &mut BytesMut);
}

impl PropertyValue for ShortStr {
    fn decode(buf: &mut Bytes) -> Result<ShortStr, DecodeError> {
        ShortStr::decode(buf)
    }

    fn skip(buf: &mut &[u8]) -> Result<(), DecodeError> {
        let len = take_slice(buf, 1)?[0];
        take_slice(buf, len.into()).map(drop)
    }

    fn encode(&self, out: &mut BytesMut) {
        ShortStr::encode(self, out);
    }
}

impl PropertyValue for FieldTable {
    fn decode(buf: &mut Bytes) -> Result<FieldTable, DecodeError> {
        FieldTable::decode(buf)
    }

    fn skip(buf: &mut &[u8]) -> Result<(), DecodeError> {
        FieldTable::skip_slice(buf)
    }

    fn encode(&self, out: &mut BytesMut) {
        FieldTable::encode(self, out);
    }
}

impl PropertyValue for u8 {
    fn decode(buf: &mut Bytes) -> Result<u8, DecodeError> {
        need(buf, 1)?;
        Ok(buf.get_u8())
    }

    fn skip(buf: &mut &[u8]) -> Result<(), DecodeError> {
        take_slice(buf, 1).map(drop)
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(*self);
    }
}

/// Timestamps: seconds since the epoch.
impl PropertyValue for u64 {
    fn decode(buf: &mut Bytes) -> Result<u64, DecodeError> {
        need(buf, 8)?;
        Ok(buf.get_u64())
    }

    fn skip(buf: &mut &[u8]) -> Result<(), DecodeError> {
        take_slice(buf, 8).map(drop)
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u64(*self);
    }
}

/// How the walk steps over one property it was not asked to read.
type Skip = fn(&mut &[u8]) -> Result<(), DecodeError>;

/// Generates, from the table of basic's properties below: the flag
/// constants, `BasicProperties` with its codec, and the layout the walk
/// follows, so that the three readers cannot disagree on the order.
macro_rules! basic_properties {
    ($($bit:literal $flag:ident $field:ident: $ty:ty,)*) => {
        /// Property flag bits of the basic class, as they appear in the first
        /// flags word.
        pub mod flag {
            $(pub const $flag: u16 = 1 << $bit;)*
            /// Every bit that names a basic property.
            pub(crate) const ALL: u16 = $($flag)|*;
        }

        /// The properties of a basic-class message, each present or not.
        #[derive(Clone, Debug, PartialEq, Default)]
        pub struct BasicProperties {
            $(pub $field: Option<$ty>,)*
        }

        impl BasicProperties {
            /// Decodes the flags word(s) and the properties they announce,
            /// leaving `raw` just after the last one.
            pub fn decode(raw: &mut Bytes) -> Result<BasicProperties, DecodeError> {
                let flags = read_flags(raw)?;
                Ok(BasicProperties {
                    $($field: if flags & flag::$flag != 0 {
                        Some(<$ty as PropertyValue>::decode(raw)?)
                    } else {
                        None
                    },)*
                })
            }

            /// Appends one flags word and the present properties.
            pub fn encode(&self, out: &mut BytesMut) {
                let mut flags = 0;
                $(if self.$field.is_some() {
                    flags |= flag::$flag;
                })*
                out.put_u16(flags);
                $(if let Some(value) = &self.$field {
                    value.encode(out);
                })*
            }
        }

        /// Each property's flag and how to step over it, in list order.
        const LAYOUT: &[(u16, Skip)] = &[$((flag::$flag, <$ty as PropertyValue>::skip),)*];
    };
}

basic_properties! {
    15 CONTENT_TYPE content_type: ShortStr,
    14 CONTENT_ENCODING content_encoding: ShortStr,
    13 HEADERS headers: FieldTable,
    12 DELIVERY_MODE delivery_mode: u8,
    11 PRIORITY priority: u8,
    10 CORRELATION_ID correlation_id: ShortStr,
    9 REPLY_TO reply_to: ShortStr,
    8 EXPIRATION expiration: ShortStr,
    7 MESSAGE_ID message_id: ShortStr,
    6 TIMESTAMP timestamp: u64,
    // The spec's "type"; `type` is a Rust keyword.
    5 KIND kind: ShortStr,
    4 USER_ID user_id: ShortStr,
    3 APP_ID app_id: ShortStr,
    2 CLUSTER_ID cluster_id: ShortStr,
}

/// Reads the flags word(s) and returns the property bits of the first.
///
/// A continuation bit is honoured by reading the next word, but since basic
/// has no sixteenth property, any bit set there (or bit 1 of the first word)
/// names a property we could not step over: that is an error, not a guess.
fn read_flags(buf: &mut impl Buf) -> Result<u16, DecodeError> {
    let flags = read_u16(buf)?;
    if flags & !(flag::ALL | CONTINUATION) != 0 {
        return Err(DecodeError::BadPropertyFlags(flags));
    }
    let mut word = flags;
    while word & CONTINUATION != 0 {
        word = read_u16(buf)?;
        if word & !CONTINUATION != 0 {
            return Err(DecodeError::BadPropertyFlags(word));
        }
    }
    Ok(flags & flag::ALL)
}

fn read_u16(buf: &mut impl Buf) -> Result<u16, DecodeError> {
    if buf.remaining() < 2 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u16())
}

/// Walks raw flags and properties, checking the structure. For each present
/// property, `visit` gets its flag and the bytes starting at its value; it
/// either reads the value and returns true, or returns false to have the walk
/// step over it. Bytes left after the last property are an error.
fn walk_properties(
    raw: &[u8],
    mut visit: impl FnMut(u16, &mut &[u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut buf = raw;
    let flags = read_flags(&mut buf)?;
    for &(flag, skip) in LAYOUT {
        if flags & flag != 0 && !visit(flag, &mut buf)? {
            skip(&mut buf)?;
        }
    }
    if buf.has_remaining() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(())
}

/// What the publish path needs from a message's properties. Strings and the
/// header table are views into the raw properties, not copies.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PropertySummary {
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub expiration: Option<ShortStr>,
    /// For direct reply-to, which rewrites it.
    pub reply_to: Option<ShortStr>,
    /// Checked against the publishing connection's user.
    pub(crate) user_id: Option<ShortStr>,
    /// The raw header table, including its 4-byte length.
    pub headers: Option<Bytes>,
}

/// Validates raw properties (flags and list) and picks out the summary,
/// without allocating: the broker runs this on every publish.
pub fn scan_properties(raw: &Bytes) -> Result<PropertySummary, DecodeError> {
    let mut summary = PropertySummary::default();
    walk_properties(raw, |flag, buf| {
        match flag {
            flag::DELIVERY_MODE => summary.delivery_mode = Some(take_slice(buf, 1)?[0]),
            flag::PRIORITY => summary.priority = Some(take_slice(buf, 1)?[0]),
            flag::EXPIRATION => summary.expiration = Some(short_str_at(raw, buf)?),
            flag::REPLY_TO => summary.reply_to = Some(short_str_at(raw, buf)?),
            flag::USER_ID => summary.user_id = Some(short_str_at(raw, buf)?),
            flag::HEADERS => {
                let start = raw.len() - buf.len();
                FieldTable::skip_slice(buf)?;
                summary.headers = Some(raw.slice(start..raw.len() - buf.len()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(summary)
}

/// The short string at the walk's position in `raw`, as a view into `raw`.
fn short_str_at(raw: &Bytes, buf: &mut &[u8]) -> Result<ShortStr, DecodeError> {
    let start = raw.len() - buf.len();
    <ShortStr as PropertyValue>::skip(buf)?;
    ShortStr::decode(&mut raw.slice(start..raw.len() - buf.len()))
}

/// The raw value of one property (`flag`), found without decoding the
/// others or allocating: the bytes from the value's start to the end of the
/// properties (the caller decodes the one value it asked for). None when
/// the property is absent or the properties are malformed.
pub(crate) fn find_property(raw: &[u8], wanted: u16) -> Option<&[u8]> {
    let mut found = None;
    let walked = walk_properties(raw, |flag, buf| {
        if flag == wanted {
            found = Some(raw.len() - buf.len());
        }
        Ok(false)
    });
    walked.ok().and(found).and_then(|start| raw.get(start..))
}

/// A content header frame's payload, with the properties left raw: the
/// broker stores and forwards them as they came.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ContentHeader {
    pub class_id: u16,
    /// Unused; the spec says it must be zero, and RabbitMQ ignores it.
    pub weight: u16,
    pub body_size: u64,
    /// The flags word(s) and property list, verbatim.
    pub properties: Bytes,
}

impl ContentHeader {
    /// Bytes before the properties: class id, weight and body size.
    pub(crate) const FIXED_SIZE: usize = 12;

    /// Decodes the payload and checks that the properties are well formed
    /// basic properties (the only class with content), without building
    /// them. Whether `class_id` matches the method is the channel's check.
    pub fn decode(mut payload: Bytes) -> Result<ContentHeader, DecodeError> {
        need(&payload, Self::FIXED_SIZE)?;
        let class_id = payload.get_u16();
        let weight = payload.get_u16();
        let body_size = payload.get_u64();
        walk_properties(&payload, |_, _| Ok(false))?;
        Ok(ContentHeader {
            class_id,
            weight,
            body_size,
            properties: payload,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        Self::write(
            out,
            self.class_id,
            self.weight,
            self.body_size,
            &self.properties,
        );
    }

    /// Appends a header payload from its parts, with weight zero, so that a
    /// delivery can be framed without building a `ContentHeader`.
    pub fn encode_parts(out: &mut BytesMut, class_id: u16, body_size: u64, properties: &[u8]) {
        Self::write(out, class_id, 0, body_size, properties);
    }

    fn write(out: &mut BytesMut, class_id: u16, weight: u16, body_size: u64, properties: &[u8]) {
        out.reserve(Self::FIXED_SIZE + properties.len());
        out.put_u16(class_id);
        out.put_u16(weight);
        out.put_u64(body_size);
        out.put_slice(properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::FieldValue;

    fn every_property() -> BasicProperties {
        let mut headers = FieldTable::new();
        headers.insert("x-trace", FieldValue::LongStr("abc".into()));
        headers.insert("x-hops", FieldValue::I32(-3));
        BasicProperties {
            content_type: Some("text/plain".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some("corr".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("m-1".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order.created".into()),
            user_id: Some("guest".into()),
            app_id: Some("warren-tests".into()),
            cluster_id: Some("c".into()),
        }
    }

    /// Each property of `every_property` on its own: its flag, and a raw
    /// flags word and list that carry only that property.
    fn each_property_alone() -> Vec<(u16, Bytes)> {
        let raw = encoded(&every_property());
        let mut starts = Vec::new();
        walk_properties(&raw, |flag, buf| {
            starts.push((flag, raw.len() - buf.len()));
            Ok(false)
        })
        .expect("valid properties");
        let ends = starts
            .iter()
            .skip(1)
            .map(|&(_, start)| start)
            .chain([raw.len()]);
        starts
            .iter()
            .zip(ends)
            .map(|(&(flag, start), end)| {
                let mut alone = BytesMut::new();
                alone.put_u16(flag);
                alone.put_slice(&raw[start..end]);
                (flag, alone.freeze())
            })
            .collect()
    }

    fn encoded(properties: &BasicProperties) -> Bytes {
        let mut raw = BytesMut::new();
        properties.encode(&mut raw);
        raw.freeze()
    }

    #[test]
    fn every_property_round_trips() {
        let properties = every_property();
        let mut raw = encoded(&properties);
        assert_eq!(&raw[..2], [0xff, 0xfc], "fourteen flags, bits 15 to 2");
        assert_eq!(BasicProperties::decode(&mut raw), Ok(properties));
        assert!(raw.is_empty());
    }

    #[test]
    fn each_property_round_trips_alone_under_its_own_flag() {
        let alone = each_property_alone();
        assert_eq!(alone.len(), 14);
        for (flag, raw) in alone {
            let properties = BasicProperties::decode(&mut raw.clone()).expect("valid");
            assert_ne!(properties, BasicProperties::default(), "flag {flag:#06x}");
            assert_eq!(encoded(&properties), raw, "flag {flag:#06x}");
        }
    }

    #[test]
    fn no_properties_is_a_zero_flags_word() {
        let raw = encoded(&BasicProperties::default());
        assert_eq!(&raw[..], [0, 0]);
        assert_eq!(scan_properties(&raw), Ok(PropertySummary::default()));
    }

    #[test]
    fn known_bytes_of_content_type_and_delivery_mode() {
        let properties = BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            ..BasicProperties::default()
        };
        let wire = b"\x90\x00\x0atext/plain\x02";
        assert_eq!(&encoded(&properties)[..], wire);
    }

    #[test]
    fn scan_agrees_with_decode() {
        let properties = every_property();
        let raw = encoded(&properties);
        let summary = scan_properties(&raw).expect("valid properties");
        assert_eq!(summary.delivery_mode, properties.delivery_mode);
        assert_eq!(summary.priority, properties.priority);
        assert_eq!(summary.expiration, properties.expiration);
        let mut headers = summary.headers.expect("headers are set");
        assert_eq!(FieldTable::decode(&mut headers).ok(), properties.headers);
        assert!(headers.is_empty(), "the raw headers are exactly one table");
    }

    #[test]
    fn scan_hands_out_views_not_copies() {
        let raw = encoded(&every_property());
        let summary = scan_properties(&raw).expect("valid properties");
        let inside = |bytes: &[u8]| raw.as_ptr_range().contains(&bytes.as_ptr());
        assert!(inside(summary.expiration.expect("set").as_bytes()));
        assert!(inside(&summary.headers.expect("set")));
    }

    #[test]
    fn every_strict_prefix_is_truncated() {
        let raw = encoded(&every_property());
        let mut header = BytesMut::new();
        ContentHeader::encode_parts(&mut header, 60, 3, &raw);
        let header = header.freeze();
        for len in 0..raw.len() {
            let prefix = raw.slice(..len);
            assert_eq!(
                BasicProperties::decode(&mut prefix.clone()),
                Err(DecodeError::Truncated)
            );
            assert_eq!(scan_properties(&prefix), Err(DecodeError::Truncated));
        }
        for len in 0..header.len() {
            assert_eq!(
                ContentHeader::decode(header.slice(..len)),
                Err(DecodeError::Truncated)
            );
        }
    }

    #[test]
    fn content_header_round_trips_and_keeps_properties_verbatim() {
        let header = ContentHeader {
            class_id: 60,
            weight: 0,
            body_size: 1 << 40,
            properties: encoded(&every_property()),
        };
        let mut out = BytesMut::new();
        header.encode(&mut out);
        assert_eq!(
            &out[..12],
            b"\x00\x3c\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00"
        );
        assert_eq!(ContentHeader::decode(out.freeze()), Ok(header));
    }

    #[test]
    fn bytes_after_the_last_property_are_rejected() {
        let mut out = BytesMut::new();
        ContentHeader::encode_parts(&mut out, 60, 0, b"\x10\x00\x02\x00");
        assert_eq!(
            ContentHeader::decode(out.freeze()),
            Err(DecodeError::TrailingBytes)
        );
    }

    #[test]
    fn a_malformed_header_table_is_rejected_by_every_reader() {
        // headers flag, then a table holding one entry "k" with tag 'Z'.
        let raw = Bytes::from_static(b"\x20\x00\x00\x00\x00\x03\x01kZ");
        let bad = Some(DecodeError::BadFieldType(b'Z'));
        assert_eq!(BasicProperties::decode(&mut raw.clone()).err(), bad);
        assert_eq!(scan_properties(&raw).err(), bad);
        let mut out = BytesMut::new();
        ContentHeader::encode_parts(&mut out, 60, 0, &raw);
        assert_eq!(ContentHeader::decode(out.freeze()).err(), bad);
    }

    #[test]
    fn an_empty_continuation_word_is_accepted() {
        let raw = Bytes::from_static(b"\x10\x01\x00\x00\x02");
        let summary = scan_properties(&raw).expect("valid properties");
        assert_eq!(summary.delivery_mode, Some(2));
        let decoded = BasicProperties::decode(&mut raw.clone()).expect("valid properties");
        assert_eq!(decoded.delivery_mode, Some(2));
    }

    #[test]
    fn flags_naming_unknown_properties_are_rejected() {
        for (raw, flags) in [
            (&b"\x00\x02"[..], 0x0002),
            (b"\x00\x01\x80\x00", 0x8000),
            (b"\x00\x01\x00\x01\x00\x04", 0x0004),
        ] {
            let raw = Bytes::from_static(raw);
            let bad = DecodeError::BadPropertyFlags(flags);
            assert_eq!(scan_properties(&raw), Err(bad.clone()));
            assert_eq!(BasicProperties::decode(&mut raw.clone()), Err(bad));
        }
    }
}
