//! The network nemesis: one TCP proxy in front of each member's peer port.
//!
//! Members advertise (and list in `--initial-cluster`) the proxy's port, and listen on a
//! real port only the proxy dials, so every byte between members passes through here.
//! A connection's dialer is recognised from its first bytes — keel's peer and
//! leader-call handshakes name the sending member (`KEELPEER`/`KEELCALL`, then the
//! cluster and sender IDs, little-endian), etcd's rafthttp requests carry
//! `X-Server-From` — so a cut can be one-way: bytes from the dialer to the member
//! behind the proxy travel `from dialer to member`, the replies the other way.
//!
//! A cut black-holes a direction of every connection it matches: bytes are read and
//! dropped (the sender sees no error, as with a lost route); a connection that lost
//! bytes mid-stream is closed once the cut heals, so no member ever reads a frame with
//! a hole in it, and the member redials. Delay (with jitter, order kept) applies to
//! every byte through a member's proxy; a reset closes each of its connections with an
//! RST.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the proxy waits for a dialer's first bytes before it treats the dialer as
/// unknown.
const HELLO_WAIT: Duration = Duration::from_millis(300);

/// How often a connection re-reads the fault state (to close it after a healed cut or a
/// reset even when no byte flows).
const SUPERVISE_EVERY: Duration = Duration::from_millis(20);

/// The faults the network holds right now.
#[derive(Debug, Default)]
struct NetState {
    /// `(from, to)`: bytes member `from` sends never reach member `to`.
    cuts: BTreeSet<(usize, usize)>,
    /// Per member: (delay, jitter) added to every byte through its proxy.
    delay: HashMap<usize, (Duration, Duration)>,
    /// Per member: bumped by each reset; a connection older than the epoch closes.
    resets: HashMap<usize, u64>,
    /// Member IDs (from `MemberList`) to indexes, for recognising dialers.
    ids: HashMap<u64, usize>,
    /// Connections whose dialer was recognised, and those whose was not.
    recognised: u64,
    unrecognised: u64,
}

impl NetState {
    /// Whether bytes from `from` (None: an unrecognised dialer) to `to` are cut. An
    /// unrecognised sender is cut when anyone is cut from `to`: never less than the
    /// fault asks for.
    fn cut(&self, from: Option<usize>, to: usize) -> bool {
        match from {
            Some(f) => self.cuts.contains(&(f, to)),
            None => self.cuts.iter().any(|&(_, t)| t == to),
        }
    }

    /// Whether bytes from `from` to `to` (None: an unrecognised receiver) are cut.
    fn cut_to(&self, from: usize, to: Option<usize>) -> bool {
        match to {
            Some(t) => self.cuts.contains(&(from, t)),
            None => self.cuts.iter().any(|&(f, _)| f == from),
        }
    }
}

/// The proxies of a cluster and the faults they apply.
pub struct Network {
    state: Arc<Mutex<NetState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<NetState>) -> std::sync::MutexGuard<'_, NetState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// Starts one proxy per member: `routes[i] = (proxy address, member i's real peer
    /// address)`.
    pub async fn start(routes: &[(SocketAddr, SocketAddr)]) -> std::io::Result<Network> {
        let state = Arc::new(Mutex::new(NetState::default()));
        let mut tasks = Vec::new();
        for (member, &(proxy, real)) in routes.iter().enumerate() {
            let listener = TcpListener::bind(proxy).await?;
            let state = state.clone();
            tasks.push(tokio::spawn(accept_loop(listener, member, real, state)));
        }
        Ok(Network { state, tasks })
    }

    /// Tells the proxies which member ID is which member, for one-way cuts.
    pub fn set_member_ids(&self, ids: HashMap<u64, usize>) {
        lock(&self.state).ids = ids;
    }

    /// Cuts bytes from `from` to `to` (one way).
    pub fn cut(&self, from: usize, to: usize) {
        lock(&self.state).cuts.insert((from, to));
    }

    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let mut s = lock(&self.state);
        for &x in a {
            for &y in b {
                s.cuts.insert((x, y));
                s.cuts.insert((y, x));
            }
        }
    }

    /// Adds `delay` plus up to `jitter` to every byte through `member`'s proxy.
    pub fn delay(&self, member: usize, delay: Duration, jitter: Duration) {
        lock(&self.state).delay.insert(member, (delay, jitter));
    }

    /// Closes every connection through `member`'s proxy with an RST.
    pub fn reset(&self, member: usize) {
        *lock(&self.state).resets.entry(member).or_default() += 1;
    }

    /// Connections so far whose dialer was recognised, and those whose was not (before
    /// member IDs are known, and for any other protocol).
    pub fn dialers(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.recognised, s.unrecognised)
    }

    /// Removes these cuts (a fault's own, when it ends).
    pub fn restore(&self, cuts: &[(usize, usize)]) {
        let mut s = lock(&self.state);
        for c in cuts {
            s.cuts.remove(c);
        }
    }

    /// Removes `member`'s delay.
    pub fn undelay(&self, member: usize) {
        lock(&self.state).delay.remove(&member);
    }

    /// Removes every cut and delay.
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        s.cuts.clear();
        s.delay.clear();
    }
}

async fn accept_loop(
    listener: TcpListener,
    member: usize,
    real: SocketAddr,
    state: Arc<Mutex<NetState>>,
) {
    let seq = AtomicU64::new(0);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(client, member, real, state.clone(), n));
    }
}

/// The sending member named by a connection's first bytes, if recognisable.
fn dialer_id(hello: &[u8]) -> Option<u64> {
    // keel: magic(8) version(1) cluster(8) from(8) to(8), little-endian.
    if hello.len() >= 25 && (&hello[..8] == b"KEELPEER" || &hello[..8] == b"KEELCALL") {
        let mut id = [0u8; 8];
        id.copy_from_slice(&hello[17..25]);
        return Some(u64::from_le_bytes(id));
    }
    // etcd's rafthttp: an HTTP request with `X-Server-From: <hex member ID>`.
    let text = String::from_utf8_lossy(&hello[..hello.len().min(4096)]);
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-server-from")
            .then(|| u64::from_str_radix(value.trim(), 16).ok())?
    })
}

/// One direction's flags, shared by its pump and the connection's supervisor.
#[derive(Default)]
struct Lane {
    /// Bytes were dropped: the stream has a hole, so it must close once the cut heals.
    holed: AtomicBool,
}

async fn serve(
    client: TcpStream,
    member: usize,
    real: SocketAddr,
    state: Arc<Mutex<NetState>>,
    n: u64,
) {
    let epoch = lock(&state).resets.get(&member).copied().unwrap_or(0);
    let Ok(Ok(upstream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(real)).await
    else {
        return; // the member is down: the dialer sees the connection close
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_rd, client_wr) = client.into_split();
    let (upstream_rd, upstream_wr) = upstream.into_split();

    let mut hello = vec![0u8; 8192];
    let got = match tokio::time::timeout(HELLO_WAIT, client_rd.read(&mut hello)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return,
        Ok(Ok(k)) => k,
        Err(_) => 0,
    };
    hello.truncate(got);
    let dialer = {
        let mut s = lock(&state);
        let d = dialer_id(&hello).and_then(|id| s.ids.get(&id).copied());
        if d.is_some() {
            s.recognised += 1;
        } else {
            s.unrecognised += 1;
        }
        d
    };

    let (close_tx, close_rx) = watch::channel(false);
    let up = Arc::new(Lane::default());
    let down = Arc::new(Lane::default());
    let seed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ member as u64;
    // Dialer -> member.
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let up_writer = tokio::spawn(writer(up_rx, upstream_wr, close_rx.clone()));
    let up_pump = tokio::spawn(pump(
        client_rd,
        Bytes::from(hello),
        up_tx,
        up.clone(),
        state.clone(),
        member,
        move |s: &NetState| s.cut(dialer, member),
        seed,
    ));
    // Member -> dialer.
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let down_writer = tokio::spawn(writer(down_rx, client_wr, close_rx));
    let down_pump = tokio::spawn(pump(
        upstream_rd,
        Bytes::new(),
        down_tx,
        down.clone(),
        state.clone(),
        member,
        move |s: &NetState| s.cut_to(member, dialer),
        seed ^ 1,
    ));

    // Supervise: close after a reset, or once a cut that holed a lane has healed.
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        if up_pump.is_finished() && down_pump.is_finished() {
            break;
        }
        let s = lock(&state);
        if s.resets.get(&member).copied().unwrap_or(0) != epoch {
            break;
        }
        let healed_up = up.holed.load(Ordering::Relaxed) && !s.cut(dialer, member);
        let healed_down = down.holed.load(Ordering::Relaxed) && !s.cut_to(member, dialer);
        if healed_up || healed_down {
            break;
        }
    }
    up_pump.abort();
    down_pump.abort();
    let _ = close_tx.send(true);
    let _ = up_writer.await;
    let _ = down_writer.await;
}

/// Reads one direction and queues each chunk with its delivery time, or drops it while
/// the direction is cut.
#[allow(clippy::too_many_arguments)]
async fn pump<R, F>(
    mut rd: R,
    first: Bytes,
    tx: mpsc::UnboundedSender<Option<(Instant, Bytes)>>,
    lane: Arc<Lane>,
    state: Arc<Mutex<NetState>>,
    member: usize,
    is_cut: F,
    seed: u64,
) where
    R: tokio::io::AsyncRead + Unpin,
    F: Fn(&NetState) -> bool,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last = Instant::now();
    let mut chunk = first;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if !chunk.is_empty() {
            let (cut, delay) = {
                let s = lock(&state);
                (is_cut(&s), s.delay.get(&member).copied())
            };
            if cut || lane.holed.load(Ordering::Relaxed) {
                lane.holed.store(true, Ordering::Relaxed);
            } else {
                let mut at = Instant::now();
                if let Some((d, j)) = delay {
                    let jitter = if j.is_zero() {
                        0
                    } else {
                        rng.next_u64() % j.as_micros() as u64
                    };
                    at += d + Duration::from_micros(jitter);
                }
                // Jitter never reorders bytes of one stream.
                last = last.max(at);
                if tx.send(Some((last, chunk))).is_err() {
                    return;
                }
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // End of stream: the writer half-closes its side after what is queued.
                let _ = tx.send(None);
                return;
            }
            Ok(k) => chunk = Bytes::copy_from_slice(&buf[..k]),
        }
    }
}

/// Writes queued chunks at their delivery times; on close, resets the connection.
async fn writer(
    mut rx: mpsc::UnboundedReceiver<Option<(Instant, Bytes)>>,
    mut wr: OwnedWriteHalf,
    mut close: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(Some((at, bytes))) => {
                    tokio::time::sleep_until(at).await;
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(None) => {
                    let _ = wr.shutdown().await;
                    // Wait for the connection's end before dropping the half.
                    let _ = close.changed().await;
                    break;
                }
                None => break,
            },
            _ = close.changed() => break,
        }
    }
    // Every proxy-side close is a fault (a reset, a healed cut) or follows the peer's
    // own close: an RST tells the member at once instead of leaving half-open sockets.
    let _ = wr.as_ref().set_zero_linger();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialers_are_recognised_from_keel_and_etcd_hellos() {
        let mut keel = b"KEELPEER\x01".to_vec();
        keel.extend_from_slice(&7u64.to_le_bytes());
        keel.extend_from_slice(&0xabcu64.to_le_bytes());
        keel.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(dialer_id(&keel), Some(0xabc));
        let etcd = b"GET /raft/stream/msgapp/8e9e05c52164694d HTTP/1.1\r\nHost: x\r\nX-Server-From: 91bc3c398fb3c146\r\n\r\n";
        assert_eq!(dialer_id(etcd), Some(0x91bc_3c39_8fb3_c146));
        assert_eq!(dialer_id(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn unknown_dialers_are_cut_whenever_anyone_is() {
        let mut s = NetState::default();
        s.cuts.insert((0, 1));
        assert!(s.cut(Some(0), 1));
        assert!(!s.cut(Some(2), 1));
        assert!(s.cut(None, 1));
        assert!(!s.cut(None, 0));
        assert!(s.cut_to(0, None));
        assert!(!s.cut_to(1, Some(0)));
    }
}
