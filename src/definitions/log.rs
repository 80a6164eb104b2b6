//! The definitions log: `definitions.log` in the data directory, the only
//! file I/O of durable definitions.
//!
//! Layout: an 8-byte header (`MAGIC`), then records, each
//!
//! ```text
//! +-------------+-------------+------------------------+
//! | length: u32 | crc32: u32  | payload (length bytes) |   little endian;
//! +-------------+-------------+------------------------+   crc32 of payload
//! ```
//!
//! whose payload is one durable change (`codec`). Records are appended and
//! fdatasync'd before the change is broadcast or answered. When the file
//! has grown well past what is live, it is rewritten as a snapshot (the
//! declares of the live set) into a temporary file that is synced, renamed
//! over the log, and made durable with an fsync of the directory.
//!
//! Reading never panics, whatever the bytes: a partial last record (a
//! crash mid-append) is truncated away; a damaged record elsewhere is
//! skipped with one error line, the file is kept aside as
//! `definitions.log.damaged`, and the log is rewritten from what read
//! back, so later appends follow clean records.
//!
//! Plain blocking std::fs: definitions change rarely and off the data
//! path. The coordinator calls [`DefinitionsLog::record`] on its shard's
//! blocking thread, never on the shard itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};

use super::{codec, Definitions};
use crate::catalog::MetaOp;

/// The file's first bytes: the format and its version.
const MAGIC: &[u8; 8] = b"wrndefs1";
/// Length and CRC before each payload.
const RECORD_HEADER_LEN: usize = 8;
/// No change encodes anywhere near this; a longer length is damage.
const RECORD_LEN_MAX: usize = 16 << 20;
/// The log is rewritten once it is this much past twice the size of a
/// snapshot of the live set (measured at start and at each rewrite), so a
/// small set is not rewritten every few changes.
const COMPACT_SLACK_BYTES: u64 = 256 << 10;

pub(crate) const LOG_FILE: &str = "definitions.log";

/// The open log and the live set it holds. See the module doc.
#[derive(Debug)]
pub struct DefinitionsLog {
    path: PathBuf,
    file: File,
    len: u64,
    /// Rewrite when `len` passes this.
    compact_at: u64,
    compact_slack: u64,
    live: Definitions,
}

/// What reading a log found.
#[derive(Debug)]
struct Read {
    live: Definitions,
    records: usize,
    /// Where the readable records end.
    end: usize,
    /// Offsets of damaged records that were skipped.
    damaged: Vec<usize>,
}

impl DefinitionsLog {
    /// Opens (or, in an empty data directory, creates) the log in `dir`
    /// and reads the live set back; a one-line reason when it cannot.
    pub fn open(dir: &Path) -> Result<DefinitionsLog, String> {
        Self::open_with_slack(dir, COMPACT_SLACK_BYTES)
    }

    fn open_with_slack(dir: &Path, compact_slack: u64) -> Result<DefinitionsLog, String> {
        let path = dir.join(LOG_FILE);
        let failed = |err: io::Error| format!("cannot use {}: {err}", path.display());
        let _ = fs::remove_file(temp_path(&path));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(failed(err)),
        };
        let read = read_log(&path, &bytes)?;
        let mut log = DefinitionsLog {
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(failed)?,
            path: path.clone(),
            len: 0,
            compact_at: 0,
            compact_slack,
            live: read.live,
        };
        if !read.damaged.is_empty() {
            tracing::error!(
                "definitions log {}: skipped {} damaged record(s), the first at byte {}; \
                 started with the {} that read back (the damaged file is kept as {})",
                path.display(),
                read.damaged.len(),
                read.damaged[0],
                read.records,
                damaged_path(&path).display()
            );
            fs::copy(&path, damaged_path(&path)).map_err(failed)?;
        }
        if bytes.len() < MAGIC.len() {
            // A first start: no records, the first start's set.
            log.write_snapshot(&[]).map_err(failed)?;
        } else if !read.damaged.is_empty() {
            log.rewrite().map_err(failed)?;
        } else {
            if read.end < bytes.len() {
                tracing::warn!(
                    "definitions log {}: dropped a partial last record ({} bytes at byte {}), \
                     left by a crash mid-write",
                    path.display(),
                    bytes.len() - read.end,
                    read.end
                );
                log.file.set_len(read.end as u64).map_err(failed)?;
                log.file.sync_all().map_err(failed)?;
            }
            log.len = read.end as u64;
            let live_len = snapshot(&log.live.ops(1)).len() as u64;
            log.compact_at = 2 * live_len + compact_slack;
            if log.len > log.compact_at {
                log.rewrite().map_err(failed)?;
            }
        }
        Ok(log)
    }

    /// The live durable set.
    pub fn definitions(&self) -> &Definitions {
        &self.live
    }

    /// Appends `changes` and syncs them to disk; rewrites the log when it
    /// has grown well past the live set. On error the log may hold part of
    /// them (a partial record is dropped on the next start).
    pub fn record(&mut self, changes: &[MetaOp]) -> io::Result<()> {
        let mut out = BytesMut::new();
        for change in changes {
            if put_record(&mut out, change) {
                self.live.apply(change);
            }
        }
        self.file.write_all(&out)?;
        self.file.sync_data()?;
        self.len += out.len() as u64;
        if self.len > self.compact_at {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the live set as a new log.
    fn rewrite(&mut self) -> io::Result<()> {
        // The live set's shard placement is not recorded: any count works.
        self.write_snapshot(&self.live.ops(1))
    }

    /// Replaces the log with one holding `ops`: temporary file, fdatasync,
    /// rename over the log, fsync of the directory.
    fn write_snapshot(&mut self, ops: &[MetaOp]) -> io::Result<()> {
        let out = snapshot(ops);
        let temp = temp_path(&self.path);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&out)?;
        file.sync_data()?;
        fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        // The renamed file is the log now; appends go to its end.
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = out.len() as u64;
        self.compact_at = 2 * self.len + self.compact_slack;
        Ok(())
    }
}

/// A whole log holding `ops`.
fn snapshot(ops: &[MetaOp]) -> BytesMut {
    let mut out = BytesMut::from(&MAGIC[..]);
    for op in ops {
        put_record(&mut out, op);
    }
    out
}

/// Frames one change; false (nothing written) for one that is not durable.
fn put_record(out: &mut BytesMut, op: &MetaOp) -> bool {
    let start = out.len();
    out.put_u64(0);
    if !codec::encode(op, out) {
        out.truncate(start);
        return false;
    }
    let payload = &out[start + RECORD_HEADER_LEN..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    true
}

fn temp_path(path: &Path) -> PathBuf {
    path.with_extension("log.tmp")
}

fn damaged_path(path: &Path) -> PathBuf {
    path.with_extension("log.damaged")
}

/// Reads every record of `bytes` into the live set. See the module doc.
fn read_log(path: &Path, bytes: &[u8]) -> Result<Read, String> {
    let mut read = Read {
        live: Definitions::default(),
        records: 0,
        end: MAGIC.len(),
        damaged: Vec::new(),
    };
    if bytes.len() < MAGIC.len() {
        // Only a crash while the first snapshot was renamed in could leave
        // a short file; anything else is not ours.
        if !MAGIC.starts_with(bytes) {
            return Err(not_a_log(path));
        }
        read.end = bytes.len();
        return Ok(read);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(not_a_log(path));
    }
    while read.end < bytes.len() {
        let at = read.end;
        let Some((payload, next)) = record_at(bytes, at) else {
            break; // A partial last record.
        };
        let intact = crc32fast::hash(payload) == crc_at(bytes, at);
        if !intact && next == bytes.len() {
            break; // The last record, half written.
        }
        match codec::decode(payload).filter(|_| intact) {
            Some(op) => {
                read.live.apply(&op);
                read.records += 1;
            }
            None => read.damaged.push(at),
        }
        read.end = next;
    }
    Ok(read)
}

fn not_a_log(path: &Path) -> String {
    format!(
        "{} is not a warren definitions log (its header is wrong); move it away to start \
         without definitions",
        path.display()
    )
}

/// The payload of the record at `at` and where the next one starts; None
/// when its header is cut short or its length is impossible: zero (no
/// change encodes to nothing, and a crash can leave a zero-filled tail),
/// too long, or past the end.
fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + RECORD_HEADER_LEN)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > RECORD_LEN_MAX {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start + len)?;
    Some((payload, start + len))
}

fn crc_at(bytes: &[u8], at: usize) -> u32 {
    let mut crc = [0; 4];
    crc.copy_from_slice(&bytes[at + 4..at + 8]);
    u32::from_le_bytes(crc)
}

#[cfg(test)]
mod tests;
