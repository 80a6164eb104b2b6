//! Runs a command-line tool (rabbitmqadmin, warrenctl) to completion with a
//! deadline, killing it by its PID if it overruns.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Upper bound for one command-line run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// What a finished command printed, and its exit code.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` with extra `env`; panics if it does not finish
/// within [`COMMAND_TIMEOUT`] or cannot start.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => {
            let output = output.expect("wait for the command");
            Output {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child's PID; the waiting thread
            // has not reaped it, since it has not exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{program} {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
    }
}
