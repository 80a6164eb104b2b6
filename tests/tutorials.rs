//! The six RabbitMQ tutorials for Python (pika 1.x), run unchanged in what
//! they do and print, against a warren with two shards. Each test asserts
//! the exact lines the tutorial programs print.
//!
//! The scripts are in `tests/python/`; they read the broker from `AMQP_URL`.
//! Consumers are started first and the test waits for their "Waiting" line
//! (printed once their queue is bound or their consumer registered) before
//! anything is published. Long-running consumers are told how many messages
//! to take (`TUTORIAL_MAX_MESSAGES`), then exit on their own, so the test
//! can compare their whole output.

mod common;

use std::time::Duration;

use common::{run_python, wait_for_line_any, Broker, PyProcess};

/// Upper bound for any one script to do its part (start, connect, act).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

const WAITING_FOR_MESSAGES: &str = " [*] Waiting for messages. To exit press CTRL+C";
const WAITING_FOR_LOGS: &str = " [*] Waiting for logs. To exit press CTRL+C";

/// In differential mode the broker is shared with earlier runs: empty the
/// named queues a test relies on. A fresh warren needs nothing.
fn empty_queues_if_shared(broker: &Broker, queues: &[&str]) {
    if broker.is_external() {
        run_python(
            "queue_purge.py",
            queues,
            &broker.amqp_url(),
            &[],
            SCRIPT_TIMEOUT,
        );
    }
}

/// Starts a consumer that exits after `message_count` messages, and waits
/// until it says it is waiting.
fn start_consumer(
    broker: &Broker,
    script: &str,
    args: &[&str],
    message_count: usize,
    waiting_line: &str,
) -> PyProcess {
    let count = message_count.to_string();
    let mut consumer = PyProcess::spawn(
        script,
        args,
        &broker.amqp_url(),
        &[("TUTORIAL_MAX_MESSAGES", &count)],
    );
    consumer.wait_for_line(waiting_line, SCRIPT_TIMEOUT);
    consumer
}

/// Runs a producer to completion and returns what it printed.
fn produce(broker: &Broker, script: &str, args: &[&str]) -> Vec<String> {
    run_python(script, args, &broker.amqp_url(), &[], SCRIPT_TIMEOUT)
}

/// Waits for a consumer to exit cleanly and returns all it printed.
fn finish(mut consumer: PyProcess) -> Vec<String> {
    consumer.expect_success(SCRIPT_TIMEOUT);
    consumer.lines().to_vec()
}

#[test]
fn tutorial_1_hello_world() {
    let broker = Broker::start();
    empty_queues_if_shared(&broker, &["hello"]);
    let receiver = start_consumer(&broker, "receive.py", &[], 1, WAITING_FOR_MESSAGES);

    assert_eq!(
        produce(&broker, "send.py", &[]),
        [" [x] Sent 'Hello World!'"]
    );
    assert_eq!(
        finish(receiver),
        [WAITING_FOR_MESSAGES, " [x] Received b'Hello World!'"]
    );
}

#[test]
fn tutorial_2_work_queues_round_robin_and_redelivery_after_a_worker_dies() {
    let broker = Broker::start();
    empty_queues_if_shared(&broker, &["task_queue"]);
    let url = broker.amqp_url();
    let show_redelivered = [("TUTORIAL_SHOW_REDELIVERED", "1")];
    let mut workers = [
        PyProcess::spawn("worker.py", &[], &url, &show_redelivered),
        PyProcess::spawn("worker.py", &[], &url, &show_redelivered),
    ];
    for worker in &mut workers {
        worker.wait_for_line(WAITING_FOR_MESSAGES, SCRIPT_TIMEOUT);
    }

    // Round-robin with prefetch 1: every task is done once, by some worker,
    // and both workers take part.
    let tasks = [
        "First message.",
        "Second message..",
        "Third message...",
        "Fourth message....",
    ];
    for task in tasks {
        let words: Vec<&str> = task.split(' ').collect();
        assert_eq!(
            produce(&broker, "new_task.py", &words),
            [format!(" [x] Sent {task}")]
        );
    }
    for _ in tasks {
        let [first, second] = &mut workers;
        wait_for_line_any(&mut [first, second], " [x] Done", SCRIPT_TIMEOUT);
    }
    let mut received = Vec::new();
    for worker in &workers {
        let mine: Vec<String> = worker
            .lines()
            .iter()
            .filter_map(|line| line.strip_prefix(" [x] Received "))
            .map(str::to_string)
            .collect();
        assert!(
            !mine.is_empty(),
            "round-robin gave this worker nothing\n{}",
            worker.transcript()
        );
        assert_eq!(
            worker.count_lines(" [x] redelivered=False"),
            mine.len(),
            "a first delivery was flagged redelivered\n{}",
            worker.transcript()
        );
        received.extend(mine);
    }
    received.sort();
    let mut expected: Vec<String> = tasks.iter().map(|task| task.to_string()).collect();
    expected.sort();
    assert_eq!(received, expected, "each task must be done exactly once");

    // A worker killed (SIGKILL) before it acks: its task goes to the other.
    let long_task = "Long task..........";
    assert_eq!(
        produce(&broker, "new_task.py", &["Long", "task.........."]),
        [format!(" [x] Sent {long_task}")]
    );
    let received_line = format!(" [x] Received {long_task}");
    let (victim, _) = {
        let [first, second] = &mut workers;
        wait_for_line_any(&mut [first, second], &received_line, SCRIPT_TIMEOUT)
    };
    workers[victim].kill();
    let survivor = &mut workers[1 - victim];
    survivor.wait_for_line(&received_line, SCRIPT_TIMEOUT);
    let flag = survivor.wait_for_line(" [x] redelivered=", SCRIPT_TIMEOUT);
    assert_eq!(flag, " [x] redelivered=True", "{}", survivor.transcript());
}

#[test]
fn tutorial_3_publish_subscribe_fanout_reaches_every_receiver() {
    let broker = Broker::start();
    let receivers = [
        start_consumer(&broker, "receive_logs.py", &[], 1, WAITING_FOR_LOGS),
        start_consumer(&broker, "receive_logs.py", &[], 1, WAITING_FOR_LOGS),
    ];

    assert_eq!(
        produce(&broker, "emit_log.py", &[]),
        [" [x] Sent info: Hello World!"]
    );
    for receiver in receivers {
        assert_eq!(
            finish(receiver),
            [WAITING_FOR_LOGS, " [x] b'info: Hello World!'"]
        );
    }
}

#[test]
fn tutorial_4_routing_direct_exchange_delivers_by_severity() {
    let broker = Broker::start();
    let errors_only = start_consumer(
        &broker,
        "receive_logs_direct.py",
        &["error"],
        1,
        WAITING_FOR_LOGS,
    );
    let everything = start_consumer(
        &broker,
        "receive_logs_direct.py",
        &["info", "warning", "error"],
        3,
        WAITING_FOR_LOGS,
    );

    // The error comes last: had the error-only receiver been given an info
    // or a warning, that would be the one line it prints before exiting.
    let logs = [
        ("info", "Hello World!"),
        ("warning", "Disk is filling up."),
        ("error", "Run. Run. Or it will explode."),
    ];
    for (severity, message) in logs {
        assert_eq!(
            produce(&broker, "emit_log_direct.py", &[severity, message]),
            [format!(" [x] Sent {severity}:{message}")]
        );
    }
    assert_eq!(
        finish(errors_only),
        [
            WAITING_FOR_LOGS,
            " [x] error:b'Run. Run. Or it will explode.'"
        ]
    );
    assert_eq!(
        finish(everything),
        [
            WAITING_FOR_LOGS,
            " [x] info:b'Hello World!'",
            " [x] warning:b'Disk is filling up.'",
            " [x] error:b'Run. Run. Or it will explode.'",
        ]
    );
}

#[test]
fn tutorial_5_topics_match_star_and_hash_binding_keys() {
    let broker = Broker::start();
    // Q1 and Q2 of the tutorial's figure.
    let orange = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
    ];
    let rabbit_or_lazy = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "lazy.pink.rabbit",
        "lazy.brown.fox",
        "lazy.orange.new.rabbit",
    ];
    let q1 = start_consumer(
        &broker,
        "receive_logs_topic.py",
        &["*.orange.*"],
        orange.len(),
        WAITING_FOR_LOGS,
    );
    let q2 = start_consumer(
        &broker,
        "receive_logs_topic.py",
        &["*.*.rabbit", "lazy.#"],
        rabbit_or_lazy.len(),
        WAITING_FOR_LOGS,
    );

    // Keys that match nothing (or, for lazy.pink.rabbit, two bindings of one
    // queue) are sent before each queue's last match, so a wrong or a
    // duplicate delivery shows up in the output the receivers print.
    let routing_keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.brown.fox",
        "quick.orange.new.rabbit",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.pink.rabbit",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.orange.new.rabbit",
    ];
    for routing_key in routing_keys {
        let message = format!("Hello {routing_key}");
        assert_eq!(
            produce(&broker, "emit_log_topic.py", &[routing_key, &message]),
            [format!(" [x] Sent {routing_key}:{message}")]
        );
    }
    let expected = |keys: &[&str]| -> Vec<String> {
        std::iter::once(WAITING_FOR_LOGS.to_string())
            .chain(keys.iter().map(|key| format!(" [x] {key}:b'Hello {key}'")))
            .collect()
    };
    assert_eq!(finish(q1), expected(&orange));
    assert_eq!(finish(q2), expected(&rabbit_or_lazy));
}

#[test]
fn tutorial_6_rpc_fibonacci() {
    let broker = Broker::start();
    empty_queues_if_shared(&broker, &["rpc_queue"]);
    let server = start_consumer(
        &broker,
        "rpc_server.py",
        &[],
        1,
        " [x] Awaiting RPC requests",
    );

    assert_eq!(
        produce(&broker, "rpc_client.py", &[]),
        [" [x] Requesting fib(30)", " [.] Got 832040"]
    );
    assert_eq!(
        finish(server),
        [" [x] Awaiting RPC requests", " [.] fib(30)"]
    );
}
