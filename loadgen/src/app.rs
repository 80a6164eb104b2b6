//! From parsed options to an exit status: builds the plan, runs it (or the
//! ceiling's phases, or a comparison), prints and writes the results.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::amqp::Error;
use crate::cli::{Cli, Command, RunArgs};
use crate::consumer::ConsumeSettings;
use crate::producer::PublishSettings;
use crate::report::{IntervalLog, Summary};
use crate::run::{self, Outcome, Plan};
use crate::stamp::{PRODUCER_COUNT_MAX, STAMP_SIZE};
use crate::topology::{new_run_id, Topology};
use crate::uri::AmqpUri;
use crate::{compare, hgrm};

/// Exit status when messages were lost, duplicated or reordered.
pub const EXIT_CHECK_FAILED: i32 = 3;

pub fn main(cli: Cli, interrupt: &AtomicBool) -> i32 {
    let outcome = match cli.command {
        None => run_once(&cli.run, interrupt),
        Some(Command::Ceiling { run, prefill, .. }) => ceiling(&run, prefill, interrupt),
        Some(Command::Compare(args)) => compare::compare(&args).map(|table| {
            println!("{table}");
            0
        }),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("loadgen: {error}");
        error.exit_code()
    })
}

pub fn plan(args: &RunArgs) -> Result<Plan, Error> {
    let uri = AmqpUri::parse(&args.uri).map_err(|e| Error::Usage(e.to_string()))?;
    if args.size < STAMP_SIZE {
        return Err(Error::Usage(format!(
            "--size must be at least {STAMP_SIZE}: the body carries a timestamp stamp"
        )));
    }
    if args.producers > PRODUCER_COUNT_MAX {
        return Err(Error::Usage(format!(
            "--producers must be at most {PRODUCER_COUNT_MAX}: the stamp numbers them in 16 bits"
        )));
    }
    if args.consumers > 0 && args.queues == 0 {
        return Err(Error::Usage(
            "consumers need at least one queue (--queues)".into(),
        ));
    }
    if ![args.rate, args.duration, args.drain, args.consumer_delay]
        .iter()
        .all(|&value| value >= 0.0 && value.is_finite())
    {
        return Err(Error::Usage(
            "--rate, --duration, --drain and --consumer-delay must be finite, not negative".into(),
        ));
    }
    if args.duration == 0.0 && args.count == 0 && args.producers > 0 {
        return Err(Error::Usage(
            "give a --duration or a --count, or the run never ends".into(),
        ));
    }
    if args.channels_per_connection == 0 || args.channels_per_connection > usize::from(u16::MAX) {
        return Err(Error::Usage(
            "--channels-per-connection must be from 1 to 65535".into(),
        ));
    }
    let per_connection = args.channels_per_connection;
    let connections =
        args.consumers.div_ceil(per_connection) + args.producers.div_ceil(per_connection);
    if !args.local_ports.is_empty() && args.local_ports.len() != connections {
        return Err(Error::Usage(format!(
            "--local-ports needs one port per worker connection: {connections} here"
        )));
    }
    let run_id = new_run_id();
    let topology = Topology::from_args(args, run_id)?;
    let ack_every = u64::from(args.multi_ack_every.max(1));
    Ok(Plan {
        publish: PublishSettings {
            run_id,
            size: args.size,
            rate: args.rate,
            confirm_window: args.confirm,
            persistent: args.persistent,
            count: if args.count == 0 {
                u64::MAX
            } else {
                args.count
            },
            exchange: topology.exchange.clone(),
            drain: Duration::from_secs_f64(args.drain),
        },
        consume: ConsumeSettings {
            run_id,
            auto_ack: args.auto_ack,
            // An ack every N with a prefetch below N would wait forever.
            ack_every: if args.prefetch > 0 {
                ack_every.min(u64::from(args.prefetch))
            } else {
                ack_every
            },
            prefetch: args.prefetch,
            producer_count: args.producers,
            start_after: Duration::from_secs_f64(args.consumer_delay),
        },
        uri,
        topology,
        producers: args.producers,
        consumers: args.consumers,
        channels_per_connection: args.channels_per_connection,
        duration: (args.duration > 0.0).then(|| Duration::from_secs_f64(args.duration)),
        drain: Duration::from_secs_f64(args.drain),
        idle_connections: args.idle_connections,
        local_ports: args.local_ports.clone(),
        expect_received: None,
        declare: true,
        delete: true,
        progress: !args.quiet,
    })
}

fn run_once(args: &RunArgs, interrupt: &AtomicBool) -> Result<i32, Error> {
    let plan = plan(args)?;
    let mut log = args.hlog.as_deref().map(IntervalLog::create).transpose()?;
    let outcome = run::run(&plan, interrupt, log.as_mut())?;
    if let Some(log) = log {
        log.finish()?;
    }
    for (path, histogram) in [
        (&args.hgrm, &outcome.latency),
        (&args.confirm_hgrm, &outcome.confirm_latency),
    ] {
        if let Some(path) = path {
            std::fs::write(path, hgrm::write(histogram))
                .map_err(Error::io(format!("write {}", path.display())))?;
        }
    }
    let summary = summary(&plan, &outcome);
    if args.json {
        println!("{}", summary.json());
    } else {
        println!("{}", summary.text());
    }
    Ok(if outcome.verdict.failed() {
        EXIT_CHECK_FAILED
    } else {
        0
    })
}

fn summary<'a>(plan: &Plan, outcome: &'a Outcome) -> Summary<'a> {
    Summary {
        producers: plan.producers,
        consumers: plan.consumers,
        queues: plan.topology.queues.len(),
        size: plan.publish.size,
        publish_time: outcome.publish_time,
        total_time: outcome.total_time,
        counts: outcome.counts,
        received_while_publishing: outcome.received_while_publishing,
        consumer_delay: plan.consume.start_after,
        unconfirmed: outcome.unconfirmed,
        blocked: outcome.blocked,
        latency: &outcome.latency,
        confirm_latency: &outcome.confirm_latency,
        verdict: &outcome.verdict,
        interrupted: outcome.interrupted,
        intervals: &outcome.intervals,
    }
}

/// loadgen's own ceiling against a broker: publish-only into an exchange
/// with nothing bound (the broker routes and drops), then consume-only
/// from a queue pre-filled with `prefill` messages.
fn ceiling(args: &RunArgs, prefill: u64, interrupt: &AtomicBool) -> Result<i32, Error> {
    // Each phase opens other connections, so no port list fits them all.
    let base = Plan {
        local_ports: Vec::new(),
        ..plan(args)?
    };
    let publish_only = Plan {
        topology: Topology {
            exchange: "loadgen.ceiling".into(),
            queues: vec![],
            routes: vec![vec![]; args.producers],
            ..base.topology.clone()
        },
        consumers: 0,
        ..base.clone()
    };
    let published = run::run(
        &Plan {
            publish: PublishSettings {
                exchange: "loadgen.ceiling".into(),
                ..base.publish.clone()
            },
            ..publish_only
        },
        interrupt,
        None,
    )?;
    let publish_rate = published.counts.sent as f64 / published.publish_time.as_secs_f64();
    let queue = Topology {
        extra_bindings: 0,
        ..Topology::from_args(
            &RunArgs {
                queues: 1,
                routing_key: None,
                bindings: 0,
                ..args.clone()
            },
            base.publish.run_id,
        )?
    };
    let producers = args.producers.max(1);
    let fill = Plan {
        topology: Topology {
            routes: vec![vec![0]; producers],
            publish_keys: vec![queue.publish_keys[0].clone(); producers],
            ..queue.clone()
        },
        producers,
        consumers: 0,
        publish: PublishSettings {
            count: prefill.div_ceil(producers as u64),
            confirm_window: base.publish.confirm_window.max(1000),
            exchange: queue.exchange.clone(),
            ..base.publish.clone()
        },
        duration: None,
        delete: false,
        progress: false,
        ..base.clone()
    };
    let filled = run::run(&fill, interrupt, None)?;
    let consume_only = Plan {
        topology: Topology {
            routes: vec![],
            publish_keys: vec![],
            ..queue
        },
        producers: 0,
        consumers: args.consumers.max(1),
        consume: ConsumeSettings {
            producer_count: 0,
            ..base.consume.clone()
        },
        expect_received: Some(filled.counts.sent),
        duration: Some(Duration::from_secs(600)),
        declare: false,
        ..base
    };
    let consumed = run::run(&consume_only, interrupt, None)?;
    let consume_rate = consumed.counts.received as f64 / consumed.publish_time.as_secs_f64();
    println!(
        "loadgen ceiling: publish-only {publish_rate:.0} msg/s ({} producers, {} B), consume-only {consume_rate:.0} msg/s ({} consumers, {} messages)",
        args.producers,
        args.size,
        args.consumers.max(1),
        consumed.counts.received,
    );
    Ok(0)
}
