//! What a member resumes from: the WAL's recovered records joined with the newest usable
//! state-machine snapshot. Both runtimes (files in production, a simulated disk in
//! simulation) make this decision the same way, so it lives here.

use crate::raft::{LogIndex, RecoveredState, SnapshotMeta};

use super::record::Record;
use super::recovery::Recovered;
use super::writer::{SegmentStore, Wal, WalOpenError};

/// A snapshot image newer than everything the WAL holds, whose WAL marker was lost.
///
/// A snapshot from the leader is stored as an image first and its WAL marker after (the
/// marker must never name an image that does not exist). A crash or a failed sync in
/// between leaves the image newer than the WAL. Resuming from the image is right, but
/// entries appended next would follow the WAL's old tail: a gap the next recovery
/// refuses. Appended (and synced) before anything else, `meta` as a marker makes the WAL
/// say what the interrupted batch would have: the log restarts after the snapshot.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("the WAL ends at index {wal_last} without the marker of snapshot {}; marker added", .meta.index.0)]
pub struct MissingMarker {
    /// The marker to append.
    pub meta: SnapshotMeta,
    /// The WAL's last index (entry or marker).
    pub wal_last: u64,
}

/// Appends (and syncs) the marker the WAL must gain before anything else, if any: both
/// runtimes call this right after opening the WAL, before [`resume_state`] takes the
/// recovered records. Returns what was added, for the runtime's warning.
pub fn add_missing_snapshot_marker<S: SegmentStore>(
    wal: &mut Wal<S>,
    rec: &Recovered,
    snapshot: Option<&SnapshotMeta>,
) -> Result<Option<MissingMarker>, WalOpenError<S::Error>> {
    let Some(s) = snapshot else {
        return Ok(None);
    };
    let wal_last = rec
        .entries
        .last()
        .map(|e| e.index)
        .into_iter()
        .chain(rec.snapshot.as_ref().map(|w| w.index))
        .max()
        .unwrap_or(LogIndex(0));
    if wal_last >= s.index {
        return Ok(None);
    }
    wal.append(&[Record::Snapshot(s.clone())])?;
    wal.sync()?;
    Ok(Some(MissingMarker {
        meta: s.clone(),
        wal_last: wal_last.0,
    }))
}

/// The WAL and the snapshot do not fit together: entries in between exist nowhere.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("storage: the WAL resumes at index {wal_first} but the newest usable snapshot ends at {snapshot}: entries in between are lost")]
pub struct ResumeGap {
    /// First WAL entry after the snapshot.
    pub wal_first: u64,
    /// Snapshot index.
    pub snapshot: u64,
}

/// The state raft restarts from, or None if nothing was ever persisted (a new member).
/// `snapshot` is the newest snapshot whose image is usable.
pub fn resume_state(
    rec: Recovered,
    snapshot: Option<&SnapshotMeta>,
) -> Result<Option<RecoveredState>, ResumeGap> {
    let fresh =
        rec.end.is_none() || (rec.entries.is_empty() && rec.hard_state == Default::default());
    if fresh && snapshot.is_none() {
        return Ok(None);
    }
    if let (Some(s), Some(w)) = (snapshot, &rec.snapshot) {
        if w.index > s.index {
            // The WAL says the log restarts after a snapshot from the leader whose image
            // is unusable: the entries in between exist nowhere.
            return Err(ResumeGap {
                wal_first: w.index.0 + 1,
                snapshot: s.index.0,
            });
        }
    }
    let snap_meta = match (snapshot, &rec.snapshot) {
        (Some(s), _) => s.clone(),
        (None, Some(w)) => w.clone(),
        (None, None) => SnapshotMeta::default(),
    };
    let entries: Vec<_> = rec
        .entries
        .into_iter()
        .filter(|e| e.index > snap_meta.index)
        .collect();
    if let Some(first) = entries.first() {
        if first.index != snap_meta.index.next() {
            return Err(ResumeGap {
                wal_first: first.index.0,
                snapshot: snap_meta.index.0,
            });
        }
    }
    Ok(Some(RecoveredState {
        hard_state: rec.hard_state,
        applied: snapshot.map_or(LogIndex(0), |s| s.index),
        snapshot: snap_meta,
        entries,
    }))
}
