use super::*;

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "warren-defs-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn vhost(name: &str) -> MetaOp {
    MetaOp::VhostAdd { name: name.into() }
}

fn has_vhost(log: &DefinitionsLog, name: &str) -> bool {
    log.definitions().ops(1).contains(&vhost(name))
}

/// A log holding vhosts v0..v{count}, one record each.
fn written(dir: &TempDir, count: usize) -> Vec<u8> {
    let mut log = DefinitionsLog::open(&dir.0).expect("open");
    for i in 0..count {
        log.record(&[vhost(&format!("v{i}"))]).expect("record");
    }
    drop(log);
    fs::read(dir.log()).expect("read the log")
}

#[test]
fn records_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    written(&dir, 3);
    let log = DefinitionsLog::open(&dir.0).expect("reopen");
    assert!((0..3).all(|i| has_vhost(&log, &format!("v{i}"))));
}

#[test]
fn a_first_start_writes_an_empty_log() {
    let dir = TempDir::new("first");
    let log = DefinitionsLog::open(&dir.0).expect("open");
    assert_eq!(log.definitions(), &Definitions::default());
    assert_eq!(fs::read(dir.log()).expect("written"), MAGIC);
}

#[test]
fn a_partial_last_record_is_truncated_at_every_cut() {
    let dir = TempDir::new("torn");
    let whole = written(&dir, 2);
    let second = record_at(&whole, MAGIC.len()).expect("first record").1;
    for cut in second + 1..whole.len() {
        fs::write(dir.log(), &whole[..cut]).expect("cut");
        let mut log = DefinitionsLog::open(&dir.0).expect("a torn log opens");
        assert!(
            has_vhost(&log, "v0") && !has_vhost(&log, "v1"),
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(dir.log()).expect("log").len(), second as u64);
        // Appends after the truncation read back.
        log.record(&[vhost("after")]).expect("append");
        drop(log);
        let log = DefinitionsLog::open(&dir.0).expect("reopen");
        assert!(has_vhost(&log, "after"), "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_dropped_like_a_torn_write() {
    let dir = TempDir::new("zeros");
    let mut bytes = written(&dir, 1);
    bytes.extend([0; 4096]);
    fs::write(dir.log(), &bytes).expect("write");
    let log = DefinitionsLog::open(&dir.0).expect("open");
    assert!(has_vhost(&log, "v0"));
    assert!(!damaged_path(&dir.log()).exists(), "not damage");
}

#[test]
fn a_damaged_record_is_skipped_and_the_rest_read_back() {
    let dir = TempDir::new("damaged");
    let mut bytes = written(&dir, 3);
    let second = record_at(&bytes, MAGIC.len()).expect("first record").1;
    bytes[second + RECORD_HEADER_LEN + 2] ^= 0xff;
    fs::write(dir.log(), &bytes).expect("garble");
    let mut log = DefinitionsLog::open(&dir.0).expect("a damaged log opens");
    assert!(has_vhost(&log, "v0") && !has_vhost(&log, "v1") && has_vhost(&log, "v2"));
    assert_eq!(fs::read(damaged_path(&dir.log())).expect("kept"), bytes);
    // The log was rewritten clean: an append reads back after a reopen.
    log.record(&[vhost("after")]).expect("append");
    drop(log);
    let log = DefinitionsLog::open(&dir.0).expect("reopen");
    assert!(has_vhost(&log, "v2") && has_vhost(&log, "after"));
}

#[test]
fn any_garbage_after_the_header_opens_without_panicking() {
    let dir = TempDir::new("garbage");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..200 {
        let mut bytes = MAGIC.to_vec();
        for _ in 0..(round % 50) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.extend(seed.to_le_bytes());
        }
        fs::write(dir.log(), &bytes).expect("write");
        DefinitionsLog::open(&dir.0).expect("opens with what it could read");
    }
}

#[test]
fn a_file_that_is_not_a_log_is_refused() {
    let dir = TempDir::new("foreign");
    fs::write(dir.log(), b"{\"users\": []}").expect("write");
    let err = DefinitionsLog::open(&dir.0).expect_err("not ours");
    assert!(err.contains("not a warren definitions log"), "{err}");
}

#[test]
fn the_log_is_rewritten_when_it_grows_well_past_the_live_set() {
    let dir = TempDir::new("compact");
    let mut log = DefinitionsLog::open_with_slack(&dir.0, 256).expect("open");
    for round in 0..200 {
        log.record(&[vhost("churn")]).expect("add");
        let delete = MetaOp::VhostDelete {
            name: "churn".into(),
        };
        log.record(&[delete]).expect("delete");
        assert!(
            log.len <= 2 * 256 + 1024,
            "round {round}: {} bytes",
            log.len
        );
    }
    log.record(&[vhost("kept")]).expect("add");
    let live = log.definitions().clone();
    drop(log);
    let log = DefinitionsLog::open(&dir.0).expect("reopen");
    assert_eq!(log.definitions(), &live);
    assert!(!temp_path(&dir.log()).exists());
}

#[test]
fn a_long_history_is_rewritten_at_start() {
    let dir = TempDir::new("history");
    let mut log = DefinitionsLog::open(&dir.0).expect("open");
    for _ in 0..100 {
        log.record(&[vhost("churn")]).expect("add");
        let delete = MetaOp::VhostDelete {
            name: "churn".into(),
        };
        log.record(&[delete]).expect("delete");
    }
    drop(log);
    let long = fs::metadata(dir.log()).expect("log").len();
    let log = DefinitionsLog::open_with_slack(&dir.0, 0).expect("reopen");
    assert!(log.len < long, "{} bytes, as long as before", log.len);
    assert_eq!(log.definitions(), &Definitions::default());
}
