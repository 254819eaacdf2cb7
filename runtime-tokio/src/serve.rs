//! A whole member process: the member task, its peer listeners and its client listeners
//! (gRPC and HTTP on the same port), until shutdown or a fatal error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::http_access::{self, HttpAccess};
use crate::listen::SocketListener;
use crate::member::{start_with_dialer, MemberConfig, MemberHandle};
use crate::tls::{client_incoming, ClientSchemes, PeerDialer};
use crate::version::ETCD_CAPABILITY_VERSION;
use crate::{gateway, grpc, http, peer, v2keys};

/// How the client listeners serve, beyond TLS: etcd's gRPC server options and the
/// HTTP endpoints' access rules. The default is etcd's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// `--grpc-keepalive-interval`: how often the server pings an idle connection.
    pub keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: how long it waits for the ping's answer.
    pub keepalive_timeout: Duration,
    /// `--grpc-keepalive-min-time`: clients pinging more often are sent away (zero:
    /// grpc-go's default of five minutes, as in etcd).
    pub keepalive_min_time: Duration,
    /// `--max-concurrent-streams` per connection.
    pub max_concurrent_streams: u32,
    /// `--enable-grpc-gateway`: serve the JSON gateway (`/v3/...`).
    pub grpc_gateway: bool,
    /// `--cors` and `--host-whitelist`.
    pub http_access: HttpAccess,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            keepalive_interval: Duration::from_secs(2 * 60 * 60),
            keepalive_timeout: Duration::from_secs(20),
            keepalive_min_time: Duration::from_secs(5),
            max_concurrent_streams: u32::MAX,
            grpc_gateway: true,
            http_access: HttpAccess::default(),
        }
    }
}

impl ClientOptions {
    /// The keepalive flags as etcd applies them: only when both are positive, otherwise
    /// grpc-go's defaults (2 h and 20 s) stay, whatever `--help` says about 0 disabling.
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        if !interval.is_zero() && !timeout.is_zero() {
            self.keepalive_interval = interval;
            self.keepalive_timeout = timeout;
        }
        self
    }
}

/// A bound listener and, for an https URL, the TLS it serves.
pub struct Listener {
    /// The bound socket (TCP, or unix for `unix(s)://` URLs).
    pub socket: SocketListener,
    /// TLS to serve on it; None for http.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `tls`, plaintext is served too (client URLs `http://` and `https://` on one
    /// host:port); connections are told apart by their first byte.
    pub also_plain: bool,
    /// A verified client certificate's common name is the user (`--client-cert-auth`).
    pub cert_names_user: bool,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener {
            socket: tcp.into(),
            tls: None,
            also_plain: false,
            cert_names_user: false,
        }
    }
}

/// Runs a member on already-bound listeners until `shutdown` completes (Ok) or the member
/// fails (Err with one line for the operator). `on_ready` runs once the member serves.
pub async fn run(
    cfg: MemberConfig,
    client: Vec<TcpListener>,
    peers: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&MemberHandle),
) -> Result<(), String> {
    let client = client.into_iter().map(Listener::from).collect();
    let peers = peers.into_iter().map(Listener::from).collect();
    run_with_tls(cfg, client, peers, PeerDialer::plain(), shutdown, on_ready).await
}

/// As [`run`], with TLS on the listeners that have it and peers dialed by `dialer`.
pub async fn run_with_tls(
    cfg: MemberConfig,
    client: Vec<Listener>,
    peers: Vec<Listener>,
    dialer: PeerDialer,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&MemberHandle),
) -> Result<(), String> {
    let listeners = Listeners {
        client,
        peers,
        metrics: Vec::new(),
    };
    let options = ClientOptions::default();
    run_on(cfg, listeners, dialer, options, shutdown, on_ready).await
}

/// Every listener of a member.
pub struct Listeners {
    /// `--listen-client-urls`: gRPC and HTTP.
    pub client: Vec<Listener>,
    /// `--listen-peer-urls`.
    pub peers: Vec<Listener>,
    /// `--listen-metrics-urls`: `/metrics` and the health probes only (see
    /// [`http::metrics_router`]), answered from the start, as etcd does, so a startup
    /// probe sees a member that is still joining.
    pub metrics: Vec<Listener>,
}

/// As [`run_with_tls`], with metrics listeners too, the client listeners served with
/// `options`.
pub async fn run_on(
    cfg: MemberConfig,
    listeners: Listeners,
    dialer: PeerDialer,
    options: ClientOptions,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&MemberHandle),
) -> Result<(), String> {
    let Listeners {
        client,
        peers,
        metrics,
    } = listeners;
    let enable_v2 = cfg.enable_v2;
    let attributes = format!(
        "{{Name:{} ClientURLs:[{}]}}",
        cfg.name,
        cfg.client_urls.join(" ")
    );
    let corrupt_check_time = cfg.corrupt_check_time;
    let (handle, net, mut fatal) = start_with_dialer(cfg, dialer)
        .await
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !corrupt_check_time.is_zero() {
        // The member runs the checks; this is etcd's line saying they are on.
        tracing::info!(
            local_member_id = %format!("{:x}", handle.id),
            interval = ?corrupt_check_time,
            "enabled corruption checking"
        );
    }
    for l in peers {
        let h = handle.clone();
        tokio::spawn(peer::serve(
            l.socket,
            l.tls,
            net.clone(),
            move |m| h.deliver(m),
            grpc::forward::handler(handle.clone()),
            stop_rx.clone(),
        ));
    }
    let mut servers = Vec::new();
    for l in metrics {
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(http::metrics_router(
                handle.clone(),
            )));
        // etcd serves metrics listeners with Go's HTTP server: no ping policy.
        servers.push(tokio::spawn(serve_listener(
            server,
            l,
            None,
            stop_rx.clone(),
        )));
    }
    let interceptor = grpc::interceptor::Interceptor::new(&handle);
    for l in client {
        let grpc =
            grpc::routes(&handle)
                .into_axum_router()
                .layer(axum::middleware::from_fn_with_state(
                    interceptor.clone(),
                    grpc::interceptor::intercept,
                ));
        let mut router = grpc.clone().merge(http::router(handle.clone()));
        // The JSON gateway calls through `grpc`, interceptors and all, as a gRPC client's
        // call would go. Without it, etcd answers `/v3/...` as any unknown path (the
        // fallback's 404).
        if options.grpc_gateway {
            router = router.merge(gateway::router(grpc, handle.max_request_bytes));
        }
        if enable_v2 {
            router = router.merge(v2keys::router(handle.clone(), stop_rx.clone()));
        }
        let router =
            router
                .fallback(gateway::fallback)
                .layer(axum::middleware::from_fn_with_state(
                    options.http_access.clone(),
                    http_access::control,
                ));
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(options.keepalive_interval))
            .http2_keepalive_timeout(Some(options.keepalive_timeout))
            .max_concurrent_streams(options.max_concurrent_streams)
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router));
        // As etcd's serveCtx waits on ReadyNotify: the listener is bound (connections
        // queue) but nothing is answered until this member's attributes are replicated,
        // so a client never sees a member list that lacks the member it talks to.
        let mut published = handle.status.clone();
        let mut stop = stop_rx.clone();
        let listener_stop = stop_rx.clone();
        let ping_min_time = Some(options.keepalive_min_time);
        servers.push(tokio::spawn(async move {
            tokio::select! {
                r = published.wait_for(|s| s.published) => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            serve_listener(server, l, ping_min_time, listener_stop).await;
        }));
    }
    // Like etcd, announce readiness once this member's attributes are replicated.
    // Harnesses (etcd's e2e framework, pifpaf) wait for etcd 3.4's milestone lines, in
    // its order: "published", "enabled capabilities for version", then the caller's
    // "ready to serve client requests".
    let milestones = move |h: &MemberHandle| {
        tracing::info!(
            local_member_id = %format!("{:x}", h.id),
            local_member_attributes = %attributes,
            cluster_id = %format!("{:x}", h.cluster_id),
            "published local member to cluster through raft"
        );
        tracing::info!(
            cluster_version = ETCD_CAPABILITY_VERSION,
            "enabled capabilities for version {ETCD_CAPABILITY_VERSION}"
        );
    };
    let mut status = handle.status.clone();
    let mut on_ready = Some(on_ready);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            r = status.wait_for(|s| s.published), if on_ready.is_some() => {
                if r.is_ok() {
                    if let Some(f) = on_ready.take() {
                        milestones(&handle);
                        f(&handle);
                    }
                }
            }
            _ = &mut shutdown => break Ok(()),
            e = fatal.recv() => break Err(e.unwrap_or_else(|| "member stopped".into())),
        }
    };
    // Stop accepting, let in-flight requests finish (bounded), then leave: every
    // acknowledged write is already synced to the WAL.
    let _ = stop_tx.send(true);
    let drain = async {
        for s in servers {
            let _ = s.await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    handle.stop().await;
    result
}

/// Serves `server` on listener `l` until `stop` turns true, its plaintext HTTP/2
/// clients held to `ping_min_time` if given.
async fn serve_listener(
    server: tonic::transport::server::Router,
    l: Listener,
    ping_min_time: Option<Duration>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let schemes = ClientSchemes {
        plain: l.tls.is_none() || l.also_plain,
        tls: l.tls,
        names_users: l.cert_names_user,
        ping_min_time,
    };
    let incoming = client_incoming(l.socket, schemes, stop);
    let _ = server.serve_with_incoming_shutdown(incoming, stopped).await;
}

/// Tells systemd the member is ready when started by a `Type=notify` unit.
pub fn notify_systemd_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
