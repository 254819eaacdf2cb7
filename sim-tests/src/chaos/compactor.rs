//! A compaction client: now and then it learns a member's revision (a get's header) and
//! asks a random member to compact a little below it, as an operator's or Kubernetes'
//! periodic compaction does. It checks nothing itself: compaction must leave every
//! key's latest value (the linearizability check reads them), cancel watchers that ask
//! for compacted history with the compact revision (the watch check), and survive
//! snapshots and restarts like any other entry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_runtime_sim::api::{ClientOp, Reply, Request, CLIENT_TAG};
use keel_runtime_sim::cluster::member_addr;
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

/// How long the compactor waits for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Revisions kept below the revision the compactor learned, at most.
const KEEP_AT_MOST: u64 = 20;

/// What the compaction client does.
#[derive(Clone)]
pub(crate) struct CompactPlan {
    pub members: usize,
    pub until: Instant,
    /// Mean pause between compactions.
    pub every: Duration,
    /// Compactions acknowledged (to show the scenario compacts at all).
    pub done: Arc<AtomicUsize>,
}

/// Sends `op` to `member` and waits for its answer.
async fn ask(ep: &Endpoint, member: usize, id: u64, op: ClientOp) -> Option<Reply> {
    ep.send_to_raw(
        member_addr(member),
        CLIENT_TAG,
        Box::new(Request { id, op }),
    )
    .await
    .ok()?;
    let (payload, _) = madsim::time::timeout(REQUEST_TIMEOUT, ep.recv_from_raw(id))
        .await
        .ok()?
        .ok()?;
    payload.downcast::<Reply>().ok().map(|r| *r)
}

/// The compaction loop until `until`.
pub(crate) async fn compactor_loop(plan: CompactPlan) {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        return;
    };
    // Tags 0 and 1 are the members' own.
    let mut id = 2;
    while Instant::now() < plan.until {
        let mean = plan.every.as_millis() as u64;
        let pause = thread_rng().gen_range(mean / 2..=mean * 3 / 2);
        madsim::time::sleep(Duration::from_millis(pause)).await;
        let member = thread_rng().gen_range(0..plan.members);
        id += 1;
        let get = ClientOp::Get {
            key: Bytes::from_static(b"k0"),
        };
        let Some(Reply::Get { revision, .. }) = ask(&ep, member, id, get).await else {
            continue;
        };
        let below = thread_rng().gen_range(0..=KEEP_AT_MOST);
        let Some(revision) = revision.checked_sub(below).filter(|r| *r > 1) else {
            continue;
        };
        let member = thread_rng().gen_range(0..plan.members);
        id += 1;
        let compact = ClientOp::Compact {
            revision: revision as i64,
        };
        if let Some(Reply::Compact { .. }) = ask(&ep, member, id, compact).await {
            plan.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
