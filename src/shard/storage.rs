//! The shard's side of the message store: opening this run's log, handing
//! recovered messages to the queues they belong to, logging what enters
//! and leaves durable queues, and the commit task that makes it durable
//! and answers the publishers waiting for it.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use super::{ConfirmAnswer, Shard};
use crate::catalog::{queue_shard, QueueDef};
use crate::ids::{ConnectionId, QueueId, MANAGEMENT_CONNECTION};
use crate::message::Message;
use crate::protocol::ShortStr;
use crate::queue::Queue;
use crate::runtime;
use crate::runtime::notify::{Notify, Waiters};
use crate::store::disk::FsDisk;
use crate::store::log::{Commit, Log, Lsn};
use crate::store::record::QueueName;
use crate::store::recovery::{self, Share};
use crate::store::Store;

/// The pause between pieces of a spare segment's zero fill while it is
/// well ahead of the appends: 64 KiB per 2 ms fills a 16 MiB segment in
/// about half a second.
const SPARE_FILL_PAUSE: Duration = Duration::from_millis(2);

/// Commits a shard lets overlap. More than one: a record appended while
/// one syncs starts the next at once, and overlapping fdatasyncs take no
/// longer than one here. Three rather than two: at 10k confirms/s the
/// confirm p50 was 2-7% lower in 7 of 7 paired runs at 3418c60 (p99 no
/// different), presumably as a publish less often waits for a free slot,
/// and the 4 x 256 confirm flood kept its rate (157 records per fdatasync
/// instead of 218).
const COMMITS_IN_FLIGHT: usize = 3;

/// The blocking threads a shard's store may keep busy at once, which
/// `runtime::run_shards` gives each shard: one per commit in flight, one
/// for the spare's zeros (`Log::prepare_spare`), and one each for a read
/// of the pager and of compaction that misses the page cache
/// (`runtime::file::File::read_at`), so that none of them queues a commit
/// behind it.
pub(crate) const STORE_BLOCKING_THREADS: usize = COMMITS_IN_FLIGHT + 3;

/// How long records that nobody waits for (an ack's settle, a released
/// page record, a deleted queue) may gather before a commit of their own.
/// A consumer draining a durable queue otherwise had each of its acks
/// synced at once: hundreds of commits a second, each a wake-up of a
/// blocking thread and two trips to the device, about a tenth of the
/// drain's CPU. A crash loses at most this much of them, and a lost
/// settle only brings an acked message back (at-least-once).
const LAZY_COMMIT_PAUSE: Duration = Duration::from_millis(20);

/// What start-up recovery found, for the shards to take over.
pub struct StoreSetup {
    disk: FsDisk,
    epoch: u64,
    segment_size: u64,
    fsync: bool,
    /// Per shard: what it takes of the earlier runs.
    shares: Mutex<Vec<Option<Share>>>,
}

impl StoreSetup {
    /// The epoch this run writes.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Reads the message logs under `dir` (created if missing) and splits
    /// what was live among `shard_count` shards.
    pub(crate) fn recover(
        dir: PathBuf,
        shard_count: usize,
        segment_size: u64,
        fsync: bool,
    ) -> Result<StoreSetup, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot use message store {}: {err}", dir.display()))?;
        let disk = FsDisk { dir: dir.clone() };
        let owner = |name: &QueueName| {
            queue_shard(name.vhost.as_bytes(), name.name.as_bytes(), shard_count)
        };
        let plan =
            runtime::file::block_on(recovery::plan(&disk, shard_count, segment_size, owner))?
                .map_err(|err| format!("cannot recover message store {}: {err}", dir.display()))?;
        let (messages, delayed) = plan
            .shares
            .iter()
            .map(Share::message_counts)
            .fold((0, 0), |(m, d), (more_m, more_d)| (m + more_m, d + more_d));
        if messages + delayed > 0 {
            tracing::info!(
                "message store: recovered {messages} messages in queues and {delayed} delayed"
            );
        }
        Ok(StoreSetup {
            disk,
            epoch: plan.epoch,
            segment_size,
            fsync,
            shares: Mutex::new(plan.shares.into_iter().map(Some).collect()),
        })
    }
}

/// One shard's store and the wake-ups of its commit task and of the task
/// that makes the next segment ahead.
pub(super) struct ShardStore {
    pub(super) store: Store<FsDisk>,
    /// Something was appended, or a commit finished.
    work: Notify,
    /// Something was appended that a publisher, the pager or compaction
    /// waits for: the next commit starts at once.
    urgent: Cell<bool>,
    urgent_due: Waiters,
    spare_due: Notify,
    commits_in_flight: Cell<usize>,
    /// A commit failed (reported once).
    failed: Cell<bool>,
}

impl ShardStore {
    /// Records were appended that something waits for (a confirm, a page
    /// out, a read of what compaction moved) or that should not wait (a
    /// delayed message routed): a commit starts at once.
    pub(super) fn commit_now(&self) {
        self.urgent.set(true);
        self.urgent_due.wake_all();
        self.work.notify();
    }

    /// Records were appended that nothing waits for, or segments died:
    /// they go with the next commit, at the latest `LAZY_COMMIT_PAUSE`
    /// from now.
    pub(super) fn commit_later(&self) {
        self.work.notify();
    }
}

impl Shard {
    /// Opens this shard's log, takes over its part of the earlier runs,
    /// and starts the commit task.
    pub(super) fn open_store(self: &Rc<Self>) {
        let setup = &self.shared.store;
        let log = Log::new(
            setup.disk.clone(),
            setup.epoch,
            self.id,
            setup.segment_size,
            setup.fsync,
        );
        let share = setup.shares.lock().expect("not poisoned")[self.id].take();
        let store = Store::new(log);
        if let Some(share) = share {
            store.take_over(share);
        }
        let shard_store = ShardStore {
            store,
            work: Notify::new(),
            urgent: Cell::new(false),
            urgent_due: Waiters::new(),
            spare_due: Notify::new(),
            commits_in_flight: Cell::new(0),
            failed: Cell::new(false),
        };
        shard_store.commit_now();
        let _ = self.store.set(shard_store);
        let shard = self.clone();
        runtime::spawn(async move { shard.commit_loop().await });
        let shard = self.clone();
        runtime::spawn(async move { shard.spare_loop().await });
    }

    pub(super) fn store(&self) -> &ShardStore {
        self.store
            .get()
            .expect("the store opens before the shard serves")
    }

    /// A queue created on this shard: a durable one logs its persistent
    /// messages and gets back what recovery found for it.
    pub(super) fn track_queue(&self, def: &QueueDef, q: &mut Queue) {
        if !def.durable || def.exclusive_owner.is_some() {
            return;
        }
        q.set_durable();
        let name = queue_name(&def.vhost, &def.name);
        for message in self.store().store.track(def.id, name) {
            q.restore(&message, self);
        }
    }

    /// Once the durable definitions are applied, the recovered messages
    /// that no queue claimed belong to queues deleted just before a crash:
    /// they go for good.
    pub(super) fn drop_unclaimed(&self) {
        let store = self.store();
        for (name, count) in store.store.drop_unclaimed() {
            tracing::warn!(
                "message store: {count} messages of queue '{}' in vhost '{}', which has no \
                 durable definition, are dropped",
                name.name,
                name.vhost
            );
        }
        store.commit_later();
    }

    /// Logs a message that entered `queue` (`q`) under `seq`, and tells
    /// the queue where (it may page the message out by that). The position
    /// to wait for, or None when the store failed (the publish is refused).
    pub(super) fn log_enqueue(
        &self,
        queue: QueueId,
        q: &mut Queue,
        seq: u64,
        message: &Message,
    ) -> Option<Lsn> {
        let store = self.store();
        let appended = store.store.enqueue(queue, seq, message)?;
        store.commit_now();
        q.logged_at(seq, appended.at);
        Some(appended.lsn)
    }

    pub(super) fn log_gone(&self, queue: QueueId, q: &mut Queue) {
        q.take_gone(|seqs| {
            let store = self.store();
            store.store.settle(queue, seqs);
            store.commit_later();
        });
    }

    pub(super) fn log_delete(&self, queue: QueueId) {
        let store = self.store();
        store.store.delete(queue);
        store.commit_later();
    }

    /// Answers a confirming publisher now, or after the sync that covers
    /// `lsn`.
    pub(super) fn confirm(&self, conn: ConnectionId, answer: ConfirmAnswer, lsn: Option<Lsn>) {
        if answer.confirm.tag == 0 || conn == MANAGEMENT_CONNECTION {
            return;
        }
        let mut confirms = self.confirms.borrow_mut();
        match lsn {
            Some(lsn) if lsn > self.store().store.log().durable() => {
                confirms.after_sync(lsn, conn, answer);
            }
            _ => {
                confirms.answer(conn, answer);
                self.flow_owed.notify();
            }
        }
    }

    /// Group commit: writes and syncs whatever was appended as soon as
    /// fewer than `COMMITS_IN_FLIGHT` commits are in flight
    /// (`store::log::commit`), and answers the publishers each covered.
    /// Records nobody waits for wait up to `LAZY_COMMIT_PAUSE` for company.
    async fn commit_loop(self: Rc<Self>) {
        let store = self.store();
        loop {
            store.work.wait().await;
            if !store.urgent.get() {
                let urgent = store.urgent_due.wait_until(|| store.urgent.get());
                runtime::timeout(LAZY_COMMIT_PAUSE, urgent).await;
            }
            while store.commits_in_flight.get() < COMMITS_IN_FLIGHT {
                let Some(commit) = store.store.log().begin_commit() else {
                    break;
                };
                store.urgent.set(false);
                store
                    .commits_in_flight
                    .set(store.commits_in_flight.get() + 1);
                let shard = self.clone();
                runtime::spawn(async move { shard.finish_commit(commit).await });
            }
        }
    }

    async fn finish_commit(&self, commit: Commit) {
        let store = self.store();
        let finished = store.store.log().finish_commit(commit).await;
        store
            .commits_in_flight
            .set(store.commits_in_flight.get() - 1);
        match finished {
            Ok(lsn) => {
                self.confirms.borrow_mut().synced(lsn);
                self.flow_owed.notify();
                self.paging.synced.wake_all();
                store.spare_due.notify();
                store.work.notify();
            }
            // Once: the log takes nothing more after its first failure.
            Err(err) if !store.failed.replace(true) => self.store_failed(&err),
            Err(_) => {}
        }
    }

    /// Makes the log's next segment ahead of the commit that needs it, off
    /// the commit path (`Log::prepare_spare`), pausing between pieces
    /// while it is well ahead.
    async fn spare_loop(self: Rc<Self>) {
        let store = self.store();
        let pause = async || runtime::sleep(SPARE_FILL_PAUSE).await;
        loop {
            store.spare_due.wait().await;
            if let Some(index) = store.store.log().spare_wanted() {
                store.store.log().prepare_spare(index, pause).await;
            }
        }
    }

    /// A write or fdatasync failed: what waited for it is rejected, and
    /// publishers are blocked as under the memory alarm, for good: after a
    /// failed fdatasync nothing written can be trusted to be on disk.
    fn store_failed(&self, err: &std::io::Error) {
        tracing::error!(
            "message store on shard {} failed: {err}; publishers are blocked and unconfirmed \
             publishes rejected until restart",
            self.id
        );
        self.confirms.borrow_mut().fail_waiting();
        self.flow_owed.notify();
        self.paging.synced.wake_all();
        self.shared.load.set_store_failed();
    }

    /// At a clean stop, once the connections are closed: waits until what
    /// the handlers appended last is durable. Nothing waits for an ack's
    /// settle, a dead letter's or a routed delayed message's records, and
    /// a stop right after them lost them (an acked message came back).
    pub(super) async fn drain_store(&self) {
        let store = self.store();
        let log = store.store.log();
        store.commit_now();
        self.paging
            .synced
            .wait_until(|| log.is_failed() || log.durable() >= log.appended())
            .await;
    }

    /// At shutdown: how well group commit batched (records per commit).
    pub(super) fn log_store_totals(&self) {
        let (records, commits) = self.store().store.log().totals();
        if commits > 0 {
            tracing::info!(
                "message store, shard {}: {records} records in {commits} commits ({:.1} per fdatasync)",
                self.id,
                records as f64 / commits as f64
            );
        }
    }

    /// Shard 0's watch on the data directory's free space.
    pub(super) fn disk_watch(&self) -> DiskWatch {
        let total = crate::memory::total_memory();
        DiskWatch {
            dir: self.shared.store.disk.dir.clone(),
            limit: self.shared.config.disk_free_limit.bytes(total),
        }
    }
}

/// `--disk-free-limit`: RabbitMQ's disk alarm.
pub(super) struct DiskWatch {
    dir: PathBuf,
    limit: u64,
}

impl DiskWatch {
    /// Free bytes now (None where the file system does not say), and the
    /// limit.
    pub(super) fn free_and_limit(&self) -> (Option<u64>, u64) {
        (free_bytes(&self.dir), self.limit)
    }

    pub(super) fn sample(&self, board: &super::LoadBoard) {
        let Some(free) = free_bytes(&self.dir) else {
            return;
        };
        let low = free < self.limit;
        if !board.set_disk_low(low) {
            return;
        }
        let (free_mib, limit_mib) = (free >> 20, self.limit >> 20);
        if low {
            tracing::warn!(
                "disk resource limit alarm set: {free_mib} MiB free under {}, limit {limit_mib} MiB; \
                 publishers are blocked",
                self.dir.display()
            );
        } else {
            tracing::info!("disk resource limit alarm cleared: {free_mib} MiB free");
        }
    }
}

/// Space an unprivileged process may still use on `dir`'s file system.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs reads the NUL-terminated path and writes only into
    // the struct we pass, which is plain data.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // A file system that reports no size at all (ramfs) has no free space
    // to measure: no alarm, rather than one that never clears.
    if stat.f_blocks == 0 {
        return None;
    }
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The reason connection.blocked gives under the disk alarm.
pub(crate) const DISK_ALARM_REASON: &str = "low on disk";

fn queue_name(vhost: &ShortStr, name: &ShortStr) -> QueueName {
    QueueName {
        vhost: vhost.clone(),
        name: name.clone(),
    }
}
