//! Exchanges and bindings of one vhost, compiled for routing a publish.
//!
//! Owns: the [`RoutingTable`]: which exchanges exist (name, type, alternate
//! exchange), every binding between them and queues, and the per-type
//! matchers built from those bindings (a key map for direct, a list for
//! fanout, a [`topic::TopicTrie`] for topic, a scan over compiled
//! [`headers::HeadersBinding`]s for headers, a [`consistent_hash::HashRing`]
//! for x-consistent-hash). The default exchange `""`
//! routes by the implicit binding of every queue under its own name.
//!
//! It must not validate: the catalog checks names, types, permissions and
//! existence and then applies changes here. It knows queues only by
//! [`QueueId`] and never touches messages.
//!
//! Invariants:
//! - Binding identity is (source, destination, routing key, arguments);
//!   `bind` of a present binding and `unbind` of an absent one change nothing.
//! - Every compiled target corresponds to exactly one binding, and a binding
//!   to an exchange exists only while that exchange does: removing an
//!   exchange or a queue removes every binding to it.
//! - `route` allocates nothing in steady state (scratch buffers live in the
//!   table and are reused; see [`RoutingTable::route`]) and never inserts:
//!   routing an unbound key leaves the table as it was.
//! - Routing follows exchange-to-exchange bindings and alternate exchanges
//!   visiting each exchange at most once, so cycles terminate.

pub mod consistent_hash;
pub mod delayed;
pub mod headers;
pub(crate) mod sender_selected;
pub mod topic;

use std::cell::Cell;

use bytes::Bytes;

use crate::ids::QueueId;
use crate::protocol::types::{FieldTable, ShortStr};

use consistent_hash::{HashOn, HashRing};
use headers::HeadersBinding;
use topic::{TopicScratch, TopicTrie};

/// The hash map used throughout routing: hashbrown with ahash.
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, ahash::RandomState>;

/// The exchange types warren implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// RabbitMQ's rabbitmq_consistent_hash_exchange plugin.
    ConsistentHash,
}

impl ExchangeKind {
    /// Parses the type name of exchange.declare; `None` for types warren
    /// does not know.
    pub fn parse(name: &[u8]) -> Option<ExchangeKind> {
        match name {
            b"direct" => Some(ExchangeKind::Direct),
            b"fanout" => Some(ExchangeKind::Fanout),
            b"topic" => Some(ExchangeKind::Topic),
            b"headers" => Some(ExchangeKind::Headers),
            b"x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
        }
    }
}

/// How an exchange routes: its type and what the type reads from the
/// exchange's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeRouting {
    pub kind: ExchangeKind,
    /// In effect: the exchange's own argument, else its policy's.
    pub(crate) alternate_exchange: Option<ShortStr>,
    /// x-consistent-hash only.
    pub(crate) hash_on: HashOn,
}

impl ExchangeRouting {
    pub fn new(kind: ExchangeKind, alternate_exchange: Option<ShortStr>) -> ExchangeRouting {
        ExchangeRouting {
            kind,
            alternate_exchange,
            hash_on: HashOn::RoutingKey,
        }
    }
}

/// What routing may read besides the routing key.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageFields<'a> {
    /// Decoded headers, read by headers exchanges only (see
    /// [`RoutingTable::needs_headers`]).
    pub headers: Option<&'a FieldTable>,
    /// The raw properties, where a consistent-hash exchange finds the
    /// header or property it hashes on without decoding.
    pub properties: Option<&'a Bytes>,
    /// The message's first routing key, when it is routed under several
    /// (CC and BCC): a consistent-hash exchange hashes this one whatever
    /// key it is routing, as the plugin hashes the first of the message's
    /// routing keys, so a message reaches one of its queues.
    pub(crate) first_routing_key: Option<&'a [u8]>,
}

/// Where a binding delivers: a queue, or another exchange (exchange.bind).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(QueueId),
    Exchange(ShortStr),
}

/// One binding, for listing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BindingView<'a> {
    pub source: &'a ShortStr,
    pub destination: &'a Destination,
    pub routing_key: &'a ShortStr,
    pub arguments: &'a FieldTable,
}

/// Index of an exchange in [`RoutingTable::slots`].
pub(crate) type Slot = u32;

/// A compiled binding's target: what a match yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Queue(QueueId),
    Exchange(Slot),
}

/// The per-type structure that answers "which targets match this key".
#[derive(Debug)]
enum Matcher {
    /// Routing key -> one target per binding with that key.
    Direct(Map<ShortStr, Vec<Target>>),
    Fanout(Vec<Target>),
    Topic(TopicTrie<Target>),
    Headers(Vec<(HeadersBinding, Target)>),
    ConsistentHash(HashRing<Target>),
}

impl Matcher {
    fn new(kind: ExchangeKind, hash_on: HashOn) -> Matcher {
        match kind {
            ExchangeKind::Direct => Matcher::Direct(Map::default()),
            ExchangeKind::Fanout => Matcher::Fanout(Vec::new()),
            ExchangeKind::Topic => Matcher::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Matcher::Headers(Vec::new()),
            ExchangeKind::ConsistentHash => Matcher::ConsistentHash(HashRing::new(hash_on)),
        }
    }

    fn insert(&mut self, routing_key: &ShortStr, arguments: &FieldTable, target: Target) {
        match self {
            Matcher::Direct(keys) => keys.entry(routing_key.clone()).or_default().push(target),
            Matcher::Fanout(targets) => targets.push(target),
            Matcher::Topic(trie) => trie.insert(routing_key.as_bytes(), target),
            Matcher::Headers(bindings) => {
                bindings.push((HeadersBinding::new(arguments.clone()), target))
            }
            Matcher::ConsistentHash(ring) => ring.insert(routing_key.as_bytes(), target),
        }
    }

    /// Removes the target of one binding.
    fn remove(&mut self, routing_key: &[u8], arguments: &FieldTable, target: Target) {
        match self {
            Matcher::Direct(keys) => {
                if let Some(targets) = keys.get_mut(routing_key) {
                    remove_one(targets, |t| *t == target);
                    if targets.is_empty() {
                        keys.remove(routing_key);
                    }
                }
            }
            Matcher::Fanout(targets) => remove_one(targets, |t| *t == target),
            Matcher::Topic(trie) => {
                trie.remove(routing_key, target);
            }
            Matcher::Headers(bindings) => remove_one(bindings, |(b, t)| {
                *t == target && b.arguments() == arguments
            }),
            Matcher::ConsistentHash(ring) => ring.remove(target),
        }
    }

    fn for_each_match(
        &self,
        routing_key: &[u8],
        fields: MessageFields<'_>,
        topic_scratch: &mut TopicScratch,
        mut f: impl FnMut(Target),
    ) {
        match self {
            Matcher::Direct(keys) => {
                if let Some(targets) = keys.get(routing_key) {
                    targets.iter().for_each(|&t| f(t));
                }
            }
            Matcher::Fanout(targets) => targets.iter().for_each(|&t| f(t)),
            Matcher::Topic(trie) => trie.for_each_match(routing_key, topic_scratch, f),
            Matcher::Headers(bindings) => bindings
                .iter()
                .filter(|(binding, _)| binding.matches(fields.headers))
                .for_each(|&(_, t)| f(t)),
            Matcher::ConsistentHash(ring) => {
                let hashed = fields.first_routing_key.unwrap_or(routing_key);
                if let Some(t) = ring.route(hashed, fields.properties) {
                    f(t)
                }
            }
        }
    }
}

fn remove_one<T>(items: &mut Vec<T>, pred: impl Fn(&T) -> bool) {
    if let Some(index) = items.iter().position(pred) {
        items.swap_remove(index);
    }
}

/// One exchange and the bindings it is the source of.
#[derive(Debug)]
struct Exchange {
    name: ShortStr,
    kind: ExchangeKind,
    alternate_exchange: Option<ShortStr>,
    /// Binding identity: destination -> routing key -> argument tables.
    bindings: Map<Destination, Map<ShortStr, Vec<FieldTable>>>,
    binding_count: usize,
    /// Distinct exchanges this one has bindings to, for `needs_headers`.
    exchange_destinations: Vec<Slot>,
    matcher: Matcher,
    /// The routing pass that last visited this exchange (see `epoch`).
    visited_epoch: Cell<u64>,
    /// Messages published to it on this shard, and how many of them it
    /// routed to a queue (RabbitMQ's publish_in and publish_out).
    published_in: Cell<u64>,
    published_out: Cell<u64>,
}

/// The exchanges and bindings of one vhost. See the module doc.
#[derive(Debug, Default)]
pub struct RoutingTable {
    slots: Vec<Option<Exchange>>,
    free_slots: Vec<Slot>,
    by_name: Map<ShortStr, Slot>,
    /// The default exchange's implicit bindings: queue name -> queue.
    queues: Map<ShortStr, QueueId>,
    /// Reverse index: destination -> exchanges with bindings to it.
    sources_of: Map<Destination, Vec<Slot>>,
    /// Routing pass counter: an exchange is visited in the current pass when
    /// its `visited_epoch` equals this, which makes "seen" O(1) without a
    /// set to clear.
    epoch: Cell<u64>,
    /// Scratch reused by every `route` call; taken out of the cell for the
    /// duration of a call and put back after, so `route` stays `&self`.
    pending: ScratchCell<Vec<Slot>>,
    topic_scratch: ScratchCell<TopicScratch>,
}

/// A `Cell` holding reusable scratch, taken for the length of a call and put
/// back after. A `Cell` rather than a `RefCell`: a nested take (there is
/// none today) would get a fresh buffer instead of panicking.
#[derive(Default)]
struct ScratchCell<T>(Cell<T>);

impl<T: Default> ScratchCell<T> {
    fn take(&self) -> T {
        self.0.take()
    }

    fn set(&self, value: T) {
        self.0.set(value)
    }
}

impl<T> std::fmt::Debug for ScratchCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScratchCell")
    }
}

impl RoutingTable {
    pub fn new() -> RoutingTable {
        RoutingTable::default()
    }

    fn exchange(&self, slot: Slot) -> Option<&Exchange> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn exchange_mut(&mut self, slot: Slot) -> Option<&mut Exchange> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn slot_of(&self, name: &[u8]) -> Option<Slot> {
        self.by_name.get(name).copied()
    }

    /// Adds an exchange; an exchange of that name already present is kept
    /// as it is (the catalog has checked the redeclaration is equivalent).
    pub fn add_exchange(&mut self, name: ShortStr, routing: ExchangeRouting) {
        if self.by_name.contains_key(name.as_bytes()) {
            return;
        }
        let ExchangeRouting {
            kind,
            alternate_exchange,
            hash_on,
        } = routing;
        let exchange = Exchange {
            name: name.clone(),
            kind,
            alternate_exchange,
            bindings: Map::default(),
            binding_count: 0,
            exchange_destinations: Vec::new(),
            matcher: Matcher::new(kind, hash_on),
            visited_epoch: Cell::new(0),
            published_in: Cell::new(0),
            published_out: Cell::new(0),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(exchange);
                slot
            }
            None => {
                self.slots.push(Some(exchange));
                (self.slots.len() - 1) as Slot
            }
        };
        self.by_name.insert(name, slot);
    }

    /// Changes an exchange's alternate exchange (a policy came or went).
    pub(crate) fn set_alternate_exchange(&mut self, name: &[u8], alternate: Option<ShortStr>) {
        if let Some(x) = self.slot_of(name).and_then(|slot| self.exchange_mut(slot)) {
            x.alternate_exchange = alternate;
        }
    }

    /// Removes an exchange, the bindings it is the source of and the
    /// bindings to it. Returns the other exchanges left with no bindings as
    /// a source by this removal, sorted by name (candidates for
    /// auto-delete).
    pub(crate) fn remove_exchange(&mut self, name: &[u8]) -> Vec<ShortStr> {
        let Some(slot) = self.slot_of(name) else {
            return Vec::new();
        };
        let destinations: Vec<Destination> = self
            .exchange(slot)
            .map(|x| x.bindings.keys().cloned().collect())
            .unwrap_or_default();
        for destination in &destinations {
            self.remove_destination_from(slot, destination);
        }
        let emptied = match self.exchange(slot) {
            Some(x) => self.remove_bindings_to(&Destination::Exchange(x.name.clone())),
            None => Vec::new(),
        };
        self.by_name.remove(name);
        self.slots[slot as usize] = None;
        self.free_slots.push(slot);
        emptied
    }

    /// Adds a queue: the default exchange routes `name` to it.
    pub fn add_queue(&mut self, name: ShortStr, id: QueueId) {
        self.queues.insert(name, id);
    }

    /// Removes a queue and every binding to it. Returns the exchanges left
    /// with no bindings as a source, sorted by name.
    pub(crate) fn remove_queue(&mut self, name: &[u8], id: QueueId) -> Vec<ShortStr> {
        if self.queues.get(name) == Some(&id) {
            self.queues.remove(name);
        }
        self.remove_bindings_to(&Destination::Queue(id))
    }

    /// Removes every binding to `destination`; returns the sources that
    /// were left with no bindings, sorted by name.
    fn remove_bindings_to(&mut self, destination: &Destination) -> Vec<ShortStr> {
        let sources = self
            .sources_of
            .get(destination)
            .cloned()
            .unwrap_or_default();
        let mut emptied = Vec::new();
        for slot in sources {
            self.remove_destination_from(slot, destination);
            if let Some(x) = self.exchange(slot) {
                if x.binding_count == 0 {
                    emptied.push(x.name.clone());
                }
            }
        }
        emptied.sort_unstable();
        emptied
    }

    /// Removes all bindings from `slot` to `destination`.
    fn remove_destination_from(&mut self, slot: Slot, destination: &Destination) {
        let Some(target) = self.target(destination) else {
            return;
        };
        let Some(x) = self.exchange_mut(slot) else {
            return;
        };
        let Some(by_key) = x.bindings.remove(destination) else {
            return;
        };
        for (routing_key, argument_tables) in &by_key {
            for arguments in argument_tables {
                x.matcher.remove(routing_key.as_bytes(), arguments, target);
                x.binding_count -= 1;
            }
        }
        if let Target::Exchange(to) = target {
            remove_one(&mut x.exchange_destinations, |s| *s == to);
        }
        self.forget_source(destination, slot);
    }

    fn forget_source(&mut self, destination: &Destination, slot: Slot) {
        if let Some(sources) = self.sources_of.get_mut(destination) {
            remove_one(sources, |s| *s == slot);
            if sources.is_empty() {
                self.sources_of.remove(destination);
            }
        }
    }

    fn target(&self, destination: &Destination) -> Option<Target> {
        match destination {
            Destination::Queue(id) => Some(Target::Queue(*id)),
            Destination::Exchange(name) => self.slot_of(name.as_bytes()).map(Target::Exchange),
        }
    }

    /// Adds a binding. False when it is already present, or when the source
    /// or destination exchange does not exist (the catalog checks that
    /// first).
    pub fn bind(
        &mut self,
        source: &[u8],
        destination: Destination,
        routing_key: ShortStr,
        arguments: FieldTable,
    ) -> bool {
        let (Some(slot), Some(target)) = (self.slot_of(source), self.target(&destination)) else {
            return false;
        };
        let Some(x) = self.exchange_mut(slot) else {
            return false;
        };
        let first_to_destination = !x.bindings.contains_key(&destination);
        let tables = x
            .bindings
            .entry(destination.clone())
            .or_default()
            .entry(routing_key.clone())
            .or_default();
        if tables.contains(&arguments) {
            return false;
        }
        x.matcher.insert(&routing_key, &arguments, target);
        tables.push(arguments);
        x.binding_count += 1;
        if first_to_destination {
            if let Target::Exchange(to) = target {
                x.exchange_destinations.push(to);
            }
            self.sources_of.entry(destination).or_default().push(slot);
        }
        true
    }

    /// Removes a binding. False when it was not present.
    pub fn unbind(
        &mut self,
        source: &[u8],
        destination: &Destination,
        routing_key: &[u8],
        arguments: &FieldTable,
    ) -> bool {
        let (Some(slot), Some(target)) = (self.slot_of(source), self.target(destination)) else {
            return false;
        };
        let Some(x) = self.exchange_mut(slot) else {
            return false;
        };
        let Some(by_key) = x.bindings.get_mut(destination) else {
            return false;
        };
        let Some(tables) = by_key.get_mut(routing_key) else {
            return false;
        };
        let Some(index) = tables.iter().position(|t| t == arguments) else {
            return false;
        };
        tables.swap_remove(index);
        if tables.is_empty() {
            by_key.remove(routing_key);
        }
        let last_to_destination = by_key.is_empty();
        if last_to_destination {
            x.bindings.remove(destination);
            if let Target::Exchange(to) = target {
                remove_one(&mut x.exchange_destinations, |s| *s == to);
            }
        }
        x.matcher.remove(routing_key, arguments, target);
        x.binding_count -= 1;
        if last_to_destination {
            self.forget_source(destination, slot);
        }
        true
    }

    /// Whether the exchange is the source of any binding (exchange.delete
    /// if-unused, auto-delete).
    pub(crate) fn has_bindings_from(&self, exchange: &[u8]) -> bool {
        self.slot_of(exchange)
            .and_then(|slot| self.exchange(slot))
            .is_some_and(|x| x.binding_count > 0)
    }

    /// Total number of explicit bindings (implicit default-exchange ones
    /// excluded).
    pub fn binding_count(&self) -> usize {
        self.slots.iter().flatten().map(|x| x.binding_count).sum()
    }

    /// Every explicit binding, in no particular order.
    pub(crate) fn bindings(&self) -> impl Iterator<Item = BindingView<'_>> {
        self.slots.iter().flatten().flat_map(|x| {
            x.bindings.iter().flat_map(move |(destination, by_key)| {
                by_key.iter().flat_map(move |(routing_key, tables)| {
                    tables.iter().map(move |arguments| BindingView {
                        source: &x.name,
                        destination,
                        routing_key,
                        arguments,
                    })
                })
            })
        })
    }

    /// The slot of the exchange named `name`, for `count_publish`.
    pub(crate) fn exchange_slot(&self, name: &[u8]) -> Option<Slot> {
        self.slot_of(name)
    }

    /// Counts a message published to the exchange in `slot` (as `route`
    /// found it, so a publish looks its exchange up once), and whether it
    /// reached a queue: plain additions, read by the management API.
    pub(crate) fn count_publish(&self, slot: Option<Slot>, routed: bool) {
        if let Some(x) = slot.and_then(|slot| self.exchange(slot)) {
            x.published_in.set(x.published_in.get() + 1);
            x.published_out
                .set(x.published_out.get() + u64::from(routed));
        }
    }

    /// (name, published in, published out) of every exchange with traffic.
    pub(crate) fn exchange_counts(&self) -> impl Iterator<Item = (&ShortStr, u64, u64)> {
        self.slots
            .iter()
            .flatten()
            .filter(|x| x.published_in.get() > 0)
            .map(|x| (&x.name, x.published_in.get(), x.published_out.get()))
    }

    fn next_epoch(&self) -> u64 {
        let epoch = self.epoch.get().wrapping_add(1);
        self.epoch.set(epoch);
        epoch
    }

    /// Marks `slot` visited in this pass; false if it already was.
    fn visit(&self, slot: Slot, epoch: u64) -> bool {
        match self.exchange(slot) {
            Some(x) if x.visited_epoch.get() != epoch => {
                x.visited_epoch.set(epoch);
                true
            }
            _ => false,
        }
    }

    fn alternate_slot(&self, x: &Exchange) -> Option<Slot> {
        x.alternate_exchange
            .as_ref()
            .and_then(|name| self.slot_of(name.as_bytes()))
    }

    /// Whether routing from `exchange` can reach a headers exchange (through
    /// exchange bindings or alternate exchanges), so the caller knows to
    /// decode the message's headers before calling [`route`](Self::route).
    pub(crate) fn needs_headers(&self, exchange: &[u8]) -> bool {
        let Some(start) = self.slot_of(exchange) else {
            return false;
        };
        let epoch = self.next_epoch();
        let mut pending = self.pending.take();
        pending.clear();
        self.visit(start, epoch);
        pending.push(start);
        let mut found = false;
        while let Some(slot) = pending.pop() {
            let Some(x) = self.exchange(slot) else {
                continue;
            };
            if x.kind == ExchangeKind::Headers {
                found = true;
                break;
            }
            let next = x
                .exchange_destinations
                .iter()
                .copied()
                .chain(self.alternate_slot(x));
            for to in next {
                if self.visit(to, epoch) {
                    pending.push(to);
                }
            }
        }
        self.pending.set(pending);
        found
    }

    /// Appends to `out` every queue a message published to `exchange` with
    /// `routing_key` (and `fields`, looked at only by headers and
    /// consistent-hash exchanges) is routed to, each queue once.
    ///
    /// Follows exchange-to-exchange bindings; an exchange whose own bindings
    /// match nothing (neither queue nor exchange) hands the message to its
    /// alternate exchange, as RabbitMQ does. Each exchange is visited at most
    /// once per call. An unknown exchange routes nowhere.
    ///
    /// Scratch (the exchange work list and the topic matcher's state sets)
    /// lives in the table and is reused, so a warmed table routes without
    /// allocating; `out` is the caller's to reuse. The queues appended are
    /// sorted by id. Returns the exchange's slot (none for the default
    /// exchange or an unknown name).
    pub fn route(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        fields: MessageFields<'_>,
        out: &mut Vec<QueueId>,
    ) -> Option<Slot> {
        if exchange.is_empty() {
            if let Some(&id) = self.queues.get(routing_key) {
                out.push(id);
            }
            return None;
        }
        let start = self.slot_of(exchange)?;
        let first = out.len();
        let epoch = self.next_epoch();
        let mut pending = self.pending.take();
        let mut topic_scratch = self.topic_scratch.take();
        pending.clear();
        self.visit(start, epoch);
        pending.push(start);
        while let Some(slot) = pending.pop() {
            let Some(x) = self.exchange(slot) else {
                continue;
            };
            let mut matched = false;
            x.matcher
                .for_each_match(routing_key, fields, &mut topic_scratch, |target| {
                    matched = true;
                    match target {
                        Target::Queue(id) => out.push(id),
                        Target::Exchange(to) => {
                            if self.visit(to, epoch) {
                                pending.push(to);
                            }
                        }
                    }
                });
            if !matched {
                if let Some(to) = self.alternate_slot(x) {
                    if self.visit(to, epoch) {
                        pending.push(to);
                    }
                }
            }
        }
        self.pending.set(pending);
        self.topic_scratch.set(topic_scratch);
        dedup_tail(out, first);
        Some(start)
    }
}

/// Sorts `out[first..]` and removes duplicates within it, in place.
fn dedup_tail(out: &mut Vec<QueueId>, first: usize) {
    let Some(tail) = out.get_mut(first..) else {
        return;
    };
    tail.sort_unstable();
    let mut kept = 0;
    for read in 0..tail.len() {
        if kept == 0 || tail[read] != tail[kept - 1] {
            tail[kept] = tail[read];
            kept += 1;
        }
    }
    out.truncate(first + kept);
}

#[cfg(test)]
mod tests;
