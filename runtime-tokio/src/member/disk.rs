//! The member's disk thread: WAL appends and fdatasync, snapshot bookkeeping and WAL
//! release run here, beside the member task, as the core's
//! [`keel_core::node::disk_queue`] orders them (why: see there). Heartbeats, votes and
//! reads never wait behind an fsync; entries apply and followers acknowledge only once
//! their batch comes back as [`Input::Persisted`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use keel_core::node::disk_queue::{self, DiskTarget};
use keel_core::raft::{LogIndex, PersistBatch, PersistSeq};
use tokio::sync::{mpsc, oneshot};

use super::Input;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// An fsync slower than this is worth a log line (etcd warns at 1 s).
const SLOW_FSYNC: Duration = Duration::from_secs(1);

/// Work for the disk thread: a snapshot file is named by a `String`.
pub(crate) type DiskJob = disk_queue::DiskJob<String>;

/// The member task's end of the disk thread.
pub(crate) struct Disk {
    jobs: Option<std_mpsc::Sender<DiskJob>>,
    done: Option<oneshot::Receiver<()>>,
    bytes_written: Arc<AtomicU64>,
}

impl Disk {
    /// Moves `storage` onto its own thread; results come back through `inbox`.
    pub(crate) fn spawn(
        storage: Storage,
        inbox: mpsc::WeakSender<Input>,
        metrics: Arc<Metrics>,
    ) -> Disk {
        let (jobs, rx) = std_mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        let bytes_written = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            storage,
            inbox,
            metrics,
            bytes_written: bytes_written.clone(),
        };
        std::thread::Builder::new()
            .name("keel-disk".into())
            .spawn(move || {
                worker.run(rx);
                let _ = done_tx.send(());
            })
            .expect("spawning the disk thread");
        Disk {
            jobs: Some(jobs),
            done: Some(done),
            bytes_written,
        }
    }

    /// Queues `job`. A thread that stopped on an error already reported it.
    pub(crate) fn send(&self, job: DiskJob) {
        if let Some(j) = &self.jobs {
            let _ = j.send(job);
        }
    }

    /// WAL bytes written since the data dir was opened.
    pub(crate) fn wal_bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Lets the thread finish what is queued and waits for it, so a member restarted
    /// in the same process never opens files the old one still writes.
    pub(crate) async fn finish(&mut self) {
        self.jobs = None;
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

struct Worker {
    storage: Storage,
    inbox: mpsc::WeakSender<Input>,
    metrics: Arc<Metrics>,
    bytes_written: Arc<AtomicU64>,
}

impl Worker {
    fn run(mut self, rx: std_mpsc::Receiver<DiskJob>) {
        while let Ok(first) = rx.recv() {
            // Everything queued behind it shares its sync.
            let jobs: Vec<DiskJob> = std::iter::once(first).chain(rx.try_iter()).collect();
            if let Err(e) = disk_queue::run_group(&mut self, jobs) {
                self.report(Input::DiskFailed(e));
                return;
            }
            self.bytes_written
                .store(self.storage.wal_bytes_written(), Ordering::Relaxed);
        }
    }

    fn report(&self, input: Input) {
        if let Some(tx) = self.inbox.upgrade() {
            let _ = tx.blocking_send(input);
        }
    }
}

impl DiskTarget for Worker {
    type Snapshot = String;

    fn append(&mut self, batch: &PersistBatch) -> Result<(), String> {
        self.storage.append(batch).map_err(|e| e.to_string())
    }

    fn sync(&mut self) -> Result<(), String> {
        let t = Instant::now();
        self.storage.sync().map_err(|e| e.to_string())?;
        let took = t.elapsed();
        self.metrics.wal_fsync.observe(took.as_secs_f64());
        if took > SLOW_FSYNC {
            tracing::warn!(took_ms = took.as_millis() as u64, "slow fdatasync");
        }
        Ok(())
    }

    fn snapshot_saved(&mut self, term: u64, index: u64, result: Result<String, String>) {
        let result = result.and_then(|name| {
            self.storage
                .snapshot_saved(term, index, name)
                .map_err(|e| e.to_string())
        });
        self.report(Input::SnapshotRecorded { index, result });
    }

    fn release_wal(&mut self, index: LogIndex) -> Result<(), String> {
        self.storage.release_wal(index).map_err(|e| e.to_string())
    }

    fn persisted(&mut self, seq: PersistSeq) {
        self.report(Input::Persisted { seq });
    }
}
