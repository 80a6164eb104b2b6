//! Topic routing as the number of bindings grows: 1, 100, 10k and 100k
//! seeded random patterns (with `*` and `#`) on one topic exchange, routed
//! through [`RoutingTable::route`] (the compiled trie) and, for contrast,
//! through a naive scan that tests every binding's pattern in turn.
//!
//! Before timing each size, the bench checks that both agree on every key
//! and prints the trie's allocations per route call (which must be 0: its
//! scratch lives in the table) and the average number of queues matched.
//! The seed is printed and can be given back through `WARREN_BENCH_SEED`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren::ids::QueueId;
use warren::protocol::{FieldTable, ShortStr};
use warren::routing::topic::words;
use warren::routing::{Destination, ExchangeKind, ExchangeRouting, MessageFields, RoutingTable};

mod common;

const EXCHANGE: &str = "bench.topic";
const BINDING_COUNTS: [usize; 4] = [1, 100, 10_000, 100_000];
const KEY_COUNT: usize = 256;
const SEED_DEFAULT: u64 = 0x5eed_7091c;
/// Words per level: a small vocabulary so that patterns share prefixes and
/// keys match some patterns, as real topic schemes do.
const VOCABULARY: [&str; 32] = [
    "orders", "payments", "users", "stock", "audit", "metrics", "eu", "us", "apac", "latam", "web",
    "mobile", "batch", "created", "updated", "deleted", "shipped", "refunded", "info", "warn",
    "error", "debug", "kern", "auth", "cron", "mail", "daemon", "v1", "v2", "high", "low", "misc",
];

fn seed() -> u64 {
    std::env::var("WARREN_BENCH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(SEED_DEFAULT)
}

fn random_word(rng: &mut StdRng) -> &'static str {
    VOCABULARY[rng.gen_range(0..VOCABULARY.len())]
}

/// The words of a pattern of 1 to 5 words, each `*` (10%), `#` (3%) or a
/// vocabulary word.
fn random_pattern(rng: &mut StdRng) -> Vec<&'static [u8]> {
    let word_count = rng.gen_range(1..=5);
    (0..word_count)
        .map(|_| match rng.gen_range(0..100) {
            0..=9 => b"*".as_slice(),
            10..=12 => b"#".as_slice(),
            _ => random_word(rng).as_bytes(),
        })
        .collect()
}

/// A routing key of 1 to 5 vocabulary words.
fn random_key(rng: &mut StdRng) -> String {
    let word_count = rng.gen_range(1..=5);
    let words: Vec<&str> = (0..word_count).map(|_| random_word(rng)).collect();
    words.join(".")
}

/// Does `pattern` match `key`? Both are split into words. Glob matching
/// with words for characters (`#` is glob's `*`, `*` is glob's `?`), with
/// the classic single backtrack point: after a mismatch, let the last `#`
/// swallow one more word.
fn naive_matches(pattern: &[&[u8]], key: &[&[u8]]) -> bool {
    let (mut p, mut k) = (0, 0);
    // After the last `#` seen: (pattern index past it, key words it took
    // up to).
    let mut backtrack: Option<(usize, usize)> = None;
    while k < key.len() {
        match pattern.get(p) {
            Some(&word) if word == b"#" => {
                backtrack = Some((p + 1, k));
                p += 1;
            }
            Some(&word) if word == b"*" || word == key[k] => {
                p += 1;
                k += 1;
            }
            _ => {
                let Some((after_hash, taken)) = backtrack else {
                    return false;
                };
                backtrack = Some((after_hash, taken + 1));
                (p, k) = (after_hash, taken + 1);
            }
        }
    }
    pattern[p..].iter().all(|&word| word == b"#")
}

/// Every binding's pattern, as words, with its queue.
struct NaiveScan {
    bindings: Vec<(Vec<&'static [u8]>, QueueId)>,
}

impl NaiveScan {
    /// Appends the queues `key` routes to, sorted and each once, as
    /// `RoutingTable::route` does.
    fn route(&self, key: &[&[u8]], out: &mut Vec<QueueId>) {
        for (pattern, queue) in &self.bindings {
            if naive_matches(pattern, key) {
                out.push(*queue);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

struct Setup {
    table: RoutingTable,
    naive: NaiveScan,
    keys: Vec<String>,
}

/// One topic exchange with `binding_count` bindings, each to its own queue.
fn setup(binding_count: usize, rng: &mut StdRng) -> Setup {
    let mut table = RoutingTable::new();
    table.add_exchange(
        ShortStr::from(EXCHANGE),
        ExchangeRouting::new(ExchangeKind::Topic, None),
    );
    let mut naive = NaiveScan {
        bindings: Vec::with_capacity(binding_count),
    };
    for index in 0..binding_count {
        let queue = QueueId(index as u64);
        let pattern = random_pattern(rng);
        table.add_queue(ShortStr::from(format!("q{index}")), queue);
        table.bind(
            EXCHANGE.as_bytes(),
            Destination::Queue(queue),
            ShortStr::from_bytes(pattern.join(&b'.').into()),
            FieldTable::new(),
        );
        naive.bindings.push((pattern, queue));
    }
    let keys = (0..KEY_COUNT).map(|_| random_key(rng)).collect();
    Setup { table, naive, keys }
}

/// Checks the trie against the naive scan on every key; returns the
/// average number of queues a key routes to.
fn check_agreement(setup: &Setup) -> f64 {
    let (mut trie_out, mut naive_out) = (Vec::new(), Vec::new());
    let mut matched = 0;
    for key in &setup.keys {
        trie_out.clear();
        naive_out.clear();
        setup.table.route(
            EXCHANGE.as_bytes(),
            key.as_bytes(),
            MessageFields::default(),
            &mut trie_out,
        );
        let key_words: Vec<&[u8]> = words(key.as_bytes()).collect();
        setup.naive.route(&key_words, &mut naive_out);
        assert_eq!(trie_out, naive_out, "trie and naive scan disagree on {key}");
        matched += trie_out.len();
    }
    matched as f64 / setup.keys.len() as f64
}

fn topic_routing(c: &mut Criterion) {
    let seed = seed();
    println!("topic bench seed: {seed} (set WARREN_BENCH_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut group = c.benchmark_group("topic_route");
    group.throughput(Throughput::Elements(1));
    for binding_count in BINDING_COUNTS {
        let setup = setup(binding_count, &mut rng);
        let matched = check_agreement(&setup);
        let (keys, table) = (&setup.keys, &setup.table);
        let mut out = Vec::new();
        let mut next_key = keys.iter().cycle();
        let mut route_trie = || {
            let key = next_key.next().map_or(&[][..], |key| key.as_bytes());
            out.clear();
            table.route(EXCHANGE.as_bytes(), key, MessageFields::default(), &mut out);
            black_box(&out);
        };
        // Two passes over the keys warm the scratch for the longest key.
        for _ in 0..2 * keys.len() {
            route_trie();
        }
        let allocations = common::allocations_per_call(10 * keys.len() as u64, &mut route_trie);
        println!(
            "topic_route/trie/{binding_count}: {allocations:.2} allocations per route, \
             {matched:.1} queues matched per key"
        );
        group.bench_function(BenchmarkId::new("trie", binding_count), |b| {
            b.iter(&mut route_trie)
        });

        let split_keys: Vec<Vec<&[u8]>> = keys
            .iter()
            .map(|key| words(key.as_bytes()).collect())
            .collect();
        let mut next_split_key = split_keys.iter().cycle();
        let mut naive_out = Vec::new();
        group.bench_function(BenchmarkId::new("naive_scan", binding_count), |b| {
            b.iter(|| {
                let key = next_split_key.next().map_or(&[][..], Vec::as_slice);
                naive_out.clear();
                setup.naive.route(key, &mut naive_out);
                black_box(&naive_out);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // The naive scan over 100k bindings takes milliseconds per call.
    config = Criterion::default().sample_size(20);
    targets = topic_routing
}
criterion_main!(benches);
