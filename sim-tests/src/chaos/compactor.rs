//! A compaction client: now and then it learns a member's revision (a get's header) and
//! asks a random member to compact a little below it, as an operator's or Kubernetes'
//! periodic compaction does. It checks nothing itself: compaction must leave every
//! key's latest value (the linearizability check reads them), cancel watchers that ask
//! for compacted history with the compact revision (the watch check), and survive
//! snapshots and restarts like any other entry.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

use super::workload::Caller;

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
    /// The highest revision a compaction was asked for, answered or not: no member
    /// compacts above it.
    pub highest: Arc<AtomicI64>,
}

/// The compaction loop until `until`.
pub(crate) async fn compactor_loop(plan: CompactPlan) {
    let Some(mut caller) = Caller::bind().await else {
        return;
    };
    while Instant::now() < plan.until {
        let mean = plan.every.as_millis() as u64;
        let pause = thread_rng().gen_range(mean / 2..=mean * 3 / 2);
        madsim::time::sleep(Duration::from_millis(pause)).await;
        let member = thread_rng().gen_range(0..plan.members);
        let get = ClientOp::Get {
            key: Bytes::from_static(b"k0"),
        };
        let Some(ClientReply::Get { revision, .. }) = caller.call(member, get).await else {
            continue;
        };
        let below = thread_rng().gen_range(0..=KEEP_AT_MOST);
        let Some(revision) = revision.checked_sub(below).filter(|r| *r > 1) else {
            continue;
        };
        let member = thread_rng().gen_range(0..plan.members);
        let compact = ClientOp::Compact {
            revision: revision as i64,
        };
        plan.highest.fetch_max(revision as i64, Ordering::Relaxed);
        if let Some(ClientReply::Compact { .. }) = caller.call(member, compact).await {
            plan.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
