//! The payload of one definitions record: a durable change, as the
//! [`MetaOp`] that replays it, in a compact binary form.
//!
//! Layout: one tag byte, then the fields in order. Names the catalog keeps
//! as short strings are AMQP short strings; other text (user names,
//! patterns, the policy definition as JSON) is a u32-length-prefixed UTF-8
//! string; arguments are AMQP field tables, so every value keeps its AMQP
//! type across a restart.
//!
//! Decoding is total: any bytes give a change or `None`, never a panic
//! (the framing's CRC has already passed, so `None` means a record from a
//! newer warren or a bug, which the log reports like a damaged record).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::catalog::access::{
    ApplyTo, HashingAlgorithm, PasswordHash, PermissionDef, PolicyDef, PolicyKind, User,
};
use crate::catalog::{AccessOp, BindingOp, DestinationName, MetaOp};
use crate::ids::MANAGEMENT_CONNECTION;
use crate::protocol::types::{FieldTable, ShortStr};

const EXCHANGE_DECLARE: u8 = 1;
const EXCHANGE_DELETE: u8 = 2;
const QUEUE_DECLARE: u8 = 3;
const QUEUE_DELETE: u8 = 4;
const BIND: u8 = 5;
const UNBIND: u8 = 6;
const VHOST_ADD: u8 = 7;
const VHOST_DELETE: u8 = 8;
const USER_PUT: u8 = 9;
const USER_DELETE: u8 = 10;
const PERMISSION_SET: u8 = 11;
const PERMISSION_CLEAR: u8 = 12;
const POLICY_SET: u8 = 13;
const POLICY_CLEAR: u8 = 14;
const OPERATOR_POLICY_SET: u8 = 15;
const OPERATOR_POLICY_CLEAR: u8 = 16;

/// The record tags of a policy change of `kind`: (set, clear).
fn policy_tags(kind: PolicyKind) -> (u8, u8) {
    match kind {
        PolicyKind::User => (POLICY_SET, POLICY_CLEAR),
        PolicyKind::Operator => (OPERATOR_POLICY_SET, OPERATOR_POLICY_CLEAR),
    }
}

/// Appends `op`'s encoding to `out`; false (nothing appended) for an op
/// that is no durable change (passive declares, a closed connection).
pub(crate) fn encode(op: &MetaOp, out: &mut BytesMut) -> bool {
    match op {
        MetaOp::ExchangeDeclare {
            vhost,
            name,
            kind,
            auto_delete,
            internal,
            arguments,
            passive: false,
            ..
        } => {
            out.put_u8(EXCHANGE_DECLARE);
            put_names(out, &[vhost, name, kind]);
            out.put_u8(u8::from(*auto_delete) | (u8::from(*internal) << 1));
            arguments.encode(out);
        }
        MetaOp::ExchangeDelete { vhost, name, .. } => {
            out.put_u8(EXCHANGE_DELETE);
            put_names(out, &[vhost, name]);
        }
        MetaOp::QueueDeclare {
            vhost,
            name,
            auto_delete,
            arguments,
            server_named,
            passive: false,
            ..
        } => {
            out.put_u8(QUEUE_DECLARE);
            put_names(out, &[vhost, name]);
            out.put_u8(u8::from(*auto_delete) | (u8::from(*server_named) << 1));
            arguments.encode(out);
        }
        MetaOp::QueueDelete { vhost, name } => {
            out.put_u8(QUEUE_DELETE);
            put_names(out, &[vhost, name]);
        }
        MetaOp::Bind(binding) => put_binding(out, BIND, binding),
        MetaOp::Unbind(binding) => put_binding(out, UNBIND, binding),
        MetaOp::VhostAdd { name } => {
            out.put_u8(VHOST_ADD);
            put_names(out, &[name]);
        }
        MetaOp::VhostDelete { name } => {
            out.put_u8(VHOST_DELETE);
            put_names(out, &[name]);
        }
        MetaOp::Access(access) => put_access(out, access),
        MetaOp::ExchangeDeclare { .. }
        | MetaOp::QueueDeclare { .. }
        | MetaOp::ConnectionClosed { .. } => return false,
    }
    true
}

fn put_names(out: &mut BytesMut, names: &[&ShortStr]) {
    for name in names {
        name.encode(out);
    }
}

fn put_text(out: &mut BytesMut, text: &str) {
    // Every text here is a name or pattern the catalog bounded (4 KiB),
    // or a policy definition: far below 4 GiB.
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
}

fn put_binding(out: &mut BytesMut, tag: u8, binding: &BindingOp) {
    out.put_u8(tag);
    let (to_exchange, destination) = match &binding.destination {
        DestinationName::Queue(name) => (0, name),
        DestinationName::Exchange(name) => (1, name),
    };
    put_names(out, &[&binding.vhost, &binding.source]);
    out.put_u8(to_exchange);
    put_names(out, &[destination, &binding.routing_key]);
    binding.arguments.encode(out);
}

fn put_access(out: &mut BytesMut, op: &AccessOp) {
    match op {
        AccessOp::UserPut(user) => {
            out.put_u8(USER_PUT);
            put_text(out, &user.name);
            put_text(out, user.password_hash.algorithm.name());
            put_text(out, &user.password_hash.to_base64());
            out.put_u32(user.tags.len() as u32);
            for tag in &user.tags {
                put_text(out, tag);
            }
        }
        AccessOp::UserDelete { name } => {
            out.put_u8(USER_DELETE);
            put_text(out, name);
        }
        AccessOp::PermissionSet(def) => {
            out.put_u8(PERMISSION_SET);
            for text in [&def.vhost, &def.user, &def.configure, &def.write, &def.read] {
                put_text(out, text);
            }
        }
        AccessOp::PermissionClear { vhost, user } => {
            out.put_u8(PERMISSION_CLEAR);
            put_text(out, vhost);
            put_text(out, user);
        }
        AccessOp::PolicySet(def) => {
            out.put_u8(policy_tags(def.kind).0);
            for text in [&def.vhost, &def.name, &def.pattern] {
                put_text(out, text);
            }
            put_text(out, def.apply_to.name());
            out.put_i64(def.priority);
            let definition = serde_json::Value::Object(def.definition.clone());
            put_text(out, &definition.to_string());
        }
        AccessOp::PolicyClear { kind, vhost, name } => {
            out.put_u8(policy_tags(*kind).1);
            put_text(out, vhost);
            put_text(out, name);
        }
    }
}

/// The change `payload` encodes, or None when it is not one this version
/// reads (including trailing bytes after a whole change).
pub(crate) fn decode(payload: &[u8]) -> Option<MetaOp> {
    let mut buf = Bytes::copy_from_slice(payload);
    let op = decode_op(&mut buf)?;
    buf.is_empty().then_some(op)
}

fn decode_op(buf: &mut Bytes) -> Option<MetaOp> {
    let op = match get_u8(buf)? {
        EXCHANGE_DECLARE => {
            let [vhost, name, kind] = get_names(buf)?;
            let flags = get_u8(buf)?;
            MetaOp::ExchangeDeclare {
                vhost,
                name,
                kind,
                passive: false,
                durable: true,
                auto_delete: flags & 1 != 0,
                internal: flags & 2 != 0,
                arguments: FieldTable::decode(buf).ok()?,
            }
        }
        EXCHANGE_DELETE => {
            let [vhost, name] = get_names(buf)?;
            MetaOp::ExchangeDelete {
                vhost,
                name,
                if_unused: false,
            }
        }
        QUEUE_DECLARE => {
            let [vhost, name] = get_names(buf)?;
            let flags = get_u8(buf)?;
            let arguments = FieldTable::decode(buf).ok()?;
            durable_queue_declare(vhost, name, flags & 1 != 0, arguments, flags & 2 != 0)
        }
        QUEUE_DELETE => {
            let [vhost, name] = get_names(buf)?;
            MetaOp::QueueDelete { vhost, name }
        }
        BIND => MetaOp::Bind(get_binding(buf)?),
        UNBIND => MetaOp::Unbind(get_binding(buf)?),
        VHOST_ADD => {
            let [name] = get_names(buf)?;
            MetaOp::VhostAdd { name }
        }
        VHOST_DELETE => {
            let [name] = get_names(buf)?;
            MetaOp::VhostDelete { name }
        }
        tag => MetaOp::Access(get_access(tag, buf)?),
    };
    Some(op)
}

/// The declare that recreates a durable queue. The owner fields matter
/// only to exclusive queues, which are never durable; a server-named one
/// is placed by its name's hash when replayed (see `Definitions::ops`).
pub(crate) fn durable_queue_declare(
    vhost: ShortStr,
    name: ShortStr,
    auto_delete: bool,
    arguments: FieldTable,
    server_named: bool,
) -> MetaOp {
    MetaOp::QueueDeclare {
        vhost,
        name,
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete,
        arguments,
        owner: MANAGEMENT_CONNECTION,
        owner_shard: 0,
        server_named,
    }
}

fn get_u8(buf: &mut Bytes) -> Option<u8> {
    buf.has_remaining().then(|| buf.get_u8())
}

fn get_names<const N: usize>(buf: &mut Bytes) -> Option<[ShortStr; N]> {
    let mut names: [ShortStr; N] = std::array::from_fn(|_| ShortStr::default());
    for name in &mut names {
        *name = ShortStr::decode(buf).ok()?;
    }
    Some(names)
}

fn get_text(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

fn get_binding(buf: &mut Bytes) -> Option<BindingOp> {
    let [vhost, source] = get_names(buf)?;
    let to_exchange = get_u8(buf)?;
    let [destination, routing_key] = get_names(buf)?;
    let destination = match to_exchange {
        0 => DestinationName::Queue(destination),
        1 => DestinationName::Exchange(destination),
        _ => return None,
    };
    Some(BindingOp {
        vhost,
        source,
        destination,
        routing_key,
        arguments: FieldTable::decode(buf).ok()?,
        conn: MANAGEMENT_CONNECTION,
    })
}

fn get_access(tag: u8, buf: &mut Bytes) -> Option<AccessOp> {
    let op = match tag {
        USER_PUT => {
            let name = get_text(buf)?;
            let algorithm = HashingAlgorithm::parse(&get_text(buf)?)?;
            let password_hash = PasswordHash::from_base64(&get_text(buf)?, algorithm)?;
            if buf.remaining() < 4 {
                return None;
            }
            let count = buf.get_u32();
            let tags = (0..count)
                .map(|_| get_text(buf))
                .collect::<Option<Vec<_>>>()?;
            AccessOp::UserPut(User {
                name,
                password_hash,
                tags,
            })
        }
        USER_DELETE => AccessOp::UserDelete {
            name: get_text(buf)?,
        },
        PERMISSION_SET => AccessOp::PermissionSet(PermissionDef {
            vhost: get_text(buf)?,
            user: get_text(buf)?,
            configure: get_text(buf)?,
            write: get_text(buf)?,
            read: get_text(buf)?,
        }),
        PERMISSION_CLEAR => AccessOp::PermissionClear {
            vhost: get_text(buf)?,
            user: get_text(buf)?,
        },
        POLICY_SET => get_policy(PolicyKind::User, buf)?,
        OPERATOR_POLICY_SET => get_policy(PolicyKind::Operator, buf)?,
        POLICY_CLEAR => get_policy_clear(PolicyKind::User, buf)?,
        OPERATOR_POLICY_CLEAR => get_policy_clear(PolicyKind::Operator, buf)?,
        _ => return None,
    };
    Some(op)
}

fn get_policy_clear(kind: PolicyKind, buf: &mut Bytes) -> Option<AccessOp> {
    Some(AccessOp::PolicyClear {
        kind,
        vhost: get_text(buf)?,
        name: get_text(buf)?,
    })
}

fn get_policy(kind: PolicyKind, buf: &mut Bytes) -> Option<AccessOp> {
    let (vhost, name, pattern) = (get_text(buf)?, get_text(buf)?, get_text(buf)?);
    let apply_to = ApplyTo::parse(&get_text(buf)?)?;
    if buf.remaining() < 8 {
        return None;
    }
    let priority = buf.get_i64();
    let serde_json::Value::Object(definition) = serde_json::from_str(&get_text(buf)?).ok()? else {
        return None;
    };
    Some(AccessOp::PolicySet(PolicyDef {
        kind,
        vhost,
        name,
        pattern,
        apply_to,
        priority,
        definition,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::FieldValue;

    fn round_trip(op: MetaOp) {
        let mut out = BytesMut::new();
        assert!(encode(&op, &mut out), "{op:?} is a durable change");
        assert_eq!(decode(&out), Some(op.clone()));
        // Every prefix is refused, never a panic or a wrong change.
        for len in 0..out.len() {
            assert_eq!(decode(&out[..len]), None, "{op:?} cut at {len}");
        }
    }

    fn arguments() -> FieldTable {
        let mut table = FieldTable::new();
        table.insert("x-max-length", FieldValue::I8(7));
        table.insert("x-queue-type", FieldValue::LongStr("quorum".into()));
        table
    }

    #[test]
    fn every_durable_change_round_trips() {
        let (vhost, name) = (ShortStr::from("v"), ShortStr::from("n\u{e9}"));
        round_trip(MetaOp::ExchangeDeclare {
            vhost: vhost.clone(),
            name: name.clone(),
            kind: "topic".into(),
            passive: false,
            durable: true,
            auto_delete: true,
            internal: false,
            arguments: arguments(),
        });
        round_trip(MetaOp::ExchangeDelete {
            vhost: vhost.clone(),
            name: name.clone(),
            if_unused: false,
        });
        round_trip(durable_queue_declare(
            vhost.clone(),
            name.clone(),
            false,
            arguments(),
            true,
        ));
        round_trip(MetaOp::QueueDelete {
            vhost: vhost.clone(),
            name: name.clone(),
        });
        let binding = BindingOp {
            vhost: vhost.clone(),
            source: "x".into(),
            destination: DestinationName::Exchange("y".into()),
            routing_key: "k.#".into(),
            arguments: arguments(),
            conn: MANAGEMENT_CONNECTION,
        };
        round_trip(MetaOp::Bind(binding.clone()));
        round_trip(MetaOp::Unbind(binding));
        round_trip(MetaOp::VhostAdd {
            name: vhost.clone(),
        });
        round_trip(MetaOp::VhostDelete { name: vhost });
    }

    #[test]
    fn every_access_change_round_trips() {
        let user = User {
            name: "ann".into(),
            password_hash: PasswordHash::new("pw", [9, 8, 7, 6]),
            tags: vec!["management".into(), "x".into()],
        };
        round_trip(MetaOp::Access(AccessOp::UserPut(user)));
        round_trip(MetaOp::Access(AccessOp::UserDelete { name: "ann".into() }));
        round_trip(MetaOp::Access(AccessOp::PermissionSet(PermissionDef {
            user: "ann".into(),
            vhost: "/".into(),
            configure: "^a".into(),
            write: ".*".into(),
            read: "".into(),
        })));
        round_trip(MetaOp::Access(AccessOp::PermissionClear {
            vhost: "/".into(),
            user: "ann".into(),
        }));
        let definition = serde_json::json!({"max-length": 5, "overflow": "drop-head"});
        let serde_json::Value::Object(definition) = definition else {
            unreachable!("an object literal")
        };
        for kind in [PolicyKind::User, PolicyKind::Operator] {
            round_trip(MetaOp::Access(AccessOp::PolicySet(PolicyDef {
                kind,
                vhost: "/".into(),
                name: "p".into(),
                pattern: "^q".into(),
                apply_to: ApplyTo::Queues,
                priority: -3,
                definition: definition.clone(),
            })));
            round_trip(MetaOp::Access(AccessOp::PolicyClear {
                kind,
                vhost: "/".into(),
                name: "p".into(),
            }));
        }
    }

    #[test]
    fn garbage_decodes_to_nothing_without_panicking() {
        for tag in 0..=255u8 {
            assert_eq!(decode(&[tag]), None);
            assert_eq!(decode(&[tag, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), None);
        }
        let mut out = BytesMut::new();
        encode(&MetaOp::VhostAdd { name: "v".into() }, &mut out);
        out.put_u8(0);
        assert_eq!(decode(&out), None, "trailing bytes");
    }
}
