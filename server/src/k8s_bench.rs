//! `keelctl bench k8s`: the load kube-apiserver puts on its etcd, in one run: objects
//! under `/registry/pods/`, writers doing the apiserver's optimistic update (a txn that
//! puts only if the object's mod_revision is still the one it read, and reads the object
//! back when it is not), one client LISTing the whole prefix unpaginated in a loop (an
//! informer's relist, `kubectl get pods -A` without a limit), and prefix watchers that
//! must see every write. It speaks etcd's gRPC API, so the same run measures etcd.
//!
//! The figures that matter are the writers' tail (p99, p99.9, max) with and without the
//! lister: a store that serves a large LIST on the same task as raft makes every write
//! wait for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_runtime_tokio::pb::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, watch_client::WatchClient,
    watch_request, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::client_bench::{connect, endpoint_url, REQUEST_TIMEOUT};
use crate::latency::{ms, Latencies};

/// The prefix every object lives under, as kube-apiserver stores pods.
pub const PREFIX: &str = "/registry/pods/";

/// What one run does.
#[derive(Clone, Debug)]
pub struct K8sLoad {
    /// Client endpoints (`host:port` or `http://host:port`); writers and the lister are
    /// spread over them, as apiservers spread over etcd members.
    pub endpoints: Vec<String>,
    /// Objects under the prefix (created first if missing).
    pub objects: u64,
    /// Bytes per object.
    pub value_size: usize,
    /// Concurrent writers, each updating its own share of the objects.
    pub writers: usize,
    /// Concurrent listers (0: none).
    pub listers: usize,
    /// Prefix watchers, each on its own stream.
    pub watchers: usize,
    /// How long the writers run.
    pub duration: Duration,
}

/// One run's figures.
#[derive(Clone, Debug)]
pub struct K8sReport {
    /// Updates that succeeded.
    pub writes: u64,
    /// Updates that failed (errors, timeouts).
    pub write_errors: u64,
    /// Updates whose compare failed (a stale mod_revision; retried).
    pub conflicts: u64,
    /// Write latencies.
    pub write_lat: Latencies,
    /// LIST latencies.
    pub list_lat: Latencies,
    /// LISTs that failed.
    pub list_errors: u64,
    /// Events each watcher saw under the prefix during the write phase.
    pub watched: Vec<u64>,
    /// Wall time of the write phase.
    pub elapsed: Duration,
}

impl K8sReport {
    /// The summary, and a `RESULT` line for scripts.
    pub fn render(&self, listers: usize) -> String {
        let w = &self.write_lat;
        let l = &self.list_lat;
        let all_seen = self.watched.iter().all(|&n| n == self.writes);
        format!(
            "writes {} ({:.0}/s), errors {}, conflicts {}\n\
             write latency ms: p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}\n\
             lists {} (errors {}), latency ms: p50 {:.1} p99 {:.1} max {:.1}\n\
             watchers saw {:?} of {} writes ({})\n\
             RESULT op=k8s listers={} writes_per_s={:.0} write_p50_ms={:.2} write_p99_ms={:.2} write_p999_ms={:.2} write_max_ms={:.2} \
             lists={} list_p50_ms={:.1} list_max_ms={:.1} write_errors={} list_errors={} watchers_complete={}\n",
            self.writes,
            self.writes as f64 / self.elapsed.as_secs_f64(),
            self.write_errors,
            self.conflicts,
            ms(w.percentile(500)),
            ms(w.percentile(990)),
            ms(w.percentile(999)),
            ms(w.slowest()),
            l.len(),
            self.list_errors,
            ms(l.percentile(500)),
            ms(l.percentile(990)),
            ms(l.slowest()),
            self.watched,
            self.writes,
            if all_seen { "all" } else { "MISSING EVENTS" },
            listers,
            self.writes as f64 / self.elapsed.as_secs_f64(),
            ms(w.percentile(500)),
            ms(w.percentile(990)),
            ms(w.percentile(999)),
            ms(w.slowest()),
            l.len(),
            ms(l.percentile(500)),
            ms(l.slowest()),
            self.write_errors,
            self.list_errors,
            all_seen,
        )
    }
}

/// Runs the load (on its own runtime).
pub fn run(load: &K8sLoad) -> Result<K8sReport, String> {
    if load.endpoints.is_empty() || load.writers == 0 || load.objects == 0 {
        return Err("need endpoints, --writers and --objects above zero".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(load.clone()))
}

fn object_key(n: u64) -> Bytes {
    // Namespaces of 100 pods each, names as a ReplicaSet makes them.
    format!("{PREFIX}ns-{:03}/pod-{:06}", n / 100, n).into()
}

fn prefix_end() -> Bytes {
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end.into()
}

fn value(rng: &mut ChaCha8Rng, size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    rng.fill_bytes(&mut v);
    v.into()
}

async fn channels(load: &K8sLoad) -> Result<Vec<Channel>, String> {
    let mut out = Vec::new();
    for e in &load.endpoints {
        out.push(connect(&endpoint_url(e)?).await?);
    }
    Ok(out)
}

/// Creates the objects that are missing; returns every object's mod_revision.
async fn populate(ch: &[Channel], load: &K8sLoad) -> Result<HashMap<u64, i64>, String> {
    let mut kv = KvClient::new(ch[0].clone()).max_decoding_message_size(usize::MAX);
    let got = kv
        .range(RangeRequest {
            key: PREFIX.into(),
            range_end: prefix_end(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .map_err(|s| format!("initial LIST: {}", s.message()))?
        .into_inner();
    let mut revs: HashMap<u64, i64> = HashMap::new();
    let by_key: HashMap<Bytes, i64> = got
        .kvs
        .into_iter()
        .map(|k| (k.key, k.mod_revision))
        .collect();
    let mut missing = Vec::new();
    for n in 0..load.objects {
        match by_key.get(&object_key(n)) {
            Some(&r) => {
                revs.insert(n, r);
            }
            None => missing.push(n),
        }
    }
    let missing = Arc::new(std::sync::Mutex::new(missing));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut kv = KvClient::new(ch[t % ch.len()].clone());
        let missing = missing.clone();
        let size = load.value_size;
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(t as u64);
            let mut done = Vec::new();
            loop {
                let next = missing.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(n) = next else { break };
                let r = kv
                    .put(PutRequest {
                        key: object_key(n),
                        value: value(&mut rng, size),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| format!("create: {}", s.message()))?
                    .into_inner();
                done.push((n, r.header.map_or(0, |h| h.revision)));
            }
            Ok::<_, String>(done)
        }));
    }
    for t in tasks {
        for (n, r) in t.await.map_err(|e| e.to_string())?? {
            revs.insert(n, r);
        }
    }
    Ok(revs)
}

/// The keyspace revision now (for the watchers' start).
async fn revision(ch: &Channel) -> Result<i64, String> {
    let r = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: Bytes::from_static(b"/registry/none"),
            ..Default::default()
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    Ok(r.header.map_or(0, |h| h.revision))
}

struct Shared {
    stop: AtomicBool,
    conflicts: AtomicU64,
}

async fn run_async(load: K8sLoad) -> Result<K8sReport, String> {
    let ch = channels(&load).await?;
    let revs = populate(&ch, &load).await?;
    let start_rev = revision(&ch[0]).await? + 1;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        conflicts: AtomicU64::new(0),
    });
    // Watchers first, from the revision after the load, so they see every update.
    let mut watchers = Vec::new();
    let writes_done = Arc::new(AtomicU64::new(u64::MAX));
    for w in 0..load.watchers {
        let ch = ch[w % ch.len()].clone();
        let target = writes_done.clone();
        watchers.push(tokio::spawn(watch_all(ch, start_rev, target)));
    }
    let mut listers = Vec::new();
    for l in 0..load.listers {
        let ch = ch[(l + 1) % ch.len()].clone();
        listers.push(tokio::spawn(list_loop(ch, shared.clone())));
    }
    let mut writers = Vec::new();
    for w in 0..load.writers {
        let mine: Vec<(u64, i64)> = revs
            .iter()
            .filter(|(n, _)| (**n as usize) % load.writers == w)
            .map(|(n, r)| (*n, *r))
            .collect();
        let kv = KvClient::new(ch[w % ch.len()].clone()).max_decoding_message_size(usize::MAX);
        writers.push(tokio::spawn(write_loop(
            kv,
            mine,
            load.value_size,
            w as u64,
            shared.clone(),
        )));
    }
    let t0 = Instant::now();
    tokio::time::sleep(load.duration).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut lat = Vec::new();
    let (mut writes, mut errors) = (0, 0);
    for w in writers {
        let (l, e) = w.await.map_err(|e| e.to_string())?;
        writes += l.len() as u64;
        errors += e;
        lat.push(l);
    }
    let elapsed = t0.elapsed();
    let mut list_lat = Vec::new();
    let mut list_errors = 0;
    for l in listers {
        let (l, e) = l.await.map_err(|e| e.to_string())?;
        list_lat.push(l);
        list_errors += e;
    }
    writes_done.store(writes, Ordering::SeqCst);
    let mut watched = Vec::new();
    for w in watchers {
        watched.push(w.await.map_err(|e| e.to_string())?);
    }
    Ok(K8sReport {
        writes,
        write_errors: errors,
        conflicts: shared.conflicts.load(Ordering::SeqCst),
        write_lat: Latencies::merge(lat),
        list_lat: Latencies::merge(list_lat),
        list_errors,
        watched,
        elapsed,
    })
}

/// The apiserver's GuaranteedUpdate: put if the object is unchanged since it was read,
/// else read it back and try again.
async fn write_loop(
    mut kv: KvClient<Channel>,
    mut objects: Vec<(u64, i64)>,
    size: usize,
    seed: u64,
    shared: Arc<Shared>,
) -> (Vec<Duration>, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b38);
    let mut lat = Vec::new();
    let mut errors = 0;
    if objects.is_empty() {
        return (lat, errors);
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let i = (rng.next_u64() % objects.len() as u64) as usize;
        let (n, rev) = objects[i];
        let key = object_key(n);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(rev)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value(&mut rng, size),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let t = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if r.succeeded {
                    lat.push(t.elapsed());
                    objects[i].1 = r.header.map_or(rev, |h| h.revision);
                } else {
                    shared.conflicts.fetch_add(1, Ordering::Relaxed);
                    let current = r.responses.into_iter().find_map(|op| match op.response {
                        Some(response_op::Response::ResponseRange(g)) => {
                            g.kvs.first().map(|k| k.mod_revision)
                        }
                        _ => None,
                    });
                    objects[i].1 = current.unwrap_or(rev);
                }
            }
            _ => errors += 1,
        }
    }
    (lat, errors)
}

async fn list_loop(ch: Channel, shared: Arc<Shared>) -> (Vec<Duration>, u64) {
    let mut kv = KvClient::new(ch).max_decoding_message_size(usize::MAX);
    let mut lat = Vec::new();
    let mut errors = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let req = RangeRequest {
            key: PREFIX.into(),
            range_end: prefix_end(),
            ..Default::default()
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, kv.range(req)).await {
            Ok(Ok(_)) => lat.push(t.elapsed()),
            _ => errors += 1,
        }
    }
    (lat, errors)
}

/// Counts the put events under the prefix from `start`, until `target` (set once the
/// writers stop) have been seen or the stream stays silent for the request timeout.
async fn watch_all(ch: Channel, start: i64, target: Arc<AtomicU64>) -> u64 {
    let mut client = WatchClient::new(ch).max_decoding_message_size(usize::MAX);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: PREFIX.into(),
                range_end: prefix_end(),
                start_revision: start,
                ..Default::default()
            },
        )),
    };
    if tx.send(create).await.is_err() {
        return 0;
    }
    let Ok(resp) = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return 0;
    };
    let mut stream = resp.into_inner();
    let mut seen = 0u64;
    loop {
        if seen >= target.load(Ordering::SeqCst) {
            break;
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(r))) => seen += r.events.len() as u64,
            _ => break,
        }
    }
    drop(tx);
    seen
}
