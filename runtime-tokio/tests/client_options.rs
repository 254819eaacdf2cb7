//! The client listener as etcd's flags shape it: `--max-concurrent-streams` is the
//! HTTP/2 setting the server announces, `--grpc-keepalive-interval` makes it ping, and
//! `--host-whitelist` / `--cors` guard its plain HTTP endpoints as etcd 3.4's
//! accessController does, leaving gRPC alone. Loopback only, every wait bounded.

mod common;

use std::time::Duration;

use common::{config, plan, put};
use keel_runtime_tokio::http_access::HttpAccess;
use keel_runtime_tokio::pb::etcdserverpb::kv_client::KvClient;
use keel_runtime_tokio::serve::{self, ClientOptions, Listener};
use keel_runtime_tokio::tls::PeerDialer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Starts one member serving `options`; its client address and stop switch.
async fn member(
    dir: &std::path::Path,
    options: ClientOptions,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let mut p = plan(1).await;
    let cfg = config(&p, 0, dir);
    let (client, peer) = p.take_listeners(0).await;
    let url = p.members[0].client_urls[0].clone();
    let (tx, rx) = oneshot::channel();
    let listeners = serve::Listeners {
        client: vec![Listener::from(client)],
        peers: vec![Listener::from(peer)],
        metrics: Vec::new(),
    };
    let task = tokio::spawn(serve::run_on(
        cfg,
        listeners,
        PeerDialer::plain(),
        options,
        async move {
            let _ = rx.await;
        },
        |_| {},
    ));
    common::wait_leader(std::slice::from_ref(&url)).await;
    (url, tx, task)
}

/// HTTP/2 frames the server sends on a fresh connection within `window`, as (type,
/// payload); the client sends the preface and an empty SETTINGS, and acknowledges
/// nothing else.
async fn h2_frames(addr: &str, window: Duration) -> Vec<(u8, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    s.write_all(&hello).await.expect("preface");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(window, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let mut frames = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        if rest.len() < 9 + len {
            break;
        }
        frames.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// SETTINGS_MAX_CONCURRENT_STREAMS of the server's first SETTINGS frame.
fn max_streams(frames: &[(u8, Vec<u8>)]) -> Option<u32> {
    let (_, payload) = frames.iter().find(|(t, p)| *t == 4 && !p.is_empty())?;
    payload
        .chunks(6)
        .find(|c| c.len() == 6 && u16::from_be_bytes([c[0], c[1]]) == 3)
        .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_and_keepalive_reach_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClientOptions {
        max_concurrent_streams: 7,
        ..ClientOptions::default()
    }
    .with_keepalive(Duration::from_millis(300), Duration::from_secs(5));
    let (url, stop, task) = member(dir.path(), options).await;
    let addr = url.trim_start_matches("http://");
    let frames = h2_frames(addr, Duration::from_millis(1500)).await;
    assert_eq!(max_streams(&frames), Some(7), "{frames:?}");
    assert!(
        frames.iter().any(|(t, p)| *t == 6 && p.len() == 8),
        "no keepalive PING within 1.5 s at a 300 ms interval: {frames:?}"
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    // etcd's defaults: no stream limit (math.MaxUint32) and no ping for two hours; a
    // zero interval keeps them, as etcd only applies positive values.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClientOptions::default().with_keepalive(Duration::ZERO, Duration::ZERO);
    assert_eq!(options, ClientOptions::default());
    let (url, stop, task) = member(dir.path(), options).await;
    let frames = h2_frames(
        url.trim_start_matches("http://"),
        Duration::from_millis(800),
    )
    .await;
    assert_eq!(max_streams(&frames), Some(u32::MAX), "{frames:?}");
    assert!(!frames.iter().any(|(t, _)| *t == 6), "{frames:?}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// One HTTP/1.1 request; the status line's code, the response headers (lowercased
/// names) and the body.
async fn http(addr: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("request");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (code, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_whitelist_and_cors_guard_the_http_endpoints_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClientOptions {
        http_access: HttpAccess::new(
            vec!["http://app.example:8080".into()],
            vec!["good.example".into()],
        ),
        ..ClientOptions::default()
    };
    let (url, stop, task) = member(dir.path(), options).await;
    let addr = url.trim_start_matches("http://").to_string();
    let get = |host: &str, extra: &str| {
        format!("GET /version HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
    };

    // A Host not whitelisted: 421 and etcd's text.
    let (code, headers, body) = http(&addr, &get("evil.example:2379", "")).await;
    assert_eq!(code, 421);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    assert_eq!(
        body,
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist \"evil.example\"\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
    );

    // A whitelisted Host, a listed Origin: served, with CORS headers for that origin.
    let (code, headers, body) = http(
        &addr,
        &get("good.example:2379", "Origin: http://app.example:8080\r\n"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"etcdserver\""), "{body}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://app.example:8080")
    );
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
    assert_eq!(
        header(&headers, "access-control-allow-headers"),
        Some("accept, content-type, authorization")
    );

    // Another Origin: served, without CORS headers.
    let (code, headers, _) = http(
        &addr,
        &get("good.example", "Origin: http://other.example:80\r\n"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // A preflight: 200, empty, CORS headers.
    let (code, headers, body) = http(
        &addr,
        "OPTIONS /v3/kv/range HTTP/1.1\r\nHost: good.example\r\nOrigin: http://app.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, ""));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://app.example:8080")
    );

    // gRPC does not pass through the whitelist (its :authority is 127.0.0.1).
    let mut kv = KvClient::new(common::channel(&url).await);
    kv.put(put("k", "v")).await.expect("gRPC is served");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_host_is_served_and_every_origin_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, stop, task) = member(dir.path(), ClientOptions::default()).await;
    let addr = url.trim_start_matches("http://").to_string();
    let (code, headers, _) = http(
        &addr,
        "GET /health HTTP/1.1\r\nHost: anything.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
