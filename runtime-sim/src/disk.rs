//! A simulated disk behind the WAL's [`SegmentStore`]: the core's [`MemStore`] (writes
//! volatile until synced, a crash may tear the last unsynced write) plus the faults a
//! scenario injects: failing fsyncs and a full disk. One disk outlives the member
//! processes that use it, so a restarted member finds what survived its crash.

use std::sync::{Arc, Mutex, MutexGuard};

use keel_core::raft::Snapshot;
use keel_core::wal::{MemStore, SegmentName, SegmentStore};

/// An I/O error of the simulated disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// fsync reported an error (what Linux does after a failed writeback).
    #[error("fsync: input/output error")]
    SyncFailed,
    /// No space left on device.
    #[error("no space left on device")]
    Full,
}

#[derive(Debug, Default)]
struct DiskState {
    store: MemStore,
    /// Bytes of segment files allocated now (creations count their whole size).
    used: u64,
    /// Fail segment creation beyond this many bytes (None: unlimited).
    capacity: Option<u64>,
    /// The next this-many syncs fail.
    failing_syncs: u32,
    /// How long each sync takes (a slow or stalled disk); zero: instant.
    sync_delay: std::time::Duration,
    /// The newest state-machine snapshot, written atomically (temp file and rename).
    snapshot: Option<Snapshot>,
    crashes: u64,
    /// Errors the disk returned (every one injected: a failed sync or a full disk).
    errors: u64,
}

/// A member's disk, shared between the scenario (which injects faults and crashes it)
/// and the member process that writes it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock cannot leave the state half-changed in a way
        // that matters to a simulation; keep going with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine lost power: unsynced writes are gone, the oldest one possibly torn
    /// after `tear` bytes.
    pub fn crash(&self, tear: Option<usize>) {
        let mut s = self.state();
        s.store.crash(tear);
        s.crashes += 1;
        let mut st = s.store.clone();
        let used: u64 = st
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|n| st.read(n).map_or(0, |b| b.len() as u64))
            .sum();
        s.used = used;
    }

    /// The next `n` fsyncs fail.
    pub fn fail_syncs(&self, n: u32) {
        self.state().failing_syncs = n;
    }

    /// Every sync from now on takes `d` of simulated time (zero: instant again).
    pub fn set_sync_delay(&self, d: std::time::Duration) {
        self.state().sync_delay = d;
    }

    /// How long a sync takes now.
    pub fn sync_delay(&self) -> std::time::Duration {
        self.state().sync_delay
    }

    /// Limits the disk to `bytes` of segment files (None: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Stores a state-machine snapshot durably (written atomically).
    pub fn save_snapshot(&self, snap: Snapshot) {
        self.state().snapshot = Some(snap);
    }

    /// The newest durable snapshot.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.state().snapshot.clone()
    }

    /// Errors this disk has returned (failed syncs, a full disk).
    pub fn errors(&self) -> u64 {
        self.state().errors
    }

    /// Times this disk crashed.
    pub fn crashes(&self) -> u64 {
        self.state().crashes
    }
}

impl SegmentStore for SimDisk {
    type Error = DiskError;

    fn list(&mut self) -> Result<Vec<SegmentName>, DiskError> {
        Ok(self.state().store.list().unwrap_or_default())
    }

    fn read(&mut self, name: SegmentName) -> Result<Vec<u8>, DiskError> {
        Ok(self.state().store.read(name).unwrap_or_default())
    }

    fn create(&mut self, name: SegmentName, size: u64) -> Result<(), DiskError> {
        let mut s = self.state();
        if s.capacity.is_some_and(|c| s.used + size > c) {
            s.errors += 1;
            return Err(DiskError::Full);
        }
        s.used += size;
        let _ = s.store.create(name, size);
        Ok(())
    }

    fn write(&mut self, name: SegmentName, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let _ = self.state().store.write(name, offset, data);
        Ok(())
    }

    fn sync(&mut self, name: SegmentName) -> Result<(), DiskError> {
        let mut s = self.state();
        if s.failing_syncs > 0 {
            s.failing_syncs -= 1;
            s.errors += 1;
            return Err(DiskError::SyncFailed);
        }
        let _ = s.store.sync(name);
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        let _ = self.state().store.sync_dir();
        Ok(())
    }

    fn remove(&mut self, name: SegmentName) -> Result<(), DiskError> {
        let mut s = self.state();
        let size = s.store.read(name).map_or(0, |b| b.len() as u64);
        s.used = s.used.saturating_sub(size);
        let _ = s.store.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: SegmentName = SegmentName {
        seq: 0,
        first_index: 1,
    };

    #[test]
    fn faults_fail_the_operations_they_name() {
        let mut d = SimDisk::new();
        d.set_capacity(Some(100));
        assert_eq!(d.create(SEG, 200), Err(DiskError::Full));
        d.set_capacity(None);
        assert_eq!(d.create(SEG, 200), Ok(()));
        d.fail_syncs(1);
        assert_eq!(d.sync(SEG), Err(DiskError::SyncFailed));
        assert_eq!(d.sync(SEG), Ok(()), "only the next sync fails");
    }

    #[test]
    fn a_crash_keeps_synced_bytes_only() {
        let mut d = SimDisk::new();
        d.create(SEG, 8).ok();
        d.sync_dir().ok();
        d.write(SEG, 0, b"abcd").ok();
        d.sync(SEG).ok();
        d.write(SEG, 4, b"efgh").ok();
        d.crash(None);
        assert_eq!(d.read(SEG).ok(), Some(b"abcd\0\0\0\0".to_vec()));
        assert_eq!(d.crashes(), 1);
    }
}
