//! Members on loopback, driven through etcd's gRPC API: single-member answers, a
//! three-member cluster with forwarding, linearizable reads from followers, leader
//! loss, and restart from the data dir.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, plan, put, wait_leader};
use keel_runtime_tokio::member::MemberTask;
use keel_runtime_tokio::pb::etcdserverpb as pb;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_answers_like_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start(0, dir.path()).await;
    wait_leader(&[m.client_url.clone()]).await;
    let mut kv = m.kv().await;

    let r = kv.put(put("foo", "bar")).await.expect("put").into_inner();
    let h = r.header.expect("header");
    assert_eq!((h.cluster_id, h.member_id, h.revision), (0xc1, m.id, 2));
    kv.put(put("foo", "baz")).await.expect("put");
    let r = kv.range(get("foo")).await.expect("get").into_inner();
    assert_eq!(r.count, 1);
    let got = &r.kvs[0];
    assert_eq!(
        (
            &got.value[..],
            got.create_revision,
            got.mod_revision,
            got.version
        ),
        (&b"baz"[..], 2, 3, 2)
    );

    // A watch from a past revision replays, then follows live writes.
    let (_tx, mut stream) = open_watch(
        &m.client_url,
        vec![pb::WatchCreateRequest {
            key: Bytes::from_static(b"foo"),
            start_revision: 2,
            prev_kv: true,
            ..Default::default()
        }],
    )
    .await;
    let created = stream.next().await.expect("created").expect("ok");
    assert!(created.created);
    kv.put(put("foo", "qux")).await.expect("put");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("stream")
            .expect("ok");
        seen.extend(r.events.into_iter().map(|e| {
            let kv = e.kv.expect("kv");
            (kv.mod_revision, kv.value)
        }));
    }
    assert_eq!(
        seen,
        vec![
            (2, Bytes::from_static(b"bar")),
            (3, Bytes::from_static(b"baz")),
            (4, Bytes::from_static(b"qux"))
        ]
    );

    // Reads at a past revision, then compaction and etcd's errors.
    let mut old = get("foo");
    old.revision = 2;
    let r = kv.range(old.clone()).await.expect("get@2").into_inner();
    assert_eq!(&r.kvs[0].value[..], b"bar");
    kv.compact(pb::CompactionRequest {
        revision: 3,
        physical: true,
    })
    .await
    .expect("compact");
    let e = kv.range(old).await.expect_err("compacted");
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let mut future = get("foo");
    future.revision = 99;
    let e = kv.range(future).await.expect_err("future");
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let e = kv.put(put("", "x")).await.expect_err("empty key");
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
    );

    // Leases: attach, revoke deletes the key in one revision.
    let mut lease = LeaseClient::new(common::channel(&m.client_url).await);
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert!(g.id > 0);
    assert_eq!(g.ttl, 60);
    let mut p2 = put("leased", "v");
    p2.lease = g.id;
    kv.put(p2).await.expect("put with lease");
    let ttl = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert_eq!(ttl.keys, vec![Bytes::from_static(b"leased")]);
    lease
        .lease_revoke(pb::LeaseRevokeRequest { id: g.id })
        .await
        .expect("revoke");
    let r = kv.range(get("leased")).await.expect("get").into_inner();
    assert_eq!(r.count, 0, "revoking the lease deleted its key");
    let e = lease
        .lease_revoke(pb::LeaseRevokeRequest { id: g.id })
        .await
        .expect_err("gone");
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )
    );

    m.stop().await;
    // Restart from the data dir: everything acknowledged is there.
    let mut m = p.start(0, dir.path()).await;
    wait_leader(&[m.client_url.clone()]).await;
    let mut kv = m.kv().await;
    let r = kv.range(get("foo")).await.expect("get").into_inner();
    assert_eq!(&r.kvs[0].value[..], b"qux");
    assert_eq!(r.header.expect("header").revision, 6);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_forward_read_linearizably_and_survive_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(dir.path(), |_| {}).await;
    let leader = wait_leader(&urls).await;
    // Every member takes writes (followers forward) and reads its own writes.
    let mut n = 0;
    for round in 0..10 {
        for m in &ms {
            let mut kv = m.kv().await;
            let key = format!("k{round}-{:x}", m.id);
            kv.put(put(&key, "v")).await.expect("put via any member");
            n += 1;
            for other in &ms {
                let r = other.kv().await.range(get(&key)).await.expect("get");
                assert_eq!(
                    r.into_inner().count,
                    1,
                    "linearizable read on {:x}",
                    other.id
                );
            }
        }
    }
    assert_eq!(n, 30);
    // Stop the leader: the others elect a new one and keep every acknowledged write.
    let li = ms
        .iter()
        .position(|m| m.id == leader)
        .expect("leader is a member");
    ms[li].stop().await;
    let rest: Vec<String> = ms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, m)| m.client_url.clone())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let new_leader = loop {
        let l = wait_leader(&rest).await;
        if l != leader {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_leader, leader);
    let survivor = &ms[(li + 1) % 3];
    let mut kv = survivor.kv().await;
    kv.put(put("after", "failover"))
        .await
        .expect("put after failover");
    let all = pb::RangeRequest {
        key: Bytes::from_static(b"k"),
        range_end: Bytes::from_static(b"l"),
        count_only: true,
        ..Default::default()
    };
    assert_eq!(kv.range(all).await.expect("count").into_inner().count, 30);
    // The old leader comes back as a follower and catches up.
    ms[li] = p.start(li, dir.path()).await;
    let mut kv = ms[li].kv().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = kv.range(get("after")).await {
            if r.into_inner().count == 1 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restarted member caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_is_refused_and_the_joiner_exits_naming_both_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(2).await;
    let solo = p.members[0].clone();
    // Member 0 runs alone in cluster c1.
    let mut a = p
        .start_with(0, dir.path(), |c| {
            c.initial_members.retain(|m| m.id == solo.id)
        })
        .await;
    wait_leader(&[a.client_url.clone()]).await;
    // Member 1 believes member 0 is its peer in cluster c2.
    let mut b = p.start_with(1, dir.path(), |c| c.cluster_id = 0xc2).await;
    let ended = b.ended(10).await.expect("the joiner stops by itself");
    let err = ended.expect_err("it fails");
    assert!(err.contains("cluster ID mismatch"), "{err}");
    assert!(
        err.contains("cluster c1") && err.contains("cluster c2"),
        "{err}"
    );
    // The healthy member keeps serving.
    let mut kv = a.kv().await;
    kv.put(put("still", "here")).await.expect("a keeps serving");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_catches_up_from_a_streamed_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    // Snapshots every 50 entries and only 10 entries kept behind them: a member that
    // misses a few hundred writes can only catch up through a snapshot.
    let small = |c: &mut keel_runtime_tokio::member::MemberConfig| {
        c.snapshot_count = 50;
        c.log_tail = 10;
    };
    let (mut ms, urls) = p.start_all(dir.path(), small).await;
    let leader = wait_leader(&urls).await;
    let lagging = (0..3).find(|i| ms[*i].id != leader).expect("a follower");
    ms[lagging].stop().await;
    let writer = (0..3).find(|i| *i != lagging).expect("a live member");
    let mut kv = ms[writer].kv().await;
    for i in 0..300 {
        kv.put(put(&format!("snap/{i:03}"), &"v".repeat(100)))
            .await
            .expect("put while a member is down");
    }
    ms[lagging] = p.start_with(lagging, dir.path(), small).await;
    let mut kv = ms[lagging].kv().await;
    let all = pb::RangeRequest {
        key: Bytes::from_static(b"snap/"),
        range_end: Bytes::from_static(b"snap0"),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = kv.range(all.clone()).await {
            if r.into_inner().count == 300 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lagging member did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snaps = std::fs::read_dir(
        dir.path()
            .join(&p.members[lagging].name)
            .join("member/snap"),
    )
    .expect("snap dir")
    .count();
    assert!(snaps > 0, "the lagging member saved the leader's snapshot");
    // It serves linearizable reads and takes writes like the others.
    let mut lin = all.clone();
    lin.serializable = false;
    assert_eq!(kv.range(lin).await.expect("read").into_inner().count, 300);
    kv.put(put("snap/after", "x"))
        .await
        .expect("write via the caught-up member");
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_revoked_by_the_leader_with_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start(0, dir.path()).await;
    wait_leader(&[m.client_url.clone()]).await;
    let mut lease = LeaseClient::new(common::channel(&m.client_url).await);
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let mut kv = m.kv().await;
    let mut req = put("ephemeral", "v");
    req.lease = g.id;
    kv.put(req).await.expect("put");
    let granted = tokio::time::Instant::now();
    loop {
        let r = kv.range(get("ephemeral")).await.expect("get").into_inner();
        if r.count == 0 {
            break;
        }
        assert!(
            granted.elapsed() < Duration::from_secs(5),
            "a 1 s lease still holds its key after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        granted.elapsed() >= Duration::from_millis(900),
        "expired early: {:?}",
        granted.elapsed()
    );
    let ttl = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: false,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.ttl, -1, "etcd reports an expired lease with TTL -1");
    m.stop().await;
}

/// A leader whose lessor is not primary yet (it has not applied an entry of its own term)
/// holds a keepalive and retries it, rather than forwarding it to the leader, itself,
/// or refusing it; once the lessor is primary the keepalive is answered with the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_waits_for_a_new_leaders_lessor_to_become_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let (mut m, h) = p.start_with_handle(0, dir.path(), |_| {}).await;
    wait_leader(&[m.client_url.clone()]).await;
    let mut lease = LeaseClient::new(common::channel(&m.client_url).await);
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    // The window right after an election, held open: the lessor stands down (as a new
    // leader's is until its first entry applies) and nothing promotes it again.
    h.local(|c: &mut MemberTask| c.member.sm.kv.lessor.demote())
        .await
        .expect("member");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::LeaseKeepAliveRequest { id: g.id })
        .await
        .expect("queue");
    let mut stream = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    let asked = tokio::time::Instant::now();
    let held = tokio::time::timeout(Duration::from_millis(400), stream.next()).await;
    assert!(held.is_err(), "answered while not primary: {held:?}");
    h.local(|c: &mut MemberTask| {
        let now = c.clock.now();
        c.member.sm.kv.lessor.promote(now, 0);
    })
    .await
    .expect("member");
    let r = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("answered once primary")
        .expect("a response")
        .expect("renewed");
    assert_eq!((r.id, r.ttl), (g.id, 30));
    assert!(asked.elapsed() >= Duration::from_millis(400));
    drop(tx);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_watchers_get_the_current_revision_periodically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start(0, dir.path()).await;
    wait_leader(&[m.client_url.clone()]).await;
    let mut kv = m.kv().await;
    kv.put(put("a", "1")).await.expect("put");
    let creates = [("a", true), ("b", false)].map(|(key, notify)| pb::WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        progress_notify: notify,
        ..Default::default()
    });
    let (tx, mut stream) = open_watch(&m.client_url, creates.to_vec()).await;
    assert!(next_response(&mut stream).await.created);
    assert!(next_response(&mut stream).await.created);
    kv.put(put("b", "2")).await.expect("put"); // revision 3, for watcher 1 only
    let mut progress = Vec::new();
    while progress.len() < 2 {
        let r = next_response(&mut stream).await;
        if r.events.is_empty() {
            progress.push((r.watch_id, r.header.expect("header").revision));
        } else {
            assert_eq!(r.watch_id, 1);
        }
    }
    // Only the progress_notify watcher (ID 0) is notified, at the current revision.
    assert_eq!(progress, vec![(0, 3), (0, 3)]);
    drop(tx);
    m.stop().await;
}

async fn next_response(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("response in time")
        .expect("stream")
        .expect("ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_of_a_crowded_stream_gets_its_event() {
    // More watchers on one stream than the stream's backlog limit: one write hands all
    // of them an event in the same round, and none may be lost.
    const WATCHERS: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start(0, dir.path()).await;
    wait_leader(&[m.client_url.clone()]).await;
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(b"crowd"),
        ..Default::default()
    };
    let (_tx, mut stream) = open_watch(&m.client_url, vec![create; WATCHERS]).await;
    for _ in 0..WATCHERS {
        assert!(next_response(&mut stream).await.created);
    }
    m.kv().await.put(put("crowd", "x")).await.expect("put");
    let mut got = std::collections::BTreeSet::new();
    while got.len() < WATCHERS {
        let r = next_response(&mut stream).await;
        assert_eq!(r.events.len(), 1, "one event per watcher");
        assert!(got.insert(r.watch_id), "watcher {} twice", r.watch_id);
    }
    m.stop().await;
}

/// Opens a watch stream and sends `creates` on it; the sender keeps the stream open.
async fn open_watch(
    url: &str,
    creates: Vec<pb::WatchCreateRequest>,
) -> (
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
) {
    open_watch_with(url, creates, false).await.expect("watch")
}

type WatchStream = (
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
);

/// [`open_watch`], with clientv3's `WithRequireLeader` metadata when `require_leader`.
async fn open_watch_with(
    url: &str,
    creates: Vec<pb::WatchCreateRequest>,
    require_leader: bool,
) -> Result<WatchStream, tonic::Status> {
    let mut w = WatchClient::new(common::channel(url).await);
    let (tx, rx) = tokio::sync::mpsc::channel(creates.len().max(1));
    for c in creates {
        tx.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)),
        })
        .await
        .expect("send");
    }
    let req = with_leader_required(
        tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        require_leader,
    );
    let stream = w.watch(req).await?.into_inner();
    Ok((tx, stream))
}

/// `req` with clientv3's `WithRequireLeader` metadata when `require` (none otherwise).
fn with_leader_required<T>(mut req: tonic::Request<T>, require: bool) -> tonic::Request<T> {
    if require {
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    req
}

fn assert_no_leader<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_calls_wait_for_one_unless_the_client_requires_a_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(dir.path(), |_| {}).await;
    wait_leader(&urls).await;
    let lone = &urls[0];
    let mut kv = ms[0].kv().await;
    kv.put(put("a", "1")).await.expect("put");
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(b"a"),
        ..Default::default()
    };
    let (_keep1, mut required) = open_watch_with(lone, vec![create.clone()], true)
        .await
        .expect("watch with a leader");
    let (_keep2, mut plain) = open_watch(lone, vec![create.clone()]).await;
    assert!(next_response(&mut required).await.created);
    assert!(next_response(&mut plain).await.created);

    // Member 0 alone: no quorum, so no leader once its election timeout passes.
    ms[1].stop().await;
    ms[2].stop().await;
    let mut maintenance =
        pb::maintenance_client::MaintenanceClient::new(common::channel(lone).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while maintenance
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .leader
        != 0
    {
        assert!(tokio::time::Instant::now() < deadline, "leader not lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Calls that require a leader fail at once, as etcd's interceptor has them.
    let quick = Duration::from_secs(2);
    let put_now = kv.put(with_leader_required(
        tonic::Request::new(put("a", "x")),
        true,
    ));
    let r = tokio::time::timeout(quick, put_now)
        .await
        .expect("answered at once");
    assert_no_leader(r, "a put that requires a leader");
    let get_now = kv.range(with_leader_required(tonic::Request::new(get("a")), true));
    let r = tokio::time::timeout(quick, get_now)
        .await
        .expect("answered at once");
    assert_no_leader(r, "a read that requires a leader");
    assert_no_leader(
        open_watch_with(lone, vec![create.clone()], true).await,
        "a new watch that requires a leader",
    );
    // Serializable reads need no leader.
    let local = pb::RangeRequest {
        serializable: true,
        ..get("a")
    };
    let r = kv.range(local).await.expect("serializable read");
    assert_eq!(r.into_inner().kvs[0].value, Bytes::from_static(b"1"));

    // The stream that requires a leader is ended after three election timeouts (etcd's
    // monitorLeader); the other stays open.
    let end = tokio::time::timeout(Duration::from_secs(10), required.next())
        .await
        .expect("the required-leader watch ends");
    assert_no_leader(
        end.expect("an error, not a plain end"),
        "an open required-leader watch",
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), plain.next())
            .await
            .is_err(),
        "a watch without the metadata stays open"
    );

    // Without the metadata, a put and a linearizable read wait for a leader.
    let mut kv2 = ms[0].kv().await;
    let waiting_put = tokio::spawn(async move { kv2.put(put("a", "2")).await });
    let mut kv3 = ms[0].kv().await;
    let waiting_get = tokio::spawn(async move { kv3.range(get("a")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting_put.is_finished() && !waiting_get.is_finished(),
        "calls without the metadata wait for a leader instead of failing"
    );

    // A leader again: both waiting calls complete, and the put is applied once.
    ms[1] = p.start(1, dir.path()).await;
    let put_done = tokio::time::timeout(Duration::from_secs(10), waiting_put)
        .await
        .expect("the waiting put is answered");
    put_done.expect("task").expect("the waiting put succeeds");
    let got = tokio::time::timeout(Duration::from_secs(10), waiting_get)
        .await
        .expect("the waiting read is answered")
        .expect("task")
        .expect("the waiting read succeeds")
        .into_inner();
    assert_eq!(got.count, 1);
    let r = kv.range(get("a")).await.expect("get").into_inner();
    assert_eq!(r.kvs[0].value, Bytes::from_static(b"2"));
    assert_eq!(r.kvs[0].version, 2, "the waiting put applied once");
    // The plain watch saw the put.
    let ev = next_response(&mut plain).await;
    assert_eq!(
        ev.events[0].kv.as_ref().expect("kv").value,
        Bytes::from_static(b"2")
    );
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_wal_dir_holds_the_wal_and_a_restart_recovers_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("fast-disk").join("wal");
    let mut p = plan(1).await;
    let dedicated = |c: &mut keel_runtime_tokio::member::MemberConfig| {
        c.wal_dir = Some(wal_dir.clone());
        c.snapshot_count = 50;
    };
    let mut m = p.start_with(0, dir.path(), dedicated).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    let mut kv = m.kv().await;
    for i in 0..120 {
        kv.put(put(&format!("w/{i:03}"), "v")).await.expect("put");
    }
    m.stop().await;
    let data_dir = dir.path().join(&p.members[0].name);
    assert!(
        !data_dir.join("member/wal").exists(),
        "no WAL in the data dir"
    );
    let wals = std::fs::read_dir(&wal_dir)
        .expect("the WAL dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .count();
    assert!(wals > 0, "WAL segments in --wal-dir");
    let snaps = std::fs::read_dir(data_dir.join("member/snap"))
        .expect("snapshots stay in the data dir")
        .count();
    assert!(snaps > 0, "a snapshot was saved in member/snap");

    let mut m = p.start_with(0, dir.path(), dedicated).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    let mut kv = m.kv().await;
    let all = pb::RangeRequest {
        key: Bytes::from_static(b"w/"),
        range_end: Bytes::from_static(b"w0"),
        count_only: true,
        ..Default::default()
    };
    let r = kv.range(all).await.expect("read").into_inner();
    assert_eq!(r.count, 120);
    assert_eq!(r.header.expect("header").revision, 121);
    m.stop().await;
}
