//! A member's Prometheus metrics, with etcd 3.4's names, types, label names and bucket
//! layouts, so the dashboards and alerts built for etcd (its Grafana dashboard, the
//! etcd-mixin) work unchanged. Each member has its own registry: tests run several
//! members in one process.
//!
//! Only what keel measures is exported; etcd metrics keel has no truthful value for are
//! left out rather than shown as constants (listed on [`Metrics`]). What both runtimes
//! would count alike is counted in the core (the store's operation counts, the member's
//! notes) and only read here.

use std::time::Duration;

use keel_core::mvcc::OpCounts;
use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::version::{ETCD_CAPABILITY_VERSION, ETCD_SERVER_VERSION};

/// Makes a metric from constant options and registers it; a failure is a programming
/// error (a bad constant name or a name registered twice), caught by every test.
fn reg<C: Collector + Clone + 'static>(r: &Registry, c: prometheus::Result<C>) -> C {
    let c = c.expect("a valid constant metric definition");
    r.register(Box::new(c.clone()))
        .expect("each metric registered once");
    c
}

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, factor, count).expect("constant bucket layout")
}

fn hist(name: &str, help: &str, b: Vec<f64>) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(b))
}

/// Every metric a member exports.
///
/// The keyspace operation counts (`etcd_mvcc_{range,put,delete,txn}_total`, their
/// `etcd_debugging_` twins and `etcd_debugging_mvcc_total_put_size_in_bytes`) are the
/// core store's [`OpCounts`], counted where etcd counts them: writes on every member as
/// they apply, ranges and read-only txns where they are served.
///
/// etcd 3.4 metrics keel leaves out, having no truthful value for them: `etcd_server_go_version`
/// (keel is not Go); `etcd_server_slow_read_indexes_total` (keel's ReadIndex requests
/// neither time out nor get out-of-date answers: each read waits under its own context
/// until its caller's deadline); `etcd_server_learner_promote_*` (the member does not
/// report promotions yet); `etcd_server_snapshot_apply_in_progress_total`; `etcd_debugging_mvcc_slow_watcher_total`,
/// `_pending_events_total` and `_watch_stream_total`; the compaction histograms
/// (`etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds`,
/// `_db_compaction_pause_duration_milliseconds`, `_db_compaction_total_duration_milliseconds`)
/// and `db_compaction_keys_total` (keel frees compacted history in slices between
/// writes, timed by no one); `etcd_disk_backend_defrag_duration_seconds` (defragmenting an
/// in-memory keyspace does nothing to measure), bbolt's `etcd_debugging_disk_backend_commit_*`
/// phases, `etcd_mvcc_db_open_read_transactions`, `etcd_snap_db_*` (keel receives no bbolt
/// database from the leader: a snapshot arrives in raft's message), `etcd_snap_fsync_duration_seconds`
/// and `etcd_debugging_snap_save_marshalling_duration_seconds` (the snapshot file's write
/// is timed whole, in `etcd_debugging_snap_save_total_duration_seconds`), rafthttp's
/// snapshot transfer metrics, and `os_fd_*` (the same values are in
/// `process_open_fds`/`process_max_fds`).
pub struct Metrics {
    registry: Registry,
    /// `etcd_server_has_leader`.
    pub has_leader: IntGauge,
    /// `etcd_server_is_leader`.
    pub is_leader: IntGauge,
    /// `etcd_server_is_learner`.
    pub is_learner: IntGauge,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes: IntCounter,
    /// `etcd_server_proposals_committed_total` (a gauge in etcd: the committed index).
    pub proposals_committed: IntGauge,
    /// `etcd_server_proposals_applied_total` (a gauge in etcd: the applied index).
    pub proposals_applied: IntGauge,
    /// `etcd_server_proposals_pending`.
    pub proposals_pending: IntGauge,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: IntCounter,
    /// `etcd_server_slow_apply_total`: applies slower than [`SLOW_APPLY`].
    pub slow_apply: IntCounter,
    /// `etcd_server_heartbeat_send_failures_total`: heartbeats the leader sent more than
    /// two intervals after the previous one to the same peer.
    pub heartbeat_send_failures: IntCounter,
    /// `etcd_server_read_indexes_failed_total`: ReadIndex requests a leader change
    /// failed.
    pub read_indexes_failed: IntCounter,
    /// `etcd_debugging_server_lease_expired_total`: expired leases this member (as
    /// leader) revoked.
    pub lease_expired: IntCounter,
    /// `etcd_server_health_success`.
    pub health_success: IntCounter,
    /// `etcd_server_health_failures`.
    pub health_failures: IntCounter,
    /// `etcd_disk_wal_fsync_duration_seconds`.
    pub wal_fsync: Histogram,
    /// `etcd_disk_wal_write_bytes_total` (a gauge in etcd).
    pub wal_write_bytes: IntGauge,
    /// `etcd_disk_backend_commit_duration_seconds`. etcd times bbolt's commit of applied
    /// state to disk; keel's applied state reaches disk as the member's snapshot file
    /// (written, fsynced, renamed, directory fsynced), so that write is what is timed.
    pub backend_commit: Histogram,
    /// `etcd_disk_backend_snapshot_duration_seconds`: sending a database to a client
    /// (Maintenance.Snapshot), as etcd times it.
    pub backend_snapshot: Histogram,
    /// `etcd_debugging_snap_save_total_duration_seconds`: saving a raft snapshot file.
    pub snap_save: Histogram,
    /// `etcd_mvcc_db_total_size_in_bytes` and its `etcd_debugging_` twin.
    db_size: [IntGauge; 2],
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`.
    db_size_in_use: IntGauge,
    /// `etcd_debugging_mvcc_keys_total`.
    keys: IntGauge,
    /// `etcd_mvcc_{range,put,delete,txn}_total`, each with its `etcd_debugging_` twin.
    mvcc_ops: [[IntCounter; 2]; 4],
    /// `etcd_debugging_mvcc_total_put_size_in_bytes` (a gauge in etcd).
    put_bytes: IntGauge,
    /// `etcd_debugging_mvcc_current_revision`.
    current_revision: IntGauge,
    /// `etcd_debugging_mvcc_compact_revision`.
    compact_revision: IntGauge,
    /// `etcd_debugging_mvcc_watcher_total`.
    pub watchers: IntGauge,
    /// `etcd_debugging_auth_revision`.
    pub auth_revision: IntGauge,
    /// `etcd_debugging_mvcc_events_total`: events sent to watchers.
    pub watch_events: IntCounter,
    /// `etcd_mvcc_hash_duration_seconds`.
    pub hash: Histogram,
    /// `etcd_mvcc_hash_rev_duration_seconds`.
    pub hash_rev: Histogram,
    /// `etcd_network_client_grpc_sent_bytes_total`.
    pub grpc_sent_bytes: IntCounter,
    /// `etcd_network_client_grpc_received_bytes_total`.
    pub grpc_received_bytes: IntCounter,
    /// The peer transport's metrics.
    pub peer: PeerMetrics,
    /// grpc-go's Prometheus interceptor metrics.
    pub grpc: GrpcMetrics,
}

/// An apply slower than this counts in `etcd_server_slow_apply_total` (etcd's
/// `warnApplyDuration`).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// The peer transport's metrics (rafthttp's in etcd), labelled by peer ID in hex.
#[derive(Clone)]
pub struct PeerMetrics {
    /// This member's ID in hex (the `Local` label).
    local: String,
    /// `etcd_network_peer_sent_bytes_total{To}`.
    pub sent_bytes: IntCounterVec,
    /// `etcd_network_peer_received_bytes_total{From}`.
    pub received_bytes: IntCounterVec,
    /// `etcd_network_peer_sent_failures_total{To}`: messages that could not be sent
    /// (queue full, dropped while disconnected, or a failed write).
    pub sent_failures: IntCounterVec,
    /// `etcd_network_peer_received_failures_total{From}`: streams from a peer that broke
    /// on bad data or a read error.
    pub received_failures: IntCounterVec,
    /// `etcd_network_peer_round_trip_time_seconds{To}`: the handshake round trip of
    /// each connection to the peer.
    pub round_trip: HistogramVec,
    /// `etcd_network_active_peers{Local,Remote}`.
    active: IntGaugeVec,
    /// `etcd_network_disconnected_peers_total{Local,Remote}`.
    disconnected: IntCounterVec,
}

impl PeerMetrics {
    /// Metrics not in any registry (for a transport used alone, in tests).
    pub fn unregistered() -> PeerMetrics {
        PeerMetrics::new(&Registry::new(), 0)
    }

    fn new(r: &Registry, local: u64) -> PeerMetrics {
        let vec = |name: &str, help: &str, label: &str| {
            reg(r, IntCounterVec::new(Opts::new(name, help), &[label]))
        };
        PeerMetrics {
            local: format!("{local:x}"),
            sent_bytes: vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                "To",
            ),
            received_bytes: vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                "From",
            ),
            sent_failures: vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                "To",
            ),
            received_failures: vec(
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                "From",
            ),
            round_trip: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "etcd_network_peer_round_trip_time_seconds",
                        "Round-Trip-Time histogram between peers",
                    )
                    .buckets(buckets(0.0001, 2.0, 16)),
                    &["To"],
                ),
            ),
            active: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "etcd_network_active_peers",
                        "The current number of active peer connections.",
                    ),
                    &["Local", "Remote"],
                ),
            ),
            disconnected: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_disconnected_peers_total",
                        "The total number of disconnected peers.",
                    ),
                    &["Local", "Remote"],
                ),
            ),
        }
    }

    /// A connection to `peer` was established.
    pub fn connected(&self, peer: &str) {
        self.active.with_label_values(&[&self.local, peer]).inc();
    }

    /// A connection to `peer` that was established broke.
    pub fn disconnected(&self, peer: &str) {
        self.active.with_label_values(&[&self.local, peer]).dec();
        self.disconnected
            .with_label_values(&[&self.local, peer])
            .inc();
    }
}

/// grpc-go's Prometheus interceptor metrics (go-grpc-prometheus), which etcd installs.
/// Every method's series are made at start (go-grpc-prometheus pre-initializes them),
/// and resolved once: counting a call takes no lookup. A path that names no method is
/// not counted (grpc-go answers it Unimplemented without running interceptors), so a
/// client cannot grow the series without bound.
pub struct GrpcMetrics {
    calls: std::collections::HashMap<String, GrpcCall>,
}

/// What kind of call a method is, as go-grpc-prometheus labels it (`grpc_type`).
pub fn grpc_type(path: &str) -> &'static str {
    match path {
        "/etcdserverpb.Watch/Watch" | "/etcdserverpb.Lease/LeaseKeepAlive" => "bidi_stream",
        "/etcdserverpb.Maintenance/Snapshot"
        | "/v3electionpb.Election/Observe"
        | "/grpc.health.v1.Health/Watch" => "server_stream",
        _ => "unary",
    }
}

/// The methods keel serves, by service.
const SERVICES: [(&str, &[&str]); 9] = [
    (
        "etcdserverpb.KV",
        &["Range", "Put", "DeleteRange", "Txn", "Compact"],
    ),
    ("etcdserverpb.Watch", &["Watch"]),
    (
        "etcdserverpb.Lease",
        &[
            "LeaseGrant",
            "LeaseRevoke",
            "LeaseKeepAlive",
            "LeaseTimeToLive",
            "LeaseLeases",
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            "MemberAdd",
            "MemberRemove",
            "MemberUpdate",
            "MemberList",
            "MemberPromote",
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            "Alarm",
            "Status",
            "Defragment",
            "Hash",
            "HashKV",
            "Snapshot",
            "MoveLeader",
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            "AuthEnable",
            "AuthDisable",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ],
    ),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    ("v3lockpb.Lock", &["Lock", "Unlock"]),
    (
        "v3electionpb.Election",
        &["Campaign", "Proclaim", "Leader", "Observe", "Resign"],
    ),
];

/// The code names grpc-go's Prometheus interceptors use, by code number.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// One method's series.
#[derive(Clone)]
pub struct GrpcCall(std::sync::Arc<CallSeries>);

struct CallSeries {
    started: IntCounter,
    msg_received: IntCounter,
    msg_sent: IntCounter,
    handling: Histogram,
    /// By code number.
    handled: Vec<IntCounter>,
}

impl GrpcCall {
    /// A call started.
    pub fn started(&self) {
        self.0.started.inc();
    }

    /// `n` request messages were received.
    pub fn received(&self, n: u64) {
        self.0.msg_received.inc_by(n);
    }

    /// `n` response messages were sent.
    pub fn sent(&self, n: u64) {
        self.0.msg_sent.inc_by(n);
    }

    /// The call ended with status `code` after `took`.
    pub fn handled(&self, code: i32, took: Duration) {
        // A code outside the table is reported as Unknown, as grpc-go does.
        let i = usize::try_from(code)
            .ok()
            .filter(|i| *i < self.0.handled.len())
            .unwrap_or(2);
        if let Some(c) = self.0.handled.get(i) {
            c.inc();
        }
        self.0.handling.observe(took.as_secs_f64());
    }
}

impl GrpcMetrics {
    fn new(r: &Registry) -> GrpcMetrics {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let counter = |name: &str, help: &str, extra: Option<&str>| {
            let mut l = labels.to_vec();
            l.extend(extra);
            reg(r, IntCounterVec::new(Opts::new(name, help), &l))
        };
        let started = counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            None,
        );
        let handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            Some("grpc_code"),
        );
        let msg_received = counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            None,
        );
        let msg_sent = counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            None,
        );
        // etcd 3.4 turns this one on with --metrics=extensive; keel always has it (the
        // etcd-mixin's latency alert reads it). prometheus.DefBuckets.
        let handling = reg(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                )
                .buckets(prometheus::DEFAULT_BUCKETS.to_vec()),
                &labels,
            ),
        );
        let mut calls = std::collections::HashMap::new();
        for (service, methods) in SERVICES {
            for method in methods {
                let path = format!("/{service}/{method}");
                let l = [grpc_type(&path), service, method];
                let series = CallSeries {
                    started: started.with_label_values(&l),
                    msg_received: msg_received.with_label_values(&l),
                    msg_sent: msg_sent.with_label_values(&l),
                    handling: handling.with_label_values(&l),
                    handled: GRPC_CODES
                        .iter()
                        .map(|code| handled.with_label_values(&[l[0], l[1], l[2], code]))
                        .collect(),
                };
                calls.insert(path, GrpcCall(std::sync::Arc::new(series)));
            }
        }
        GrpcMetrics { calls }
    }

    /// The series of the method at request path `/package.Service/Method`; None for a
    /// path that names no method keel serves.
    pub fn call(&self, path: &str) -> Option<GrpcCall> {
        self.calls.get(path).cloned()
    }
}

impl Metrics {
    /// The metrics of member `id` with `--quota-backend-bytes` `quota`.
    pub fn new(id: u64, quota: u64) -> Metrics {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help));
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help));
        let labelled = |name: &str, help: &str, label: &str, value: &str| {
            let g = reg(&r, IntGaugeVec::new(Opts::new(name, help), &[label]));
            g.with_label_values(&[value]).set(1);
        };
        labelled(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            ETCD_SERVER_VERSION,
        );
        labelled(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            ETCD_CAPABILITY_VERSION,
        );
        labelled(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            &format!("{id:x}"),
        );
        gauge(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
        )
        .set(i64::try_from(quota).unwrap_or(i64::MAX));
        let ms = 0.001;
        let m = Metrics {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            is_learner: gauge(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            heartbeat_send_failures: counter(
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            ),
            read_indexes_failed: counter(
                "etcd_server_read_indexes_failed_total",
                "The total number of failed read indexes seen.",
            ),
            lease_expired: counter(
                "etcd_debugging_server_lease_expired_total",
                "The total number of expired leases.",
            ),
            health_success: counter(
                "etcd_server_health_success",
                "The total number of successful health checks",
            ),
            health_failures: counter(
                "etcd_server_health_failures",
                "The total number of failed health checks",
            ),
            wal_fsync: reg(
                &r,
                hist(
                    "etcd_disk_wal_fsync_duration_seconds",
                    "The latency distributions of fsync called by WAL.",
                    buckets(ms, 2.0, 14),
                ),
            ),
            wal_write_bytes: gauge(
                "etcd_disk_wal_write_bytes_total",
                "Total number of bytes written in WAL.",
            ),
            backend_commit: reg(
                &r,
                hist(
                    "etcd_disk_backend_commit_duration_seconds",
                    "The latency distributions of commit called by backend.",
                    buckets(ms, 2.0, 14),
                ),
            ),
            backend_snapshot: reg(
                &r,
                hist(
                    "etcd_disk_backend_snapshot_duration_seconds",
                    "The latency distribution of backend snapshots.",
                    buckets(0.01, 2.0, 17),
                ),
            ),
            snap_save: reg(
                &r,
                hist(
                    "etcd_debugging_snap_save_total_duration_seconds",
                    "The total latency distributions of save called by snapshot.",
                    buckets(ms, 2.0, 14),
                ),
            ),
            db_size: [
                gauge(
                    "etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
                gauge(
                    "etcd_debugging_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
            ],
            db_size_in_use: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            mvcc_ops: ["range", "put", "delete", "txn"].map(|op| {
                let help = format!("Total number of {op}s seen by this member.");
                ["etcd", "etcd_debugging"]
                    .map(|ns| counter(&format!("{ns}_mvcc_{op}_total"), &help))
            }),
            put_bytes: gauge(
                "etcd_debugging_mvcc_total_put_size_in_bytes",
                "The total size of put kv pairs seen by this member.",
            ),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compact_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            watchers: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            auth_revision: gauge(
                "etcd_debugging_auth_revision",
                "The current revision of auth store.",
            ),
            watch_events: counter(
                "etcd_debugging_mvcc_events_total",
                "Total number of events sent by this member.",
            ),
            hash: reg(
                &r,
                hist(
                    "etcd_mvcc_hash_duration_seconds",
                    "The latency distribution of storage hash operation.",
                    buckets(0.01, 2.0, 15),
                ),
            ),
            hash_rev: reg(
                &r,
                hist(
                    "etcd_mvcc_hash_rev_duration_seconds",
                    "The latency distribution of storage hash by revision operation.",
                    buckets(0.01, 2.0, 15),
                ),
            ),
            grpc_sent_bytes: counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            grpc_received_bytes: counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            peer: PeerMetrics::new(&r, id),
            grpc: GrpcMetrics::new(&r),
            registry: r,
        };
        // process_* as Go's client names them: CPU seconds, open and max fds, resident
        // and virtual memory, start time.
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics registered once");
        m
    }

    /// The keyspace's gauges: its size as the quota counts it, keys, revisions. Keel's
    /// keyspace is in memory: what is allocated for it is what is in use.
    pub fn keyspace(&self, size: u64, keys: u64, revision: i64, compacted: i64) {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        for g in &self.db_size {
            g.set(size);
        }
        self.db_size_in_use.set(size);
        self.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.current_revision.set(revision);
        self.compact_revision.set(compacted);
    }

    /// The store's operation counts (see [`OpCounts`]): the counters catch up with them.
    pub fn mvcc_ops(&self, c: OpCounts) {
        let totals = [c.ranges, c.puts, c.deletes, c.txns];
        for (pair, total) in self.mvcc_ops.iter().zip(totals) {
            for counter in pair {
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        self.put_bytes
            .set(i64::try_from(c.put_bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}
