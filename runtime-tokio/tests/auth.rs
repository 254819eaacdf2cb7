//! etcd's auth API through gRPC on in-process members: users, roles and permissions,
//! enabling auth, tokens (etcd's `<prefix>.<index>` simple tokens, malformed ones
//! refused; issued by one member, honoured by all, by a lagging follower once it applied
//! the login, and across a leader change; stale after any auth change; expired after
//! their TTL), permission checks on each kind of request (KV, watch, lease, lock,
//! election, maintenance, AuthStatus) with etcd's codes and texts, auth state across a
//! restart, and a brute force of wrong passwords.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{get, plan, put, wait_leader};
use keel_runtime_tokio::member::MemberHandle;
use keel_runtime_tokio::pb::authpb;
use keel_runtime_tokio::pb::etcdserverpb as pb;
use keel_runtime_tokio::pb::{v3electionpb, v3lockpb};
use pb::auth_client::AuthClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use pb::watch_client::WatchClient;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use v3electionpb::election_client::ElectionClient;
use v3lockpb::lock_client::LockClient;

const USER_EMPTY: &str = "etcdserver: user name is empty";
const DENIED: &str = "etcdserver: permission denied";
const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";
const INVALID_TOKEN: &str = "etcdserver: invalid auth token";
const OLD_REVISION: &str = "etcdserver: revision of auth store is old";

/// `r` carrying `token` as etcd's clients send it.
fn with<T>(token: &str, r: T) -> Request<T> {
    let mut req = Request::new(r);
    req.metadata_mut()
        .insert("token", token.parse().expect("token metadata"));
    req
}

fn prefix(k: &str) -> pb::RangeRequest {
    let mut end = k.as_bytes().to_vec();
    *end.last_mut().expect("non-empty") += 1;
    pb::RangeRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        range_end: end.into(),
        ..Default::default()
    }
}

fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, msg: &str) {
    let e = r.expect_err(msg);
    assert_eq!((e.code(), e.message()), (code, msg), "{e:?}");
}

/// etcd's simple token: 16 letters, a dot, the raft index of the Authenticate entry.
fn assert_simple_token(token: &str) {
    let (prefix, index) = token.split_once('.').expect("a dot");
    assert!(
        prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_alphabetic()),
        "{token}"
    );
    assert!(index.parse::<u64>().is_ok_and(|i| i > 0), "{token}");
}

async fn auth(url: &str) -> AuthClient<tonic::transport::Channel> {
    AuthClient::new(common::channel(url).await)
}

async fn login(url: &str, name: &str, password: &str) -> Result<String, tonic::Status> {
    auth(url)
        .await
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner().token)
}

/// root (with the root role), alice (reads `/pub/`, writes `/pub/alice/`), and auth on.
async fn set_up(url: &str) {
    let mut a = auth(url).await;
    for (name, password) in [("root", "rootpw"), ("alice", "apw")] {
        a.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    for role in ["root", "reader"] {
        a.role_add(pb::AuthRoleAddRequest { name: role.into() })
            .await
            .expect("role add");
    }
    for (kind, key, end) in [
        (authpb::permission::Type::Read, "/pub/", "/pub0"),
        (
            authpb::permission::Type::Readwrite,
            "/pub/alice/",
            "/pub/alice0",
        ),
    ] {
        a.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "reader".into(),
            perm: Some(authpb::Permission {
                perm_type: kind as i32,
                key: Bytes::copy_from_slice(key.as_bytes()),
                range_end: Bytes::copy_from_slice(end.as_bytes()),
            }),
        })
        .await
        .expect("grant permission");
    }
    for (user, role) in [("root", "root"), ("alice", "reader")] {
        a.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .expect("grant role");
    }
    a.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("auth enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_checked_on_every_kind_of_request_with_etcds_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(dir.path(), |_| {}).await;
    wait_leader(&urls).await;
    let url = &urls[0];

    // Before auth is on, Authenticate is refused and requests need no token.
    assert_status(
        login(url, "root", "x").await,
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    );
    set_up(url).await;

    // No token; a wrong password; a forged token.
    let mut kv = KvClient::new(common::channel(url).await);
    assert_status(
        kv.range(get("/pub/a")).await,
        Code::InvalidArgument,
        USER_EMPTY,
    );
    assert_status(
        kv.put(put("/pub/a", "v")).await,
        Code::InvalidArgument,
        USER_EMPTY,
    );
    assert_status(
        login(url, "alice", "wrong").await,
        Code::InvalidArgument,
        AUTH_FAILED,
    );
    assert_status(
        login(url, "nobody", "x").await,
        Code::InvalidArgument,
        AUTH_FAILED,
    );
    assert_status(
        kv.range(with("forged.1", get("/pub/a"))).await,
        Code::Unauthenticated,
        INVALID_TOKEN,
    );

    let root = login(url, "root", "rootpw").await.expect("root login");
    let alice = login(url, "alice", "apw").await.expect("alice login");
    assert_simple_token(&root);
    assert_simple_token(&alice);
    // etcd's isValidSimpleToken: one dot, a number after it.
    for malformed in [
        "abcdefghijklmnop",
        "abc.x",
        "abc.1.2",
        &format!("{alice}0.1"),
    ] {
        assert_status(
            kv.range(with(malformed, get("/pub/a"))).await,
            Code::Unauthenticated,
            INVALID_TOKEN,
        );
    }
    kv.put(with(&root, put("/pub/a", "1")))
        .await
        .expect("root writes");
    kv.put(with(&root, put("secret", "s")))
        .await
        .expect("root writes");

    // A token issued through one member is honoured by every member.
    for u in &urls {
        let mut kv = KvClient::new(common::channel(u).await);
        let r = kv
            .range(with(&alice, prefix("/pub/")))
            .await
            .expect("alice reads /pub/")
            .into_inner();
        assert_eq!(r.count, 1, "at {u}");
    }
    // Range: inside the permission, across its edge, outside it.
    assert_status(
        kv.range(with(&alice, get("secret"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_status(
        kv.range(with(&alice, prefix("/pub"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    // Put and delete: only under /pub/alice/.
    kv.put(with(&alice, put("/pub/alice/x", "mine")))
        .await
        .expect("alice writes her keys");
    assert_status(
        kv.put(with(&alice, put("/pub/a", "v"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_status(
        kv.delete_range(with(
            &alice,
            pb::DeleteRangeRequest {
                key: "/pub/a".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
        DENIED,
    );
    // Txn: a forbidden key in the branch that is not taken still refuses it.
    let txn = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put(
                "/pub/alice/y",
                "ok",
            ))),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put("secret", "mine"))),
        }],
    };
    assert_status(
        kv.txn(with(&alice, txn)).await,
        Code::PermissionDenied,
        DENIED,
    );
    let read_only = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(get("secret"))),
        }],
        ..Default::default()
    };
    assert_status(
        kv.txn(with(&alice, read_only)).await,
        Code::PermissionDenied,
        DENIED,
    );
    let r = kv
        .range(with(&root, get("secret")))
        .await
        .expect("root")
        .into_inner();
    assert_eq!(&r.kvs[0].value[..], b"s", "refused writes changed nothing");

    // Watch: refused with etcd's created-and-canceled answer.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: "secret".into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("send");
    let mut stream = WatchClient::new(common::channel(url).await)
        .watch(with(
            &alice,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .expect("watch stream")
        .into_inner();
    let w = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("in time")
        .expect("answer")
        .expect("ok");
    assert!(w.created && w.canceled);
    assert_eq!(
        w.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );

    // Lease revoke needs write permission on the keys attached.
    let mut lease = LeaseClient::new(common::channel(url).await);
    let id = lease
        .lease_grant(with(&alice, pb::LeaseGrantRequest { ttl: 60, id: 0 }))
        .await
        .expect("any user may grant")
        .into_inner()
        .id;
    let mut leased = put("secret2", "x");
    leased.lease = id;
    kv.put(with(&root, leased)).await.expect("root attaches");
    assert_status(
        lease
            .lease_revoke(with(&alice, pb::LeaseRevokeRequest { id }))
            .await,
        Code::PermissionDenied,
        DENIED,
    );

    // Maintenance and user management are root's.
    let mut mt = MaintenanceClient::new(common::channel(url).await);
    assert_status(
        mt.hash_kv(with(&alice, pb::HashKvRequest { revision: 0 }))
            .await,
        Code::Unknown,
        "auth: permission denied",
    );
    mt.hash_kv(with(&root, pb::HashKvRequest { revision: 0 }))
        .await
        .expect("root hashes");
    assert_status(
        mt.hash(with(&alice, pb::HashRequest {})).await,
        Code::Unknown,
        "auth: permission denied",
    );
    mt.hash(with(&root, pb::HashRequest {}))
        .await
        .expect("root hashes");
    // etcd 3.4 lets anyone ask (etcd 3.6 checks it): keel refuses non-root, with the
    // text of 3.4's other root-only maintenance calls, before looking at the target.
    assert_status(
        mt.move_leader(with(&alice, pb::MoveLeaderRequest { target_id: 1 }))
            .await,
        Code::Unknown,
        "auth: permission denied",
    );
    assert_status(
        mt.move_leader(pb::MoveLeaderRequest { target_id: 1 }).await,
        Code::Unknown,
        "auth: user name is empty",
    );
    recipes_need_write_permission_on_their_prefix(url, &alice).await;
    let mut a = auth(url).await;
    assert_status(
        a.user_add(with(
            &alice,
            pb::AuthUserAddRequest {
                name: "bob".into(),
                password: "b".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_status(
        a.user_delete(with(
            &root,
            pb::AuthUserDeleteRequest {
                name: "root".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
        "etcdserver: invalid auth management",
    );
    // AuthStatus is root's too (etcd 3.5, which added it, lists it in
    // needAdminPermission).
    assert_status(
        a.auth_status(pb::AuthStatusRequest {}).await,
        Code::InvalidArgument,
        USER_EMPTY,
    );
    assert_status(
        a.auth_status(with(&alice, pb::AuthStatusRequest {})).await,
        Code::PermissionDenied,
        DENIED,
    );
    let status = a
        .auth_status(with(&root, pb::AuthStatusRequest {}))
        .await
        .expect("root reads the auth status")
        .into_inner();
    assert!(status.enabled && status.auth_revision > 0, "{status:?}");
    let own = a
        .user_get(with(
            &alice,
            pb::AuthUserGetRequest {
                name: "alice".into(),
            },
        ))
        .await
        .expect("a user reads itself")
        .into_inner();
    assert_eq!(own.roles, vec!["reader".to_string()]);

    // A simple token is checked against the store as it is now (etcd): revoking the
    // role takes effect on alice's next request, without a new login.
    a.user_revoke_role(with(
        &root,
        pb::AuthUserRevokeRoleRequest {
            name: "alice".into(),
            role: "reader".into(),
        },
    ))
    .await
    .expect("revoke");
    assert_status(
        kv.range(with(&alice, get("/pub/a"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    // A changed password drops the user's tokens on every member, each as it applies the
    // change (a follower may apply it a little after the proposer answered).
    a.user_change_password(with(
        &root,
        pb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("change password");
    for u in &urls {
        let mut kv = KvClient::new(common::channel(u).await);
        let mut r = kv.range(with(&alice, get("/pub/a"))).await;
        for _ in 0..100 {
            if r.as_ref().is_err_and(|e| e.code() == Code::Unauthenticated) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            r = kv.range(with(&alice, get("/pub/a"))).await;
        }
        assert_status(r, Code::Unauthenticated, INVALID_TOKEN);
    }
    assert_status(
        login(url, "alice", "apw").await,
        Code::InvalidArgument,
        AUTH_FAILED,
    );
    login(url, "alice", "new").await.expect("the new password");

    // Disabled: no token needed again.
    let root = login(url, "root", "rootpw").await.expect("root login");
    a.auth_disable(with(&root, pb::AuthDisableRequest {}))
        .await
        .expect("disable");
    kv.range(get("secret")).await.expect("auth off");
    for m in &mut ms {
        m.stop().await;
    }
}

/// etcd's v3lock and v3election run their recipes as the caller (KV requests carrying
/// its token): a name under a prefix the caller may only read is refused with the KV
/// permission error; under one it may read and write, the recipe runs.
async fn recipes_need_write_permission_on_their_prefix(url: &str, alice: &str) {
    let ch = common::channel(url).await;
    let mut lock = LockClient::new(ch.clone());
    let mut election = ElectionClient::new(ch.clone());
    let lease = LeaseClient::new(ch)
        .lease_grant(with(alice, pb::LeaseGrantRequest { ttl: 60, id: 0 }))
        .await
        .expect("lease")
        .into_inner()
        .id;
    let lock_req = |name: &str| v3lockpb::LockRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
    };
    let campaign = |name: &str| v3electionpb::CampaignRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
        value: "me".into(),
    };
    assert_status(
        lock.lock(with(alice, lock_req("/pub/l"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_status(
        election.campaign(with(alice, campaign("/pub/e"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    assert_status(
        lock.lock(lock_req("/pub/alice/l")).await,
        Code::InvalidArgument,
        USER_EMPTY,
    );
    let held = lock
        .lock(with(alice, lock_req("/pub/alice/l")))
        .await
        .expect("alice locks under her prefix")
        .into_inner()
        .key;
    assert!(held.starts_with(b"/pub/alice/l/"), "{held:?}");
    lock.unlock(with(alice, v3lockpb::UnlockRequest { key: held }))
        .await
        .expect("unlock");
    let won = election
        .campaign(with(alice, campaign("/pub/alice/e")))
        .await
        .expect("alice campaigns under her prefix")
        .into_inner()
        .leader
        .expect("leader key");
    assert!(won.key.starts_with(b"/pub/alice/e/"), "{won:?}");
    let leader = election
        .leader(with(
            alice,
            v3electionpb::LeaderRequest {
                name: "/pub/alice/e".into(),
            },
        ))
        .await
        .expect("leader")
        .into_inner();
    assert_eq!(leader.kv.map(|kv| kv.value), Some(Bytes::from("me")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_survives_a_leader_change_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(dir.path(), |_| {}).await;
    let leader = wait_leader(&urls).await;
    set_up(&urls[0]).await;
    // Issued through the leader, recorded by every member as the entry applied.
    let gone = ms.iter().position(|m| m.id == leader).expect("leader");
    let before = login(&urls[gone], "alice", "apw")
        .await
        .expect("login before the change");

    // The leader goes; the others elect a new one with the same auth state.
    ms[gone].stop().await;
    let rest: Vec<String> = (0..3)
        .filter(|i| *i != gone)
        .map(|i| urls[i].clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while wait_leader(&rest).await == leader {
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The token from before the change still works on the members that remain.
    for u in &rest {
        let mut kv = KvClient::new(common::channel(u).await);
        kv.range(with(&before, get("/pub/a")))
            .await
            .expect("a token issued before the leader change");
    }
    let alice = login(&rest[0], "alice", "apw")
        .await
        .expect("login after the change");
    let mut kv = KvClient::new(common::channel(&rest[1]).await);
    kv.put(with(&alice, put("/pub/alice/after", "1")))
        .await
        .expect("allowed");
    assert_status(
        kv.put(with(&alice, put("secret", "v"))).await,
        Code::PermissionDenied,
        DENIED,
    );

    // Every member restarts from its data dir: users, roles and "enabled" survive.
    for (i, m) in ms.iter_mut().enumerate() {
        if i != gone {
            m.stop().await;
        }
    }
    for (i, m) in ms.iter_mut().enumerate() {
        *m = p.start(i, dir.path()).await;
    }
    wait_leader(&urls).await;
    let mut kv = KvClient::new(common::channel(&urls[2]).await);
    assert_status(
        kv.range(get("/pub/alice/after")).await,
        Code::InvalidArgument,
        USER_EMPTY,
    );
    let alice = login(&urls[2], "alice", "apw")
        .await
        .expect("login after restart");
    let r = kv
        .range(with(&alice, get("/pub/alice/after")))
        .await
        .expect("allowed after restart")
        .into_inner();
    assert_eq!(r.count, 1);
    assert_status(
        kv.range(with(&alice, get("secret"))).await,
        Code::PermissionDenied,
        DENIED,
    );
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_follower_behind_the_login_waits_to_apply_it_instead_of_refusing_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (handles_tx, handles) = std::sync::mpsc::channel::<MemberHandle>();
    let mut ms = Vec::new();
    for i in 0..3 {
        let tx = handles_tx.clone();
        let on_ready = move |h: &MemberHandle| {
            let _ = tx.send(h.clone());
        };
        ms.push(p.start_with_ready(i, dir.path(), |_| {}, on_ready).await);
    }
    let urls: Vec<String> = ms.iter().map(|m| m.client_url.clone()).collect();
    let leader = wait_leader(&urls).await;
    set_up(&urls[0]).await;
    let lagging = (0..3)
        .map(|_| {
            handles
                .recv_timeout(Duration::from_secs(10))
                .expect("handle")
        })
        .find(|h| h.id != leader)
        .expect("a follower");
    let at = ms.iter().position(|m| m.id == lagging.id).expect("member");
    let login_at = ms.iter().position(|m| m.id == leader).expect("leader");

    // The follower's task stalls (as under a slow disk) while the others commit the
    // login; the token reaches it before it applied the Authenticate entry.
    let (stalled_tx, stalled) = tokio::sync::oneshot::channel();
    let stall = tokio::spawn(async move {
        lagging
            .local(move |_| {
                let _ = stalled_tx.send(());
                std::thread::sleep(Duration::from_millis(1500));
            })
            .await
    });
    stalled.await.expect("the follower stalls");
    let alice = login(&urls[login_at], "alice", "apw")
        .await
        .expect("login while a follower stalls");
    assert!(
        !stall.is_finished(),
        "the follower caught up before the test"
    );
    let mut kv = KvClient::new(common::channel(&urls[at]).await);
    kv.range(with(&alice, get("/pub/a")))
        .await
        .expect("the lagging follower honours the fresh token");
    stall.await.expect("stall").expect("member");
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_carry_their_revision_and_go_stale_on_any_auth_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let key_path = dir.path().join("jwt.key");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let spec = format!("jwt,priv-key={},sign-method=ES256", key_path.display());
    let mut p = plan(3).await;
    let (mut ms, urls) = p
        .start_all(dir.path(), |c| c.auth_token = spec.clone())
        .await;
    wait_leader(&urls).await;
    set_up(&urls[0]).await;
    let alice = login(&urls[0], "alice", "apw").await.expect("login");
    assert_eq!(alice.split('.').count(), 3, "a JWT: {alice}");
    // Signed by one member, verified by every member (they share the key).
    for u in &urls {
        let mut kv = KvClient::new(common::channel(u).await);
        kv.range(with(&alice, get("/pub/a")))
            .await
            .expect("alice reads");
    }
    let root = login(&urls[1], "root", "rootpw").await.expect("root");
    auth(&urls[1])
        .await
        .role_add(with(
            &root,
            pb::AuthRoleAddRequest {
                name: "other".into(),
            },
        ))
        .await
        .expect("an auth change");
    let mut kv = KvClient::new(common::channel(&urls[2]).await);
    assert_status(
        kv.range(with(&alice, get("/pub/a"))).await,
        Code::InvalidArgument,
        OLD_REVISION,
    );
    let alice = login(&urls[2], "alice", "apw").await.expect("login again");
    kv.range(with(&alice, get("/pub/a")))
        .await
        .expect("a fresh token works");
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tokens_expire_after_their_ttl_unless_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p
        .start_with(0, dir.path(), |c| c.auth_token_ttl = Duration::from_secs(1))
        .await;
    wait_leader(&[m.client_url.clone()]).await;
    set_up(&m.client_url).await;
    let alice = login(&m.client_url, "alice", "apw").await.expect("login");
    let mut kv = m.kv().await;
    // Used every 300 ms, the token outlives its TTL; idle for 2.5 s, it is gone.
    for _ in 0..6 {
        kv.range(with(&alice, get("/pub/a"))).await.expect("in use");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_status(
        kv.range(with(&alice, get("/pub/a"))).await,
        Code::Unauthenticated,
        INVALID_TOKEN,
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_of_wrong_passwords_is_slowed_and_the_member_keeps_serving() {
    const COST: u32 = 8;
    const TRIES: usize = 24;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start_with(0, dir.path(), |c| c.bcrypt_cost = COST).await;
    let url = m.client_url.clone();
    wait_leader(std::slice::from_ref(&url)).await;
    set_up(&url).await;
    let root = login(&url, "root", "rootpw").await.expect("root");

    // One verification at this cost, at best (the least noisy of three).
    let passwords = keel_runtime_tokio::auth::Passwords::new(COST);
    let hash = passwords.hash("pw".into()).await.expect("hash");
    let mut one = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        assert!(!passwords.verify("nope".into(), hash.clone()).await);
        one = one.min(t.elapsed());
    }

    let started = Instant::now();
    let attempts: Vec<_> = (0..TRIES)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { login(&url, "alice", &format!("guess{i}")).await })
        })
        .collect();
    // Meanwhile the member answers writes.
    let mut kv = KvClient::new(common::channel(&url).await);
    kv.put(with(&root, put("/pub/during", "ok")))
        .await
        .expect("served during the brute force");
    for a in attempts {
        assert_status(a.await.expect("task"), Code::InvalidArgument, AUTH_FAILED);
    }
    // Every guess paid for a real bcrypt check: the guesses took a good part of their
    // serial bcrypt time. With the cap of two on a two-core machine they take about
    // half of it, and `one` is itself noisy, so the bound is a quarter; a login that
    // skipped or cached the check would take a few milliseconds. The cap itself is
    // checked exactly by the unit test `checks_never_run_beyond_the_cap`.
    let took = started.elapsed();
    assert!(
        took >= one * (TRIES as u32) / 4,
        "{TRIES} guesses in {took:?}, one verification takes {one:?}"
    );
    login(&url, "alice", "apw")
        .await
        .expect("the right password still works");
    m.stop().await;
}
