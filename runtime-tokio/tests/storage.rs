//! A single raft member persisting through [`Storage`] on a real directory: restarts,
//! snapshots, purging, and falling back past a corrupt snapshot.

use std::path::Path;

use bytes::Bytes;
use keel_core::raft::{
    ConfState, Config, EntryPayload, LogIndex, MemberId, RaftNode, Role, Snapshot, SnapshotMeta,
    Time,
};
use keel_runtime_tokio::storage::DataDirs;
use keel_runtime_tokio::{Storage, StoragePolicy};

const POLICY: StoragePolicy = StoragePolicy {
    snapshot_count: 20,
    max_snapshots: 2,
    max_wals: 1,
    segment_size: 4096,
};

/// The toy state machine: how many payloads were applied, as the snapshot image.
struct Member {
    node: RaftNode,
    storage: Storage,
    applied: u64,
}

impl Member {
    fn open(dir: &Path) -> (Member, Vec<String>) {
        let (storage, rec) =
            Storage::open(&DataDirs::new(dir, None), 7, 1, POLICY).expect("storage opens");
        let cfg = Config::new(MemberId(1));
        let applied = rec.snapshot.as_ref().map_or(0, |s| {
            u64::from_be_bytes(s.data[..8].try_into().expect("8-byte image"))
        });
        let node = match rec.state {
            Some(state) => RaftNode::restart(cfg, state, Time(0)).expect("restart"),
            None => {
                RaftNode::new(cfg, ConfState::with_voters([MemberId(1)]), Time(0)).expect("new")
            }
        };
        let mut m = Member {
            node,
            storage,
            applied,
        };
        m.drain();
        (m, rec.warnings)
    }

    fn drain(&mut self) {
        for _ in 0..100 {
            if !self.node.has_ready() {
                return;
            }
            let rd = self.node.ready();
            if let Some(b) = &rd.persist {
                self.storage.persist(b).expect("persist");
                self.node.persisted(Time(0), b.seq);
            }
            self.applied += rd
                .committed
                .iter()
                .filter(|e| matches!(e.payload, EntryPayload::Normal(_)))
                .count() as u64;
            if self.storage.note_applied(&rd.committed) {
                let data = Bytes::copy_from_slice(&self.applied.to_be_bytes());
                let meta = self.node.compact(Time(0), data.clone());
                self.storage
                    .save_snapshot(&Snapshot { meta, data })
                    .expect("snapshot");
            }
        }
    }

    fn lead(&mut self) {
        self.node.start_election(Time(0));
        self.drain();
        assert_eq!(self.node.role(), Role::Leader);
    }

    fn propose(&mut self, n: usize) {
        for _ in 0..n {
            self.node
                .propose(Time(0), Bytes::from_static(b"payload"))
                .expect("propose");
            self.drain();
        }
    }
}

fn files(dir: &Path, sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("member").join(sub))
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

#[test]
fn restarts_snapshots_purges_and_falls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut m, warnings) = Member::open(dir.path());
    assert!(warnings.is_empty());
    m.lead();
    m.propose(150);
    assert_eq!(m.applied, 150);
    let snaps = files(dir.path(), "snap");
    assert_eq!(snaps.len(), 2, "max-snapshots keeps two: {snaps:?}");
    let wals = files(dir.path(), "wal");
    drop(m);

    // Restart: everything is back, from the newest snapshot plus the WAL.
    let (mut m, warnings) = Member::open(dir.path());
    assert!(warnings.is_empty(), "{warnings:?}");
    m.lead();
    assert_eq!(m.applied, 150);
    m.propose(1);
    assert_eq!(m.applied, 151);
    drop(m);
    assert!(
        files(dir.path(), "wal").len() <= wals.len() + 1,
        "old segments were released"
    );

    // Corrupt the newest snapshot: the member falls back to the previous one plus the
    // WAL, warns, and loses nothing.
    let snaps = files(dir.path(), "snap");
    let newest = dir
        .path()
        .join("member")
        .join("snap")
        .join(snaps.last().expect("snap"));
    let mut bytes = std::fs::read(&newest).expect("read");
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&newest, bytes).expect("write");
    let (mut m, warnings) = Member::open(dir.path());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("checksum mismatch"), "{}", warnings[0]);
    m.lead();
    assert_eq!(m.applied, 151);
}

/// A snapshot written off the member task can finish after a newer one was recorded (an
/// image installed from the leader meanwhile): it is dropped, not listed as the newest.
#[test]
fn a_snapshot_overtaken_while_written_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut m, _) = Member::open(dir.path());
    m.lead();
    m.propose(5);
    let data = Bytes::copy_from_slice(&m.applied.to_be_bytes());
    let meta = m.node.compact(Time(0), data.clone());
    let old = m.storage.snapshot_writer();
    let (term, index) = (meta.term.0, meta.index.0);
    let name = old.write(&Snapshot { meta, data }).expect("written");
    assert!(files(dir.path(), "snap").contains(&name));
    // Enough entries for the synchronous path to save a newer snapshot.
    m.propose(POLICY.snapshot_count as usize + 5);
    let newest = m.storage.snapshot_files();
    assert!(!newest.is_empty());
    m.storage
        .snapshot_saved(term, index, name.clone())
        .expect("recorded");
    assert_eq!(m.storage.snapshot_files(), newest);
    assert!(!files(dir.path(), "snap").contains(&name));
    drop(m);
    let (m, warnings) = Member::open(dir.path());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(m.applied, 5 + POLICY.snapshot_count + 5);
}

/// A snapshot from the leader is saved as an image first and its WAL marker after. A
/// crash (or a failed sync) in between leaves an image newer than everything the WAL
/// holds: the member resumes from the image, and the WAL gains the missing marker before
/// anything else is appended, so the entries that follow do not leave a gap that the next
/// restart refuses ("entry index ... does not follow ...", found by the simulator).
#[test]
fn a_snapshot_image_whose_wal_marker_was_lost_is_resumed_and_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut m, _) = Member::open(dir.path());
    m.lead();
    m.propose(5);
    let (last, term) = (m.node.last_index(), m.node.term());
    let image = SnapshotMeta {
        index: LogIndex(last.0 + 100),
        term,
        conf: ConfState::with_voters([MemberId(1)]),
    };
    let data = Bytes::copy_from_slice(&1000u64.to_be_bytes());
    m.storage
        .snapshot_writer()
        .write(&Snapshot { meta: image, data })
        .expect("image written");
    drop(m);

    let (mut m, warnings) = Member::open(dir.path());
    assert_eq!(m.applied, 1000, "resumed from the image");
    assert_eq!(
        warnings,
        vec![format!(
            "the WAL ends at index {} without the marker of snapshot {}; marker added",
            last.0,
            last.0 + 100
        )]
    );
    m.lead();
    m.propose(3);
    assert_eq!(m.applied, 1003);
    drop(m);

    let (m, warnings) = Member::open(dir.path());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(m.applied, 1003, "the entries after the image are replayed");
}

/// `--force-new-cluster` on real WAL files: the forced removes are written after every
/// durable entry (those past the durable commit index too), and every later open finds
/// all of them, then the removes, committed.
#[test]
fn forced_removes_follow_every_durable_entry_on_disk() {
    use keel_core::raft::{
        force_new_cluster, ConfChange, Entry, HardState, PersistBatch, PersistSeq, Term,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let open =
        || Storage::open(&DataDirs::new(dir.path(), None), 7, 1, POLICY).expect("storage opens");
    let (mut storage, rec) = open();
    assert!(rec.state.is_none());
    // A founder of {1, 2, 3}, then puts; 12 entries of term 2, committed through 10. The
    // small segments make the log span several files.
    let mut entries: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            term: Term(1),
            index: LogIndex(i),
            payload: EntryPayload::ConfChange(ConfChange::AddVoter(MemberId(i))),
        })
        .collect();
    entries.extend((4..=12).map(|i| Entry {
        term: Term(2),
        index: LogIndex(i),
        payload: EntryPayload::Normal(Bytes::from(vec![i as u8; 600])),
    }));
    storage
        .persist(&PersistBatch {
            seq: PersistSeq(1),
            hard_state: Some(HardState {
                term: Term(2),
                vote: MemberId(2),
                commit: LogIndex(10),
            }),
            snapshot: Some(Snapshot::default()),
            entries: entries.clone(),
            must_sync: true,
        })
        .expect("persist");
    drop(storage);

    let (mut storage, rec) = open();
    let state = rec.state.expect("a WAL to restart from");
    assert_eq!(state.entries, entries);
    let forced = force_new_cluster(state, MemberId(1)).expect("forced");
    assert_eq!(forced.adopted, 2);
    storage
        .persist(forced.persist.as_ref().expect("removes to write"))
        .expect("persist");
    drop(storage);

    for _ in 0..2 {
        let (storage, rec) = open();
        let state = rec.state.expect("a WAL to restart from");
        assert_eq!(state.entries, forced.state.entries);
        assert_eq!(state.hard_state.commit, LogIndex(14));
        assert_eq!(&state.entries[..12], &entries[..]);
        let payloads: Vec<&EntryPayload> = state.entries[12..].iter().map(|e| &e.payload).collect();
        assert_eq!(
            payloads,
            [
                &EntryPayload::ConfChange(ConfChange::Remove(MemberId(2))),
                &EntryPayload::ConfChange(ConfChange::Remove(MemberId(3))),
            ]
        );
        let mut node =
            RaftNode::restart(Config::new(MemberId(1)), state, Time(0)).expect("restart");
        // Raft hands every entry to the application, the removes last, and is alone.
        assert_eq!(node.ready().committed.len(), 14);
        assert_eq!(node.conf(), &ConfState::with_voters([MemberId(1)]));
        drop(storage);
    }
}
