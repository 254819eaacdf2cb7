//! The response header of every RPC, as etcd 3.4's server sets it: present with every
//! field (`header.fill`), present without a revision (the Cluster service, a watch
//! canceled for compaction), or absent (Alarm, Defragment, MoveLeader, Snapshot).
//! Clients check for exactly this: the `etcd-client` crate's tests assert that
//! Defragment and MoveLeader carry none. MemberPromote answers through the same code as
//! MemberAdd, MemberUpdate and MemberRemove (a learner in sync would be needed to promote
//! one here); AuthStatus is etcd 3.5's, absent from 3.4.

mod common;

use bytes::Bytes;
use common::{get, plan, put, wait_leader};
use keel_runtime_tokio::pb::etcdserverpb as pb;
use keel_runtime_tokio::pb::v3electionpb as epb;
use keel_runtime_tokio::pb::v3lockpb as lpb;
use pb::ResponseHeader;
use tokio_stream::StreamExt;

/// What etcd 3.4 puts in one RPC's header.
#[derive(Debug, PartialEq)]
enum Shape {
    /// cluster, member, revision, raft term.
    Full,
    /// cluster, member, raft term; no revision.
    NoRevision,
    /// No header at all.
    Absent,
}

fn shape(h: Option<ResponseHeader>, member: u64) -> Shape {
    let Some(h) = h else {
        return Shape::Absent;
    };
    assert_eq!((h.cluster_id, h.member_id), (0xc1, member), "{h:?}");
    assert!(h.raft_term > 0, "{h:?}");
    if h.revision == 0 {
        Shape::NoRevision
    } else {
        Shape::Full
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_header_is_shaped_as_etcd_3_4_sets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (ms, urls) = p.start_all(dir.path(), |_| {}).await;
    let leader = wait_leader(&urls).await;
    let li = ms.iter().position(|m| m.id == leader).expect("leader");
    let (id, url) = (leader, urls[li].clone());
    let ch = common::channel(&url).await;
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut lease = pb::lease_client::LeaseClient::new(ch.clone());
    let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
    let mut mt = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let mut auth = pb::auth_client::AuthClient::new(ch.clone());
    let mut lock = lpb::lock_client::LockClient::new(ch.clone());
    let mut election = epb::election_client::ElectionClient::new(ch.clone());
    let mut seen: Vec<(&str, Shape)> = Vec::new();

    // KV.
    let r = kv.put(put("a", "1")).await.expect("put").into_inner();
    seen.push(("Put", shape(r.header, id)));
    kv.put(put("a", "2")).await.expect("put");
    let r = kv.range(get("a")).await.expect("range").into_inner();
    seen.push(("Range", shape(r.header, id)));
    let r = kv
        .txn(pb::TxnRequest::default())
        .await
        .expect("txn")
        .into_inner();
    seen.push(("Txn", shape(r.header, id)));
    let r = kv
        .delete_range(pb::DeleteRangeRequest {
            key: Bytes::from_static(b"nothere"),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    seen.push(("DeleteRange", shape(r.header, id)));
    let r = kv
        .compact(pb::CompactionRequest {
            revision: 3,
            physical: false,
        })
        .await
        .expect("compact")
        .into_inner();
    seen.push(("Compact", shape(r.header, id)));

    // Watch: created, then a watcher from a compacted revision.
    let mut w = pb::watch_client::WatchClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = |start_revision| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: Bytes::from_static(b"a"),
                start_revision,
                ..Default::default()
            },
        )),
    };
    tx.send(create(2)).await.expect("send");
    let mut stream = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = next(&mut stream).await;
    assert!(created.created);
    seen.push(("Watch created", shape(created.header, id)));
    let canceled = next(&mut stream).await;
    assert_eq!((canceled.canceled, canceled.compact_revision), (true, 3));
    seen.push(("Watch compacted", shape(canceled.header, id)));
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    })
    .await
    .expect("send");
    let progress = next(&mut stream).await;
    assert_eq!(progress.watch_id, -1);
    seen.push(("Watch progress", shape(progress.header, id)));

    // Lease.
    let r = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    seen.push(("LeaseGrant", shape(r.header, id)));
    let lid = r.id;
    let r = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: lid,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    seen.push(("LeaseTimeToLive", shape(r.header, id)));
    let r = lease
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    seen.push(("LeaseLeases", shape(r.header, id)));
    let mut ka = lease
        .lease_keep_alive(tokio_stream::iter([pb::LeaseKeepAliveRequest { id: lid }]))
        .await
        .expect("keepalive")
        .into_inner();
    let r = ka.next().await.expect("one").expect("ok");
    seen.push(("LeaseKeepAlive", shape(r.header, id)));

    // Lock and election (their headers are those of the calls they make).
    let r = lock
        .lock(lpb::LockRequest {
            name: Bytes::from_static(b"l"),
            lease: lid,
        })
        .await
        .expect("lock")
        .into_inner();
    seen.push(("Lock", shape(r.header, id)));
    let r = lock
        .unlock(lpb::UnlockRequest { key: r.key })
        .await
        .expect("unlock")
        .into_inner();
    seen.push(("Unlock", shape(r.header, id)));
    let r = election
        .campaign(epb::CampaignRequest {
            name: Bytes::from_static(b"e"),
            lease: lid,
            value: Bytes::from_static(b"v"),
        })
        .await
        .expect("campaign")
        .into_inner();
    seen.push(("Campaign", shape(r.header, id)));
    let elected = r.leader;
    let r = election
        .proclaim(epb::ProclaimRequest {
            leader: elected.clone(),
            value: Bytes::from_static(b"w"),
        })
        .await
        .expect("proclaim")
        .into_inner();
    seen.push(("Proclaim", shape(r.header, id)));
    let r = election
        .leader(epb::LeaderRequest {
            name: Bytes::from_static(b"e"),
        })
        .await
        .expect("leader")
        .into_inner();
    seen.push(("Leader", shape(r.header, id)));
    let mut observe = election
        .observe(epb::LeaderRequest {
            name: Bytes::from_static(b"e"),
        })
        .await
        .expect("observe")
        .into_inner();
    let r = observe.next().await.expect("observed").expect("ok");
    seen.push(("Observe", shape(r.header, id)));
    drop(observe);
    let r = election
        .resign(epb::ResignRequest { leader: elected })
        .await
        .expect("resign")
        .into_inner();
    seen.push(("Resign", shape(r.header, id)));
    let r = lease
        .lease_revoke(pb::LeaseRevokeRequest { id: lid })
        .await
        .expect("revoke")
        .into_inner();
    seen.push(("LeaseRevoke", shape(r.header, id)));

    // Cluster: no revision anywhere.
    let r = cluster
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .expect("list")
        .into_inner();
    seen.push(("MemberList", shape(r.header, id)));
    let r = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .expect("add")
        .into_inner();
    seen.push(("MemberAdd", shape(r.header, id)));
    let learner = r.member.expect("member").id;
    let r = cluster
        .member_update(pb::MemberUpdateRequest {
            id: learner,
            peer_ur_ls: vec!["http://127.0.0.1:2".into()],
        })
        .await
        .expect("update")
        .into_inner();
    seen.push(("MemberUpdate", shape(r.header, id)));
    let r = cluster
        .member_remove(pb::MemberRemoveRequest { id: learner })
        .await
        .expect("remove")
        .into_inner();
    seen.push(("MemberRemove", shape(r.header, id)));

    // Maintenance.
    let r = mt
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    seen.push(("Status", shape(r.header, id)));
    let r = mt
        .hash(pb::HashRequest {})
        .await
        .expect("hash")
        .into_inner();
    seen.push(("Hash", shape(r.header, id)));
    let r = mt
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .expect("hashkv")
        .into_inner();
    seen.push(("HashKV", shape(r.header, id)));
    let r = mt
        .alarm(pb::AlarmRequest::default())
        .await
        .expect("alarm")
        .into_inner();
    seen.push(("Alarm", shape(r.header, id)));
    let r = mt
        .defragment(pb::DefragmentRequest {})
        .await
        .expect("defrag")
        .into_inner();
    seen.push(("Defragment", shape(r.header, id)));
    let mut snap = mt
        .snapshot(pb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let r = snap.next().await.expect("chunk").expect("ok");
    seen.push(("Snapshot", shape(r.header, id)));
    let target = ms.iter().find(|m| m.id != leader).expect("follower").id;
    let r = mt
        .move_leader(pb::MoveLeaderRequest { target_id: target })
        .await
        .expect("move-leader")
        .into_inner();
    seen.push(("MoveLeader", shape(r.header, id)));

    // Auth (proposals: this member, a follower now, forwards them inside raft).
    let r = auth
        .user_add(pb::AuthUserAddRequest {
            name: "u".into(),
            password: "p".into(),
            ..Default::default()
        })
        .await
        .expect("user add")
        .into_inner();
    seen.push(("UserAdd", shape(r.header, id)));
    let r = auth
        .user_list(pb::AuthUserListRequest {})
        .await
        .expect("user list")
        .into_inner();
    seen.push(("UserList", shape(r.header, id)));
    let r = auth
        .user_get(pb::AuthUserGetRequest { name: "u".into() })
        .await
        .expect("user get")
        .into_inner();
    seen.push(("UserGet", shape(r.header, id)));
    let r = auth
        .user_change_password(pb::AuthUserChangePasswordRequest {
            name: "u".into(),
            password: "q".into(),
            ..Default::default()
        })
        .await
        .expect("change password")
        .into_inner();
    seen.push(("UserChangePassword", shape(r.header, id)));
    for role in ["r", "root"] {
        let r = auth
            .role_add(pb::AuthRoleAddRequest { name: role.into() })
            .await
            .expect("role add")
            .into_inner();
        seen.push(("RoleAdd", shape(r.header, id)));
    }
    let r = auth
        .role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(keel_runtime_tokio::pb::authpb::Permission {
                perm_type: 0,
                key: Bytes::from_static(b"a"),
                range_end: Bytes::new(),
            }),
        })
        .await
        .expect("grant permission")
        .into_inner();
    seen.push(("RoleGrantPermission", shape(r.header, id)));
    let r = auth
        .role_get(pb::AuthRoleGetRequest { role: "r".into() })
        .await
        .expect("role get")
        .into_inner();
    seen.push(("RoleGet", shape(r.header, id)));
    let r = auth
        .role_list(pb::AuthRoleListRequest {})
        .await
        .expect("role list")
        .into_inner();
    seen.push(("RoleList", shape(r.header, id)));
    let r = auth
        .role_revoke_permission(pb::AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: Bytes::from_static(b"a"),
            range_end: Bytes::new(),
        })
        .await
        .expect("revoke permission")
        .into_inner();
    seen.push(("RoleRevokePermission", shape(r.header, id)));
    let r = auth
        .user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "u".into(),
            role: "r".into(),
        })
        .await
        .expect("grant role")
        .into_inner();
    seen.push(("UserGrantRole", shape(r.header, id)));
    let r = auth
        .user_revoke_role(pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        })
        .await
        .expect("revoke role")
        .into_inner();
    seen.push(("UserRevokeRole", shape(r.header, id)));
    auth.user_add(pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    })
    .await
    .expect("root");
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .expect("root role");
    let r = auth
        .auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("auth enable")
        .into_inner();
    seen.push(("AuthEnable", shape(r.header, id)));
    let r = auth
        .authenticate(pb::AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        })
        .await
        .expect("authenticate")
        .into_inner();
    seen.push(("Authenticate", shape(r.header, id)));
    let as_root = |token: &str| {
        let mut req = tonic::Request::new(pb::AuthDisableRequest {});
        req.metadata_mut()
            .insert("token", token.parse().expect("token metadata"));
        req
    };
    let r = auth
        .auth_disable(as_root(&r.token))
        .await
        .expect("auth disable")
        .into_inner();
    seen.push(("AuthDisable", shape(r.header, id)));
    let r = auth
        .user_delete(pb::AuthUserDeleteRequest { name: "u".into() })
        .await
        .expect("user delete")
        .into_inner();
    seen.push(("UserDelete", shape(r.header, id)));
    let r = auth
        .role_delete(pb::AuthRoleDeleteRequest { role: "r".into() })
        .await
        .expect("role delete")
        .into_inner();
    seen.push(("RoleDelete", shape(r.header, id)));

    use Shape::*;
    let expected = [
        ("Put", Full),
        ("Range", Full),
        ("Txn", Full),
        ("DeleteRange", Full),
        ("Compact", Full),
        ("Watch created", Full),
        ("Watch compacted", NoRevision),
        ("Watch progress", Full),
        ("LeaseGrant", Full),
        ("LeaseTimeToLive", Full),
        ("LeaseLeases", Full),
        ("LeaseKeepAlive", Full),
        ("Lock", Full),
        ("Unlock", Full),
        ("Campaign", Full),
        ("Proclaim", Full),
        ("Leader", Full),
        ("Observe", Full),
        ("Resign", Full),
        ("LeaseRevoke", Full),
        ("MemberList", NoRevision),
        ("MemberAdd", NoRevision),
        ("MemberUpdate", NoRevision),
        ("MemberRemove", NoRevision),
        ("Status", Full),
        ("Hash", Full),
        ("HashKV", Full),
        ("Alarm", Absent),
        ("Defragment", Absent),
        ("Snapshot", Absent),
        ("MoveLeader", Absent),
        ("UserAdd", Full),
        ("UserList", Full),
        ("UserGet", Full),
        ("UserChangePassword", Full),
        ("RoleAdd", Full),
        ("RoleAdd", Full),
        ("RoleGrantPermission", Full),
        ("RoleGet", Full),
        ("RoleList", Full),
        ("RoleRevokePermission", Full),
        ("UserGrantRole", Full),
        ("UserRevokeRole", Full),
        ("AuthEnable", Full),
        ("Authenticate", Full),
        ("AuthDisable", Full),
        ("UserDelete", Full),
        ("RoleDelete", Full),
    ];
    assert_eq!(seen, expected);
}

async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok")
}
