//! Counters and histograms for `/metrics`, in Prometheus' text format with etcd's metric
//! names where etcd has one (dashboards built for etcd keep working).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A latency histogram with etcd's exponential buckets (1 ms doubling to ~4 s).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 13],
    count: AtomicU64,
    sum_us: AtomicU64,
}

const BOUNDS_MS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        for (b, bound) in self.buckets.iter().zip(BOUNDS_MS) {
            if ms <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(BOUNDS_MS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                bound / 1000.0,
                b.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric a member exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Current raft term.
    pub term: AtomicU64,
    /// 1 while a leader is known.
    pub has_leader: AtomicU64,
    /// 1 while this member leads.
    pub is_leader: AtomicU64,
    /// Leader changes seen.
    pub leader_changes: AtomicU64,
    /// Proposals committed (entries this member saw committed).
    pub proposals_committed: AtomicU64,
    /// Entries applied.
    pub proposals_applied: AtomicU64,
    /// Proposals waiting for their outcome.
    pub proposals_pending: AtomicI64,
    /// Proposals that failed.
    pub proposals_failed: AtomicU64,
    /// Keyspace size in bytes (as the quota counts it).
    pub db_size: AtomicU64,
    /// Keys in the keyspace index.
    pub keys: AtomicU64,
    /// WAL fsync latency.
    pub wal_fsync: Histogram,
    /// Apply latency per batch of entries.
    pub apply: Histogram,
    /// gRPC requests by method path, then by code name.
    grpc: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
}

impl Metrics {
    /// Counts a finished gRPC request (allocates only the first time a method is seen).
    pub fn grpc_request(&self, method: &str, code: &'static str) {
        if let Ok(mut m) = self.grpc.lock() {
            if !m.contains_key(method) {
                m.insert(method.to_string(), BTreeMap::new());
            }
            if let Some(codes) = m.get_mut(method) {
                *codes.entry(code).or_default() += 1;
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, u64); 9] = [
            (
                "etcd_server_has_leader",
                "Whether a leader exists.",
                self.has_leader.load(Relaxed),
            ),
            (
                "etcd_server_is_leader",
                "Whether this member is the leader.",
                self.is_leader.load(Relaxed),
            ),
            (
                "etcd_server_leader_changes_seen_total",
                "Leader changes seen.",
                self.leader_changes.load(Relaxed),
            ),
            (
                "etcd_server_proposals_committed_total",
                "Consensus proposals committed.",
                self.proposals_committed.load(Relaxed),
            ),
            (
                "etcd_server_proposals_applied_total",
                "Consensus proposals applied.",
                self.proposals_applied.load(Relaxed),
            ),
            (
                "etcd_server_proposals_failed_total",
                "Failed proposals.",
                self.proposals_failed.load(Relaxed),
            ),
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "Keyspace size in bytes.",
                self.db_size.load(Relaxed),
            ),
            (
                "etcd_debugging_mvcc_keys_total",
                "Keys in the keyspace.",
                self.keys.load(Relaxed),
            ),
            (
                "keel_raft_term",
                "Current raft term.",
                self.term.load(Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let kind = if name.ends_with("_total") && !name.contains("db_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let pending = self.proposals_pending.load(Relaxed).max(0);
        let _ = writeln!(
            out,
            "# HELP etcd_server_proposals_pending Proposals waiting for commit.\n# TYPE etcd_server_proposals_pending gauge\netcd_server_proposals_pending {pending}"
        );
        self.wal_fsync.render(
            "etcd_disk_wal_fsync_duration_seconds",
            "WAL fsync latency.",
            &mut out,
        );
        self.apply.render(
            "etcd_server_apply_duration_seconds",
            "Latency of applying a batch of committed entries.",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total RPCs completed on the server.\n# TYPE grpc_server_handled_total counter"
        );
        if let Ok(m) = self.grpc.lock() {
            for (method, codes) in m.iter() {
                let (service, name) = method.rsplit_once('/').unwrap_or(("", method));
                let service = service.trim_start_matches('/');
                for (code, n) in codes {
                    let _ = writeln!(
                        out,
                        "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{name}\",grpc_service=\"{service}\",grpc_type=\"unary\"}} {n}"
                    );
                }
            }
        }
        out
    }
}
