//! `--discovery-fallback proxy`: a member that found the discovered cluster full forwards
//! its clients to the cluster's members instead of joining.
//!
//! etcd 3.4 falls back to its v2 HTTP proxy here; keel's clients speak gRPC as well as
//! HTTP on the client port, so keel forwards at the TCP level: each accepted connection
//! is piped, bytes unchanged, to one reachable member's client URL. The members' client
//! URLs come from asking the peers for the member list, again every
//! [`REFRESH_INTERVAL`] (etcd's `--proxy-refresh-interval` default), so members added or
//! moved later are followed.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_runtime_tokio::peer::fetch_members_with;
use keel_runtime_tokio::tls::PeerDialer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How often the member list is fetched again (etcd's proxy default: 30 s).
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How soon to ask again while no member's client URL is known.
const EMPTY_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one member-list query.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on connecting to one member (etcd's `--proxy-dial-timeout` default: 1 s).
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member that refused a connection is passed over (etcd's
/// `--proxy-failure-wait` default: 5 s).
const FAILURE_WAIT: Duration = Duration::from_secs(5);

/// Forwards client connections on `client` to the members behind `peer_urls` (asked
/// for the member list through `dialer`) until `shutdown` completes. Bytes are piped
/// unchanged, so clients of https members speak TLS to the member itself.
pub async fn run(
    peer_urls: Vec<String>,
    dialer: PeerDialer,
    client: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    tracing::info!(peer_urls = %peer_urls.join(","), "proxy: using peer urls");
    let targets = Arc::new(Targets::default());
    let refresher = tokio::spawn(refresh(peer_urls, dialer, Arc::clone(&targets)));
    let result = serve(client, targets, shutdown).await;
    refresher.abort();
    result
}

/// Forwards client connections on `listener` to the fixed `endpoints` (`host:port`), round
/// robin, passing over for `retry_delay` an endpoint that refused (etcd's L4 gateway,
/// `etcd gateway start`), until `shutdown` completes.
pub async fn run_fixed(
    endpoints: Vec<String>,
    retry_delay: Duration,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let targets = Arc::new(Targets::with_failure_wait(retry_delay));
    targets.set(endpoints);
    serve(vec![listener], targets, shutdown).await
}

/// Keeps `targets` at the members' client URLs, as the peers report them.
async fn refresh(mut peer_urls: Vec<String>, dialer: PeerDialer, targets: Arc<Targets>) {
    loop {
        match fetch_members_with(&peer_urls, FETCH_TIMEOUT, &dialer).await {
            Ok(cluster) => {
                let mut endpoints: Vec<String> = cluster
                    .members
                    .iter()
                    .flat_map(|m| m.client_urls.iter().filter_map(|u| host_port(u)))
                    .collect();
                endpoints.sort();
                endpoints.dedup();
                let mut peers: Vec<String> = cluster
                    .members
                    .iter()
                    .flat_map(|m| m.peer_urls.iter().cloned())
                    .collect();
                peers.sort();
                peers.dedup();
                if !peers.is_empty() && peers != peer_urls {
                    tracing::info!(from = %peer_urls.join(","), to = %peers.join(","), "proxy updated peer URLs");
                    peer_urls = peers;
                }
                if targets.set(endpoints.clone()) {
                    tracing::info!(
                        cluster_id = %format!("{:x}", cluster.cluster_id),
                        endpoints = %endpoints.join(","),
                        "proxy: forwarding clients to these members"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "failed to get cluster from remote peers"),
        }
        let wait = if targets.is_empty() {
            EMPTY_REFRESH_INTERVAL
        } else {
            REFRESH_INTERVAL
        };
        tokio::time::sleep(wait).await;
    }
}

/// Accepts on every listener and forwards each connection to a member from `targets`,
/// until `shutdown`; open connections are cut then.
async fn serve(
    listeners: Vec<TcpListener>,
    targets: Arc<Targets>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel::<TcpStream>(64);
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        let tx = tx.clone();
        acceptors.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if tx.send(stream).await.is_err() {
                            return;
                        }
                    }
                    // Out of descriptors and the like: pause rather than spin.
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            stream = rx.recv() => {
                let Some(stream) = stream else { break };
                connections.spawn(forward(stream, Arc::clone(&targets)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    acceptors.abort_all();
    connections.abort_all();
    Ok(())
}

/// Pipes `client` to the first member that accepts a connection.
async fn forward(mut client: TcpStream, targets: Arc<Targets>) {
    let mut upstream = None;
    for endpoint in targets.pick_order(Instant::now()) {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(endpoint.as_str())).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %endpoint, error = %e, "proxy: member refused, trying another");
                targets.mark_failed(&endpoint, Instant::now());
            }
            Err(_) => {
                tracing::warn!(endpoint = %endpoint, "proxy: member did not answer in time, trying another");
                targets.mark_failed(&endpoint, Instant::now());
            }
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::warn!("proxy: no member reachable; closing the client connection");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // Either side closing ends the pipe; errors here are the client's or member's
    // connection going away, which needs no report.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The members' client endpoints (`host:port`), and which refused recently.
struct Targets {
    state: Mutex<Vec<Endpoint>>,
    next: AtomicUsize,
    /// How long an endpoint that refused is passed over.
    failure_wait: Duration,
}

impl Default for Targets {
    fn default() -> Targets {
        Targets::with_failure_wait(FAILURE_WAIT)
    }
}

struct Endpoint {
    addr: String,
    failed_until: Option<Instant>,
}

impl Targets {
    fn with_failure_wait(failure_wait: Duration) -> Targets {
        Targets {
            state: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            failure_wait,
        }
    }

    /// Replaces the endpoint list, keeping what is known about endpoints that stay.
    /// Returns whether the list changed.
    fn set(&self, addrs: Vec<String>) -> bool {
        let mut state = self.lock();
        let old: Vec<&str> = state.iter().map(|e| e.addr.as_str()).collect();
        if old == addrs.iter().map(String::as_str).collect::<Vec<_>>() {
            return false;
        }
        let kept: Vec<Endpoint> = addrs
            .into_iter()
            .map(|addr| {
                let failed_until = state
                    .iter()
                    .find(|e| e.addr == addr)
                    .and_then(|e| e.failed_until);
                Endpoint { addr, failed_until }
            })
            .collect();
        *state = kept;
        true
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Endpoints to try for one connection: round robin over the ones that have not
    /// failed within the failure wait, then the failed ones as a last resort.
    fn pick_order(&self, now: Instant) -> Vec<String> {
        let state = self.lock();
        if state.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % state.len();
        let rotated = state[start..].iter().chain(&state[..start]);
        let (up, down): (Vec<&Endpoint>, Vec<&Endpoint>) =
            rotated.partition(|e| e.failed_until.is_none_or(|t| t <= now));
        up.into_iter().chain(down).map(|e| e.addr.clone()).collect()
    }

    fn mark_failed(&self, addr: &str, now: Instant) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.addr == addr) {
            e.failed_until = Some(now + self.failure_wait);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        // A panic while holding the lock leaves a plain list behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `host:port` of an `http(s)://host[:port][/...]` client URL (default ports 80/443);
/// `None` for other schemes, which a TCP proxy cannot reach.
fn host_port(url: &str) -> Option<String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.is_empty() {
        return None;
    }
    // A port follows the last colon, unless that colon is inside an IPv6 literal.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn client_urls_to_endpoints() {
        assert_eq!(
            host_port("http://127.0.0.1:2379").as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(
            host_port("https://h.example").as_deref(),
            Some("h.example:443")
        );
        assert_eq!(
            host_port("http://[::1]:2379/").as_deref(),
            Some("[::1]:2379")
        );
        assert_eq!(host_port("http://[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(host_port("unix://sock"), None);
        assert_eq!(host_port("http://"), None);
    }

    #[test]
    fn round_robin_passes_over_failed_endpoints() {
        let t = Targets::default();
        assert!(t.set(vec!["a:1".into(), "b:1".into(), "c:1".into()]));
        let now = Instant::now();
        assert_eq!(t.pick_order(now), ["a:1", "b:1", "c:1"]);
        assert_eq!(t.pick_order(now), ["b:1", "c:1", "a:1"]);
        t.mark_failed("c:1", now);
        assert_eq!(t.pick_order(now), ["a:1", "b:1", "c:1"]);
        assert_eq!(t.pick_order(now), ["a:1", "b:1", "c:1"]);
        // After the failure wait it is back in rotation.
        assert_eq!(t.pick_order(now + FAILURE_WAIT), ["b:1", "c:1", "a:1"]);
        // An unchanged list is not a change and keeps the failure mark.
        assert!(!t.set(vec!["a:1".into(), "b:1".into(), "c:1".into()]));
        assert!(t.set(vec!["c:1".into(), "d:1".into()]));
        let order = t.pick_order(now);
        assert_eq!(order.last().map(String::as_str), Some("c:1"));
    }

    /// A member that refuses is skipped; bytes flow both ways through the live one.
    #[tokio::test]
    async fn forwards_to_a_live_member() {
        let member = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = member.local_addr().unwrap().to_string();
        // A port with nothing listening: bind, note it, close.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        tokio::spawn(async move {
            loop {
                let (mut s, _) = member.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap();
                    s.write_all(b"member says: ").await.unwrap();
                    s.write_all(&buf[..n]).await.unwrap();
                });
            }
        });
        let targets = Arc::new(Targets::default());
        targets.set(vec![dead.clone(), live]);
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(vec![front], Arc::clone(&targets), async {
            let _ = stop_rx.await;
        }));
        for _ in 0..3 {
            let mut c = TcpStream::connect(front_addr).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut got = vec![0u8; "member says: hello".len()];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"member says: hello");
        }
        // The dead member was marked and is now tried last.
        assert_eq!(targets.pick_order(Instant::now()).last(), Some(&dead));
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        // Once stopped, the proxy no longer accepts.
        assert!(TcpStream::connect(front_addr).await.is_err());
    }

    /// With no member known, a client's connection is closed rather than left hanging.
    #[tokio::test]
    async fn closes_clients_when_no_member_is_known() {
        let targets = Arc::new(Targets::default());
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let server = tokio::spawn(serve(vec![front], targets, std::future::pending::<()>()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        server.abort();
    }
}
