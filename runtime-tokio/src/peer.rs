//! The peer transport: one long-lived TCP stream per peer and direction, carrying raft
//! messages in length-prefixed frames, batched while the socket is busy.
//!
//! A stream opens with a handshake naming the cluster and both members. A member of
//! another cluster is refused with "cluster ID mismatch"; the dialing side, which is the
//! one whose configuration points at the wrong cluster, reports both IDs and stops
//! (through the `fatal` channel), while the accepting side only refuses, so a stray
//! member can never take a healthy cluster down.
//!
//! A member removed from the cluster is refused too ("permanently removed"), and stops
//! when it hears so, so it never disrupts the members that remain.
//!
//! The same port answers the member-list query of [`crate::peer_info`] and, on the
//! leader, the calls of [`crate::leader_call`].
//!
//! With https peer URLs the same streams run inside TLS (see [`crate::tls`]): a peer
//! without an acceptable certificate is refused before it can say anything.
//!
//! Sending never blocks raft: each peer has a bounded queue, and a message that does not
//! fit is dropped (raft retransmits). A lost connection is redialed with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use keel_core::node::MemberInfo;
use keel_core::raft::{decode_message, encode_message, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::leader_call::{self, CallHandler, CALL_MAGIC};
use crate::listen::SocketListener;
use crate::metrics::PeerMetrics;
use crate::peer_info::{self, INFO_MAGIC};
pub use crate::peer_info::{fetch_members, fetch_members_with, RemoteCluster};
use crate::tls::{PeerDialer, PeerIo};

const MAGIC: &[u8; 8] = b"KEELPEER";
const VERSION: u8 = 1;
const HANDSHAKE_LEN: usize = 8 + 1 + 8 + 8 + 8;
/// Largest frame accepted: a snapshot chunk (1 MiB by default) plus headroom. A larger
/// length is a hostile or confused peer, never an allocation request.
const MAX_FRAME: usize = 64 << 20;
const QUEUE: usize = 4096;
/// Bytes gathered into one write while more messages are queued.
const BATCH_BYTES: usize = 256 << 10;

const ACCEPTED: u8 = 0;
const CLUSTER_MISMATCH: u8 = 1;
const WRONG_MEMBER: u8 = 2;
const REMOVED: u8 = 3;

/// What a removed member is told, and reports as it stops.
pub const REMOVED_TEXT: &str = "the member has been permanently removed from the cluster";

/// Sends raft messages to peers.
#[derive(Clone)]
pub struct PeerNet {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    cluster_id: u64,
    queues: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    addrs: Mutex<HashMap<u64, Vec<String>>>,
    /// The member table, for the member-list query.
    members: Mutex<Vec<MemberInfo>>,
    /// Members that were in the table and left it: refused at the handshake.
    removed: Mutex<HashSet<u64>>,
    fatal: mpsc::UnboundedSender<String>,
    dialer: PeerDialer,
    /// Idle leader-call connections, by the member they reach.
    call_streams: Mutex<Vec<(u64, Box<dyn PeerIo>)>>,
    metrics: PeerMetrics,
}

impl PeerNet {
    /// A transport for member `id` of `cluster_id`; a peer of another cluster is
    /// reported on `fatal`.
    pub fn new(id: u64, cluster_id: u64, fatal: mpsc::UnboundedSender<String>) -> PeerNet {
        PeerNet::with_dialer(
            id,
            cluster_id,
            fatal,
            PeerDialer::plain(),
            PeerMetrics::unregistered(),
        )
    }

    /// As [`PeerNet::new`], dialing peers with `dialer` (TLS for https peer URLs) and
    /// counting traffic in `metrics`.
    pub fn with_dialer(
        id: u64,
        cluster_id: u64,
        fatal: mpsc::UnboundedSender<String>,
        dialer: PeerDialer,
        metrics: PeerMetrics,
    ) -> PeerNet {
        PeerNet {
            inner: Arc::new(Inner {
                id,
                cluster_id,
                queues: Mutex::new(HashMap::new()),
                addrs: Mutex::new(HashMap::new()),
                members: Mutex::new(Vec::new()),
                removed: Mutex::new(HashSet::new()),
                fatal,
                dialer,
                call_streams: Mutex::new(Vec::new()),
                metrics,
            }),
        }
    }

    /// The member table changed: where each peer listens, who may connect, and what the
    /// member-list query answers. A member that left the table is refused from now on.
    pub fn set_members(&self, members: Vec<MemberInfo>) {
        let urls: HashMap<u64, Vec<String>> = members
            .iter()
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
        if let (Ok(mut a), Ok(mut removed)) = (self.inner.addrs.lock(), self.inner.removed.lock()) {
            removed.extend(a.keys().filter(|id| !urls.contains_key(id)));
            for id in urls.keys() {
                removed.remove(id);
            }
            *a = urls;
        }
        if let Ok(mut m) = self.inner.members.lock() {
            *m = members;
        }
    }

    /// Refuses these members from now on, as removed. For removals applied before the
    /// table was first filled (`--force-new-cluster` removes every other member at
    /// start), which [`PeerNet::set_members`] cannot see leave; adding one back to the
    /// table lifts it.
    pub fn mark_removed(&self, ids: impl IntoIterator<Item = u64>) {
        if let Ok(mut removed) = self.inner.removed.lock() {
            removed.extend(ids.into_iter().filter(|id| *id != self.inner.id));
        }
    }

    fn is_removed(&self, id: u64) -> bool {
        self.inner.removed.lock().is_ok_and(|r| r.contains(&id))
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.inner
            .members
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Queues a message for its recipient; drops it if the peer's queue is full.
    pub fn send(&self, m: Message) {
        let to = m.to.0;
        if to == self.inner.id {
            return;
        }
        let Ok(mut queues) = self.inner.queues.lock() else {
            return;
        };
        let q = queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(self.inner.clone(), to, rx));
            tx
        });
        if q.try_send(m).is_err() {
            // etcd counts a message dropped for a full sending buffer as a failure too.
            self.inner
                .metrics
                .sent_failures
                .with_label_values(&[format!("{to:x}")])
                .inc();
        }
    }

    /// Closes every peer stream (the member is stopping).
    pub fn close(&self) {
        if let Ok(mut q) = self.inner.queues.lock() {
            q.clear();
        }
    }

    /// Member `to`'s first peer URL, if it is in the member table.
    pub(crate) fn addr_of(&self, to: u64) -> Option<String> {
        self.inner
            .addrs
            .lock()
            .ok()
            .and_then(|a| a.get(&to).and_then(|u| u.first().cloned()))
    }

    /// How this member dials its peers.
    pub(crate) fn dialer(&self) -> &PeerDialer {
        &self.inner.dialer
    }

    /// This member's ID.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Its cluster's ID.
    pub(crate) fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// A kept leader-call connection to `to`; those to other members (a former leader)
    /// are closed.
    pub(crate) fn take_call_stream(&self, to: u64) -> Option<Box<dyn PeerIo>> {
        let mut kept = self.inner.call_streams.lock().ok()?;
        kept.retain(|(id, _)| *id == to);
        kept.pop().map(|(_, s)| s)
    }

    /// Keeps a leader-call connection to `to` for the next call (a few at most).
    pub(crate) fn keep_call_stream(&self, to: u64, s: Box<dyn PeerIo>) {
        const KEPT: usize = 4;
        if let Ok(mut kept) = self.inner.call_streams.lock() {
            if kept.len() < KEPT {
                kept.push((to, s));
            }
        }
    }

    /// Whether `id` is in the member table now (and so not removed).
    pub(crate) fn is_member(&self, id: u64) -> bool {
        self.inner.addrs.lock().is_ok_and(|a| a.contains_key(&id))
    }
}

/// The host:port of an `http(s)://host:port` URL (for `unix(s)://`, the socket path).
pub fn url_host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hp = rest.split('/').next()?;
    (!hp.is_empty()).then_some(hp)
}

async fn writer(inner: Arc<Inner>, to: u64, mut rx: mpsc::Receiver<Message>) {
    let net = PeerNet {
        inner: inner.clone(),
    };
    let mut backoff = Duration::from_millis(50);
    let mut reported = false;
    let peer = format!("{to:x}");
    let failures = inner.metrics.sent_failures.with_label_values(&[&peer]);
    loop {
        if rx.is_closed() {
            return;
        }
        let Some(addr) = net.addr_of(to) else {
            // Unknown address: drop what is queued and look again later.
            while rx.try_recv().is_ok() {
                failures.inc();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match dial(&inner, to, &addr).await {
            Ok(stream) => {
                if reported {
                    tracing::info!(peer = %format!("{to:x}"), "peer connection restored");
                    reported = false;
                }
                backoff = Duration::from_millis(50);
                inner.metrics.connected(&peer);
                let pumped = pump(stream, &mut rx, &inner.metrics, &peer).await;
                inner.metrics.disconnected(&peer);
                if pumped.is_none() {
                    return; // the transport is gone
                }
            }
            Err(DialError::Fatal(msg)) => {
                let _ = inner.fatal.send(msg);
                return;
            }
            Err(DialError::Io(e)) => {
                if !reported {
                    tracing::warn!(peer = %format!("{to:x}"), %addr, error = %e, "peer unreachable");
                    reported = true;
                }
            }
        }
        // Messages queued while disconnected are stale by the time we reconnect.
        while rx.try_recv().is_ok() {
            failures.inc();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

enum DialError {
    Io(std::io::Error),
    Fatal(String),
}

async fn dial(inner: &Inner, to: u64, url: &str) -> Result<Box<dyn PeerIo>, DialError> {
    let mut s = inner.dialer.connect(url).await.map_err(DialError::Io)?;
    let mut hs = Vec::with_capacity(HANDSHAKE_LEN);
    hs.extend_from_slice(MAGIC);
    hs.push(VERSION);
    hs.extend_from_slice(&inner.cluster_id.to_le_bytes());
    hs.extend_from_slice(&inner.id.to_le_bytes());
    hs.extend_from_slice(&to.to_le_bytes());
    // The handshake is one round trip: what etcd's prober measures.
    let sent_at = std::time::Instant::now();
    s.write_all(&hs).await.map_err(DialError::Io)?;
    let mut status = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut status))
        .await
        .map_err(|_| DialError::Io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(DialError::Io)?;
    inner
        .metrics
        .round_trip
        .with_label_values(&[format!("{to:x}")])
        .observe(sent_at.elapsed().as_secs_f64());
    let theirs = u64::from_le_bytes(status[1..9].try_into().unwrap_or([0; 8]));
    match status[0] {
        ACCEPTED => Ok(s),
        CLUSTER_MISMATCH => Err(DialError::Fatal(format!(
            "cluster ID mismatch: member {to:x} at {url} belongs to cluster {theirs:x}, this member ({:x}) to cluster {:x}",
            inner.id, inner.cluster_id
        ))),
        WRONG_MEMBER => Err(DialError::Io(std::io::Error::other(format!(
            "{url} is member {theirs:x}, not {to:x}"
        )))),
        REMOVED => Err(DialError::Fatal(REMOVED_TEXT.to_string())),
        _ => Err(DialError::Io(std::io::Error::other("bad handshake reply"))),
    }
}

/// Writes queued messages until the connection fails (Some) or the queue closes (None).
async fn pump(
    stream: Box<dyn PeerIo>,
    rx: &mut mpsc::Receiver<Message>,
    metrics: &PeerMetrics,
    peer: &str,
) -> Option<()> {
    let sent = metrics.sent_bytes.with_label_values(&[peer]);
    let failures = metrics.sent_failures.with_label_values(&[peer]);
    let mut w = BufWriter::with_capacity(BATCH_BYTES, stream);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let m = rx.recv().await?;
        frame(&m, &mut buf);
        let mut batched = 1;
        // Gather whatever else is already queued into the same write.
        while buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    frame(&m, &mut buf);
                    batched += 1;
                }
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            failures.inc_by(batched);
            return Some(());
        }
        sent.inc_by(buf.len() as u64);
        buf.clear();
    }
}

fn frame(m: &Message, buf: &mut Vec<u8>) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    encode_message(m, buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Accepts peer connections (over TLS when `tls` is given), hands their messages to
/// `deliver` and their leader calls to `calls`.
pub async fn serve(
    listener: SocketListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    net: PeerNet,
    deliver: impl Fn(Message) -> bool + Send + Sync + Clone + 'static,
    calls: CallHandler,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((s, from)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let deliver = deliver.clone();
        let calls = calls.clone();
        let net = net.clone();
        let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            let s: Box<dyn PeerIo> = match acceptor {
                None => Box::new(s),
                Some(a) => match tokio::time::timeout(Duration::from_secs(5), a.accept(s)).await {
                    Ok(Ok(t)) => Box::new(t),
                    Ok(Err(e)) => {
                        tracing::warn!(remote_addr = %from, error = %e, "rejected peer connection");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(remote_addr = %from, "rejected peer connection: TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = serve_conn(s, &net, deliver, &calls).await {
                if let Some(from) = e.peer {
                    net.inner
                        .metrics
                        .received_failures
                        .with_label_values(&[format!("{from:x}")])
                        .inc();
                }
                let e = e.error;
                tracing::debug!(%from, error = %e, "peer connection closed");
            }
        });
    }
}

/// Why a peer connection ended early; `peer` once the stream was accepted from it.
struct ConnError {
    peer: Option<u64>,
    error: std::io::Error,
}

impl From<std::io::Error> for ConnError {
    fn from(error: std::io::Error) -> ConnError {
        ConnError { peer: None, error }
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    net: &PeerNet,
    deliver: impl Fn(Message) -> bool,
    calls: &CallHandler,
) -> Result<(), ConnError> {
    let (id, cluster_id) = (net.inner.id, net.inner.cluster_id);
    let mut hs = [0u8; HANDSHAKE_LEN];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hs[..8]))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if &hs[..8] == INFO_MAGIC {
        return Ok(peer_info::answer(&mut s, cluster_id, net.members()).await?);
    }
    if &hs[..8] == CALL_MAGIC {
        return Ok(leader_call::answer(&mut s, net, calls).await?);
    }
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hs[8..]))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if &hs[..8] != MAGIC || hs[8] != VERSION {
        return Err(std::io::Error::other("not a keel peer").into());
    }
    let word = |i: usize| u64::from_le_bytes(hs[i..i + 8].try_into().unwrap_or([0; 8]));
    let (their_cluster, from, to) = (word(9), word(17), word(25));
    let (status, info) = if their_cluster != cluster_id {
        tracing::warn!(
            peer = %format!("{from:x}"),
            local_cluster = %format!("{cluster_id:x}"),
            remote_cluster = %format!("{their_cluster:x}"),
            "refused peer: cluster ID mismatch"
        );
        (CLUSTER_MISMATCH, cluster_id)
    } else if to != id {
        (WRONG_MEMBER, id)
    } else if net.is_removed(from) {
        tracing::warn!(peer = %format!("{from:x}"), "refused peer: removed from the cluster");
        (REMOVED, id)
    } else {
        (ACCEPTED, id)
    };
    let mut reply = [0u8; 9];
    reply[0] = status;
    reply[1..].copy_from_slice(&info.to_le_bytes());
    s.write_all(&reply).await?;
    if status != ACCEPTED {
        return Ok(());
    }
    let received = net
        .inner
        .metrics
        .received_bytes
        .with_label_values(&[format!("{from:x}")]);
    match receive(s, id, from, deliver, &received).await {
        // The peer closing its stream (a restart, a redial) is no failure.
        Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(ConnError {
            peer: Some(from),
            error: e,
        }),
        _ => Ok(()),
    }
}

/// Reads raft messages from an accepted stream until it ends.
async fn receive<S: AsyncRead + Unpin>(
    s: S,
    id: u64,
    from: u64,
    deliver: impl Fn(Message) -> bool,
    received: &prometheus::IntCounter,
) -> std::io::Result<()> {
    let mut r = tokio::io::BufReader::with_capacity(BATCH_BYTES, s);
    loop {
        let len = r.read_u32_le().await? as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "frame of {len} bytes exceeds the limit"
            )));
        }
        let mut b = BytesMut::zeroed(len);
        r.read_exact(&mut b).await?;
        received.inc_by(4 + len as u64);
        let b: Bytes = b.freeze();
        match decode_message(&b) {
            // Only messages addressed to us and from the member that opened the stream.
            Ok(m) if m.to.0 == id && m.from.0 == from => {
                if !deliver(m) {
                    return Ok(());
                }
            }
            Ok(_) => return Err(std::io::Error::other("misaddressed message")),
            Err(e) => return Err(std::io::Error::other(format!("bad message: {e}"))),
        }
    }
}
