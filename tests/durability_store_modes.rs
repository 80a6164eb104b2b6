//! The message store's other modes, across a clean restart: with
//! `--unsafe-no-fsync` (written, not synced, before the confirm), and on a
//! file system that refuses O_DIRECT, where `runtime::file` falls back to
//! buffered I/O plus fdatasync.
//!
//! These tests need a broker they can restart, so they do nothing in
//! differential mode.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::amqp::{names_on_shard, open_confirming, within};
use common::Broker;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

const STOP: Duration = Duration::from_secs(15);
const MESSAGES: usize = 50;

/// One queue per shard of a 2-shard broker.
fn queues(prefix: &str) -> [String; 2] {
    [0, 1].map(|shard| names_on_shard(prefix, shard).next().unwrap_or_default())
}

fn body(queue: &str, n: usize) -> Vec<u8> {
    let mut body = format!("{queue} {n} ").into_bytes();
    body.resize(body.len() + (n * 131) % 5000, n as u8);
    body
}

async fn declare(channel: &Channel, queue: &str) {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel.queue_declare(queue, options, FieldTable::default());
    within("queue.declare", declared)
        .await
        .expect("queue.declare");
}

/// Publishes persistent messages to each queue, every one confirmed.
async fn publish_all(broker: &Broker, names: &[String]) {
    let (connection, channel) = open_confirming(broker).await;
    for queue in names {
        declare(&channel, queue).await;
        for n in 0..MESSAGES {
            let properties = BasicProperties::default().with_delivery_mode(2);
            let options = BasicPublishOptions::default();
            let payload = body(queue, n);
            let sent = channel.basic_publish("", queue, options, &payload, properties);
            let confirm = within("basic.publish", sent).await.expect("publish");
            let confirmation = within("confirm", confirm).await.expect("confirm");
            assert!(confirmation.is_ack(), "{queue} {n} nacked");
        }
    }
    let _ = connection.close(200, "bye").await;
}

/// Every message comes back, in order and whole.
async fn assert_all_back(broker: &Broker, names: &[String]) {
    let (connection, channel) = open_confirming(broker).await;
    for queue in names {
        declare(&channel, queue).await;
        for n in 0..MESSAGES {
            let got = channel.basic_get(queue, BasicGetOptions { no_ack: true });
            let message = within("basic.get", got).await.expect("basic.get");
            let message = message.unwrap_or_else(|| panic!("{queue}: only {n} came back"));
            assert_eq!(message.delivery.data, body(queue, n), "{queue} {n}");
        }
        let got = channel.basic_get(queue, BasicGetOptions { no_ack: true });
        let extra = within("basic.get", got).await.expect("basic.get");
        assert!(extra.is_none(), "{queue}: more came back than was sent");
    }
    let _ = connection.close(200, "bye").await;
}

#[tokio::test]
async fn unsafe_no_fsync_still_recovers_after_a_clean_restart() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let names = queues("nofsync");
    let mut broker = Broker::start_with(&["--unsafe-no-fsync", "--segment-size", "65536"]);
    publish_all(&broker, &names).await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    broker.restart(&["--unsafe-no-fsync"]);
    assert_all_back(&broker, &names).await;
}

/// Whether `dir` takes O_DIRECT files.
fn takes_o_direct(dir: &Path) -> bool {
    let probe = dir.join(format!("o-direct-probe-{}", std::process::id()));
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    opened.is_ok()
}

/// A directory on a file system without O_DIRECT, unmounted when dropped
/// if this test mounted it.
struct NoDirectDir {
    path: PathBuf,
    mounted: bool,
}

impl NoDirectDir {
    /// /dev/shm where tmpfs refuses O_DIRECT (before Linux 6.6), else a
    /// ramfs mounted for the test (which never takes it) where this process
    /// may mount; None where neither is possible.
    fn find() -> Option<NoDirectDir> {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && !takes_o_direct(shm) {
            let path = shm.join(format!("warren-nodirect-{}", std::process::id()));
            std::fs::create_dir_all(&path).ok()?;
            return Some(NoDirectDir {
                path,
                mounted: false,
            });
        }
        let path = std::env::temp_dir().join(format!("warren-ramfs-{}", std::process::id()));
        std::fs::create_dir_all(&path).ok()?;
        let target = std::ffi::CString::new(path.display().to_string()).ok()?;
        // SAFETY: every pointer is a NUL-terminated string that outlives
        // the call; no data argument.
        let mounted = unsafe {
            libc::mount(
                c"ramfs".as_ptr(),
                target.as_ptr(),
                c"ramfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        } == 0;
        let dir = NoDirectDir { path, mounted };
        (mounted && !takes_o_direct(&dir.path)).then_some(dir)
    }
}

impl Drop for NoDirectDir {
    fn drop(&mut self) {
        if self.mounted {
            let target = std::ffi::CString::new(self.path.display().to_string());
            if let Ok(target) = target {
                // SAFETY: a NUL-terminated path that outlives the call.
                unsafe { libc::umount(target.as_ptr()) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[tokio::test]
async fn a_file_system_without_o_direct_gets_buffered_io_and_recovers() {
    if std::env::var("WARREN_TEST_AMQP_URL").is_ok() {
        return;
    }
    let Some(dir) = NoDirectDir::find() else {
        eprintln!("skipped: no file system without O_DIRECT here, and no permission to mount one");
        return;
    };
    let data_dir = dir.path.display().to_string();
    let names = queues("buffered");
    let args = ["--data-dir", data_dir.as_str(), "--segment-size", "65536"];
    let mut broker = Broker::start_with(&args);
    publish_all(&broker, &names).await;
    let log = broker.log_tail();
    assert!(
        log.contains("refuses O_DIRECT; the store uses buffered I/O"),
        "{log}"
    );
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
    broker.restart(&args);
    assert_all_back(&broker, &names).await;
    assert!(broker.terminate(STOP).success(), "{}", broker.log_tail());
}
