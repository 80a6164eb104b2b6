//! Counting lost, duplicated and reordered messages.
//!
//! Definitions (they are also what `--help` and the summary mean):
//!
//! - A *stream* is the messages of one producer as one consumer sees them.
//!   AMQP orders deliveries per queue, and a queue shared by several
//!   consumers interleaves them, so order is only checked per stream.
//! - *Reordered*: a message that arrives on its stream after a message of
//!   the same producer with a higher sequence number did.
//! - *Duplicated*: a copy of a (producer, sequence) beyond the first that a
//!   queue delivered, whether to the same consumer or to another on the
//!   same queue. loadgen never requeues, so the broker should never
//!   deliver a message twice.
//! - *Lost*: for each queue a producer's messages route to, the messages the
//!   producer wrote to the socket, less those the broker nacked, that no
//!   consumer of that queue received by the end of the drain period. It is
//!   only counted when every such queue has a consumer; otherwise the check
//!   is reported as skipped.
//!
//! Each consumer thread owns its `ConsumerTracker`, a bitmap of received
//! sequence numbers per producer, so recording is a few instructions with
//! no sharing. The trackers are merged per queue at the end.

/// Sequence numbers above this are not from a producer of this run (one
/// bit each: 2^36 bits is 8 GiB, far beyond any run).
const SEQUENCE_MAX: u64 = 1 << 36;

/// What one consumer saw of one producer.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    /// Bit `s` set: sequence `s` was received.
    received: Vec<u64>,
    /// The highest sequence seen so far.
    highest: Option<u64>,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Stream {
    fn record(&mut self, sequence: u64) {
        let (word, bit) = ((sequence / 64) as usize, sequence % 64);
        if word >= self.received.len() {
            self.received.resize((word + 1).next_power_of_two(), 0);
        }
        if self.received[word] & 1 << bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.received[word] |= 1 << bit;
        match self.highest {
            Some(highest) if sequence < highest => self.reordered += 1,
            _ => self.highest = Some(sequence),
        }
    }

    fn distinct(&self) -> u64 {
        self.received
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }
}

/// What one consumer saw, per producer.
#[derive(Clone, Debug)]
pub struct ConsumerTracker {
    pub queue: usize,
    pub streams: Vec<Stream>,
    /// Messages without a stamp of this run: leftovers in a named queue.
    pub foreign: u64,
}

impl ConsumerTracker {
    pub fn new(queue: usize, producer_count: usize) -> ConsumerTracker {
        ConsumerTracker {
            queue,
            streams: vec![Stream::default(); producer_count],
            foreign: 0,
        }
    }

    pub fn record(&mut self, producer: u16, sequence: u64) {
        match self.streams.get_mut(usize::from(producer)) {
            Some(stream) if sequence < SEQUENCE_MAX => stream.record(sequence),
            _ => self.foreign += 1,
        }
    }
}

/// What the producers did, as the check needs it.
#[derive(Clone, Debug)]
pub struct ProducerTally {
    pub sent: u64,
    pub nacked: u64,
    /// The queues (by index) this producer's messages route to.
    pub routes: Vec<usize>,
}

/// One (producer, queue) pair with something wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub producer: usize,
    pub queue: usize,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub foreign: u64,
    /// Why loss was not counted, if it was not.
    pub loss_unchecked: Option<String>,
    pub problems: Vec<Problem>,
}

impl Verdict {
    pub fn failed(&self) -> bool {
        self.lost + self.duplicated + self.reordered > 0
    }
}

/// Merges the consumers' trackers per queue and counts what went wrong.
pub fn check(
    producers: &[ProducerTally],
    consumers: &[ConsumerTracker],
    queue_count: usize,
) -> Verdict {
    let mut verdict = Verdict {
        foreign: consumers.iter().map(|c| c.foreign).sum(),
        ..Verdict::default()
    };
    let consumed: Vec<bool> = (0..queue_count)
        .map(|queue| consumers.iter().any(|c| c.queue == queue))
        .collect();
    let unconsumed = producers
        .iter()
        .flat_map(|p| &p.routes)
        .find(|&&q| !consumed[q]);
    if let Some(queue) = unconsumed {
        verdict.loss_unchecked = Some(format!("queue {queue} has no consumer"));
    }
    for (producer, tally) in producers.iter().enumerate() {
        for queue in 0..queue_count {
            let problem = check_pair(
                producer,
                queue,
                tally,
                consumers,
                verdict.loss_unchecked.is_none(),
            );
            verdict.lost += problem.lost;
            verdict.duplicated += problem.duplicated;
            verdict.reordered += problem.reordered;
            if problem.lost + problem.duplicated + problem.reordered > 0 {
                verdict.problems.push(problem);
            }
        }
    }
    verdict
}

fn check_pair(
    producer: usize,
    queue: usize,
    tally: &ProducerTally,
    consumers: &[ConsumerTracker],
    count_loss: bool,
) -> Problem {
    let streams: Vec<&Stream> = consumers
        .iter()
        .filter(|c| c.queue == queue)
        .filter_map(|c| c.streams.get(producer))
        .collect();
    let mut union: Vec<u64> = Vec::new();
    let mut duplicated = 0;
    for stream in &streams {
        union.resize(union.len().max(stream.received.len()), 0);
        for (merged, &word) in union.iter_mut().zip(&stream.received) {
            duplicated += u64::from((*merged & word).count_ones());
            *merged |= word;
        }
        duplicated += stream.duplicated;
    }
    let distinct: u64 = union.iter().map(|word| u64::from(word.count_ones())).sum();
    let expected = if tally.routes.contains(&queue) {
        tally.sent.saturating_sub(tally.nacked)
    } else {
        0
    };
    Problem {
        producer,
        queue,
        lost: if count_loss {
            expected.saturating_sub(distinct)
        } else {
            0
        },
        duplicated,
        reordered: streams.iter().map(|s| s.reordered).sum(),
    }
}

/// Distinct messages a consumer received, over all producers.
pub fn distinct_received(tracker: &ConsumerTracker) -> u64 {
    tracker.streams.iter().map(Stream::distinct).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(sent: u64, routes: &[usize]) -> ProducerTally {
        ProducerTally {
            sent,
            nacked: 0,
            routes: routes.to_vec(),
        }
    }

    #[test]
    fn everything_received_once_in_order_is_clean() {
        let mut consumer = ConsumerTracker::new(0, 1);
        (0..1000).for_each(|s| consumer.record(0, s));
        let verdict = check(&[tally(1000, &[0])], &[consumer], 1);
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn missing_late_and_repeated_messages_are_counted() {
        let mut consumer = ConsumerTracker::new(0, 1);
        for s in [0, 2, 1, 3, 3, 5] {
            consumer.record(0, s);
        }
        let verdict = check(&[tally(7, &[0])], &[consumer], 1);
        assert_eq!(
            (verdict.lost, verdict.duplicated, verdict.reordered),
            (2, 1, 1)
        );
        assert!(verdict.failed());
    }

    #[test]
    fn consumers_sharing_a_queue_interleave_without_reordering() {
        let (mut a, mut b) = (ConsumerTracker::new(0, 1), ConsumerTracker::new(0, 1));
        (0..100).for_each(|s| {
            if s % 3 == 0 {
                a.record(0, s)
            } else {
                b.record(0, s)
            }
        });
        b.record(0, 1);
        let verdict = check(&[tally(100, &[0])], &[a, b], 1);
        assert_eq!(
            (verdict.lost, verdict.duplicated, verdict.reordered),
            (0, 1, 0)
        );
    }

    #[test]
    fn fanout_expects_every_message_on_every_routed_queue() {
        let mut consumers: Vec<_> = (0..3).map(|q| ConsumerTracker::new(q, 1)).collect();
        for consumer in &mut consumers[..2] {
            (0..10).for_each(|s| consumer.record(0, s));
        }
        let verdict = check(&[tally(10, &[0, 1, 2])], &consumers, 3);
        assert_eq!(verdict.lost, 10);
        assert_eq!(verdict.problems[0].queue, 2);
    }

    #[test]
    fn loss_is_not_counted_on_a_queue_nobody_consumes() {
        let verdict = check(&[tally(10, &[0])], &[], 1);
        assert_eq!(verdict.lost, 0);
        assert!(verdict.loss_unchecked.is_some());
    }

    #[test]
    fn messages_of_unknown_producers_are_foreign() {
        let mut consumer = ConsumerTracker::new(0, 1);
        consumer.record(5, 0);
        consumer.record(0, SEQUENCE_MAX);
        assert_eq!(consumer.foreign, 2);
    }
}
