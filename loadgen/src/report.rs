//! What a run tells its user: a progress line every second on stderr, the
//! interval log, and the final summary as text or JSON.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::amqp::Error;
use crate::meter::{new_histogram, Counts, Meter};
use crate::run::Blocked;
use crate::tracker::Verdict;

/// An open interval log (`--hlog`).
pub struct IntervalLog {
    file: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl IntervalLog {
    pub fn create(path: &Path) -> Result<IntervalLog, Error> {
        let file = File::create(path).map_err(Error::io(format!("create {}", path.display())))?;
        let mut log = IntervalLog {
            file: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
        };
        let now = SystemTime::now();
        IntervalLogWriterBuilder::new()
            .add_comment("loadgen interval log: latency in microseconds; tags e2e and confirm")
            .with_start_time(now)
            .with_base_time(now)
            .begin_log_with(&mut log.file, &mut log.serializer)
            .map_err(Error::io("write the interval log"))?;
        Ok(log)
    }

    fn write(
        &mut self,
        histogram: &Histogram<u64>,
        start: Duration,
        length: Duration,
        tag: &str,
    ) -> Result<(), Error> {
        // A builder with no headers writes nothing: this just borrows a writer.
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .map_err(Error::io("write the interval log"))?;
        writer
            .write_histogram(histogram, start, length, Tag::new(tag))
            .map_err(|error| Error::Io {
                during: "write the interval log".into(),
                source: std::io::Error::other(error.to_string()),
            })
    }

    pub fn finish(mut self) -> Result<(), Error> {
        self.file
            .flush()
            .map_err(Error::io("write the interval log"))
    }
}

/// What happened in one reporting interval (about a second): the counts
/// within it, so that a rate over time can be drawn (a publisher that a
/// broker slows down or blocks shows as a dip, not just a lower mean).
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    /// Seconds from the run's start to the interval's end.
    pub end: Duration,
    pub length: Duration,
    pub counts: Counts,
}

/// Takes the interval histograms every second, prints progress, keeps the
/// totals and the counts of every interval.
pub struct Reporter {
    start: Instant,
    last_at: Instant,
    last: Counts,
    pub intervals: Vec<Interval>,
    interval: Histogram<u64>,
    confirm_interval: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub confirm_latency: Histogram<u64>,
    progress: bool,
}

impl Reporter {
    pub fn new(progress: bool) -> Reporter {
        let now = Instant::now();
        Reporter {
            start: now,
            last_at: now,
            last: Counts::default(),
            intervals: Vec::new(),
            interval: new_histogram(),
            confirm_interval: new_histogram(),
            latency: new_histogram(),
            confirm_latency: new_histogram(),
            progress,
        }
    }

    pub fn due(&self) -> bool {
        self.last_at.elapsed() >= Duration::from_secs(1)
    }

    /// Closes the current interval.
    pub fn tick(&mut self, meter: &Meter, log: Option<&mut IntervalLog>) -> Result<(), Error> {
        let now = Instant::now();
        let seconds = (now - self.last_at).as_secs_f64().max(1e-9);
        let counts = meter.counts();
        meter.latency.take_interval(&mut self.interval);
        meter
            .confirm_latency
            .take_interval(&mut self.confirm_interval);
        if self.progress {
            let rate = |now: u64, then: u64| (now - then) as f64 / seconds;
            eprintln!(
                "{:6.1}s  sent {:>9.0}/s  received {:>9.0}/s  confirmed {:>9.0}/s  latency p50 {} p99 {}",
                (now - self.start).as_secs_f64(),
                rate(counts.sent, self.last.sent),
                rate(counts.received, self.last.received),
                rate(counts.confirmed, self.last.confirmed),
                format_ms(&self.interval, 0.5),
                format_ms(&self.interval, 0.99),
            );
        }
        if let Some(log) = log {
            let (start, length) = (self.last_at - self.start, now - self.last_at);
            log.write(&self.interval, start, length, "e2e")?;
            log.write(&self.confirm_interval, start, length, "confirm")?;
        }
        self.latency
            .add(&self.interval)
            .expect("histograms share their bounds");
        self.confirm_latency
            .add(&self.confirm_interval)
            .expect("histograms share their bounds");
        self.interval.reset();
        self.confirm_interval.reset();
        self.intervals.push(Interval {
            end: now - self.start,
            length: now - self.last_at,
            counts: Counts {
                sent: counts.sent - self.last.sent,
                confirmed: counts.confirmed - self.last.confirmed,
                nacked: counts.nacked - self.last.nacked,
                received: counts.received - self.last.received,
            },
        });
        self.last = counts;
        self.last_at = now;
        Ok(())
    }
}

fn format_ms(histogram: &Histogram<u64>, quantile: f64) -> String {
    if histogram.is_empty() {
        return "-".into();
    }
    format!(
        "{:.3} ms",
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    )
}

/// Everything the summary shows.
pub struct Summary<'a> {
    pub producers: usize,
    pub consumers: usize,
    pub queues: usize,
    pub size: usize,
    pub publish_time: Duration,
    pub total_time: Duration,
    pub counts: Counts,
    pub received_while_publishing: u64,
    pub consumer_delay: Duration,
    pub unconfirmed: u64,
    pub blocked: Blocked,
    pub latency: &'a Histogram<u64>,
    pub confirm_latency: &'a Histogram<u64>,
    pub verdict: &'a Verdict,
    pub interrupted: bool,
    pub intervals: &'a [Interval],
}

/// The summary's percentiles: the comparison table's, short of its far
/// tail.
const QUANTILES: &[(&str, f64)] = crate::compare::PERCENTILES.split_at(7).0;

impl Summary<'_> {
    fn rate(&self, count: u64, time: Duration) -> f64 {
        count as f64 / time.as_secs_f64().max(1e-9)
    }

    /// The consumers' rate while the producers publish, from when the
    /// consumers subscribe: the rate a queue under load delivers at, before
    /// the drain empties what it kept.
    fn receive_rate_while_publishing(&self) -> f64 {
        let consuming = self.publish_time.saturating_sub(self.consumer_delay);
        self.rate(self.received_while_publishing, consuming)
    }

    pub fn text(&self) -> String {
        let c = &self.counts;
        let mut lines = vec![format!(
            "loadgen summary: {:.1} s publishing, {:.1} s in all; {} producers, {} consumers, {} queues, {} B messages{}",
            self.publish_time.as_secs_f64(),
            self.total_time.as_secs_f64(),
            self.producers,
            self.consumers,
            self.queues,
            self.size,
            if self.interrupted { " (interrupted)" } else { "" },
        )];
        lines.push(format!(
            "  sent      {:>12} msg {:>12.0} msg/s",
            c.sent,
            self.rate(c.sent, self.publish_time)
        ));
        lines.push(format!(
            "  confirmed {:>12} msg {:>12.0} msg/s",
            c.confirmed,
            self.rate(c.confirmed, self.publish_time)
        ));
        lines.push(format!(
            "  received  {:>12} msg {:>12.0} msg/s",
            c.received,
            self.rate(c.received, self.total_time)
        ));
        lines.push(format!(
            "  received while publishing {:>12} msg {:>12.0} msg/s",
            self.received_while_publishing,
            self.receive_rate_while_publishing()
        ));
        lines.push(format!(
            "  nacked {}  unconfirmed {}  connection.blocked {}  connection.unblocked {}  blocked {:.3} s",
            c.nacked,
            self.unconfirmed,
            self.blocked.blocked,
            self.blocked.unblocked,
            self.blocked.time.as_secs_f64(),
        ));
        if self.blocked.unclosed > 0 {
            lines.push(format!(
                "  {} publisher connections were not read up to their close within the drain: \
                 what they sent last never reached the broker",
                self.blocked.unclosed
            ));
        }
        lines.push(latency_line("end-to-end latency", self.latency));
        lines.push(latency_line("confirm latency   ", self.confirm_latency));
        let v = self.verdict;
        lines.push(format!(
            "  lost {}  duplicated {}  reordered {}  foreign {}{}",
            v.lost,
            v.duplicated,
            v.reordered,
            v.foreign,
            v.loss_unchecked
                .as_ref()
                .map(|why| format!("  (loss not checked: {why})"))
                .unwrap_or_default(),
        ));
        for p in &v.problems {
            lines.push(format!(
                "    producer {} -> queue {}: lost {} duplicated {} reordered {}",
                p.producer, p.queue, p.lost, p.duplicated, p.reordered
            ));
        }
        lines.join("\n")
    }

    pub fn json(&self) -> Value {
        let c = &self.counts;
        let v = self.verdict;
        json!({
            "producers": self.producers,
            "consumers": self.consumers,
            "queues": self.queues,
            "message_size": self.size,
            "publish_time_s": self.publish_time.as_secs_f64(),
            "total_time_s": self.total_time.as_secs_f64(),
            "interrupted": self.interrupted,
            "sent": c.sent,
            "confirmed": c.confirmed,
            "nacked": c.nacked,
            "unconfirmed": self.unconfirmed,
            "received": c.received,
            "received_while_publishing": self.received_while_publishing,
            "consumer_delay_s": self.consumer_delay.as_secs_f64(),
            "connection_blocked": self.blocked.blocked,
            "connection_unblocked": self.blocked.unblocked,
            "blocked_s": self.blocked.time.as_secs_f64(),
            "publishers_unclosed": self.blocked.unclosed,
            "sent_per_s": self.rate(c.sent, self.publish_time),
            "confirmed_per_s": self.rate(c.confirmed, self.publish_time),
            "received_per_s": self.rate(c.received, self.total_time),
            "received_while_publishing_per_s": self.receive_rate_while_publishing(),
            "latency_us": latency_json(self.latency),
            "confirm_latency_us": latency_json(self.confirm_latency),
            "lost": v.lost,
            "duplicated": v.duplicated,
            "reordered": v.reordered,
            "foreign": v.foreign,
            "loss_checked": v.loss_unchecked.is_none(),
            "ok": !v.failed(),
            "problems": v.problems.iter().map(|p| json!({
                "producer": p.producer, "queue": p.queue,
                "lost": p.lost, "duplicated": p.duplicated, "reordered": p.reordered,
            })).collect::<Vec<_>>(),
            "intervals": self.intervals.iter().map(|i| json!({
                "end_s": i.end.as_secs_f64(), "length_s": i.length.as_secs_f64(),
                "sent": i.counts.sent, "confirmed": i.counts.confirmed,
                "received": i.counts.received,
            })).collect::<Vec<_>>(),
        })
    }
}

fn latency_line(name: &str, histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return format!("  {name}: none recorded");
    }
    let values: Vec<String> = QUANTILES
        .iter()
        .map(|(label, q)| {
            format!(
                "{label} {:.3}",
                histogram.value_at_quantile(*q) as f64 / 1000.0
            )
        })
        .collect();
    format!(
        "  {name} ms: {}  max {:.3}",
        values.join("  "),
        histogram.max() as f64 / 1000.0
    )
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("count".into(), json!(histogram.len()));
    if !histogram.is_empty() {
        for &(label, quantile) in QUANTILES {
            object.insert(label.into(), json!(histogram.value_at_quantile(quantile)));
        }
        object.insert("min".into(), json!(histogram.min()));
        object.insert("max".into(), json!(histogram.max()));
        object.insert("mean".into(), json!(histogram.mean()));
    }
    Value::Object(object)
}
