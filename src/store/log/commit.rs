//! Group commit, pipelined: a commit takes everything appended so far
//! (`begin_commit`, synchronous), then writes and fdatasyncs it
//! (`finish_commit`). The shard lets a few commits overlap: a record
//! appended while one syncs starts its own at once instead of waiting a
//! whole sync for it, and concurrent fdatasyncs overlap on the device
//! (two threads here: the same latency each, twice the syncs per second).
//!
//! Overlapping commits stay ordered where order matters:
//! - They get their files in the order they began (`place`), so the one
//!   that starts a segment makes its file before a later one writes to it.
//! - The log is durable up to a commit only once it and every commit
//!   before it are synced (`mark_synced`); reads, confirms and deletions
//!   go by that.
//! - A segment that died before a commit began is deleted once that
//!   commit is durable: what killed it (acks, compaction's copies) is in
//!   that commit or an earlier one.

use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::{segment_name, Batch, Log, Lsn, State};
use crate::store::disk::{Disk, DiskFile, BLOCK};

/// One group commit, from `begin_commit` to `finish_commit`.
pub(crate) struct Commit {
    /// Its place in the order commits began.
    number: u64,
    batches: Vec<Batch>,
    synced: Synced,
}

/// What a commit makes durable once it and the commits before it are
/// synced.
struct Synced {
    /// The log's position and end (segment, offset) when it began.
    appended: Lsn,
    end: (u64, u64),
    /// Segments that died before it began.
    doomed: Vec<u64>,
    /// It wrote records (an fdatasync), not only deletions.
    wrote: bool,
}

/// The commits in flight, for `State`.
#[derive(Default)]
pub(super) struct Pipeline {
    /// Commits begun so far: the next one's number.
    begun: u64,
    /// Commits that have their files (they get them in order).
    placed: u64,
    /// Commits durable so far: every one numbered below is.
    done: u64,
    /// Commits synced ahead of an earlier one still in flight, by number.
    early: BTreeMap<u64, Synced>,
}

impl<D: Disk> Log<D> {
    /// Takes everything appended so far, and the segments that died
    /// meanwhile, into a commit; None when there is nothing to do or the
    /// log has failed.
    pub(crate) fn begin_commit(&self) -> Option<Commit> {
        let mut state = self.state.borrow_mut();
        if state.failed.is_some() || (state.batches.is_empty() && state.doomed.is_empty()) {
            return None;
        }
        let end = state
            .tail
            .map_or((0, 0), |(segment, end, _)| (segment, end));
        // The next batch starts on a fresh block.
        if let Some((_, end, _)) = state.tail.as_mut() {
            *end = end.next_multiple_of(BLOCK);
        }
        let number = state.pipeline.begun;
        state.pipeline.begun += 1;
        let batches = std::mem::take(&mut state.batches);
        let synced = Synced {
            appended: state.appended,
            end,
            doomed: std::mem::take(&mut state.doomed),
            wrote: !batches.is_empty(),
        };
        Some(Commit {
            number,
            batches,
            synced,
        })
    }

    /// Writes and syncs `commit`, then deletes the segments it made
    /// deletable; returns the durable position, which passes the
    /// commit's own once the commits before it are synced too. After an
    /// error the log is failed for good: a failed fdatasync may have
    /// dropped dirty pages, so nothing after it can be trusted to be on
    /// disk.
    pub(crate) async fn finish_commit(&self, commit: Commit) -> io::Result<Lsn> {
        let Commit {
            number,
            batches,
            synced,
        } = commit;
        let written = async {
            let files = self.place(number, &batches).await?;
            self.write_batches(batches, files).await
        };
        if let Err(err) = written.await {
            self.fail(&err);
            return Err(err);
        }
        self.not_failed()?;
        let deletable = self.mark_synced(number, synced);
        self.delete_segments(deletable).await;
        Ok(self.durable())
    }

    /// Begins and finishes one commit, or answers the durable position
    /// when there is nothing to commit: where nothing overlaps (the
    /// rewrite at start-up, tests).
    pub(crate) async fn commit(&self) -> io::Result<Lsn> {
        self.not_failed()?;
        match self.begin_commit() {
            Some(commit) => self.finish_commit(commit).await,
            None => Ok(self.durable()),
        }
    }

    /// Why the log failed, as an error, if it has.
    fn not_failed(&self) -> io::Result<()> {
        match &self.state.borrow().failed {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// The log fails for good; commits waiting for their turn give up.
    fn fail(&self, err: &io::Error) {
        let mut state = self.state.borrow_mut();
        if state.failed.is_none() {
            state.failed = Some(err.to_string());
        }
        drop(state);
        self.placed.wake_all();
    }

    /// The files commit `number` writes, one per batch, once every commit
    /// that began before it has its own. A commit that starts a segment
    /// waits until those commits are durable too: recovery reads a
    /// segment up to its first bad record, and takes a bad record in a
    /// segment that a later one follows for damage, so a segment must be
    /// whole on disk before the next gets anything. (Within a segment, a
    /// later commit's records behind an unfinished earlier write are never
    /// confirmed, and recovery drops them with it.)
    async fn place(&self, number: u64, batches: &[Batch]) -> io::Result<Vec<Rc<D::File>>> {
        let starts_segment = batches.iter().any(|batch| batch.creates.is_some());
        self.placed
            .wait_until(|| {
                let state = self.state.borrow();
                let pipeline = &state.pipeline;
                state.failed.is_some()
                    || (pipeline.placed == number && (!starts_segment || pipeline.done == number))
            })
            .await;
        self.not_failed()?;
        let files = self.files_for(batches).await;
        self.state.borrow_mut().pipeline.placed += 1;
        self.placed.wake_all();
        files
    }

    async fn files_for(&self, batches: &[Batch]) -> io::Result<Vec<Rc<D::File>>> {
        let mut files = Vec::with_capacity(batches.len());
        for batch in batches {
            files.push(self.file_for(batch).await?);
        }
        Ok(files)
    }

    /// Writes each batch to its file (one batch per segment in a commit)
    /// and fdatasyncs it in the same call.
    async fn write_batches(&self, batches: Vec<Batch>, files: Vec<Rc<D::File>>) -> io::Result<()> {
        for (mut batch, file) in batches.into_iter().zip(files) {
            let padded = batch.bytes.len().next_multiple_of(BLOCK as usize);
            batch.bytes.resize(padded, 0);
            match self.fsync {
                true => file.write_synced(batch.pos, &batch.bytes).await?,
                false => file.write_at(batch.pos, &batch.bytes).await?,
            }
        }
        Ok(())
    }

    /// Commit `number` is synced: the log is durable up to the last
    /// commit with every one before it synced. Returns the segments that
    /// this made deletable.
    fn mark_synced(&self, number: u64, synced: Synced) -> Vec<u64> {
        let mut state = self.state.borrow_mut();
        let State {
            pipeline,
            durable,
            durable_end,
            commits,
            ..
        } = &mut *state;
        pipeline.early.insert(number, synced);
        let mut deletable = Vec::new();
        while let Some(next) = pipeline.early.remove(&pipeline.done) {
            pipeline.done += 1;
            if *durable < next.appended {
                *durable = next.appended;
                *durable_end = next.end;
            }
            *commits += u64::from(next.wrote);
            deletable.extend(next.doomed);
        }
        drop(state);
        // A commit that starts a segment may be waiting for this.
        self.placed.wake_all();
        deletable
    }

    async fn delete_segments(&self, segments: Vec<u64>) {
        for segment in segments {
            let name = {
                let mut state = self.state.borrow_mut();
                state.readers.remove(&segment);
                let name = self.file_name(&state, segment);
                state.inherited.remove(&segment);
                name
            };
            if let Err(err) = self.disk.remove(&name).await {
                tracing::warn!("cannot delete the empty log segment {name}: {err}");
            }
        }
    }

    /// The spare segment, if it is the one `batch` starts (waiting while it
    /// is being made), grown to the batch's capacity if that is more.
    async fn take_spare(&self, batch: &Batch) -> io::Result<Option<Rc<D::File>>> {
        let Some(capacity) = batch.creates else {
            return Ok(None);
        };
        self.spare_made
            .wait_until(|| self.state.borrow().preparing != Some(batch.segment))
            .await;
        let spare = self.state.borrow_mut().spare.take();
        match spare {
            Some((index, file)) if index == batch.segment => {
                if capacity > self.segment_size {
                    file.preallocate(capacity).await?;
                }
                Ok(Some(file))
            }
            _ => Ok(None),
        }
    }

    /// The tail file, or the new segment the batch starts (made ahead, or
    /// preallocated now; named durably before anything in it is
    /// confirmed).
    async fn file_for(&self, batch: &Batch) -> io::Result<Rc<D::File>> {
        if let Some((segment, file)) = &self.state.borrow().tail_file {
            if *segment == batch.segment {
                return Ok(file.clone());
            }
        }
        if let Some(file) = self.take_spare(batch).await? {
            self.state.borrow_mut().tail_file = Some((batch.segment, file.clone()));
            return Ok(file);
        }
        let name = segment_name(self.epoch, self.shard, batch.segment);
        let file = Rc::new(self.disk.open(&name).await?);
        if let Some(capacity) = batch.creates {
            file.preallocate(capacity).await?;
            self.disk.sync_dir().await?;
        }
        self.state.borrow_mut().tail_file = Some((batch.segment, file.clone()));
        Ok(file)
    }
}
