//! `--discovery-srv`: SRV records served by an in-test DNS responder on loopback, read by
//! `keel` processes (through `KEEL_DNS_SERVER`) and by the driver in-process.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use keel_core::discovery::{cluster_id, member_id};
use keel_runtime_tokio::pb::etcdserverpb as pb;
use keel_server::bootstrap::Plan;
use keel_server::config::{parse, ServerConfig};
use keel_server::discovery_srv::{plan_with_server, DNS_SERVER_ENV};
use pb::cluster_client::ClusterClient;
use tonic::transport::Channel;

/// An authoritative-only DNS responder on 127.0.0.1 (UDP, ephemeral port) for a fixed zone.
/// Unknown names get NXDOMAIN; known names without records of the asked type an empty
/// NOERROR answer. It stops when dropped.
struct DnsResponder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsResponder {
    /// Serves `zone`, lines of `<name> <TYPE> <rdata in zone-file syntax>`.
    fn start(zone: &[String]) -> Self {
        let records: Vec<Record> = zone
            .iter()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let mut next = || parts.next().expect("zone line: name TYPE rdata");
                let name = Name::from_str(next()).expect("record name");
                let rtype = RecordType::from_str(next()).expect("record type");
                let rdata = RData::try_from_str(rtype, next()).expect("record data");
                Record::from_rdata(name, 5, rdata)
            })
            .collect();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("socket timeout");
        let addr = socket.local_addr().expect("DNS socket address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&records, &buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query message, or None if it does not parse.
fn answer(records: &[Record], query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    let mut known = false;
    for q in &request.queries {
        reply.add_query(q.clone());
        for r in records
            .iter()
            .filter(|r| r.name.eq_ignore_root_case(q.name()))
        {
            known = true;
            if r.record_type() == q.query_type() {
                // Owner name as asked, so a resolver randomising case sees it echoed.
                let mut r = r.clone();
                r.name = q.name().clone();
                reply.add_answer(r);
            }
        }
    }
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().ok()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// `keel` processes, killed and reaped when dropped (also when a test panics).
#[derive(Default)]
struct Processes {
    children: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    /// Starts `keel <args>` asking `dns` for names; stdout and stderr go to `<dir>/<label>.log`.
    fn spawn(&mut self, label: &str, dir: &Path, dns: SocketAddr, args: &[String]) -> usize {
        let log = dir.join(format!("{label}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .env(DNS_SERVER_ENV, dns.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start keel");
        self.children.push((label.to_owned(), child, log));
        self.children.len() - 1
    }

    /// Waits up to `limit` for process `i` to exit; its status and output.
    fn wait_exit(&mut self, i: usize, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let (label, child, log) = &mut self.children[i];
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "{label} still running after {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every process's output, for a failure message.
    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(label, _, log)| {
                format!(
                    "--- {label}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Arguments for member `name` discovering through `domain`, peers on `peer_port`
/// advertised under `peer_host`, clients on `client_port`.
fn member_args(
    name: &str,
    dir: &Path,
    domain: &str,
    peer_host: &str,
    peer_port: u16,
    client_port: u16,
) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    [
        "--name",
        name,
        "--data-dir",
        &dir.join(name).display().to_string(),
        "--discovery-srv",
        domain,
        "--initial-advertise-peer-urls",
        &format!("http://{peer_host}:{peer_port}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer_port}"),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn srv_line(service: &str, domain: &str, port: u16, target: &str) -> String {
    format!("_{service}._tcp.{domain}. SRV 0 0 {port} {target}")
}

/// MemberList (linearizable, so it needs a leader and a quorum) at `client_url`.
async fn member_list(client_url: &str) -> Result<pb::MemberListResponse, tonic::Status> {
    let channel = Channel::from_shared(client_url.to_owned())
        .expect("client url")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    ClusterClient::new(channel)
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .map(|r| r.into_inner())
}

/// Three `keel` processes bootstrap one cluster from `_etcd-server._tcp` records.
///
/// The SRV targets are `localhost.`: the peer transport dials peer URLs through the system
/// resolver, which knows `localhost` but not names only the test responder serves, and
/// the advertised URL must equal the member's SRV URL as a string for keel's bootstrap
/// check. Matching by resolved address with names only the responder knows is covered
/// in-process below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_form_one_cluster_from_srv_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "srv-test-token";
    let members: Vec<(String, u16, u16)> = (1..=3)
        .map(|i| (format!("m{i}"), free_port(), free_port()))
        .collect();
    let mut zone: Vec<String> = members
        .iter()
        .map(|(_, peer, _)| srv_line("etcd-server", "keel.test", *peer, "localhost."))
        .collect();
    zone.push("localhost. A 127.0.0.1".to_owned());
    let dns = DnsResponder::start(&zone);

    let mut procs = Processes::default();
    for (name, peer, client) in &members {
        let mut args = member_args(name, dir.path(), "keel.test", "localhost", *peer, *client);
        args.extend(["--initial-cluster-token".to_owned(), token.to_owned()]);
        procs.spawn(name, dir.path(), dns.addr, &args);
    }

    let expected_ids: BTreeSet<u64> = members
        .iter()
        .map(|(_, peer, _)| member_id(&[format!("http://localhost:{peer}")], token, None))
        .collect();
    let expected_cluster = cluster_id(&expected_ids.iter().copied().collect::<Vec<_>>());

    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, _, client) in &members {
        let url = format!("http://127.0.0.1:{client}");
        let resp = loop {
            match member_list(&url).await {
                Ok(r) if r.members.len() == 3 => break r,
                other => {
                    for i in 0..procs.children.len() {
                        if let Some(status) = procs.children[i].1.try_wait().expect("try_wait") {
                            panic!("a member exited ({status}):\n{}", procs.logs());
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{name}: no 3-member cluster in 30 s (last: {other:?}):\n{}",
                        procs.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let ids: BTreeSet<u64> = resp.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, expected_ids, "{name}: member IDs");
        let header = resp.header.expect("response header");
        assert_eq!(header.cluster_id, expected_cluster, "{name}: cluster ID");
        let peer_urls: BTreeSet<String> = resp
            .members
            .iter()
            .flat_map(|m| m.peer_ur_ls.clone())
            .collect();
        let want: BTreeSet<String> = members
            .iter()
            .map(|(_, peer, _)| format!("http://localhost:{peer}"))
            .collect();
        assert_eq!(peer_urls, want, "{name}: peer URLs");
    }
}

/// A member whose advertised URL is in no record exits with etcd's message.
#[test]
fn member_missing_from_records_exits_with_etcds_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dns = DnsResponder::start(&[
        srv_line("etcd-server", "keel.test", 12380, "m1.keel.test."),
        "m1.keel.test. A 127.0.0.1".to_owned(),
    ]);
    let mut procs = Processes::default();
    let args = member_args(
        "m4",
        dir.path(),
        "keel.test",
        "127.0.0.1",
        free_port(),
        free_port(),
    );
    let i = procs.spawn("m4", dir.path(), dns.addr, &args);
    let (status, log) = procs.wait_exit(i, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "error setting up initial cluster: cannot find local etcd member \"m4\" in SRV records"
        ),
        "{log}"
    );
    assert!(!dir.path().join("m4").join("member").exists(), "{log}");
}

/// No records at all: both lookups' failures, worded as etcd words them.
#[test]
fn no_records_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dns = DnsResponder::start(&[]);
    let mut procs = Processes::default();
    let args = member_args(
        "m1",
        dir.path(),
        "empty.test",
        "127.0.0.1",
        free_port(),
        free_port(),
    );
    let i = procs.spawn("m1", dir.path(), dns.addr, &args);
    let (status, log) = procs.wait_exit(i, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{log}");
    let server = dns.addr;
    let want = format!(
        "error setting up initial cluster: \
         error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.empty.test on {server}: no such host; \
         error querying DNS SRV records for _etcd-server lookup _etcd-server._tcp.empty.test on {server}: no such host"
    );
    assert!(log.contains(&want), "want {want}\n{log}");
}

fn config(args: &[String]) -> ServerConfig {
    parse(
        std::iter::once("keel".to_owned()).chain(args.iter().cloned()),
        &|_: &str| None,
    )
    .expect("valid flags")
}

fn srv_args(name: &str, advertise: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--name",
        name,
        "--discovery-srv",
        "keel.test",
        "--initial-advertise-peer-urls",
        advertise,
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// `--discovery-srv-name` queries the suffixed records only, and an advertised URL given
/// by address matches the record whose target resolves to it; the URLs (and so the IDs)
/// keep the SRV target names.
#[tokio::test]
async fn discovery_srv_name_selects_suffixed_records() {
    let dns = DnsResponder::start(&[
        srv_line("etcd-server-blue", "keel.test", 12380, "m1.keel.test."),
        srv_line("etcd-server-blue", "keel.test", 22380, "m2.keel.test."),
        srv_line("etcd-server-blue", "keel.test", 32380, "m3.keel.test."),
        srv_line("etcd-server", "keel.test", 42380, "other.keel.test."),
        "m1.keel.test. A 127.0.0.1".to_owned(),
        "m2.keel.test. A 127.0.0.2".to_owned(),
        "m3.keel.test. A 127.0.0.3".to_owned(),
        "other.keel.test. A 127.0.0.4".to_owned(),
    ]);
    let cfg = config(&srv_args(
        "m2",
        "http://127.0.0.2:22380",
        &[
            "--discovery-srv-name",
            "blue",
            "--initial-cluster-token",
            "blue-token",
        ],
    ));
    let plan = plan_with_server(&cfg, "keel.test", Some(dns.addr))
        .await
        .expect("plan");
    assert_eq!(
        plan,
        Plan::New {
            initial_cluster: "0=http://m1.keel.test:12380,m2=http://m2.keel.test:22380,1=http://m3.keel.test:32380".to_owned(),
            token: "blue-token".to_owned(),
        }
    );
    // Unsuffixed, the same member finds only `other`, which is not itself.
    let cfg = config(&srv_args("m2", "http://127.0.0.2:22380", &[]));
    let e = plan_with_server(&cfg, "keel.test", Some(dns.addr))
        .await
        .expect_err("m2 is not in the unsuffixed records");
    assert_eq!(
        e,
        "error setting up initial cluster: cannot find local etcd member \"m2\" in SRV records"
    );
}

/// The advertised URL's host name is resolved through the same server as the records;
/// a target that does not resolve is skipped; an AAAA-only target matches `[::1]`.
#[tokio::test]
async fn host_names_resolve_through_the_configured_server() {
    let dns = DnsResponder::start(&[
        srv_line("etcd-server-ssl", "keel.test", 12380, "m1.keel.test."),
        srv_line("etcd-server-ssl", "keel.test", 22380, "gone.keel.test."),
        srv_line("etcd-server-ssl", "keel.test", 32380, "v6.keel.test."),
        "m1.keel.test. A 127.0.0.1".to_owned(),
        format!("v6.keel.test. AAAA {}", Ipv6Addr::LOCALHOST),
        "node1.keel.test. A 127.0.0.1".to_owned(),
    ]);
    let by_name = config(&srv_args("n1", "https://node1.keel.test:12380", &[]));
    let plan = plan_with_server(&by_name, "keel.test", Some(dns.addr))
        .await
        .expect("plan");
    let Plan::New {
        initial_cluster,
        token,
    } = plan
    else {
        panic!("expected a new cluster, got {plan:?}");
    };
    assert_eq!(
        initial_cluster,
        "n1=https://m1.keel.test:12380,0=https://v6.keel.test:32380"
    );
    assert_eq!(token, "etcd-cluster");

    let by_v6 = config(&srv_args("n3", "https://[::1]:32380", &[]));
    let plan = plan_with_server(&by_v6, "keel.test", Some(dns.addr))
        .await
        .expect("plan");
    assert_eq!(
        plan,
        Plan::New {
            initial_cluster: "0=https://m1.keel.test:12380,n3=https://v6.keel.test:32380"
                .to_owned(),
            token: "etcd-cluster".to_owned(),
        }
    );

    let unknown_host = config(&srv_args("n1", "https://nohost.keel.test:12380", &[]));
    let e = plan_with_server(&unknown_host, "keel.test", Some(dns.addr))
        .await
        .expect_err("the advertised host does not resolve");
    let server = dns.addr;
    assert_eq!(
        e,
        format!(
            "error setting up initial cluster: lookup nohost.keel.test on {server}: no such host; \
             lookup nohost.keel.test on {server}: no such host"
        )
    );
}

/// A single-member keel cluster named `name` serving clients on `client_port`.
fn lone_member_args(name: &str, dir: &Path, client_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    [
        "--name",
        name,
        "--data-dir",
        &dir.join(name).display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("{name}={peer}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The name of the member that answers a MemberList on a new connection to `url`.
async fn answering_member(url: &str) -> Result<String, tonic::Status> {
    let resp = member_list(url).await?;
    Ok(resp
        .members
        .first()
        .map(|m| m.name.clone())
        .unwrap_or_default())
}

/// Starts members named `a` and `b` (two one-member clusters) on client ports `pa` and
/// `pb` and waits until both answer.
async fn members_a_and_b(procs: &mut Processes, dir: &Path, dns: SocketAddr, pa: u16, pb: u16) {
    procs.spawn("a", dir, dns, &lone_member_args("a", dir, pa));
    procs.spawn("b", dir, dns, &lone_member_args("b", dir, pb));
    for port in [pa, pb] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while answering_member(&format!("http://127.0.0.1:{port}"))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "member on {port} not up:\n{}",
                procs.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts `keel gateway start <args>` on a free port; the names of the members that
/// answer `connections` connections through it.
async fn through_gateway(
    procs: &mut Processes,
    dir: &Path,
    dns: SocketAddr,
    label: &str,
    args: &[&str],
    connections: usize,
) -> BTreeSet<String> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["gateway", "start", "--listen-addr", &listen];
    all.extend_from_slice(args);
    let all: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
    let i = procs.spawn(label, dir, dns, &all);
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = BTreeSet::new();
    while seen.is_empty() {
        match answering_member(&url).await {
            Ok(name) => {
                seen.insert(name);
            }
            Err(e) => {
                if let Some(status) = procs.children[i].1.try_wait().expect("try_wait") {
                    panic!("{label} exited ({status}):\n{}", procs.logs());
                }
                assert!(Instant::now() < deadline, "{label}: {e}\n{}", procs.logs());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for _ in 1..connections {
        seen.insert(answering_member(&url).await.expect("through the gateway"));
    }
    let _ = procs.children[i].1.kill();
    seen
}

/// `keel gateway start --discovery-srv`: the gateway forwards to the members the
/// `_etcd-client` records name (target names only the test responder knows), round
/// robin; unless `--insecure-discovery`, only https records that accept a connection
/// are used (etcd 3.4 dials TCP without a handshake), and with none it falls back to
/// `--endpoints`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_forwards_to_the_members_srv_records_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pa, pb, dead) = (free_port(), free_port(), free_port());
    let dns = DnsResponder::start(&[
        srv_line("etcd-client", "gw.test", pa, "a.gw.test."),
        srv_line("etcd-client", "gw.test", pb, "b.gw.test."),
        srv_line("etcd-client-ssl", "gw.test", pa, "a.gw.test."),
        srv_line("etcd-client-ssl", "gw.test", dead, "a.gw.test."),
        srv_line("etcd-client-blue", "gw.test", pb, "b.gw.test."),
        "a.gw.test. A 127.0.0.1".to_owned(),
        "b.gw.test. A 127.0.0.1".to_owned(),
    ]);
    let mut procs = Processes::default();
    members_a_and_b(&mut procs, dir.path(), dns.addr, pa, pb).await;
    let fallback = format!("127.0.0.1:{pb}");
    let both: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();

    // Insecure discovery: every record (https ones included), round robin.
    let seen = through_gateway(
        &mut procs,
        dir.path(),
        dns.addr,
        "gw-insecure",
        &[
            "--discovery-srv",
            "gw.test",
            "--insecure-discovery",
            "--endpoints",
            "127.0.0.1:1",
        ],
        6,
    )
    .await;
    assert_eq!(seen, both, "{}", procs.logs());

    // Validated: the reachable https record (member a) only; http ones are insecure.
    let seen = through_gateway(
        &mut procs,
        dir.path(),
        dns.addr,
        "gw-secure",
        &["--discovery-srv", "gw.test", "--endpoints", &fallback],
        4,
    )
    .await;
    assert_eq!(seen, ["a".to_owned()].into(), "{}", procs.logs());

    // --discovery-srv-name blue: one http record, insecure, so none is kept: the
    // gateway falls back to --endpoints (member b).
    let seen = through_gateway(
        &mut procs,
        dir.path(),
        dns.addr,
        "gw-blue",
        &[
            "--discovery-srv",
            "gw.test",
            "--discovery-srv-name",
            "blue",
            "--endpoints",
            &fallback,
        ],
        3,
    )
    .await;
    assert_eq!(seen, ["b".to_owned()].into(), "{}", procs.logs());
    // ... and with --insecure-discovery that record itself is used.
    let seen = through_gateway(
        &mut procs,
        dir.path(),
        dns.addr,
        "gw-blue-insecure",
        &[
            "--discovery-srv",
            "gw.test",
            "--discovery-srv-name",
            "blue",
            "--insecure-discovery",
            "--endpoints",
            "127.0.0.1:1",
        ],
        3,
    )
    .await;
    assert_eq!(seen, ["b".to_owned()].into(), "{}", procs.logs());

    // No records: etcd's error on stderr, exit status 1.
    let i = procs.spawn(
        "gw-none",
        dir.path(),
        dns.addr,
        &[
            "gateway".to_owned(),
            "start".to_owned(),
            "--discovery-srv".to_owned(),
            "none.test".to_owned(),
            "--listen-addr".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ],
    );
    let (status, log) = procs.wait_exit(i, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{log}");
    let server = dns.addr;
    let want = format!(
        "dns lookup errors: lookup _etcd-client-ssl._tcp.none.test on {server}: no such host and \
         lookup _etcd-client._tcp.none.test on {server}: no such host\n"
    );
    assert!(log.ends_with(&want), "want {want}\n{log}");
}
