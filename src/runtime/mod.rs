//! The shard runtime: the only module that knows there are several threads
//! and the only one, with the connection shell, that touches glommio.
//!
//! It starts one glommio `LocalExecutor` per shard (pinned to its own CPU
//! when the process may use enough of them), joins them in a full mesh of
//! bounded single-producer/single-consumer rings, and gives the rest of the
//! broker a few narrow tools: [`mesh::Mesh`] to send to another shard,
//! [`notify::Notify`] to wake a local task, [`net`] for sockets, [`spawn`]
//! and [`sleep`]. Keeping glommio behind these names is what lets us replace
//! it if it ever holds us back.

pub mod file;
pub mod mesh;
pub mod net;
pub mod notify;

use std::future::Future;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

use crate::ids::ShardId;

/// Locked memory each shard registers with io_uring for its I/O buffers.
/// glommio's default (10 MiB) is above common `ulimit -l` values (8 MiB here,
/// often 64 KiB in containers), and it reports a failed registration only
/// through the `log` crate, so we size it from the limit ourselves. The
/// buffers serve file I/O only, which nothing does until the store exists,
/// so the cap is small: locked memory is counted per user, and several
/// brokers (a test suite) would otherwise exhaust it.
const IO_MEMORY_MAX: usize = 256 << 10;
/// glommio will not go below this per executor.
const IO_MEMORY_MIN: usize = 64 << 10;
/// glommio refuses to start an executor when `ulimit -l` is below this.
const MEMLOCK_MIN: usize = 512 << 10;

/// Runs `shard_main` on `shard_count` executors joined by a ring mesh of
/// `ring_capacity` messages per ordered pair of shards, each with
/// `blocking_threads` threads for work that blocks ([`blocking`]), and
/// returns when every shard's main future has returned.
pub fn run_shards<T, F, Fut>(
    shard_count: usize,
    ring_capacity: usize,
    blocking_threads: usize,
    shard_main: F,
) -> Result<(), String>
where
    T: Send + mesh::Urgency + 'static,
    F: Fn(ShardId, std::rc::Rc<mesh::Mesh<T>>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let io_memory = io_memory_per_shard(shard_count)?;
    let cpus = allowed_cpus();
    let pin = cpus.len() >= shard_count;
    let builder = MeshBuilder::<T, _>::full(shard_count, ring_capacity);
    let traffic = std::sync::Arc::new(mesh::Traffic::new(shard_count));
    let mut handles = Vec::with_capacity(shard_count);
    for (shard_id, cpu) in (0..shard_count).zip(cpus.iter().copied().chain(std::iter::repeat(0))) {
        let placement = if pin {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        };
        let (builder, shard_main) = (builder.clone(), shard_main.clone());
        let traffic = traffic.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("warren-shard-{shard_id}"))
            .io_memory(io_memory)
            // The store's commits run here (`file::File::write_synced`):
            // on any CPU, not queued behind the shard's own work.
            .blocking_thread_pool_placement(PoolPlacement::Unbound(blocking_threads))
            .spawn(move || async move {
                match mesh::Mesh::join(builder, shard_id, traffic).await {
                    Ok(mesh) => run_latency_sensitive(shard_main(shard_id, mesh)).await,
                    Err(err) => tracing::error!(shard_id, "cannot join the shard mesh: {err}"),
                }
            })
            .map_err(|err| format!("cannot start shard {shard_id}: {err}"))?;
        handles.push(handle);
    }
    for handle in handles {
        handle
            .join()
            .map_err(|err| format!("shard failed: {err}"))?;
    }
    Ok(())
}

/// How long a shard runs tasks before it polls for I/O again: while some
/// task is always runnable (a drain with a backlog, a reader with a full
/// buffer), socket completions wait this long. glommio's default (100 ms)
/// let a publish flood hold back a consumer's acks for that long on every
/// round trip: 912 msg/s for a consumer with prefetch 100. Measured here,
/// 1 to 10 ms keep publisher and consumer in step with no loss on the
/// auto-ack path; 0.5 ms made glommio's scheduling thrash (2k msg/s).
const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// Runs a shard's work in a task queue whose latency matters, which holds
/// glommio's preemption period at `PREEMPT_TIMER` while it has work. Only
/// once the mesh has formed: a short period during the cross-shard
/// handshakes of the join made start-up hang now and then (1 start in 40
/// here, none in 60 without).
async fn run_latency_sensitive(shard_main: impl Future<Output = ()> + 'static) {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(PREEMPT_TIMER),
        "shard",
    );
    match glommio::spawn_local_into(shard_main, queue) {
        Ok(task) => task.await,
        Err(err) => tracing::error!("cannot start the shard's task queue: {err}"),
    }
}

/// Chooses each shard's io_uring buffer memory from `RLIMIT_MEMLOCK`, or
/// explains in one line why the limit is too low to start.
fn io_memory_per_shard(shard_count: usize) -> Result<usize, String> {
    let limit = memlock_limit();
    if limit < MEMLOCK_MIN {
        return Err(format!(
            "the locked-memory limit (ulimit -l) is {} KiB; io_uring needs at least {} KiB: \
             raise it (ulimit -l, LimitMEMLOCK= in a systemd unit, --ulimit memlock in a container)",
            limit >> 10,
            MEMLOCK_MIN >> 10
        ));
    }
    // Leave half of the limit for the rings themselves and anything else
    // the process locks. Below the minimum glommio falls back to unregistered
    // buffers and logs a warning, which reaches our log through `log`.
    let share = limit / 2 / shard_count.max(1);
    Ok(share.clamp(IO_MEMORY_MIN, IO_MEMORY_MAX))
}

fn memlock_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX / 2;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX / 2)
}

/// The CPUs this process may run on, in order (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it and we
    // only read it through the libc accessor macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Runs a future on the current shard, detached.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Runs `work` on this shard's blocking thread and waits for it without
/// holding up the shard: for file I/O that syncs.
pub async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(work).await
}

/// Waits, on the current shard.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Lets every other runnable task of this shard have its turn before
/// continuing: how a task that could go on working bounds its work per turn.
pub(crate) async fn yield_now() {
    futures_lite::future::yield_now().await;
}

/// Runs `future` for at most `limit`; `None` when the time ran out first.
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    use futures_lite::FutureExt;
    async { Some(future.await) }
        .or(async {
            sleep(limit).await;
            None
        })
        .await
}
