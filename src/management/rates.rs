//! Message rates for the API's `message_stats`, computed on the management
//! thread from the lifetime totals the shards report: the change since the
//! previous look at least [`RATE_WINDOW_MIN`] earlier, per second.
//!
//! The shards only count (a few integer additions per message, no clock),
//! so rates cost the data path nothing. Entries for queues that are gone
//! are dropped at each look, so the book is as large as the queue set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ids::QueueId;
use crate::queue::QueueTotals;

/// Looks closer together than this reuse the last rates.
pub const RATE_WINDOW_MIN: Duration = Duration::from_secs(1);

/// Messages per second: published, delivered (and got), acked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub publish: f64,
    pub deliver_get: f64,
    pub ack: f64,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    totals: QueueTotals,
    rates: Rates,
}

/// The last sample per queue.
#[derive(Debug, Default)]
pub struct RateBook {
    samples: HashMap<QueueId, Sample>,
}

impl RateBook {
    /// Records `totals` seen `now` and returns the queue's current rates.
    pub fn observe(&mut self, queue: QueueId, totals: QueueTotals, now: Instant) -> Rates {
        let Some(sample) = self.samples.get_mut(&queue) else {
            let rates = Rates::default();
            self.samples.insert(
                queue,
                Sample {
                    at: now,
                    totals,
                    rates,
                },
            );
            return rates;
        };
        let elapsed = now.saturating_duration_since(sample.at);
        if elapsed < RATE_WINDOW_MIN {
            return sample.rates;
        }
        let per_second =
            |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed.as_secs_f64();
        sample.rates = Rates {
            publish: per_second(totals.published, sample.totals.published),
            deliver_get: per_second(totals.delivered, sample.totals.delivered),
            ack: per_second(totals.acked, sample.totals.acked),
        };
        sample.at = now;
        sample.totals = totals;
        sample.rates
    }

    /// Forgets queues for which `live` is false.
    pub fn retain(&mut self, live: impl Fn(&QueueId) -> bool) {
        self.samples.retain(|queue, _| live(queue));
    }
}

/// RabbitMQ's `message_stats` object.
pub fn message_stats(totals: QueueTotals, rates: Rates) -> Value {
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

    fn totals(published: u64, delivered: u64, acked: u64) -> QueueTotals {
        QueueTotals {
            published,
            delivered,
            acked,
        }
    }

    #[test]
    fn rates_are_the_change_per_second_since_the_previous_look() {
        let mut book = RateBook::default();
        let start = Instant::now();
        let queue = QueueId(1);
        assert_eq!(
            book.observe(queue, totals(10, 0, 0), start),
            Rates::default()
        );
        let later = start + Duration::from_secs(2);
        let rates = book.observe(queue, totals(30, 10, 4), later);
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
        book.retain(|_| false);
        assert!(book.samples.is_empty());
    }
}
