//! The data directory: created if missing (owner-only), checked writable,
//! and held with an exclusive `flock` on `warren.lock` for the process's
//! life, so two brokers never write the same definitions or messages.
//!
//! The lock is advisory and dies with the process (kill -9 included), so a
//! crashed broker never leaves a stale lock behind.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "warren.lock";

/// A data directory this process holds. The lock goes with it.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and takes its lock; a one-line reason when
    /// the directory cannot be used or another warren holds it.
    pub fn lock(path: PathBuf) -> Result<DataDir, String> {
        let unusable =
            |err: io::Error| format!("cannot use data directory {}: {err}", path.display());
        let existed = path.is_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(unusable)?;
        if !existed {
            // A power cut must not take back the new directory, and the
            // first start's files with it.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(unusable)?;
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path.join(LOCK_FILE))
            .map_err(unusable)?;
        // SAFETY: flock(2) on a descriptor this function owns and keeps
        // open; it touches no memory.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(format!(
                    "data directory {} is in use by another warren (it holds {})",
                    path.display(),
                    path.join(LOCK_FILE).display()
                ));
            }
            return Err(unusable(err));
        }
        Ok(DataDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
