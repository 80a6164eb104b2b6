//! The `x-consistent-hash` exchange, with the semantics of RabbitMQ's
//! rabbitmq_consistent_hash_exchange plugin (3.10).
//!
//! Owns: the hash ring of one exchange and what a message is hashed on.
//! A binding's key is its weight: the binding adds that many consecutive
//! buckets, all pointing at its destination, to the end of the ring. A
//! message picks a bucket by jump consistent hashing (Lamping and Veach)
//! of its routing key, or of the header (`hash-header`) or property
//! (`hash-property`) the exchange names, over the number of buckets; a
//! missing value hashes as one fixed value, so such messages all go to the
//! same bucket, as the plugin's hash of `undefined` does.
//!
//! Unbinding removes every bucket of that destination and moves the buckets
//! after the last of them down, exactly as the plugin's `remove_binding`
//! does, including its quirk: buckets of other bindings that sat between
//! two bindings to the same destination are lost, and a message hashed to
//! the gap they leave routes nowhere.
//!
//! The bucket choice uses FNV-1a and Lamping-Veach's generator, not Erlang's
//! `phash2` and `exs1024`: the same key lands on the same queue on every
//! shard and every run, and keys spread by weight, but not on the queue
//! RabbitMQ would pick for that key.
//!
//! Routing allocates nothing: the value is hashed where it lies in the
//! message's raw properties.

use bytes::Bytes;

use crate::protocol::properties::{find_property, flag};
use crate::protocol::types::{table_value_raw, FieldTable, FieldValue, ShortStr};

/// The largest weight one binding may have: each unit is a bucket in every
/// shard's replica of the ring, so the ring's memory is bounded by the
/// bindings (warren's limit; the plugin has none).
pub(crate) const WEIGHT_MAX: u32 = 10_000;

/// A message property the plugin can hash on (`hash-property`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashProperty {
    CorrelationId,
    MessageId,
    Timestamp,
}

/// What a message is hashed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum HashOn {
    #[default]
    RoutingKey,
    Header(ShortStr),
    Property(HashProperty),
}

/// A long-string argument, as the plugin's `hash_args` reads one: any
/// other type counts as absent.
fn long_string_argument<'a>(arguments: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match arguments.get(key) {
        Some(FieldValue::LongStr(text)) => Some(text.as_bytes()),
        _ => None,
    }
}

impl HashOn {
    /// Reads `hash-header` / `hash-property` with the plugin's `validate`
    /// checks; the error is the text of its 406.
    pub(crate) fn from_arguments(arguments: &FieldTable) -> Result<HashOn, String> {
        let header = long_string_argument(arguments, "hash-header");
        let property = long_string_argument(arguments, "hash-property");
        match (header, property) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(header), None) => Ok(HashOn::Header(ShortStr::from_bytes(
                Bytes::copy_from_slice(&header[..header.len().min(ShortStr::MAX_LEN)]),
            ))),
            (None, Some(property)) => match property {
                b"correlation_id" => Ok(HashOn::Property(HashProperty::CorrelationId)),
                b"message_id" => Ok(HashOn::Property(HashProperty::MessageId)),
                b"timestamp" => Ok(HashOn::Property(HashProperty::Timestamp)),
                other => Err(format!(
                    "Unsupported property: {}",
                    String::from_utf8_lossy(other)
                )),
            },
            (Some(_), Some(_)) => {
                Err("hash-header and hash-property are mutually exclusive".to_owned())
            }
        }
    }
}

/// A binding key as a weight, with the plugin's `validate_binding` texts
/// (Erlang's `list_to_integer`: an optional sign, then digits).
pub(crate) fn binding_weight(routing_key: &[u8]) -> Result<u32, String> {
    let digits = routing_key
        .strip_prefix(b"+")
        .or_else(|| routing_key.strip_prefix(b"-"))
        .unwrap_or(routing_key);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "The binding key must be an integer: <<\"{}\">>",
            String::from_utf8_lossy(routing_key)
        ));
    }
    let negative = routing_key.first() == Some(&b'-');
    let zero = digits.iter().all(|&d| d == b'0');
    if negative || zero {
        return Err("The binding key must be greater than 0".to_owned());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|&weight| weight <= WEIGHT_MAX)
        .ok_or_else(|| format!("The binding key must be at most {WEIGHT_MAX}"))
}

/// One exchange's ring: bucket i routes to `buckets[i]`; `None` is a gap
/// left by an unbind (see the module doc).
#[derive(Debug)]
pub(crate) struct HashRing<T> {
    hash_on: HashOn,
    buckets: Vec<Option<T>>,
    /// Buckets that are not gaps: the plugin hashes over the map's size.
    live: usize,
}

impl<T: Copy + PartialEq> HashRing<T> {
    pub fn new(hash_on: HashOn) -> HashRing<T> {
        HashRing {
            hash_on,
            buckets: Vec::new(),
            live: 0,
        }
    }

    /// Adds a binding of `routing_key`'s weight (the catalog validated it).
    pub fn insert(&mut self, routing_key: &[u8], target: T) {
        let weight = binding_weight(routing_key).unwrap_or(1) as usize;
        self.buckets
            .extend(std::iter::repeat_n(Some(target), weight));
        self.live += weight;
    }

    /// The plugin's `remove_binding`: every bucket of `target` goes, the
    /// buckets after its last one move down by that count.
    pub fn remove(&mut self, target: T) {
        let mine = |bucket: &Option<T>| *bucket == Some(target);
        let (Some(first), Some(last)) = (
            self.buckets.iter().position(mine),
            self.buckets.iter().rposition(mine),
        ) else {
            return;
        };
        let removed = self.buckets.iter().filter(|b| mine(b)).count();
        let lost = self.buckets[first..=last]
            .iter()
            .filter(|b| b.is_some() && !mine(b))
            .count();
        // Buckets below `first` stay; those above `last` move down by
        // `removed`, which leaves `last + 1 - removed - first` slots between
        // them: gaps, where the lost buckets were.
        let gap = last + 1 - removed - first;
        let tail: Vec<Option<T>> = self.buckets.drain(last + 1..).collect();
        self.buckets.truncate(first);
        self.buckets.extend(std::iter::repeat_n(None, gap));
        self.buckets.extend(tail);
        // A trailing gap stays: the plugin's next bucket number counts it.
        self.live -= removed + lost;
    }

    /// The target a message hashes to, if any.
    pub fn route(&self, routing_key: &[u8], properties: Option<&Bytes>) -> Option<T> {
        if self.live == 0 {
            return None;
        }
        let key = self.message_hash(routing_key, properties);
        let bucket = jump_consistent_hash(key, self.live);
        self.buckets.get(bucket).copied().flatten()
    }

    fn message_hash(&self, routing_key: &[u8], properties: Option<&Bytes>) -> u64 {
        match &self.hash_on {
            HashOn::RoutingKey => hash(routing_key),
            HashOn::Header(name) => properties
                .and_then(|raw| find_property(raw, flag::HEADERS))
                .and_then(|table| table_value_raw(table, name.as_bytes()).map(hash))
                .unwrap_or(UNDEFINED_HASH),
            HashOn::Property(property) => {
                property_hash(*property, properties).unwrap_or(UNDEFINED_HASH)
            }
        }
    }
}

/// The hash of a message without the value the exchange hashes on.
const UNDEFINED_HASH: u64 = 0;

fn property_hash(property: HashProperty, properties: Option<&Bytes>) -> Option<u64> {
    let raw = properties?;
    let wanted = match property {
        HashProperty::CorrelationId => flag::CORRELATION_ID,
        HashProperty::MessageId => flag::MESSAGE_ID,
        HashProperty::Timestamp => flag::TIMESTAMP,
    };
    let value = find_property(raw, wanted)?;
    if property == HashProperty::Timestamp {
        // The plugin hashes `integer_to_binary(Timestamp)`: the digits.
        let seconds = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let mut digits = [0u8; 20];
        return Some(hash(decimal(seconds, &mut digits)));
    }
    let len = usize::from(*value.first()?);
    value.get(1..1 + len).map(hash)
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// FNV-1a, 64 bit, with a final mix so that nearby keys spread.
fn hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = bytes
        .iter()
        .fold(OFFSET, |h, &byte| (h ^ u64::from(byte)).wrapping_mul(PRIME));
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Lamping and Veach's jump consistent hash: a bucket in `0..buckets`
/// (`buckets` > 0); growing `buckets` by one moves only 1/n of the keys.
fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let (mut chosen, mut next) = (0i64, 0i64);
    while next < buckets as i64 {
        chosen = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((chosen + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    chosen as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::properties::BasicProperties;
    use crate::protocol::types::LongStr;
    use bytes::BytesMut;

    fn ring(weights: &[(u32, &str)]) -> HashRing<u32> {
        let mut ring = HashRing::new(HashOn::RoutingKey);
        for (target, weight) in weights {
            ring.insert(weight.as_bytes(), *target);
        }
        ring
    }

    fn spread(ring: &HashRing<u32>, targets: usize) -> Vec<usize> {
        let mut counts = vec![0; targets];
        for n in 0..20_000 {
            if let Some(t) = ring.route(format!("key-{n}").as_bytes(), None) {
                counts[t as usize] += 1;
            }
        }
        counts
    }

    #[test]
    fn keys_spread_in_proportion_to_weights() {
        let counts = spread(&ring(&[(0, "1"), (1, "1"), (2, "2")]), 3);
        let share = |c: usize| c as f64 / 20_000.0;
        assert!((share(counts[0]) - 0.25).abs() < 0.03, "{counts:?}");
        assert!((share(counts[1]) - 0.25).abs() < 0.03, "{counts:?}");
        assert!((share(counts[2]) - 0.5).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn adding_a_binding_moves_only_its_share_of_keys() {
        let before = ring(&[(0, "10"), (1, "10")]);
        let after = ring(&[(0, "10"), (1, "10"), (2, "10")]);
        let moved = (0..10_000)
            .filter(|n| {
                let key = format!("k{n}");
                let (a, b) = (
                    before.route(key.as_bytes(), None),
                    after.route(key.as_bytes(), None),
                );
                a != b && b != Some(2)
            })
            .count();
        assert_eq!(moved, 0, "keys moved between old queues");
    }

    #[test]
    fn unbinding_removes_every_bucket_of_the_destination_as_the_plugin_does() {
        let mut r = ring(&[(0, "2"), (1, "1"), (2, "3")]);
        r.remove(1);
        assert_eq!(r.buckets, vec![Some(0), Some(0), Some(2), Some(2), Some(2)]);
        assert_eq!(r.live, 5);
        // Two bindings to 0 around 1's bucket: removing 0 loses 1's bucket
        // and leaves a gap where it was.
        let mut r = ring(&[(0, "1"), (1, "1"), (0, "1"), (2, "1")]);
        r.remove(0);
        assert_eq!(r.buckets, vec![None, Some(2)]);
        assert_eq!(r.live, 1);
        r.remove(2);
        assert_eq!(r.buckets, vec![None]);
        assert_eq!(r.route(b"k", None), None);
    }

    #[test]
    fn weights_are_checked_with_the_plugin_texts() {
        assert_eq!(binding_weight(b"3"), Ok(3));
        assert_eq!(binding_weight(b"+3"), Ok(3));
        assert_eq!(
            binding_weight(b"abc"),
            Err("The binding key must be an integer: <<\"abc\">>".to_owned())
        );
        assert_eq!(
            binding_weight(b""),
            Err("The binding key must be an integer: <<\"\">>".to_owned())
        );
        for bad in [&b"0"[..], b"-2"] {
            assert_eq!(
                binding_weight(bad),
                Err("The binding key must be greater than 0".to_owned())
            );
        }
        assert!(binding_weight(b"99999999999").is_err());
    }

    #[test]
    fn hash_arguments_are_checked_as_the_plugin_does() {
        let mut arguments = FieldTable::new();
        arguments.insert(
            "hash-property",
            FieldValue::LongStr(LongStr::from("app_id")),
        );
        assert_eq!(
            HashOn::from_arguments(&arguments),
            Err("Unsupported property: app_id".to_owned())
        );
        arguments.insert("hash-header", FieldValue::LongStr(LongStr::from("h")));
        assert_eq!(
            HashOn::from_arguments(&arguments),
            Err("hash-header and hash-property are mutually exclusive".to_owned())
        );
        let mut arguments = FieldTable::new();
        arguments.insert("hash-header", FieldValue::I32(1));
        assert_eq!(HashOn::from_arguments(&arguments), Ok(HashOn::RoutingKey));
    }

    fn properties(props: BasicProperties) -> Bytes {
        let mut out = BytesMut::new();
        props.encode(&mut out);
        out.freeze()
    }

    #[test]
    fn header_and_property_values_are_hashed_where_they_lie() {
        let mut by_header = HashRing::new(HashOn::Header(ShortStr::from("h")));
        let mut by_timestamp = HashRing::new(HashOn::Property(HashProperty::Timestamp));
        for target in 0..8u32 {
            by_header.insert(b"1", target);
            by_timestamp.insert(b"1", target);
        }
        let with_header = |value: &str| {
            let mut headers = FieldTable::new();
            headers.insert("h", FieldValue::LongStr(LongStr::from(value)));
            properties(BasicProperties {
                headers: Some(headers),
                ..Default::default()
            })
        };
        let targets: std::collections::HashSet<_> = (0..64)
            .filter_map(|n| by_header.route(b"same", Some(&with_header(&n.to_string()))))
            .collect();
        assert!(targets.len() > 4, "header values spread: {targets:?}");
        let first = by_header.route(b"a", Some(&with_header("v")));
        assert_eq!(by_header.route(b"b", Some(&with_header("v"))), first);
        // A missing value always hashes alike.
        let none = properties(BasicProperties::default());
        assert_eq!(
            by_header.route(b"x", Some(&none)),
            by_header.route(b"y", None)
        );
        let stamped = |seconds: u64| {
            properties(BasicProperties {
                timestamp: Some(seconds),
                ..Default::default()
            })
        };
        let t = by_timestamp.route(b"a", Some(&stamped(1_700_000_000)));
        assert_eq!(by_timestamp.route(b"b", Some(&stamped(1_700_000_000))), t);
        let mut digits = [0u8; 20];
        assert_eq!(decimal(1_700_000_000, &mut digits), b"1700000000");
        assert_eq!(decimal(0, &mut digits), b"0");
    }
}
