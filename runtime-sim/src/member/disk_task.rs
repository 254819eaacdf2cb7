//! The simulated member's disk worker: the WAL written beside the member's round, as
//! production's disk thread writes it, through the same core
//! [`keel_core::node::disk_queue`]. A slow disk ([`SimDisk::set_sync_delay`]) spends
//! simulated time before each group that must sync; jobs queued meanwhile join the
//! group, as they do behind a real fdatasync.

use keel_core::node::disk_queue::{self, DiskJob, DiskTarget};
use keel_core::raft::{LogIndex, PersistBatch, PersistSeq};
use keel_core::wal::{batch_records, Wal};
use tokio::sync::mpsc;

use super::{Bug, Inbox, MAX_WALS};
use crate::disk::SimDisk;
use crate::observer::Observer;

/// Jobs for the disk task; a snapshot is saved whole on the simulated disk, so its
/// "file" needs no name.
pub(super) type Job = DiskJob<()>;

/// Spawns the disk task over `wal`; results come back to the member's `inbox`. The
/// task ends with the process (its node is killed) or when the job sender is dropped.
pub(super) fn spawn(
    wal: Wal<SimDisk>,
    disk: SimDisk,
    obs: Observer,
    bug: Option<Bug>,
    inbox: mpsc::UnboundedSender<Inbox>,
) -> (mpsc::UnboundedSender<Job>, madsim::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let task = madsim::task::spawn(async move {
        let mut w = Worker {
            wal,
            disk,
            obs,
            bug,
            inbox,
        };
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            let syncs = |j: &Job| matches!(j, DiskJob::Persist(b) if b.must_sync);
            if jobs.iter().any(syncs) {
                let delay = w.disk.sync_delay();
                if !delay.is_zero() {
                    madsim::time::sleep(delay).await;
                }
            }
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            if let Err(e) = disk_queue::run_group(&mut w, jobs) {
                let _ = w.inbox.send(Inbox::DiskFailed(e));
                return;
            }
        }
    });
    (tx, task)
}

struct Worker {
    wal: Wal<SimDisk>,
    disk: SimDisk,
    obs: Observer,
    bug: Option<Bug>,
    inbox: mpsc::UnboundedSender<Inbox>,
}

impl DiskTarget for Worker {
    type Snapshot = ();

    fn append(&mut self, batch: &PersistBatch) -> Result<(), String> {
        if let Some(s) = batch.snapshot.as_ref().filter(|s| s.meta.index.0 > 0) {
            // The image must be durable before the WAL says the log restarts after it.
            self.disk.save_snapshot(s.clone());
        }
        self.wal
            .append(&batch_records(batch))
            .map_err(|e| e.to_string())
    }

    fn sync(&mut self) -> Result<(), String> {
        if self.bug == Some(Bug::AckBeforeFsync) {
            return Ok(());
        }
        self.wal.sync().map_err(|e| e.to_string())
    }

    fn snapshot_saved(&mut self, _: u64, index: u64, result: Result<(), String>) {
        let _ = self.inbox.send(Inbox::SnapshotRecorded {
            index: LogIndex(index),
            result,
        });
    }

    fn release_wal(&mut self, index: LogIndex) -> Result<(), String> {
        let released = self
            .wal
            .release(index, MAX_WALS)
            .map_err(|e| e.to_string())?;
        if !released.is_empty() {
            self.obs
                .count("WAL segments released", released.len() as u64);
        }
        Ok(())
    }

    fn persisted(&mut self, seq: PersistSeq) {
        let _ = self.inbox.send(Inbox::Persisted(seq));
    }
}
