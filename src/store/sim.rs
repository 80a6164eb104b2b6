//! A simulated disk for the store's tests: files in memory that remember
//! what was fdatasync'ed. `crash` is a power loss: every file falls back to
//! its synced bytes, plus a random subset of the 512-byte sectors written
//! since (a torn write), and files whose directory entry was never synced
//! vanish. `fail_writes` makes every write and sync fail, as a full disk.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::Rng;

use super::disk::{Disk, DiskFile};

const SECTOR: usize = 512;

#[derive(Default)]
struct SimFile {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Writes since the last sync, oldest first.
    unsynced: Vec<(usize, usize)>,
    /// The directory entry survives a crash.
    named: bool,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, SimFile>,
    fail_writes: bool,
    /// Writes and syncs left before the power goes (they fail after, as
    /// do removals and directory syncs).
    power_left: Option<usize>,
    /// Drives how often a synced write lets other tasks run between its
    /// write and its sync (`interleave`): 0 never.
    interleaving: u64,
}

impl State {
    /// How many times the next synced write yields before its sync: 0 to
    /// 2, from a xorshift of `interleaving`.
    fn yields(&mut self) -> u64 {
        if self.interleaving == 0 {
            return 0;
        }
        let mut x = self.interleaving;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.interleaving = x;
        x % 3
    }

    /// Whether the next write or sync fails, counting it.
    fn refuses(&mut self) -> bool {
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                return true;
            }
            *left -= 1;
        }
        self.fail_writes
    }
}

#[derive(Clone, Default)]
pub(crate) struct SimDisk {
    state: Rc<RefCell<State>>,
}

pub(crate) struct SimHandle {
    disk: SimDisk,
    name: String,
}

fn failure() -> io::Error {
    io::Error::other("simulated disk full (ENOSPC)")
}

impl SimDisk {
    pub(crate) fn fail_writes(&self, fail: bool) {
        self.state.borrow_mut().fail_writes = fail;
    }

    /// Synced writes yield between write and sync a varying number of
    /// times (from `seed`, not 0), so that commits awaited together
    /// interleave and finish in either order, as they do on a real disk.
    pub(crate) fn interleave(&self, seed: u64) {
        self.state.borrow_mut().interleaving = seed.max(1);
    }

    /// The power goes after `ops` more writes and syncs.
    pub(crate) fn cut_power_after(&self, ops: usize) {
        self.state.borrow_mut().power_left = Some(ops);
    }

    /// Whether writes (and removals) still go through.
    pub(crate) fn has_power(&self) -> bool {
        self.state.borrow().power_left != Some(0)
    }

    /// A power loss.
    pub(crate) fn crash(&self, rng: &mut StdRng) {
        let mut state = self.state.borrow_mut();
        state.power_left = None;
        state.files.retain(|_, file| file.named);
        for file in state.files.values_mut() {
            let mut kept = file.synced.clone();
            for &(pos, len) in &file.unsynced {
                for sector in (pos..pos + len).step_by(SECTOR) {
                    if rng.gen_bool(0.5) {
                        let end = (sector + SECTOR).min(pos + len);
                        if kept.len() < end {
                            kept.resize(end, 0);
                        }
                        kept[sector..end].copy_from_slice(&file.data[sector..end]);
                    }
                }
            }
            file.data = kept.clone();
            file.synced = kept;
            file.unsynced.clear();
        }
    }

    /// Flips one byte of a file (bit rot), synced or not.
    pub(crate) fn flip(&self, name: &str, pos: usize) {
        let mut state = self.state.borrow_mut();
        if let Some(file) = state.files.get_mut(name) {
            if let Some(byte) = file.data.get_mut(pos) {
                *byte ^= 0x5a;
            }
            if let Some(byte) = file.synced.get_mut(pos) {
                *byte ^= 0x5a;
            }
        }
    }

    pub(crate) fn file_len(&self, name: &str) -> usize {
        self.state
            .borrow()
            .files
            .get(name)
            .map_or(0, |f| f.data.len())
    }
}

impl SimHandle {
    /// fdatasync: what was written survives a crash from now on.
    fn sync(&self) -> io::Result<()> {
        let mut state = self.disk.state.borrow_mut();
        if state.refuses() {
            return Err(failure());
        }
        if let Some(file) = state.files.get_mut(&self.name) {
            file.synced = file.data.clone();
            file.unsynced.clear();
        }
        Ok(())
    }
}

impl DiskFile for SimHandle {
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.disk.state.borrow_mut();
        if state.refuses() {
            return Err(failure());
        }
        let file = state.files.entry(self.name.clone()).or_default();
        let (pos, end) = (pos as usize, pos as usize + data.len());
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[pos..end].copy_from_slice(data);
        file.unsynced.push((pos, data.len()));
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.disk.state.borrow();
        let data = state.files.get(&self.name).map_or(&[][..], |f| &f.data);
        let start = (pos as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    async fn write_synced(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(pos, data).await?;
        let yields = self.disk.state.borrow_mut().yields();
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
        self.sync()
    }

    async fn preallocate(&self, _len: u64) -> io::Result<()> {
        if self.disk.state.borrow().fail_writes {
            return Err(failure());
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.disk.file_len(&self.name) as u64)
    }
}

impl Disk for SimDisk {
    type File = SimHandle;

    async fn open(&self, name: &str) -> io::Result<SimHandle> {
        self.state
            .borrow_mut()
            .files
            .entry(name.to_owned())
            .or_default();
        Ok(SimHandle {
            disk: self.clone(),
            name: name.to_owned(),
        })
    }

    async fn open_for_reading(&self, name: &str) -> io::Result<SimHandle> {
        if !self.state.borrow().files.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(SimHandle {
            disk: self.clone(),
            name: name.to_owned(),
        })
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.borrow().files.keys().cloned().collect())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if state.power_left == Some(0) {
            return Err(failure());
        }
        state.files.remove(name);
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if let Some(file) = state.files.remove(from) {
            state.files.insert(to.to_owned(), file);
        }
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if state.power_left == Some(0) {
            return Err(failure());
        }
        for file in state.files.values_mut() {
            file.named = true;
        }
        Ok(())
    }
}
