//! Files for the message store, on the current shard's io_uring: direct
//! I/O (O_DIRECT, glommio's `DmaFile`) where the file system allows it,
//! buffered I/O plus fdatasync where it does not (tmpfs, overlayfs, FUSE
//! refuse O_DIRECT with EINVAL).
//!
//! Callers write whole blocks at block-aligned positions (`BLOCK`), which is
//! what direct I/O needs and what lets the store never rewrite a block it
//! has synced; reads may be unaligned. A file belongs to the shard that
//! opened it.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, DmaFile, OpenOptions};

/// The unit of every write: a multiple of any device's logical block size
/// (glommio's DMA alignment is at most 4096).
pub(crate) const BLOCK: u64 = 4096;

/// Logs why the store falls back to buffered I/O, once per process: the
/// choice is the file system's, the same for every file of the data
/// directory.
fn say_buffered(path: &Path, why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let dir = path.parent().unwrap_or(path).display();
        tracing::info!("{dir}: {why}; the store uses buffered I/O and fdatasync");
    });
}

pub struct File {
    inner: Inner,
}

enum Inner {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

impl File {
    /// Opens `path` for reading and writing, creating it if missing: with
    /// O_DIRECT if the file system takes it, else buffered.
    pub async fn open(path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        match options.dma_open(path).await {
            Ok(file) if file.alignment() <= BLOCK => Ok(File {
                inner: Inner::Direct(file),
            }),
            // A device whose block is larger than ours cannot take our
            // writes directly.
            Ok(file) => {
                let _ = file.close().await;
                say_buffered(path, "its block size is larger than ours");
                Self::open_buffered(&options, path).await
            }
            // Asked of glommio's error: once converted to an io::Error it
            // keeps the kind, not the OS error number, and the fallback
            // never happened.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                say_buffered(path, "the file system refuses O_DIRECT");
                Self::open_buffered(&options, path).await
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Opens `path` to read it through the page cache: reads of records
    /// that are not block-aligned. (On some devices direct reads go to a
    /// polled ring that refuses them with EOPNOTSUPP.)
    pub(crate) async fn open_for_reading(path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true);
        Self::open_buffered(&options, path).await
    }

    async fn open_buffered(options: &OpenOptions, path: &Path) -> io::Result<File> {
        let file = options.buffered_open(path).await?;
        Ok(File {
            inner: Inner::Buffered(file),
        })
    }

    /// Writes `data` (a whole number of blocks) at `pos` (block-aligned).
    pub(crate) async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        debug_assert!(pos % BLOCK == 0 && data.len() as u64 % BLOCK == 0);
        let written = match &self.inner {
            Inner::Direct(file) => {
                let mut buffer = file.alloc_dma_buffer(data.len());
                buffer.as_bytes_mut().copy_from_slice(data);
                file.write_at(buffer, pos).await?
            }
            Inner::Buffered(file) => file.write_at(data.to_vec(), pos).await?,
        };
        if written != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    ///
    /// A buffered file is read straight into the returned buffer: on the
    /// shard's thread as far as the page cache holds it (RWF_NOWAIT, so
    /// the call never waits for the device), the rest on the blocking
    /// thread. Through the ring each read was copied twice, since
    /// glommio's buffer cannot be handed on; in a drain of paged messages
    /// that second copy was about a twentieth of the CPU.
    pub(crate) async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let fd = match &self.inner {
            Inner::Direct(file) => return Ok(file.read_at(pos, len).await?.to_vec()),
            Inner::Buffered(file) => file.as_raw_fd(),
        };
        let mut buffer = Vec::with_capacity(len);
        read_into(fd, pos, &mut buffer, libc::RWF_NOWAIT)?;
        if buffer.len() == len {
            return Ok(buffer);
        }
        super::blocking(move || {
            read_into(fd, pos, &mut buffer, 0)?;
            Ok(buffer)
        })
        .await
    }

    /// `write_at` and fdatasync(2) in one call on the shard's blocking
    /// thread, not through io_uring: the ring hands a sync to a kernel
    /// worker that shares the shard's CPU, and on a busy shard it waited
    /// there for a time slice (about 5 ms a commit at 10k confirms/s,
    /// against 0.3 ms for the syscall). One hand-over for both calls took
    /// about 20% more off the confirm latency than a ring write followed
    /// by a blocking sync.
    pub(crate) async fn write_synced(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        debug_assert!(pos % BLOCK == 0 && data.len() as u64 % BLOCK == 0);
        let fd = self.raw_fd();
        // O_DIRECT wants aligned memory: an over-allocated copy, written
        // from its first BLOCK-aligned byte.
        let len = data.len();
        let mut copy = CopyBuffers::take(len + BLOCK as usize);
        let start = copy.as_ptr().align_offset(BLOCK as usize);
        copy[start..start + len].copy_from_slice(data);
        let offset = libc::off_t::try_from(pos).map_err(io::Error::other)?;
        let (written, copy) = glommio::executor()
            .spawn_blocking(move || {
                let block = &copy[start..start + len];
                // SAFETY: pwrite reads `len` bytes of `block`, which lives
                // until the call returns; the file stays open meanwhile
                // (`self` is borrowed until this future completes).
                let written = unsafe { libc::pwrite(fd, block.as_ptr().cast(), len, offset) };
                let written = match usize::try_from(written) {
                    Ok(written) if written == len => sync(fd),
                    Ok(written) => Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {written} of {len} bytes"),
                    )),
                    Err(_) => Err(io::Error::last_os_error()),
                };
                (written, copy)
            })
            .await;
        CopyBuffers::give_back(copy);
        written
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        match &self.inner {
            Inner::Direct(file) => file.as_raw_fd(),
            Inner::Buffered(file) => file.as_raw_fd(),
        }
    }

    /// Reserves `len` bytes on disk, so writes up to it cannot fail for
    /// space, without changing the file's size. On a file system without
    /// fallocate (ramfs, some FUSE ones) it reserves nothing: the writes
    /// claim their space, and a full disk shows as a failed write.
    pub(crate) async fn preallocate(&self, len: u64) -> io::Result<()> {
        let reserved = match &self.inner {
            Inner::Direct(file) => file.pre_allocate(len, true).await,
            Inner::Buffered(file) => file.pre_allocate(len, true).await,
        };
        match reserved {
            Err(err) if err.raw_os_error() != Some(libc::EOPNOTSUPP) => Err(err.into()),
            _ => Ok(()),
        }
    }

    pub async fn size(&self) -> io::Result<u64> {
        Ok(match &self.inner {
            Inner::Direct(file) => file.file_size().await?,
            Inner::Buffered(file) => file.file_size().await?,
        })
    }
}

/// Makes the directory's entries (files created or removed in it) durable.
pub(crate) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = glommio::io::Directory::open(dir).await?;
    dir.sync().await?;
    dir.close().await?;
    Ok(())
}

pub async fn remove(path: PathBuf) -> io::Result<()> {
    glommio::io::remove(path).await?;
    Ok(())
}

/// Runs `future` to completion on a glommio executor of its own, on the
/// calling thread: for start-up work (reading the store) before the shards
/// start.
pub(crate) fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("warren-recovery")
        .io_memory(super::IO_MEMORY_MIN)
        .make()
        .map_err(|err| format!("cannot start the recovery executor: {err}"))?;
    Ok(executor.run(future))
}

/// The aligned copies `File::write_synced` hands to the blocking thread,
/// kept on the shard's thread for the next writes. A fresh copy for each
/// write was memory to zero, and often to fault in (the kernel clears each
/// new page on the faulting thread): for the spare segment's 1 MiB pieces
/// of zeros that held the shard's thread for milliseconds
/// (`memory::steady_allocator` says more).
struct CopyBuffers;

thread_local! {
    static COPY_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl CopyBuffers {
    /// Enough for three commits and the spare's zeros in flight at once.
    const KEPT: usize = 4;
    /// Larger copies (a commit with a very large message) are not kept.
    const KEPT_BYTES_MAX: usize = 2 << 20;

    /// A buffer of at least `len` bytes, of any content: the smallest kept
    /// one that fits, so a commit's few blocks leave the spare's 1 MiB
    /// pieces their buffers.
    fn take(len: usize) -> Vec<u8> {
        let kept = COPY_BUFFERS.with_borrow_mut(|kept| {
            let (fits, _) = kept
                .iter()
                .enumerate()
                .filter(|(_, buffer)| buffer.len() >= len)
                .min_by_key(|(_, buffer)| buffer.len())?;
            Some(kept.swap_remove(fits))
        });
        kept.unwrap_or_else(|| vec![0; len])
    }

    fn give_back(buffer: Vec<u8>) {
        if buffer.len() > Self::KEPT_BYTES_MAX {
            return;
        }
        COPY_BUFFERS.with_borrow_mut(|kept| {
            if kept.len() < Self::KEPT {
                kept.push(buffer);
            } else if let Some(smallest) = kept.iter_mut().min_by_key(|kept| kept.len()) {
                // Keep the larger: the spare's zeros come in 1 MiB pieces.
                if smallest.len() < buffer.len() {
                    *smallest = buffer;
                }
            }
        });
    }
}

/// Reads at `pos + buffer.len()` into `buffer`'s spare capacity until it
/// is full, the file ends, or (with RWF_NOWAIT) the rest is not in the
/// page cache. A file system that does not take the flag reads nothing
/// here, and the caller reads on.
fn read_into(
    fd: std::os::fd::RawFd,
    pos: u64,
    buffer: &mut Vec<u8>,
    flags: libc::c_int,
) -> io::Result<()> {
    while buffer.len() < buffer.capacity() {
        let spare = buffer.spare_capacity_mut();
        let io_vec = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        let offset = libc::off_t::try_from(pos + buffer.len() as u64).map_err(io::Error::other)?;
        // SAFETY: the kernel writes at most `iov_len` bytes into the
        // spare capacity the iovec points to, which `buffer` owns.
        let read = unsafe { libc::preadv2(fd, &io_vec, 1, offset, flags) };
        match usize::try_from(read) {
            Ok(0) => return Ok(()),
            // SAFETY: the kernel initialised the `read` bytes after the
            // buffer's end.
            Ok(read) => unsafe { buffer.set_len(buffer.len() + read) },
            Err(_) => {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL) if flags != 0 => {
                        return Ok(())
                    }
                    _ => return Err(err),
                }
            }
        }
    }
    Ok(())
}

/// fdatasync(2), on a blocking thread.
fn sync(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fdatasync only reads the descriptor number.
    match unsafe { libc::fdatasync(fd) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops `path`'s pages from the page cache (they are clean: written
    /// and synced), so the next read must go to the device.
    fn evict(path: &Path) {
        let file = std::fs::File::open(path).expect("open the scratch file");
        // SAFETY: posix_fadvise only reads the descriptor and the range.
        let advised =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(advised, 0, "posix_fadvise");
    }

    #[test]
    fn reads_come_back_whole_from_the_page_cache_or_from_the_device() {
        let path = std::env::temp_dir().join(format!("warren-read-at-{}", std::process::id()));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write the scratch file");
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .expect("sync the scratch file");
        let len = data.len() as u64;
        let read = |pos: u64, count: usize| {
            let path = path.clone();
            block_on(async move {
                let file = File::open_for_reading(&path)
                    .await
                    .expect("open for reading");
                file.read_at(pos, count).await.expect("read")
            })
            .expect("an executor")
        };
        assert_eq!(
            read(4103, 100_000),
            data[4103..104_103],
            "from the page cache"
        );
        evict(&path);
        assert_eq!(read(1, 200_000), data[1..200_001], "from the device");
        evict(&path);
        assert_eq!(read(len - 10, 100), data[data.len() - 10..], "to the end");
        assert!(read(len + 5, 100).is_empty(), "past the end");
        let _ = std::fs::remove_file(&path);
    }
}
