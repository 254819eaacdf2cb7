//! The corruption check on the member that ships, with a divergence planted: one
//! member's stored value loses a bit beneath raft (`Bug::DivergentStore`). The leader's
//! periodic check (etcd's `--experimental-corrupt-check-time`, which every simulated
//! member runs each second) must find it and raise CORRUPT through raft, after which
//! every member refuses writes with etcd's "etcdserver: corrupt cluster". Without the
//! divergence the same run raises nothing and writes go on (and every chaos run checks
//! that no healthy cluster ever raises CORRUPT, under every fault).

use std::time::Duration;

use bytes::Bytes;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use keel_runtime_sim::{Bug, Cluster, ClusterConfig};
use madsim::runtime::{Handle, Runtime};

use super::workload::{client_ip, Caller};

/// How long the check has to find the divergence: a few of its 1 s rounds.
const DETECTION_BOUND: Duration = Duration::from_secs(8);

/// What a run showed: (a write refused as corrupt on every member, checks that
/// compared a peer's hash, CORRUPT alarms raised).
pub type CorruptionRun = Result<(bool, u64, u64), String>;

/// Runs the scenario with `seed`, the divergence planted when `diverge`.
pub fn divergent_store(seed: u64, diverge: bool) -> CorruptionRun {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(Duration::from_secs(120));
    rt.block_on(async move {
        let cluster = Cluster::start(&ClusterConfig {
            bug: diverge.then_some(Bug::DivergentStore),
            ..ClusterConfig::default()
        });
        let obs = cluster.observer().clone();
        let node = Handle::current().create_node().ip(client_ip(1)).build();
        let refused = node
            .spawn(scenario(cluster.len()))
            .await
            .map_err(|e| format!("the client task failed: {e}"))??;
        // The observer sees the divergence too, in the previous values of the events
        // members apply after it: expected when planted, and nothing else is.
        let mut violations = obs.violations();
        if diverge {
            violations.retain(|v| !v.starts_with("keyspace divergence"));
        }
        if !violations.is_empty() {
            return Err(violations.join("; "));
        }
        let counts = obs.counts();
        let count = |what: &str| counts.get(what).copied().unwrap_or(0);
        drop(cluster);
        Ok((
            refused,
            count("peer hashes compared by the corruption check"),
            count("CORRUPT alarms raised"),
        ))
    })
}

/// Writes a key, then keeps writing to every member until each refuses as corrupt or
/// the bound passes; whether every member did.
async fn scenario(members: usize) -> Result<bool, String> {
    let mut c = Caller::bind().await.ok_or("client endpoint")?;
    madsim::time::sleep(Duration::from_secs(3)).await;
    let put = |v: &'static [u8]| ClientOp::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(v),
        lease: 0,
    };
    let mut written = false;
    for m in 0..members {
        if let Some(ClientReply::Put { .. }) = c.call(m, put(b"v")).await {
            written = true;
            break;
        }
    }
    if !written {
        return Err("no member took the first write".into());
    }
    let until = madsim::time::Instant::now() + DETECTION_BOUND;
    let mut refused = vec![false; members];
    while madsim::time::Instant::now() < until && refused.contains(&false) {
        madsim::time::sleep(Duration::from_millis(500)).await;
        for (m, done) in refused.iter_mut().enumerate().filter(|(_, d)| !**d) {
            match c.call(m, put(b"w")).await {
                Some(ClientReply::Refused(e)) if e == "etcdserver: corrupt cluster" => *done = true,
                Some(ClientReply::Put { .. }) | None => {}
                Some(other) => return Err(format!("member {m}: a put answered {other:?}")),
            }
        }
    }
    Ok(!refused.contains(&false))
}
