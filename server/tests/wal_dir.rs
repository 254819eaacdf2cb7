//! `--wal-dir`: a member whose WAL sits in `<data-dir>/member/wal` is not started over
//! with a `--wal-dir` elsewhere (that would bootstrap a new member over its snapshots).

use std::ffi::OsString;

use keel_runtime_tokio::storage::DataDirs;
use keel_runtime_tokio::{Storage, StoragePolicy};

#[test]
fn a_wal_left_in_the_data_dir_is_not_bootstrapped_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A member's WAL where a start without --wal-dir puts it.
    Storage::open(&DataDirs::new(&data, None), 7, 1, StoragePolicy::default()).expect("wal");
    let wal = dir.path().join("elsewhere");
    let args: Vec<OsString> = [
        "keel",
        "--name",
        "t",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--wal-dir",
        wal.to_str().expect("utf-8"),
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--advertise-client-urls",
        "http://127.0.0.1:2379",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        "t=http://127.0.0.1:2380",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let e = keel_server::launch::main(args).expect_err("refused");
    assert_eq!(
        e,
        format!(
            "{} holds this member's WAL but --wal-dir is {}: move the WAL there or start without --wal-dir",
            data.join("member").join("wal").display(),
            wal.display()
        )
    );
    assert!(!wal.exists(), "nothing written to --wal-dir");
}
