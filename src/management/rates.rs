//! Message rates for the API's `message_stats`, computed on the management
//! thread from the lifetime totals the shards report: the change since the
//! previous look at least [`RATE_WINDOW_MIN`] earlier, per second.
//!
//! Rates are kept per queue (what its owner counts), per exchange
//! (publish_in and publish_out, summed over the shards' routing tables),
//! per channel (what the connection counts for it), overall (every
//! channel's, the closed ones' included), and per connection its bytes
//! read and written.
//!
//! The shards only count (a few integer additions per message, no clock),
//! so rates cost the data path nothing. Entries for things that are gone
//! are dropped at each look, so the book is as large as what exists.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ids::{ChannelId, ConnectionId, QueueId};
use crate::queue::MessageTotals;
use crate::shard::TrafficTotals;

/// Looks closer together than this reuse the last rates.
pub(crate) const RATE_WINDOW_MIN: Duration = Duration::from_secs(1);

/// Messages per second: published, delivered (and got), acked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Rates {
    pub publish: f64,
    pub deliver_get: f64,
    pub ack: f64,
}

/// How fast a queue's (or all queues') message counts change, per second:
/// negative while they shrink.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct DepthRates {
    pub ready: f64,
    pub unacked: f64,
}

/// A connection's bytes per second, read and written.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TrafficRates {
    pub recv_oct: f64,
    pub send_oct: f64,
}

/// What a rate is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RateKey {
    Queue(QueueId),
    /// A queue's ready and unacked counts.
    QueueDepth(QueueId),
    /// (vhost, name).
    Exchange(String, String),
    Channel(ChannelId),
    /// A connection's traffic.
    Connection(ConnectionId),
    /// The overview, as the named user sees it.
    Overview(String),
    /// The overview's ready and unacked counts, as the named user sees them.
    OverviewDepth(String),
}

/// The lifetime counters one key's rates are taken from (message totals
/// or traffic; unused places stay 0).
type Counts = [u64; 3];

#[derive(Debug)]
struct Sample {
    at: Instant,
    counts: Counts,
    rates: [f64; 3],
}

/// The last sample per key.
#[derive(Debug, Default)]
pub(crate) struct RateBook {
    samples: HashMap<RateKey, Sample>,
}

impl RateBook {
    /// Records `totals` seen `now` and returns the current rates of `key`.
    pub(crate) fn observe(&mut self, key: RateKey, totals: MessageTotals, now: Instant) -> Rates {
        let counts = [totals.published, totals.delivered, totals.acked];
        let [publish, deliver_get, ack] = self.observe_counts(key, counts, now, growth);
        Rates {
            publish,
            deliver_get,
            ack,
        }
    }

    /// Records a connection's traffic seen `now` and returns its rates.
    pub(crate) fn observe_traffic(
        &mut self,
        conn: ConnectionId,
        traffic: TrafficTotals,
        now: Instant,
    ) -> TrafficRates {
        let counts = [traffic.recv_oct, traffic.send_oct, 0];
        let key = RateKey::Connection(conn);
        let [recv_oct, send_oct, _] = self.observe_counts(key, counts, now, growth);
        TrafficRates { recv_oct, send_oct }
    }

    /// Records message counts (`ready`, `unacked`) seen `now` under a
    /// `QueueDepth` or `OverviewDepth` key and returns how fast they change.
    pub(crate) fn observe_depth(
        &mut self,
        key: RateKey,
        ready: u64,
        unacked: u64,
        now: Instant,
    ) -> DepthRates {
        let [ready, unacked, _] = self.observe_counts(key, [ready, unacked, 0], now, change);
        DepthRates { ready, unacked }
    }

    /// The change of each count per second since the previous sample at
    /// least [`RATE_WINDOW_MIN`] old, as `delta` takes it.
    fn observe_counts(
        &mut self,
        key: RateKey,
        counts: Counts,
        now: Instant,
        delta: fn(u64, u64) -> f64,
    ) -> [f64; 3] {
        let Some(sample) = self.samples.get_mut(&key) else {
            let rates = [0.0; 3];
            self.samples.insert(
                key,
                Sample {
                    at: now,
                    counts,
                    rates,
                },
            );
            return rates;
        };
        let elapsed = now.saturating_duration_since(sample.at);
        if elapsed < RATE_WINDOW_MIN {
            return sample.rates;
        }
        for ((rate, now), before) in sample.rates.iter_mut().zip(counts).zip(sample.counts) {
            *rate = delta(now, before) / elapsed.as_secs_f64();
        }
        sample.at = now;
        sample.counts = counts;
        sample.rates
    }

    /// Forgets the keys for which `live` is false.
    pub fn retain(&mut self, live: impl Fn(&RateKey) -> bool) {
        self.samples.retain(|key, _| live(key));
    }
}

/// A lifetime total's growth (never negative: a total that went down
/// belongs to something recreated under the same key).
fn growth(now: u64, before: u64) -> f64 {
    now.saturating_sub(before) as f64
}

/// A level's change, either way.
fn change(now: u64, before: u64) -> f64 {
    now as f64 - before as f64
}

/// RabbitMQ's message counts with their `*_details` rates.
pub(crate) fn depth_json(ready: u64, unacked: u64, rates: DepthRates) -> Value {
    json!({
        "messages": ready + unacked,
        "messages_details": {"rate": rates.ready + rates.unacked},
        "messages_ready": ready,
        "messages_ready_details": {"rate": rates.ready},
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": {"rate": rates.unacked},
    })
}

/// The book, locked; a panic elsewhere leaves it usable.
pub fn lock(book: &std::sync::Mutex<RateBook>) -> std::sync::MutexGuard<'_, RateBook> {
    book.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// An exchange's `message_stats`: RabbitMQ's publish_in (published to it)
/// and publish_out (of those, routed), from totals that count them as
/// published and delivered.
pub(crate) fn exchange_message_stats(totals: MessageTotals, rates: Rates) -> Value {
    json!({
        "publish_in": totals.published,
        "publish_in_details": {"rate": rates.publish},
        "publish_out": totals.delivered,
        "publish_out_details": {"rate": rates.deliver_get},
    })
}

/// RabbitMQ's `message_stats` object.
pub fn message_stats(totals: MessageTotals, rates: Rates) -> Value {
    json!({
        "publish": totals.published,
        "publish_details": {"rate": rates.publish},
        "deliver_get": totals.delivered,
        "deliver_get_details": {"rate": rates.deliver_get},
        "ack": totals.acked,
        "ack_details": {"rate": rates.ack},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(published: u64, delivered: u64, acked: u64) -> MessageTotals {
        MessageTotals {
            published,
            delivered,
            acked,
        }
    }

    #[test]
    fn rates_are_the_change_per_second_since_the_previous_look() {
        let mut book = RateBook::default();
        let start = Instant::now();
        let queue = RateKey::Queue(QueueId(1));
        assert_eq!(
            book.observe(queue.clone(), totals(10, 0, 0), start),
            Rates::default()
        );
        let later = start + Duration::from_secs(2);
        let rates = book.observe(queue.clone(), totals(30, 10, 4), later);
        assert_eq!(
            rates,
            Rates {
                publish: 10.0,
                deliver_get: 5.0,
                ack: 2.0
            }
        );
        let soon = later + Duration::from_millis(100);
        assert_eq!(
            book.observe(queue, totals(99, 99, 99), soon),
            rates,
            "too soon: unchanged"
        );
        let depth = RateKey::QueueDepth(QueueId(1));
        book.observe_depth(depth.clone(), 10, 4, start);
        let shrunk = book.observe_depth(depth, 4, 6, later);
        assert_eq!(
            shrunk,
            DepthRates {
                ready: -3.0,
                unacked: 1.0
            },
            "levels go down as well as up"
        );
        book.retain(|_| false);
        assert!(book.samples.is_empty());
    }
}
