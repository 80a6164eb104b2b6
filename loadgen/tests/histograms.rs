//! The histogram files: .hgrm parses back, the interval log reads back with
//! the hdrhistogram crate, and `compare` reads .hgrm files and plots them.

mod common;

use std::path::PathBuf;

use common::{loadgen, Broker};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use loadgen::hgrm::{self, Distribution};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_run_writes_hgrm_and_an_interval_log_that_read_back() {
    let broker = Broker::start();
    let (e2e, confirm, log) = (
        temp_path("e2e.hgrm"),
        temp_path("confirm.hgrm"),
        temp_path("run.hlog"),
    );
    let run = loadgen(&[
        "--uri",
        &broker.url,
        "--quiet",
        "-c",
        "100",
        "-C",
        "3000",
        "-z",
        "0",
        "--hgrm",
        e2e.to_str().unwrap(),
        "--confirm-hgrm",
        confirm.to_str().unwrap(),
        "--hlog",
        log.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for path in [&e2e, &confirm] {
        let distribution = Distribution::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(distribution.total_count, Some(3000), "{}", path.display());
        assert_eq!(distribution.points.last().unwrap().total_count, 3000);
    }
    let text = std::fs::read(&log).unwrap();
    let mut deserializer = Deserializer::new();
    let (mut e2e_count, mut confirm_count) = (0, 0);
    for entry in IntervalLogIterator::new(&text) {
        let LogEntry::Interval(interval) = entry.expect("the log parses") else {
            continue;
        };
        let bytes = base64_decode(interval.encoded_histogram());
        let histogram: Histogram<u64> = deserializer.deserialize(&mut bytes.as_slice()).unwrap();
        match interval.tag().map(|t| t.as_str()) {
            Some("e2e") => e2e_count += histogram.len(),
            Some("confirm") => confirm_count += histogram.len(),
            other => panic!("unexpected tag {other:?}"),
        }
    }
    assert_eq!((e2e_count, confirm_count), (3000, 3000));
}

#[test]
fn compare_prints_ratios_and_writes_a_plot() {
    let (a, b, plot) = (
        temp_path("a.hgrm"),
        temp_path("b.hgrm"),
        temp_path("plot.svg"),
    );
    for (path, scale) in [(&a, 1), (&b, 2)] {
        let mut histogram = loadgen::meter::new_histogram();
        (1..=10_000).for_each(|us| histogram.record(us * scale).unwrap());
        std::fs::write(path, hgrm::write(&histogram)).unwrap();
    }
    let run = loadgen(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--label",
        "before",
        "--label",
        "after",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let p50 = run
        .stdout
        .lines()
        .find(|l| l.starts_with("p50"))
        .expect("a p50 row");
    assert!(p50.contains("2.00x"), "{}", run.stdout);
    assert!(run.stdout.contains("after/before"), "{}", run.stdout);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("before") && svg.contains("after"));
}

/// Standard base64, as the interval log encodes histograms.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}
