//! The JSON gateway on a member on loopback, over plain HTTP/1.1 as curl speaks it:
//! etcd 3.4.23's exact bodies and statuses (captured from it; the side-by-side check
//! is server/conformance/gateway.sh), streams that outlive their request body, and auth
//! tokens in the Authorization header.

mod common;

use std::time::Duration;

use common::{plan, wait_leader, Running};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Sends one request as `curl -d` does: (status, body stream, connection task).
async fn open(
    base: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Incoming, tokio::task::JoinHandle<()>) {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(t) = token {
        headers.push(("authorization", t));
    }
    let (status, _, body, conn) = common::http1(base, method, path, &headers, body).await;
    (status, body, conn)
}

async fn call(base: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let (status, body, _conn) = open(base, "POST", path, body, token).await;
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

/// The next line of a streamed answer.
async fn line(body: &mut Incoming, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let l: Vec<u8> = buf.drain(..=i).collect();
            return String::from_utf8(l).expect("utf-8").trim_end().to_string();
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a line in time")
            .expect("stream open")
            .expect("frame");
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

async fn single(dir: &std::path::Path) -> (common::Plan, Running) {
    let mut p = plan(1).await;
    let m = p.start(0, dir).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    (p, m)
}

/// etcd's header for this member at `rev`, term left open.
fn header_prefix(m: &Running, cluster: u64, rev: i64) -> String {
    format!(
        r#"{{"header":{{"cluster_id":"{cluster}","member_id":"{}","revision":"{rev}","raft_term":""#,
        m.id
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_calls_and_errors_answer_as_etcds_gateway() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let (s, b) = call(&u, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, None).await;
    assert_eq!(s, 200, "{b}");
    let cluster: u64 = b
        .split('"')
        .nth(5)
        .expect("cluster id")
        .parse()
        .expect("id");
    assert!(b.starts_with(&header_prefix(&m, cluster, 2)), "{b}");

    for path in ["/v3/kv/range", "/v3beta/kv/range"] {
        let (s, b) = call(&u, path, r#"{"key":"Zm9v","bogus":1}"#, None).await;
        assert_eq!(s, 200);
        assert!(b.starts_with(&header_prefix(&m, cluster, 2)), "{b}");
        assert!(
            b.ends_with(r#""},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#),
            "{b}"
        );
    }
    // Errors: the gRPC status as grpc-gateway's JSON and HTTP status.
    assert_eq!(
        call(&u, "/v3/kv/range", r#"{"key":"Zm9v","revision":100}"#, None).await,
        (400, r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#.into())
    );
    assert_eq!(
        call(&u, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy","lease":"123"}"#, None).await,
        (404, r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#.into())
    );
    assert_eq!(
        call(&u, "/v3/kv/range", "garbage", None).await,
        (400, r#"{"error":"invalid character 'g' looking for beginning of value","message":"invalid character 'g' looking for beginning of value","code":3}"#.into())
    );
    assert_eq!(
        call(&u, "/v3/election/leader", r#"{"name":"ZWw="}"#, None).await,
        (
            500,
            r#"{"error":"election: no leader","message":"election: no leader","code":2}"#.into()
        )
    );
    // What is not a gateway method: Go's net/http answers.
    assert_eq!(
        call(&u, "/v3/kv/nope", "{}", None).await,
        (404, "Not Found\n".into())
    );
    assert_eq!(
        call(&u, "/v3alpha/kv/range", "{}", None).await,
        (404, "404 page not found\n".into())
    );
    let (s, _, _c) = open(&u, "GET", "/v3/kv/range", "", None).await;
    assert_eq!(s, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_the_request_body_that_created_it() {
    // curl sends the create request and ends its body; grpc-gateway then half-closes
    // the gRPC stream, and etcd keeps the watcher. Keel used to end the watch there.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let body = r#"{"create_request":{"key":"Zm9v"}}{"progress_request":{}}"#;
    let (s, mut stream, _conn) = open(&u, "POST", "/v3/watch", body, None).await;
    assert_eq!(s, 200);
    let mut buf = Vec::new();
    let created = line(&mut stream, &mut buf).await;
    assert!(created.ends_with(r#""},"created":true}}"#), "{created}");
    let progress = line(&mut stream, &mut buf).await;
    assert!(progress.ends_with(r#""},"watch_id":"-1"}}"#), "{progress}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = call(&u, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, None).await;
    assert_eq!(s, 200);
    let event = line(&mut stream, &mut buf).await;
    assert!(
        event.ends_with(r#""},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}]}}"#),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_ride_in_the_authorization_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    for (path, body) in [
        ("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let (s, b) = call(&u, path, body, None).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    assert_eq!(
        call(&u, "/v3/kv/range", r#"{"key":"Zm9v"}"#, None).await,
        (400, r#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#.into())
    );
    assert_eq!(
        call(&u, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some("bogus")).await,
        (401, r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#.into())
    );
    let (s, b) = call(
        &u,
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let token = b.rsplit('"').nth(1).expect("token").to_string();
    let (s, b) = call(&u, "/v3/kv/range", r#"{"key":"Zm9v"}"#, Some(&token)).await;
    assert_eq!(s, 200, "{b}");
    // A watch with a bad token: each watcher is refused, the stream is not.
    let (s, mut stream, _conn) = open(
        &u,
        "POST",
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v"}}"#,
        Some("bogus"),
    )
    .await;
    assert_eq!(s, 200);
    let refused = line(&mut stream, &mut Vec::new()).await;
    assert!(
        refused.ends_with(r#""},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#),
        "{refused}"
    );
}
