use super::*;
use crate::protocol::types::{FieldValue, LongStr};

fn q(id: u64) -> Destination {
    Destination::Queue(QueueId(id))
}

fn x(name: &str) -> Destination {
    Destination::Exchange(ShortStr::from(name))
}

fn route(table: &RoutingTable, exchange: &str, key: &str) -> Vec<u64> {
    route_with(table, exchange, key, None)
}

fn route_with(
    table: &RoutingTable,
    exchange: &str,
    key: &str,
    headers: Option<&FieldTable>,
) -> Vec<u64> {
    let mut out = Vec::new();
    let fields = MessageFields {
        headers,
        ..MessageFields::default()
    };
    table.route(exchange.as_bytes(), key.as_bytes(), fields, &mut out);
    out.into_iter().map(|id| id.0).collect()
}

fn bind(table: &mut RoutingTable, source: &str, destination: Destination, key: &str) -> bool {
    table.bind(
        source.as_bytes(),
        destination,
        ShortStr::from(key),
        FieldTable::new(),
    )
}

fn table_with(exchanges: &[(&str, ExchangeKind)]) -> RoutingTable {
    let mut table = RoutingTable::new();
    for (name, kind) in exchanges {
        table.add_exchange(ShortStr::from(*name), ExchangeRouting::new(*kind, None));
    }
    table
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let mut table = table_with(&[("", ExchangeKind::Direct)]);
    table.add_queue(ShortStr::from("orders"), QueueId(7));
    assert_eq!(route(&table, "", "orders"), vec![7]);
    assert!(route(&table, "", "other").is_empty());
    table.remove_queue(b"orders", QueueId(7));
    assert!(route(&table, "", "orders").is_empty());
}

#[test]
fn direct_fanout_topic_route() {
    let mut table = table_with(&[
        ("d", ExchangeKind::Direct),
        ("f", ExchangeKind::Fanout),
        ("t", ExchangeKind::Topic),
    ]);
    assert!(bind(&mut table, "d", q(1), "k"));
    assert!(bind(&mut table, "d", q(2), "k"));
    assert!(bind(&mut table, "d", q(3), "other"));
    assert!(bind(&mut table, "f", q(1), "ignored"));
    assert!(bind(&mut table, "f", q(2), ""));
    assert!(bind(&mut table, "t", q(1), "*.orange.*"));
    assert!(bind(&mut table, "t", q(2), "lazy.#"));
    assert_eq!(route(&table, "d", "k"), vec![1, 2]);
    assert_eq!(route(&table, "f", "anything"), vec![1, 2]);
    assert_eq!(route(&table, "t", "lazy.orange.elephant"), vec![1, 2]);
    assert_eq!(route(&table, "t", "lazy.brown.fox"), vec![2]);
    assert!(route(&table, "missing", "k").is_empty());
}

#[test]
fn binding_identity_includes_arguments() {
    let mut table = table_with(&[("d", ExchangeKind::Direct)]);
    assert!(bind(&mut table, "d", q(1), "k"));
    assert!(!bind(&mut table, "d", q(1), "k"));
    let mut arguments = FieldTable::new();
    arguments.insert("a", FieldValue::I32(1));
    assert!(table.bind(b"d", q(1), ShortStr::from("k"), arguments.clone()));
    // Two bindings, one queue: delivered once.
    assert_eq!(route(&table, "d", "k"), vec![1]);
    assert_eq!(table.binding_count(), 2);
    assert!(table.unbind(b"d", &q(1), b"k", &arguments));
    assert!(!table.unbind(b"d", &q(1), b"k", &arguments));
    assert_eq!(route(&table, "d", "k"), vec![1]);
    assert!(table.unbind(b"d", &q(1), b"k", &FieldTable::new()));
    assert!(route(&table, "d", "k").is_empty());
    assert!(!table.has_bindings_from(b"d"));
}

#[test]
fn queues_are_deduplicated_across_bindings_and_exchanges() {
    let mut table = table_with(&[("t", ExchangeKind::Topic), ("f", ExchangeKind::Fanout)]);
    bind(&mut table, "t", q(1), "a.*");
    bind(&mut table, "t", q(1), "#");
    bind(&mut table, "t", x("f"), "a.b");
    bind(&mut table, "f", q(1), "");
    bind(&mut table, "f", q(2), "");
    assert_eq!(route(&table, "t", "a.b"), vec![1, 2]);
}

#[test]
fn exchange_to_exchange_cycles_terminate() {
    let mut table = table_with(&[("a", ExchangeKind::Fanout), ("b", ExchangeKind::Fanout)]);
    bind(&mut table, "a", x("b"), "");
    bind(&mut table, "b", x("a"), "");
    bind(&mut table, "a", x("a"), "");
    bind(&mut table, "b", q(9), "");
    assert_eq!(route(&table, "a", ""), vec![9]);
    assert_eq!(route(&table, "b", ""), vec![9]);
}

#[test]
fn alternate_exchange_takes_unmatched_messages() {
    let mut table = RoutingTable::new();
    table.add_exchange(
        ShortStr::from("main"),
        ExchangeRouting::new(ExchangeKind::Direct, Some(ShortStr::from("ae"))),
    );
    table.add_exchange(
        ShortStr::from("ae"),
        ExchangeRouting::new(ExchangeKind::Fanout, Some(ShortStr::from("main"))),
    );
    bind(&mut table, "main", q(1), "known");
    bind(&mut table, "ae", q(2), "");
    assert_eq!(route(&table, "main", "known"), vec![1]);
    assert_eq!(route(&table, "main", "unknown"), vec![2]);
    // The AE's own AE points back: no loop, and nothing when the AE is empty.
    table.unbind(b"ae", &q(2), b"", &FieldTable::new());
    assert!(route(&table, "main", "unknown").is_empty());
    // An alternate exchange that does not exist is ignored.
    table.remove_exchange(b"ae");
    assert!(route(&table, "main", "unknown").is_empty());
}

#[test]
fn alternate_exchange_is_not_used_when_an_exchange_binding_matched() {
    let mut table = RoutingTable::new();
    table.add_exchange(
        ShortStr::from("main"),
        ExchangeRouting::new(ExchangeKind::Fanout, Some(ShortStr::from("ae"))),
    );
    table.add_exchange(
        ShortStr::from("empty"),
        ExchangeRouting::new(ExchangeKind::Fanout, None),
    );
    table.add_exchange(
        ShortStr::from("ae"),
        ExchangeRouting::new(ExchangeKind::Fanout, None),
    );
    bind(&mut table, "main", x("empty"), "");
    bind(&mut table, "ae", q(2), "");
    // RabbitMQ's rule: the AE is used when the exchange's own bindings
    // matched nothing, not when the message ends in no queue.
    assert!(route(&table, "main", "k").is_empty());
}

fn longstr(text: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(text))
}

#[test]
fn headers_exchange_routes_and_needs_headers_follows_bindings() {
    let mut table = table_with(&[
        ("h", ExchangeKind::Headers),
        ("f", ExchangeKind::Fanout),
        ("d", ExchangeKind::Direct),
    ]);
    let mut arguments = FieldTable::new();
    arguments.insert("x-match", longstr("any"));
    arguments.insert("kind", longstr("pdf"));
    assert!(table.bind(b"h", q(1), ShortStr::from(""), arguments));
    bind(&mut table, "f", x("h"), "");
    let mut headers = FieldTable::new();
    headers.insert("kind", longstr("pdf"));
    assert_eq!(route_with(&table, "f", "", Some(&headers)), vec![1]);
    assert!(route_with(&table, "f", "", None).is_empty());
    assert!(table.needs_headers(b"f"));
    assert!(table.needs_headers(b"h"));
    assert!(!table.needs_headers(b"d"));
    assert!(!table.needs_headers(b""));
    table.unbind(b"f", &x("h"), b"", &FieldTable::new());
    assert!(!table.needs_headers(b"f"));
}

#[test]
fn removing_a_queue_drops_its_bindings_and_reports_emptied_sources() {
    let mut table = table_with(&[("a", ExchangeKind::Direct), ("b", ExchangeKind::Fanout)]);
    bind(&mut table, "a", q(1), "k");
    bind(&mut table, "a", q(2), "k");
    bind(&mut table, "b", q(1), "");
    let emptied = table.remove_queue(b"q1", QueueId(1));
    assert_eq!(emptied, vec![ShortStr::from("b")]);
    assert_eq!(route(&table, "a", "k"), vec![2]);
    assert!(table.has_bindings_from(b"a"));
    assert!(!table.has_bindings_from(b"b"));
    assert_eq!(table.bindings().count(), 1);
}

#[test]
fn removing_an_exchange_drops_bindings_both_ways() {
    let mut table = table_with(&[("a", ExchangeKind::Direct), ("b", ExchangeKind::Fanout)]);
    bind(&mut table, "a", x("b"), "k");
    bind(&mut table, "b", q(1), "");
    assert_eq!(route(&table, "a", "k"), vec![1]);
    let emptied = table.remove_exchange(b"b");
    assert_eq!(emptied, vec![ShortStr::from("a")]);
    assert_eq!(table.binding_count(), 0);
    assert!(route(&table, "a", "k").is_empty());
    // A new exchange reusing the slot does not inherit old bindings.
    table.add_exchange(
        ShortStr::from("c"),
        ExchangeRouting::new(ExchangeKind::Fanout, None),
    );
    assert!(route(&table, "c", "").is_empty());
    assert!(bind(&mut table, "a", x("c"), "k"));
    assert!(!bind(&mut table, "a", x("missing"), "k"));
}

#[test]
fn bindings_lists_every_binding() {
    let mut table = table_with(&[("a", ExchangeKind::Topic)]);
    bind(&mut table, "a", q(1), "x.#");
    bind(&mut table, "a", q(2), "y.*");
    let mut listed: Vec<(String, String)> = table
        .bindings()
        .map(|b| (b.source.to_string(), b.routing_key.to_string()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("a".into(), "x.#".into()), ("a".into(), "y.*".into())]
    );
}

// Trap: a matcher that used `entry()` on lookup would insert an empty entry
// for every key ever published; routing must only read.
#[test]
fn routing_an_unbound_key_does_not_grow_the_binding_table() {
    let mut table = table_with(&[("d", ExchangeKind::Direct), ("t", ExchangeKind::Topic)]);
    table.add_exchange(
        ShortStr::from(""),
        ExchangeRouting::new(ExchangeKind::Direct, None),
    );
    bind(&mut table, "d", q(1), "bound");
    bind(&mut table, "t", q(1), "a.*.c");
    let direct_keys =
        |table: &RoutingTable| match table.slot_of(b"d").and_then(|s| table.exchange(s)) {
            Some(Exchange {
                matcher: Matcher::Direct(keys),
                ..
            }) => keys.len(),
            _ => usize::MAX,
        };
    let topic_nodes =
        |table: &RoutingTable| match table.slot_of(b"t").and_then(|s| table.exchange(s)) {
            Some(Exchange {
                matcher: Matcher::Topic(trie),
                ..
            }) => trie.node_count(),
            _ => usize::MAX,
        };
    let (keys_before, nodes_before) = (direct_keys(&table), topic_nodes(&table));
    for i in 0..1000 {
        let key = format!("unbound.{i}.key");
        route(&table, "d", &key);
        route(&table, "t", &key);
        route(&table, "", &key);
    }
    assert_eq!(direct_keys(&table), keys_before);
    assert_eq!(topic_nodes(&table), nodes_before);
    assert_eq!(table.binding_count(), 2);
    assert_eq!(table.queues.len(), 0);
    assert_eq!(table.sources_of.len(), 1);
}

/// Counts allocations made by the current thread, so the check below is not
/// disturbed by tests running in parallel.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local that never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `realloc`'s contract, passed on as is.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(|n| n.get())
}

#[test]
fn warmed_routing_does_not_allocate() {
    let mut table = RoutingTable::new();
    table.add_exchange(
        ShortStr::from(""),
        ExchangeRouting::new(ExchangeKind::Direct, None),
    );
    table.add_exchange(
        ShortStr::from("t"),
        ExchangeRouting::new(ExchangeKind::Topic, Some(ShortStr::from("ae"))),
    );
    table.add_exchange(
        ShortStr::from("ae"),
        ExchangeRouting::new(ExchangeKind::Fanout, None),
    );
    table.add_exchange(
        ShortStr::from("d"),
        ExchangeRouting::new(ExchangeKind::Direct, None),
    );
    table.add_queue(ShortStr::from("q1"), QueueId(1));
    bind(&mut table, "t", q(1), "#.a.#");
    bind(&mut table, "t", q(2), "*.*.a");
    bind(&mut table, "t", x("d"), "x.#");
    bind(&mut table, "d", q(3), "x.a");
    bind(&mut table, "ae", q(4), "");
    for (name, hash_on) in [
        ("ch", HashOn::RoutingKey),
        ("ch-header", HashOn::Header(ShortStr::from("h"))),
    ] {
        let routing = ExchangeRouting {
            hash_on,
            ..ExchangeRouting::new(ExchangeKind::ConsistentHash, None)
        };
        table.add_exchange(ShortStr::from(name), routing);
        bind(&mut table, name, q(5), "2");
        bind(&mut table, name, q(6), "3");
    }
    let mut headers = FieldTable::new();
    headers.insert("h", longstr("v"));
    let mut properties = bytes::BytesMut::new();
    crate::protocol::properties::BasicProperties {
        headers: Some(headers),
        ..Default::default()
    }
    .encode(&mut properties);
    let properties = properties.freeze();
    let fields = MessageFields {
        properties: Some(&properties),
        ..MessageFields::default()
    };
    let mut out = Vec::with_capacity(16);
    let publishes: [(&[u8], &[u8]); 6] = [
        (b"t", b"x.a"),
        (b"t", b"x.y.a"),
        (b"t", b"none"),
        (b"", b"q1"),
        (b"ch", b"some key"),
        (b"ch-header", b"k"),
    ];
    for (exchange, key) in publishes {
        table.route(exchange, key, fields, &mut out);
        assert!(!out.is_empty(), "{exchange:?} routes");
        out.clear();
    }
    let before = allocations();
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(allocations() - before, 1, "the counter counts");
    let before = allocations();
    for _ in 0..100 {
        for (exchange, key) in publishes {
            table.route(exchange, key, fields, &mut out);
            assert!(!table.needs_headers(exchange));
            out.clear();
        }
    }
    assert_eq!(allocations() - before, 0, "route allocated in steady state");
}
