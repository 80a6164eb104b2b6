//! Test harness: a broker to talk to, and loadgen run as a process.
//!
//! The broker is `WARREN_TEST_AMQP_URL` if set (RabbitMQ, say), or else a
//! warren started on a free port (`WARREN_BIN`, default
//! target/debug/warren), whose port is read from its "AMQP listening on"
//! log line, and which is killed when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use loadgen::uri::AmqpUri;

/// Longest a broker may take to start, or a loadgen run to finish.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    pub url: String,
    child: Option<Child>,
    /// The broker's temporary --data-dir, removed when the test ends.
    data_dir: Option<std::path::PathBuf>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A warren with `extra_args` on its command line (two shards unless
    /// they say `--shards`), or the broker at `WARREN_TEST_AMQP_URL` as it
    /// is (see [`Broker::is_external`]).
    pub fn start_with(extra_args: &[&str]) -> Broker {
        if let Ok(url) = std::env::var("WARREN_TEST_AMQP_URL") {
            return Broker {
                url,
                child: None,
                data_dir: None,
            };
        }
        let bin = std::env::var("WARREN_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/warren").into()
        });
        let data_dir = temp_data_dir();
        let mut child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(if extra_args.contains(&"--shards") {
                &[][..]
            } else {
                &["--shards", "2"][..]
            })
            .args(extra_args)
            .args(["--management-port", "0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin}: {e} (set WARREN_BIN or WARREN_TEST_AMQP_URL)")
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let (port_tx, port_rx) = mpsc::channel();
        // Keeps reading after the port line, so the broker never blocks on
        // a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = listening_port(&line) {
                    let _ = port_tx.send(port);
                }
            }
        });
        let mut broker = Broker {
            url: String::new(),
            child: Some(child),
            data_dir: Some(data_dir),
        };
        let port = port_rx
            .recv_timeout(STARTUP_TIMEOUT)
            .expect("warren did not log 'AMQP listening on'");
        broker.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        broker
    }

    /// Whether this broker was given by URL, with settings not ours to choose.
    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    pub fn uri(&self) -> AmqpUri {
        AmqpUri::parse(&self.url).expect("the broker URL parses")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh directory for one broker's --data-dir.
fn temp_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The port of "... AMQP listening on 127.0.0.1:PORT ...".
fn listening_port(line: &str) -> Option<u16> {
    let (_, after) = line.split_once("AMQP listening on ")?;
    let address = after.split_whitespace().next()?;
    address
        .rsplit_once(':')?
        .1
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs loadgen with `args`, killing it if it outlives `RUN_TIMEOUT`.
pub fn loadgen(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if done_rx.recv_timeout(RUN_TIMEOUT).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for loadgen");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
