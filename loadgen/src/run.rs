//! One run: set up the topology, start consumers then producers, report
//! every second, stop publishing, drain, stop consuming, check.
//!
//! The run's phases, driven by the main thread:
//!
//! ```text
//! Publishing --(duration, counts reached, Ctrl-C)--> Draining
//! Draining --(everything expected received, or the drain timeout)--> Done
//! ```
//!
//! With no producers and a named queue, the run drains the backlog the
//! queue held when it was declared: "publishing" then ends once that many
//! messages arrived, and its time is the consumers' time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::amqp::{Connection, Error};
use crate::consumer::{self, ConsumeSettings, ConsumerSpec};
use crate::meter::Counts;
use crate::producer::{self, ProducerResult, ProducerSpec, PublishSettings};
use crate::report::{Interval, IntervalLog, Reporter};
use crate::shared::Shared;
use crate::topology::Topology;
use crate::tracker::{self, ConsumerTracker, ProducerTally, Verdict};
use crate::uri::AmqpUri;

/// How often the main thread looks at the run's state.
const TICK: Duration = Duration::from_millis(5);
/// The control channel of the setup connection.
const SETUP_CHANNEL: u16 = 1;

/// A run, fully resolved from the options.
#[derive(Clone, Debug)]
pub struct Plan {
    pub uri: AmqpUri,
    pub topology: Topology,
    pub producers: usize,
    pub consumers: usize,
    pub channels_per_connection: usize,
    pub publish: PublishSettings,
    pub consume: ConsumeSettings,
    /// Publishing time; `None` to publish until the counts are reached.
    pub duration: Option<Duration>,
    pub drain: Duration,
    pub idle_connections: usize,
    /// Local ports of the worker connections, consumers' first; empty for
    /// any.
    pub local_ports: Vec<u16>,
    /// For consume-only runs: stop once this many messages arrived. A run
    /// with no producers that names its queue expects what the queue held
    /// when it was declared: it drains a backlog another run left.
    pub expect_received: Option<u64>,
    /// Declare the topology first; delete generated queues at the end.
    pub declare: bool,
    pub delete: bool,
    pub progress: bool,
}

impl Plan {
    /// No producers, and a queue someone else may have filled.
    fn consumes_only(&self) -> bool {
        self.producers == 0 && self.consumers > 0 && !self.topology.generated
    }
}

/// What a run measured.
pub struct Outcome {
    pub publish_time: Duration,
    pub total_time: Duration,
    pub counts: Counts,
    /// Messages received by the time publishing stopped.
    pub received_while_publishing: u64,
    pub unconfirmed: u64,
    pub blocked: Blocked,
    pub latency: Histogram<u64>,
    pub confirm_latency: Histogram<u64>,
    pub verdict: Verdict,
    pub interrupted: bool,
    /// The counts of each reporting interval, about a second each.
    pub intervals: Vec<Interval>,
}

/// How the broker held publishers back: connection.blocked and
/// connection.unblocked seen, and the time spent blocked, summed over
/// publishing connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Blocked {
    pub blocked: u64,
    pub unblocked: u64,
    pub time: Duration,
    /// Publisher connections the broker never read up to their close.
    pub unclosed: u64,
}

struct Workers {
    producers: Vec<JoinHandle<Vec<ProducerResult>>>,
    consumers: Vec<JoinHandle<Vec<ConsumerTracker>>>,
}

pub fn run(
    plan: &Plan,
    interrupt: &AtomicBool,
    mut log: Option<&mut IntervalLog>,
) -> Result<Outcome, Error> {
    let mut setup = Connection::open(&plan.uri, "loadgen setup")?;
    setup.open_channel(SETUP_CHANNEL)?;
    let held = match plan.declare {
        true => plan.topology.declare(&mut setup, SETUP_CHANNEL)?,
        false => 0,
    };
    let plan = &Plan {
        expect_received: plan
            .expect_received
            .or(plan.consumes_only().then_some(held)),
        ..plan.clone()
    };
    let idle = (0..plan.idle_connections)
        .map(|i| Connection::open(&plan.uri, &format!("loadgen idle {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared::default());
    let starting = Instant::now();
    let workers = start(plan, &shared)?;
    let mut reporter = Reporter::new(plan.progress);
    // Producers wait for the gate, but consumers take deliveries from
    // consume-ok on: with no producers, that is where the clock starts (a
    // drain of a backlog is well under way by the time the gate opens).
    let started = match plan.producers {
        0 => starting,
        _ => Instant::now(),
    };
    let (results, publish_time, received_while_publishing, interrupted) = publish_phase(
        plan,
        started,
        &shared,
        workers.producers,
        interrupt,
        &mut reporter,
        &mut log,
    )?;
    let expected = expected_deliveries(plan, &results);
    // Late consumers have all of the drain time from when they start.
    let drain_from = (started + publish_time).max(started + plan.consume.start_after);
    drain_phase(plan, &shared, expected, drain_from, &mut reporter, &mut log)?;
    shared.stop_consumers.store(true, Ordering::Relaxed);
    let trackers: Vec<ConsumerTracker> = workers.consumers.into_iter().flat_map(join).collect();
    reporter.tick(&shared.meter, log)?;
    if let Some(error) = shared.take_failure() {
        return Err(error);
    }
    if plan.delete {
        plan.topology.delete(&mut setup, SETUP_CHANNEL)?;
    }
    setup.close();
    idle.into_iter().for_each(Connection::close);
    let tallies: Vec<ProducerTally> = results
        .iter()
        .map(|r| ProducerTally {
            sent: r.sent,
            nacked: r.nacked,
            routes: plan.topology.routes[usize::from(r.producer)].clone(),
        })
        .collect();
    let mut verdict = tracker::check(&tallies, &trackers, plan.topology.queues.len());
    if plan.consumers == 0 {
        verdict.loss_unchecked = Some("no consumers".into());
    } else if plan.producers == 0 {
        verdict.loss_unchecked = Some("no producers: the messages are another run's".into());
    }
    Ok(Outcome {
        publish_time,
        total_time: started.elapsed(),
        counts: shared.meter.counts(),
        received_while_publishing,
        unconfirmed: results.iter().map(|r| r.unconfirmed).sum(),
        blocked: Blocked {
            blocked: shared.meter.blocked.load(Ordering::Relaxed),
            unblocked: shared.meter.unblocked.load(Ordering::Relaxed),
            time: Duration::from_nanos(shared.meter.blocked_ns.load(Ordering::Relaxed)),
            unclosed: shared.meter.unclosed.load(Ordering::Relaxed),
        },
        latency: reporter.latency,
        confirm_latency: reporter.confirm_latency,
        intervals: reporter.intervals,
        verdict,
        interrupted,
    })
}

/// Starts every worker thread and waits until each has set up (or failed
/// to), then opens the gate.
fn start(plan: &Plan, shared: &Arc<Shared>) -> Result<Workers, Error> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let per_connection = plan.channels_per_connection.max(1);
    let consumer_specs: Vec<ConsumerSpec> = (0..plan.consumers)
        .map(|consumer| {
            let queue_index = consumer % plan.topology.queues.len();
            ConsumerSpec {
                consumer,
                channel: (consumer % per_connection) as u16 + 1,
                queue: plan.topology.queues[queue_index].clone(),
                queue_index,
            }
        })
        .collect();
    let producer_specs: Vec<ProducerSpec> = (0..plan.producers)
        .map(|producer| ProducerSpec {
            // `plan` checked --producers against the stamp's u16.
            producer: producer as u16,
            channel: (producer % per_connection) as u16 + 1,
            routing_key: plan.topology.publish_keys[producer].clone(),
        })
        .collect();
    let mut workers = Workers {
        producers: Vec::new(),
        consumers: Vec::new(),
    };
    let mut local_ports = plan.local_ports.iter().copied();
    for specs in consumer_specs.chunks(per_connection) {
        let (uri, port, specs, settings, shared, ready) = (
            plan.uri.clone(),
            local_ports.next(),
            specs.to_vec(),
            plan.consume.clone(),
            Arc::clone(shared),
            ready_tx.clone(),
        );
        workers.consumers.push(spawn("loadgen-consumer", move || {
            consumer::run_connection(&uri, port, specs, &settings, &shared, ready)
        })?);
    }
    for specs in producer_specs.chunks(per_connection) {
        let (uri, port, specs, settings, shared, ready) = (
            plan.uri.clone(),
            local_ports.next(),
            specs.to_vec(),
            plan.publish.clone(),
            Arc::clone(shared),
            ready_tx.clone(),
        );
        workers.producers.push(spawn("loadgen-producer", move || {
            producer::run_connection(&uri, port, specs, &settings, &shared, ready)
        })?);
    }
    // Every worker reports once, successful or not.
    for _ in 0..workers.producers.len() + workers.consumers.len() {
        if ready_rx.recv().is_err() {
            break;
        }
    }
    if shared.failed() {
        shared.open_gate(false);
        workers.producers.into_iter().for_each(|h| drop(join(h)));
        workers.consumers.into_iter().for_each(|h| drop(join(h)));
        return Err(shared.take_failure().expect("failed() saw a failure"));
    }
    shared.open_gate(true);
    Ok(workers)
}

fn spawn<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, Error> {
    thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map_err(Error::io("start a worker thread"))
}

fn join<T: Default>(handle: JoinHandle<T>) -> T {
    handle.join().unwrap_or_default()
}

type PublishResult = (Vec<ProducerResult>, Duration, u64, bool);

/// Reports every second until publishing, which began at `started`, is
/// over; returns what each producer did, how long publishing lasted, what
/// was received by then and whether it was interrupted.
fn publish_phase(
    plan: &Plan,
    started: Instant,
    shared: &Shared,
    producers: Vec<JoinHandle<Vec<ProducerResult>>>,
    interrupt: &AtomicBool,
    reporter: &mut Reporter,
    log: &mut Option<&mut IntervalLog>,
) -> Result<PublishResult, Error> {
    let mut interrupted = false;
    loop {
        thread::sleep(TICK);
        interrupted |= interrupt.load(Ordering::Relaxed);
        let expired = plan.duration.is_some_and(|d| started.elapsed() >= d);
        let producers_done = plan.producers > 0 && producers.iter().all(JoinHandle::is_finished);
        let consumed_all = plan
            .expect_received
            .is_some_and(|n| shared.meter.counts().received >= n);
        if interrupted || expired || producers_done || consumed_all || shared.failed() {
            break;
        }
        if reporter.due() {
            reporter.tick(&shared.meter, log.as_deref_mut())?;
        }
    }
    let publish_time = started.elapsed();
    let received = shared.meter.counts().received;
    shared.stop_producers.store(true, Ordering::Relaxed);
    let results = producers.into_iter().flat_map(join).collect();
    Ok((results, publish_time, received, interrupted))
}

/// Deliveries the consumers should see: each message once per routed queue
/// that has a consumer.
fn expected_deliveries(plan: &Plan, results: &[ProducerResult]) -> u64 {
    if let Some(expected) = plan.expect_received {
        return expected;
    }
    let consumed = |queue: &usize| plan.consumers > 0 && *queue < plan.consumers;
    results
        .iter()
        .map(|r| {
            let queues = plan.topology.routes[usize::from(r.producer)]
                .iter()
                .filter(|q| consumed(q))
                .count();
            (r.sent - r.nacked) * queues as u64
        })
        .sum()
}

fn drain_phase(
    plan: &Plan,
    shared: &Shared,
    expected: u64,
    drain_from: Instant,
    reporter: &mut Reporter,
    log: &mut Option<&mut IntervalLog>,
) -> Result<(), Error> {
    let deadline = drain_from + plan.drain;
    while plan.consumers > 0 && !shared.failed() && Instant::now() < deadline {
        if shared.meter.counts().received >= expected {
            break;
        }
        if reporter.due() {
            reporter.tick(&shared.meter, log.as_deref_mut())?;
        }
        thread::sleep(TICK);
    }
    Ok(())
}
