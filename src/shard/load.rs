//! Each shard's load and the broker's memory alarm, sampled on a tick.
//!
//! Every `TICK` a shard compares how long its thread wanted the CPU (ran,
//! or waited runnable for it) with how long passed; above `SATURATED_BUSY`
//! it marks itself saturated on the board
//! every shard reads, which is what throttles backlogged queues
//! (`shard::flow`). Shard 0 also reads the process's resident memory and
//! raises or clears the memory alarm; every shard wakes its blocked
//! publishers when the alarm clears. The board is a handful of atomics,
//! each written by one shard and only when its value changes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::memory::ResidentSet;
use crate::runtime;

use super::Shard;

/// How often a shard samples its load (and shard 0 the memory).
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// A shard becomes saturated when its smoothed load reaches this share of
/// its core, and stays saturated until the load falls below
/// `UNSATURATED_BUSY`. The gap matters: a throttled publisher leaves the
/// shard a little idle while its consumers' acks travel, and that must not
/// release the flood again at once; a shard whose consumers are merely slow
/// falls far below it.
const SATURATED_BUSY: f64 = 0.9;
const UNSATURATED_BUSY: f64 = 0.5;
/// Ticks between hand-backs of free memory to the kernel when no alarm is
/// raised (under the alarm, every tick).
const RETURN_MEMORY_TICKS: u32 = 100;
/// Ticks between looks at the data directory's free space (RabbitMQ
/// looks every 100 ms to 10 s).
const DISK_TICKS: u32 = 50;
/// The memory alarm clears once resident memory is below this share of
/// the watermark.
const ALARM_CLEARS_AT_PERCENT: u64 = 95;
/// Weight of the newest tick in the smoothed load.
const LOAD_SMOOTHING: f64 = 0.25;

/// What every shard may read of every other's load.
pub struct LoadBoard {
    saturated: Box<[AtomicBool]>,
    memory_alarm: AtomicBool,
    /// The message store cannot write: publishers block until restart.
    store_failed: AtomicBool,
    /// Free disk space is below `--disk-free-limit`.
    disk_low: AtomicBool,
}

impl LoadBoard {
    pub fn new(shard_count: usize) -> LoadBoard {
        LoadBoard {
            saturated: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
            memory_alarm: AtomicBool::new(false),
            store_failed: AtomicBool::new(false),
            disk_low: AtomicBool::new(false),
        }
    }

    pub(crate) fn any_saturated(&self) -> bool {
        self.saturated
            .iter()
            .any(|flag| flag.load(Ordering::Relaxed))
    }

    /// Whether memory use is past the high watermark: publishers block.
    pub(crate) fn memory_alarm(&self) -> bool {
        self.memory_alarm.load(Ordering::Relaxed)
    }

    /// Whether the disk is short of space or the message store failed:
    /// publishers block.
    pub(crate) fn disk_alarm(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed) || self.store_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_store_failed(&self) {
        self.store_failed.store(true, Ordering::Relaxed);
    }

    /// Sets whether the disk is short of space; true when that changed.
    pub(crate) fn set_disk_low(&self, low: bool) -> bool {
        self.disk_low.swap(low, Ordering::Relaxed) != low
    }

    fn set_saturated(&self, shard: usize, saturated: bool) {
        let flag = &self.saturated[shard];
        if flag.load(Ordering::Relaxed) != saturated {
            flag.store(saturated, Ordering::Relaxed);
        }
    }
}

/// The CPU time the current thread has wanted: time it ran plus time it
/// waited runnable (/proc/thread-self/schedstat), so a shard that shares
/// its core with another process still reads as saturated when it would
/// have used the whole core. Without schedstat, the thread's CPU time.
struct CpuDemand {
    schedstat: Option<File>,
}

impl CpuDemand {
    /// Opens the calling thread's statistics: call it on the shard's thread.
    fn open() -> CpuDemand {
        CpuDemand {
            schedstat: File::open("/proc/thread-self/schedstat").ok(),
        }
    }

    fn total(&self) -> Duration {
        self.read_schedstat().unwrap_or_else(thread_cpu_time)
    }

    fn read_schedstat(&self) -> Option<Duration> {
        let mut buf = [0u8; 96];
        let len = self.schedstat.as_ref()?.read_at(&mut buf, 0).ok()?;
        // "<ns on cpu> <ns waiting on a runqueue> <timeslices>"
        let mut fields = std::str::from_utf8(&buf[..len])
            .ok()?
            .split_ascii_whitespace();
        let running: u64 = fields.next()?.parse().ok()?;
        let waiting: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_nanos(running.saturating_add(waiting)))
    }
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32)
}

/// Shard 0's view of the process's memory against the watermark.
struct MemoryWatch {
    resident: ResidentSet,
    watermark_bytes: u64,
}

impl MemoryWatch {
    fn sample(&self, board: &LoadBoard) {
        let Some(used) = self.resident.bytes() else {
            return;
        };
        // Under the alarm the shards hand free pages back to the kernel
        // every tick, which alone takes the resident set a little under
        // the watermark: clearing only well below it keeps a flood from
        // being unblocked and blocked again every few milliseconds.
        let limit = match board.memory_alarm() {
            true => self.watermark_bytes / 100 * ALARM_CLEARS_AT_PERCENT,
            false => self.watermark_bytes,
        };
        let alarm = used > limit;
        if board.memory_alarm.swap(alarm, Ordering::Relaxed) == alarm {
            return;
        }
        let (used_mib, watermark_mib) = (used >> 20, self.watermark_bytes >> 20);
        if alarm {
            tracing::warn!(
                "memory resource limit alarm set: {used_mib} MiB used, high watermark \
                 {watermark_mib} MiB; publishing connections are blocked"
            );
        } else {
            tracing::info!(
                "memory resource limit alarm cleared: {used_mib} MiB used, high watermark \
                 {watermark_mib} MiB"
            );
        }
    }
}

impl Shard {
    /// Samples load (and, on shard 0, memory) every tick until shutdown.
    pub(super) async fn tick_until_shutdown(&self) {
        let memory = (self.id == 0).then(|| self.memory_watch());
        let disk = (self.id == 0).then(|| self.disk_watch());
        let demand = CpuDemand::open();
        let mut last = (Instant::now(), demand.total());
        let (mut load, mut saturated) = (0.0, false);
        let mut alarm_seen = false;
        let mut ticks = 0u32;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            ticks = ticks.wrapping_add(1);
            runtime::sleep(TICK).await;
            let now = (Instant::now(), demand.total());
            let busy = now.1.saturating_sub(last.1).as_secs_f64()
                / now.0.duration_since(last.0).as_secs_f64().max(1e-9);
            last = now;
            load += LOAD_SMOOTHING * (busy.min(1.0) - load);
            saturated = load
                >= if saturated {
                    UNSATURATED_BUSY
                } else {
                    SATURATED_BUSY
                };
            let board = &self.shared.load;
            board.set_saturated(self.id, saturated);
            if let Some(memory) = &memory {
                memory.sample(board);
            }
            if let Some(disk) = disk.as_ref().filter(|_| ticks % DISK_TICKS == 1) {
                disk.sample(board);
            }
            if !board.any_saturated() {
                self.forgive_debts();
            }
            self.pay_owed_credit_soon();
            let memory_alarm = board.memory_alarm();
            if memory_alarm || ticks % RETURN_MEMORY_TICKS == 0 {
                crate::memory::return_free_memory(memory_alarm);
            }
            let alarm = memory_alarm || board.disk_alarm();
            if alarm_seen && !alarm {
                self.alarm_cleared.wake_all();
            }
            alarm_seen = alarm;
        }
    }

    fn memory_watch(&self) -> MemoryWatch {
        let total = crate::memory::total_memory();
        let watermark_bytes = self.shared.config.memory_high_watermark.bytes(total);
        tracing::info!(
            "memory high watermark set to {} MiB of {} MiB total",
            watermark_bytes >> 20,
            total >> 20
        );
        MemoryWatch {
            resident: ResidentSet::open(),
            watermark_bytes,
        }
    }
}
