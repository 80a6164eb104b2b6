use super::access::{PasswordHash, PermissionDef, PolicyDef, User};
use super::*;
use crate::protocol::error::reply_code;
use crate::protocol::types::LongStr;

const CONN_A: ConnectionId = ConnectionId {
    shard_id: 0,
    local_id: 1,
};
const CONN_B: ConnectionId = ConnectionId {
    shard_id: 1,
    local_id: 2,
};

fn s(text: &str) -> ShortStr {
    ShortStr::from(text)
}

fn longstr(text: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(text))
}

fn exchange_declare(name: &str, kind: &str) -> MetaOp {
    MetaOp::ExchangeDeclare {
        vhost: s("/"),
        name: s(name),
        kind: s(kind),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    }
}

fn queue_declare(name: &str, conn: ConnectionId) -> MetaOp {
    MetaOp::QueueDeclare {
        vhost: s("/"),
        name: s(name),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::new(),
        owner: conn,
        owner_shard: conn.shard_id as ShardId,
        server_named: false,
    }
}

fn with_queue(
    op: MetaOp,
    edit: impl FnOnce(&mut bool, &mut bool, &mut bool, &mut FieldTable),
) -> MetaOp {
    let mut op = op;
    if let MetaOp::QueueDeclare {
        durable,
        exclusive,
        auto_delete,
        arguments,
        ..
    } = &mut op
    {
        edit(durable, exclusive, auto_delete, arguments);
    }
    op
}

fn binding(source: &str, destination: DestinationName, key: &str) -> BindingOp {
    BindingOp {
        vhost: s("/"),
        source: s(source),
        destination,
        routing_key: s(key),
        arguments: FieldTable::new(),
        conn: CONN_A,
    }
}

fn bind_queue(source: &str, queue: &str, key: &str) -> MetaOp {
    MetaOp::Bind(binding(source, DestinationName::Queue(s(queue)), key))
}

fn unbind_queue(source: &str, queue: &str, key: &str) -> MetaOp {
    MetaOp::Unbind(binding(source, DestinationName::Queue(s(queue)), key))
}

fn bind_exchange(source: &str, destination: &str) -> MetaOp {
    MetaOp::Bind(binding(
        source,
        DestinationName::Exchange(s(destination)),
        "",
    ))
}

fn err(catalog: &mut Catalog, op: &MetaOp) -> (u16, String) {
    match catalog.apply(op) {
        Err(e) => (e.code, e.text),
        Ok(outcome) => panic!("expected an error, got {outcome:?}"),
    }
}

fn ok(catalog: &mut Catalog, op: &MetaOp) -> MetaOutcome {
    match catalog.apply(op) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{op:?} failed: {e}"),
    }
}

fn route(catalog: &Catalog, exchange: &str, key: &str) -> Vec<QueueId> {
    let mut out = Vec::new();
    if let Some(routing) = catalog.routing(b"/") {
        let fields = crate::routing::MessageFields::default();
        routing.route(exchange.as_bytes(), key.as_bytes(), fields, &mut out);
    }
    out
}

#[test]
fn predeclared_exchanges_exist() {
    let catalog = Catalog::new(4);
    for (name, kind) in [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let def = catalog.exchange(b"/", name.as_bytes()).expect(name);
        assert_eq!(def.kind, kind);
        assert!(def.durable);
    }
    assert_eq!(catalog.exchanges().count(), 6);
}

#[test]
fn passive_declare_of_missing_entities_is_not_found() {
    let mut catalog = Catalog::new(1);
    let mut op = exchange_declare("x", "direct");
    if let MetaOp::ExchangeDeclare { passive, .. } = &mut op {
        *passive = true;
    }
    assert_eq!(
        err(&mut catalog, &op),
        (reply_code::NOT_FOUND, "no exchange 'x' in vhost '/'".into())
    );
    let mut op = queue_declare("q", CONN_A);
    if let MetaOp::QueueDeclare { passive, .. } = &mut op {
        *passive = true;
    }
    assert_eq!(
        err(&mut catalog, &op),
        (reply_code::NOT_FOUND, "no queue 'q' in vhost '/'".into())
    );
}

#[test]
fn exchange_redeclare_must_be_equivalent() {
    let mut catalog = Catalog::new(1);
    assert!(matches!(
        ok(&mut catalog, &exchange_declare("x", "direct")),
        MetaOutcome::ExchangeDeclared { created: true, .. }
    ));
    assert!(matches!(
        ok(&mut catalog, &exchange_declare("x", "direct")),
        MetaOutcome::ExchangeDeclared { created: false, .. }
    ));
    assert_eq!(
        err(&mut catalog, &exchange_declare("x", "fanout")),
        (
            reply_code::PRECONDITION_FAILED,
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
                .into()
        )
    );
    type Edit = (&'static str, fn(&mut MetaOp));
    let edits: [Edit; 4] = [
        ("durable", |op| {
            if let MetaOp::ExchangeDeclare { durable, .. } = op {
                *durable = true
            }
        }),
        ("auto_delete", |op| {
            if let MetaOp::ExchangeDeclare { auto_delete, .. } = op {
                *auto_delete = true
            }
        }),
        ("internal", |op| {
            if let MetaOp::ExchangeDeclare { internal, .. } = op {
                *internal = true
            }
        }),
        ("alternate-exchange", |op| {
            if let MetaOp::ExchangeDeclare { arguments, .. } = op {
                arguments.insert("alternate-exchange", longstr("ae"))
            }
        }),
    ];
    for (field, edit) in edits {
        let mut op = exchange_declare("x", "direct");
        edit(&mut op);
        let (code, text) = err(&mut catalog, &op);
        assert_eq!(code, reply_code::PRECONDITION_FAILED, "{field}");
        assert!(
            text.starts_with(&format!("inequivalent arg '{field}' for exchange 'x'")),
            "{text}"
        );
    }
    let mut op = exchange_declare("x", "direct");
    if let MetaOp::ExchangeDeclare { durable, .. } = &mut op {
        *durable = true;
    }
    assert_eq!(
        err(&mut catalog, &op).1,
        "inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'"
    );
    // Arguments other than alternate-exchange are not compared.
    let mut op = exchange_declare("x", "direct");
    if let MetaOp::ExchangeDeclare { arguments, .. } = &mut op {
        arguments.insert("x-anything", longstr("v"));
    }
    ok(&mut catalog, &op);
}

#[test]
fn default_exchange_is_off_limits() {
    let mut catalog = Catalog::new(1);
    let refused = (
        reply_code::ACCESS_REFUSED,
        "operation not permitted on the default exchange".to_owned(),
    );
    assert_eq!(err(&mut catalog, &exchange_declare("", "direct")), refused);
    let delete = MetaOp::ExchangeDelete {
        vhost: s("/"),
        name: s(""),
        if_unused: false,
    };
    assert_eq!(err(&mut catalog, &delete), refused);
    ok(&mut catalog, &queue_declare("q", CONN_A));
    assert_eq!(err(&mut catalog, &bind_queue("", "q", "q")), refused);
    assert_eq!(err(&mut catalog, &bind_exchange("amq.direct", "")), refused);
    assert_eq!(err(&mut catalog, &bind_exchange("", "amq.direct")), refused);
}

#[test]
fn amq_prefix_is_reserved_for_creation_only() {
    let mut catalog = Catalog::new(1);
    assert_eq!(
        err(&mut catalog, &exchange_declare("amq.foo", "direct")),
        (
            reply_code::ACCESS_REFUSED,
            "exchange name 'amq.foo' contains reserved prefix 'amq.*'".into()
        )
    );
    assert_eq!(
        err(&mut catalog, &queue_declare("amq.q", CONN_A)),
        (
            reply_code::ACCESS_REFUSED,
            "queue name 'amq.q' contains reserved prefix 'amq.*'".into()
        )
    );
    let mut op = exchange_declare("amq.direct", "direct");
    if let MetaOp::ExchangeDeclare { durable, .. } = &mut op {
        *durable = true;
    }
    ok(&mut catalog, &op);
    // Server-named queues carry the amq.gen- prefix legitimately.
    let mut op = queue_declare("amq.gen-abc", CONN_A);
    if let MetaOp::QueueDeclare { server_named, .. } = &mut op {
        *server_named = true;
    }
    ok(&mut catalog, &op);
    let delete = MetaOp::ExchangeDelete {
        vhost: s("/"),
        name: s("amq.fanout"),
        if_unused: false,
    };
    assert_eq!(
        err(&mut catalog, &delete),
        (
            reply_code::ACCESS_REFUSED,
            "deletion of system exchange 'amq.fanout' in vhost '/' not allowed".into()
        )
    );
}

#[test]
fn unknown_exchange_type_is_a_hard_error() {
    let mut catalog = Catalog::new(1);
    let (code, text) = err(&mut catalog, &exchange_declare("x", "foo"));
    assert_eq!(code, reply_code::COMMAND_INVALID);
    assert_eq!(text, "unknown exchange type 'foo'");
    assert!(reply_code::is_hard(code));
    assert!(catalog.exchange(b"/", b"x").is_none());
}

#[test]
fn queue_redeclare_must_be_equivalent() {
    let mut catalog = Catalog::new(4);
    let base = queue_declare("q", CONN_A);
    let created = ok(&mut catalog, &base);
    let MetaOutcome::QueueDeclared { def, created: true } = created else {
        panic!("{created:?}")
    };
    assert!(matches!(
        ok(&mut catalog, &base),
        MetaOutcome::QueueDeclared { created: false, .. }
    ));
    let durable = with_queue(base.clone(), |d, _, _, _| *d = true);
    assert_eq!(
        err(&mut catalog, &durable),
        (
            reply_code::PRECONDITION_FAILED,
            "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'".into()
        )
    );
    let auto_delete = with_queue(base.clone(), |_, _, a, _| *a = true);
    assert_eq!(
        err(&mut catalog, &auto_delete).0,
        reply_code::PRECONDITION_FAILED
    );
    let ttl = with_queue(base.clone(), |_, _, _, args| {
        args.insert("x-message-ttl", FieldValue::I32(10))
    });
    assert_eq!(
        err(&mut catalog, &ttl).1,
        "inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received the value '10' of type 'signedint' but current is none"
    );
    let exclusive = with_queue(base.clone(), |_, e, _, _| *e = true);
    assert_eq!(err(&mut catalog, &exclusive).0, reply_code::RESOURCE_LOCKED);
    // Uncompared arguments and x-queue-type "classic" are equivalent.
    let same = with_queue(base.clone(), |_, _, _, args| {
        args.insert("x-queue-type", longstr("classic"));
        args.insert("x-custom", longstr("anything"));
    });
    let again = ok(&mut catalog, &same);
    assert_eq!(
        again,
        MetaOutcome::QueueDeclared {
            def,
            created: false
        }
    );
}

#[test]
fn integer_widths_are_equivalent_on_redeclare() {
    let mut catalog = Catalog::new(1);
    let op = with_queue(queue_declare("q", CONN_A), |_, _, _, args| {
        args.insert("x-max-length", FieldValue::I64(5))
    });
    ok(&mut catalog, &op);
    let op = with_queue(queue_declare("q", CONN_A), |_, _, _, args| {
        args.insert("x-max-length", FieldValue::I8(5))
    });
    ok(&mut catalog, &op);
}

#[test]
fn exclusive_queues_belong_to_their_connection() {
    let mut catalog = Catalog::new(4);
    let exclusive = with_queue(queue_declare("q", CONN_A), |d, e, _, _| {
        *d = true;
        *e = true;
    });
    let MetaOutcome::QueueDeclared { def, .. } = ok(&mut catalog, &exclusive) else {
        panic!()
    };
    assert_eq!(
        def.shard_id, 0,
        "exclusive queues live on the owner's shard"
    );
    assert!(!def.durable, "exclusive queues are never durable");
    let locked = (
        reply_code::RESOURCE_LOCKED,
        "cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally declared \
         on another connection or the exclusive property value does not match that of the original declaration."
            .to_owned(),
    );
    let other = with_queue(queue_declare("q", CONN_B), |d, e, _, _| {
        *d = true;
        *e = true;
    });
    assert_eq!(err(&mut catalog, &other), locked);
    assert_eq!(err(&mut catalog, &queue_declare("q", CONN_A)), locked);
    assert_eq!(
        catalog
            .check_queue_access(b"/", b"q", CONN_B)
            .map_err(|e| (e.code, e.text))
            .err(),
        Some(locked.clone())
    );
    assert!(catalog.check_queue_access(b"/", b"q", CONN_A).is_ok());
    let mut bind = bind_queue("amq.direct", "q", "k");
    if let MetaOp::Bind(binding) = &mut bind {
        binding.conn = CONN_B;
    }
    assert_eq!(err(&mut catalog, &bind), locked);
    assert_eq!(
        catalog
            .check_queue_access(b"/", b"nope", CONN_A)
            .map_err(|e| e.text)
            .err(),
        Some("no queue 'nope' in vhost '/'".into())
    );
}

#[test]
fn queue_types() {
    let mut catalog = Catalog::new(1);
    let quorum = |name: &str, durable: bool, exclusive: bool, auto_delete: bool| {
        with_queue(queue_declare(name, CONN_A), move |d, e, a, args| {
            *d = durable;
            *e = exclusive;
            *a = auto_delete;
            args.insert("x-queue-type", longstr("quorum"));
        })
    };
    ok(&mut catalog, &quorum("qq", true, false, false));
    assert_eq!(
        err(&mut catalog, &quorum("q1", false, false, false)),
        (
            reply_code::PRECONDITION_FAILED,
            "invalid property 'non-durable' for queue 'q1' in vhost '/'".into()
        )
    );
    assert_eq!(
        err(&mut catalog, &quorum("q2", true, true, false)).1,
        "invalid property 'exclusive-owner' for queue 'q2' in vhost '/'"
    );
    assert_eq!(
        err(&mut catalog, &quorum("q3", true, false, true)).1,
        "invalid property 'auto-delete' for queue 'q3' in vhost '/'"
    );
    let stream = with_queue(queue_declare("s", CONN_A), |d, _, _, args| {
        *d = true;
        args.insert("x-queue-type", longstr("stream"));
    });
    let (code, text) = err(&mut catalog, &stream);
    assert_eq!(code, reply_code::PRECONDITION_FAILED);
    assert!(text.contains("not supported by warren"), "{text}");
    let unknown = with_queue(queue_declare("u", CONN_A), |_, _, _, args| {
        args.insert("x-queue-type", longstr("bogus"))
    });
    assert_eq!(
        err(&mut catalog, &unknown).1,
        "invalid arg 'x-queue-type' for queue 'u' in vhost '/': \"unsupported queue type 'bogus'\""
    );
    // Redeclaring the quorum queue without x-queue-type is not equivalent.
    let plain = with_queue(queue_declare("qq", CONN_A), |d, _, _, _| *d = true);
    assert_eq!(
        err(&mut catalog, &plain).1,
        "inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': received none but current is the value 'quorum' of type 'longstr'"
    );
    assert_eq!(catalog.queues().count(), 1);
}

#[test]
fn bindings_need_both_ends() {
    let mut catalog = Catalog::new(1);
    ok(&mut catalog, &queue_declare("q", CONN_A));
    assert_eq!(
        err(&mut catalog, &bind_queue("nope", "q", "k")),
        (
            reply_code::NOT_FOUND,
            "no exchange 'nope' in vhost '/'".into()
        )
    );
    assert_eq!(
        err(&mut catalog, &bind_queue("amq.direct", "nope", "k")),
        (reply_code::NOT_FOUND, "no queue 'nope' in vhost '/'".into())
    );
    assert_eq!(
        err(&mut catalog, &bind_exchange("amq.direct", "nope")),
        (
            reply_code::NOT_FOUND,
            "no exchange 'nope' in vhost '/'".into()
        )
    );
    // RabbitMQ answers unbind-ok for a missing queue or exchange.
    for unbind in [
        unbind_queue("amq.direct", "nope", "k"),
        unbind_queue("nope", "q", "k"),
    ] {
        assert_eq!(
            ok(&mut catalog, &unbind),
            MetaOutcome::Unbound {
                removed: false,
                exchanges: vec![]
            }
        );
    }
    assert_eq!(
        ok(&mut catalog, &bind_queue("amq.direct", "q", "k")),
        MetaOutcome::Bound { created: true }
    );
    assert_eq!(
        ok(&mut catalog, &bind_queue("amq.direct", "q", "k")),
        MetaOutcome::Bound { created: false }
    );
    let id = catalog.queue(b"/", b"q").map(|d| d.id);
    assert_eq!(route(&catalog, "amq.direct", "k").first().copied(), id);
    assert_eq!(route(&catalog, "", "q").first().copied(), id);
    assert_eq!(
        ok(&mut catalog, &unbind_queue("amq.direct", "q", "k")),
        MetaOutcome::Unbound {
            removed: true,
            exchanges: vec![]
        }
    );
    // Unbinding what is not bound is fine.
    assert_eq!(
        ok(&mut catalog, &unbind_queue("amq.direct", "q", "k")),
        MetaOutcome::Unbound {
            removed: false,
            exchanges: vec![]
        }
    );
    assert!(route(&catalog, "amq.direct", "k").is_empty());
}

#[test]
fn headers_bindings_validate_x_match() {
    let mut catalog = Catalog::new(1);
    ok(&mut catalog, &queue_declare("q", CONN_A));
    let mut op = bind_queue("amq.headers", "q", "");
    if let MetaOp::Bind(binding) = &mut op {
        binding.arguments.insert("x-match", longstr("most"));
    }
    let (code, text) = err(&mut catalog, &op);
    assert_eq!(code, reply_code::PRECONDITION_FAILED);
    assert!(text.starts_with("Invalid x-match field value"), "{text}");
}

#[test]
fn exchange_delete() {
    let mut catalog = Catalog::new(1);
    ok(&mut catalog, &exchange_declare("x", "fanout"));
    ok(&mut catalog, &queue_declare("q", CONN_A));
    ok(&mut catalog, &bind_queue("x", "q", ""));
    let if_unused = MetaOp::ExchangeDelete {
        vhost: s("/"),
        name: s("x"),
        if_unused: true,
    };
    assert_eq!(
        err(&mut catalog, &if_unused),
        (
            reply_code::PRECONDITION_FAILED,
            "exchange 'x' in vhost '/' in use".into()
        )
    );
    let delete = MetaOp::ExchangeDelete {
        vhost: s("/"),
        name: s("x"),
        if_unused: false,
    };
    let MetaOutcome::ExchangeDeleted(deleted) = ok(&mut catalog, &delete) else {
        panic!()
    };
    assert_eq!(deleted.len(), 1);
    assert!(catalog.exchange(b"/", b"x").is_none());
    assert_eq!(catalog.routing(b"/").map(|r| r.binding_count()), Some(0));
    // Deleting a missing exchange is not an error.
    assert_eq!(
        ok(&mut catalog, &delete),
        MetaOutcome::ExchangeDeleted(vec![])
    );
}

#[test]
fn internal_exchanges_refuse_publishes() {
    let mut catalog = Catalog::new(1);
    let mut op = exchange_declare("x", "topic");
    if let MetaOp::ExchangeDeclare { internal, .. } = &mut op {
        *internal = true;
    }
    ok(&mut catalog, &op);
    let refused = catalog
        .exchange_accepts_publish(b"/", b"x")
        .map_err(|e| (e.code, e.text))
        .err();
    assert_eq!(
        refused,
        Some((
            reply_code::ACCESS_REFUSED,
            "cannot publish to internal exchange 'x' in vhost '/'".into()
        ))
    );
    let missing = catalog
        .exchange_accepts_publish(b"/", b"y")
        .map_err(|e| (e.code, e.text))
        .err();
    assert_eq!(
        missing,
        Some((reply_code::NOT_FOUND, "no exchange 'y' in vhost '/'".into()))
    );
    assert!(catalog.exchange_accepts_publish(b"/", b"").is_ok());
    assert!(catalog.exchange_accepts_publish(b"/", b"amq.topic").is_ok());
}

#[test]
fn connection_closed_removes_only_its_exclusive_queues() {
    let mut catalog = Catalog::new(2);
    let exclusive =
        |name: &str, conn| with_queue(queue_declare(name, conn), |_, e, _, _| *e = true);
    ok(&mut catalog, &exclusive("a1", CONN_A));
    ok(&mut catalog, &exclusive("a2", CONN_A));
    ok(&mut catalog, &exclusive("b1", CONN_B));
    ok(&mut catalog, &queue_declare("shared", CONN_A));
    ok(&mut catalog, &bind_queue("amq.fanout", "a1", ""));
    ok(&mut catalog, &bind_queue("amq.fanout", "shared", ""));
    let outcome = ok(&mut catalog, &MetaOp::ConnectionClosed { conn: CONN_A });
    let MetaOutcome::QueueDeleted { queues, exchanges } = outcome else {
        panic!()
    };
    let names: Vec<String> = queues.iter().map(|q| q.name.to_string()).collect();
    assert_eq!(names, vec!["a1", "a2"]);
    assert!(exchanges.is_empty());
    assert!(catalog.queue(b"/", b"b1").is_some());
    let shared = catalog.queue(b"/", b"shared").map(|q| q.id);
    assert_eq!(route(&catalog, "amq.fanout", "").first().copied(), shared);
    assert_eq!(route(&catalog, "amq.fanout", "").len(), 1);
}

#[test]
fn auto_delete_exchanges_go_with_their_last_binding() {
    let mut catalog = Catalog::new(1);
    let mut op = exchange_declare("ad", "fanout");
    if let MetaOp::ExchangeDeclare { auto_delete, .. } = &mut op {
        *auto_delete = true;
    }
    ok(&mut catalog, &op);
    ok(&mut catalog, &queue_declare("q1", CONN_A));
    ok(&mut catalog, &queue_declare("q2", CONN_A));
    ok(&mut catalog, &bind_queue("ad", "q1", ""));
    ok(&mut catalog, &bind_queue("ad", "q2", ""));
    let outcome = ok(&mut catalog, &unbind_queue("ad", "q1", ""));
    assert_eq!(
        outcome,
        MetaOutcome::Unbound {
            removed: true,
            exchanges: vec![]
        }
    );
    let outcome = ok(
        &mut catalog,
        &MetaOp::QueueDelete {
            vhost: s("/"),
            name: s("q2"),
        },
    );
    let MetaOutcome::QueueDeleted { queues, exchanges } = outcome else {
        panic!()
    };
    assert_eq!(queues.len(), 1);
    assert_eq!(
        exchanges
            .iter()
            .map(|x| x.name.to_string())
            .collect::<Vec<_>>(),
        vec!["ad"]
    );
    assert!(catalog.exchange(b"/", b"ad").is_none());
    // Deleting a missing queue is idempotent.
    let again = ok(
        &mut catalog,
        &MetaOp::QueueDelete {
            vhost: s("/"),
            name: s("q2"),
        },
    );
    assert_eq!(
        again,
        MetaOutcome::QueueDeleted {
            queues: vec![],
            exchanges: vec![]
        }
    );
}

#[test]
fn auto_delete_cascades_through_exchange_bindings() {
    let mut catalog = Catalog::new(1);
    for name in ["up", "down"] {
        let mut op = exchange_declare(name, "fanout");
        if let MetaOp::ExchangeDeclare { auto_delete, .. } = &mut op {
            *auto_delete = true;
        }
        ok(&mut catalog, &op);
    }
    ok(&mut catalog, &queue_declare("q", CONN_A));
    ok(&mut catalog, &bind_exchange("up", "down"));
    ok(&mut catalog, &bind_queue("down", "q", ""));
    let outcome = ok(
        &mut catalog,
        &MetaOp::QueueDelete {
            vhost: s("/"),
            name: s("q"),
        },
    );
    let MetaOutcome::QueueDeleted { exchanges, .. } = outcome else {
        panic!()
    };
    let names: Vec<String> = exchanges.iter().map(|x| x.name.to_string()).collect();
    assert_eq!(names, vec!["down", "up"]);
}

#[test]
fn shared_queue_placement_is_stable() {
    // Pinned values: placement must not change across builds or versions.
    assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
    let spread: Vec<ShardId> = ["a", "b", "c", "orders", "payments"]
        .iter()
        .map(|name| queue_shard(b"/", name.as_bytes(), 8))
        .collect();
    assert_eq!(spread, pinned_spread());
    let mut catalog = Catalog::new(8);
    let MetaOutcome::QueueDeclared { def, .. } = ok(&mut catalog, &queue_declare("orders", CONN_B))
    else {
        panic!()
    };
    assert_eq!(def.shard_id, queue_shard(b"/", b"orders", 8));
    assert_eq!(def.id, QueueId(1));
}

fn pinned_spread() -> Vec<ShardId> {
    ["a", "b", "c", "orders", "payments"]
        .iter()
        .map(|name| (reference_fnv(b"/", name.as_bytes()) % 8) as ShardId)
        .collect()
}

/// FNV-1a written out independently, over the same length-prefixed layout.
fn reference_fnv(vhost: &[u8], name: &[u8]) -> u64 {
    let mut bytes = Vec::new();
    for part in [vhost, name] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    bytes.iter().fold(0xcbf29ce484222325u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Everything observable about a catalog, in a canonical order.
fn snapshot(catalog: &Catalog) -> String {
    let mut bindings: Vec<String> = catalog
        .routing(b"/")
        .map(|r| r.bindings().map(|b| format!("{b:?}")).collect())
        .unwrap_or_default();
    bindings.sort();
    format!(
        "{:?}\n{:?}\n{:?}\n{}",
        catalog.exchanges().collect::<Vec<_>>(),
        catalog.queues().collect::<Vec<_>>(),
        bindings,
        catalog.next_queue_id
    )
}

#[test]
fn replicas_applying_the_same_ops_agree() {
    let mut ops = vec![
        exchange_declare("logs", "topic"),
        exchange_declare("bad", "nope"),
        with_queue(queue_declare("ex1", CONN_A), |_, e, _, _| *e = true),
        with_queue(queue_declare("ex2", CONN_A), |_, e, _, _| *e = true),
        queue_declare("shared", CONN_B),
        bind_queue("logs", "ex1", "a.#"),
        bind_queue("logs", "ex2", "*.b"),
        bind_queue("logs", "shared", "#"),
        bind_exchange("amq.fanout", "logs"),
    ];
    let mut ad = exchange_declare("ad", "direct");
    if let MetaOp::ExchangeDeclare { auto_delete, .. } = &mut ad {
        *auto_delete = true;
    }
    ops.push(ad);
    ops.push(bind_queue("ad", "ex1", "k"));
    ops.push(bind_queue("ad", "ex2", "k"));
    ops.push(MetaOp::ConnectionClosed { conn: CONN_A });
    ops.push(queue_declare("ex1", CONN_B));
    let mut first = Catalog::new(4);
    let mut second = Catalog::new(4);
    for op in &ops {
        assert_eq!(first.apply(op), second.apply(op), "{op:?}");
        assert_eq!(snapshot(&first), snapshot(&second));
    }
    assert!(
        first.exchange(b"/", b"ad").is_none(),
        "auto-deleted on connection close"
    );
}

fn user(name: &str, password: &str) -> MetaOp {
    MetaOp::Access(AccessOp::UserPut(User {
        name: name.to_owned(),
        password_hash: PasswordHash::new(password, [9, 8, 7, 6]),
        tags: Vec::new(),
    }))
}

fn permission(vhost: &str, user: &str, configure: &str, write: &str, read: &str) -> MetaOp {
    MetaOp::Access(AccessOp::PermissionSet(PermissionDef {
        user: user.to_owned(),
        vhost: vhost.to_owned(),
        configure: configure.to_owned(),
        write: write.to_owned(),
        read: read.to_owned(),
    }))
}

#[test]
fn guest_exists_at_start_with_full_permissions_on_the_default_vhost() {
    let catalog = Catalog::new(2);
    let guest = catalog.user("guest").expect("guest exists");
    assert!(guest.password_hash.matches("guest"));
    assert_eq!(guest.tags, ["administrator"]);
    let permission = catalog.user_permission("/", "guest").expect("permission");
    assert!(permission.allows(access::Access::Configure, b"anything"));
}

#[test]
fn a_permission_needs_an_existing_user_and_vhost() {
    let mut catalog = Catalog::new(2);
    let refused = catalog.apply(&permission("/", "ann", ".*", ".*", ".*"));
    assert_eq!(refused.map_err(|e| e.code), Err(reply_code::NOT_FOUND));
    catalog.apply(&user("ann", "pw")).expect("user");
    let refused = catalog.apply(&permission("/v", "ann", ".*", ".*", ".*"));
    assert_eq!(refused.map_err(|e| e.code), Err(reply_code::NOT_FOUND));
    catalog
        .apply(&permission("/", "ann", "", "^x", ".*"))
        .expect("set");
    let compiled = catalog.user_permission("/", "ann").expect("compiled");
    assert!(!compiled.allows(access::Access::Configure, b"q"));
    assert!(compiled.allows(access::Access::Write, b"xq"));
}

#[test]
fn deleting_a_user_removes_its_permissions() {
    let mut catalog = Catalog::new(2);
    catalog.apply(&user("ann", "pw")).expect("user");
    catalog
        .apply(&permission("/", "ann", ".*", ".*", ".*"))
        .expect("set");
    let delete = MetaOp::Access(AccessOp::UserDelete {
        name: "ann".to_owned(),
    });
    catalog.apply(&delete).expect("deleted");
    assert!(catalog.user_permission("/", "ann").is_none());
    assert_eq!(
        catalog.apply(&delete).map_err(|e| e.code),
        Err(reply_code::NOT_FOUND)
    );
}

#[test]
fn deleting_a_vhost_removes_its_queues_exchanges_and_permissions() {
    let mut catalog = Catalog::new(2);
    let v = s("v1");
    catalog
        .apply(&MetaOp::VhostAdd { name: v.clone() })
        .expect("added");
    catalog
        .apply(&permission("v1", "guest", ".*", ".*", ".*"))
        .expect("set");
    let mut declare = queue_declare("q", CONN_A);
    if let MetaOp::QueueDeclare { vhost, .. } = &mut declare {
        *vhost = v.clone();
    }
    catalog.apply(&declare).expect("declared");
    let outcome = catalog.apply(&MetaOp::VhostDelete { name: v.clone() });
    let Ok(MetaOutcome::VhostDeleted { vhost, queues }) = outcome else {
        panic!("unexpected {outcome:?}");
    };
    assert_eq!(vhost, v);
    assert_eq!(queues.len(), 1);
    assert!(catalog.queues().next().is_none());
    assert!(catalog.exchange(b"v1", b"amq.direct").is_none());
    assert!(catalog.user_permission("v1", "guest").is_none());
    assert!(catalog.user_permission("/", "guest").is_some());
}

fn policy_op(kind: access::PolicyKind, definition: serde_json::Value) -> MetaOp {
    MetaOp::Access(AccessOp::PolicySet(PolicyDef {
        kind,
        vhost: "/".to_owned(),
        name: "p".to_owned(),
        pattern: "^q".to_owned(),
        apply_to: access::ApplyTo::Queues,
        priority: 1,
        definition: definition.as_object().cloned().unwrap_or_default(),
    }))
}

fn refusal(catalog: &mut Catalog, op: &MetaOp) -> Option<String> {
    catalog.apply(op).err().map(|err| {
        assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
        err.text
    })
}

#[test]
fn a_policy_with_an_unknown_key_is_refused_and_a_valid_one_is_listed() {
    use access::PolicyKind::{Operator, User};
    use serde_json::json;
    let mut catalog = Catalog::new(2);
    // RabbitMQ 3.10's texts, for the management API and rabbitmqctl alike.
    let cases = [
        (
            User,
            json!({"no-such-key": 1}),
            "[{<<\"no-such-key\">>,1}] are not recognised policy settings",
        ),
        (
            User,
            json!({"max-length": "ten"}),
            "<<\"ten\">> is not a valid maximum length",
        ),
        (User, json!({"expires": 0}), "0 is not a valid queue expiry"),
        (
            User,
            json!({"queue-mode": "bogus"}),
            "<<\"bogus\">> is not a valid queue-mode value",
        ),
        (User, json!({}), "no policy provided"),
        (
            Operator,
            json!({"queue-mode": "lazy"}),
            "[{<<\"queue-mode\">>,<<\"lazy\">>}] are not recognised policy settings",
        ),
        (
            Operator,
            json!({"overflow": "drop-head"}),
            "[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings",
        ),
        (
            Operator,
            json!({"max-length": -1}),
            "-1 is not a valid maximum length",
        ),
    ];
    for (kind, definition, text) in cases {
        let refused = refusal(&mut catalog, &policy_op(kind, definition));
        assert_eq!(refused, Some(format!("Validation failed\n\n{text}\n")));
    }
    for mode in ["default", "lazy"] {
        let op = policy_op(User, json!({"max-length": 10, "queue-mode": mode}));
        catalog.apply(&op).expect("valid");
    }
    assert_eq!(catalog.policies(User).count(), 1);
    assert_eq!(catalog.policies(Operator).count(), 0);
}

#[test]
fn an_operator_policy_caps_the_user_policy_and_the_queue_argument_caps_both() {
    use access::PolicyKind::{Operator, User};
    use serde_json::json;
    let mut catalog = Catalog::new(2);
    let user = policy_op(User, json!({"max-length": 50, "expires": 100000}));
    catalog.apply(&user).expect("user policy");
    let operator = policy_op(Operator, json!({"max-length": 5, "message-ttl": 1000}));
    catalog.apply(&operator).expect("operator policy");
    let mut arguments = FieldTable::new();
    arguments.insert("x-max-length", FieldValue::I32(3));
    arguments.insert("x-queue-mode", FieldValue::LongStr("lazy".into()));
    let own = with_queue(queue_declare("q-own", CONN_A), |_, _, _, a| *a = arguments);
    for op in [&own, &queue_declare("q-plain", CONN_A)] {
        catalog.apply(op).expect("declare");
    }
    let queue = |catalog: &Catalog, name: &str| {
        let found = catalog.queue(b"/", name.as_bytes()).expect("declared");
        found.clone()
    };
    let q = queue(&catalog, "q-plain");
    assert_eq!(q.settings.max_length, Some(5));
    assert_eq!(q.settings.message_ttl_ms, Some(1000));
    assert_eq!(q.settings.expires_ms, Some(100000));
    assert_eq!(q.operator_policy.as_ref().map(|p| p.kind), Some(Operator));
    assert_eq!(queue(&catalog, "q-own").settings.max_length, Some(3));
    let clear = MetaOp::Access(AccessOp::PolicyClear {
        kind: Operator,
        vhost: "/".to_owned(),
        name: "p".to_owned(),
    });
    catalog.apply(&clear).expect("cleared");
    let q = queue(&catalog, "q-plain");
    assert_eq!(
        (q.settings.max_length, q.settings.message_ttl_ms),
        (Some(50), None)
    );
    assert!(q.operator_policy.is_none() && q.policy.is_some());
}
