//! The store's view of a disk: a directory of named files that are
//! appended to in whole blocks, read back, synced, truncated and
//! preallocated. Two implementations: `FsDisk`, real files on the
//! shard's io_uring (`runtime::file`: direct I/O, or buffered where the
//! file system refuses it), and, in tests, `sim::SimDisk`, which loses
//! what was not synced when told to crash.
//!
//! Futures here are awaited only by the store's own tasks (the commit
//! loop, start-up recovery), never by a ring handler.

use std::future::Future;
use std::io;
use std::path::PathBuf;

use crate::runtime::file;

pub(crate) use crate::runtime::file::BLOCK;

pub(crate) trait DiskFile {
    /// Writes whole blocks at a block-aligned position.
    fn write_at(&self, pos: u64, data: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    fn read_at(&self, pos: u64, len: usize) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// As `write_at`, then fdatasync: durable when it returns.
    fn write_synced(&self, pos: u64, data: &[u8]) -> impl Future<Output = io::Result<()>>;
    fn preallocate(&self, len: u64) -> impl Future<Output = io::Result<()>>;
    fn size(&self) -> impl Future<Output = io::Result<u64>>;
}

pub(crate) trait Disk {
    type File: DiskFile;
    /// Opens a file of the directory, creating it if missing. A new
    /// file's name is durable only after `sync_dir`.
    fn open(&self, name: &str) -> impl Future<Output = io::Result<Self::File>>;
    /// Opens an existing file of the directory to read records from it.
    fn open_for_reading(&self, name: &str) -> impl Future<Output = io::Result<Self::File>>;
    /// The names of the directory's files.
    fn list(&self) -> impl Future<Output = io::Result<Vec<String>>>;
    fn remove(&self, name: &str) -> impl Future<Output = io::Result<()>>;
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>>;
    fn sync_dir(&self) -> impl Future<Output = io::Result<()>>;
}

/// A directory of real files.
#[derive(Clone, Debug)]
pub(crate) struct FsDisk {
    pub dir: PathBuf,
}

impl DiskFile for file::File {
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        file::File::write_at(self, pos, data).await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        file::File::read_at(self, pos, len).await
    }

    async fn write_synced(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        file::File::write_synced(self, pos, data).await
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        file::File::preallocate(self, len).await
    }

    async fn size(&self) -> io::Result<u64> {
        file::File::size(self).await
    }
}

impl Disk for FsDisk {
    type File = file::File;

    async fn open(&self, name: &str) -> io::Result<file::File> {
        file::File::open(&self.dir.join(name)).await
    }

    async fn open_for_reading(&self, name: &str) -> io::Result<file::File> {
        file::File::open_for_reading(&self.dir.join(name)).await
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        // Start-up and segment deletion only: a directory read is short.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        file::remove(self.dir.join(name)).await
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        // Start-up only (quarantine).
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        file::sync_dir(&self.dir).await
    }
}
