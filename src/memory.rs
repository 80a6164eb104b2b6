//! Memory against the high watermark, as RabbitMQ's memory alarm sees it:
//! the watermark (a fraction of the machine's memory or an absolute size),
//! what the machine has, and what this process holds.
//!
//! What the process holds is its resident set, read from the kernel: it
//! counts every byte really held (message bodies, the read chunks they
//! pin, allocator slack), which a tally kept by the data path would not,
//! and reading it costs the data path nothing. One shard samples it on its
//! load tick (see `shard::load`); the reading allocates nothing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::str::FromStr;

/// `--memory-high-watermark`: past it, publishers are blocked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Watermark {
    /// A fraction of the machine's memory (RabbitMQ's default is 0.4).
    Relative(f64),
    /// A size in bytes.
    Absolute(u64),
}

impl Watermark {
    /// The watermark in bytes, for a machine with `total` bytes of memory.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Watermark::Relative(fraction) => (total as f64 * fraction) as u64,
            Watermark::Absolute(bytes) => bytes,
        }
    }
}

impl FromStr for Watermark {
    type Err = String;

    /// `0.4` (a fraction, at most 1), or a size: `500000000`, `512MiB`,
    /// `2GB` (RabbitMQ's units: k/KiB, M/MiB, G/GiB are powers of 1024;
    /// kB, MB, GB powers of 1000).
    fn from_str(text: &str) -> Result<Watermark, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let invalid = || format!("'{text}' is neither a fraction (0.4) nor a size (512MiB)");
        if unit.is_empty() && number.contains('.') {
            let fraction: f64 = number.parse().map_err(|_| invalid())?;
            return match fraction {
                f if f > 0.0 && f <= 1.0 => Ok(Watermark::Relative(f)),
                _ => Err(format!(
                    "a relative watermark must be in (0, 1], not {text}"
                )),
            };
        }
        let count: u64 = number.parse().map_err(|_| invalid())?;
        let scale: u64 = match unit.trim() {
            "" => 1,
            "k" | "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(invalid()),
        };
        count
            .checked_mul(scale)
            .filter(|&bytes| bytes > 0)
            .map(Watermark::Absolute)
            .ok_or_else(invalid)
    }
}

/// The memory this process may use: the machine's RAM, or the cgroup's
/// limit when it is lower (a container's), as RabbitMQ reads it.
pub(crate) fn total_memory() -> u64 {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = (pages.max(0) as u64).saturating_mul(page_size.max(0) as u64);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|limit| limit.trim().parse::<u64>().ok());
    match cgroup {
        Some(limit) if limit > 0 && limit < physical => limit,
        _ => physical,
    }
}

/// Reads this process's resident set size without allocating.
pub(crate) struct ResidentSet {
    statm: Option<File>,
    page_size: u64,
}

impl ResidentSet {
    pub fn open() -> ResidentSet {
        // SAFETY: sysconf only reads a system configuration value.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        ResidentSet {
            statm: File::open("/proc/self/statm").ok(),
            page_size,
        }
    }

    /// Resident bytes now; None when the kernel does not say.
    pub fn bytes(&self) -> Option<u64> {
        let mut buf = [0u8; 128];
        let len = self.statm.as_ref()?.read_at(&mut buf, 0).ok()?;
        // statm: size resident shared text lib data dt, in pages.
        let text = std::str::from_utf8(&buf[..len]).ok()?;
        let resident: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(resident * self.page_size)
    }
}

/// mimalloc's option number for `purge_delay` (mimalloc.h's
/// `mi_option_e`, the same in its v2 and v3; the crate names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's own `purge_delay`, in milliseconds.
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 10;
/// How long freed allocator pages stay mapped before they go back to the
/// kernel: `return_free_memory` hands them back at once under memory
/// pressure, whatever this says.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Allocator settings for a steady latency, made once at start-up before
/// any shard runs. At 10k persistent confirms/s a shard's thread stopped
/// for 2-8 ms about once a second in the kernel's page fault handler,
/// clearing memory the allocator had just asked for, and that set the
/// latency tail: confirm p99 6-10 ms and delivery p99 4-6 ms before these
/// two settings, 3.5-5 ms and 1.5-2.3 ms with them (perf's p-10k):
/// - no transparent huge pages: mimalloc asks for them, and the first
///   touch of one clears 2 MiB (and may compact memory) on the faulting
///   thread;
/// - freed pages go back to the kernel after a second rather than 10 ms,
///   so a burst's buffers are not unmapped and faulted in again by the
///   next one. Unless MIMALLOC_PURGE_DELAY was set.
pub(crate) fn steady_allocator() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of this process;
    // mi_option_get and mi_option_set read and write mimalloc's option
    // table.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Hands the calling thread's free allocator pages back to the kernel, so
/// the resident set (what the alarm reads) falls once messages are gone.
/// The allocator would otherwise do it only after a delay, and only when
/// that thread allocates again, which an idle shard may not. `force` does
/// it now, whatever the delay. Harmless where mimalloc is not the global
/// allocator (it then holds nothing).
pub(crate) fn return_free_memory(force: bool) {
    // SAFETY: mi_collect only walks the calling thread's own mimalloc heap.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_parse_as_rabbitmq_writes_them() {
        assert_eq!("0.4".parse(), Ok(Watermark::Relative(0.4)));
        assert_eq!("1.0".parse(), Ok(Watermark::Relative(1.0)));
        assert_eq!("1000".parse(), Ok(Watermark::Absolute(1000)));
        assert_eq!("512MiB".parse(), Ok(Watermark::Absolute(512 << 20)));
        assert_eq!("2GB".parse(), Ok(Watermark::Absolute(2_000_000_000)));
        assert_eq!("64k".parse(), Ok(Watermark::Absolute(64 << 10)));
        for bad in [
            "",
            "0.0",
            "1.5",
            "-1",
            "12XB",
            "0",
            "0.4GB",
            "99999999999999999999G",
        ] {
            assert!(bad.parse::<Watermark>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn relative_watermark_scales_with_total_memory() {
        assert_eq!(Watermark::Relative(0.4).bytes(1000), 400);
        assert_eq!(Watermark::Absolute(7).bytes(1000), 7);
    }

    #[test]
    fn resident_set_is_read() {
        let rss = ResidentSet::open().bytes().expect("statm is readable");
        assert!(rss > 0);
        assert!(total_memory() > rss);
    }
}
