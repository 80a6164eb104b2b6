//! The next segment, made ahead of the commit that needs it: created,
//! filled with zeros and synced off the commit path, so that a commit's
//! writes land in allocated, written blocks (an fdatasync of a write into
//! preallocated space converts extents: three times the cost here).

use std::io;
use std::rc::Rc;

use super::{segment_name, Log};
use crate::store::disk::{Disk, DiskFile};

/// How much of a spare segment `Log::zero_fill` writes at once while the
/// spare is well ahead of the appends, and when they are catching up.
const ZERO_PIECE_AHEAD: usize = 64 << 10;
const ZERO_PIECE_BEHIND: usize = 1 << 20;

/// The zeros written, in the program's zero-filled data: read, they cost
/// no page faults (a fresh buffer of them cost 256, each clearing a page,
/// on the shard's thread).
static ZEROS: [u8; ZERO_PIECE_BEHIND] = [0; ZERO_PIECE_BEHIND];

impl<D: Disk> Log<D> {
    /// The segment after the tail, when it is not made yet and nothing is
    /// being made: for `prepare_spare`. Only while a commit has the tail's
    /// own file open: once appends have rolled past it, the commit makes
    /// the new segment itself, and a spare made meanwhile under the same
    /// name would write its zeros over the commit's records.
    pub(crate) fn spare_wanted(&self) -> Option<u64> {
        let state = self.state.borrow();
        let (tail, _) = state.tail_file.as_ref()?;
        if state
            .tail
            .is_some_and(|(appended_to, _, _)| appended_to != *tail)
        {
            return None;
        }
        let next = tail + 1;
        (state.preparing.is_none() && state.spare.as_ref().is_none_or(|(s, _)| *s < next))
            .then_some(next)
    }

    /// Makes segment `index` ahead of its first commit: created, filled
    /// with zeros and synced (`zero_fill`), and named durably. A commit
    /// that needs it meanwhile waits for it. On failure the commit makes
    /// it as before. `pause` is how the fill waits between pieces.
    pub(crate) async fn prepare_spare(&self, index: u64, pause: impl AsyncFn()) {
        self.state.borrow_mut().preparing = Some(index);
        let name = segment_name(self.epoch, self.shard, index);
        let made = async {
            let file = self.disk.open(&name).await?;
            self.zero_fill(index, &file, pause).await?;
            self.disk.sync_dir().await?;
            Ok::<_, io::Error>(file)
        }
        .await;
        let mut state = self.state.borrow_mut();
        state.preparing = None;
        match made {
            Ok(file) => state.spare = Some((index, Rc::new(file))),
            Err(err) => tracing::warn!("cannot make log segment {name} ahead: {err}"),
        }
        drop(state);
        self.spare_made.wake_all();
    }

    /// Writes zeros over spare segment `index`, durably, a piece at a
    /// time. Later writes then land in allocated, written blocks, and
    /// their fdatasync has no extents to convert: on ext4 it took a third
    /// of the time of one into preallocated space. While the spare is
    /// well ahead of the appends, it writes small pieces with a `pause`
    /// between them: a commit's fdatasync waits for the device to take
    /// whatever was written before it, and zeros written back to back
    /// took the p99 of a 1 KiB write and fdatasync here from 0.28 ms to
    /// 3.7 ms (one 64 KiB piece every 2 ms: no change).
    async fn zero_fill(&self, index: u64, file: &D::File, pause: impl AsyncFn()) -> io::Result<()> {
        let mut pos = 0;
        while pos < self.segment_size {
            // Judged as if the next small piece were written: at the start
            // of a fill the spare is never ahead of appends already made.
            let ahead = self.spare_is_ahead(index, pos + ZERO_PIECE_AHEAD as u64);
            let piece = if ahead {
                ZERO_PIECE_AHEAD
            } else {
                ZERO_PIECE_BEHIND
            };
            let piece = (self.segment_size - pos).min(piece as u64) as usize;
            file.write_synced(pos, &ZEROS[..piece]).await?;
            pos += piece as u64;
            if ahead {
                pause().await;
            }
        }
        Ok(())
    }

    /// Whether spare segment `index`, `written` bytes into its zero fill,
    /// is at least twice as far through its segment as the appends are
    /// through the tail before it.
    fn spare_is_ahead(&self, index: u64, written: u64) -> bool {
        let state = self.state.borrow();
        let Some((segment, end, capacity)) = state.tail else {
            return false;
        };
        segment + 1 == index
            && u128::from(written) * u128::from(capacity)
                >= 2 * u128::from(end) * u128::from(self.segment_size)
    }
}
