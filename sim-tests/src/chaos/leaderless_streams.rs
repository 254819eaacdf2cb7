//! Watch streams on a member cut off from the quorum, on the member that ships: a
//! stream opened with require-leader (as etcdctl's and Kubernetes' watches are) ends
//! with "etcdserver: no leader" once the member has gone `NO_LEADER_PERIODS` election
//! timeouts without a leader, so its client reconnects elsewhere; a plain stream stays
//! open; and a new require-leader watch is refused at once. The chaos runs check the
//! same bound on every require-leader stream they open (`check_leaderless_streams`);
//! this scenario makes sure it is reached on every seed.

use std::time::Duration;

use bytes::Bytes;
use keel_core::node::NO_LEADER_PERIODS;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use keel_runtime_sim::{Bug, Cluster, ClusterConfig};
use madsim::runtime::{Handle, Runtime};
use madsim::time::Instant;

use super::tokens::leader_index;
use super::workload::{client_ip, Caller};

/// How long after the cut the stream is given to end: the member notices the loss
/// within two election timeouts (raft's randomized timeout), then ends the stream
/// within `NO_LEADER_PERIODS` more; and some slack for the round and the network.
fn end_bound(election_ms: u64) -> Duration {
    Duration::from_millis((2 + u64::from(NO_LEADER_PERIODS)) * election_ms + 200)
}

/// Runs the scenario with `seed` (and `bug` planted); Err says what went wrong.
pub fn require_leader_watch_on_a_cut_off_member(seed: u64, bug: Option<Bug>) -> Result<(), String> {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(Duration::from_secs(120));
    rt.block_on(async move {
        let cfg = ClusterConfig {
            bug,
            ..ClusterConfig::default()
        };
        let bound = end_bound(cfg.election_ms);
        let cluster = Cluster::start(&cfg);
        let node = Handle::current().create_node().ip(client_ip(1)).build();
        node.spawn(scenario(cluster, bound))
            .await
            .map_err(|e| format!("the client task failed: {e}"))?
    })
}

fn watch_k() -> ClientOp {
    ClientOp::Watch {
        key: Bytes::from_static(b"k"),
        range_end: Bytes::new(),
        start_revision: 0,
        prev_kv: false,
    }
}

/// Opens a watch on key `k` of member `at`: the stream's ID.
async fn open_watch(c: &mut Caller, at: usize, require_leader: bool) -> Result<u64, String> {
    let id = c.send(at, watch_k(), require_leader).await.ok_or("send")?;
    match c.recv(id, Duration::from_secs(2)).await {
        Some(ClientReply::WatchCreated { .. }) => Ok(id),
        other => Err(format!(
            "watch (require-leader {require_leader}): {other:?}"
        )),
    }
}

async fn scenario(cluster: Cluster, bound: Duration) -> Result<(), String> {
    let mut c = Caller::bind().await.ok_or("client endpoint")?;
    madsim::time::sleep(Duration::from_secs(3)).await;
    let leader = leader_index(&cluster)?;
    let cut = (leader + 1) % cluster.len();
    let required = open_watch(&mut c, cut, true).await?;
    let plain = open_watch(&mut c, cut, false).await?;
    cluster.isolate(cut);
    let cut_at = Instant::now();
    // The required stream ends, within the bound.
    let ended_at = loop {
        let left = (cut_at + bound).saturating_duration_since(Instant::now());
        match c.recv(required, left).await {
            Some(ClientReply::StreamEnded { reason, .. }) if reason == "etcdserver: no leader" => {
                break Instant::now();
            }
            Some(ClientReply::Watch { .. }) => continue,
            None => {
                return Err(format!(
                    "a require-leader watch stream on a member cut off from the quorum was not \
                     ended within {} ms",
                    bound.as_millis()
                ))
            }
            Some(other) => return Err(format!("the require-leader stream got {other:?}")),
        }
    };
    // The plain stream is still served after that (a progress notification sent later).
    let served_later = loop {
        match c.recv(plain, Duration::from_secs(2)).await {
            Some(ClientReply::Watch { resp, .. }) if resp.canceled => break false,
            Some(ClientReply::Watch { sent_ns, .. }) => {
                if sent_ns > ended_at.duration_since(cluster.epoch()).as_nanos() as u64 {
                    break true;
                }
            }
            _ => break false,
        }
    };
    if !served_later {
        return Err("a plain watch stream on the cut-off member ended too".into());
    }
    // A new require-leader watch is refused at once.
    let id = c.send(cut, watch_k(), true).await.ok_or("send")?;
    match c.recv(id, Duration::from_secs(2)).await {
        Some(ClientReply::Refused(e)) if e == "etcdserver: no leader" => {}
        other => {
            return Err(format!(
                "a new require-leader watch on the cut-off member: {other:?}"
            ))
        }
    }
    cluster.heal();
    Ok(())
}
