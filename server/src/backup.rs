//! `keelctl snapshot status|restore` and `keelctl migrate`: etcd's backup files (a bbolt
//! database followed by its SHA-256, as `etcdctl snapshot save` writes them from etcd or
//! from keel) checked, summarised and turned into a keel data dir, with the flags and
//! output of `etcdctl snapshot status|restore`.
//!
//! A restore rebuilds the state as etcd's does: the keyspace with its revisions and
//! compaction, leases, users, roles and alarms are kept; the member table is replaced by
//! the new cluster of `--initial-cluster`, whose IDs are derived as etcd derives them.
//! The data dir holds one snapshot at raft index N (the number of members, term 1, as
//! etcd's restore commits N configuration entries) and a WAL that starts there, so
//! `keel` restarts from it. It is written to a temporary dir renamed into place at the
//! end: a failed restore leaves nothing half-written.

use std::fs;
use std::path::{Path, PathBuf};

use keel_core::etcd::backend::{read_backend, Backend};
use keel_core::etcd::bolt::{db_status, BoltDb, DbStatus};
use keel_core::node::{MemberInfo, StateMachine};
use keel_core::raft::{
    ConfState, HardState, LogIndex, MemberId, PersistBatch, PersistSeq, Snapshot, SnapshotMeta,
    Term,
};
use keel_runtime_tokio::storage::{DataDirs, Storage, StoragePolicy};
use sha2::{Digest, Sha256};

/// What `etcdctl snapshot restore` takes.
#[derive(Clone, Debug)]
pub struct RestoreArgs {
    /// The snapshot file (or, for `migrate`, an etcd data dir's `member/snap/db`).
    pub file: PathBuf,
    /// Where to write the data dir (default `<name>.etcd`, as etcdctl).
    pub data_dir: Option<PathBuf>,
    /// A dedicated WAL directory (etcdctl's `--wal-dir`; default `<data-dir>/member/wal`).
    pub wal_dir: Option<PathBuf>,
    /// This member's name.
    pub name: String,
    /// The new cluster.
    pub initial_cluster: String,
    /// The new cluster's token.
    pub initial_cluster_token: String,
    /// This member's peer URLs.
    pub initial_advertise_peer_urls: Vec<String>,
    /// Restore without checking the SHA-256 (needed for a db copied from a data dir).
    pub skip_hash_check: bool,
}

/// SHA-256 trailer length.
const HASH_LEN: usize = 32;

/// The database part of a snapshot file, its SHA-256 checked unless `skip_hash_check`,
/// with etcd's rule for whether a hash is there: a bbolt file is a whole number of
/// 512-byte sectors, so a length 32 past one means a hash follows.
pub fn snapshot_db(bytes: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    let has_hash = bytes.len() % 512 == HASH_LEN;
    if !has_hash {
        if !skip_hash_check {
            return Err("snapshot missing hash but --skip-hash-check=false".into());
        }
        return Ok(bytes);
    }
    let (db, hash) = bytes.split_at(bytes.len() - HASH_LEN);
    if !skip_hash_check {
        let got = Sha256::digest(db);
        if got.as_slice() != hash {
            return Err(format!(
                "expected sha256 {}, got {} (the snapshot file is damaged)",
                hex(hash),
                hex(&got)
            ));
        }
    }
    Ok(db)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `snapshot status`: hash, revision, keys and size as etcdctl computes them.
pub fn status(path: &Path) -> Result<DbStatus, String> {
    let bytes = read_file(path)?;
    // etcdctl's status reads the database without checking the hash.
    let db = snapshot_db(&bytes, true)?;
    let db = BoltDb::open(db).map_err(|e| e.to_string())?;
    db_status(&db).map_err(|e| e.to_string())
}

/// Renders a status as `etcdctl snapshot status -w FORMAT` prints it.
pub fn render_status(s: &DbStatus, format: &str) -> Result<String, String> {
    let size = humanize_bytes(s.total_size);
    Ok(match format {
        "simple" => format!("{:x}, {}, {}, {}\n", s.hash, s.revision, s.total_key, size),
        "json" => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_key, s.total_size
        ),
        "fields" => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_key, s.total_size
        ),
        "table" => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.total_key.to_string(),
                size,
            ],
        ),
        other => return Err(format!("unknown output format {other:?}")),
    })
}

/// One-row table as etcdctl's tablewriter draws it: centred headers, cells aligned right
/// (etcdctl sets `ALIGN_RIGHT`).
fn table(headers: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(h, c)| h.len().max(c.len()))
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.len();
        let left = pad / 2;
        out += &format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(pad - left));
    }
    out += "|\n";
    out += &rule;
    for (c, w) in row.iter().zip(&widths) {
        out += &format!("| {c:>w$} ");
    }
    out += "|\n";
    out + &rule
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub fn humanize_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// The etcd backend a snapshot's database holds, after bbolt's own integrity check.
fn read_state(db: &[u8]) -> Result<Backend, String> {
    let bolt = BoltDb::open(db).map_err(|e| e.to_string())?;
    let problems = bolt.check();
    if let Some(first) = problems.first() {
        return Err(format!(
            "snapshot file integrity check failed: {} errors found; first: {first}",
            problems.len()
        ));
    }
    read_backend(&bolt).map_err(|e| e.to_string())
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    /// The data dir.
    pub data_dir: PathBuf,
    /// This member's ID.
    pub member_id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// Keys live at the snapshot's revision.
    pub keys: usize,
    /// The snapshot's revision.
    pub revision: i64,
}

/// `snapshot restore`: writes a keel data dir for member `name` of the new cluster.
pub fn restore(a: &RestoreArgs) -> Result<Restored, String> {
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name)));
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        ));
    }
    if let Some(wal) = a.wal_dir.as_ref().filter(|w| w.exists()) {
        return Err(format!("wal-dir {:?} exists", wal.display().to_string()));
    }
    let bytes = read_file(&a.file)?;
    let db = snapshot_db(&bytes, a.skip_hash_check)?;
    let backend = read_state(db)?;
    let (own, cid, members) = crate::launch::founding_members(
        &a.initial_cluster,
        &a.name,
        &a.initial_advertise_peer_urls,
        &a.initial_cluster_token,
    )?;
    let revision = backend.store.revision();
    let keys = backend.store.keys_held();
    // etcd's restore commits one configuration entry per member at term 1.
    let index = members.len() as u64;
    let sm = StateMachine::from_backend(backend, members.iter().cloned(), index, u64::MAX, 1);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term(1),
            conf: ConfState::with_voters(members.iter().map(|m| MemberId(m.id))),
        },
        data: sm.snapshot(),
    };
    // Written under temporary names, then renamed: a dedicated WAL first, the data dir
    // last, so a data dir that exists is always whole.
    let tmp = DataDirs::new(
        &temp_dir_for(&data_dir),
        a.wal_dir.as_deref().map(temp_dir_for).as_deref(),
    );
    let dedicated = a.wal_dir.as_ref().map(|w| (tmp.wal.clone(), w.clone()));
    for leftover in [&tmp.data, &tmp.wal] {
        if leftover.exists() {
            // Left by a restore that was interrupted: never a directory anyone uses.
            fs::remove_dir_all(leftover).map_err(|e| format!("{}: {e}", leftover.display()))?;
        }
    }
    let written = write_data_dir(&tmp, cid, own, &members, &snapshot);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp.data);
        let _ = fs::remove_dir_all(&tmp.wal);
        return Err(e);
    }
    for (from, to) in dedicated
        .into_iter()
        .chain([(tmp.data.clone(), data_dir.clone())])
    {
        fs::rename(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
    }
    Ok(Restored {
        data_dir,
        member_id: own,
        cluster_id: cid,
        keys,
        revision,
    })
}

fn temp_dir_for(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".restore-tmp");
    data_dir.with_file_name(name)
}

fn write_data_dir(
    dirs: &DataDirs,
    cid: u64,
    id: u64,
    members: &[MemberInfo],
    snapshot: &Snapshot,
) -> Result<(), String> {
    keel_runtime_tokio::founding::save(&dirs.data, members)
        .map_err(|e| format!("{}: {e}", dirs.data.display()))?;
    let (mut storage, _) =
        Storage::open(dirs, cid, id, StoragePolicy::default()).map_err(|e| e.to_string())?;
    storage
        .persist(&PersistBatch {
            seq: PersistSeq(1),
            hard_state: Some(HardState {
                term: snapshot.meta.term,
                vote: MemberId::NONE,
                commit: snapshot.meta.index,
            }),
            snapshot: Some(snapshot.clone()),
            entries: Vec::new(),
            must_sync: true,
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_go_humanize_does() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(2105344), "2.1 MB");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(999_999), "1000 kB");
    }

    #[test]
    fn the_hash_trailer_follows_etcds_rule() {
        let db = vec![7u8; 4096];
        let mut file = db.clone();
        file.extend_from_slice(&Sha256::digest(&db));
        assert_eq!(snapshot_db(&file, false), Ok(&db[..]));
        let mut bad = file.clone();
        bad[100] ^= 1;
        assert!(snapshot_db(&bad, false)
            .expect_err("flipped")
            .starts_with("expected sha256 "));
        assert_eq!(snapshot_db(&bad, true), Ok(&bad[..4096]));
        assert_eq!(
            snapshot_db(&db, false),
            Err("snapshot missing hash but --skip-hash-check=false".into())
        );
        assert_eq!(snapshot_db(&db, true), Ok(&db[..]));
    }
}

#[cfg(test)]
mod damaged_files {
    use super::*;
    use bytes::Bytes;
    use keel_core::etcd::backend::write_backend;
    use keel_core::etcd::bolt::BoltWriter;
    use keel_core::mvcc::{DeleteRangeRequest, PutRequest};

    /// A small snapshot file as `etcdctl snapshot save` writes it from keel: database, then
    /// its SHA-256.
    fn snapshot_file() -> Vec<u8> {
        let mut sm = StateMachine::new(u64::MAX, 1, []);
        for i in 0..120 {
            let key = Bytes::from(format!("/k/{}", i % 40));
            sm.kv
                .put(&PutRequest {
                    key: key.clone(),
                    value: Bytes::from(vec![b'x'; i * 3]),
                    ..PutRequest::default()
                })
                .expect("put");
            if i % 9 == 0 {
                sm.kv
                    .store
                    .delete_range(&DeleteRangeRequest {
                        key,
                        ..DeleteRangeRequest::default()
                    })
                    .expect("delete");
            }
        }
        let (mut bytes, _) =
            write_backend(sm.backend_view(1), BoltWriter::new(Vec::new())).expect("write");
        let hash = Sha256::digest(&bytes);
        bytes.extend_from_slice(&hash);
        bytes
    }

    fn args(file: &Path, data_dir: &Path, skip_hash_check: bool) -> RestoreArgs {
        RestoreArgs {
            file: file.to_path_buf(),
            data_dir: Some(data_dir.to_path_buf()),
            wal_dir: None,
            name: "default".into(),
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            skip_hash_check,
        }
    }

    #[test]
    fn every_flipped_byte_is_a_hash_mismatch_and_every_truncation_an_error() {
        let file = snapshot_file();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x5a;
            let e = snapshot_db(&bad, false).expect_err("a flipped byte passed the hash check");
            assert!(e.starts_with("expected sha256 "), "{e}");
        }
        let db_len = file.len() - HASH_LEN;
        for len in 0..file.len() {
            let cut = &file[..len];
            // Without its trailer's full length a file has no hash: refused unless the
            // user skips the check, and then a database cut short must say so (a cut
            // inside the trailer leaves the database whole).
            assert!(snapshot_db(cut, false).is_err(), "truncated to {len}");
            let db = snapshot_db(cut, true).expect("unchecked");
            assert!(
                read_state(db).is_err() || len >= db_len,
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn a_damaged_database_restored_without_the_hash_check_never_leaves_a_partial_data_dir() {
        let file = snapshot_file();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        // A sample of positions across every page (restores that succeed write and sync a
        // data dir each, so not all of them), and every truncation at a page boundary.
        let mut cases: Vec<Vec<u8>> = (0..file.len())
            .step_by(1009)
            .map(|i| {
                let mut bad = file.clone();
                bad[i] ^= 0xff;
                bad
            })
            .collect();
        cases.extend((0..file.len()).step_by(4096).map(|n| file[..n].to_vec()));
        for (n, bytes) in cases.iter().enumerate() {
            fs::write(&path, bytes).expect("write");
            let data_dir = dir.path().join(format!("restored{n}"));
            match restore(&args(&path, &data_dir, true)) {
                Ok(_) => assert!(data_dir.join("member").join("wal").is_dir()),
                Err(e) => {
                    assert!(!e.contains('\n'), "one line: {e}");
                    assert!(!data_dir.exists(), "case {n}: {e}");
                }
            }
            assert!(!temp_dir_for(&data_dir).exists());
        }
    }

    #[test]
    fn a_restore_with_a_dedicated_wal_dir_writes_the_wal_there_and_refuses_an_existing_one() {
        let file = snapshot_file();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        fs::write(&path, &file).expect("write");
        let data_dir = dir.path().join("default.etcd");
        let wal_dir = dir.path().join("fast-disk").join("wal");
        let a = RestoreArgs {
            wal_dir: Some(wal_dir.clone()),
            ..args(&path, &data_dir, false)
        };
        let r = restore(&a).expect("restore");
        assert!(!data_dir.join("member").join("wal").exists());
        assert!(!temp_dir_for(&wal_dir).exists());
        let (_, rec) = Storage::open(
            &DataDirs::new(&data_dir, Some(&wal_dir)),
            r.cluster_id,
            r.member_id,
            StoragePolicy::default(),
        )
        .expect("open");
        assert_eq!(rec.snapshot.expect("a snapshot").meta.index, LogIndex(1));
        assert_eq!(
            Storage::identity(&DataDirs::new(&data_dir, Some(&wal_dir))).expect("identity"),
            Some((r.cluster_id, r.member_id))
        );

        // etcdctl's refusal, word for word, and nothing written.
        let other = dir.path().join("other.etcd");
        let e = restore(&RestoreArgs {
            wal_dir: Some(wal_dir.clone()),
            ..args(&path, &other, false)
        })
        .expect_err("the WAL dir exists");
        assert_eq!(
            e,
            format!("wal-dir {:?} exists", wal_dir.display().to_string())
        );
        assert!(!other.exists());
    }

    #[test]
    fn a_restored_data_dir_holds_the_snapshot_state() {
        let file = snapshot_file();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        fs::write(&path, &file).expect("write");
        let data_dir = dir.path().join("default.etcd");
        let r = restore(&args(&path, &data_dir, false)).expect("restore");
        // etcd's default member and cluster IDs for the default flags.
        assert_eq!(r.member_id, 0x8e9e05c52164694d);
        assert_eq!(r.cluster_id, 0xcdf818194e3a8c32);
        assert_eq!(r.revision, 135);
        let (_, rec) = Storage::open(
            &DataDirs::new(&data_dir, None),
            r.cluster_id,
            r.member_id,
            StoragePolicy::default(),
        )
        .expect("open");
        let snap = rec.snapshot.expect("a snapshot");
        assert_eq!(snap.meta.index, LogIndex(1));
        let sm = StateMachine::restore(&snap.data, u64::MAX, 1).expect("image");
        assert_eq!(sm.kv.store.revision(), 135);
        assert_eq!(sm.members.len(), 1);
        assert_eq!(sm.applied(), 1);
        let again = restore(&args(&path, &data_dir, false)).expect_err("exists");
        assert_eq!(
            again,
            format!("data-dir {:?} exists", data_dir.display().to_string())
        );
    }
}
