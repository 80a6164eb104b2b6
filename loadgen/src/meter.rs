//! Live counters and latency histograms shared by the worker threads and
//! the reporter.
//!
//! Counters are relaxed atomics, added to once per batch. Latencies are
//! gathered by each worker into a reused local batch and recorded into the
//! shared interval histogram under one lock per batch (one per read
//! syscall), so the lock is taken thousands of times a second, not once
//! per message. The reporter swaps the interval histograms out every second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to this, at 3
/// significant digits; longer ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

/// One latency histogram filled by many threads.
pub struct LatencyMeter {
    interval: Mutex<Histogram<u64>>,
}

impl Default for LatencyMeter {
    fn default() -> LatencyMeter {
        LatencyMeter {
            interval: Mutex::new(new_histogram()),
        }
    }
}

impl LatencyMeter {
    /// Records a batch of latencies in nanoseconds, and empties it.
    pub fn record_ns(&self, batch: &mut Vec<u64>) {
        if batch.is_empty() {
            return;
        }
        let mut histogram = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        for &latency_ns in batch.iter() {
            histogram.saturating_record((latency_ns / 1000).max(1));
        }
        batch.clear();
    }

    /// Moves what was recorded since the last call into `into`.
    pub fn take_interval(&self, into: &mut Histogram<u64>) {
        let mut histogram = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        into.add(&*histogram)
            .expect("histograms share their bounds");
        histogram.reset();
    }
}

/// Everything the workers report while they run.
#[derive(Default)]
pub struct Meter {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// connection.blocked notifications: the broker throttling publishers.
    pub blocked: AtomicU64,
    /// connection.unblocked notifications: the broker letting them go on.
    pub unblocked: AtomicU64,
    /// Time publisher connections spent blocked, summed over connections.
    pub blocked_ns: AtomicU64,
    /// Publisher connections whose connection.close the broker did not
    /// answer within the drain time: it had stopped reading them.
    pub unclosed: AtomicU64,
    pub latency: LatencyMeter,
    pub confirm_latency: LatencyMeter,
}

/// A reading of the counters, to difference for rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub received: u64,
}

impl Meter {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}
