//! `keelctl bench put|range|txn-put|watch`: load generators that speak etcd's gRPC API,
//! so one run can be pointed at Keel or at etcd itself and the figures compared. Flag
//! names, key generation and the summary's shape follow etcd's `benchmark` tool.
//!
//! `clients` tasks share `conns` gRPC connections (round-robin over the endpoints) and
//! pull request numbers from one counter until `total` have been sent. Every request's
//! duration is recorded; failures are counted, never fatal, and a request that takes
//! longer than [`REQUEST_TIMEOUT`] counts as failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_runtime_tokio::pb::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
    request_op, watch_client::WatchClient, watch_request, MemberListRequest, PutRequest,
    RangeRequest, RequestOp, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};

use crate::latency::{ms, Latencies};

/// How long one request (or one connection attempt, or a watch stream's silence) may
/// last before it counts as an error: long enough to ride out a leader election, short
/// enough that a wedged server cannot hang the benchmark.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go and how many are in flight.
#[derive(Clone, Debug)]
pub struct Target {
    /// Client endpoints, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// gRPC connections, opened round-robin over the endpoints.
    pub conns: usize,
    /// Concurrent client tasks, each with one request in flight, sharing the connections.
    pub clients: usize,
    /// Ask the endpoints who leads and send everything there, so followers' forwarding
    /// hop is not part of the measurement.
    pub target_leader: bool,
}

/// What a run sends.
#[derive(Clone, Debug)]
pub enum Workload {
    /// One put per request.
    Put {
        /// Requests to send.
        total: u64,
        /// Key bytes (the key number is varint-encoded at the start, zero-padded).
        key_size: usize,
        /// Value bytes (random, the same for every request).
        val_size: usize,
        /// Distinct keys: key numbers are drawn from `0..key_space_size`.
        key_space_size: u64,
        /// Key number = request number mod key space, instead of random.
        sequential_keys: bool,
    },
    /// One range read per request, always the same key or interval.
    Range {
        /// Key, or start of the interval.
        key: Bytes,
        /// End of the interval (exclusive); empty for a single key.
        end: Bytes,
        /// Requests to send.
        total: u64,
        /// Serializable (served from the member's local state) instead of linearizable.
        serializable: bool,
    },
    /// One transaction with `txn_ops` puts (no comparisons) per request.
    TxnPut {
        /// Requests to send.
        total: u64,
        /// Key bytes, as for puts.
        key_size: usize,
        /// Value bytes.
        val_size: usize,
        /// Distinct keys; the keys of consecutive ops walk it sequentially, as etcd's
        /// benchmark does.
        key_space_size: u64,
        /// Puts per transaction.
        txn_ops: usize,
    },
    /// Watchers on one prefix, then puts under it; measures event delivery.
    Watch {
        /// Watch streams (one gRPC stream each), round-robin over the connections.
        streams: usize,
        /// Watchers created on each stream, all on the same prefix.
        watchers_per_stream: usize,
        /// Puts under the prefix, sent by the client tasks.
        put_total: u64,
        /// Digits of the key suffix after the run's prefix (the put number, zero-padded).
        key_size: usize,
        /// Value bytes.
        val_size: usize,
    },
}

impl Workload {
    /// The operation's name, as on the command line and in the `RESULT` line.
    pub fn op(&self) -> &'static str {
        match self {
            Workload::Put { .. } => "put",
            Workload::Range { .. } => "range",
            Workload::TxnPut { .. } => "txn-put",
            Workload::Watch { .. } => "watch",
        }
    }
}

/// A finished run's figures.
#[derive(Clone, Debug)]
pub struct Report {
    /// Operation name (`put`, `range`, `txn-put`, `watch`).
    pub op: &'static str,
    /// Client tasks.
    pub clients: usize,
    /// gRPC connections.
    pub conns: usize,
    /// The endpoints actually used (the leader's alone with `--target-leader`).
    pub endpoints: Vec<String>,
    /// Wall time from the first request to the last answer (for watch: from the first
    /// put to the last event delivered).
    pub elapsed: Duration,
    /// Requests that succeeded (for watch: events delivered).
    pub ok: u64,
    /// Requests that failed or timed out (for watch: failed puts plus watch streams
    /// that broke or stalled).
    pub errors: u64,
    /// Durations of the successful requests (for watch: from sending a put to a watcher
    /// receiving its event, one sample per watcher and event).
    pub latencies: Latencies,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// The watch run's extra figures.
    pub watch: Option<WatchFigures>,
}

/// Figures only the watch benchmark has.
#[derive(Clone, Debug)]
pub struct WatchFigures {
    /// Watch streams.
    pub streams: usize,
    /// Watchers in all.
    pub watchers: usize,
    /// Time to open the streams and have every watcher created.
    pub setup: Duration,
    /// Events the watchers should have received: successful puts × watchers.
    pub expected: u64,
    /// Wall time of the put phase.
    pub put_elapsed: Duration,
    /// Puts that succeeded.
    pub puts_ok: u64,
    /// Puts that failed.
    pub put_errors: u64,
    /// Put durations.
    pub put_latencies: Latencies,
}

impl Report {
    /// Successful requests (watch: delivered events) per second.
    pub fn qps(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    /// The human summary followed by the `RESULT` line (and for watch a `WATCH` line),
    /// ready to print.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let to = self.endpoints.join(",");
        match &self.watch {
            None => {
                out.push_str(&format!(
                    "{}: {} requests from {} clients over {} connections to {to}\n\n",
                    self.op,
                    self.ok + self.errors,
                    self.clients,
                    self.conns
                ));
                summary(
                    &mut out,
                    "Requests",
                    self.elapsed,
                    self.ok,
                    self.errors,
                    &self.latencies,
                );
            }
            Some(w) => {
                out.push_str(&format!(
                    "watch: {} streams × {} watchers, {} puts from {} clients over {} \
                     connections to {to}\n\n",
                    w.streams,
                    w.watchers / w.streams.max(1),
                    w.puts_ok + w.put_errors,
                    self.clients,
                    self.conns
                ));
                out.push_str(&format!(
                    "Watch setup: {:.4} secs. ({} watchers created)\n\nPuts:\n",
                    w.setup.as_secs_f64(),
                    w.watchers
                ));
                summary(
                    &mut out,
                    "Requests",
                    w.put_elapsed,
                    w.puts_ok,
                    w.put_errors,
                    &w.put_latencies,
                );
                out.push_str(&format!(
                    "\nEvents (latency = put sent to event received, per watcher; total = \
                     first put to last event):\n  Delivered:    {} of {} expected\n",
                    self.ok, w.expected
                ));
                summary(
                    &mut out,
                    "Events",
                    self.elapsed,
                    self.ok,
                    self.errors,
                    &self.latencies,
                );
                out.push_str(&format!(
                    "WATCH put_qps={:.1} events={} expected={} events_per_sec={:.1}\n",
                    per_second(w.puts_ok, w.put_elapsed),
                    self.ok,
                    w.expected,
                    self.qps()
                ));
            }
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("First error: {e}\n"));
        }
        let l = &self.latencies;
        out.push_str(&format!(
            "RESULT op={} clients={} conns={} qps={:.1} p50_ms={:.3} p90_ms={:.3} \
             p99_ms={:.3} p999_ms={:.3} errors={}\n",
            self.op,
            self.clients,
            self.conns,
            self.qps(),
            ms(l.percentile(500)),
            ms(l.percentile(900)),
            ms(l.percentile(990)),
            ms(l.percentile(999)),
            self.errors
        ));
        out
    }
}

fn per_second(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// etcd benchmark's summary block, with latencies in milliseconds.
fn summary(out: &mut String, what: &str, elapsed: Duration, ok: u64, errors: u64, l: &Latencies) {
    // Labels padded to one column, as etcd's report lines up its values.
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("  {:<14}{value}\n", format!("{label}:")));
    };
    out.push_str("Summary:\n");
    line(out, "Total", format!("{:.4} secs.", elapsed.as_secs_f64()));
    line(out, what, format!("{ok} ok, {errors} errors"));
    line(out, "Slowest", format!("{:.3} ms.", ms(l.slowest())));
    line(out, "Fastest", format!("{:.3} ms.", ms(l.fastest())));
    line(out, "Average", format!("{:.3} ms.", ms(l.average())));
    line(
        out,
        &format!("{what}/sec"),
        format!("{:.1}", per_second(ok, elapsed)),
    );
    out.push_str("\nLatency distribution:\n");
    for (label, pm) in [("50%", 500), ("90%", 900), ("99%", 990), ("99.9%", 999)] {
        out.push_str(&format!("  {label} in {:.3} ms.\n", ms(l.percentile(pm))));
    }
}

/// Go's `binary.PutVarint`, which etcd's benchmark uses to make keys: zigzag (so small
/// negative numbers stay short), then base-128 groups, least significant first, the high
/// bit set on every byte but the last. Returns the bytes written, or `None` when `buf`
/// is too short (where Go would panic).
pub fn put_varint(buf: &mut [u8], x: i64) -> Option<usize> {
    let mut ux = (x as u64) << 1;
    if x < 0 {
        ux = !ux;
    }
    let mut i = 0;
    while ux >= 0x80 {
        *buf.get_mut(i)? = ux as u8 | 0x80;
        ux >>= 7;
        i += 1;
    }
    *buf.get_mut(i)? = ux as u8;
    Some(i + 1)
}

/// etcd benchmark's key for key number `n`: `key_size` bytes, `n` varint-encoded at the
/// start and zeros after it. `None` if the varint does not fit. (etcd's tool reuses one
/// buffer, so a short varint can leave a longer predecessor's tail behind and the key
/// space grows past `--key-space-size`; zeroing keeps the key space what was asked.)
pub fn varint_key(n: i64, key_size: usize) -> Option<Vec<u8>> {
    let mut k = vec![0u8; key_size];
    put_varint(&mut k, n)?;
    Some(k)
}

/// `host:port` or `http://host:port` → a URL tonic can dial. TLS is not built in.
pub fn endpoint_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.starts_with("http://") {
        Ok(s.to_string())
    } else if s.contains("://") {
        Err(format!(
            "endpoint {s:?}: only plain http:// endpoints are supported"
        ))
    } else if s.is_empty() {
        Err("empty endpoint".to_string())
    } else {
        Ok(format!("http://{s}"))
    }
}

/// Runs a benchmark on a fresh multi-threaded runtime (one worker per core) and returns
/// its figures. Setup failures (bad flags, unreachable endpoints, watchers that could
/// not be created) are errors; failures of individual requests are counted in the
/// report.
pub fn run(target: &Target, workload: &Workload) -> Result<Report, String> {
    validate(target, workload)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(run_async(target.clone(), workload.clone()))
}

fn validate(t: &Target, w: &Workload) -> Result<(), String> {
    if t.endpoints.is_empty() {
        return Err("no endpoints".into());
    }
    if t.conns == 0 || t.clients == 0 {
        return Err("--conns and --clients must be at least 1".into());
    }
    let fits = |space: u64, key_size: usize| -> Result<(), String> {
        if space == 0 {
            return Err("--key-space-size must be at least 1".into());
        }
        let top = i64::try_from(space - 1).map_err(|_| "--key-space-size too large")?;
        if varint_key(top, key_size).is_none() {
            let need = put_varint(&mut [0u8; 10], top).unwrap_or(10);
            return Err(format!(
                "--key-size {key_size} cannot hold key number {top} ({need} varint bytes)"
            ));
        }
        Ok(())
    };
    match *w {
        Workload::Put {
            key_size,
            key_space_size,
            ..
        } => fits(key_space_size, key_size),
        Workload::Range { .. } => Ok(()),
        Workload::TxnPut {
            key_size,
            key_space_size,
            txn_ops,
            ..
        } => {
            fits(key_space_size, key_size)?;
            if txn_ops == 0 || txn_ops as u64 > key_space_size {
                // A txn may not put one key twice; consecutive ops walk the key space, so
                // more ops than keys would make every request fail.
                return Err(format!(
                    "--txn-ops must be between 1 and --key-space-size ({key_space_size}): \
                     etcd rejects a txn that puts the same key twice"
                ));
            }
            Ok(())
        }
        Workload::Watch {
            streams,
            watchers_per_stream,
            ..
        } => {
            if streams == 0 || watchers_per_stream == 0 {
                return Err("--streams and --watchers-per-stream must be at least 1".into());
            }
            Ok(())
        }
    }
}

async fn run_async(target: Target, workload: Workload) -> Result<Report, String> {
    let mut urls = target
        .endpoints
        .iter()
        .map(|e| endpoint_url(e))
        .collect::<Result<Vec<_>, _>>()?;
    if target.target_leader {
        urls = vec![find_leader(&urls).await?];
    }
    let mut channels = Vec::with_capacity(target.conns);
    for i in 0..target.conns {
        channels.push(connect(&urls[i % urls.len()]).await?);
    }
    let seed = seed();
    let first_error = Arc::new(OnceLock::new());
    let mut report = Report {
        op: workload.op(),
        clients: target.clients,
        conns: target.conns,
        endpoints: urls,
        elapsed: Duration::ZERO,
        ok: 0,
        errors: 0,
        latencies: Latencies::default(),
        first_error: None,
        watch: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let random_value = |rng: &mut ChaCha8Rng, n: usize| {
        let mut v = vec![0u8; n];
        rng.fill_bytes(&mut v);
        Bytes::from(v)
    };
    let (kind, total, value) = match workload {
        Workload::Put {
            total,
            key_size,
            val_size,
            key_space_size,
            sequential_keys,
        } => (
            Kind::Put {
                key_size,
                key_space: key_space_size,
                sequential: sequential_keys,
            },
            total,
            random_value(&mut rng, val_size),
        ),
        Workload::Range {
            key,
            end,
            total,
            serializable,
        } => (
            Kind::Range(RangeRequest {
                key,
                range_end: end,
                serializable,
                ..RangeRequest::default()
            }),
            total,
            Bytes::new(),
        ),
        Workload::TxnPut {
            total,
            key_size,
            val_size,
            key_space_size,
            txn_ops,
        } => (
            Kind::TxnPut {
                key_size,
                key_space: key_space_size,
                ops: txn_ops,
            },
            total,
            random_value(&mut rng, val_size),
        ),
        Workload::Watch {
            streams,
            watchers_per_stream,
            put_total,
            key_size,
            val_size,
        } => {
            let value = random_value(&mut rng, val_size);
            // A fresh prefix per run, so keys left by earlier runs can neither be
            // mistaken for this run's events nor collide with its put numbers.
            let prefix = format!("keel-bench-watch/{:016x}/", rng.next_u64()).into_bytes();
            let spec = WatchSpec {
                streams,
                watchers_per_stream,
                put_total,
                width: key_size,
                prefix,
                value,
            };
            return run_watch(report, &channels, spec, seed, first_error).await;
        }
    };
    let gen = Gen { kind, value, rng };
    let phase = drive(
        &channels,
        target.clients,
        total,
        gen,
        seed,
        first_error.clone(),
        None,
    )
    .await?;
    report.elapsed = phase.elapsed;
    report.ok = phase.ok;
    report.errors = phase.errors;
    report.latencies = phase.latencies;
    report.first_error = first_error.get().cloned();
    Ok(report)
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// The error and every cause under it: tonic's transport errors say only "transport
/// error" at the top, and the cause (connection refused, ...) is what helps.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    push_causes(&mut s, e.source());
    s
}

/// Appends each cause's text, skipping those that repeat what is already there: hyper
/// and tonic wrap one cause in layers with the same text.
fn push_causes(s: &mut String, mut source: Option<&dyn std::error::Error>) {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
}

fn status_text(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    push_causes(&mut text, std::error::Error::source(s));
    text
}

/// Opens one gRPC connection (HTTP/2, so many requests share it).
pub(crate) async fn connect(url: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("endpoint {url}: {}", error_chain(&e)))?
        .connect_timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    match tokio::time::timeout(REQUEST_TIMEOUT, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(format!("connect {url}: {}", error_chain(&e))),
        Err(_) => Err(format!("connect {url}: timed out")),
    }
}

/// The leader's client URL: the first endpoint whose Status names a leader answers,
/// itself if it is the leader, otherwise through the member list's client URLs.
async fn find_leader(urls: &[String]) -> Result<String, String> {
    let mut errors = Vec::new();
    for url in urls {
        match leader_via(url).await {
            Ok(leader) => return Ok(leader),
            Err(e) => errors.push(e),
        }
    }
    Err(format!(
        "--target-leader: no leader found ({})",
        errors.join("; ")
    ))
}

async fn leader_via(url: &str) -> Result<String, String> {
    let ch = connect(url).await?;
    let status = tokio::time::timeout(
        REQUEST_TIMEOUT,
        MaintenanceClient::new(ch.clone()).status(StatusRequest {}),
    )
    .await
    .map_err(|_| format!("{url}: Status timed out"))?
    .map_err(|s| format!("{url}: Status: {}", status_text(&s)))?
    .into_inner();
    if status.leader == 0 {
        return Err(format!("{url}: no leader"));
    }
    if status.header.as_ref().map(|h| h.member_id) == Some(status.leader) {
        return Ok(url.to_string());
    }
    let members = tokio::time::timeout(
        REQUEST_TIMEOUT,
        ClusterClient::new(ch).member_list(MemberListRequest {
            linearizable: false,
        }),
    )
    .await
    .map_err(|_| format!("{url}: MemberList timed out"))?
    .map_err(|s| format!("{url}: MemberList: {}", status_text(&s)))?
    .into_inner()
    .members;
    let leader = members
        .iter()
        .find(|m| m.id == status.leader)
        .ok_or_else(|| format!("{url}: leader {:x} not in the member list", status.leader))?;
    let client_url = leader
        .client_ur_ls
        .first()
        .ok_or_else(|| format!("{url}: leader {:x} has no client URLs", status.leader))?;
    endpoint_url(client_url)
}

/// What requests a client task builds.
#[derive(Clone)]
enum Kind {
    Put {
        key_size: usize,
        key_space: u64,
        sequential: bool,
    },
    Range(RangeRequest),
    TxnPut {
        key_size: usize,
        key_space: u64,
        ops: usize,
    },
    /// The watch benchmark's puts: the run's prefix, then the put number zero-padded to
    /// `width` digits, so a watcher can tell from the key when its put was sent.
    WatchPut {
        prefix: Vec<u8>,
        width: usize,
    },
}

/// Builds request number `i`; each client task has its own copy and random stream.
#[derive(Clone)]
struct Gen {
    kind: Kind,
    value: Bytes,
    rng: ChaCha8Rng,
}

enum Req {
    Put(PutRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
}

impl Gen {
    fn key(n: u64, key_size: usize) -> Bytes {
        // validate() checked that the largest key number fits.
        Bytes::from(varint_key(n as i64, key_size).unwrap_or_default())
    }

    fn make(&mut self, i: u64) -> Req {
        match &self.kind {
            Kind::Put {
                key_size,
                key_space,
                sequential,
            } => {
                let n = if *sequential {
                    i % key_space
                } else {
                    // Multiply-shift into [0, key_space): no modulo, bias below 2^-64·n.
                    ((u128::from(self.rng.next_u64()) * u128::from(*key_space)) >> 64) as u64
                };
                Req::Put(PutRequest {
                    key: Self::key(n, *key_size),
                    value: self.value.clone(),
                    ..PutRequest::default()
                })
            }
            Kind::Range(r) => Req::Range(r.clone()),
            Kind::TxnPut {
                key_size,
                key_space,
                ops,
            } => {
                let success = (0..*ops as u64)
                    .map(|j| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: Self::key((i * *ops as u64 + j) % key_space, *key_size),
                            value: self.value.clone(),
                            ..PutRequest::default()
                        })),
                    })
                    .collect();
                Req::Txn(TxnRequest {
                    compare: Vec::new(),
                    success,
                    failure: Vec::new(),
                })
            }
            Kind::WatchPut { prefix, width } => {
                let mut key = prefix.clone();
                key.extend_from_slice(format!("{i:0width$}").as_bytes());
                Req::Put(PutRequest {
                    key: Bytes::from(key),
                    value: self.value.clone(),
                    ..PutRequest::default()
                })
            }
        }
    }
}

async fn send(kv: &mut KvClient<Channel>, req: Req) -> Result<(), tonic::Status> {
    match req {
        Req::Put(r) => kv.put(r).await.map(drop),
        Req::Range(r) => kv.range(r).await.map(drop),
        Req::Txn(r) => kv.txn(r).await.map(drop),
    }
}

/// One request phase's outcome.
struct Phase {
    start: Instant,
    elapsed: Duration,
    ok: u64,
    errors: u64,
    latencies: Latencies,
}

/// When each watch put was sent, so watchers can time delivery. Nanoseconds since
/// `base`, plus one so that zero means "not sent".
struct SentAt {
    base: Instant,
    nanos: Vec<AtomicU64>,
    prefix_len: usize,
}

impl SentAt {
    fn mark(&self, i: u64) {
        if let Some(slot) = self.nanos.get(i as usize) {
            let n = self.base.elapsed().as_nanos() as u64 + 1;
            slot.store(n, Ordering::Release);
        }
    }

    /// Delivery latency of the event for `key`, if it is one of this run's puts.
    fn delivery(&self, key: &[u8], now: Instant) -> Option<Duration> {
        let digits = std::str::from_utf8(key.get(self.prefix_len..)?).ok()?;
        let n = self
            .nanos
            .get(digits.parse::<usize>().ok()?)?
            .load(Ordering::Acquire);
        let sent = self.base + Duration::from_nanos(n.checked_sub(1)?);
        Some(now.saturating_duration_since(sent))
    }
}

/// Sends `total` requests from `clients` tasks spread over `channels`.
async fn drive(
    channels: &[Channel],
    clients: usize,
    total: u64,
    gen: Gen,
    seed: u64,
    first_error: Arc<OnceLock<String>>,
    sent_at: Option<Arc<SentAt>>,
) -> Result<Phase, String> {
    let next = Arc::new(AtomicU64::new(0));
    let per_task = (total / clients as u64 + 1) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let mut gen = gen.clone();
        gen.rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1 + c as u64));
        let next = next.clone();
        let first_error = first_error.clone();
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = gen.make(i);
                if let Some(s) = &sent_at {
                    s.mark(i);
                }
                let t0 = Instant::now();
                let r = tokio::time::timeout(REQUEST_TIMEOUT, send(&mut kv, req)).await;
                let took = t0.elapsed();
                match r {
                    Ok(Ok(())) => latencies.push(took),
                    Ok(Err(s)) => {
                        errors += 1;
                        first_error.get_or_init(|| status_text(&s));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_init(|| {
                            format!("request timed out after {}s", REQUEST_TIMEOUT.as_secs())
                        });
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut parts = Vec::with_capacity(clients);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| format!("client task: {e}"))?;
        parts.push(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let latencies = Latencies::merge(parts);
    Ok(Phase {
        start,
        elapsed,
        ok: latencies.len() as u64,
        errors,
        latencies,
    })
}

struct WatchSpec {
    streams: usize,
    watchers_per_stream: usize,
    put_total: u64,
    width: usize,
    prefix: Vec<u8>,
    value: Bytes,
}

/// What one watch stream saw.
#[derive(Default)]
struct StreamOutcome {
    events: u64,
    latencies: Vec<Duration>,
    last_event: Option<Instant>,
    error: Option<String>,
}

/// The end of the interval holding every key that starts with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // All 0xff: "every key from here on".
}

async fn run_watch(
    mut report: Report,
    channels: &[Channel],
    spec: WatchSpec,
    seed: u64,
    first_error: Arc<OnceLock<String>>,
) -> Result<Report, String> {
    let sent_at = Arc::new(SentAt {
        base: Instant::now(),
        nanos: (0..spec.put_total).map(|_| AtomicU64::new(0)).collect(),
        prefix_len: spec.prefix.len(),
    });
    let prefix = Bytes::from(spec.prefix.clone());
    let range_end = Bytes::from(prefix_end(&spec.prefix));
    let (ready_tx, mut ready_rx) = mpsc::channel(spec.streams);
    // Tells the streams how many puts succeeded, so they know when they have it all.
    let (puts_done_tx, puts_done_rx) = watch::channel(None::<u64>);
    let setup_start = Instant::now();
    let mut streams = Vec::with_capacity(spec.streams);
    for s in 0..spec.streams {
        streams.push(tokio::spawn(watch_stream(
            channels[s % channels.len()].clone(),
            prefix.clone(),
            range_end.clone(),
            spec.watchers_per_stream,
            ready_tx.clone(),
            puts_done_rx.clone(),
            sent_at.clone(),
        )));
    }
    drop(ready_tx);
    let mut ready = 0;
    let mut setup_error = None;
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => ready += 1,
            Err(e) => {
                setup_error.get_or_insert(e);
            }
        }
    }
    if ready < spec.streams {
        for s in &streams {
            s.abort();
        }
        return Err(format!(
            "watch setup: {} of {} streams ready ({})",
            ready,
            spec.streams,
            setup_error.unwrap_or_else(|| "a stream task died".into())
        ));
    }
    let setup = setup_start.elapsed();

    let gen = Gen {
        kind: Kind::WatchPut {
            prefix: spec.prefix.clone(),
            width: spec.width,
        },
        value: spec.value.clone(),
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let puts = drive(
        channels,
        report.clients,
        spec.put_total,
        gen,
        seed,
        first_error.clone(),
        Some(sent_at),
    )
    .await?;
    puts_done_tx.send_replace(Some(puts.ok));

    let mut parts = Vec::with_capacity(spec.streams);
    let mut events = 0;
    let mut stream_errors = 0;
    let mut last_event = None::<Instant>;
    for s in streams {
        let o = s.await.map_err(|e| format!("watch stream task: {e}"))?;
        events += o.events;
        if let Some(e) = o.error {
            stream_errors += 1;
            first_error.get_or_init(|| e);
        }
        last_event = last_event.max(o.last_event);
        parts.push(o.latencies);
    }
    drop(puts_done_tx);
    let watchers = spec.streams * spec.watchers_per_stream;
    report.elapsed = last_event.map_or(puts.elapsed, |t| t.saturating_duration_since(puts.start));
    report.ok = events;
    report.errors = puts.errors + stream_errors;
    report.latencies = Latencies::merge(parts);
    report.first_error = first_error.get().cloned();
    report.watch = Some(WatchFigures {
        streams: spec.streams,
        watchers,
        setup,
        expected: puts.ok * watchers as u64,
        put_elapsed: puts.elapsed,
        puts_ok: puts.ok,
        put_errors: puts.errors,
        put_latencies: puts.latencies,
    });
    Ok(report)
}

/// Opens one watch stream and creates `watchers` watchers on it.
async fn open_watchers(
    ch: Channel,
    prefix: Bytes,
    range_end: Bytes,
    watchers: usize,
) -> Result<tonic::Streaming<keel_runtime_tokio::pb::etcdserverpb::WatchResponse>, String> {
    let creates: Vec<WatchRequest> = (0..watchers)
        .map(|_| WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: range_end.clone(),
                    ..WatchCreateRequest::default()
                },
            )),
        })
        .collect();
    // The outbound half stays open (pending) after the creates: a closed send side may
    // end the stream, and the watchers must live until the run is over.
    let outbound = tokio_stream::iter(creates).chain(tokio_stream::pending());
    let mut inbound = tokio::time::timeout(REQUEST_TIMEOUT, WatchClient::new(ch).watch(outbound))
        .await
        .map_err(|_| "opening the watch stream timed out".to_string())?
        .map_err(|s| format!("opening the watch stream: {}", status_text(&s)))?
        .into_inner();
    let mut created = 0;
    while created < watchers {
        let r = match tokio::time::timeout(REQUEST_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return Err("watch stream closed during setup".into()),
            Ok(Err(s)) => return Err(format!("watch setup: {}", status_text(&s))),
            Err(_) => return Err("watch creation timed out".into()),
        };
        if r.canceled {
            return Err(format!("watch create canceled: {}", r.cancel_reason));
        }
        if r.created {
            created += 1;
        }
    }
    Ok(inbound)
}

/// One watch stream: set up, report ready, then count events until every watcher has
/// seen every successful put (or the stream breaks, or stays silent too long).
async fn watch_stream(
    ch: Channel,
    prefix: Bytes,
    range_end: Bytes,
    watchers: usize,
    ready: mpsc::Sender<Result<(), String>>,
    mut puts_done: watch::Receiver<Option<u64>>,
    sent_at: Arc<SentAt>,
) -> StreamOutcome {
    let opened = open_watchers(ch, prefix, range_end, watchers).await;
    let _ = ready
        .send(opened.as_ref().map(drop).map_err(Clone::clone))
        .await;
    // Dropping the sender lets the setup loop end even if another stream task dies.
    drop(ready);
    let mut out = StreamOutcome::default();
    let Ok(mut inbound) = opened else {
        return out;
    };
    loop {
        if let Some(puts) = *puts_done.borrow() {
            if out.events >= puts * watchers as u64 {
                break;
            }
        }
        tokio::select! {
            m = tokio::time::timeout(REQUEST_TIMEOUT, inbound.message()) => match m {
                Ok(Ok(Some(r))) => {
                    if r.canceled {
                        out.error = Some(format!("watch canceled: {}", r.cancel_reason));
                        break;
                    }
                    let now = Instant::now();
                    for ev in &r.events {
                        out.events += 1;
                        out.last_event = Some(now);
                        if let Some(d) = ev.kv.as_ref().and_then(|kv| sent_at.delivery(&kv.key, now)) {
                            out.latencies.push(d);
                        }
                    }
                }
                Ok(Ok(None)) => {
                    out.error = Some("watch stream closed by the server".into());
                    break;
                }
                Ok(Err(s)) => {
                    out.error = Some(format!("watch stream: {}", status_text(&s)));
                    break;
                }
                Err(_) => {
                    out.error = Some(format!(
                        "watch stream silent for {}s with events missing",
                        REQUEST_TIMEOUT.as_secs()
                    ));
                    break;
                }
            },
            changed = puts_done.changed() => {
                if changed.is_err() {
                    break; // The run is over without us.
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn varint(x: i64) -> String {
        let mut buf = [0u8; 10];
        let n = put_varint(&mut buf, x).expect("10 bytes hold any i64");
        hex(&buf[..n])
    }

    #[test]
    fn put_varint_matches_go() {
        // Go's encoding/binary ExamplePutVarint, value by value.
        let go = [
            (-65, "8101"),
            (-64, "7f"),
            (-2, "03"),
            (-1, "01"),
            (0, "00"),
            (1, "02"),
            (2, "04"),
            (63, "7e"),
            (64, "8001"),
        ];
        for (x, want) in go {
            assert_eq!(varint(x), want, "PutVarint({x})");
        }
        // The older Go example's single value, ten bytes long.
        assert_eq!(varint(0x42f0_e1eb_a9ea_3693), "a6dad19ef5faf0f08501");
        assert_eq!(varint(i64::MIN), "ffffffffffffffffff01");
        assert_eq!(varint(300), "d804"); // zigzag 600 = 0x258.
    }

    #[test]
    fn varint_keys_are_zero_padded_and_checked() {
        assert_eq!(varint_key(300, 8), Some(vec![0xd8, 0x04, 0, 0, 0, 0, 0, 0]));
        assert_eq!(varint_key(0, 1), Some(vec![0]));
        assert_eq!(varint_key(64, 1), None);
        let mut short = [0u8; 1];
        assert_eq!(put_varint(&mut short, 64), None);
    }

    #[test]
    fn endpoints_and_prefixes() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(endpoint_url("http://h:1/").as_deref(), Ok("http://h:1"));
        assert!(endpoint_url("https://h:1").is_err());
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn txn_ops_walk_the_key_space() {
        let mut g = Gen {
            kind: Kind::TxnPut {
                key_size: 2,
                key_space: 5,
                ops: 3,
            },
            value: Bytes::from_static(b"v"),
            rng: ChaCha8Rng::seed_from_u64(1),
        };
        let Req::Txn(t) = g.make(1) else {
            panic!("txn-put builds txns");
        };
        let keys: Vec<Vec<u8>> = t
            .success
            .iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => p.key.to_vec(),
                _ => panic!("puts only"),
            })
            .collect();
        // Request 1 with 3 ops: key numbers 3, 4, 5 mod 5 = 0.
        assert_eq!(keys, vec![vec![6, 0], vec![8, 0], vec![0, 0]]);
    }

    #[test]
    fn validation_rejects_unsatisfiable_flags() {
        let t = Target {
            endpoints: vec!["127.0.0.1:2379".into()],
            conns: 1,
            clients: 1,
            target_leader: false,
        };
        let put = |key_size, key_space_size| Workload::Put {
            total: 1,
            key_size,
            val_size: 1,
            key_space_size,
            sequential_keys: false,
        };
        assert!(validate(&t, &put(8, 1)).is_ok());
        assert!(validate(&t, &put(1, 65)).is_err()); // 64 needs two bytes.
        assert!(validate(&t, &put(1, 64)).is_ok());
        let txn = Workload::TxnPut {
            total: 1,
            key_size: 8,
            val_size: 1,
            key_space_size: 1,
            txn_ops: 2,
        };
        assert!(validate(&t, &txn).is_err());
    }
}
