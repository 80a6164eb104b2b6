use super::*;
use crate::ids::ConnectionId;
use crate::protocol::types::FieldTable;

const CONN: ConnectionId = ConnectionId {
    shard_id: 0,
    local_id: 1,
};

fn declare_queue(name: &str, durable: bool, exclusive: bool) -> MetaOp {
    MetaOp::QueueDeclare {
        vhost: "/".into(),
        name: name.into(),
        passive: false,
        durable,
        exclusive,
        auto_delete: false,
        arguments: FieldTable::new(),
        owner: CONN,
        owner_shard: 0,
        server_named: false,
    }
}

fn declare_exchange(name: &str, durable: bool, auto_delete: bool) -> MetaOp {
    MetaOp::ExchangeDeclare {
        vhost: "/".into(),
        name: name.into(),
        kind: "fanout".into(),
        passive: false,
        durable,
        auto_delete,
        internal: false,
        arguments: FieldTable::new(),
    }
}

fn bind(source: &str, queue: &str) -> BindingOp {
    BindingOp {
        vhost: "/".into(),
        source: source.into(),
        destination: DestinationName::Queue(queue.into()),
        routing_key: "k".into(),
        arguments: FieldTable::new(),
        conn: CONN,
    }
}

/// Applies `ops` to a catalog as the coordinator does, keeping the durable
/// set beside it.
fn run(ops: &[MetaOp]) -> (Catalog, Definitions) {
    let mut catalog = Catalog::new(2);
    let mut live = Definitions::default();
    for op in ops {
        let outcome = catalog.apply(op).expect("a valid change");
        for change in durable_changes(op, &outcome, &catalog) {
            live.apply(&change);
        }
    }
    (catalog, live)
}

/// What a restart with `shard_count` shards rebuilds from `live`.
fn replay(live: &Definitions, shard_count: usize) -> Catalog {
    let mut catalog = Catalog::new(shard_count);
    for op in live.ops(shard_count) {
        catalog.apply(&op).expect("a replayed declare applies");
    }
    catalog
}

fn queue_names(catalog: &Catalog) -> Vec<String> {
    let mut names: Vec<_> = catalog.queues().map(|q| q.name.to_string()).collect();
    names.sort();
    names
}

#[test]
fn only_durable_queues_and_exchanges_and_their_bindings_come_back() {
    let (_, live) = run(&[
        declare_queue("durable", true, false),
        declare_queue("transient", false, false),
        declare_queue("exclusive", true, true),
        declare_exchange("dx", true, false),
        declare_exchange("tx", false, false),
        MetaOp::Bind(bind("dx", "durable")),
        MetaOp::Bind(bind("dx", "transient")),
        MetaOp::Bind(bind("tx", "durable")),
        MetaOp::Bind(bind("amq.fanout", "durable")),
    ]);
    let catalog = replay(&live, 2);
    assert_eq!(queue_names(&catalog), ["durable"]);
    assert!(catalog.exchange(b"/", b"dx").is_some());
    assert!(catalog.exchange(b"/", b"tx").is_none());
    let table = catalog.routing(b"/").expect("vhost /");
    assert_eq!(table.bindings().count(), 2, "dx and amq.fanout to durable");
}

#[test]
fn deletes_stick_and_take_their_bindings() {
    let (_, live) = run(&[
        declare_queue("q", true, false),
        declare_queue("gone", true, false),
        declare_exchange("x", true, false),
        MetaOp::Bind(bind("x", "q")),
        MetaOp::Bind(bind("x", "gone")),
        MetaOp::QueueDelete {
            vhost: "/".into(),
            name: "gone".into(),
        },
        MetaOp::Unbind(bind("x", "q")),
    ]);
    let catalog = replay(&live, 2);
    assert_eq!(queue_names(&catalog), ["q"]);
    assert_eq!(catalog.routing(b"/").expect("/").bindings().count(), 0);
}

#[test]
fn an_auto_delete_exchange_deleted_by_its_last_unbind_stays_deleted() {
    let (catalog, live) = run(&[
        declare_queue("q", true, false),
        declare_exchange("ax", true, true),
        MetaOp::Bind(bind("ax", "q")),
        MetaOp::Unbind(bind("ax", "q")),
    ]);
    assert!(catalog.exchange(b"/", b"ax").is_none());
    assert!(replay(&live, 2).exchange(b"/", b"ax").is_none());
}

#[test]
fn replay_does_not_auto_delete_what_lost_transient_bindings() {
    // ax keeps a durable binding after its transient one goes with its
    // queue; after a restart it must still be there, bound.
    let (_, live) = run(&[
        declare_queue("q", true, false),
        declare_queue("t", false, false),
        declare_exchange("ax", true, true),
        MetaOp::Bind(bind("ax", "q")),
        MetaOp::Bind(bind("ax", "t")),
        MetaOp::QueueDelete {
            vhost: "/".into(),
            name: "t".into(),
        },
    ]);
    let catalog = replay(&live, 2);
    assert!(catalog.exchange(b"/", b"ax").is_some());
    assert_eq!(catalog.routing(b"/").expect("/").bindings().count(), 1);
}

#[test]
fn deleting_guest_and_the_default_vhost_sticks() {
    let (_, live) = run(&[
        MetaOp::VhostAdd { name: "v".into() },
        MetaOp::Access(AccessOp::UserDelete {
            name: GUEST_USER.into(),
        }),
        MetaOp::VhostDelete { name: "/".into() },
    ]);
    let catalog = replay(&live, 2);
    assert!(catalog.user(GUEST_USER).is_none());
    assert!(!catalog.has_vhost(b"/"));
    assert!(catalog.has_vhost(b"v"));
}

#[test]
fn a_first_start_has_guest_and_the_default_vhost() {
    let catalog = replay(&Definitions::default(), 3);
    assert!(catalog.user(GUEST_USER).is_some());
    assert!(catalog.user_permission("/", GUEST_USER).is_some());
    assert!(catalog.has_vhost(b"/"));
}

#[test]
fn queues_are_placed_by_the_current_shard_count() {
    let names: Vec<String> = (0..16).map(|i| format!("q{i}")).collect();
    let ops: Vec<MetaOp> = names
        .iter()
        .map(|n| declare_queue(n, true, false))
        .collect();
    let (_, live) = run(&ops);
    for shard_count in [1, 3] {
        let catalog = replay(&live, shard_count);
        for q in catalog.queues() {
            let expected = queue_shard(q.vhost.as_bytes(), q.name.as_bytes(), shard_count);
            assert_eq!(q.shard_id, expected, "{} with {shard_count} shards", q.name);
        }
        assert_eq!(catalog.queues().count(), names.len());
    }
}

#[test]
fn a_server_named_durable_queue_comes_back_on_its_hash_shard() {
    let mut op = declare_queue("amq.gen-abc", true, false);
    if let MetaOp::QueueDeclare {
        server_named,
        owner_shard,
        ..
    } = &mut op
    {
        *server_named = true;
        *owner_shard = 1;
    }
    let (_, live) = run(&[op]);
    let catalog = replay(&live, 4);
    let q = catalog.queue(b"/", b"amq.gen-abc").expect("recovered");
    assert_eq!(q.shard_id, queue_shard(b"/", b"amq.gen-abc", 4));
}

#[test]
fn a_delayed_exchange_comes_back_delayed_and_policies_apply_again() {
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-delayed-type",
        crate::protocol::FieldValue::LongStr("topic".into()),
    );
    let delayed = MetaOp::ExchangeDeclare {
        vhost: "/".into(),
        name: "later".into(),
        kind: "x-delayed-message".into(),
        passive: false,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments,
    };
    let definition = serde_json::json!({"max-length": 3});
    let policy = crate::catalog::access::PolicyDef {
        kind: crate::catalog::access::PolicyKind::User,
        vhost: "/".to_owned(),
        name: "cap".to_owned(),
        pattern: "^durable$".to_owned(),
        apply_to: crate::catalog::access::ApplyTo::Queues,
        priority: 0,
        definition: definition.as_object().cloned().unwrap_or_default(),
    };
    let (_, live) = run(&[
        delayed,
        declare_queue("durable", true, false),
        MetaOp::Access(AccessOp::PolicySet(policy)),
    ]);
    let catalog = replay(&live, 2);
    let exchange = catalog.exchange(b"/", b"later").expect("the exchange");
    assert_eq!(exchange.type_name(), "x-delayed-message");
    assert_eq!(exchange.kind, crate::routing::ExchangeKind::Topic);
    let queue = catalog.queue(b"/", b"durable").expect("the queue");
    assert_eq!(queue.settings.max_length, Some(3));
}
