//! etcd's corruption checks on loopback. One member of three has a value changed on its
//! disk beneath every checksum (its snapshot file rewritten with the checksums redone, as
//! etcd's own tests rewrite a member's bbolt file), so its keyspace differs from its
//! peers' at the same revision. Then:
//! - with `--experimental-initial-corrupt-check` it refuses to start, with etcd's error
//!   (a healthy member restarted the same way starts, so the check is not just a refusal);
//! - restarted without it, the leader's periodic check (`--experimental-corrupt-check-time`)
//!   finds the mismatch and raises CORRUPT through raft (against member 0, as etcd does);
//!   every member then refuses writes with etcd's "etcdserver: corrupt cluster", while
//!   reads still work. Before the damage, periodic checks through writes and a compaction
//!   raise nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{channel, get, plan, put, retry, wait_leader};
use keel_core::raft::Snapshot;
use keel_core::wal::{decode_snapshot_file, encode_snapshot_file};
use keel_runtime_tokio::member::MemberConfig;
use keel_runtime_tokio::pb::etcdserverpb as pb;
use pb::maintenance_client::MaintenanceClient;

const GOOD: &[u8] = b"good-value-of-the-key";
const EVIL: &[u8] = b"evil-value-of-the-key";

fn checking(c: &mut MemberConfig) {
    c.snapshot_count = 5;
    c.corrupt_check_time = Duration::from_millis(300);
}

/// The snapshot files in member `name`'s data dir.
fn snapshot_files(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let snap = dir.join(name).join("member").join("snap");
    let mut files: Vec<_> = std::fs::read_dir(snap)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    files
}

/// Replaces `from` with `to` (same length) in the keyspace part of a snapshot file's
/// image and redoes the three checksums (file, member image, keyspace image), so the
/// file loads cleanly with a value its peers never wrote. False if `from` is not there.
fn rewrite_value(path: &Path, from: &[u8], to: &[u8]) -> bool {
    let file = std::fs::read(path).expect("read snapshot");
    let snap = decode_snapshot_file(&file).expect("a valid snapshot file");
    let mut image = snap.data.to_vec();
    // Member image: magic (8), keyspace length (8), keyspace image, ..., CRC (4).
    let kv_len = u64::from_le_bytes(image[8..16].try_into().expect("8 bytes")) as usize;
    let kv = &mut image[16..16 + kv_len];
    let Some(at) = kv.windows(from.len()).position(|w| w == from) else {
        return false;
    };
    kv[at..at + to.len()].copy_from_slice(to);
    let body = kv.len() - 4;
    let crc = crc32fast::hash(&kv[..body]);
    kv[body..].copy_from_slice(&crc.to_le_bytes());
    let body = image.len() - 4;
    let crc = crc32fast::hash(&image[..body]);
    image[body..].copy_from_slice(&crc.to_le_bytes());
    let file = encode_snapshot_file(&Snapshot {
        meta: snap.meta,
        data: image.into(),
    });
    std::fs::write(path, file).expect("write snapshot");
    true
}

async fn alarms(url: &str) -> Vec<pb::AlarmMember> {
    MaintenanceClient::new(channel(url).await)
        .alarm(pb::AlarmRequest::default())
        .await
        .map(|r| r.into_inner().alarms)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_different_data_is_refused_at_start_and_then_raises_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(dir, checking).await;
    wait_leader(&urls).await;
    let mut kv = ms[0].kv().await;
    retry(|| {
        let mut kv = kv.clone();
        async move { kv.put(put("k", std::str::from_utf8(GOOD).unwrap())).await }
    })
    .await
    .expect("put");
    for i in 0..12 {
        kv.put(put(&format!("other-{i}"), "v")).await.expect("put");
    }
    // A compaction and writes after it while the leader checks: no false alarm.
    let header = kv
        .put(put("other-0", "w"))
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header");
    kv.compact(pb::CompactionRequest {
        revision: header.revision - 3,
        physical: true,
    })
    .await
    .expect("compact");
    // Enough writes after it that every member's newest snapshot holds the compaction.
    for i in 0..12 {
        kv.put(put(&format!("after-{i}"), "v")).await.expect("put");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for u in &urls {
        assert_eq!(alarms(u).await, vec![], "no alarm on healthy members");
    }

    // (a) A healthy member passes the initial check and serves.
    ms[1].stop().await;
    ms[1] = p
        .start_with(1, dir, |c| {
            checking(c);
            c.initial_corrupt_check = true;
        })
        .await;
    let got = retry(|| {
        let mut kv = kv.clone();
        async move { kv.range(get("k")).await }
    })
    .await
    .expect("get");
    assert_eq!(got.into_inner().kvs[0].value, GOOD);
    let kv1 = ms[1].kv().await;
    retry(|| {
        let mut kv1 = kv1.clone();
        async move { kv1.range(get("k")).await }
    })
    .await
    .expect("the healthy member serves after its initial check");
    assert_eq!(ms[1].ended(0).await, None, "still running");

    // Member 2's disk now says another value for "k" at the same revision.
    ms[2].stop().await;
    let files = snapshot_files(dir, "m2");
    assert!(!files.is_empty(), "member 2 wrote snapshots");
    let rewritten = files
        .iter()
        .filter(|f| rewrite_value(f, GOOD, EVIL))
        .count();
    assert!(rewritten > 0, "the value is in member 2's snapshots");

    // (a) The damaged member refuses to start, naming itself as etcd does.
    let mut refused = p
        .start_with(2, dir, |c| {
            checking(c);
            c.initial_corrupt_check = true;
        })
        .await;
    let ended = refused.ended(20).await.expect("refused to start");
    assert_eq!(
        ended,
        Err(format!(
            "{:x} found data inconsistency with peers",
            p.members[2].id
        ))
    );
    for u in &urls[..2] {
        assert_eq!(alarms(u).await, vec![], "the refusal raises nothing");
    }

    // (b) Started without the initial check, it serves its damaged value; the leader's
    // periodic check raises CORRUPT through raft.
    ms[2] = p.start_with(2, dir, checking).await;
    let corrupt = pb::AlarmMember {
        member_id: 0,
        alarm: pb::AlarmType::Corrupt as i32,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alarms(&urls[0]).await != vec![corrupt] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no CORRUPT alarm within 20 s: {:?}",
            alarms(&urls[0]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for u in &urls {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while alarms(u).await != vec![corrupt] {
            assert!(tokio::time::Instant::now() < deadline, "alarm on {u}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Writes are refused with etcd's error; reads go on.
        let mut kv = pb::kv_client::KvClient::new(channel(u).await);
        let e = kv.put(put("k", "new")).await.expect_err("refused");
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::DataLoss, "etcdserver: corrupt cluster"),
            "put on {u}"
        );
        let e = kv
            .delete_range(pb::DeleteRangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(e.message(), "etcdserver: corrupt cluster");
        assert!(kv.range(get("other-1")).await.is_ok(), "reads on {u}");
    }
    for m in &mut ms {
        m.stop().await;
    }
}
