//! etcd's `--force-new-cluster` on loopback: a three-member cluster loses two members
//! for good; the survivor restarts from its data dir as a one-member cluster, serves
//! every acknowledged write, accepts writes, no longer dials or admits the removed
//! members, grows again with `member add` and a member joining as `--initial-cluster-state
//! existing` does, and restarts without the flag as the same cluster. On a data dir with
//! no WAL the flag is ignored, as etcd ignores it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{channel, plan, retry, wait_leader, Plan, Running};
use keel_core::node::MemberInfo;
use keel_runtime_tokio::pb::etcdserverpb as pb;
use keel_runtime_tokio::peer::fetch_members;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: usize = 100;

fn put(k: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(k.as_bytes()),
        ..Default::default()
    }
}

/// Starts planned member `i` as one of the founding members `0..3`, with `force` as
/// its `--force-new-cluster`.
async fn start_founder(p: &mut Plan, i: usize, dir: &std::path::Path, force: bool) -> Running {
    let founding: Vec<MemberInfo> = p.members[..3]
        .iter()
        .map(|m| MemberInfo {
            client_urls: vec![],
            ..m.clone()
        })
        .collect();
    p.start_with(i, dir, move |c| {
        c.initial_members = founding;
        c.force_new_cluster = force;
    })
    .await
}

/// The IDs `url` lists as members (a linearizable member list).
async fn member_ids(url: &str) -> Vec<u64> {
    let r = retry(|| async {
        ClusterClient::new(channel(url).await)
            .member_list(pb::MemberListRequest { linearizable: true })
            .await
    })
    .await
    .expect("member list")
    .into_inner();
    let mut ids: Vec<u64> = r.members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids
}

/// How many `k/` keys `url` serves (linearizable unless `serializable`).
async fn count_keys(url: &str, serializable: bool) -> Result<i64, tonic::Status> {
    let req = pb::RangeRequest {
        key: Bytes::from_static(b"k/"),
        range_end: Bytes::from_static(b"k0"),
        count_only: true,
        serializable,
        ..Default::default()
    };
    KvClient::new(channel(url).await)
        .range(req)
        .await
        .map(|r| r.into_inner().count)
}

/// Waits until `url` serves `n` `k/` keys from its own state.
async fn wait_keys(url: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if count_keys(url, true).await.ok() == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never served {n} keys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The peer handshake's answer to member `from` of cluster `cluster` dialing member
/// `to` at `peer_url` (0: accepted, 3: removed; see `keel_runtime_tokio::peer`).
async fn handshake(peer_url: &str, cluster: u64, from: u64, to: u64) -> u8 {
    let addr = peer_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("dial");
    let mut hs = Vec::new();
    hs.extend_from_slice(b"KEELPEER");
    hs.push(1);
    for w in [cluster, from, to] {
        hs.extend_from_slice(&w.to_le_bytes());
    }
    s.write_all(&hs).await.expect("handshake");
    let mut reply = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut reply))
        .await
        .expect("an answer in time")
        .expect("an answer");
    reply[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_forced_into_a_new_cluster_keeps_every_write_and_grows_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(4).await;
    let mut ms = Vec::new();
    for i in 0..3 {
        ms.push(start_founder(&mut p, i, dir.path(), false).await);
    }
    let urls: Vec<String> = ms.iter().map(|m| m.client_url.clone()).collect();
    wait_leader(&urls).await;
    let mut kv = ms[0].kv().await;
    for i in 0..KEYS {
        retry(|| {
            let mut kv = kv.clone();
            async move { kv.put(put(&format!("k/{i:03}"))).await }
        })
        .await
        .expect("acknowledged put");
    }
    // A survivor can only serve what reached its own log: wait until every member holds
    // (has applied) every write, so whichever survives holds them all.
    for u in &urls {
        wait_keys(u, KEYS as i64).await;
    }
    let (a, b, c) = (p.members[0].id, p.members[1].id, p.members[2].id);
    for m in &mut ms {
        m.stop().await;
    }
    // Members 1 and 2 are gone for good. Their peer ports stay bound here, so a dial
    // from the survivor would show up as a pending connection.
    let (_, mut peer1) = p.take_listeners(1).await;
    let (_, mut peer2) = p.take_listeners(2).await;
    for i in [1, 2] {
        std::fs::remove_dir_all(dir.path().join(&p.members[i].name)).expect("remove data dir");
    }

    let mut m0 = start_founder(&mut p, 0, dir.path(), true).await;
    let url0 = m0.client_url.clone();
    assert_eq!(wait_leader(std::slice::from_ref(&url0)).await, a);
    assert_eq!(member_ids(&url0).await, vec![a], "one member left");
    assert_eq!(count_keys(&url0, false).await.expect("get"), KEYS as i64);
    kv = m0.kv().await;
    retry(|| {
        let mut kv = kv.clone();
        async move { kv.put(put("k/after-force")).await }
    })
    .await
    .expect("a write with one member");

    // The removed members are neither dialed nor admitted.
    for l in [&mut peer1, &mut peer2] {
        let dialed = tokio::time::timeout(Duration::from_millis(1500), l.accept()).await;
        assert!(dialed.is_err(), "the survivor dialed a removed member");
    }
    drop((peer1, peer2));
    let peer0 = p.members[0].peer_urls[0].clone();
    assert_eq!(handshake(&peer0, 0xc1, b, a).await, 3, "removed: refused");
    assert_eq!(handshake(&peer0, 0xc1, c, a).await, 3, "removed: refused");

    // It grows again: a new member is added and joins the running cluster.
    let added = retry(|| async {
        ClusterClient::new(channel(&url0).await)
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![p.members[3].peer_urls[0].clone()],
                is_learner: false,
            })
            .await
    })
    .await
    .expect("member add")
    .into_inner();
    let d = added.member.expect("added member").id;
    let remote = fetch_members(std::slice::from_ref(&peer0), Duration::from_secs(2))
        .await
        .expect("member list from the survivor's peer port");
    assert_eq!(remote.members.len(), 2);
    let joiner = move |c: &mut keel_runtime_tokio::member::MemberConfig| {
        c.id = d;
        c.cluster_id = remote.cluster_id;
        c.initial_members = remote.members.clone();
        c.new_cluster = false;
    };
    let mut m3 = p.start_with(3, dir.path(), joiner.clone()).await;
    wait_keys(&m3.client_url, KEYS as i64 + 1).await;
    let both = [url0.clone(), m3.client_url.clone()];
    wait_leader(&both).await;
    let mut expected = vec![a, d];
    expected.sort_unstable();
    assert_eq!(member_ids(&m3.client_url).await, expected);

    // Restarted without the flag, the two come back as the same two-member cluster:
    // the removes are in the survivor's WAL, not in its flags.
    m3.stop().await;
    m0.stop().await;
    let mut m0 = start_founder(&mut p, 0, dir.path(), false).await;
    let mut m3 = p.start_with(3, dir.path(), joiner).await;
    wait_leader(&both).await;
    assert_eq!(member_ids(&url0).await, expected);
    assert_eq!(
        count_keys(&m3.client_url, false).await.expect("get"),
        KEYS as i64 + 1
    );
    m3.stop().await;
    m0.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_member_restarts_alone_without_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let mut ms = Vec::new();
    for i in 0..3 {
        ms.push(start_founder(&mut p, i, dir.path(), false).await);
    }
    let urls: Vec<String> = ms.iter().map(|m| m.client_url.clone()).collect();
    wait_leader(&urls).await;
    ms[1].kv().await.put(put("k/one")).await.expect("put");
    wait_keys(&urls[1], 1).await;
    for m in &mut ms {
        m.stop().await;
    }
    let b = p.members[1].id;
    let mut m1 = start_founder(&mut p, 1, dir.path(), true).await;
    let url1 = m1.client_url.clone();
    wait_leader(std::slice::from_ref(&url1)).await;
    assert_eq!(member_ids(&url1).await, vec![b]);
    m1.stop().await;
    // Without the flag it still is the only member; with it again, nothing changes.
    for force in [false, true] {
        let mut m1 = start_founder(&mut p, 1, dir.path(), force).await;
        wait_leader(std::slice::from_ref(&url1)).await;
        assert_eq!(member_ids(&url1).await, vec![b]);
        assert_eq!(count_keys(&url1, false).await.expect("get"), 1);
        m1.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_is_ignored_on_a_data_dir_without_a_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let mut ms = Vec::new();
    for i in 0..3 {
        ms.push(start_founder(&mut p, i, dir.path(), true).await);
    }
    let urls: Vec<String> = ms.iter().map(|m| m.client_url.clone()).collect();
    wait_leader(&urls).await;
    let mut ids: Vec<u64> = p.members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(member_ids(&urls[0]).await, ids, "bootstrapped as three");
    ms[2].kv().await.put(put("k/x")).await.expect("put");
    for m in &mut ms {
        m.stop().await;
    }
}
