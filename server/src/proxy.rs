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
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_runtime_tokio::peer::fetch_members_with;
use keel_runtime_tokio::tls::PeerDialer;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::discovery_srv::Dns;

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

/// One endpoint the gateway forwards to: `host:port`, and the SRV priority and weight
/// etcd's tcpproxy picks by (zero for endpoints given as `--endpoints`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// `host:port`; the host may be a name.
    pub addr: String,
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight among remotes of equal priority (0: none).
    pub weight: u16,
}

impl Remote {
    /// `addr` with no priority or weight.
    pub fn plain(addr: String) -> Remote {
        Remote {
            addr,
            priority: 0,
            weight: 0,
        }
    }
}

/// Forwards client connections on `listener` to the fixed `remotes`, picked as etcd's
/// L4 gateway (`etcd gateway start`) picks, passing over for `retry_delay` an endpoint
/// that refused, until `shutdown` completes. Host names are resolved through `dns` when
/// given (names found by `--discovery-srv`), else by the system.
pub async fn run_fixed(
    remotes: Vec<Remote>,
    retry_delay: Duration,
    listener: TcpListener,
    dns: Option<Arc<Dns>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut targets = Targets::with_failure_wait(retry_delay);
    targets.dns = dns;
    targets.set(remotes);
    serve(vec![listener], Arc::new(targets), shutdown).await
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
                if targets.set(endpoints.iter().cloned().map(Remote::plain).collect()) {
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
    let mut tried = Vec::new();
    while let Some(endpoint) = targets.next(Instant::now(), &tried) {
        tried.push(endpoint.clone());
        let dialed = tokio::time::timeout(DIAL_TIMEOUT, dial(&endpoint, targets.dns.as_deref()));
        match dialed.await {
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

/// Connects to `addr` (`host:port`), its host resolved through `dns` if given (each of
/// its addresses tried in turn, as Go's dialer does), else by the system.
pub async fn dial(addr: &str, dns: Option<&Dns>) -> std::io::Result<TcpStream> {
    let Some(dns) = dns else {
        return TcpStream::connect(addr).await;
    };
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("address {addr}: missing port in address"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => dns
            .ips(host)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    };
    let mut last = std::io::Error::other(format!("lookup {host}: no addresses"));
    for ip in ips {
        match TcpStream::connect(SocketAddr::new(ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The members' client endpoints, which refused recently, and the state of picking.
struct Targets {
    state: Mutex<Picking>,
    /// How long an endpoint that refused is passed over.
    failure_wait: Duration,
    /// The resolver for host names, if not the system's.
    dns: Option<Arc<Dns>>,
}

impl Default for Targets {
    fn default() -> Targets {
        Targets::with_failure_wait(FAILURE_WAIT)
    }
}

struct Picking {
    endpoints: Vec<Endpoint>,
    /// etcd's `pickCount`: the round robin position.
    count: usize,
    rng: ChaCha8Rng,
}

struct Endpoint {
    remote: Remote,
    failed_until: Option<Instant>,
}

impl Targets {
    fn with_failure_wait(failure_wait: Duration) -> Targets {
        Targets {
            state: Mutex::new(Picking {
                endpoints: Vec::new(),
                count: 0,
                rng: ChaCha8Rng::seed_from_u64(crate::discovery_srv::entropy()),
            }),
            failure_wait,
            dns: None,
        }
    }

    /// Replaces the endpoint list, keeping what is known about endpoints that stay.
    /// Returns whether the list changed.
    fn set(&self, remotes: Vec<Remote>) -> bool {
        let mut state = self.lock();
        if state.endpoints.iter().map(|e| &e.remote).eq(remotes.iter()) {
            return false;
        }
        let kept: Vec<Endpoint> = remotes
            .into_iter()
            .map(|remote| {
                let failed_until = state
                    .endpoints
                    .iter()
                    .find(|e| e.remote.addr == remote.addr)
                    .and_then(|e| e.failed_until);
                Endpoint {
                    remote,
                    failed_until,
                }
            })
            .collect();
        state.endpoints = kept;
        true
    }

    fn is_empty(&self) -> bool {
        self.lock().endpoints.is_empty()
    }

    /// The next endpoint to try for one connection, not among `tried`: etcd's pick among
    /// those that have not failed within the failure wait; when none is left, the failed
    /// ones in turn, as a last resort.
    fn next(&self, now: Instant, tried: &[String]) -> Option<String> {
        let mut state = self.lock();
        let Picking {
            endpoints,
            count,
            rng,
        } = &mut *state;
        let untried = |e: &Endpoint| !tried.contains(&e.remote.addr);
        let active: Vec<bool> = endpoints
            .iter()
            .map(|e| untried(e) && e.failed_until.is_none_or(|t| t <= now))
            .collect();
        let remotes: Vec<&Remote> = endpoints.iter().map(|e| &e.remote).collect();
        match pick(&remotes, &active, count, rng) {
            Some(i) => Some(endpoints[i].remote.addr.clone()),
            None => endpoints
                .iter()
                .find(|e| untried(e))
                .map(|e| e.remote.addr.clone()),
        }
    }

    fn mark_failed(&self, addr: &str, now: Instant) {
        let failure_wait = self.failure_wait;
        if let Some(e) = self
            .lock()
            .endpoints
            .iter_mut()
            .find(|e| e.remote.addr == addr)
        {
            e.failed_until = Some(now + failure_wait);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Picking> {
        // A panic while holding the lock leaves a plain list behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// etcd's tcpproxy `pick` (`proxy/tcpproxy/userspace.go`) over the `active` remotes:
/// within the best priority among them, a weighted random choice when some have a
/// weight (those without get one chance in a hundred, in turn); when none has a weight,
/// round robin over all remotes, whatever their priority, skipping inactive ones.
/// `count` is the round robin position.
fn pick(
    remotes: &[&Remote],
    active: &[bool],
    count: &mut usize,
    rng: &mut impl RngCore,
) -> Option<usize> {
    let mut best = u16::MAX;
    let mut weighted = Vec::new();
    let mut unweighted = Vec::new();
    let mut total = 0u64;
    for (i, r) in remotes.iter().enumerate() {
        if !active[i] {
            continue;
        }
        if r.priority < best {
            best = r.priority;
            total = 0;
            weighted.clear();
            // etcd starts the class with this remote and then falls through to add it
            // again: it counts twice among the unweighted.
            unweighted = vec![i];
        }
        if r.priority == best {
            if r.weight > 0 {
                weighted.push(i);
                total += u64::from(r.weight);
            } else {
                unweighted.push(i);
            }
        }
    }
    let below =
        |rng: &mut dyn RngCore, n: u64| ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64;
    if !weighted.is_empty() {
        if !unweighted.is_empty() && below(rng, 100) == 1 {
            let i = unweighted[*count % unweighted.len()];
            *count += 1;
            return Some(i);
        }
        // As etcd: a draw in 0..total (RFC 2782 says 0..=total), the first remote whose
        // running weight reaches it; the first remote thus gets one draw more than its
        // weight.
        let mut choose = below(rng, total);
        for &i in &weighted {
            let w = u64::from(remotes[i].weight);
            if choose <= w {
                return Some(i);
            }
            choose -= w;
        }
    }
    if !unweighted.is_empty() {
        for _ in 0..remotes.len() {
            let i = *count % remotes.len();
            *count += 1;
            if active[i] {
                return Some(i);
            }
        }
    }
    None
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

    fn plain(addrs: &[&str]) -> Vec<Remote> {
        addrs.iter().map(|a| Remote::plain((*a).into())).collect()
    }

    /// The endpoints one connection would try, in order, if each refused.
    fn order(t: &Targets, now: Instant) -> Vec<String> {
        let mut tried = Vec::new();
        while let Some(next) = t.next(now, &tried) {
            tried.push(next);
        }
        tried
    }

    #[test]
    fn round_robin_passes_over_failed_endpoints() {
        let t = Targets::default();
        assert!(t.set(plain(&["a:1", "b:1", "c:1"])));
        let now = Instant::now();
        assert_eq!(t.next(now, &[]).as_deref(), Some("a:1"));
        assert_eq!(t.next(now, &[]).as_deref(), Some("b:1"));
        assert_eq!(t.next(now, &[]).as_deref(), Some("c:1"));
        assert_eq!(t.next(now, &[]).as_deref(), Some("a:1"));
        t.mark_failed("c:1", now);
        assert_eq!(order(&t, now), ["b:1", "a:1", "c:1"]);
        assert_eq!(t.next(now, &[]).as_deref(), Some("b:1"));
        assert_eq!(t.next(now, &[]).as_deref(), Some("a:1"));
        // After the failure wait it is back in rotation.
        assert_eq!(t.next(now + FAILURE_WAIT, &[]).as_deref(), Some("b:1"));
        assert_eq!(t.next(now + FAILURE_WAIT, &[]).as_deref(), Some("c:1"));
        // An unchanged list is not a change and keeps the failure mark.
        assert!(!t.set(plain(&["a:1", "b:1", "c:1"])));
        assert!(t.set(plain(&["c:1", "d:1"])));
        assert_eq!(order(&t, now).last().map(String::as_str), Some("c:1"));
    }

    #[test]
    fn weighted_remotes_of_the_best_priority_are_picked_by_weight() {
        let r = |addr: &str, priority, weight| Remote {
            addr: addr.into(),
            priority,
            weight,
        };
        let remotes = [r("a", 0, 1), r("b", 0, 3), r("c", 1, 50), r("d", 0, 0)];
        let refs: Vec<&Remote> = remotes.iter().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut count = 0;
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            hits[pick(&refs, &[true; 4], &mut count, &mut rng).unwrap()] += 1;
        }
        // c is of a worse priority; d (no weight) gets about one pick in a hundred.
        assert_eq!(hits[2], 0, "{hits:?}");
        assert!((10..=80).contains(&hits[3]), "{hits:?}");
        // etcd draws in 0..4 (not 0..=4, as RFC 2782 has it) and takes the first remote
        // whose running weight reaches the draw: a gets draws 0 and 1, b gets 2 and 3, so
        // weights 1 and 3 split evenly, as in etcd's gateway.
        let ratio = f64::from(hits[1]) / f64::from(hits[0]);
        assert!((0.85..1.15).contains(&ratio), "{hits:?}");
        // With the best class inactive, the next priority is used.
        let active = [false, false, true, false];
        assert_eq!(pick(&refs, &active, &mut count, &mut rng), Some(2));
        // With no weights at all: round robin over every active remote, any priority.
        let remotes = [r("a", 0, 0), r("b", 5, 0), r("c", 0, 0)];
        let refs: Vec<&Remote> = remotes.iter().collect();
        let mut count = 0;
        let picks: Vec<usize> = (0..4)
            .map(|_| pick(&refs, &[true, true, false], &mut count, &mut rng).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        assert_eq!(pick(&refs, &[false; 3], &mut count, &mut rng), None);
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
        targets.set(vec![Remote::plain(dead.clone()), Remote::plain(live)]);
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
        assert_eq!(order(&targets, Instant::now()).last(), Some(&dead));
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
