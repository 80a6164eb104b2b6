//! Short runs against a real broker: counts add up, nothing is lost,
//! duplicated or reordered, and the exit status says so.

mod common;

use common::{loadgen, Broker};

/// Runs with `args` plus the broker URI, quiet and as JSON; asserts a clean
/// exit and returns the summary.
fn run_clean(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let summary = run_json(broker, args);
    for problem in ["lost", "duplicated", "reordered", "foreign"] {
        assert_eq!(summary[problem], 0, "{problem}: {summary}");
    }
    assert_eq!(summary["loss_checked"], true, "{summary}");
    summary
}

/// Runs loadgen against `broker` with `args`, quiet and as JSON; asserts a
/// zero exit status and returns the summary.
fn run_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--uri", &broker.url, "--json", "--quiet"];
    all.extend_from_slice(args);
    let run = loadgen(&all);
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.json()
}

#[test]
fn two_producers_to_two_queues_deliver_every_message_once() {
    let broker = Broker::start();
    let summary = run_clean(
        &broker,
        &[
            "-x", "2", "-y", "2", "--queues", "2", "-C", "2000", "-z", "0",
        ],
    );
    assert_eq!(summary["sent"], 4000);
    assert_eq!(summary["received"], 4000);
    assert_eq!(summary["latency_us"]["count"], 4000);
}

#[test]
fn fanout_with_confirms_delivers_to_every_queue() {
    let broker = Broker::start();
    let summary = run_clean(
        &broker,
        &[
            "-t", "fanout", "--queues", "3", "-y", "3", "-c", "64", "-C", "1000", "-z", "0",
        ],
    );
    assert_eq!(summary["sent"], 1000);
    assert_eq!(summary["confirmed"], 1000);
    assert_eq!(summary["unconfirmed"], 0);
    assert_eq!(summary["received"], 3000);
    assert_eq!(summary["confirm_latency_us"]["count"], 1000);
}

#[test]
fn consumers_sharing_a_queue_with_multi_acks_and_prefetch_see_every_message() {
    let broker = Broker::start();
    let summary = run_clean(
        &broker,
        &[
            "-x",
            "1",
            "-y",
            "3",
            "-A",
            "10",
            "-q",
            "50",
            "--channels-per-connection",
            "3",
            "-C",
            "3000",
            "-z",
            "0",
        ],
    );
    assert_eq!(summary["received"], 3000);
}

#[test]
fn sixteen_octet_bodies_carry_the_whole_stamp() {
    let broker = Broker::start();
    let summary = run_clean(&broker, &["-s", "16", "-a", "-C", "5000", "-z", "0"]);
    assert_eq!(summary["received"], 5000);
    assert_eq!(summary["latency_us"]["count"], 5000);
}

#[test]
fn a_topic_exchange_with_many_bindings_routes_only_the_real_key() {
    let broker = Broker::start();
    let summary = run_clean(
        &broker,
        &[
            "-t",
            "topic",
            "-k",
            "orders.eu.created",
            "--bindings",
            "300",
            "-a",
            "-C",
            "1000",
            "-z",
            "0",
        ],
    );
    assert_eq!(summary["received"], 1000);
}

#[test]
fn a_rate_limited_run_sends_about_rate_times_duration() {
    let broker = Broker::start();
    let summary = run_clean(
        &broker,
        &["-r", "500", "-z", "1", "--idle-connections", "3", "-f"],
    );
    let sent = summary["sent"].as_u64().unwrap();
    assert!((400..=600).contains(&sent), "sent {sent}");
    assert_eq!(summary["received"], sent);
}

#[test]
fn publishing_without_consumers_reports_loss_as_unchecked() {
    let broker = Broker::start();
    let run = loadgen(&[
        "--uri",
        &broker.url,
        "--json",
        "--quiet",
        "-y",
        "0",
        "--queues",
        "0",
        "-C",
        "500",
        "-z",
        "0",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = run.json();
    assert_eq!(summary["sent"], 500);
    assert_eq!(summary["loss_checked"], false);
}

#[test]
fn the_ceiling_reports_publish_and_consume_rates() {
    let broker = Broker::start();
    let run = loadgen(&[
        "ceiling",
        "--uri",
        &broker.url,
        "--quiet",
        "-z",
        "1",
        "--prefill",
        "2000",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("publish-only") && run.stdout.contains("consume-only"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2000 messages"), "{}", run.stdout);
}

#[test]
fn a_run_without_producers_drains_the_backlog_of_a_named_queue_and_stops() {
    let broker = Broker::start();
    let queue = format!("loadgen-backlog-{}", std::process::id());
    let fill = ["-x", "2", "-y", "0", "-u", &queue, "-f", "-c", "64"];
    let filled = run_json(&broker, &[&fill[..], &["-C", "1500", "-z", "0"]].concat());
    assert_eq!(filled["confirmed"], 3000);
    // Prefetch 100: the first deliveries come in one read with consume-ok,
    // and nothing more comes until they are handled (the run hung on that).
    let drain = [
        "-x", "0", "-y", "1", "-u", &queue, "-f", "-q", "100", "-A", "10",
    ];
    let drained = run_json(&broker, &[&drain[..], &["-z", "0"]].concat());
    assert_eq!(drained["received"], 3000, "{drained}");
    assert_eq!(
        drained["foreign"], 3000,
        "another run's messages: {drained}"
    );
    assert_eq!(drained["loss_checked"], false);
    // With no time limit it ended because the backlog was drained: an
    // empty queue ends the next run at once.
    let empty = run_json(&broker, &[&drain[..], &["-z", "0"]].concat());
    assert_eq!(empty["received"], 0);
}

#[test]
fn the_intervals_add_up_to_the_totals() {
    let broker = Broker::start();
    let summary = run_json(&broker, &["-r", "1000", "-z", "2.5", "-c", "100"]);
    let intervals = summary["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 2, "{summary}");
    for figure in ["sent", "confirmed", "received"] {
        let total: u64 = intervals.iter().map(|i| i[figure].as_u64().unwrap()).sum();
        assert_eq!(total, summary[figure], "{figure}: {summary}");
    }
    let ends: Vec<f64> = intervals
        .iter()
        .map(|i| i["end_s"].as_f64().unwrap())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
}
