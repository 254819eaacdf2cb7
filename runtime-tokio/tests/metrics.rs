//! `/metrics` and the health probes of a running cluster: every metric etcd's dashboard
//! and alerts read is there, the whole exposition parses, and `/health`, `/livez` and
//! `/readyz` answer as etcd does, healthy, with alarms, and without a quorum.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use keel_runtime_tokio::pb::etcdserverpb::lease_client::LeaseClient;
use keel_runtime_tokio::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_runtime_tokio::pb::etcdserverpb::{
    request_op, AlarmRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One plain HTTP/1.1 request; (status, headers lowercased, body).
async fn http(url: &str, method: &str, path: &str) -> (u16, HashMap<String, String>, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn required_names() -> Vec<&'static str> {
    include_str!("data/etcd_dashboard_metrics.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect()
}

/// The exposition parsed by a Prometheus text parser: sample name → (labels, value).
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses")
}

/// The sample names a query can read: a histogram family `h` gives `h_bucket`,
/// `h_sum` and `h_count`.
fn sample_names(scrape: &prometheus_parse::Scrape) -> Vec<String> {
    let mut names = Vec::new();
    for s in &scrape.samples {
        match s.value {
            prometheus_parse::Value::Histogram(_) => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{}{suffix}", s.metric));
                }
            }
            _ => names.push(s.metric.clone()),
        }
    }
    names
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_hold_every_dashboard_name_and_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = plan(3).await;
    let (mut ms, urls) = plan.start_all(dir.path(), |_| {}).await;
    let leader = wait_leader(&urls).await;
    let mut kv = ms[0].kv().await;
    retry(|| {
        let mut kv = kv.clone();
        async move { kv.put(put("k", "v")).await }
    })
    .await
    .expect("put");
    kv.range(get("k")).await.expect("get");
    let future = RangeRequest {
        revision: 1000,
        ..get("k")
    };
    let err = kv.range(future).await.expect_err("a future revision");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    let mut mc = MaintenanceClient::new(channel(&urls[0]).await);
    mc.hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("hashkv");

    let (status, headers, text) = http(&urls[0], "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let scrape = parse(&text);
    let names = sample_names(&scrape);
    let missing: Vec<_> = required_names()
        .into_iter()
        .filter(|n| !names.iter().any(|have| have == n))
        .collect();
    assert!(missing.is_empty(), "missing from /metrics: {missing:?}");

    // etcd's types: these two are gauges in etcd, whatever their names say.
    let types: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for (name, kind) in [
        ("etcd_server_proposals_committed_total", "gauge"),
        ("etcd_disk_wal_write_bytes_total", "gauge"),
        ("etcd_server_leader_changes_seen_total", "counter"),
        ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
        ("grpc_server_handling_seconds", "histogram"),
    ] {
        assert_eq!(types.get(name), Some(&kind), "{name}");
    }
    // etcd's bucket layout: 1 ms doubling, 14 buckets (+Inf besides).
    let fsync_buckets = text
        .lines()
        .filter(|l| l.starts_with("etcd_disk_wal_fsync_duration_seconds_bucket"))
        .count();
    assert_eq!(fsync_buckets, 15);

    // Real values, not constants.
    let put_labels = [
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Put"),
        ("grpc_type", "unary"),
    ];
    assert!(value(&scrape, "grpc_server_started_total", &put_labels) >= 1.0);
    assert!(value(&scrape, "grpc_server_msg_received_total", &put_labels) >= 1.0);
    assert!(value(&scrape, "grpc_server_msg_sent_total", &put_labels) >= 1.0);
    let put_ok = [put_labels.as_slice(), &[("grpc_code", "OK")]].concat();
    assert!(value(&scrape, "grpc_server_handled_total", &put_ok) >= 1.0);
    let range_oor = [("grpc_method", "Range"), ("grpc_code", "OutOfRange")];
    assert_eq!(value(&scrape, "grpc_server_handled_total", &range_oor), 1.0);
    assert!(value(&scrape, "etcd_network_client_grpc_sent_bytes_total", &[]) > 0.0);
    assert!(
        value(
            &scrape,
            "etcd_network_client_grpc_received_bytes_total",
            &[]
        ) > 0.0
    );
    assert!(value(&scrape, "etcd_server_proposals_committed_total", &[]) >= 2.0);
    assert!(value(&scrape, "etcd_server_proposals_applied_total", &[]) >= 2.0);
    assert!(value(&scrape, "etcd_disk_wal_fsync_duration_seconds", &[]) >= 1.0);
    assert!(value(&scrape, "etcd_disk_wal_write_bytes_total", &[]) > 0.0);
    assert!(value(&scrape, "etcd_mvcc_hash_rev_duration_seconds", &[]) >= 1.0);
    assert_eq!(value(&scrape, "etcd_server_has_leader", &[]), 1.0);
    assert!(value(&scrape, "etcd_debugging_mvcc_current_revision", &[]) >= 2.0);
    assert!(value(&scrape, "etcd_network_peer_sent_bytes_total", &[]) > 0.0);
    assert!(value(&scrape, "etcd_network_peer_received_bytes_total", &[]) > 0.0);
    // A member dials a peer when it first has a message for it: a follower may never
    // dial the other follower, the leader dials both (its heartbeats). So the
    // per-connection figures are the leader's.
    let li = ms
        .iter()
        .position(|m| m.id == leader)
        .expect("the leader is a member");
    let (_, _, leader_text) = http(&urls[li], "GET", "/metrics").await;
    let leader_scrape = parse(&leader_text);
    assert!(
        value(
            &leader_scrape,
            "etcd_network_peer_round_trip_time_seconds",
            &[]
        ) >= 2.0
    );
    assert_eq!(value(&leader_scrape, "etcd_network_active_peers", &[]), 2.0);
    assert_eq!(
        value(
            &scrape,
            "etcd_server_id",
            &[("server_id", &format!("{:x}", ms[0].id))]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "etcd_server_version",
            &[("server_version", "3.4.23")]
        ),
        1.0
    );
    assert!(value(&scrape, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&scrape, "process_open_fds", &[]) > 0.0);

    for m in &mut ms {
        m.stop().await;
    }
}

/// etcd_mvcc_{put,delete,range,txn}_total and the put size after a known sequence, on
/// the member that served it and on the others: the figures a 3-member etcd 3.4.23 shows
/// after the same requests from etcdctl (`put k1 v1`, `put k2 v2`, `put k3 v3`, a txn
/// putting x=v1 and y=v2, `del k1`, `get k2`, `get k3 --consistency=s`). Writes count on
/// every member as they apply; ranges where they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mvcc_operations_count_as_etcd_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = plan(3).await;
    let (mut ms, urls) = plan.start_all(dir.path(), |_| {}).await;
    let leader = wait_leader(&urls).await;
    let mut kv = ms[0].kv().await;
    for k in 1..=3 {
        let (k, v) = (format!("k{k}"), format!("v{k}"));
        retry(|| {
            let mut kv = kv.clone();
            let p = put(&k, &v);
            async move { kv.put(p).await }
        })
        .await
        .expect("put");
    }
    let op = |k: &str, v: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, v))),
    };
    let txn = TxnRequest {
        success: vec![op("x", "v1"), op("y", "v2")],
        ..TxnRequest::default()
    };
    kv.txn(txn).await.expect("txn");
    let del = DeleteRangeRequest {
        key: b"k1".to_vec().into(),
        ..DeleteRangeRequest::default()
    };
    kv.delete_range(del).await.expect("delete");
    kv.range(get("k2")).await.expect("get");
    let serializable = RangeRequest {
        serializable: true,
        ..get("k3")
    };
    kv.range(serializable).await.expect("serializable get");

    let names = [
        "etcd_mvcc_put_total",
        "etcd_mvcc_delete_total",
        "etcd_mvcc_range_total",
        "etcd_mvcc_txn_total",
        "etcd_debugging_mvcc_total_put_size_in_bytes",
    ];
    for (i, url) in urls.iter().enumerate() {
        let ranges = if i == 0 { 2.0 } else { 0.0 };
        let want = [5.0, 1.0, ranges, 1.0, 18.0];
        // A follower may apply the last entries a moment after the leader answered.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let scrape = parse(&http(url, "GET", "/metrics").await.2);
            let got = names.map(|n| value(&scrape, n, &[]));
            if got == want || tokio::time::Instant::now() > deadline {
                assert_eq!(got, want, "member {i}: {names:?}");
                // etcd 3.4 still exports the etcd_debugging_ twins of the counters.
                for n in &names[..4] {
                    let twin = n.replace("etcd_mvcc", "etcd_debugging_mvcc");
                    assert_eq!(value(&scrape, &twin, &[]), value(&scrape, n, &[]), "{twin}");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A lease left to expire: the leader's lessor revokes it, and the leader alone
    // counts it (etcd_debugging_server_lease_expired_total).
    let mut lc = LeaseClient::new(channel(&urls[0]).await);
    lc.lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .expect("lease grant");
    let expired = |scrape: &prometheus_parse::Scrape| {
        value(scrape, "etcd_debugging_server_lease_expired_total", &[])
    };
    let li = ms
        .iter()
        .position(|m| m.id == leader)
        .expect("the leader is a member");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while expired(&parse(&http(&urls[li], "GET", "/metrics").await.2)) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, url) in urls.iter().enumerate() {
        let want = if i == li { 1.0 } else { 0.0 };
        assert_eq!(
            expired(&parse(&http(url, "GET", "/metrics").await.2)),
            want,
            "member {i}"
        );
    }
    for m in &mut ms {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_answer_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = plan(3).await;
    let (mut ms, urls) = plan.start_all(dir.path(), |_| {}).await;
    wait_leader(&urls).await;
    let url = &urls[0];
    let ok = |s: u16, b: &str| (s, b.to_string());
    let get = |path: &'static str| async move {
        let (s, _, b) = http(url, "GET", path).await;
        (s, b)
    };

    assert_eq!(get("/health").await, ok(200, "{\"health\":\"true\"}"));
    assert_eq!(
        get("/health?serializable=true").await,
        ok(200, "{\"health\":\"true\"}")
    );
    assert_eq!(get("/livez").await, ok(200, "ok\n"));
    assert_eq!(get("/readyz").await, ok(200, "ok\n"));
    assert_eq!(
        get("/livez?verbose").await,
        ok(200, "[+]serializable_read ok\nok\n")
    );
    assert_eq!(
        get("/readyz?verbose").await,
        ok(
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
        )
    );
    assert_eq!(
        get("/readyz?verbose&exclude=linearizable_read&exclude=nonexistent").await,
        ok(200, "[+]data_corruption ok\n[+]serializable_read ok\nok\n")
    );
    assert_eq!(
        get("/readyz/linearizable_read?verbose").await,
        ok(200, "[+]linearizable_read ok\nok\n")
    );
    let (s, h, b) = http(url, "POST", "/readyz").await;
    assert_eq!((s, b.as_str()), (405, "Method Not Allowed\n"));
    assert_eq!(h.get("allow").map(String::as_str), Some("GET"));

    // Alarms: NOSPACE fails /health unless excluded and leaves /readyz alone; CORRUPT
    // fails /readyz's data_corruption check.
    let mut mc = MaintenanceClient::new(channel(url).await);
    let activate = |alarm: i32| AlarmRequest {
        action: 1,
        member_id: ms[0].id,
        alarm,
    };
    mc.alarm(activate(1)).await.expect("NOSPACE");
    assert_eq!(get("/health").await, ok(503, "{\"health\":\"false\"}\n"));
    assert_eq!(
        get("/health?exclude=NOSPACE").await,
        ok(200, "{\"health\":\"true\"}")
    );
    assert_eq!(get("/readyz").await, ok(200, "ok\n"));
    mc.alarm(activate(2)).await.expect("CORRUPT");
    assert_eq!(
        get("/health?exclude=NOSPACE").await,
        ok(503, "{\"health\":\"false\"}\n")
    );
    assert_eq!(
        get("/readyz").await,
        ok(
            503,
            "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n[+]linearizable_read ok\n\n"
        )
    );
    assert_eq!(
        get("/readyz?exclude=data_corruption").await,
        ok(200, "ok\n")
    );
    for alarm in [1, 2] {
        let disarm = AlarmRequest {
            action: 2,
            ..activate(alarm)
        };
        mc.alarm(disarm).await.expect("disarm");
    }
    assert_eq!(get("/health").await, ok(200, "{\"health\":\"true\"}"));

    // Without a quorum: alive (local reads), not ready, and /health false unless
    // serializable.
    ms[1].stop().await;
    ms[2].stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get("/health").await.0 == 200 {
        assert!(tokio::time::Instant::now() < deadline, "leader never lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get("/health").await, ok(503, "{\"health\":\"false\"}\n"));
    assert_eq!(
        get("/health?serializable=true").await,
        ok(200, "{\"health\":\"true\"}")
    );
    assert_eq!(get("/livez").await, ok(200, "ok\n"));
    let (s, b) = get("/readyz").await;
    assert_eq!(s, 503);
    assert!(
        b.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: "),
        "{b}"
    );
    ms[0].stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_listener_serves_metrics_and_probes_only() {
    use keel_runtime_tokio::serve::{self, Listener, Listeners};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = plan(1).await;
    let cfg = config(&plan, 0, dir.path());
    let (client, peer) = plan.take_listeners(0).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let murl = format!("http://{}", metrics.local_addr().expect("addr"));
    let listeners = Listeners {
        client: vec![Listener::from(client)],
        peers: vec![Listener::from(peer)],
        metrics: vec![Listener::from(metrics)],
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::run_on(
        cfg,
        listeners,
        keel_runtime_tokio::tls::PeerDialer::plain(),
        serve::ClientOptions::default(),
        async move {
            let _ = stopped.await;
        },
        |_| {},
    ));
    wait_leader(&[plan.members[0].client_urls[0].clone()]).await;
    let (s, _, text) = http(&murl, "GET", "/metrics").await;
    assert_eq!(s, 200);
    assert!(text.contains("\netcd_server_has_leader 1\n"), "{text}");
    assert_eq!(
        http(&murl, "GET", "/health").await.2,
        "{\"health\":\"true\"}"
    );
    assert_eq!(http(&murl, "GET", "/livez").await.2, "ok\n");
    assert_eq!(http(&murl, "GET", "/readyz").await.2, "ok\n");
    // etcd's metrics mux has no /version (nor gRPC).
    assert_eq!(http(&murl, "GET", "/version").await.0, 404);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
