//! TLS on the client and peer listeners, with certificates made here by rcgen: client
//! certificate authentication refuses clients at the handshake (no certificate, a
//! foreign CA, an expired certificate) and admits a good one; certificates and trusted
//! CAs are re-read when their files change; three members form a cluster over TLS on
//! both listeners (CA-verified and auto TLS); a member whose peer certificate comes from
//! another CA cannot take part. Loopback only, every wait bounded.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, plan, put, Plan};
use keel_runtime_tokio::pb::etcdserverpb as pb;
use keel_runtime_tokio::peer::fetch_members_with;
use keel_runtime_tokio::serve::{self, Listener};
use keel_runtime_tokio::tls::{PeerDialer, PeerIo, Side, SideTls, TlsError, TlsFlags, TlsPolicy};
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("ca cert");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `hosts` usable by servers and clients; `expired` puts its
    /// validity in the past.
    fn issue(&self, hosts: &[&str], expired: bool) -> Pair {
        let mut p = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, "keel test");
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("cert");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A certificate and its key, PEM.
struct Pair {
    cert: String,
    key: String,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write pem");
    p
}

/// Flags serving `pair` (written to `dir` as `<name>.crt`/`<name>.key`); with `ca`,
/// client certificates are required and verified against it.
fn files(dir: &Path, name: &str, pair: &Pair, ca: Option<&Ca>) -> TlsFlags {
    TlsFlags {
        cert_file: Some(write(dir, &format!("{name}.crt"), &pair.cert)),
        key_file: Some(write(dir, &format!("{name}.key"), &pair.key)),
        trusted_ca_file: ca.map(|ca| write(dir, &format!("{name}-ca.crt"), &ca.pem())),
        client_cert_auth: ca.is_some(),
        auto_tls: false,
        ..TlsFlags::default()
    }
}

fn load(side: Side, flags: &TlsFlags) -> SideTls {
    SideTls::load(side, flags, &TlsPolicy::default(), &["127.0.0.1".into()]).expect("tls loads")
}

/// A member started here; stopped at the end of the test.
struct Member {
    client_url: String,
    peer_url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Member {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// `n` members on loopback with https client and/or peer URLs.
async fn https_plan(n: usize, client_https: bool, peer_https: bool) -> Plan {
    let mut p = plan(n).await;
    for m in &mut p.members {
        if client_https {
            m.client_urls = m
                .client_urls
                .iter()
                .map(|u| u.replace("http://", "https://"))
                .collect();
        }
        if peer_https {
            m.peer_urls = m
                .peer_urls
                .iter()
                .map(|u| u.replace("http://", "https://"))
                .collect();
        }
    }
    p
}

async fn start(
    p: &mut Plan,
    i: usize,
    dir: &Path,
    client: Option<&SideTls>,
    peer: Option<&SideTls>,
) -> Member {
    start_with(p, i, dir, client, peer, false).await
}

/// As [`start`]; with `also_plain` the TLS client socket serves plaintext too.
async fn start_with(
    p: &mut Plan,
    i: usize,
    dir: &Path,
    client: Option<&SideTls>,
    peer: Option<&SideTls>,
    also_plain: bool,
) -> Member {
    let cfg = config(p, i, dir);
    let (c, l) = p.take_listeners(i).await;
    let client_tls = client.map(|t| t.server_config(ALPN).expect("server config"));
    let peer_tls = peer.map(|t| t.server_config(&[]).expect("server config"));
    let dialer = peer.map_or_else(PeerDialer::plain, |t| t.dialer().expect("dialer"));
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve::run_with_tls(
        cfg,
        vec![Listener {
            socket: c.into(),
            tls: client_tls,
            also_plain,
            cert_names_user: client.is_some_and(SideTls::certificate_names_user),
        }],
        vec![Listener {
            socket: l.into(),
            tls: peer_tls,
            also_plain: false,
            cert_names_user: false,
        }],
        dialer,
        async move {
            let _ = rx.await;
        },
        |_| {},
    ));
    Member {
        client_url: p.members[i].client_urls[0].clone(),
        peer_url: p.members[i].peer_urls[0].clone(),
        stop: tx,
        task,
    }
}

/// A gRPC channel to an https member, trusting `ca`, presenting `identity` if given.
fn tls_channel(url: &str, ca: &Ca, identity: Option<&Pair>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
    if let Some(p) = identity {
        tls = tls.identity(Identity::from_pem(&p.cert, &p.key));
    }
    Channel::from_shared(url.to_string())
        .expect("url")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn get(k: &str, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        serializable,
        ..Default::default()
    }
}

/// A raw TLS client: Ok once the server has answered the HTTP/2 preface over a completed
/// handshake. With TLS 1.3 the server judges the client certificate after the client's
/// half of the handshake, so a refusal may only show on the first read.
async fn handshake(url: &str, ca: &Ca, identity: Option<&Pair>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca der"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(p.cert.as_bytes()).expect("cert der")],
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).expect("key der"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let addr = url.trim_start_matches("https://");
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .map_err(|e| e.to_string())?;
        // The HTTP/2 preface and an empty SETTINGS frame: the server answers with its own.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        tls.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(0) => Err("closed by the server".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_auth_refuses_bad_clients_at_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let foreign = Ca::new("another CA");
    let server = ca.issue(&["127.0.0.1", "localhost"], false);
    let good = ca.issue(&["client"], false);
    let expired = ca.issue(&["client"], true);
    let stranger = foreign.issue(&["client"], false);

    let tls = load(
        Side::Client,
        &files(dir.path(), "server", &server, Some(&ca)),
    );
    let mut p = https_plan(1, true, false).await;
    let m = start(&mut p, 0, dir.path(), Some(&tls), None).await;

    let good_channel = tls_channel(&m.client_url, &ca, Some(&good));
    common::wait_leader_on(std::slice::from_ref(&good_channel)).await;
    handshake(&m.client_url, &ca, Some(&good))
        .await
        .expect("a certificate from the trusted CA is admitted");
    for (what, identity) in [
        ("no certificate", None),
        ("a certificate from another CA", Some(&stranger)),
        ("an expired certificate", Some(&expired)),
    ] {
        let r = handshake(&m.client_url, &ca, identity).await;
        assert!(r.is_err(), "a client with {what} was admitted");
    }

    // Through etcd's API: the good client reads and writes, one without a certificate
    // gets no answer.
    let mut kv = KvClient::new(good_channel);
    kv.put(put("tls", "yes")).await.expect("put over TLS");
    let r = kv
        .range(get("tls", false))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(&r.kvs[0].value[..], b"yes");
    let mut anonymous = KvClient::new(tls_channel(&m.client_url, &ca, None));
    assert!(anonymous.range(get("tls", false)).await.is_err());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_trusted_ca_are_reread_when_their_files_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let flags = files(
        dir.path(),
        "server",
        &old.issue(&["127.0.0.1"], false),
        Some(&old),
    );
    let tls = load(Side::Client, &flags);
    let mut p = https_plan(1, true, false).await;
    let m = start(&mut p, 0, dir.path(), Some(&tls), None).await;
    let old_client = old.issue(&["client"], false);
    let new_client = new.issue(&["client"], false);
    handshake(&m.client_url, &old, Some(&old_client))
        .await
        .expect("served by the old CA's certificate");
    assert!(handshake(&m.client_url, &new, Some(&new_client))
        .await
        .is_err());

    // Rotate everything to the new CA: no restart.
    let rotated = new.issue(&["127.0.0.1"], false);
    write(dir.path(), "server.key", &rotated.key);
    write(dir.path(), "server.crt", &rotated.cert);
    write(dir.path(), "server-ca.crt", &new.pem());
    handshake(&m.client_url, &new, Some(&new_client))
        .await
        .expect("served by the new certificate, admitting the new CA's clients");
    assert!(
        handshake(&m.client_url, &new, Some(&old_client))
            .await
            .is_err(),
        "the old CA's clients are refused after the rotation"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_form_a_cluster_with_tls_on_both_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let server = ca.issue(&["127.0.0.1", "localhost"], false);
    let client = ca.issue(&["client"], false);
    let client_tls = load(
        Side::Client,
        &files(dir.path(), "client", &server, Some(&ca)),
    );
    let peer_tls = load(Side::Peer, &files(dir.path(), "peer", &server, Some(&ca)));
    let mut p = https_plan(3, true, true).await;
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(start(&mut p, i, dir.path(), Some(&client_tls), Some(&peer_tls)).await);
    }
    let channels: Vec<Channel> = members
        .iter()
        .map(|m| tls_channel(&m.client_url, &ca, Some(&client)))
        .collect();
    common::wait_leader_on(&channels).await;
    KvClient::new(channels[0].clone())
        .put(put("over", "tls"))
        .await
        .expect("put");
    for c in &channels {
        let r = KvClient::new(c.clone())
            .range(get("over", false))
            .await
            .expect("linearizable range")
            .into_inner();
        assert_eq!(&r.kvs[0].value[..], b"tls");
    }
    // The member list is served over peer TLS too (what a joining member asks).
    let remote = fetch_members_with(
        std::slice::from_ref(&members[1].peer_url),
        Duration::from_secs(2),
        &peer_tls.dialer().expect("dialer"),
    )
    .await
    .expect("member list over TLS");
    assert_eq!(remote.members.len(), 3);
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_form_a_cluster_with_peer_auto_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auto = TlsFlags {
        auto_tls: true,
        ..TlsFlags::default()
    };
    let mut p = https_plan(3, false, true).await;
    let mut members = Vec::new();
    for i in 0..3 {
        // Each member generates its own certificate, as separate processes would.
        let peer_tls = load(Side::Peer, &auto);
        members.push(start(&mut p, i, dir.path(), None, Some(&peer_tls)).await);
    }
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    common::wait_leader(&urls).await;
    let mut kv = KvClient::new(common::channel(&urls[2]).await);
    kv.put(put("auto", "tls"))
        .await
        .expect("put through a follower or leader");
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_foreign_ca_cannot_take_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    let foreign = Ca::new("foreign CA");
    let ours = load(
        Side::Peer,
        &files(
            dir.path(),
            "ours",
            &ca.issue(&["127.0.0.1"], false),
            Some(&ca),
        ),
    );
    let theirs = load(
        Side::Peer,
        &files(
            dir.path(),
            "theirs",
            &foreign.issue(&["127.0.0.1"], false),
            Some(&foreign),
        ),
    );
    let mut p = https_plan(3, false, true).await;
    let m0 = start(&mut p, 0, dir.path(), None, Some(&ours)).await;
    let m1 = start(&mut p, 1, dir.path(), None, Some(&ours)).await;
    let m2 = start(&mut p, 2, dir.path(), None, Some(&theirs)).await;
    let good = [m0.client_url.clone(), m1.client_url.clone()];
    common::wait_leader(&good).await;
    KvClient::new(common::channel(&good[0]).await)
        .put(put("members", "only"))
        .await
        .expect("the two members with the cluster's CA commit");

    // The foreign member is refused both ways: it never hears of a leader, so it never
    // publishes itself and, like etcd (serving waits on ReadyNotify), answers no client.
    let unanswered = tokio::time::timeout(Duration::from_millis(1500), async {
        MaintenanceClient::new(common::channel(&m2.client_url).await)
            .status(pb::StatusRequest {})
            .await
    })
    .await;
    assert!(
        unanswered.is_err(),
        "the foreign member serves clients: {unanswered:?}"
    );
    let refused = fetch_members_with(
        std::slice::from_ref(&m0.peer_url),
        Duration::from_secs(2),
        &theirs.dialer().expect("dialer"),
    )
    .await;
    assert!(
        refused.is_err(),
        "the member list was served to a foreign CA"
    );
    for m in [m0, m1, m2] {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_alone_requires_client_certificates_on_both_listeners() {
    // etcd 3.4's TLSInfo.ServerConfig requires and verifies client certificates when
    // the trusted CA is set, whether or not --client-cert-auth is.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let server = ca.issue(&["127.0.0.1"], false);
    let client = ca.issue(&["client"], false);
    let ca_only = |name: &str| TlsFlags {
        client_cert_auth: false,
        ..files(dir.path(), name, &server, Some(&ca))
    };
    let client_tls = load(Side::Client, &ca_only("client"));
    let peer_tls = load(Side::Peer, &ca_only("peer"));
    assert!(
        !client_tls.certificate_names_user(),
        "no --client-cert-auth"
    );
    let mut p = https_plan(1, true, true).await;
    let m = start(&mut p, 0, dir.path(), Some(&client_tls), Some(&peer_tls)).await;

    let good = tls_channel(&m.client_url, &ca, Some(&client));
    common::wait_leader_on(std::slice::from_ref(&good)).await;
    KvClient::new(good)
        .put(put("ca", "only"))
        .await
        .expect("a client with a certificate from the CA");
    for url in [&m.client_url, &m.peer_url] {
        let e = handshake(url, &ca, None)
            .await
            .expect_err("a client without a certificate was admitted");
        assert!(e.contains("CertificateRequired"), "{url}: {e}");
    }
    // Members dial each other with their peer certificate: admitted.
    fetch_members_with(
        std::slice::from_ref(&m.peer_url),
        Duration::from_secs(2),
        &peer_tls.dialer().expect("dialer"),
    )
    .await
    .expect("a peer with a certificate from the CA");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_refuses_a_certificate_that_does_not_name_the_host_it_dialed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster CA");
    // The member's peer certificate names localhost only, not 127.0.0.1.
    let served = load(
        Side::Peer,
        &files(dir.path(), "served", &ca.issue(&["localhost"], false), None),
    );
    let dialing = load(
        Side::Peer,
        &files(
            dir.path(),
            "dialing",
            &ca.issue(&["127.0.0.1"], false),
            Some(&ca),
        ),
    );
    let mut p = https_plan(1, false, true).await;
    let m = start(&mut p, 0, dir.path(), None, Some(&served)).await;
    common::wait_leader(std::slice::from_ref(&m.client_url)).await;
    let dialer = dialing.dialer().expect("dialer");
    let e = dialer
        .connect(&m.peer_url)
        .await
        .err()
        .expect("a certificate for another host was accepted");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // The same certificate, dialed by the name it carries, is accepted.
    let by_name = m.peer_url.replace("127.0.0.1", "localhost");
    dialer
        .connect(&by_name)
        .await
        .map(drop)
        .expect("the host the certificate names");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auto_tls_serves_a_generated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auto = TlsFlags {
        auto_tls: true,
        ..TlsFlags::default()
    };
    let client_tls = load(Side::Client, &auto);
    let mut p = https_plan(1, true, false).await;
    let m = start(&mut p, 0, dir.path(), Some(&client_tls), None).await;
    // TLS, not plain HTTP/2, on the client URL.
    let plain = common::channel(&m.client_url.replace("https://", "http://")).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        KvClient::new(plain).range(get("k", true)),
    )
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "plaintext was served: {r:?}");
    // A client that skips verification (etcdctl --insecure-skip-tls-verify; here
    // keel's own dialer with auto TLS, which trusts anything) puts and gets.
    let skip = load(Side::Peer, &auto).dialer().expect("dialer");
    let url = m.client_url.clone();
    let channel = tonic::transport::Endpoint::from_static("http://auto-tls.invalid")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(SkipVerifyConnector { dialer: skip, url });
    common::wait_leader_on(std::slice::from_ref(&channel)).await;
    let mut kv = KvClient::new(channel);
    kv.put(put("auto", "client tls")).await.expect("put");
    let r = kv
        .range(get("auto", false))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&r.kvs[0].value[..], b"client tls");
    m.stop().await;
}

/// etcd's `--listen-client-urls http://h:p,https://h:p`: one socket, each connection
/// served as what its first byte says (0x16 opens a TLS handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_share_one_client_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("shared socket ca");
    let server = ca.issue(&["127.0.0.1"], false);
    let client_tls = load(Side::Client, &files(dir.path(), "srv", &server, None));
    let mut p = https_plan(1, true, false).await;
    let m = start_with(&mut p, 0, dir.path(), Some(&client_tls), None, true).await;
    let plain = common::channel(&m.client_url.replace("https://", "http://")).await;
    common::wait_leader_on(std::slice::from_ref(&plain)).await;
    KvClient::new(plain)
        .put(put("shared", "by plaintext"))
        .await
        .expect("put over plaintext");
    let r = KvClient::new(tls_channel(&m.client_url, &ca, None))
        .range(get("shared", false))
        .await
        .expect("get over TLS")
        .into_inner();
    assert_eq!(&r.kvs[0].value[..], b"by plaintext");
    m.stop().await;
}

/// Connects gRPC channels over `dialer` to `url`, whatever URI the channel names.
#[derive(Clone)]
struct SkipVerifyConnector {
    dialer: PeerDialer,
    url: String,
}

impl tonic::codegen::Service<tonic::codegen::http::Uri> for SkipVerifyConnector {
    type Response = hyper_util::rt::TokioIo<Box<dyn PeerIo>>;
    type Error = std::io::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let (dialer, url) = (self.dialer.clone(), self.url.clone());
        Box::pin(async move { dialer.connect(&url).await.map(hyper_util::rt::TokioIo::new) })
    }
}

#[test]
fn unusable_files_are_refused_naming_the_flag_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let pair = ca.issue(&["127.0.0.1", "localhost"], false);
    let other = ca.issue(&["127.0.0.1"], false);
    let err = |flags: TlsFlags| -> String {
        match SideTls::load(Side::Peer, &flags, &TlsPolicy::default(), &[]) {
            Ok(_) => panic!("{flags:?} loaded"),
            Err(e) => e.to_string(),
        }
    };
    let good = files(dir.path(), "good", &pair, None);
    let missing = dir.path().join("missing.crt");
    let e = err(TlsFlags {
        cert_file: Some(missing.clone()),
        ..good.clone()
    });
    assert!(
        e.starts_with(&format!(
            "--peer-cert-file {}: cannot read:",
            missing.display()
        )),
        "{e}"
    );
    let garbage = write(dir.path(), "garbage.crt", "not a certificate\n");
    assert_eq!(
        err(TlsFlags {
            cert_file: Some(garbage.clone()),
            ..good.clone()
        }),
        format!(
            "--peer-cert-file {}: tls: failed to find any PEM data in certificate input",
            garbage.display()
        )
    );
    let wrong_key = write(dir.path(), "other.key", &other.key);
    assert_eq!(
        err(TlsFlags {
            key_file: Some(wrong_key.clone()),
            ..good.clone()
        }),
        format!(
            "--peer-key-file {}: tls: private key does not match public key",
            wrong_key.display()
        )
    );
    assert_eq!(
        err(TlsFlags {
            trusted_ca_file: None,
            client_cert_auth: true,
            ..good.clone()
        }),
        "--peer-client-cert-auth needs --peer-trusted-ca-file to verify certificates with"
    );

    // The certificate must name the hosts it is advertised under.
    let tls = SideTls::load(Side::Client, &good, &TlsPolicy::default(), &[]).expect("loads");
    tls.check_covers("--advertise-client-urls", "https://localhost:2379")
        .expect("covers localhost");
    tls.check_covers("--advertise-client-urls", "https://127.0.0.1:2379")
        .expect("covers 127.0.0.1");
    let e = tls
        .check_covers("--advertise-client-urls", "https://10.0.0.7:2379")
        .expect_err("does not cover 10.0.0.7");
    assert!(matches!(e, TlsError::NotCovered(_)));
    assert_eq!(
        e.to_string(),
        format!(
            "--cert-file {}: x509: certificate is valid for 127.0.0.1, localhost, not 10.0.0.7 (the host of --advertise-client-urls https://10.0.0.7:2379)",
            dir.path().join("good.crt").display()
        )
    );
}

/// A certificate from `ca` with this serial number and common name, for clients.
fn client_cert(ca: &Ca, serial: u64, cn: &str, hosts: &[&str]) -> Pair {
    let mut p = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.serial_number = Some(rcgen::SerialNumber::from(serial));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("cert");
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A CRL signed by `ca` revoking these serial numbers, PEM.
fn crl(ca: &Ca, revoked: &[u64]) -> String {
    rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2100, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .expect("crl")
    .pem()
    .expect("crl pem")
}

/// A bare TLS listener serving `tls` (no member behind it): answers the HTTP/2 preface
/// with a byte once the handshake completes, which is all [`handshake`] needs.
async fn bare_listener(tls: &SideTls) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(ALPN).expect("config"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    if s.read(&mut buf).await.is_ok() {
                        let _ = s.write_all(b"x").await;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_and_the_crl_file_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let server = ca.issue(&["127.0.0.1"], false);
    let good = client_cert(&ca, 11, "good", &["client"]);
    let revoked = client_cert(&ca, 12, "revoked", &["client"]);
    let crl_path = write(dir.path(), "client.crl", &crl(&ca, &[12]));
    let flags = TlsFlags {
        crl_file: Some(crl_path.clone()),
        ..files(dir.path(), "server", &server, Some(&ca))
    };
    let url = bare_listener(&load(Side::Client, &flags)).await;
    handshake(&url, &ca, Some(&good))
        .await
        .expect("a certificate the CRL does not list is admitted");
    assert!(
        handshake(&url, &ca, Some(&revoked)).await.is_err(),
        "a revoked certificate was admitted"
    );
    // etcd reads the CRL at every connection: a new list applies without a restart.
    // (Modification times have a coarse grain on some file systems: wait it out.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(dir.path(), "client.crl", &crl(&ca, &[11]));
    assert!(
        handshake(&url, &ca, Some(&good)).await.is_err(),
        "a certificate revoked by the rewritten CRL was admitted"
    );
    handshake(&url, &ca, Some(&revoked))
        .await
        .expect("no longer revoked");
    // A CRL file that cannot be read stops the start, naming the flag.
    let e = SideTls::load(
        Side::Peer,
        &TlsFlags {
            crl_file: Some(dir.path().join("missing.crl")),
            ..flags.clone()
        },
        &TlsPolicy::default(),
        &["127.0.0.1".into()],
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(e.starts_with("--peer-crl-file "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_cn_and_hostname_refuse_other_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("keel test CA");
    let server = ca.issue(&["127.0.0.1"], false);
    let peer = client_cert(&ca, 21, "etcd-peer", &["peer.example"]);
    let other = client_cert(&ca, 22, "somebody", &["other.example"]);
    let base = files(dir.path(), "server", &server, Some(&ca));
    let by_cn = TlsFlags {
        allowed_cn: Some("etcd-peer".into()),
        ..base.clone()
    };
    let url = bare_listener(&load(Side::Peer, &by_cn)).await;
    handshake(&url, &ca, Some(&peer))
        .await
        .expect("the allowed CN is admitted");
    assert!(
        handshake(&url, &ca, Some(&other)).await.is_err(),
        "a certificate with another CN was admitted"
    );
    let by_host = TlsFlags {
        allowed_hostname: Some("peer.example".into()),
        ..base.clone()
    };
    let url = bare_listener(&load(Side::Peer, &by_host)).await;
    handshake(&url, &ca, Some(&peer))
        .await
        .expect("a certificate valid for the allowed host is admitted");
    assert!(
        handshake(&url, &ca, Some(&other)).await.is_err(),
        "a certificate for another host was admitted"
    );
    // etcd refuses both at once.
    let e = SideTls::load(
        Side::Peer,
        &TlsFlags {
            allowed_cn: Some("a".into()),
            allowed_hostname: Some("b".into()),
            ..base
        },
        &TlsPolicy::default(),
        &["127.0.0.1".into()],
    )
    .err()
    .expect("refused")
    .to_string();
    assert_eq!(
        e,
        "AllowedCN and AllowedHostname are mutually exclusive (cn=\"a\", hostname=\"b\")"
    );
}
