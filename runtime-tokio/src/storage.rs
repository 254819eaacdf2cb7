//! A member's durable storage: the WAL (`member/wal`, or etcd's `--wal-dir`) and
//! state-machine snapshots (`member/snap`), laid out as etcd lays out its data dir.
//!
//! - [`Storage::persist`] writes a raft [`PersistBatch`]: a snapshot from the leader is
//!   saved as a file first, then its marker, entries and hard state go to the WAL, synced
//!   once when the batch says so (group commit: one sync per batch, however many entries).
//! - [`Storage::save_snapshot`] writes a snapshot file atomically (temp file, fsync,
//!   rename, directory fsync), keeps `max_snapshots` files and releases WAL segments
//!   behind the *previous* snapshot (keeping `max_wals` of those), so a corrupt newest
//!   snapshot can always fall back to the previous one plus the WAL.
//! - [`Storage::open`] recovers: newest valid snapshot (falling back, with a warning, past
//!   corrupt ones), then the WAL, cutting a torn tail with a warning. A snapshot image
//!   newer than the whole WAL (cut off before its marker was written) gets its marker
//!   first, with a warning (see `keel_core::wal::MissingMarker`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use keel_core::raft::{EntryPayload, LogIndex, PersistBatch, RecoveredState, Snapshot};
use keel_core::wal::{
    add_missing_snapshot_marker, batch_records, decode_snapshot_file, encode_snapshot_file,
    parse_snapshot_file_name, resume_state, snapshot_file_name, Wal, WalOpenError,
};

use crate::wal_files::FileStore;

/// When to snapshot and how much history to keep (etcd's `--snapshot-count`,
/// `--max-snapshots`, `--max-wals`).
#[derive(Clone, Copy, Debug)]
pub struct StoragePolicy {
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Snapshot files kept.
    pub max_snapshots: usize,
    /// WAL segments kept behind the previous snapshot.
    pub max_wals: usize,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        StoragePolicy {
            snapshot_count: 100_000,
            max_snapshots: 5,
            max_wals: 5,
            segment_size: 64 << 20,
        }
    }
}

/// Storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The WAL is unusable (the message names the file and offset).
    #[error(transparent)]
    Wal(#[from] WalOpenError<io::Error>),
    /// File system error.
    #[error("storage: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The WAL and the snapshots do not fit together.
    #[error("storage: the WAL resumes at index {wal_first} but the newest usable snapshot ends at {snapshot}: entries in between are lost")]
    Gap {
        /// First WAL entry after the snapshot.
        wal_first: u64,
        /// Snapshot index.
        snapshot: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a member recovered.
#[derive(Debug)]
pub struct Recovery {
    /// For [`keel_core::raft::RaftNode::restart`] (None: nothing was ever persisted).
    pub state: Option<RecoveredState>,
    /// The snapshot to restore the state machine from.
    pub snapshot: Option<Snapshot>,
    /// Things an operator should know (torn tail cut, corrupt snapshot skipped).
    pub warnings: Vec<String>,
}

/// A member's WAL and snapshots.
#[derive(Debug)]
pub struct Storage {
    wal: Wal<FileStore>,
    snap_dir: PathBuf,
    policy: StoragePolicy,
    applied_since_snapshot: u64,
    /// Indices of the snapshot files present, oldest first.
    snapshots: Vec<(u64, u64, String)>,
    /// The planted `ack-before-fsync` bug: WAL writes are never synced.
    #[cfg(feature = "robustness-bugs")]
    skip_sync: bool,
}

/// Where a member's files live: the data dir, and the WAL in `<data-dir>/member/wal`
/// unless `--wal-dir` names a dedicated directory (etcd's `Config.WALDir()`: operators
/// put the WAL on its own disk so its fdatasyncs don't queue behind other writes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDirs {
    /// `--data-dir`.
    pub data: PathBuf,
    /// The WAL's directory.
    pub wal: PathBuf,
}

impl DataDirs {
    /// The layout for `--data-dir` and an optional `--wal-dir`.
    pub fn new(data_dir: &Path, wal_dir: Option<&Path>) -> DataDirs {
        DataDirs {
            data: data_dir.to_path_buf(),
            wal: wal_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| data_dir.join("member").join("wal")),
        }
    }

    /// `<data-dir>/member/snap`.
    pub fn snap(&self) -> PathBuf {
        self.data.join("member").join("snap")
    }
}

impl Storage {
    /// The (cluster ID, member ID) a WAL belongs to, or None if the data dir holds no
    /// member yet (a restart must take its identity from here, not from flags).
    pub fn identity(dirs: &DataDirs) -> Result<Option<(u64, u64)>, StorageError> {
        use keel_core::wal::{SegmentHeader, SegmentStore};
        let wal_dir = &dirs.wal;
        if !wal_dir.is_dir() {
            return Ok(None);
        }
        let mut store = FileStore::open(wal_dir).map_err(io_err(wal_dir))?;
        let names = store.list().map_err(io_err(wal_dir))?;
        let Some(oldest) = names.iter().min_by_key(|n| n.seq) else {
            return Ok(None);
        };
        let bytes = store.read(*oldest).map_err(io_err(wal_dir))?;
        match SegmentHeader::decode(&bytes) {
            Ok(h) => Ok(Some((h.cluster_id, h.member_id))),
            // A lone segment whose header never reached the disk: nothing was persisted.
            Err(_) if names.len() == 1 && bytes.iter().all(|b| *b == 0) => Ok(None),
            Err(e) => Err(StorageError::Io {
                path: wal_dir.join(oldest.to_string()),
                source: io::Error::other(format!("bad WAL segment header: {e:?}")),
            }),
        }
    }

    /// Opens a member's directories (creating the WAL's and `member/snap`), recovering
    /// their content.
    pub fn open(
        dirs: &DataDirs,
        cluster_id: u64,
        member_id: u64,
        policy: StoragePolicy,
    ) -> Result<(Storage, Recovery), StorageError> {
        let wal_dir = dirs.wal.clone();
        let snap_dir = dirs.snap();
        crate::durable_dir::create_dir_all(&snap_dir).map_err(io_err(&snap_dir))?;
        let mut warnings = Vec::new();
        let mut snapshots = list_snapshots(&snap_dir)?;
        // Newest valid snapshot, skipping corrupt ones with a warning.
        let mut snapshot = None;
        for (_, _, name) in snapshots.iter().rev() {
            let path = snap_dir.join(name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            match decode_snapshot_file(&bytes) {
                Ok(s) => {
                    snapshot = Some(s);
                    break;
                }
                Err(e) => warnings.push(format!(
                    "snapshot {}: {e}; falling back to an older snapshot and the WAL",
                    path.display()
                )),
            }
        }
        if let Some(s) = &snapshot {
            let keep = s.meta.index.0;
            snapshots.retain(|(_, i, _)| *i <= keep);
        }
        let store = FileStore::open(&wal_dir).map_err(io_err(&wal_dir))?;
        let (mut wal, rec) = Wal::open(store, cluster_id, member_id, policy.segment_size)?;
        if let Some(t) = &rec.torn {
            warnings.push(t.to_string());
        }
        if let Some(m) =
            add_missing_snapshot_marker(&mut wal, &rec, snapshot.as_ref().map(|s| &s.meta))?
        {
            warnings.push(m.to_string());
        }
        let state = resume_state(rec, snapshot.as_ref().map(|s| &s.meta)).map_err(|g| {
            StorageError::Gap {
                wal_first: g.wal_first,
                snapshot: g.snapshot,
            }
        })?;
        let storage = Storage {
            wal,
            snap_dir,
            policy,
            applied_since_snapshot: 0,
            snapshots,
            #[cfg(feature = "robustness-bugs")]
            skip_sync: false,
        };
        Ok((
            storage,
            Recovery {
                state,
                snapshot,
                warnings,
            },
        ))
    }

    /// Writes a persist batch; syncs when it must. Acknowledge it to raft afterwards.
    pub fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        self.append(batch)?;
        if batch.must_sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes a persist batch without syncing the WAL (a snapshot it carries is written
    /// and synced first): several batches can then share one [`Storage::sync`].
    pub fn append(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Some(s) = batch.snapshot.as_ref().filter(|s| s.meta.index.0 > 0) {
            // The image must be durable before the WAL says the log restarts after it.
            let name = self.writer().write(s)?;
            self.record_snapshot(s.meta.term.0, s.meta.index.0, name)?;
        }
        self.wal.append(&batch_records(batch))?;
        Ok(())
    }

    /// Makes every appended record durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        #[cfg(feature = "robustness-bugs")]
        if self.skip_sync {
            return Ok(());
        }
        self.wal.sync()?;
        Ok(())
    }

    /// Plants `ack-before-fsync`: the WAL is never synced again.
    #[cfg(feature = "robustness-bugs")]
    pub fn plant_ack_before_fsync(&mut self) {
        self.skip_sync = true;
    }

    /// WAL record bytes written since the data dir was opened.
    pub fn wal_bytes_written(&mut self) -> u64 {
        self.wal.store_mut().bytes_written()
    }

    /// Counts applied entries; true when a snapshot is due (`--snapshot-count`).
    pub fn note_applied(&mut self, entries: &[keel_core::raft::Entry]) -> bool {
        self.applied_since_snapshot += entries
            .iter()
            .filter(|e| !matches!(e.payload, EntryPayload::Empty))
            .count() as u64;
        self.applied_since_snapshot >= self.policy.snapshot_count
    }

    /// Saves a state-machine snapshot and releases history behind the previous one.
    pub fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        let name = self.snapshot_writer().write(snap)?;
        self.snapshot_saved(snap.meta.term.0, snap.meta.index.0, name)?;
        // Behind the previous snapshot, as the member decides it for the server
        // (`keel_core::node::Member::snapshot_saved`).
        match self.snapshots.len() {
            n if n >= 2 => self.release_wal(LogIndex(self.snapshots[n - 2].1)),
            _ => Ok(()),
        }
    }

    /// What writes a snapshot file, apart from the storage: a snapshot of a large
    /// keyspace takes seconds to write and sync, which must not stall the member (it
    /// would miss heartbeats and lose its leadership). The caller finishes with
    /// [`Storage::snapshot_saved`] once the file is durable.
    pub fn snapshot_writer(&mut self) -> SnapshotWriter {
        self.applied_since_snapshot = 0;
        self.writer()
    }

    fn writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            dir: self.snap_dir.clone(),
        }
    }

    /// Records a durable snapshot file and drops the oldest beyond `--max-snapshots`.
    /// (The member decides when WAL behind it goes: [`Storage::release_wal`].)
    pub fn snapshot_saved(
        &mut self,
        term: u64,
        index: u64,
        name: String,
    ) -> Result<(), StorageError> {
        if self.snapshots.iter().any(|(_, i, _)| *i > index) {
            // Overtaken while it was written (a newer image came from the leader).
            let p = self.snap_dir.join(name);
            return fs::remove_file(&p).map_err(io_err(&p));
        }
        self.record_snapshot(term, index, name)
    }

    /// Releases WAL segments whose entries all lie at or below `index`, keeping
    /// `--max-wals` of them.
    pub fn release_wal(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.wal.release(index, self.policy.max_wals)?;
        Ok(())
    }

    fn record_snapshot(&mut self, term: u64, index: u64, name: String) -> Result<(), StorageError> {
        self.snapshots.retain(|(_, i, n)| *i < index && *n != name);
        self.snapshots.push((term, index, name));
        while self.snapshots.len() > self.policy.max_snapshots.max(1) {
            let (_, _, old) = self.snapshots.remove(0);
            let p = self.snap_dir.join(old);
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Snapshot files present, oldest first (for tests and tools).
    pub fn snapshot_files(&self) -> Vec<String> {
        self.snapshots.iter().map(|(_, _, n)| n.clone()).collect()
    }
}

/// Writes one snapshot file atomically (temp file, fsync, rename, directory fsync); runs
/// on a blocking thread.
#[derive(Clone, Debug)]
pub struct SnapshotWriter {
    dir: PathBuf,
}

impl SnapshotWriter {
    /// Writes the file; returns its name.
    pub fn write(self, snap: &Snapshot) -> Result<String, StorageError> {
        let name = snapshot_file_name(&snap.meta);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let bytes = encode_snapshot_file(snap);
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(name)
    }
}

fn list_snapshots(dir: &Path) -> Result<Vec<(u64, u64, String)>, StorageError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".tmp") {
            // A snapshot interrupted before its rename: never valid, remove it.
            let p = dir.join(&name);
            fs::remove_file(&p).map_err(io_err(&p))?;
            continue;
        }
        if let Some((t, i)) = parse_snapshot_file_name(&name) {
            out.push((t, i, name));
        }
    }
    out.sort_by_key(|(t, i, _)| (*i, *t));
    Ok(out)
}
