//! Flow control and the memory alarm, with real clients: a work queue
//! under a publish flood keeps serving its consumer, and a publisher past
//! the memory high watermark is blocked (connection.blocked), unblocked
//! when memory is freed, and keeps its connection meanwhile even with a
//! heartbeat shorter than the pause.

mod common;
mod raw;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{run_python, Broker, PyProcess};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use raw::RawClient;
use warren::protocol::frame;
use warren::protocol::method::{BasicPublish, Method};
use warren::protocol::ShortStr;

/// How long the publisher floods the queue.
const FLOOD: Duration = Duration::from_secs(3);
/// Upper bound for one step (connect, declare, a script's line).
const STEP: Duration = Duration::from_secs(30);

/// Both tests load the machine (a flood, a 150 MiB backlog) and one judges
/// a rate: run side by side on two cores, each skews the other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn unique(what: &str) -> String {
    format!("flowtests-{what}-{:016x}", rand::random::<u64>())
}

async fn connect(broker: &Broker) -> Connection {
    let url = broker.amqp_url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    tokio::time::timeout(STEP, connect)
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Before flow control, a publisher as fast as the socket allowed left a
/// manual-ack consumer a trickle (912 msg/s against 558k published): its
/// acks waited behind the publishes. Here a raw socket floods the queue as
/// fast as the broker reads (far faster than any client library) while
/// lapin consumes with prefetch 100 and one ack per message. The consumer
/// must keep at least half the rate it had on its own (the flood takes CPU
/// from the client too, so not all of it), and the broker's memory must stay
/// near its watermark however far the flood runs ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The lock orders this test against the other one; no task of this
// runtime ever takes it, so holding it across awaits blocks nothing.
#[allow(clippy::await_holding_lock)]
async fn a_work_queue_under_a_publish_flood_keeps_serving_its_consumer() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::start_with(&["--memory-high-watermark", "256MiB"]);
    let queue = unique("flood");
    let connection = connect(&broker).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let received = consume_and_ack_each(&channel, &queue).await;

    // The consumer on its own, draining a backlog.
    let addr = broker.addr();
    let (prefill_addr, prefill_queue) = (addr.clone(), queue.clone());
    tokio::task::spawn_blocking(move || {
        publish_raw(&prefill_addr, &prefill_queue, Limit::Count(PREFILL))
    })
    .await
    .expect("prefill");
    let alone = rate(&received, SAMPLE).await;
    assert!(alone > 0.0, "the consumer received nothing on its own");

    // The consumer under the flood, and the broker's memory meanwhile.
    let flood_queue = queue.clone();
    let flooding =
        tokio::task::spawn_blocking(move || publish_raw(&addr, &flood_queue, Limit::Time(FLOOD)));
    // The consumer's rate over the whole flood: a one-second sample at
    // its start failed once in a full run on a noisy machine.
    let (received_before, flood_start) = (received.load(Ordering::Relaxed), Instant::now());
    let mut resident_max = 0;
    while !flooding.is_finished() {
        resident_max = resident_max.max(broker.resident_bytes().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flooded = (received.load(Ordering::Relaxed) - received_before) as f64
        / flood_start.elapsed().as_secs_f64();
    let published = flooding.await.expect("flood thread");

    // Throttled, the flood goes about as fast as the consumer; it must
    // still have published at least a second of the consumer's own rate.
    assert!(
        published as f64 >= alone,
        "the flood was a trickle: {published} published, consumer alone {alone:.0} msg/s"
    );
    assert!(
        flooded * 2.0 >= alone,
        "the consumer was starved: {flooded:.0} msg/s under the flood, {alone:.0} msg/s alone"
    );
    assert!(
        resident_max < 400 << 20,
        "memory ran past the 256 MiB watermark: {} MiB",
        resident_max >> 20
    );
    // Every message the flood wrote is read and delivered in the end: a
    // publisher paused for credit is always paid. The consumer may be slow
    // (a debug build of lapin acks a few thousand a second), so what fails
    // is a stall: no delivery for `STALL` while messages are outstanding.
    let expected = PREFILL + published;
    let mut last = (received.load(Ordering::Relaxed), Instant::now());
    while last.0 < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if now > last.0 {
            last = (now, Instant::now());
        }
        assert!(
            last.1.elapsed() < STALL,
            "the consumer stalled at {} of {expected} messages\n{}",
            last.0,
            broker.log_tail()
        );
    }
}

/// How long no delivery may arrive while messages are outstanding.
const STALL: Duration = Duration::from_secs(10);

/// Messages published before the flood, for the consumer's own rate.
const PREFILL: u64 = 5_000;

/// How long a rate is measured over.
const SAMPLE: Duration = Duration::from_secs(1);

/// Consumes `queue` with prefetch 100, acking each delivery; the counter
/// says how many were acked.
async fn consume_and_ack_each(channel: &lapin::Channel, queue: &str) -> Arc<AtomicU64> {
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut deliveries = channel
        .basic_consume(
            queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                return;
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    received
}

/// Messages per second that `counter` advances by over `sample`.
async fn rate(counter: &AtomicU64, sample: Duration) -> f64 {
    let before = counter.load(Ordering::Relaxed);
    tokio::time::sleep(sample).await;
    (counter.load(Ordering::Relaxed) - before) as f64 / sample.as_secs_f64()
}

/// How much `publish_raw` publishes.
enum Limit {
    Count(u64),
    Time(Duration),
}

/// Publishes 16-byte messages to `queue` over a raw socket, as fast as the
/// broker reads them, until `limit`; returns how many were written whole.
fn publish_raw(addr: &str, queue: &str, limit: Limit) -> u64 {
    const BATCH: u64 = 512;
    let mut client = RawClient::open_with_channel(addr);
    limit_send_buffer(&client.stream);
    let publish = Method::BasicPublish(BasicPublish {
        routing_key: ShortStr::from(queue.to_string()),
        ..BasicPublish::default()
    });
    let mut batch = BytesMut::new();
    for _ in 0..BATCH {
        frame::encode_method(&mut batch, 1, &publish);
        frame::encode_content(&mut batch, 1, 60, &[0, 0], b"sixteen byte msg", 0);
    }
    // Writes time out so the deadline is seen even while the broker is
    // not reading; a timed-out write just continues where it stopped.
    client
        .stream
        .set_write_timeout(Some(Duration::from_millis(50)))
        .expect("write timeout");
    let (deadline, count) = match limit {
        Limit::Count(count) => (Instant::now() + STEP, count),
        Limit::Time(duration) => (Instant::now() + duration, u64::MAX),
    };
    let mut published = 0;
    'flood: while Instant::now() < deadline && published < count {
        let mut written = 0;
        while written < batch.len() {
            match client.stream.write(&batch[written..]) {
                Ok(0) => panic!("the broker closed the flooding connection"),
                Ok(count) => written += count,
                Err(error) if is_timeout(&error) => {
                    if Instant::now() >= deadline {
                        break 'flood;
                    }
                }
                Err(error) => panic!("flood write failed: {error}"),
            }
        }
        published += BATCH;
    }
    published
}

/// A small socket send buffer, so that what the kernel holds for the broker
/// to read stays small next to what the test measures.
fn limit_send_buffer(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 << 10;
    // SAFETY: setsockopt reads `size` (a c_int, as SO_SNDBUF takes) and
    // changes nothing but the socket's own buffer size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_SNDBUF");
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// With the watermark low, a pika publisher is sent connection.blocked
/// ("low on memory") and its socket is no longer read. It stays blocked,
/// with a 1 s heartbeat, for three seconds: longer than the two intervals
/// after which a silent peer is dropped, but the broker chose the silence.
/// Purging the queue frees the memory; the publisher gets
/// connection.unblocked and its next message is confirmed.
#[test]
fn a_publisher_past_the_memory_watermark_is_blocked_then_unblocked() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Paging would free the memory by itself (its budget defaults to half
    // the watermark) and lift the alarm before the purge: this test is
    // about the watermark alone, so the budget is out of reach.
    let broker = Broker::start_with(&[
        "--memory-high-watermark",
        "150MiB",
        "--queue-memory-budget",
        "1GiB",
    ]);
    if broker.is_external() {
        // The watermark is this broker's flag; a shared one is not ours to lower.
        return;
    }
    let queue = unique("alarm");
    let url = broker.amqp_url();
    let mut publisher = PyProcess::spawn("blocked_publisher.py", &[&queue, "1"], &url, &[]);
    publisher.wait_for_line("blocked low on memory", STEP);
    // Blocked, the broker hands free pages back; the alarm holds down to
    // 95% of the watermark.
    let blocked_at = broker.resident_bytes().expect("broker memory");
    assert!(
        blocked_at > (150 << 20) / 100 * 95,
        "blocked at {blocked_at} bytes"
    );

    std::thread::sleep(Duration::from_secs(3));
    run_python("queue_purge.py", &[&queue], &url, &[], STEP);
    publisher.wait_for_line("unblocked", STEP);
    publisher.wait_for_line("confirmed", STEP);
    publisher.expect_success(STEP);
    assert!(
        !broker.log_tail().contains("missed heartbeats"),
        "the paused publisher was dropped:\n{}",
        broker.log_tail()
    );
}
