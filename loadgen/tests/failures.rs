//! Each failure gives one clear line on stderr and a non-zero exit status.

mod common;

use std::net::TcpListener;

use common::{loadgen, Broker, Run};

fn assert_one_line_failure(run: &Run, code: i32, expected: &[&str]) {
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let stderr = run.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("loadgen: "), "{stderr}");
    assert!(
        expected.iter().any(|e| stderr.contains(e)),
        "{stderr} lacks any of {expected:?}"
    );
}

#[test]
fn a_refused_connection_is_one_line_and_exit_1() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let run = loadgen(&["--uri", &uri, "-z", "1"]);
    assert_one_line_failure(&run, 1, &["cannot connect to 127.0.0.1"]);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
}

#[test]
fn a_bad_uri_is_one_line_and_exit_2() {
    let run = loadgen(&["--uri", "http://localhost", "-z", "1"]);
    assert_one_line_failure(&run, 2, &["bad URI 'http://localhost'"]);
}

#[test]
fn a_wrong_password_is_one_line_and_exit_1() {
    let broker = Broker::start();
    let uri = broker.uri();
    let url = format!("amqp://{}:wrong-password@{}/%2f", uri.user, uri.address());
    let run = loadgen(&["--uri", &url, "-z", "1"]);
    assert_one_line_failure(
        &run,
        1,
        &["refused the connection for user", "during the handshake"],
    );
}

#[test]
fn a_channel_error_is_one_line_and_exit_1() {
    let broker = Broker::start();
    let run = loadgen(&[
        "--uri",
        &broker.url,
        "-e",
        "amq.no-such-exchange",
        "-z",
        "1",
    ]);
    assert_one_line_failure(&run, 1, &["404"]);
}

#[test]
fn a_size_below_the_stamp_is_a_usage_error() {
    let run = loadgen(&["-s", "15"]);
    assert_one_line_failure(&run, 2, &["--size"]);
}

#[test]
fn more_producers_than_the_stamp_can_number_is_a_usage_error() {
    let run = loadgen(&["-x", "65537"]);
    assert_one_line_failure(&run, 2, &["--producers"]);
}
