//! Every method of AMQP 0-9-1 as RabbitMQ defines it, with its wire encoding.
//!
//! A method frame's payload is `class-id: u16, method-id: u16`, then the
//! method's arguments in spec order. Consecutive `bit` arguments pack into
//! octets, least significant bit first; any other argument ends the run.
//!
//! The methods are listed once, in the `methods!` table at the bottom of this
//! file, transcribed from RabbitMQ's machine-readable spec
//! (`amqp-rabbitmq-0.9.1.json`): one struct per method, one `Method` variant
//! per struct, and the decode and encode dispatch are all generated from that
//! table so that they cannot disagree. Argument names are the spec's in
//! snake_case, except `type` (a keyword) which is `exchange_type`, and
//! RabbitMQ's `nowait` which is spelled `no_wait`.
//!
//! Decoding never allocates for strings: a `ShortStr` or `LongStr` argument
//! is a slice of the payload `Bytes`. Only field tables build a `Vec`, and
//! they appear on control-plane methods, never on publish, deliver or ack.
//!
//! This module knows nothing of frames or channels; `frame` wraps a method's
//! encoding in a frame, and the connection decides what a method means.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::types::{need, take, FieldTable, LongStr, ShortStr};

/// One argument type of the spec, and how it reads and writes itself.
///
/// `bit` is the only type whose encoding depends on its neighbours, so every
/// type goes through the argument cursors: a `bool` joins the current bit
/// octet, anything else closes it.
trait Argument: Sized {
    fn read(reader: &mut ArgumentReader) -> Result<Self, DecodeError>;
    fn write(&self, writer: &mut ArgumentWriter<'_>);
}

/// Reads a method's arguments off its payload in order.
struct ArgumentReader {
    payload: Bytes,
    /// The octet holding the current run of bits.
    bits: u8,
    /// How many bits of `bits` are already read; 8 when no run is open.
    bits_read: u8,
}

impl ArgumentReader {
    fn new(payload: Bytes) -> ArgumentReader {
        ArgumentReader {
            payload,
            bits: 0,
            bits_read: 8,
        }
    }

    fn read<T: Argument>(&mut self) -> Result<T, DecodeError> {
        T::read(self)
    }

    fn read_bit(&mut self) -> Result<bool, DecodeError> {
        if self.bits_read == 8 {
            need(&self.payload, 1)?;
            self.bits = self.payload.get_u8();
            self.bits_read = 0;
        }
        let bit = self.bits >> self.bits_read & 1 == 1;
        self.bits_read += 1;
        Ok(bit)
    }

    /// The payload for a non-bit argument, which ends any run of bits.
    fn bytes(&mut self) -> &mut Bytes {
        self.bits_read = 8;
        &mut self.payload
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.payload.has_remaining() {
            Err(DecodeError::TrailingBytes)
        } else {
            Ok(())
        }
    }
}

/// Writes a method's arguments in order.
struct ArgumentWriter<'a> {
    out: &'a mut BytesMut,
    /// Where the octet of the current run of bits sits in `out`.
    bits_at: usize,
    /// How many bits that octet holds; 8 when no run is open.
    bits_written: u8,
}

impl<'a> ArgumentWriter<'a> {
    fn new(out: &'a mut BytesMut) -> ArgumentWriter<'a> {
        ArgumentWriter {
            out,
            bits_at: 0,
            bits_written: 8,
        }
    }

    fn write<T: Argument>(&mut self, argument: &T) {
        argument.write(self);
    }

    fn write_bit(&mut self, bit: bool) {
        if self.bits_written == 8 {
            self.bits_at = self.out.len();
            self.out.put_u8(0);
            self.bits_written = 0;
        }
        // `bits_at` is an index this writer pushed itself, so it is in bounds.
        self.out[self.bits_at] |= u8::from(bit) << self.bits_written;
        self.bits_written += 1;
    }

    /// The output for a non-bit argument, which ends any run of bits.
    fn bytes(&mut self) -> &mut BytesMut {
        self.bits_written = 8;
        self.out
    }
}

impl Argument for bool {
    fn read(reader: &mut ArgumentReader) -> Result<bool, DecodeError> {
        reader.read_bit()
    }

    fn write(&self, writer: &mut ArgumentWriter<'_>) {
        writer.write_bit(*self);
    }
}

/// The integer types: octet, short, long and longlong (and timestamp).
macro_rules! integer_arguments {
    ($($ty:ty: $get:ident, $put:ident;)*) => {$(
        impl Argument for $ty {
            fn read(reader: &mut ArgumentReader) -> Result<$ty, DecodeError> {
                Ok(take(reader.bytes(), size_of::<$ty>())?.$get())
            }

            fn write(&self, writer: &mut ArgumentWriter<'_>) {
                writer.bytes().$put(*self);
            }
        }
    )*};
}

integer_arguments! {
    u8: get_u8, put_u8;
    u16: get_u16, put_u16;
    u32: get_u32, put_u32;
    u64: get_u64, put_u64;
}

/// The types that already have a wire codec: shortstr, longstr and table.
macro_rules! codec_arguments {
    ($($ty:ty),*) => {$(
        impl Argument for $ty {
            fn read(reader: &mut ArgumentReader) -> Result<$ty, DecodeError> {
                <$ty>::decode(reader.bytes())
            }

            fn write(&self, writer: &mut ArgumentWriter<'_>) {
                self.encode(writer.bytes());
            }
        }
    )*};
}

codec_arguments!(ShortStr, LongStr, FieldTable);

/// A basic.deliver made of borrowed parts. The delivery path writes one per
/// message, and building a `BasicDeliver` for it would clone, and then drop,
/// three strings that share their connection's read buffer: six atomic
/// operations on one reference count, for every delivery.
pub(crate) struct DeliverArgs<'a> {
    pub consumer_tag: &'a ShortStr,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a ShortStr,
    pub routing_key: &'a ShortStr,
}

impl DeliverArgs<'_> {
    /// Appends the method frame payload, as `Method::BasicDeliver` would.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut writer = ArgumentWriter::new(out);
        writer.write(&BasicDeliver::CLASS_ID);
        writer.write(&BasicDeliver::METHOD_ID);
        writer.write(self.consumer_tag);
        writer.write(&self.delivery_tag);
        writer.write(&self.redelivered);
        writer.write(self.exchange);
        writer.write(self.routing_key);
    }
}

/// Generates, from one table of methods: a struct per method, the `Method`
/// enum, its decode and encode dispatch, and (for tests) a sample of every
/// method with every argument set.
macro_rules! methods {
    ($(
        $name:ident = $class_id:literal / $method_id:literal $wire_name:literal {
            $($field:ident: $ty:ty),* $(,)?
        }
    )*) => {
        $(
            #[doc = concat!("`", $wire_name, "`: class ", stringify!($class_id),
                            ", method ", stringify!($method_id), ".")]
            #[derive(Clone, Debug, PartialEq, Default)]
            pub struct $name {
                $(pub $field: $ty,)*
            }

            impl $name {
                pub const CLASS_ID: u16 = $class_id;
                pub const METHOD_ID: u16 = $method_id;
                pub const NAME: &'static str = $wire_name;
            }

            impl From<$name> for Method {
                fn from(method: $name) -> Method {
                    Method::$name(method)
                }
            }
        )*

        /// Any AMQP 0-9-1 method, decoded.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Method {
            $($name($name),)*
        }

        impl Method {
            /// Decodes a method frame's payload: class id, method id, then
            /// the arguments, which must use up the payload exactly.
            pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
                let mut reader = ArgumentReader::new(payload);
                let class_id: u16 = reader.read()?;
                let method_id: u16 = reader.read()?;
                let method = match (class_id, method_id) {
                    $(
                        // Struct expressions evaluate their fields in the
                        // order written, which is the wire order.
                        ($class_id, $method_id) => Method::$name($name {
                            $($field: reader.read()?,)*
                        }),
                    )*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                reader.finish()?;
                Ok(method)
            }

            /// Appends the method frame payload: ids, then arguments.
            pub fn encode(&self, out: &mut BytesMut) {
                let mut writer = ArgumentWriter::new(out);
                writer.write(&self.class_id());
                writer.write(&self.method_id());
                match self {
                    $(Method::$name($name { $($field),* }) => {
                        $(writer.write($field);)*
                    })*
                }
            }

            pub fn class_id(&self) -> u16 {
                match self {
                    $(Method::$name(_) => $class_id,)*
                }
            }

            pub fn method_id(&self) -> u16 {
                match self {
                    $(Method::$name(_) => $method_id,)*
                }
            }

            /// The spec's name, as RabbitMQ writes it in errors: "basic.publish".
            pub fn name(&self) -> &'static str {
                match self {
                    $(Method::$name(_) => $wire_name,)*
                }
            }
        }

        /// One of every method, each argument set from `seed` so that
        /// successive calls give different values.
        #[cfg(test)]
        pub(crate) fn sample_methods(seed: &mut u64) -> Vec<Method> {
            use self::tests::Sample;
            vec![$(Method::$name($name { $($field: Sample::sample(seed),)* }),)*]
        }
    };
}

impl Method {
    /// Whether a content header and body frames follow this method.
    #[cfg(test)]
    pub(crate) fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish(_)
                | Method::BasicReturn(_)
                | Method::BasicDeliver(_)
                | Method::BasicGetOk(_)
        )
    }
}

methods! {
    ConnectionStart = 10/10 "connection.start" {
        version_major: u8,
        version_minor: u8,
        server_properties: FieldTable,
        mechanisms: LongStr,
        locales: LongStr,
    }
    ConnectionStartOk = 10/11 "connection.start-ok" {
        client_properties: FieldTable,
        mechanism: ShortStr,
        response: LongStr,
        locale: ShortStr,
    }
    ConnectionSecure = 10/20 "connection.secure" { challenge: LongStr }
    ConnectionSecureOk = 10/21 "connection.secure-ok" { response: LongStr }
    ConnectionTune = 10/30 "connection.tune" { channel_max: u16, frame_max: u32, heartbeat: u16 }
    ConnectionTuneOk = 10/31 "connection.tune-ok" {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    }
    ConnectionOpen = 10/40 "connection.open" {
        virtual_host: ShortStr,
        capabilities: ShortStr,
        insist: bool,
    }
    ConnectionOpenOk = 10/41 "connection.open-ok" { known_hosts: ShortStr }
    ConnectionClose = 10/50 "connection.close" {
        reply_code: u16,
        reply_text: ShortStr,
        class_id: u16,
        method_id: u16,
    }
    ConnectionCloseOk = 10/51 "connection.close-ok" {}
    ConnectionBlocked = 10/60 "connection.blocked" { reason: ShortStr }
    ConnectionUnblocked = 10/61 "connection.unblocked" {}
    ConnectionUpdateSecret = 10/70 "connection.update-secret" {
        new_secret: LongStr,
        reason: ShortStr,
    }
    ConnectionUpdateSecretOk = 10/71 "connection.update-secret-ok" {}
    ChannelOpen = 20/10 "channel.open" { out_of_band: ShortStr }
    ChannelOpenOk = 20/11 "channel.open-ok" { channel_id: LongStr }
    ChannelFlow = 20/20 "channel.flow" { active: bool }
    ChannelFlowOk = 20/21 "channel.flow-ok" { active: bool }
    ChannelClose = 20/40 "channel.close" {
        reply_code: u16,
        reply_text: ShortStr,
        class_id: u16,
        method_id: u16,
    }
    ChannelCloseOk = 20/41 "channel.close-ok" {}
    AccessRequest = 30/10 "access.request" {
        realm: ShortStr,
        exclusive: bool,
        passive: bool,
        active: bool,
        write: bool,
        read: bool,
    }
    AccessRequestOk = 30/11 "access.request-ok" { ticket: u16 }
    ExchangeDeclare = 40/10 "exchange.declare" {
        ticket: u16,
        exchange: ShortStr,
        exchange_type: ShortStr,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        no_wait: bool,
        arguments: FieldTable,
    }
    ExchangeDeclareOk = 40/11 "exchange.declare-ok" {}
    ExchangeDelete = 40/20 "exchange.delete" {
        ticket: u16,
        exchange: ShortStr,
        if_unused: bool,
        no_wait: bool,
    }
    ExchangeDeleteOk = 40/21 "exchange.delete-ok" {}
    ExchangeBind = 40/30 "exchange.bind" {
        ticket: u16,
        destination: ShortStr,
        source: ShortStr,
        routing_key: ShortStr,
        no_wait: bool,
        arguments: FieldTable,
    }
    ExchangeBindOk = 40/31 "exchange.bind-ok" {}
    ExchangeUnbind = 40/40 "exchange.unbind" {
        ticket: u16,
        destination: ShortStr,
        source: ShortStr,
        routing_key: ShortStr,
        no_wait: bool,
        arguments: FieldTable,
    }
    ExchangeUnbindOk = 40/51 "exchange.unbind-ok" {}
    QueueDeclare = 50/10 "queue.declare" {
        ticket: u16,
        queue: ShortStr,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        no_wait: bool,
        arguments: FieldTable,
    }
    QueueDeclareOk = 50/11 "queue.declare-ok" {
        queue: ShortStr,
        message_count: u32,
        consumer_count: u32,
    }
    QueueBind = 50/20 "queue.bind" {
        ticket: u16,
        queue: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
        no_wait: bool,
        arguments: FieldTable,
    }
    QueueBindOk = 50/21 "queue.bind-ok" {}
    QueuePurge = 50/30 "queue.purge" { ticket: u16, queue: ShortStr, no_wait: bool }
    QueuePurgeOk = 50/31 "queue.purge-ok" { message_count: u32 }
    QueueDelete = 50/40 "queue.delete" {
        ticket: u16,
        queue: ShortStr,
        if_unused: bool,
        if_empty: bool,
        no_wait: bool,
    }
    QueueDeleteOk = 50/41 "queue.delete-ok" { message_count: u32 }
    QueueUnbind = 50/50 "queue.unbind" {
        ticket: u16,
        queue: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
        arguments: FieldTable,
    }
    QueueUnbindOk = 50/51 "queue.unbind-ok" {}
    BasicQos = 60/10 "basic.qos" { prefetch_size: u32, prefetch_count: u16, global: bool }
    BasicQosOk = 60/11 "basic.qos-ok" {}
    BasicConsume = 60/20 "basic.consume" {
        ticket: u16,
        queue: ShortStr,
        consumer_tag: ShortStr,
        no_local: bool,
        no_ack: bool,
        exclusive: bool,
        no_wait: bool,
        arguments: FieldTable,
    }
    BasicConsumeOk = 60/21 "basic.consume-ok" { consumer_tag: ShortStr }
    BasicCancel = 60/30 "basic.cancel" { consumer_tag: ShortStr, no_wait: bool }
    BasicCancelOk = 60/31 "basic.cancel-ok" { consumer_tag: ShortStr }
    BasicPublish = 60/40 "basic.publish" {
        ticket: u16,
        exchange: ShortStr,
        routing_key: ShortStr,
        mandatory: bool,
        immediate: bool,
    }
    BasicReturn = 60/50 "basic.return" {
        reply_code: u16,
        reply_text: ShortStr,
        exchange: ShortStr,
        routing_key: ShortStr,
    }
    BasicDeliver = 60/60 "basic.deliver" {
        consumer_tag: ShortStr,
        delivery_tag: u64,
        redelivered: bool,
        exchange: ShortStr,
        routing_key: ShortStr,
    }
    BasicGet = 60/70 "basic.get" { ticket: u16, queue: ShortStr, no_ack: bool }
    BasicGetOk = 60/71 "basic.get-ok" {
        delivery_tag: u64,
        redelivered: bool,
        exchange: ShortStr,
        routing_key: ShortStr,
        message_count: u32,
    }
    BasicGetEmpty = 60/72 "basic.get-empty" { cluster_id: ShortStr }
    BasicAck = 60/80 "basic.ack" { delivery_tag: u64, multiple: bool }
    BasicReject = 60/90 "basic.reject" { delivery_tag: u64, requeue: bool }
    BasicRecoverAsync = 60/100 "basic.recover-async" { requeue: bool }
    BasicRecover = 60/110 "basic.recover" { requeue: bool }
    BasicRecoverOk = 60/111 "basic.recover-ok" {}
    BasicNack = 60/120 "basic.nack" { delivery_tag: u64, multiple: bool, requeue: bool }
    ConfirmSelect = 85/10 "confirm.select" { no_wait: bool }
    ConfirmSelectOk = 85/11 "confirm.select-ok" {}
    TxSelect = 90/10 "tx.select" {}
    TxSelectOk = 90/11 "tx.select-ok" {}
    TxCommit = 90/20 "tx.commit" {}
    TxCommitOk = 90/21 "tx.commit-ok" {}
    TxRollback = 90/30 "tx.rollback" {}
    TxRollbackOk = 90/31 "tx.rollback-ok" {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::types::FieldValue;

    /// A value for an argument, different on every call, so that a round
    /// trip cannot pass by decoding defaults or by swapping two arguments.
    pub(crate) trait Sample {
        fn sample(seed: &mut u64) -> Self;
    }

    fn next(seed: &mut u64) -> u64 {
        *seed += 1;
        *seed
    }

    impl Sample for bool {
        fn sample(seed: &mut u64) -> bool {
            next(seed) % 2 == 1
        }
    }

    impl Sample for u8 {
        fn sample(seed: &mut u64) -> u8 {
            0x80 | next(seed) as u8
        }
    }

    impl Sample for u16 {
        fn sample(seed: &mut u64) -> u16 {
            0x8000 | next(seed) as u16
        }
    }

    impl Sample for u32 {
        fn sample(seed: &mut u64) -> u32 {
            0x8000_0000 | next(seed) as u32
        }
    }

    impl Sample for u64 {
        fn sample(seed: &mut u64) -> u64 {
            0x8000_0000_0000_0000 | next(seed)
        }
    }

    impl Sample for ShortStr {
        fn sample(seed: &mut u64) -> ShortStr {
            ShortStr::from(format!("short-{}", next(seed)))
        }
    }

    impl Sample for LongStr {
        fn sample(seed: &mut u64) -> LongStr {
            LongStr::from(format!("long-{}", next(seed)).as_str())
        }
    }

    impl Sample for FieldTable {
        fn sample(seed: &mut u64) -> FieldTable {
            let mut table = FieldTable::new();
            table.insert("x-seed", FieldValue::U32(u32::sample(seed)));
            table.insert("x-flag", FieldValue::Bool(bool::sample(seed)));
            table
        }
    }

    fn encoded(method: &Method) -> Bytes {
        let mut out = BytesMut::new();
        method.encode(&mut out);
        out.freeze()
    }

    pub(crate) fn samples() -> Vec<Method> {
        let mut seed = 0;
        (0..4).flat_map(|_| sample_methods(&mut seed)).collect()
    }

    #[test]
    fn every_method_of_the_spec_is_listed_once() {
        let methods = sample_methods(&mut 0);
        assert_eq!(methods.len(), 66);
        let mut ids: Vec<_> = methods
            .iter()
            .map(|m| (m.class_id(), m.method_id()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), methods.len());
    }

    #[test]
    fn every_method_round_trips_with_every_argument_set() {
        for method in samples() {
            let payload = encoded(&method);
            assert_eq!(
                Method::decode(payload),
                Ok(method.clone()),
                "{}",
                method.name()
            );
        }
    }

    #[test]
    fn every_strict_prefix_of_every_method_is_truncated() {
        for method in samples() {
            let payload = encoded(&method);
            for len in 0..payload.len() {
                assert_eq!(
                    Method::decode(payload.slice(..len)),
                    Err(DecodeError::Truncated),
                    "{} cut at {len}",
                    method.name()
                );
            }
        }
    }

    #[test]
    fn bytes_after_the_last_argument_are_rejected() {
        for method in sample_methods(&mut 0) {
            let mut out = BytesMut::new();
            method.encode(&mut out);
            out.put_u8(0);
            assert_eq!(
                Method::decode(out.freeze()),
                Err(DecodeError::TrailingBytes),
                "{}",
                method.name()
            );
        }
    }

    #[test]
    fn unknown_ids_are_unknown_methods() {
        for (class_id, method_id) in [(60, 41), (99, 10), (0, 0)] {
            let mut out = BytesMut::new();
            out.put_u16(class_id);
            out.put_u16(method_id);
            assert_eq!(
                Method::decode(out.freeze()),
                Err(DecodeError::UnknownMethod {
                    class_id,
                    method_id
                })
            );
        }
    }

    #[test]
    fn names_and_ids_follow_the_spec() {
        let publish = Method::from(BasicPublish::default());
        assert_eq!((publish.class_id(), publish.method_id()), (60, 40));
        assert_eq!(publish.name(), "basic.publish");
        assert!(publish.has_content());
        let unbind_ok = Method::from(ExchangeUnbindOk::default());
        assert_eq!((unbind_ok.class_id(), unbind_ok.method_id()), (40, 51));
        assert_eq!(ConfirmSelect::NAME, "confirm.select");
        let content: Vec<_> = sample_methods(&mut 0)
            .into_iter()
            .filter(Method::has_content)
            .map(|m| m.name())
            .collect();
        assert_eq!(
            content,
            [
                "basic.publish",
                "basic.return",
                "basic.deliver",
                "basic.get-ok"
            ]
        );
    }

    #[test]
    fn basic_publish_packs_mandatory_and_immediate_lsb_first() {
        let publish = Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: ShortStr::from("ex"),
            routing_key: ShortStr::from("rk"),
            mandatory: false,
            immediate: true,
        });
        let wire = b"\x00\x3c\x00\x28\x00\x00\x02ex\x02rk\x02";
        assert_eq!(&encoded(&publish)[..], wire);
        assert_eq!(Method::decode(Bytes::from_static(wire)), Ok(publish));
    }

    #[test]
    fn five_bits_share_one_octet() {
        let request = Method::AccessRequest(AccessRequest {
            realm: ShortStr::from("/data"),
            exclusive: true,
            passive: false,
            active: true,
            write: true,
            read: false,
        });
        let wire = b"\x00\x1e\x00\x0a\x05/data\x0d";
        assert_eq!(&encoded(&request)[..], wire);
        assert_eq!(Method::decode(Bytes::from_static(wire)), Ok(request));
    }

    #[test]
    fn a_bit_run_ends_before_a_table() {
        let declare = Method::QueueDeclare(QueueDeclare {
            queue: ShortStr::from("q"),
            durable: true,
            no_wait: true,
            ..QueueDeclare::default()
        });
        let wire = b"\x00\x32\x00\x0a\x00\x00\x01q\x12\x00\x00\x00\x00";
        assert_eq!(&encoded(&declare)[..], wire);
        assert_eq!(Method::decode(Bytes::from_static(wire)), Ok(declare));
    }

    #[test]
    fn decoded_strings_are_views_into_the_payload() {
        let payload = encoded(&Method::BasicPublish(BasicPublish {
            exchange: ShortStr::from("amq.topic"),
            ..BasicPublish::default()
        }));
        let Ok(Method::BasicPublish(publish)) = Method::decode(payload.clone()) else {
            panic!("not a publish");
        };
        let exchange = publish.exchange.as_bytes().as_ptr_range();
        assert!(payload.as_ptr_range().contains(&exchange.start));
    }

    #[test]
    fn deliver_args_encode_as_basic_deliver_does() {
        for redelivered in [false, true] {
            let method = BasicDeliver {
                consumer_tag: ShortStr::from("ctag-1"),
                delivery_tag: 0x0102_0304_0506_0708,
                redelivered,
                exchange: ShortStr::from("amq.topic"),
                routing_key: ShortStr::from("a.b.c"),
            };
            let mut expected = BytesMut::new();
            Method::BasicDeliver(method.clone()).encode(&mut expected);
            let mut encoded = BytesMut::new();
            DeliverArgs {
                consumer_tag: &method.consumer_tag,
                delivery_tag: method.delivery_tag,
                redelivered,
                exchange: &method.exchange,
                routing_key: &method.routing_key,
            }
            .encode(&mut encoded);
            assert_eq!(encoded, expected);
        }
    }
}
