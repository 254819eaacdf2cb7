//! etcd's v2 auth API (`--enable-v2`) over HTTP on members on loopback: the exact
//! bodies, statuses and headers etcd 3.4.23 answers (captured from it), the permission
//! checks of the keys and members APIs with Basic credentials, the state surviving a
//! restart, and users made through one member of a cluster checked on another.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{plan, wait_leader, Running};
use http_body_util::BodyExt;
use hyper::header::HeaderMap;

/// An HTTP answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts status and body, the JSON content type, and whether the cluster ID
    /// header is there (etcd sets it only once its handler passed the auth check).
    #[track_caller]
    fn is(&self, status: u16, body: &str, cluster_id: bool) {
        assert_eq!((self.status, self.body.as_str()), (status, body));
        assert_eq!(self.header("content-type"), "application/json");
        let want = if cluster_id { "c1" } else { "" };
        assert_eq!(
            self.header("x-etcd-cluster-id"),
            want,
            "cluster ID of {body}"
        );
        assert_eq!(
            self.header("www-authenticate"),
            "",
            "etcd sends no challenge"
        );
    }
}

/// Credentials for a request.
#[derive(Clone, Copy)]
enum Who<'a> {
    Guest,
    User(&'a str, &'a str),
    Raw(&'a str),
}

const ROOT: Who = Who::User("root", "rootpw");

async fn call(base: &str, method: &str, path: &str, who: Who<'_>, body: &str) -> Resp {
    let basic;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    match who {
        Who::Guest => {}
        Who::User(u, p) => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            basic = format!("Basic {token}");
            headers.push(("authorization", &basic));
        }
        Who::Raw(h) => headers.push(("authorization", h)),
    }
    if path.starts_with("/v2/keys") && !body.is_empty() {
        headers.push(("content-type", "application/x-www-form-urlencoded"));
    }
    let (status, headers, body, _conn) = common::http1(base, method, path, &headers, body).await;
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

/// etcd's `{"message":...}`, written by `json.Marshal` (no newline).
fn message(text: &str) -> String {
    format!("{{\"message\":\"{text}\"}}")
}

const ROOT_ROLE: &str = r#"{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}"#;
const GUEST_ROLE: &str = r#"{"role":"guest","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}"#;
const NO_AUTH: &str = "{\"errorCode\":110,\"message\":\"The request requires user authentication\",\"cause\":\"Insufficient credentials\",\"index\":0}\n";

async fn single(dir: &std::path::Path) -> (common::Plan, Running) {
    let mut p = plan(1).await;
    let m = p.start_with(0, dir, |c| c.enable_v2 = true).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    (p, m)
}

/// Root, alice (role reader: read `/pub/*`; role writer: write `/pub/*` and `/priv`),
/// auth enabled.
async fn populate(u: &str) {
    for (path, body) in [
        (
            "/v2/auth/users/root",
            r#"{"user":"root","password":"rootpw"}"#,
        ),
        (
            "/v2/auth/users/alice",
            r#"{"user":"alice","password":"apw"}"#,
        ),
        ("/v2/auth/roles/reader", r#"{"role":"reader"}"#),
        ("/v2/auth/roles/writer", r#"{"role":"writer"}"#),
    ] {
        let r = call(u, "PUT", path, Who::Guest, body).await;
        assert_eq!(r.status, 201, "{path}: {}", r.body);
    }
    for (path, body) in [
        (
            "/v2/auth/roles/reader",
            r#"{"role":"reader","grant":{"kv":{"read":["/pub/*"]}}}"#,
        ),
        (
            "/v2/auth/roles/writer",
            r#"{"role":"writer","grant":{"kv":{"write":["/pub/*","/priv"]}}}"#,
        ),
        (
            "/v2/auth/users/alice",
            r#"{"user":"alice","grant":["reader","writer"]}"#,
        ),
    ] {
        let r = call(u, "PUT", path, Who::Guest, body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let r = call(u, "PUT", "/v2/keys/pub/a", Who::Guest, "value=1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    call(u, "PUT", "/v2/auth/enable", Who::Guest, "")
        .await
        .is(200, "", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_api_answers_like_etcd() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let get = |path: &'static str, who: Who<'static>| {
        let u = u.clone();
        async move { call(&u, "GET", path, who, "").await }
    };

    // Nothing stored: auth off, no users, the built-in root role.
    get("/v2/auth/enable", Who::Guest)
        .await
        .is(200, "{\"enabled\":false}\n", true);
    get("/v2/auth/users", Who::Guest)
        .await
        .is(200, "{\"users\":null}\n", true);
    get("/v2/auth/roles", Who::Guest).await.is(
        200,
        &format!("{{\"roles\":[{ROOT_ROLE}]}}\n"),
        true,
    );
    call(&u, "PUT", "/v2/auth/enable", Who::Guest, "").await.is(
        409,
        &message("auth: No root user available, please create one"),
        true,
    );

    // Users: a create answers 201 without the password; the root user gets the root role.
    let put_user = |name: &'static str, body: &'static str| {
        let u = u.clone();
        async move {
            call(
                &u,
                "PUT",
                &format!("/v2/auth/users/{name}"),
                Who::Guest,
                body,
            )
            .await
        }
    };
    put_user("root", r#"{"user":"root","password":"rootpw"}"#)
        .await
        .is(201, "{\"user\":\"root\",\"roles\":[\"root\"]}\n", true);
    put_user("alice", r#"{"user":"alice","password":"apw","roles":null}"#)
        .await
        .is(201, "{\"user\":\"alice\",\"roles\":null}\n", true);
    // The same with nothing to change: nil roles become an empty list, which counts.
    put_user("alice", r#"{"user":"alice"}"#).await.is(
        200,
        "{\"user\":\"alice\",\"roles\":[]}\n",
        true,
    );
    put_user("alice", r#"{"user":"alice"}"#).await.is(
        400,
        &message("auth: User not updated. Use grant/revoke/password to update the user."),
        true,
    );
    put_user("bob", r#"{"user":"bob"}"#).await.is(
        400,
        &message("auth: Cannot create user bob with an empty password"),
        true,
    );
    put_user("bob", r#"{"user":"bob","grant":["r"]}"#).await.is(
        404,
        &message("auth: User bob does not exist."),
        true,
    );
    put_user("bob", r#"{"user":"x","password":"p"}"#).await.is(
        400,
        &message("User JSON name does not match the name in the URL"),
        true,
    );
    put_user(
        "bob",
        r#"{"user":"bob","password":"p","roles":["a"],"grant":["b"]}"#,
    )
    .await
    .is(
        400,
        &message("User JSON contains both roles and grant/revoke"),
        true,
    );
    put_user("bob", "")
        .await
        .is(400, &message("Invalid JSON in request body."), true);
    // A create with roles answers 200 (etcd says 201 only from create-or-update).
    put_user(
        "bob",
        r#"{"User":"bob","passWord":"p","roles":["z","y","z"]}{trailing"#,
    )
    .await
    .is(
        200,
        "{\"user\":\"bob\",\"roles\":[\"z\",\"y\",\"z\"]}\n",
        true,
    );
    put_user("bob", r#"{"user":"bob","password":"p","roles":["y"]}"#)
        .await
        .is(409, &message("auth: User bob already exists."), true);
    put_user("bob", r#"{"user":"bob","grant":["%d%%"]}"#)
        .await
        .is(
            200,
            "{\"user\":\"bob\",\"roles\":[\"%d%%\",\"y\",\"z\"]}\n",
            true,
        );
    put_user("bob", r#"{"user":"bob","grant":["%d%%"]}"#)
        .await
        .is(
            409,
            &message("auth: Granting duplicate role %!d(MISSING)% for user bob"),
            true,
        );
    put_user("bob", r#"{"user":"bob","revoke":["q"]}"#)
        .await
        .is(
            409,
            &message("auth: Revoking ungranted role q for user bob"),
            true,
        );
    // A user naming a role that does not exist cannot be shown alone; listed, the role
    // is skipped.
    get("/v2/auth/users/bob", Who::Guest).await.is(
        404,
        &message("auth: Role %d%% does not exist."),
        true,
    );
    get("/v2/auth/users/nosuch", Who::Guest).await.is(
        404,
        &message("auth: User nosuch does not exist."),
        true,
    );
    get("/v2/auth/users", Who::Guest).await.is(
        200,
        &format!("{{\"users\":[{{\"user\":\"alice\"}},{{\"user\":\"bob\"}},{{\"user\":\"root\",\"roles\":[{ROOT_ROLE}]}}]}}\n"),
        true,
    );
    call(&u, "DELETE", "/v2/auth/users/bob", Who::Guest, "")
        .await
        .is(200, "", true);
    call(&u, "DELETE", "/v2/auth/users/bob", Who::Guest, "")
        .await
        .is(404, &message("auth: User bob does not exist"), true);

    // Roles: created as sent (201), changed by grant and revoke (200).
    let put_role = |name: &'static str, body: &'static str| {
        let u = u.clone();
        async move {
            call(
                &u,
                "PUT",
                &format!("/v2/auth/roles/{name}"),
                Who::Guest,
                body,
            )
            .await
        }
    };
    let sent = r#"{"role":"r1","permissions":{"kv":{"read":["/a","/a"],"write":null}},"grant":{"kv":{"read":null,"write":null}}}"#;
    put_role(
        "r1",
        r#"{"role":"r1","grant":{},"permissions":{"kv":{"read":["/a","/a"]}}}"#,
    )
    .await
    .is(201, &format!("{sent}\n"), true);
    get("/v2/auth/roles/r1", Who::Guest)
        .await
        .is(200, &format!("{sent}\n"), true);
    put_role("r1", r#"{"role":"r1","grant":{"kv":{"write":["/b%d"]}}}"#)
        .await
        .is(
            200,
            "{\"role\":\"r1\",\"permissions\":{\"kv\":{\"read\":[\"/a\"],\"write\":[\"/b%d\"]}}}\n",
            true,
        );
    put_role("r1", r#"{"role":"r1","grant":{"kv":{"write":["/b%d"]}}}"#)
        .await
        .is(
            409,
            &message("auth: Granting duplicate write permission /b%d"),
            true,
        );
    put_role(
        "r1",
        r#"{"role":"r1","revoke":{"kv":{"read":["/a"],"write":["/zz"]}}}"#,
    )
    .await
    .is(
        200,
        "{\"role\":\"r1\",\"permissions\":{\"kv\":{\"read\":[],\"write\":[\"/b%d\"]}}}\n",
        true,
    );
    put_role("r1", r#"{"role":"r1","revoke":{"kv":{"read":["/a"]}}}"#)
        .await
        .is(
            400,
            &message("auth: Role not updated. Use grant/revoke to update the role."),
            true,
        );
    put_role("r1", r#"{"role":"r1"}"#).await.is(
        409,
        &message("auth: Role r1 already exists."),
        true,
    );
    put_role(
        "r1",
        r#"{"role":"r1","permissions":{"kv":{"read":["/q"]}},"grant":{"kv":{"read":["/q"]}}}"#,
    )
    .await
    .is(
        400,
        &message("Role JSON contains both permissions and grant/revoke"),
        true,
    );
    put_role("r2", r#"{"role":"r2","grant":{"kv":{"read":["/q"]}}}"#)
        .await
        .is(404, &message("auth: Role r2 does not exist."), true);
    put_role("root", r#"{"role":"root"}"#).await.is(
        403,
        &message("auth: Cannot modify role root: is root role."),
        true,
    );
    call(&u, "DELETE", "/v2/auth/roles/r2", Who::Guest, "")
        .await
        .is(404, &message("auth: Role r2 doesn't exist."), true);
    get("/v2/auth/roles/a/b", Who::Guest)
        .await
        .is(400, &message("Invalid path"), false);
    let post = call(&u, "POST", "/v2/auth/roles", Who::Guest, "").await;
    assert_eq!(
        (post.status, post.header("allow"), post.body.as_str()),
        (405, "GET", "Method Not Allowed\n")
    );

    // Enable: the guest role appears, with full access.
    call(&u, "PUT", "/v2/auth/enable", Who::Guest, "")
        .await
        .is(200, "", true);
    get("/v2/auth/enable", Who::Guest)
        .await
        .is(200, "{\"enabled\":true}\n", true);
    // Everything else needs root now: refused before the cluster ID is set.
    let no_auth = message("Insufficient credentials");
    get("/v2/auth/users", Who::Guest)
        .await
        .is(401, &no_auth, false);
    get("/v2/auth/users", Who::User("alice", "apw"))
        .await
        .is(401, &no_auth, false);
    get("/v2/auth/users", Who::User("root", "wrong"))
        .await
        .is(401, &no_auth, false);
    get("/v2/auth/users", Who::Raw("Basic cm9vdDpyb290cHc"))
        .await
        .is(401, &no_auth, false);
    call(&u, "PUT", "/v2/auth/enable", Who::Guest, "")
        .await
        .is(401, &no_auth, false);
    call(&u, "PUT", "/v2/auth/enable", ROOT, "").await.is(
        409,
        &message("auth: already enabled"),
        true,
    );
    get("/v2/auth/roles/guest", Who::Raw("bAsIc cm9vdDpyb290cHc="))
        .await
        .is(200, &format!("{GUEST_ROLE}\n"), true);
    call(&u, "DELETE", "/v2/auth/users/root", ROOT, "")
        .await
        .is(
            403,
            &message("auth: Cannot delete root user while auth is enabled."),
            true,
        );
    // Member changes need root; reads do not.
    call(&u, "DELETE", "/v2/members/1234", Who::Guest, "")
        .await
        .is(401, &no_auth, false);
    call(&u, "DELETE", "/v2/members/1234", ROOT, "").await.is(
        404,
        &message("No such member: 1234"),
        true,
    );
    assert_eq!(
        call(&u, "GET", "/v2/members", Who::Guest, "").await.status,
        200
    );
    call(&u, "DELETE", "/v2/auth/enable", ROOT, "")
        .await
        .is(200, "", true);
    call(&u, "DELETE", "/v2/auth/enable", ROOT, "").await.is(
        409,
        &message("auth: already disabled"),
        true,
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_requests_need_permission() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    populate(&u).await;
    let alice = Who::User("alice", "apw");
    let keys = |method: &'static str, path: &'static str, who: Who<'static>, form: &'static str| {
        let u = u.clone();
        async move { call(&u, method, path, who, form).await }
    };
    let denied = |r: Resp| {
        r.is(401, NO_AUTH, true);
        assert_eq!(r.header("x-etcd-index"), "0");
    };

    assert_eq!(keys("GET", "/v2/keys/pub/a", alice, "").await.status, 200);
    assert_eq!(
        keys("PUT", "/v2/keys/pub/b", alice, "value=2").await.status,
        201
    );
    assert_eq!(
        keys("PUT", "/v2/keys/priv", alice, "value=p").await.status,
        201
    );
    denied(keys("GET", "/v2/keys/priv", alice, "").await);
    // `/pub/*` covers keys below `/pub/`, not `/pub`; recursive needs the glob.
    denied(keys("GET", "/v2/keys/pub", alice, "").await);
    assert_eq!(keys("GET", "/v2/keys/pub/", alice, "").await.status, 200);
    assert_eq!(
        keys("GET", "/v2/keys/pub/?recursive=true", alice, "")
            .await
            .status,
        200
    );
    denied(keys("GET", "/v2/keys/pub?recursive=true", alice, "").await);
    denied(keys("DELETE", "/v2/keys/pub?recursive=true", alice, "").await);
    denied(keys("GET", "/v2/keys/pub/a", Who::User("alice", "wrong"), "").await);
    denied(keys("GET", "/v2/keys/pub/a", Who::User("nobody", "x"), "").await);
    denied(keys("GET", "/v2/keys/pub/a", Who::Raw("Bearer x"), "").await);
    // A bad request is refused as such before any permission check.
    let bad = keys(
        "GET",
        "/v2/keys/pub/a?recursive=maybe",
        Who::User("alice", "wrong"),
        "",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // Guests have the guest role's access: all of it, then read-only, then none.
    assert_eq!(
        keys("PUT", "/v2/keys/g", Who::Guest, "value=1")
            .await
            .status,
        201
    );
    let narrowed = call(
        &u,
        "PUT",
        "/v2/auth/roles/guest",
        ROOT,
        r#"{"role":"guest","revoke":{"kv":{"write":["/*"]}}}"#,
    )
    .await;
    narrowed.is(
        200,
        "{\"role\":\"guest\",\"permissions\":{\"kv\":{\"read\":[\"/*\"],\"write\":[]}}}\n",
        true,
    );
    denied(keys("PUT", "/v2/keys/g", Who::Guest, "value=2").await);
    assert_eq!(keys("GET", "/v2/keys/g", Who::Guest, "").await.status, 200);
    call(&u, "DELETE", "/v2/auth/roles/guest", ROOT, "")
        .await
        .is(200, "", true);
    denied(keys("GET", "/v2/keys/g", Who::Guest, "").await);
    // Root reads everything, including keys no role names.
    assert_eq!(keys("GET", "/v2/keys/g", ROOT, "").await.status, 200);
    // Revoking alice's roles takes her access at once.
    let r = call(
        &u,
        "PUT",
        "/v2/auth/users/alice",
        ROOT,
        r#"{"user":"alice","revoke":["reader","writer"]}"#,
    )
    .await;
    r.is(200, "{\"user\":\"alice\",\"roles\":[]}\n", true);
    denied(keys("GET", "/v2/keys/pub/a", alice, "").await);
    // Auth off: everyone may do anything again.
    call(&u, "DELETE", "/v2/auth/enable", ROOT, "")
        .await
        .is(200, "", true);
    assert_eq!(
        keys("GET", "/v2/keys/priv", Who::Guest, "").await.status,
        200
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_survives_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    populate(&u).await;
    let users = call(&u, "GET", "/v2/auth/users", ROOT, "").await;
    assert_eq!(users.status, 200);
    m.stop().await;

    let mut m = p.start_with(0, tmp.path(), |c| c.enable_v2 = true).await;
    wait_leader(std::slice::from_ref(&u)).await;
    call(&u, "GET", "/v2/auth/enable", Who::Guest, "")
        .await
        .is(200, "{\"enabled\":true}\n", true);
    call(&u, "GET", "/v2/auth/users", ROOT, "")
        .await
        .is(200, &users.body, true);
    let alice = Who::User("alice", "apw");
    assert_eq!(
        call(&u, "GET", "/v2/keys/pub/a", alice, "").await.status,
        200
    );
    call(&u, "GET", "/v2/keys/priv", alice, "")
        .await
        .is(401, NO_AUTH, true);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_made_on_one_member_hold_on_every_member() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(tmp.path(), |c| c.enable_v2 = true).await;
    let leader = wait_leader(&urls).await;
    let li = ms
        .iter()
        .position(|m| m.id == leader)
        .expect("leader is a member");
    let follower = &urls[(li + 1) % 3];
    populate(follower).await;
    let alice = Who::User("alice", "apw");
    for u in &urls {
        // Applied everywhere once the leader has it; a follower may lag a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = call(u, "GET", "/v2/keys/priv", alice, "").await;
            if r.status == 401 || tokio::time::Instant::now() > deadline {
                r.is(401, NO_AUTH, true);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            call(u, "GET", "/v2/keys/pub/a", alice, "").await.status,
            200
        );
        call(u, "GET", "/v2/auth/users", Who::Guest, "").await.is(
            401,
            &message("Insufficient credentials"),
            false,
        );
    }
    for m in &mut ms {
        m.stop().await;
    }
}
