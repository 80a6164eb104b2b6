//! Turning options into a topology (exchange, queues, bindings, which
//! producer publishes with which routing key) and declaring it.
//!
//! The routes — which queues each producer's messages reach — are computed
//! here from the bindings loadgen makes, not asked of the broker; they are
//! what the loss check expects. Bindings someone else added to a named
//! exchange are outside the model.

use std::time::{SystemTime, UNIX_EPOCH};

use warren::protocol::method::{ExchangeDeclare, Method, QueueBind, QueueDeclare, QueueDelete};
use warren::protocol::types::{FieldTable, FieldValue, LongStr, ShortStr};

use crate::amqp::{Connection, Error};
use crate::cli::RunArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeType {
    fn parse(text: &str) -> Result<ExchangeType, Error> {
        match text {
            "direct" => Ok(ExchangeType::Direct),
            "fanout" => Ok(ExchangeType::Fanout),
            "topic" => Ok(ExchangeType::Topic),
            other => Err(Error::Usage(format!(
                "exchange type '{other}' is not supported: use direct, fanout or topic"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }
}

/// What to declare, and where each producer's messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// "" is the default exchange, which is never declared.
    pub exchange: String,
    pub exchange_type: ExchangeType,
    pub queues: Vec<String>,
    /// Whether loadgen made up the queue names, and so deletes the queues.
    pub generated: bool,
    pub durable: bool,
    /// x-queue-type: "classic" or "quorum".
    pub queue_type: String,
    /// The binding key of each queue.
    pub binding_keys: Vec<String>,
    pub extra_bindings: usize,
    /// Per producer: its routing key and the queues (indices) it reaches.
    pub publish_keys: Vec<String>,
    pub routes: Vec<Vec<usize>>,
    /// Seeds the extra bindings' random keys.
    pub run_id: u32,
}

/// A run id that differs between runs: the low bits of the clock, mixed
/// with the process id.
pub fn new_run_id() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

impl Topology {
    pub fn from_args(args: &RunArgs, run_id: u32) -> Result<Topology, Error> {
        let exchange_type = ExchangeType::parse(&args.exchange_type)?;
        let exchange = args
            .exchange
            .clone()
            .unwrap_or_else(|| format!("loadgen.{}", exchange_type.name()));
        let generated = args.queue.is_none();
        let base = args
            .queue
            .clone()
            .unwrap_or_else(|| format!("loadgen-{run_id:08x}"));
        let queues: Vec<String> = match (args.queues, generated) {
            (1, false) => vec![base],
            (count, _) => (1..=count).map(|i| format!("{base}-{i}")).collect(),
        };
        if exchange.is_empty() && (args.bindings > 0 || args.routing_key.is_some()) {
            return Err(Error::Usage(
                "the default exchange routes by queue name: no --routing-key or --bindings".into(),
            ));
        }
        if exchange_type == ExchangeType::Fanout && args.bindings > 0 {
            return Err(Error::Usage(
                "--bindings needs a direct or topic exchange".into(),
            ));
        }
        if exchange.is_empty() && queues.is_empty() {
            return Err(Error::Usage(
                "the default exchange needs at least one queue".into(),
            ));
        }
        let binding_keys: Vec<String> = queues
            .iter()
            .map(|queue| match (&args.routing_key, exchange_type) {
                (_, ExchangeType::Fanout) => String::new(),
                (Some(key), _) => key.clone(),
                (None, _) => queue.clone(),
            })
            .collect();
        let (publish_keys, routes) = (0..args.producers)
            .map(|producer| {
                route(
                    producer,
                    &queues,
                    exchange_type,
                    args.routing_key.as_deref(),
                )
            })
            .unzip();
        Ok(Topology {
            exchange,
            exchange_type,
            queues,
            generated,
            durable: args.persistent || args.queue_type == "quorum",
            queue_type: args.queue_type.clone(),
            binding_keys,
            extra_bindings: args.bindings,
            publish_keys,
            routes,
            run_id,
        })
    }

    /// Declares the exchange, the queues and their bindings; returns the
    /// messages the queues held already (their declare-ok counts).
    pub fn declare(&self, connection: &mut Connection, channel: u16) -> Result<u64, Error> {
        if !self.exchange.is_empty() {
            connection.call(channel, self.exchange_declare().into())?;
        }
        let declares = self.queues.iter().map(|queue| {
            QueueDeclare {
                queue: ShortStr::from(queue.as_str()),
                durable: self.durable,
                arguments: self.queue_arguments(),
                ..QueueDeclare::default()
            }
            .into()
        });
        let held = connection
            .call_many(channel, declares)?
            .iter()
            .map(|reply| match reply {
                Method::QueueDeclareOk(ok) => u64::from(ok.message_count),
                _ => 0,
            })
            .sum();
        if !self.exchange.is_empty() {
            connection.call_many(channel, self.bindings())?;
        }
        Ok(held)
    }

    /// Deletes the queues loadgen named itself.
    pub fn delete(&self, connection: &mut Connection, channel: u16) -> Result<(), Error> {
        if !self.generated {
            return Ok(());
        }
        let deletes = self.queues.iter().map(|queue| {
            QueueDelete {
                queue: ShortStr::from(queue.as_str()),
                ..QueueDelete::default()
            }
            .into()
        });
        connection.call_many(channel, deletes).map(drop)
    }

    /// Only a quorum queue says its type: a classic declare stays
    /// argument-free, as every client sends it.
    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::new();
        if self.queue_type != "classic" {
            let queue_type = LongStr::from(self.queue_type.as_str());
            arguments.insert("x-queue-type", FieldValue::LongStr(queue_type));
        }
        arguments
    }

    fn exchange_declare(&self) -> ExchangeDeclare {
        ExchangeDeclare {
            exchange: ShortStr::from(self.exchange.as_str()),
            exchange_type: ShortStr::from(self.exchange_type.name()),
            // Brokers refuse to declare amq.* exchanges, but allow checking
            // that they exist.
            passive: self.exchange.starts_with("amq."),
            ..ExchangeDeclare::default()
        }
    }

    /// Each queue's binding, then the extra ones, round-robin over queues.
    fn bindings(&self) -> impl Iterator<Item = Method> + '_ {
        let extra = (0..self.extra_bindings)
            .filter(|_| !self.queues.is_empty())
            .map(|i| {
                (
                    i % self.queues.len(),
                    extra_key(self.exchange_type, self.run_id, i),
                )
            });
        (0..self.queues.len())
            .map(|q| (q, self.binding_keys[q].clone()))
            .chain(extra)
            .map(|(queue, key)| {
                QueueBind {
                    queue: ShortStr::from(self.queues[queue].as_str()),
                    exchange: ShortStr::from(self.exchange.as_str()),
                    routing_key: ShortStr::from(key),
                    ..QueueBind::default()
                }
                .into()
            })
    }
}

/// The routing key of `producer` and the queues it reaches.
fn route(
    producer: usize,
    queues: &[String],
    exchange_type: ExchangeType,
    routing_key: Option<&str>,
) -> (String, Vec<usize>) {
    let all = (0..queues.len()).collect();
    match (exchange_type, routing_key) {
        (ExchangeType::Fanout, key) => (key.unwrap_or("").to_owned(), all),
        (_, Some(key)) => (key.to_owned(), all),
        (_, None) if queues.is_empty() => ("loadgen".to_owned(), Vec::new()),
        (_, None) => {
            let queue = producer % queues.len();
            (queues[queue].clone(), vec![queue])
        }
    }
}

/// A binding key no message of the run matches: it starts with a word no
/// routing key starts with. Topic keys mix in wildcards, so that the
/// broker's matcher has patterns to walk, not just literals.
fn extra_key(exchange_type: ExchangeType, run_id: u32, i: usize) -> String {
    let random = splitmix(u64::from(run_id) << 32 | i as u64);
    match (exchange_type, i % 4) {
        (ExchangeType::Topic, 1) => format!("nomatch.{random:016x}.*"),
        (ExchangeType::Topic, 2) => format!("nomatch.*.{random:016x}.#"),
        _ => format!("nomatch.{random:016x}"),
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn topology(extra: &[&str]) -> Result<Topology, Error> {
        let cli = crate::cli::Cli::try_parse_from(["loadgen"].iter().chain(extra)).unwrap();
        Topology::from_args(&cli.run, 0xabcd)
    }

    #[test]
    fn by_default_each_producer_reaches_one_queue_by_its_name() {
        let t = topology(&["-x", "5", "--queues", "5"]).unwrap();
        assert_eq!(t.exchange, "loadgen.direct");
        assert_eq!(t.queues[4], "loadgen-0000abcd-5");
        assert_eq!(t.routes, (0..5).map(|q| vec![q]).collect::<Vec<_>>());
        assert_eq!(t.publish_keys[2], t.binding_keys[2]);
    }

    #[test]
    fn fanout_and_a_shared_key_reach_every_queue() {
        let t = topology(&["-t", "fanout", "--queues", "10"]).unwrap();
        assert_eq!(t.routes[0].len(), 10);
        let t = topology(&["-t", "topic", "-k", "a.b", "--queues", "3", "-u", "q"]).unwrap();
        assert_eq!(t.queues, ["q-1", "q-2", "q-3"]);
        assert_eq!(t.routes[0], [0, 1, 2]);
        assert!(!t.generated);
    }

    #[test]
    fn extra_bindings_match_no_routing_key() {
        let t = topology(&["-t", "topic", "--bindings", "100", "--queues", "2"]).unwrap();
        let methods: Vec<_> = t.bindings().collect();
        assert_eq!(methods.len(), 102);
        for method in &methods[2..] {
            let Method::QueueBind(bind) = method else {
                panic!("not a bind")
            };
            assert!(bind.routing_key.as_bytes().starts_with(b"nomatch."));
        }
    }

    #[test]
    fn impossible_combinations_are_usage_errors() {
        for args in [
            &["-t", "headers"][..],
            &["-e", "", "-k", "x"],
            &["-t", "fanout", "--bindings", "3"],
        ] {
            assert!(matches!(topology(args), Err(Error::Usage(_))), "{args:?}");
        }
    }
}
