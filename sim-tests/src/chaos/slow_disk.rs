//! A leader on a stalled disk, on the member that ships: every sync of its WAL takes
//! several election timeouts while its followers' disks and the network are healthy.
//! Heartbeats and votes must not wait behind the sync (the disk work runs beside the
//! member's round, `keel_core::node::disk_queue`), so no election happens, and writes
//! keep committing through the followers' quorum. Once the disk recovers the run's
//! usual checks (election safety, log matching, every member applying the same
//! entries) hold.

use std::time::Duration;

use bytes::Bytes;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use keel_runtime_sim::{Bug, Cluster, ClusterConfig};
use madsim::runtime::{Handle, Runtime};

use super::tokens::leader_index;
use super::workload::{client_ip, Caller};

/// How long each of the leader's syncs takes, in election timeouts.
const STALL_ELECTIONS: u64 = 3;
/// How long the stall lasts, in election timeouts.
const WATCH_ELECTIONS: u64 = 10;

/// Runs the scenario with `seed`; Err says what went wrong. (`bug` is accepted for the
/// shape of targeted scenarios: a planted bug changes nothing here.)
pub fn slow_leader_disk(seed: u64, bug: Option<Bug>) -> Result<(), String> {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(Duration::from_secs(120));
    rt.block_on(async move {
        let cfg = ClusterConfig {
            bug,
            ..ClusterConfig::default()
        };
        let election = Duration::from_millis(cfg.election_ms);
        let cluster = Cluster::start(&cfg);
        let node = Handle::current().create_node().ip(client_ip(1)).build();
        node.spawn(scenario(cluster, election))
            .await
            .map_err(|e| format!("the client task failed: {e}"))?
    })
}

async fn scenario(cluster: Cluster, election: Duration) -> Result<(), String> {
    let mut c = Caller::bind().await.ok_or("client endpoint")?;
    madsim::time::sleep(Duration::from_secs(3)).await;
    let leader = leader_index(&cluster)?;
    let follower = (leader + 1) % cluster.len();
    let terms = cluster.observer().terms_led();
    cluster
        .disk(leader)
        .set_sync_delay(election * STALL_ELECTIONS as u32);
    let until = madsim::time::Instant::now() + election * WATCH_ELECTIONS as u32;
    let mut committed = 0u32;
    let mut n = 0u32;
    while madsim::time::Instant::now() < until {
        n += 1;
        let put = ClientOp::Put {
            key: Bytes::from(format!("k{}", n % 8)),
            value: Bytes::from(n.to_string()),
            lease: 0,
        };
        // Through a follower: it applies once the followers' quorum has the entry,
        // without waiting for the leader's disk.
        if let Some(ClientReply::Put { .. }) = c.call(follower, put).await {
            committed += 1;
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.disk(leader).set_sync_delay(Duration::ZERO);
    let elections = cluster.observer().terms_led() - terms;
    if elections > 0 {
        return Err(format!(
            "{elections} election(s) while only the leader's disk was slow (syncs of {} ms, \
             election timeout {} ms)",
            (election * STALL_ELECTIONS as u32).as_millis(),
            election.as_millis()
        ));
    }
    if committed < n / 2 {
        return Err(format!(
            "only {committed} of {n} writes through a follower committed while the leader's \
             disk was slow"
        ));
    }
    // The leader catches up once its disk recovers; then every member agrees.
    madsim::time::sleep(election * 3).await;
    let v = cluster.observer().violations();
    if !v.is_empty() {
        return Err(v.join("; "));
    }
    Ok(())
}
