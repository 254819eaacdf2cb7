//! The client listener as etcd's flags shape it: `--max-concurrent-streams` is the
//! HTTP/2 setting the server announces, `--grpc-keepalive-interval` makes it ping, and
//! `--host-whitelist` / `--cors` guard its plain HTTP endpoints as etcd 3.4's
//! accessController does, leaving gRPC alone, `--grpc-keepalive-min-time` sends away a
//! client that pings too often as grpc-go does, and `--enable-grpc-gateway=false` turns
//! `/v3/...` into unknown paths. Loopback only, every wait bounded.

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

/// A raw HTTP/2 connection: frames written by hand, read whole.
struct RawH2 {
    s: TcpStream,
    buf: Vec<u8>,
}

/// What the server did with a frame read.
enum Read {
    Frame(u8, u8, Vec<u8>),
    Closed,
    TimedOut,
}

impl RawH2 {
    /// Connects, sends the preface and an empty SETTINGS, and, with `open_stream`, a
    /// Watch call whose first request never comes (the stream stays open and the server
    /// has nothing to say on it).
    async fn connect(addr: &str, open_stream: bool) -> RawH2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        if open_stream {
            let mut block = Vec::new();
            for (name, value) in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/etcdserverpb.Watch/Watch"),
                (":authority", addr),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ] {
                // HPACK: literal without indexing, new name, no Huffman coding.
                block.push(0);
                for text in [name, value] {
                    block.push(u8::try_from(text.len()).expect("short"));
                    block.extend_from_slice(text.as_bytes());
                }
            }
            hello.extend(frame(1, 0x4, 1, &block)); // HEADERS, END_HEADERS
        }
        s.write_all(&hello).await.expect("preface");
        RawH2 { s, buf: Vec::new() }
    }

    async fn read(&mut self, deadline: tokio::time::Instant) -> Read {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Read::Frame(f[3], f[4], f[9..].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return Read::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until `deadline`, acknowledging the server's SETTINGS; the GOAWAY or end
    /// of connection seen, if any (None: still open).
    async fn listen(
        &mut self,
        deadline: tokio::time::Instant,
        ack: Option<[u8; 8]>,
    ) -> Option<String> {
        loop {
            match self.read(deadline).await {
                Read::TimedOut => return None,
                Read::Closed => return Some("closed".into()),
                Read::Frame(6, 1, data) if Some(&data[..]) == ack.as_ref().map(|a| &a[..]) => {
                    return Some("ACK".into())
                }
                Read::Frame(7, _, p) => {
                    let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    let debug = String::from_utf8_lossy(&p[8..]);
                    let end = match self
                        .read(tokio::time::Instant::now() + Duration::from_secs(3))
                        .await
                    {
                        Read::Closed => "closed",
                        _ => "still open",
                    };
                    return Some(format!(
                        "GOAWAY code=0x{code:x} debug={debug} last_stream={last}, then {end}"
                    ));
                }
                Read::Frame(4, 0, _) => {
                    let _ = self.s.write_all(&frame(4, 1, 0, &[])).await;
                }
                Read::Frame(..) => {}
            }
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(payload.len()).expect("small").to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Pings `count` times `gap` apart, each after the previous one's ACK; one line per
/// answer, as server/conformance/h2_pings.py prints them.
async fn ping_session(addr: &str, open_stream: bool, count: u8, gap: Duration) -> Vec<String> {
    let mut c = RawH2::connect(addr, open_stream).await;
    let mut seen = Vec::new();
    for n in 1..=count {
        let data = [b'k', b'e', b'e', b'l', 0, 0, 0, n];
        c.s.write_all(&frame(6, 0, 0, &data)).await.expect("ping");
        let answer = c
            .listen(
                tokio::time::Instant::now() + Duration::from_secs(3),
                Some(data),
            )
            .await;
        let answer = answer.unwrap_or_else(|| "no answer".into());
        seen.push(format!("ping {n}: {answer}"));
        if answer != "ACK" {
            return seen;
        }
        let wait = if n < count {
            gap
        } else {
            Duration::from_millis(500)
        };
        if let Some(end) = c.listen(tokio::time::Instant::now() + wait, None).await {
            seen.push(format!("after ping {n}: {end}"));
            return seen;
        }
    }
    seen.push("connection kept".into());
    seen
}

fn acks(n: u8) -> Vec<String> {
    (1..=n).map(|i| format!("ping {i}: ACK")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinging_too_often_is_sent_away_as_grpc_go_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let min = Duration::from_millis(300);
    let options = ClientOptions {
        keepalive_min_time: min,
        ..ClientOptions::default()
    };
    let (url, stop, task) = member(dir.path(), options).await;
    let addr = url.trim_start_matches("http://");
    let sent_away = |last_stream: u32| {
        let mut lines = acks(4);
        lines.push(format!(
            "after ping 4: GOAWAY code=0xb debug=too_many_pings last_stream={last_stream}, then closed"
        ));
        lines
    };

    // With a stream open: pings closer than the minimum are strikes; the third strike
    // (the fourth ping) ends the connection.
    let fast = min / 6;
    assert_eq!(ping_session(addr, true, 6, fast).await, sent_away(1));
    // Pings the minimum apart keep the connection.
    let mut kept = acks(5);
    kept.push("connection kept".into());
    assert_eq!(ping_session(addr, true, 5, min + min / 3).await, kept);
    // With no stream open, pings must be two hours apart (PermitWithoutStream false).
    assert_eq!(ping_session(addr, false, 6, fast).await, sent_away(0));
    assert_eq!(
        ping_session(addr, false, 5, min + min / 3).await,
        sent_away(0)
    );

    // HTTP/1 on the same port is not HTTP/2 and passes untouched.
    let (code, _, body) = http(
        addr,
        "GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // gRPC clients (which ping rarely, or not at all) are served as before.
    let mut kv = KvClient::new(common::channel(&url).await);
    kv.put(put("k", "v")).await.expect("gRPC is served");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_grpc_gateway_v3_paths_are_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClientOptions {
        grpc_gateway: false,
        ..ClientOptions::default()
    };
    let (url, stop, task) = member(dir.path(), options).await;
    let addr = url.trim_start_matches("http://");
    for path in ["/v3/kv/range", "/v3beta/kv/range", "/v3/maintenance/status"] {
        let (code, headers, body) = http(
            addr,
            &format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
        )
        .await;
        assert_eq!(
            (code, body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    // The other HTTP endpoints and gRPC stay.
    let (code, _, _) = http(
        addr,
        "GET /version HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    let mut kv = KvClient::new(common::channel(&url).await);
    kv.put(put("k", "v")).await.expect("gRPC is served");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
