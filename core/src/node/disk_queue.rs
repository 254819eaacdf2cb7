//! How a driver's disk worker runs the member's storage work beside the member's round:
//! jobs in the order the member issued them, appends that queued up together covered by
//! one sync, and each group acknowledged by its last batch's sequence number once
//! durable. (The member keeps one batch at the disk at a time, so a group is in practice
//! one batch with the snapshot records and WAL releases queued around it.) Both runtimes run this: production on a thread of its own,
//! the simulator on a task that spends simulated time in each sync.
//!
//! Why beside the round: an fdatasync on a stalled disk can take longer than an
//! election timeout. Inside the round it would hold back heartbeats and votes, so a
//! healthy leader on a slow disk would lose its leadership. Raft knows what is durable
//! only through [`crate::node::Member::persisted`], so nothing waits for the disk less
//! than before: entries apply, followers acknowledge and votes count only after it.
//!
//! A failed write or sync ends the worker: nothing after it is written or
//! acknowledged, and the member must stop (etcd exits on a failed fsync).

use crate::raft::{LogIndex, PersistBatch, PersistSeq};

/// Storage work, done in the order the member issued it.
#[derive(Clone, Debug)]
pub enum DiskJob<S> {
    /// Append (and make durable when `must_sync`), then acknowledge its sequence.
    Persist(PersistBatch),
    /// A snapshot file of the member's own is durable (its name, or why it failed):
    /// record it, after every earlier append.
    SnapshotSaved {
        /// The snapshot's term.
        term: u64,
        /// The snapshot's index.
        index: u64,
        /// The file's name (the driver's own type), or the error that stopped it.
        result: Result<S, String>,
    },
    /// Release WAL segments whose entries all lie at or below this index.
    ReleaseWal(LogIndex),
}

/// What the driver's storage does for [`run_group`].
pub trait DiskTarget {
    /// The driver's name for a snapshot file.
    type Snapshot;
    /// Writes a batch (a snapshot it carries included) without syncing the WAL.
    fn append(&mut self, batch: &PersistBatch) -> Result<(), String>;
    /// Makes every appended record durable.
    fn sync(&mut self) -> Result<(), String>;
    /// Records a durable snapshot file (or fails to); the member hears either way.
    fn snapshot_saved(&mut self, term: u64, index: u64, result: Result<Self::Snapshot, String>);
    /// Releases WAL segments behind `index`.
    fn release_wal(&mut self, index: LogIndex) -> Result<(), String>;
    /// Batches up to `seq` are durable: tell the member.
    fn persisted(&mut self, seq: PersistSeq);
}

/// Runs `jobs`, taken from the queue together, in order. Consecutive appends share one
/// sync, which runs before anything that follows them (a snapshot record or a WAL
/// release must never overtake the entries issued before it) and before they are
/// acknowledged. Stops at the first error, acknowledging nothing after it.
pub fn run_group<T: DiskTarget>(
    target: &mut T,
    jobs: impl IntoIterator<Item = DiskJob<T::Snapshot>>,
) -> Result<(), String> {
    // The newest appended batch not yet acknowledged, and whether any batch since the
    // last acknowledgement must be synced.
    let mut pending: Option<(PersistSeq, bool)> = None;
    for job in jobs {
        match job {
            DiskJob::Persist(batch) => {
                target.append(&batch)?;
                let sync = pending.is_some_and(|(_, s)| s) || batch.must_sync;
                pending = Some((batch.seq, sync));
            }
            DiskJob::SnapshotSaved {
                term,
                index,
                result,
            } => {
                flush(target, pending.take())?;
                target.snapshot_saved(term, index, result);
            }
            DiskJob::ReleaseWal(index) => {
                flush(target, pending.take())?;
                target.release_wal(index)?;
            }
        }
    }
    flush(target, pending)
}

fn flush<T: DiskTarget>(target: &mut T, pending: Option<(PersistSeq, bool)>) -> Result<(), String> {
    let Some((seq, must_sync)) = pending else {
        return Ok(());
    };
    if must_sync {
        target.sync()?;
    }
    target.persisted(seq);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls, failing the `fail_sync`-th sync.
    #[derive(Default)]
    struct Log {
        calls: Vec<String>,
        syncs: u32,
        fail_sync: Option<u32>,
    }

    impl DiskTarget for Log {
        type Snapshot = &'static str;
        fn append(&mut self, b: &PersistBatch) -> Result<(), String> {
            self.calls.push(format!("append {}", b.seq.0));
            Ok(())
        }
        fn sync(&mut self) -> Result<(), String> {
            self.syncs += 1;
            if self.fail_sync == Some(self.syncs) {
                return Err("fsync: input/output error".into());
            }
            self.calls.push("sync".into());
            Ok(())
        }
        fn snapshot_saved(&mut self, _: u64, index: u64, r: Result<&'static str, String>) {
            self.calls.push(format!("snapshot {index} {r:?}"));
        }
        fn release_wal(&mut self, index: LogIndex) -> Result<(), String> {
            self.calls.push(format!("release {}", index.0));
            Ok(())
        }
        fn persisted(&mut self, seq: PersistSeq) {
            self.calls.push(format!("persisted {}", seq.0));
        }
    }

    fn batch(seq: u64, must_sync: bool) -> DiskJob<&'static str> {
        DiskJob::Persist(PersistBatch {
            seq: PersistSeq(seq),
            hard_state: None,
            snapshot: None,
            entries: Vec::new(),
            must_sync,
        })
    }

    #[test]
    fn queued_appends_share_one_sync_and_the_last_sequence_acknowledges_them() {
        let mut t = Log::default();
        run_group(&mut t, [batch(1, true), batch(2, false), batch(3, true)]).unwrap();
        assert_eq!(
            t.calls,
            ["append 1", "append 2", "append 3", "sync", "persisted 3"]
        );
    }

    #[test]
    fn a_group_of_commit_index_only_batches_is_acknowledged_without_a_sync() {
        let mut t = Log::default();
        run_group(&mut t, [batch(4, false), batch(5, false)]).unwrap();
        assert_eq!(t.calls, ["append 4", "append 5", "persisted 5"]);
    }

    #[test]
    fn snapshot_records_and_releases_never_overtake_earlier_appends() {
        let mut t = Log::default();
        let jobs = [
            batch(1, true),
            DiskJob::SnapshotSaved {
                term: 2,
                index: 10,
                result: Ok("snap"),
            },
            batch(2, true),
            DiskJob::ReleaseWal(LogIndex(10)),
            batch(3, false),
        ];
        run_group(&mut t, jobs).unwrap();
        assert_eq!(
            t.calls,
            [
                "append 1",
                "sync",
                "persisted 1",
                "snapshot 10 Ok(\"snap\")",
                "append 2",
                "sync",
                "persisted 2",
                "release 10",
                "append 3",
                "persisted 3",
            ]
        );
    }

    #[test]
    fn a_failed_sync_acknowledges_nothing_and_stops_the_group() {
        let mut t = Log {
            fail_sync: Some(1),
            ..Log::default()
        };
        let e = run_group(&mut t, [batch(1, true), batch(2, true)]).unwrap_err();
        assert_eq!(e, "fsync: input/output error");
        assert_eq!(t.calls, ["append 1", "append 2"]);
        let mut t = Log {
            fail_sync: Some(2),
            ..Log::default()
        };
        let jobs = [
            batch(1, true),
            DiskJob::ReleaseWal(LogIndex(1)),
            batch(2, true),
            batch(3, true),
        ];
        assert!(run_group(&mut t, jobs).is_err());
        assert_eq!(
            t.calls,
            [
                "append 1",
                "sync",
                "persisted 1",
                "release 1",
                "append 2",
                "append 3"
            ]
        );
    }
}
