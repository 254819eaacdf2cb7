//! One seeded chaos run and its checks.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::node::NO_LEADER_PERIODS;
use keel_core::raft::ReadMode;
use keel_runtime_sim::observer::Write;
use keel_runtime_sim::{Bug, Cluster, ClusterConfig};
use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};
use madsim::time::Instant;

use super::compactor::{self, CompactPlan};
use super::leases::{self, check_leases, LeaseLog, LeasePlan, SharedLeases};
use super::nemesis::{self, ClockFaults, FaultMix};
use super::revisions::check_revisions_follow_real_time;
use super::watches::{
    self, check_leaderless_streams, check_progress_order, check_watches, WatchChain, WatchPlan,
};
use super::workload::{self, client_ip, ClientPlan, KvHistory, SharedRecorder};
use crate::linearizability::models::etcd_kv::{EtcdKv, KvInput};
use crate::linearizability::{check_with, CheckOptions, Recorder, Verdict, DEFAULT_MAX_STEPS};
use crate::lock;

/// What a run simulates.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, for reports and the replay command.
    pub name: String,
    /// Members.
    pub members: usize,
    /// Concurrent key-value clients.
    pub clients: u64,
    /// Concurrent watcher clients.
    pub watchers: u64,
    /// Concurrent lease clients.
    pub lease_clients: u64,
    /// Keys the clients share.
    pub keys: u8,
    /// Simulated time under faults, before the repair and the final reads.
    pub duration_ms: u64,
    /// The faults.
    pub mix: FaultMix,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// A planted bug, if any.
    pub bug: Option<Bug>,
    /// Members started outside the configuration, for membership changes to add.
    pub spares: usize,
    /// Applied entries between a member's own snapshots (None: never on its own).
    pub snapshot_every: Option<u64>,
    /// Mean pause between a compaction client's compactions (None: no such client).
    pub compact_every: Option<Duration>,
}

/// The checker's budget for one run's history: its own default (seconds and about a
/// gigabyte at worst). Half of it left a linearizable history of 30 unknown writes on
/// one key (seed 49 of the standard mix, once leaderless waits expire as a leader
/// returns) undecided; the full budget decides it in under a second.
const LINEARIZABILITY_STEPS: u64 = DEFAULT_MAX_STEPS;

/// Allowance beyond the leader monitor's bound for a round of the member's loop.
const MONITOR_SLACK_MS: u64 = 50;

/// Simulated time a run may take beyond its fault schedule (the final reads take at
/// most 4 keys x 20 attempts x 2 s) before it counts as hung.
const SIM_TIME_SLACK: Duration = Duration::from_secs(600);

/// Lease reads allow this much relative clock-rate difference between members.
const LEASE_DRIFT_ALLOWANCE_PPM: u32 = 100_000;

impl Scenario {
    /// The standard chaos mix for `seed`: 3 or 5 members, every fault; even seeds use
    /// ReadIndex reads under clock faults beyond any bound, odd seeds use lease reads
    /// with drift kept inside the lease's allowance.
    pub fn standard(seed: u64) -> Scenario {
        let lease = seed % 2 == 1;
        Scenario {
            name: "standard".into(),
            members: if seed % 4 < 2 { 3 } else { 5 },
            clients: 4,
            watchers: 3,
            lease_clients: 2,
            keys: 4,
            duration_ms: 20_000,
            mix: FaultMix::all(if lease {
                // Two members drifting apart each at 4% differ by 8% < 10%.
                ClockFaults::WithinBound {
                    max_drift_ppm: i64::from(LEASE_DRIFT_ALLOWANCE_PPM) * 2 / 5,
                }
            } else {
                ClockFaults::Beyond
            }),
            read_mode: if lease {
                ReadMode::Lease {
                    max_clock_drift_ppm: LEASE_DRIFT_ALLOWANCE_PPM,
                }
            } else {
                ReadMode::Safe
            },
            bug: None,
            spares: 1,
            snapshot_every: None,
            compact_every: None,
        }
    }

    /// The standard mix with members snapshotting every 100 applied entries and keeping
    /// 20 behind: lagging and restarted followers are caught up by snapshot transfer and
    /// install, under the same faults (crashes between the image and its WAL marker,
    /// watchers sent back to history by an install).
    pub fn snapshots(seed: u64) -> Scenario {
        let mut s = Scenario::standard(seed);
        s.name = "snapshots".into();
        s.snapshot_every = Some(100);
        s
    }

    /// The snapshots mix with a client compacting the keyspace about every 500 ms, a
    /// few revisions below the current one: watchers that resume into compacted
    /// history are canceled, snapshots carry a compacted keyspace, and every key's
    /// latest value must survive it all.
    pub fn compactions(seed: u64) -> Scenario {
        let mut s = Scenario::snapshots(seed);
        s.name = "compactions".into();
        s.compact_every = Some(Duration::from_millis(500));
        s
    }

    /// The standard cluster and clients with no faults at all.
    pub fn calm(seed: u64) -> Scenario {
        let mut s = Scenario::standard(seed);
        s.name = "calm".into();
        s.mix = FaultMix::none();
        s
    }

    /// The scenario that exposes `bug`: the standard mix, with lease reads for the
    /// lease bug and snapshots for the WAL release bug.
    pub fn with_bug(seed: u64, bug: Bug) -> Scenario {
        let mut s = match bug {
            // Odd seeds have lease reads: the n-th odd one (`seed | 1` ran each twice).
            Bug::LeaseReadPastBound => {
                Scenario::standard(seed.saturating_mul(2).saturating_sub(1) | 1)
            }
            // WAL is released only behind snapshots.
            Bug::ReleaseWalAhead => Scenario::snapshots(seed),
            _ => Scenario::standard(seed),
        };
        s.name = format!("{bug:?}");
        s.bug = Some(bug);
        s
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: String,
    /// Operations in the history (completed and unknown).
    pub ops: usize,
    /// Operations whose outcome is unknown.
    pub unknown: usize,
    /// The linearizability verdict.
    pub verdict: Verdict,
    /// Every violation found (invariants, linearizability, revisions, liveness).
    pub problems: Vec<String>,
    /// Things members reported (disk errors that stopped them).
    pub notes: Vec<String>,
    /// Hash of the whole run: every member event and the client history.
    pub trace_hash: u64,
    /// Simulated milliseconds the run lasted.
    pub sim_ms: u64,
    /// Highest log index applied.
    pub applied: u64,
    /// Membership changes applied.
    pub conf_changes: u64,
    /// What the members counted of the behaviour a run should reach (refusals for want
    /// of a leader, strict reconfiguration refusals, WAL segments released, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// Watch sessions checked (opened and resumed).
    pub watch_sessions: usize,
    /// Watch events checked.
    pub watch_events: usize,
    /// Leases granted to clients, and revoked by expiry.
    pub leases: (usize, usize),
    /// Compactions acknowledged, and watch sessions canceled for compacted history.
    pub compactions: (usize, usize),
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed, &self.scenario)
    }
}

/// The command that replays `seed` of the scenario named `scenario` (also for a seed
/// that panicked and left no report).
pub fn replay_command(seed: u64, scenario: &str) -> String {
    format!(
        "KEEL_SIM_SEED={seed} KEEL_SIM_SCENARIO={scenario} cargo test --features sim --test chaos -- replay --nocapture"
    )
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} ({}): {} ops ({} unknown), {} entries, {} watch events in {} sessions, \
             {} leases ({} expired), {:.1} s simulated, {}, trace {:016x}",
            self.seed,
            self.scenario,
            self.ops,
            self.unknown,
            self.applied,
            self.watch_events,
            self.watch_sessions,
            self.leases.0,
            self.leases.1,
            self.sim_ms as f64 / 1000.0,
            self.verdict,
            self.trace_hash
        )?;
        if !self.counts.is_empty() {
            let counts: Vec<String> = self
                .counts
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            writeln!(f, "  {}", counts.join(", "))?;
        }
        for p in &self.problems {
            writeln!(f, "  PROBLEM: {p}")?;
        }
        if !self.passed() {
            writeln!(f, "  replay: {}", self.replay_command())?;
        }
        Ok(())
    }
}

struct Raw {
    history: KvHistory,
    problems: Vec<String>,
    notes: Vec<String>,
    trace: (u64, u64),
    sim_ms: u64,
    applied: u64,
    conf_changes: u64,
    counts: BTreeMap<&'static str, u64>,
    writes: BTreeMap<u64, Write>,
    chains: Vec<WatchChain>,
    leases: BTreeMap<i64, LeaseLog>,
    compactions: usize,
    /// The highest revision any compaction was asked for.
    compacted_at_most: i64,
    /// Per member ID, when it learned or lost a leader.
    leader_timelines: BTreeMap<u64, Vec<(u64, bool)>>,
    /// Member IDs by index.
    member_ids: Vec<u64>,
    election_ms: u64,
}

impl Scenario {
    /// How much faster than global time a leader's clock may run in this scenario (the
    /// lease check's allowance), or None if clocks may be stepped: steps of seconds and
    /// 50% drift (ClockFaults::Beyond) end leases early by design, since only the
    /// leader's clock measures a TTL, so the lease check does not run under them.
    fn lease_clock_allowance_ppm(&self) -> Option<u64> {
        match self.mix.clocks {
            ClockFaults::None => Some(0),
            ClockFaults::WithinBound { max_drift_ppm } => Some(max_drift_ppm.unsigned_abs()),
            ClockFaults::Beyond => None,
        }
    }
}

/// Runs `scenario` with `seed` and checks everything.
pub fn run_seed(seed: u64, scenario: &Scenario) -> Report {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    // A run that never ends in simulated time (a client or the nemesis waiting forever)
    // panics here instead of spinning; the seed runner prints its replay command.
    rt.set_time_limit(Duration::from_millis(scenario.duration_ms) + SIM_TIME_SLACK);
    let sc = scenario.clone();
    let raw = rt.block_on(simulate(sc));
    let mut problems = raw.problems;
    let outcome = check_with(
        &EtcdKv::new(),
        &raw.history,
        &CheckOptions {
            max_steps: LINEARIZABILITY_STEPS,
        },
    );
    let verdict = outcome.verdict();
    match verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable => problems.push(format!(
            "not linearizable: {}",
            outcome.explain(&raw.history)
        )),
        // An undecided history is an unchecked one: a failure, or a run that should be
        // linearizable would pass without proof.
        Verdict::Unknown => problems.push(format!(
            "linearizability undecided within {LINEARIZABILITY_STEPS} checker steps: {}",
            outcome.explain(&raw.history)
        )),
    }
    if let Err(e) = check_revisions_follow_real_time(&raw.history) {
        problems.push(e);
    }
    if let Err(e) = check_watches(&raw.writes, &raw.chains, raw.compacted_at_most) {
        problems.push(e);
    }
    if let Err(e) = check_progress_order(&raw.chains) {
        problems.push(e);
    }
    if let Some(allowance) = scenario.lease_clock_allowance_ppm() {
        if let Err(e) = check_leases(&raw.writes, &raw.leases, allowance) {
            problems.push(e);
        }
        // The leader monitor measures on the member's clock too: by its own reading
        // streams end within NO_LEADER_PERIODS election timeouts of the loss.
        let local_ms = u64::from(NO_LEADER_PERIODS) * raw.election_ms;
        let bound_ms = local_ms + local_ms * allowance / 1_000_000 + MONITOR_SLACK_MS;
        let id = |i: usize| raw.member_ids.get(i).copied().unwrap_or(0);
        let timelines = &raw.leader_timelines;
        if let Err(e) = check_leaderless_streams(&raw.chains, timelines, id, bound_ms * 1_000_000) {
            problems.push(e);
        }
    }
    let sessions = raw.chains.iter().map(|c| c.sessions.len()).sum();
    let watch_events = raw
        .chains
        .iter()
        .flat_map(|c| &c.sessions)
        .map(|s| s.events.len())
        .sum();
    let expired = raw
        .writes
        .values()
        .filter(|w| w.revoked_lease.is_some())
        .count();
    let mut h = DefaultHasher::new();
    raw.trace.hash(&mut h);
    format!("{:?}", raw.history.ops()).hash(&mut h);
    (sessions, watch_events, raw.writes.len()).hash(&mut h);
    for l in raw.leases.values() {
        (l.id, &l.renewed_ns).hash(&mut h);
    }
    Report {
        seed,
        scenario: scenario.name.clone(),
        ops: raw.history.len(),
        unknown: raw
            .history
            .ops()
            .iter()
            .filter(|o| o.output().is_none())
            .count(),
        verdict,
        problems,
        notes: raw.notes,
        trace_hash: h.finish(),
        sim_ms: raw.sim_ms,
        applied: raw.applied,
        conf_changes: raw.conf_changes,
        counts: raw.counts,
        watch_sessions: sessions,
        watch_events,
        leases: (raw.leases.len(), expired),
        compactions: (
            raw.compactions,
            raw.chains
                .iter()
                .flat_map(|c| &c.sessions)
                .filter(|s| s.canceled.is_some())
                .count(),
        ),
    }
}

async fn simulate(sc: Scenario) -> Raw {
    let handle = Handle::current();
    let epoch = Instant::now();
    let cfg = ClusterConfig {
        members: sc.members,
        read_mode: sc.read_mode,
        bug: sc.bug,
        spares: sc.spares,
        clock_offsets_ms: nemesis::start_offsets(&sc.mix, sc.members + sc.spares),
        snapshot_every: sc.snapshot_every,
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(&cfg);
    let obs = cluster.observer().clone();
    let member_ids = cluster.ids().to_vec();
    let election_ms = cfg.election_ms;
    let cluster = Arc::new(Mutex::new(cluster));
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder::new()));
    let until = epoch + Duration::from_millis(sc.duration_ms);
    let plan = |client: u64| ClientPlan {
        client,
        members: sc.members + sc.spares,
        keys: sc.keys,
        until,
        epoch,
        recorder: recorder.clone(),
    };
    let mut clients = Vec::new();
    for c in 1..=sc.clients {
        let node = handle.create_node().ip(client_ip(c)).build();
        clients.push(node.spawn(workload::client_loop(plan(c))));
    }
    let chains: Arc<Mutex<Vec<WatchChain>>> = Arc::default();
    for w in 1..=sc.watchers {
        let node = handle.create_node().ip(client_ip(100 + w)).build();
        clients.push(node.spawn(watches::watcher_loop(WatchPlan {
            watcher: w,
            members: sc.members + sc.spares,
            keys: sc.keys,
            until,
            obs: obs.clone(),
            log: chains.clone(),
        })));
    }
    let leases: SharedLeases = Arc::default();
    for l in 1..=sc.lease_clients {
        let node = handle.create_node().ip(client_ip(200 + l)).build();
        clients.push(node.spawn(leases::lease_loop(LeasePlan {
            client: l,
            members: sc.members + sc.spares,
            until,
            epoch,
            log: leases.clone(),
        })));
    }
    let compactions = Arc::new(AtomicUsize::new(0));
    let compacted_at_most = Arc::new(std::sync::atomic::AtomicI64::new(0));
    if let Some(every) = sc.compact_every {
        let node = handle.create_node().ip(client_ip(250)).build();
        clients.push(node.spawn(compactor::compactor_loop(CompactPlan {
            members: sc.members + sc.spares,
            until,
            every,
            done: compactions.clone(),
            highest: compacted_at_most.clone(),
        })));
    }
    let faults = madsim::task::spawn(nemesis::run(cluster.clone(), sc.mix.clone(), epoch, until));
    let _ = faults.await;
    for c in clients {
        let _ = c.await;
    }
    // Every fault is repaired: the cluster must recover, and every acknowledged write
    // must still be there for the final reads.
    let mut problems = Vec::new();
    let reader = handle.create_node().ip(client_ip(0)).build();
    let final_plan = plan(0);
    let unreadable = reader
        .spawn(async move { final_reads(final_plan).await })
        .await
        .unwrap_or_default();
    for key in unreadable {
        problems.push(format!(
            "no progress: key k{key} could not be read within 30 s after every fault was repaired"
        ));
    }
    problems.extend(obs.violations());
    let history = std::mem::take(&mut *lock(&recorder)).finish();
    drop(cluster);
    let chains = std::mem::take(&mut *lock(&chains));
    let leases = std::mem::take(&mut *lock(&leases));
    Raw {
        writes: obs.writes(),
        chains,
        leases,
        history,
        problems,
        notes: obs.notes(),
        trace: obs.trace_hash(),
        sim_ms: Instant::now().duration_since(epoch).as_millis() as u64,
        applied: obs.max_applied(),
        conf_changes: obs.conf_changes(),
        counts: obs.counts(),
        compactions: compactions.load(Ordering::Relaxed),
        compacted_at_most: compacted_at_most.load(Ordering::Relaxed),
        leader_timelines: obs.leader_timelines(),
        member_ids,
        election_ms,
    }
}

/// Reads every key until each read succeeds (trying members in turn); returns the keys
/// that could not be read.
async fn final_reads(plan: ClientPlan) -> Vec<u8> {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        return (0..plan.keys).collect();
    };
    let mut unreadable = Vec::new();
    let mut seq = 0;
    for key in 0..plan.keys {
        let mut done = false;
        for attempt in 0..20 {
            seq += 1;
            let member = (key as usize + attempt) % plan.members;
            if workload::call(&ep, &plan, member, KvInput::Get { key }, seq).await {
                done = true;
                break;
            }
            madsim::time::sleep(Duration::from_millis(500)).await;
        }
        if !done {
            unreadable.push(key);
        }
    }
    unreadable
}
