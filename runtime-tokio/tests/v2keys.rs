//! The etcd v2 keys API subset (`--enable-v2`) over HTTP on members on loopback: etcd's
//! exact JSON, codes and headers (captured from etcd 3.4.23), create races, long polls
//! woken by later writes or answered from history, listing order, restarts, long polls
//! ending with their client or the member, and a three-member cluster.

mod common;

use std::time::Duration;

use common::{plan, wait_leader, Running};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use keel_runtime_tokio::member::MemberTask;
use keel_runtime_tokio::pb::etcdserverpb as pb;
use tokio::task::JoinHandle;

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

    fn index(&self) -> i64 {
        self.header("x-etcd-index").parse().expect("X-Etcd-Index")
    }

    /// Asserts status and body, and that X-Etcd-Index is `index`.
    #[track_caller]
    fn is(&self, status: u16, body: &str, index: i64) {
        assert_eq!((self.status, self.body.as_str()), (status, body));
        assert_eq!(self.index(), index, "X-Etcd-Index of {body}");
        assert_eq!(self.header("x-etcd-cluster-id"), "c1");
        assert_eq!(self.header("content-type"), "application/json");
    }
}

/// A request on a fresh connection; returns the answer's head and its body stream,
/// and the connection task (aborting it closes the connection).
async fn open(
    base: &str,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> (u16, HeaderMap, Incoming, JoinHandle<()>) {
    let headers: &[(&str, &str)] = if form.is_some() {
        &[("content-type", "application/x-www-form-urlencoded")]
    } else {
        &[]
    };
    common::http1(base, method, path, headers, form.unwrap_or("")).await
}

async fn body_of(body: Incoming, secs: u64) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(secs), body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

async fn call(base: &str, method: &str, path: &str, form: Option<&str>) -> Resp {
    let (status, headers, body, _conn) = open(base, method, path, form).await;
    Resp {
        status,
        headers,
        body: body_of(body, 10).await,
    }
}

async fn get(base: &str, path: &str) -> Resp {
    call(base, "GET", &format!("/v2/keys{path}"), None).await
}

async fn put(base: &str, path: &str, form: &str) -> Resp {
    call(base, "PUT", &format!("/v2/keys{path}"), Some(form)).await
}

async fn delete(base: &str, path: &str) -> Resp {
    call(base, "DELETE", &format!("/v2/keys{path}"), None).await
}

/// A put retried while the cluster cannot serve it (500, "Raft Internal Error", as
/// during an election).
async fn put_until_served(base: &str, path: &str, form: &str) -> Resp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = put(base, path, form).await;
        if r.status != 500 || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A file node's JSON.
fn file(key: &str, value: &str, index: i64) -> String {
    format!("{{\"key\":\"{key}\",\"value\":\"{value}\",\"modifiedIndex\":{index},\"createdIndex\":{index}}}")
}

/// A directory node's JSON (without children).
fn dir(key: &str, modified: i64, created: i64) -> String {
    format!("{{\"key\":\"{key}\",\"dir\":true,\"modifiedIndex\":{modified},\"createdIndex\":{created}}}")
}

fn event(action: &str, node: &str) -> String {
    format!("{{\"action\":\"{action}\",\"node\":{node}}}\n")
}

fn event_prev(action: &str, node: &str, prev: &str) -> String {
    format!("{{\"action\":\"{action}\",\"node\":{node},\"prevNode\":{prev}}}\n")
}

fn error(code: u32, message: &str, cause: &str, index: i64) -> String {
    format!("{{\"errorCode\":{code},\"message\":\"{message}\",\"cause\":\"{cause}\",\"index\":{index}}}\n")
}

/// One member serving the v2 API, with a leader.
async fn single(dir: &std::path::Path) -> (common::Plan, Running) {
    let mut p = plan(1).await;
    let m = p.start_with(0, dir, |c| c.enable_v2 = true).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    (p, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_api_answers_like_etcd() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();

    let root = get(&u, "/").await;
    let r0 = root.index();
    root.is(200, "{\"action\":\"get\",\"node\":{\"dir\":true}}\n", r0);
    assert!(root.header("x-raft-term").parse::<u64>().expect("term") >= 1);
    assert!(
        root.header("x-raft-index")
            .parse::<u64>()
            .expect("raft index")
            >= 1
    );
    assert_eq!(root.header("access-control-allow-origin"), "*");
    get(&u, "").await.is(200, &root.body, r0);

    // Discovery's token: its size, hidden from listings of the token's directory.
    let size = file("/discovery/abc/_config/size", "3", r0 + 1);
    put(&u, "/discovery/abc/_config/size", "value=3")
        .await
        .is(201, &event("set", &size), r0 + 1);
    get(&u, "/discovery/abc/_config/size")
        .await
        .is(200, &event("get", &size), r0 + 1);
    let abc = dir("/discovery/abc", r0 + 1, r0 + 1);
    get(&u, "/discovery/abc")
        .await
        .is(200, &event("get", &abc), r0 + 1);
    get(&u, "/discovery/abc?recursive=true")
        .await
        .is(200, &event("get", &abc), r0 + 1);

    // Registration: create once, then "Key already exists".
    let m1 = file("/discovery/abc/m1", "n1=http://a", r0 + 2);
    put(
        &u,
        "/discovery/abc/m1?prevExist=false",
        "value=n1%3Dhttp%3A%2F%2Fa",
    )
    .await
    .is(201, &event("create", &m1), r0 + 2);
    put(&u, "/discovery/abc/m1?prevExist=false", "value=n1=http://a")
        .await
        .is(
            412,
            &error(105, "Key already exists", "/discovery/abc/m1", r0 + 2),
            r0 + 2,
        );
    // A set replaces the node (a new createdIndex) and shows the one it replaced.
    let m1b = file("/discovery/abc/m1", "n1=http://b", r0 + 3);
    put(&u, "/discovery/abc/m1", "value=n1=http://b").await.is(
        200,
        &event_prev("set", &m1b, &m1),
        r0 + 3,
    );
    let listing = format!(
        "{{\"action\":\"get\",\"node\":{{\"key\":\"/discovery/abc\",\"dir\":true,\"nodes\":[{m1b}],\"modifiedIndex\":{0},\"createdIndex\":{0}}}}}\n",
        r0 + 1
    );
    get(&u, "/discovery/abc?recursive=true&sorted=true")
        .await
        .is(200, &listing, r0 + 3);
    get(&u, "/discovery/nope").await.is(
        404,
        &error(100, "Key not found", "/discovery/nope", r0 + 3),
        r0 + 3,
    );
    get(&u, "/nope/deeper")
        .await
        .is(404, &error(100, "Key not found", "/nope", r0 + 3), r0 + 3);

    // Files and directories do not mix.
    put(&u, "/discovery/abc", "value=1").await.is(
        403,
        &error(102, "Not a file", "/discovery/abc", r0 + 3),
        r0 + 3,
    );
    put(&u, "/discovery/abc/m1/x", "value=1").await.is(
        400,
        &error(104, "Not a directory", "/discovery/abc/m1", r0 + 3),
        r0 + 3,
    );
    get(&u, "/discovery/abc/m1/x").await.is(
        400,
        &error(104, "Not a directory", "/discovery/abc/m1", r0 + 3),
        r0 + 3,
    );
    delete(&u, "/discovery/abc").await.is(
        403,
        &error(102, "Not a file", "/discovery/abc", r0 + 3),
        r0 + 3,
    );

    // Deletes: a file, then a directory (hidden children count as children).
    let gone = format!(
        "{{\"key\":\"/discovery/abc/m1\",\"modifiedIndex\":{},\"createdIndex\":{}}}",
        r0 + 4,
        r0 + 3
    );
    delete(&u, "/discovery/abc/m1")
        .await
        .is(200, &event_prev("delete", &gone, &m1b), r0 + 4);
    delete(&u, "/discovery/abc/m1").await.is(
        404,
        &error(100, "Key not found", "/discovery/abc/m1", r0 + 4),
        r0 + 4,
    );
    delete(&u, "/discovery/abc?dir=true").await.is(
        403,
        &error(108, "Directory not empty", "/discovery/abc", r0 + 4),
        r0 + 4,
    );
    delete(&u, "/discovery/abc?recursive=true").await.is(
        200,
        &event_prev("delete", &dir("/discovery/abc", r0 + 5, r0 + 1), &abc),
        r0 + 5,
    );

    // Explicit directories.
    let d2 = dir("/discovery/d2", r0 + 6, r0 + 6);
    put(&u, "/discovery/d2?dir=true", "")
        .await
        .is(201, &event("set", &d2), r0 + 6);
    put(&u, "/discovery/d2?dir=true", "").await.is(
        403,
        &error(102, "Not a file", "/discovery/d2", r0 + 6),
        r0 + 6,
    );
    put(&u, "/discovery/d2?dir=true&prevExist=false", "")
        .await
        .is(
            412,
            &error(105, "Key already exists", "/discovery/d2", r0 + 6),
            r0 + 6,
        );
    delete(&u, "/discovery/d2?dir=true").await.is(
        200,
        &event_prev("delete", &dir("/discovery/d2", r0 + 7, r0 + 6), &d2),
        r0 + 7,
    );
    // A directory set over a file replaces it.
    let f = file("/f", "1", r0 + 8);
    put(&u, "/f", "value=1")
        .await
        .is(201, &event("set", &f), r0 + 8);
    put(&u, "/f?dir=true", "").await.is(
        200,
        &event_prev("set", &dir("/f", r0 + 9, r0 + 9), &f),
        r0 + 9,
    );

    // The root is read only.
    put(&u, "/", "value=1")
        .await
        .is(400, &error(107, "Root is read only", "/", r0 + 9), r0 + 9);
    delete(&u, "/")
        .await
        .is(400, &error(107, "Root is read only", "/", r0 + 9), r0 + 9);

    // Form details: the body wins over the query; the query alone works; Go's escaping.
    put(&u, "/q1?value=fromq", "value=frombody").await.is(
        201,
        &event("set", &file("/q1", "frombody", r0 + 10)),
        r0 + 10,
    );
    let q2 = call(&u, "PUT", "/v2/keys/q2?value=from+query", None).await;
    q2.is(
        201,
        &event("set", &file("/q2", "from query", r0 + 11)),
        r0 + 11,
    );
    put(&u, "/q3", "value=%3Ca%26b%3E%22%5C").await.is(
        201,
        &event(
            "set",
            &file("/q3", "\\u003ca\\u0026b\\u003e\\\"\\\\", r0 + 12),
        ),
        r0 + 12,
    );
    put(&u, "/q4?noValueOnSuccess=true", "value=1").await.is(
        201,
        "{\"action\":\"set\"}\n",
        r0 + 13,
    );

    // Request errors carry index 0, in etcd's order of checks.
    let bad = |code: u32, msg: &str, cause: &str| error(code, msg, cause, 0);
    get(&u, "/q1?recursive=maybe").await.is(
        400,
        &bad(209, "Invalid field", "invalid value for \\\"recursive\\\""),
        0,
    );
    get(&u, "/q1?wait=true&waitIndex=abc").await.is(
        400,
        &bad(
            203,
            "The given index in POST form is not a number",
            "invalid value for \\\"waitIndex\\\"",
        ),
        0,
    );
    put(&u, "/q1?wait=true", "value=1").await.is(
        400,
        &bad(
            209,
            "Invalid field",
            "\\\"wait\\\" can only be used with GET requests",
        ),
        0,
    );
    get(&u, "/q1?a=%zz").await.is(
        400,
        &bad(210, "Invalid POST form", "invalid URL escape \\\"%zz\\\""),
        0,
    );
    put(&u, "/q1?ttl=abc", "value=1").await.is(
        400,
        &bad(
            202,
            "The given TTL in POST form is not a number",
            "invalid value for \\\"ttl\\\"",
        ),
        0,
    );
    // What this API does not serve is refused, never silently ignored.
    put(&u, "/q1?ttl=5", "value=1").await.is(
        400,
        &bad(
            209,
            "Invalid field",
            "keel's v2 keys API does not support \\\"ttl\\\"",
        ),
        0,
    );
    put(&u, "/q1?prevExist=true", "value=1").await.is(
        400,
        &bad(
            209,
            "Invalid field",
            "keel's v2 keys API does not support \\\"prevExist=true\\\"",
        ),
        0,
    );
    delete(&u, "/q1?prevIndex=3").await.is(
        400,
        &bad(
            209,
            "Invalid field",
            "keel's v2 keys API does not support \\\"prevIndex\\\"",
        ),
        0,
    );
    let post = call(&u, "POST", "/v2/keys/q1", Some("value=1")).await;
    assert_eq!(
        (post.status, post.body.as_str()),
        (405, "Method Not Allowed\n")
    );
    assert_eq!(post.header("allow"), "HEAD,GET,PUT,DELETE");
    // HEAD: GET's head without its body.
    let head = call(&u, "HEAD", "/v2/keys/q1", None).await;
    assert_eq!(
        (head.status, head.body.as_str(), head.index()),
        (200, "", r0 + 13)
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_races_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    for round in 0..4 {
        let path = format!("/race/r{round}/k");
        let tries: Vec<_> = (0..6)
            .map(|i| {
                let (u, path) = (u.clone(), path.clone());
                tokio::spawn(async move {
                    (
                        i,
                        put(
                            &u,
                            &format!("{path}?prevExist=false"),
                            &format!("value=v{i}"),
                        )
                        .await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tries {
            let (i, r) = t.await.expect("task");
            match r.status {
                201 => winners.push((i, r)),
                412 => assert!(
                    r.body
                        .starts_with("{\"errorCode\":105,\"message\":\"Key already exists\""),
                    "{}",
                    r.body
                ),
                s => panic!("unexpected {s}: {}", r.body),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one creator wins");
        let (i, w) = &winners[0];
        let got = get(&u, &path).await;
        assert_eq!(
            got.body,
            event("get", &file(&path, &format!("v{i}"), w.index()))
        );
    }
    // Creators of distinct keys in a new directory all win (they only share its
    // implicit creation), each with its own createdIndex.
    let tries: Vec<_> = (0..6)
        .map(|i| {
            let u = u.clone();
            tokio::spawn(async move {
                put(&u, &format!("/fresh/m{i}?prevExist=false"), "value=x").await
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for t in tries {
        let r = t.await.expect("task");
        assert_eq!(r.status, 201, "{}", r.body);
        indexes.push(r.index());
    }
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 6);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_woken_by_later_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();

    // Discovery's wait: on a token directory not written yet, recursive, from the
    // index after the last read. The head comes at once, the event when it happens.
    let now = get(&u, "/").await.index();
    let (status, headers, body, _c) = open(
        &u,
        "GET",
        &format!(
            "/v2/keys/disc/t?wait=true&recursive=true&waitIndex={}",
            now + 1
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-etcd-index").and_then(|v| v.to_str().ok()),
        Some(now.to_string().as_str())
    );
    assert_eq!(
        headers
            .get("x-etcd-cluster-id")
            .and_then(|v| v.to_str().ok()),
        Some("c1")
    );
    // A hidden node does not wake it; the registration does.
    put(&u, "/disc/t/_config/size", "value=3").await;
    let reg = put(&u, "/disc/t/m1?prevExist=false", "value=n1=http://a").await;
    assert_eq!(
        body_of(body, 5).await,
        event("create", &file("/disc/t/m1", "n1=http://a", reg.index()))
    );

    // A wait on a file: a sibling's write passes it by, its own set wakes it.
    let before = put(&u, "/w/k", "value=1").await.index();
    let (_, _, body, _c) = open(&u, "GET", "/v2/keys/w/k?wait=true", None).await;
    put(&u, "/w/k2", "value=x").await;
    let set = put(&u, "/w/k", "value=2").await.index();
    assert_eq!(
        body_of(body, 5).await,
        event_prev("set", &file("/w/k", "2", set), &file("/w/k", "1", before))
    );

    // A wait below a directory that is deleted hears of the directory's delete.
    let (_, _, body, _c) = open(&u, "GET", "/v2/keys/w/k?wait=true", None).await;
    let del = delete(&u, "/w?recursive=true").await;
    assert_eq!(del.status, 200);
    // /w was made by the first write below it.
    assert_eq!(
        body_of(body, 5).await,
        event_prev(
            "delete",
            &dir("/w", del.index(), before),
            &dir("/w", before, before)
        )
    );

    // stream=true keeps sending every change.
    let (_, _, mut body, conn) = open(
        &u,
        "GET",
        "/v2/keys/s?wait=true&recursive=true&stream=true",
        None,
    )
    .await;
    let a = put(&u, "/s/a", "value=1").await.index();
    let b = put(&u, "/s/b?prevExist=false", "value=2").await.index();
    let want = event("set", &file("/s/a", "1", a)) + &event("create", &file("/s/b", "2", b));
    let mut got = String::new();
    while got.len() < want.len() {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("frame");
        if let Some(d) = frame.data_ref() {
            got.push_str(std::str::from_utf8(d).expect("utf-8"));
        }
    }
    assert_eq!(got, want);
    conn.abort();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_answered_from_history() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let first = put(&u, "/h/a", "value=1").await.index();
    let second = put(&u, "/h/a", "value=2").await.index();
    put(&u, "/h/b", "value=3").await;
    let del = delete(&u, "/h/a").await.index();
    let now = put(&u, "/other", "value=x").await.index();

    // The first change at or after waitIndex, though it happened before the wait.
    let past = call(
        &u,
        "GET",
        &format!("/v2/keys/h/a?wait=true&waitIndex={first}"),
        None,
    )
    .await;
    past.is(200, &event("set", &file("/h/a", "1", first)), now);
    let past = call(
        &u,
        "GET",
        &format!("/v2/keys/h/a?wait=true&waitIndex={}", first + 1),
        None,
    )
    .await;
    past.is(
        200,
        &event_prev("set", &file("/h/a", "2", second), &file("/h/a", "1", first)),
        now,
    );
    let past = call(
        &u,
        "GET",
        &format!(
            "/v2/keys/h?wait=true&recursive=true&waitIndex={}",
            second + 1
        ),
        None,
    )
    .await;
    past.is(200, &event("set", &file("/h/b", "3", second + 1)), now);
    let gone = format!("{{\"key\":\"/h/a\",\"modifiedIndex\":{del},\"createdIndex\":{second}}}");
    let past = call(
        &u,
        "GET",
        &format!("/v2/keys/h/a?wait=true&waitIndex={}", second + 1),
        None,
    )
    .await;
    past.is(
        200,
        &event_prev("delete", &gone, &file("/h/a", "2", second)),
        now,
    );

    // Once compacted, that history is gone, with etcd's error.
    let mut kv = m.kv().await;
    kv.compact(pb::CompactionRequest {
        revision: second,
        physical: true,
    })
    .await
    .expect("compact");
    let cleared = call(
        &u,
        "GET",
        &format!("/v2/keys/h/a?wait=true&waitIndex={first}"),
        None,
    )
    .await;
    let cause = format!(
        "the requested history has been cleared [{}/{first}]",
        second + 1
    );
    cleared.is(
        400,
        &error(
            401,
            "The event in requested index is outdated and cleared",
            &cause,
            now,
        ),
        now,
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_order_registrations_by_created_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let created = put(&u, "/d/tok/_config/size", "value=3").await.index();
    let mut nodes = Vec::new();
    for name in ["m3", "m1", "m2"] {
        let r = put(
            &u,
            &format!("/d/tok/{name}?prevExist=false"),
            &format!("value={name}"),
        )
        .await;
        nodes.push((name, file(&format!("/d/tok/{name}"), name, r.index())));
    }
    let sub = put(&u, "/d/tok/sub/deep", "value=x").await.index();
    let tok = get(&u, "/d/tok").await;
    let tok_index = tok.index();
    let list = |children: &[String]| {
        format!(
            "{{\"action\":\"get\",\"node\":{{\"key\":\"/d/tok\",\"dir\":true,\"nodes\":[{}],\"modifiedIndex\":{created},\"createdIndex\":{created}}}}}\n",
            children.join(",")
        )
    };
    let by_created: Vec<String> = nodes.iter().map(|(_, n)| n.clone()).collect();
    let subdir = dir("/d/tok/sub", sub, sub);
    tok.is(
        200,
        &list(&[by_created.clone(), vec![subdir.clone()]].concat()),
        tok_index,
    );
    let mut by_key = nodes.clone();
    by_key.sort_by_key(|(name, _)| *name);
    let by_key: Vec<String> = by_key.into_iter().map(|(_, n)| n).collect();
    get(&u, "/d/tok?sorted=true")
        .await
        .is(200, &list(&[by_key, vec![subdir]].concat()), tok_index);
    let nested = format!(
        "{{\"key\":\"/d/tok/sub\",\"dir\":true,\"nodes\":[{}],\"modifiedIndex\":{sub},\"createdIndex\":{sub}}}",
        file("/d/tok/sub/deep", "x", sub)
    );
    get(&u, "/d/tok?recursive=true").await.is(
        200,
        &list(&[by_created, vec![nested]].concat()),
        tok_index,
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    put(&u, "/disc/t/_config/size", "value=3").await;
    put(&u, "/disc/t/a?prevExist=false", "value=1").await;
    put(&u, "/disc/t/b?prevExist=false", "value=2").await;
    put(&u, "/disc/t/c", "value=3").await;
    delete(&u, "/disc/t/c").await;
    let before = get(&u, "/disc/t?recursive=true").await;
    let size = get(&u, "/disc/t/_config/size").await;
    m.stop().await;

    let mut m = p.start_with(0, tmp.path(), |c| c.enable_v2 = true).await;
    wait_leader(std::slice::from_ref(&u)).await;
    get(&u, "/disc/t?recursive=true")
        .await
        .is(200, &before.body, before.index());
    get(&u, "/disc/t/_config/size")
        .await
        .is(200, &size.body, before.index());
    let again = put(&u, "/disc/t/a?prevExist=false", "value=9").await;
    again.is(
        412,
        &error(105, "Key already exists", "/disc/t/a", before.index()),
        before.index(),
    );
    assert_eq!(
        put(&u, "/disc/t/d", "value=4").await.index(),
        before.index() + 1
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_end_with_their_client_and_with_the_member() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let (mut m, handle) = p
        .start_with_handle(0, tmp.path(), |c| c.enable_v2 = true)
        .await;
    let u = m.client_url.clone();
    let watchers = || {
        let h = handle.clone();
        async move {
            h.local(|c: &mut MemberTask| c.sinks.len())
                .await
                .expect("member")
        }
    };

    // The client goes away: its watcher goes too.
    let (status, _, body, conn) = open(&u, "GET", "/v2/keys/x?wait=true", None).await;
    assert_eq!(status, 200);
    assert_eq!(watchers().await, 1);
    drop(body);
    conn.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while watchers().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher of a gone client remains"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Shutdown: the pending poll ends at once (an empty body, as etcd's), and the
    // member does not wait for it.
    let (_, _, body, _c) = open(&u, "GET", "/v2/keys/x?wait=true", None).await;
    let poll = tokio::spawn(body_of(body, 10));
    let t = std::time::Instant::now();
    m.stop().await;
    assert_eq!(poll.await.expect("poll"), "");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_enable_v2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let mut m = p.start(0, tmp.path()).await;
    wait_leader(std::slice::from_ref(&m.client_url)).await;
    // Nothing answers for the v2 API: Go's 404, as etcd 3.4 without --enable-v2.
    let r = get(&m.client_url, "/").await;
    assert_eq!(
        (r.status, r.header("x-etcd-index"), r.body.as_str()),
        (404, "", "404 page not found\n")
    );
    let w = put(&m.client_url, "/a", "value=1").await;
    assert_eq!(
        (w.status, w.header("x-etcd-index"), w.body.as_str()),
        (404, "", "404 page not found\n")
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_cluster_serves_the_same_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = plan(3).await;
    let (mut ms, urls) = p.start_all(tmp.path(), |c| c.enable_v2 = true).await;
    let leader = wait_leader(&urls).await;
    let li = ms
        .iter()
        .position(|m| m.id == leader)
        .expect("leader is a member");
    let (f1, f2) = ((li + 1) % 3, (li + 2) % 3);

    // A wait on one follower, woken by a create through the other.
    let now = get(&urls[f1], "/").await.index();
    let (_, _, body, _c) = open(
        &urls[f1],
        "GET",
        &format!("/v2/keys/t?wait=true&recursive=true&waitIndex={}", now + 1),
        None,
    )
    .await;
    let reg = put(&urls[f2], "/t/m1?prevExist=false", "value=a").await;
    assert_eq!(reg.status, 201);
    let want = event("create", &file("/t/m1", "a", reg.index()));
    assert_eq!(body_of(body, 5).await, want);
    // Reads are linearizable on every member.
    for u in &urls {
        let r = get(u, "/t/m1").await;
        assert_eq!(r.body, event("get", &file("/t/m1", "a", reg.index())));
    }

    // The leader goes; the survivors still serve and still refuse a second create.
    ms[li].stop().await;
    wait_leader(&[urls[f1].clone(), urls[f2].clone()]).await;
    let dup = put_until_served(&urls[f1], "/t/m1?prevExist=false", "value=b").await;
    assert_eq!(dup.status, 412, "{}", dup.body);
    let m2 = put_until_served(&urls[f1], "/t/m2?prevExist=false", "value=b").await;
    assert_eq!(m2.status, 201, "{}", m2.body);
    let listing = get(&urls[f2], "/t").await;
    assert!(
        listing.body.contains("/t/m1") && listing.body.contains("/t/m2"),
        "{}",
        listing.body
    );
    for (i, m) in ms.iter_mut().enumerate() {
        if i != li {
            m.stop().await;
        }
    }
}

/// v2 and v3 auth are separate in etcd: turning v3 auth on does not stop the v2 API,
/// whose writes keel stores through raft on the member's own authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_auth_does_not_apply_to_the_v2_api() {
    use pb::auth_client::AuthClient;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_p, mut m) = single(tmp.path()).await;
    let u = m.client_url.clone();
    let mut a = AuthClient::new(common::channel(&u).await);
    a.user_add(pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    })
    .await
    .expect("user add");
    a.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .expect("grant root");
    a.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("v3 auth on");

    let r = put(&u, "/v2only", "value=1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(&u, "DELETE", "/v2/keys/v2only", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &u,
        "PUT",
        "/v2/auth/users/root",
        Some(r#"{"user":"root","password":"v2pw"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    m.stop().await;
}
