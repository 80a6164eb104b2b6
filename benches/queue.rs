//! The queue's data path in isolation: publish a batch, dispatch it to two
//! consumers, ack it, return the credit. Reports time per message and, after
//! the timing, heap allocations per message in steady state (which should be
//! zero: the ready deque and unacked map keep their capacity).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use warren::ids::{ChannelId, ConnectionId, QueueId};
use warren::message::{Message, MessageContent};
use warren::protocol::types::ShortStr;
use warren::queue::{ConsumerKey, ConsumerSpec, Queue, Settings, Settlement};

mod common;

const BATCH: usize = 64;
const PREFETCH_COUNT: u16 = 100;

struct Cycle {
    queue: Queue,
    consumers: [ConsumerKey; 2],
    message: Message,
    /// (holder, seq) of each delivery, to settle as its channel would.
    seqs: Vec<(ChannelId, u64)>,
    delivered: [u32; 2],
}

impl Cycle {
    fn new() -> Cycle {
        let conn = ConnectionId {
            shard_id: 0,
            local_id: 1,
        };
        let mut queue = Queue::new(
            QueueId(1),
            ShortStr::from("bench"),
            ShortStr::from("/"),
            false,
            Settings::default(),
        );
        let consumers = [1u16, 2].map(|number| ConsumerKey {
            channel: ChannelId { conn, number },
            tag: ShortStr::from(format!("ctag-{number}")),
        });
        for key in &consumers {
            let spec = ConsumerSpec {
                key: key.clone(),
                no_ack: false,
                exclusive: false,
                prefetch_count: PREFETCH_COUNT,
                credit: u32::from(PREFETCH_COUNT),
                priority: 0,
            };
            if let Err(err) = queue.add_consumer(spec) {
                panic!("bench setup: {err}");
            }
        }
        let message = Message::new(MessageContent {
            exchange: ShortStr::from(""),
            routing_key: ShortStr::from("bench"),
            properties: Bytes::new(),
            body: Bytes::from_static(&[0u8; 128]),
            priority: 0,
            persistent: false,
            expiration_ms: None,
        });
        Cycle {
            queue,
            consumers,
            message,
            seqs: Vec::with_capacity(BATCH),
            delivered: [0; 2],
        }
    }

    /// publish BATCH -> dispatch -> ack -> credit back, as the shard and the
    /// connection would.
    fn run(&mut self) {
        for _ in 0..BATCH {
            self.queue.publish(self.message.clone(), &0);
        }
        let (seqs, delivered) = (&mut self.seqs, &mut self.delivered);
        self.queue.dispatch(&0, &mut |delivery| {
            let channel = delivery.consumer.channel;
            seqs.push((channel, delivery.seq));
            delivered[usize::from(channel.number - 1)] += 1;
        });
        for &(holder, seq) in &self.seqs {
            self.queue.settle(holder, &[seq], Settlement::Ack);
        }
        self.seqs.clear();
        for (key, credit) in self.consumers.iter().zip(&mut self.delivered) {
            self.queue.add_credit(key, std::mem::take(credit));
        }
    }
}

fn publish_dispatch_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut cycle = Cycle::new();
    group.bench_function("publish_dispatch_ack_batch64", |b| b.iter(|| cycle.run()));
    group.finish();

    // Steady state: after warm-up, count allocations over many cycles.
    let mut cycle = Cycle::new();
    for _ in 0..1_000 {
        cycle.run();
    }
    let allocations = common::allocations_per_call(10_000, || cycle.run());
    println!(
        "queue/publish_dispatch_ack: {:.4} allocations per message (steady state)",
        allocations / BATCH as f64
    );
}

criterion_group!(benches, publish_dispatch_ack);
criterion_main!(benches);
