//! The end-to-end harness: a real warren process on a real socket, and real
//! clients (pika, run as child processes) talking to it.
//!
//! What it owns:
//! - [`Broker`]: starts the compiled `warren` binary on `127.0.0.1`, port 0,
//!   two shards; learns the port from the `AMQP listening on IP:PORT` line on
//!   stderr; drains stderr for the whole run (keeping the last lines to print
//!   when a test fails); kills the process by its PID on drop.
//! - [`python`]: a virtual environment at `target/pyenv` with the pinned
//!   `tests/python/requirements.txt`, built once even when several test
//!   binaries race for it (an `flock` on `target/pyenv.lock`).
//! - [`PyProcess`] and [`run_python`]: client scripts as child processes whose
//!   stdout lines arrive through a channel, so a test waits for the line it
//!   needs (with a timeout as an upper bound) instead of sleeping.
//!
//! Invariants: every process started here is killed by its PID when its
//! handle drops; every wait has a deadline; traffic goes to 127.0.0.1 only.
//!
//! Differential mode: when `WARREN_TEST_AMQP_URL` is set (for example
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), no broker is started and every
//! test runs against that URL instead. That is how the same tests are checked
//! against a real RabbitMQ:
//!
//! ```text
//! WARREN_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test tutorials
//! ```
//!
//! In that mode the tests share one broker (and its durable state), so a test
//! must not depend on a queue being new; see [`Broker::is_external`].

#![allow(dead_code)] // Each test binary uses its own subset of the harness.

pub mod amqp;
pub mod command;
pub mod http;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable that switches the tests to an external broker.
pub const EXTERNAL_URL_VAR: &str = "WARREN_TEST_AMQP_URL";

/// In differential mode, the external broker's management API
/// (`http://127.0.0.1:15672` when unset).
pub const EXTERNAL_MANAGEMENT_URL_VAR: &str = "WARREN_TEST_MANAGEMENT_URL";

/// How long a broker may take to say where it listens.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many stderr lines of the broker are kept for a failure report.
const BROKER_LOG_LINES_MAX: usize = 200;

/// The line prefix the broker prints once its AMQP listener is bound.
const LISTENING_MARKER: &str = "AMQP listening on ";

/// A broker under test: either a warren process this handle owns, or the
/// external broker named by `WARREN_TEST_AMQP_URL`.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    host: String,
    url: String,
    log: Arc<Mutex<VecDeque<String>>>,
    /// The management API's port, for brokers started with one.
    management_port: Option<u16>,
    /// The broker's own temporary --data-dir, removed on drop.
    data_dir: Option<PathBuf>,
}

impl Broker {
    /// Starts warren with `--bind 127.0.0.1 --port 0 --shards 2`.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts warren with the management API on a free port (see
    /// [`Broker::management_url`]), and `extra_args`.
    pub fn start_managed(extra_args: &[&str]) -> Broker {
        let port = free_port().to_string();
        let mut args = vec!["--management-port", port.as_str()];
        args.extend_from_slice(extra_args);
        let mut broker = Broker::start_with(&args);
        if !broker.is_external() {
            broker.management_port = port.parse().ok();
        }
        broker
    }

    /// Starts warren with the default flags followed by `extra_args`: its
    /// own temporary data directory and no management API, unless
    /// `extra_args` name them. In differential mode the arguments are
    /// ignored.
    pub fn start_with(extra_args: &[&str]) -> Broker {
        if let Ok(url) = std::env::var(EXTERNAL_URL_VAR) {
            return Broker::external(url);
        }
        Broker::spawn(extra_args, temp_data_dir())
    }

    /// Starts a new warren on this broker's data directory (the old
    /// process must have exited: [`Broker::terminate`], [`Broker::kill_9`]),
    /// on new ports, with `extra_args`; with the management API if the old
    /// one had it. The directory stays this handle's.
    pub fn restart(&mut self, extra_args: &[&str]) {
        assert!(self.child.is_none(), "restart needs the old broker gone");
        let data_dir = self.data_dir.take().expect("a broker this test started");
        let management_port = self.management_port.map(|_| free_port());
        let port = management_port.map(|port| port.to_string());
        let mut args: Vec<&str> = match &port {
            Some(port) => vec!["--management-port", port],
            None => vec![],
        };
        args.extend_from_slice(extra_args);
        *self = Broker::spawn(&args, data_dir);
        self.management_port = management_port;
    }

    /// SIGKILL, as a crash or power cut would stop it; the data directory
    /// stays for [`Broker::restart`].
    pub fn kill_9(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill_9 needs a broker this test started");
        // Child::kill sends SIGKILL to this child's own PID, nothing else.
        child.kill().expect("kill -9 warren");
        child.wait().expect("reap warren");
    }

    /// The process id of the broker this handle started.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a broker this test started")
            .id()
    }

    /// Runs warren with `--data-dir data_dir`, `--shards 2` and
    /// `--management-port 0` unless `extra_args` name them.
    fn spawn(extra_args: &[&str], data_dir: PathBuf) -> Broker {
        let binary = env!("CARGO_BIN_EXE_warren");
        let mut defaults = vec![];
        let defaulted = [
            ("--data-dir", data_dir.display().to_string()),
            ("--management-port", "0".to_owned()),
            ("--shards", "2".to_owned()),
        ];
        for (flag, value) in defaulted {
            if !extra_args.contains(&flag) {
                defaults.extend([flag.to_owned(), value]);
            }
        }
        let mut child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(&defaults)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
        let stderr = child.stderr.take().expect("stderr was piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (address_sender, address_receiver) = mpsc::channel();
        drain_broker_stderr(stderr, Arc::clone(&log), address_sender);

        let mut broker = Broker {
            child: Some(child),
            port: 0,
            host: "127.0.0.1".to_string(),
            url: String::new(),
            log,
            management_port: None,
            data_dir: Some(data_dir),
        };
        let address = match address_receiver.recv_timeout(BROKER_START_TIMEOUT) {
            Ok(address) => address,
            Err(RecvTimeoutError::Disconnected) => broker.fail_start(&format!(
                "warren exited before it printed '{LISTENING_MARKER}IP:PORT' on stderr"
            )),
            Err(RecvTimeoutError::Timeout) => broker.fail_start(&format!(
                "warren did not print '{LISTENING_MARKER}IP:PORT' on stderr within {BROKER_START_TIMEOUT:?}"
            )),
        };
        let (host, port) = parse_host_port(&address)
            .unwrap_or_else(|| broker.fail_start(&format!("cannot parse address '{address}'")));
        broker.host = host;
        broker.port = port;
        broker.url = format!("amqp://guest:guest@{}:{}/%2f", broker.host, port);
        broker
    }

    fn external(url: String) -> Broker {
        let authority = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
            .unwrap_or_default();
        let (host, port) =
            parse_host_port(authority).unwrap_or_else(|| ("127.0.0.1".to_string(), 5672));
        Broker {
            child: None,
            port,
            host,
            url,
            log: Arc::default(),
            management_port: None,
            data_dir: None,
        }
    }

    /// `http://127.0.0.1:PORT` of the management API (started with
    /// [`Broker::start_managed`]), or the external one in differential
    /// mode.
    pub fn management_url(&self) -> String {
        if self.is_external() {
            return std::env::var(EXTERNAL_MANAGEMENT_URL_VAR)
                .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
        }
        let port = self
            .management_port
            .expect("management_url needs Broker::start_managed");
        format!("http://{}:{port}", self.host)
    }

    /// The broker's data directory (its own temporary one).
    pub fn data_dir(&self) -> &Path {
        self.data_dir
            .as_deref()
            .expect("an external broker's data directory is not ours")
    }

    fn fail_start(&mut self, reason: &str) -> ! {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "Broker::start failed: {reason}.\n--- warren stderr (last lines) ---\n{}",
            self.log_tail()
        );
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`, or the external URL.
    pub fn amqp_url(&self) -> String {
        self.url.clone()
    }

    /// `IP:PORT` of the AMQP listener.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The broker's resident memory in bytes (None in differential mode).
    pub fn resident_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    }

    /// True in differential mode: the broker is shared and outlives the test.
    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    /// Sends SIGTERM to the broker's PID and waits for it to exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let child = self
            .child
            .as_ref()
            .expect("terminate needs a broker this test started");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's PID, which is not reaped yet.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGTERM) },
            0,
            "kill -TERM {pid}"
        );
        self.wait_exit(limit)
    }

    /// Waits for the broker to exit by itself (SIGKILL after `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("wait_exit needs a broker this test started");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        let (exited, exit) = mpsc::channel();
        thread::spawn(move || {
            let _ = exited.send(child.wait());
        });
        match exit.recv_timeout(limit) {
            Ok(status) => status.expect("wait for warren"),
            Err(_) => {
                // SAFETY: as above; the waiting thread reaps it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("warren did not exit within {limit:?}\n{}", self.log_tail());
            }
        }
    }

    /// The last lines warren wrote to stderr.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Child::kill sends SIGKILL to this child's own PID, nothing else.
            let _ = child.kill();
            let _ = child.wait();
            if thread::panicking() {
                eprintln!(
                    "--- warren stderr (last {BROKER_LOG_LINES_MAX} lines) ---\n{}",
                    self.log_tail()
                );
            }
        }
        // After terminate() took the child, the directory still goes.
        if let Some(dir) = &self.data_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Reads the broker's stderr until it closes: remembers the last lines and
/// sends the listener's address once it appears.
fn drain_broker_stderr(
    stderr: ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    address_sender: mpsc::Sender<String>,
) {
    thread::spawn(move || {
        let mut address_sender = Some(address_sender);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(LISTENING_MARKER) {
                let rest = &line[at + LISTENING_MARKER.len()..];
                let address = rest.split_whitespace().next().unwrap_or_default();
                if let Some(sender) = address_sender.take() {
                    let _ = sender.send(address.to_string());
                }
            }
            let mut log = log.lock().unwrap_or_else(|poison| poison.into_inner());
            if log.len() == BROKER_LOG_LINES_MAX {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// A fresh directory under the system temp dir for one broker.
fn temp_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-test-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a temporary data directory");
    dir
}

/// A port on 127.0.0.1 that was free a moment ago (the broker binds it
/// right after; the kernel does not hand it out again that soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
}

/// Parses `IP:PORT` or `[IPv6]:PORT`.
fn parse_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Root of this package (where `Cargo.toml` lives).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the client scripts.
pub fn python_dir() -> PathBuf {
    manifest_dir().join("tests").join("python")
}

/// The venv's python, after making sure the venv holds the pinned
/// requirements. Safe to call from many threads and processes at once.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(ensure_venv).clone()
}

fn ensure_venv() -> PathBuf {
    let target = manifest_dir().join("target");
    let venv = target.join("pyenv");
    let requirements_path = python_dir().join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", requirements_path.display()));
    fs::create_dir_all(&target)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", target.display()));

    // Other test binaries may be building the same venv right now: hold an
    // exclusive lock for the check-and-build, so exactly one of them builds.
    let _lock = FileLock::exclusive(&target.join("pyenv.lock"));
    let stamp = venv.join("requirements.installed");
    let python = venv.join("bin").join("python");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) && python.exists()
    {
        return python;
    }
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .unwrap_or_else(|error| panic!("cannot remove stale {}: {error}", venv.display()));
    }
    run_setup_step(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (on Debian: apt-get install python3-venv)",
    );
    run_setup_step(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements_path),
        "pip install -r tests/python/requirements.txt",
    );
    fs::write(&stamp, &requirements)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", stamp.display()));
    python
}

fn run_setup_step(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An exclusive `flock` held until drop (the kernel also drops it if the
/// process dies, so a crashed test run cannot leave the venv locked).
struct FileLock {
    file: File,
}

impl FileLock {
    fn exclusive(path: &Path) -> FileLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        // SAFETY: the descriptor is owned by `file`, which outlives the lock.
        let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            status,
            0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        FileLock { file }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is still open; unlocking cannot corrupt it.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Why [`PyProcess::next_line`] has no line to give.
#[derive(Debug)]
enum NoLine {
    Closed,
    TimedOut,
}

/// One stdout line of a [`PyProcess`], or the end of its stdout.
enum Event {
    Line(String),
    Closed,
}

/// A client script run by the venv's python, killed by its PID on drop.
/// Its stdout lines arrive through a channel; its stderr is kept whole for
/// failure messages.
pub struct PyProcess {
    name: String,
    child: Child,
    events: Receiver<Event>,
    stdout_closed: bool,
    lines: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl PyProcess {
    /// Runs `tests/python/<script> <args>` with `AMQP_URL=<url>` and `env`.
    pub fn spawn(script: &str, args: &[&str], url: &str, env: &[(&str, &str)]) -> PyProcess {
        let mut child = Command::new(python())
            .arg("-u")
            .arg(python_dir().join(script))
            .args(args)
            .env("AMQP_URL", url)
            .env("PYTHONUNBUFFERED", "1")
            // Keeps tests/python free of __pycache__ folders git would list.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(
                env.iter()
                    .map(|(key, value)| (OsStr::new(key), OsStr::new(value))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {script}: {error}"));

        let stdout = child.stdout.take().expect("stdout was piped");
        let (sender, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(Event::Line(line)).is_err() {
                    return;
                }
            }
            let _ = sender.send(Event::Closed);
        });

        let mut stderr_pipe = child.stderr.take().expect("stderr was piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = stderr_pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..read]);
                stderr_sink
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .push_str(&text);
            }
        });

        let name = std::iter::once(script)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        PyProcess {
            name,
            child,
            events,
            stdout_closed: false,
            lines: Vec::new(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line seen so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The count of stdout lines seen so far that contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits for the next stdout line containing `needle` (lines before it are
    /// kept in [`lines`](Self::lines)) and returns it. Panics with the
    /// process's output when the line does not come within `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(why) => self.fail(&format!(
                    "waiting for a line containing {needle:?}: {why:?}"
                )),
            }
        }
    }

    /// Takes the next stdout line, or says why none came before `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Result<String, NoLine> {
        if self.stdout_closed {
            return Err(NoLine::Closed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(Event::Line(line)) => {
                self.lines.push(line.clone());
                Ok(line)
            }
            Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                Err(NoLine::Closed)
            }
            Err(RecvTimeoutError::Timeout) => Err(NoLine::TimedOut),
        }
    }

    /// Takes a line only if one is already there (never blocks).
    fn poll_line(&mut self) -> Option<String> {
        match self.events.try_recv() {
            Ok(Event::Line(line)) => {
                self.lines.push(line.clone());
                Some(line)
            }
            Ok(Event::Closed) | Err(mpsc::TryRecvError::Disconnected) => {
                self.stdout_closed = true;
                None
            }
            Err(mpsc::TryRecvError::Empty) => None,
        }
    }

    /// Waits until the process exits on its own (all of its stdout read) and
    /// returns its status; kills it and panics if that takes over `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while !self.stdout_closed {
            if let Err(NoLine::TimedOut) = self.next_line(deadline) {
                self.fail(&format!("did not exit within {timeout:?}"));
            }
        }
        // stdout closed: the process is exiting; its status follows at once
        // unless it closed stdout by hand, which these scripts never do.
        self.child
            .wait()
            .unwrap_or_else(|error| panic!("wait for {}: {error}", self.name))
    }

    /// Waits for a clean exit (status 0) within `timeout`.
    pub fn expect_success(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
    }

    /// SIGKILL by PID (like `kill -9 PID`), then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Stdout and stderr so far, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.lines.join("\n"),
            self.name,
            self.stderr()
        )
    }

    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        panic!("{}: {why}\n{}", self.name, self.transcript());
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until any of `processes` prints a line containing `needle`; returns
/// the index of that process and the line. Lines are taken as they arrive:
/// the short receive timeout only takes turns between the channels, it is
/// not a sleep standing in for an event.
pub fn wait_for_line_any(
    processes: &mut [&mut PyProcess],
    needle: &str,
    timeout: Duration,
) -> (usize, String) {
    let deadline = Instant::now() + timeout;
    let turn = Duration::from_millis(20);
    loop {
        for (index, process) in processes.iter_mut().enumerate() {
            while let Some(line) = process.poll_line() {
                if line.contains(needle) {
                    return (index, line);
                }
            }
        }
        let open = processes.iter().position(|process| !process.stdout_closed);
        let now = Instant::now();
        let why = match open {
            None => "every process closed stdout",
            Some(_) if now >= deadline => "timed out",
            Some(index) => match processes[index].next_line((now + turn).min(deadline)) {
                Ok(line) if line.contains(needle) => return (index, line),
                _ => continue,
            },
        };
        let transcripts: Vec<String> = processes.iter().map(|p| p.transcript()).collect();
        panic!(
            "waiting for a line containing {needle:?} from any process: {why}\n{}",
            transcripts.join("\n")
        );
    }
}

/// Runs a short script to completion with a hard `timeout` and returns its
/// stdout lines; panics (with its output) on a timeout or a failed exit.
pub fn run_python(
    script: &str,
    args: &[&str],
    url: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Vec<String> {
    let mut process = PyProcess::spawn(script, args, url, env);
    process.expect_success(timeout);
    process.lines().to_vec()
}
