//! One seeded run: start the cluster behind its proxies, drive load while the nemesis
//! plays the schedule, heal, wait for the members to converge, read the history back,
//! and check everything.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_runtime_sim::observer::Write;
use keel_runtime_tokio::pb::etcdserverpb::{HashKvRequest, MemberListRequest};
use keel_sim_tests::chaos::{
    check_revisions_follow_real_time, check_watches, KvHistory, WatchChain,
};
use keel_sim_tests::linearizability::models::etcd_kv::EtcdKv;
use keel_sim_tests::linearizability::{check_with, CheckOptions, Completion, Recorder, Verdict};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::client::{Clients, REQUEST_TIMEOUT};
use crate::clock::Clock;
use crate::cluster::{Cluster, MemberSpec, Server};
use crate::leases::{check_leases, LeaseClient, SharedLeases};
use crate::nemesis::Nemesis;
use crate::proxy::Network;
use crate::schedule::Schedule;
use crate::watchers::{applied_history, Watcher};
use crate::workload::{finish, KvClient, KvLog, SerialRead, SharedRecorder};

/// Checker steps a history may take before it counts as undecided (a failure).
const LINEARIZABILITY_STEPS: u64 = 50_000_000;

/// Chooses member `i`'s data dir inside a run's directory. The default is
/// `<run dir>/m<i>`; a caller may return a mount of another filesystem instead.
pub type DataDirs = Arc<dyn Fn(&Path, usize) -> PathBuf + Send + Sync>;

/// How to run seeds.
#[derive(Clone)]
pub struct Options {
    /// The server.
    pub server: Server,
    /// Members (3 or 5).
    pub members: usize,
    /// Where run directories go (`<work>/seed-<n>`).
    pub work_dir: PathBuf,
    /// Member data dirs.
    pub data_dirs: DataDirs,
    /// Ports used: `first_port .. first_port + 30 * slots`.
    pub first_port: u16,
    /// Port slots rotated through, so consecutive runs never reuse a port.
    pub slots: u16,
    /// Load duration.
    pub load: Duration,
    /// Restrict faults to one kind.
    pub only_fault: Option<String>,
    /// Keep run directories of passing runs too.
    pub keep: bool,
    /// Heartbeat interval and election timeout (ms).
    pub heartbeat_ms: u64,
    /// Election timeout (ms).
    pub election_ms: u64,
}

/// What one run did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// KV operations that returned.
    pub ok: usize,
    /// KV writes whose outcome is unknown.
    pub unknown: usize,
    /// Serializable reads checked.
    pub serial: usize,
    /// Watch events checked.
    pub watch_events: usize,
    /// Leases checked.
    pub leases: usize,
    /// Faults injected, by kind.
    pub faults: Vec<String>,
    /// The final revision.
    pub revision: u64,
    /// Raft terms begun during the run (evidence the faults moved leadership).
    pub new_terms: u64,
    /// Leases whose keys the applied history shows deleted by expiry.
    pub expired_leases: usize,
    /// Peer connections whose dialer the proxies recognised, and those not.
    pub dialers: (u64, u64),
    /// Every failed check, described.
    pub problems: Vec<String>,
    /// The run directory (kept when there are problems).
    pub dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The default data dirs: `<run dir>/m<i>`.
pub fn default_data_dirs() -> DataDirs {
    Arc::new(|run: &Path, i: usize| run.join(format!("m{i}")))
}

/// Runs one seed; never panics on a cluster's misbehaviour, only reports it.
pub async fn run_seed(seed: u64, opts: &Options) -> Report {
    let dir = opts.work_dir.join(format!("seed-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = Report {
        seed,
        dir: dir.clone(),
        ..Report::default()
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report
            .problems
            .push(format!("cannot create {}: {e}", dir.display()));
        return report;
    }
    let schedule = Schedule::new(seed, opts.members, opts.load, opts.only_fault.as_deref());
    let slot = (seed % u64::from(opts.slots.max(1))) as u16;
    let base = opts.first_port + slot * 30;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let specs: Vec<MemberSpec> = (0..opts.members)
        .map(|i| MemberSpec {
            name: format!("m{i}"),
            client: addr(base + i as u16),
            peer: addr(base + 10 + i as u16),
            proxy: addr(base + 20 + i as u16),
            data_dir: (opts.data_dirs)(&dir, i),
            log: dir.join(format!("m{i}.log")),
        })
        .collect();
    let routes: Vec<_> = specs.iter().map(|m| (m.proxy, m.peer)).collect();
    let client_addrs: Vec<_> = specs.iter().map(|m| m.client).collect();
    let net = match Network::start(&routes).await {
        Ok(n) => Arc::new(n),
        Err(e) => {
            report.problems.push(format!("proxies: {e}"));
            return report;
        }
    };
    let mut cluster = Cluster::new(
        opts.server.clone(),
        specs.clone(),
        format!("robustness-{seed}"),
        opts.heartbeat_ms,
        opts.election_ms,
    );
    for i in 0..opts.members {
        if let Err(e) = cluster.start(i) {
            report.problems.push(format!("start m{i}: {e}"));
            return report;
        }
    }
    let cluster = Arc::new(Mutex::new(cluster));
    let clients = Clients::new(&client_addrs);
    match wait_ready(&clients, &cluster, &specs).await {
        Ok(ids) => {
            net.set_member_ids(ids);
            report.new_terms = max_term(&clients).await;
        }
        Err(e) => {
            lock(&cluster).stop_all();
            report.problems.push(e);
            return report;
        }
    }

    drive(&schedule, &clients, &net, &cluster, &mut report).await;
    report.dialers = net.dialers();
    lock(&cluster).stop_all();
    drop(net);
    if report.problems.is_empty() && !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report
}

/// Waits for every member to answer with a leader; returns member IDs by index.
async fn wait_ready(
    clients: &Clients,
    cluster: &Arc<Mutex<Cluster>>,
    specs: &[MemberSpec],
) -> Result<HashMap<u64, usize>, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, spec) in specs.iter().enumerate() {
            if let Some(st) = lock(cluster).exited(i) {
                return Err(format!(
                    "m{i} exited at start ({st}); see {}",
                    spec.log.display()
                ));
            }
        }
        let mut ready = 0;
        for i in 0..specs.len() {
            if clients.status(i).await.is_some_and(|s| s.leader != 0) {
                ready += 1;
            }
        }
        if ready == specs.len() {
            let mut c = clients.cluster(0);
            if let Ok(Ok(r)) =
                tokio::time::timeout(REQUEST_TIMEOUT, c.member_list(MemberListRequest::default()))
                    .await
            {
                let mut ids = HashMap::new();
                for m in r.into_inner().members {
                    let url = m.peer_ur_ls.first().cloned().unwrap_or_default();
                    if let Some(i) = specs
                        .iter()
                        .position(|s| url.trim_end_matches('/') == format!("http://{}", s.proxy))
                    {
                        ids.insert(m.id, i);
                    }
                }
                if ids.len() == specs.len() {
                    return Ok(ids);
                }
            }
        }
        if Instant::now() > deadline {
            return Err("the cluster did not become ready within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drive(
    schedule: &Schedule,
    clients: &Clients,
    net: &Arc<Network>,
    cluster: &Arc<Mutex<Cluster>>,
    report: &mut Report,
) {
    let clock = Clock::start();
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder::new()));
    let kv_log = Arc::new(Mutex::new(KvLog::default()));
    let seen = Arc::new(AtomicU64::new(1));
    let observations = Arc::new(Mutex::new(Vec::new()));
    let chains: Arc<Mutex<Vec<WatchChain>>> = Arc::new(Mutex::new(Vec::new()));
    let leases: SharedLeases = Arc::new(Mutex::new(BTreeMap::new()));
    let until = Instant::now() + schedule.load;
    let mut tasks = Vec::new();
    let seeds = &schedule.client_seeds;
    for c in 0..4u64 {
        let client = KvClient {
            client: c + 1,
            rng: ChaCha8Rng::seed_from_u64(seeds[c as usize]),
            keys: 4,
            clients: clients.clone(),
            recorder: recorder.clone(),
            log: kv_log.clone(),
            clock,
            seen_revision: seen.clone(),
            observations: observations.clone(),
        };
        tasks.push(tokio::spawn(client.run(until)));
    }
    for w in 0..2u64 {
        let watcher = Watcher {
            watcher: w + 1,
            rng: ChaCha8Rng::seed_from_u64(seeds[8 + w as usize]),
            clients: clients.clone(),
            seen_revision: seen.clone(),
            log: chains.clone(),
        };
        tasks.push(tokio::spawn(watcher.run(until)));
    }
    let lease_client = LeaseClient {
        rng: ChaCha8Rng::seed_from_u64(seeds[12]),
        clients: clients.clone(),
        clock,
        log: leases.clone(),
        observations: observations.clone(),
    };
    tasks.push(tokio::spawn(lease_client.run(until)));

    let nemesis = Nemesis {
        net: net.clone(),
        cluster: cluster.clone(),
        clients: clients.clone(),
    };
    report.faults = nemesis.play(&schedule.faults).await;
    // Heal before the load ends, so the last requests meet a whole cluster.
    net.heal();
    if let Err(e) = lock(cluster).heal() {
        report.problems.push(format!("restart: {e}"));
    }
    for t in tasks {
        let _ = t.await;
    }

    // Without convergence the history checks still run: they say what diverged.
    let converged = converge(clients, cluster, report).await;
    report.revision = converged.unwrap_or(0);
    report.new_terms = max_term(clients).await.saturating_sub(report.new_terms);

    // Read every key once more, on every member: a write acknowledged and then lost
    // (a crash losing what it acknowledged) shows here if nothing read it before.
    for m in 0..clients.len() {
        for key in 0..4 {
            let reader = KvClient {
                client: 100 + m as u64,
                rng: ChaCha8Rng::seed_from_u64(0),
                keys: 4,
                clients: clients.clone(),
                recorder: recorder.clone(),
                log: kv_log.clone(),
                clock,
                seen_revision: seen.clone(),
                observations: observations.clone(),
            };
            reader.read_once(m, key).await;
        }
    }

    // The applied history, from every member; they must agree.
    let mut writes: Option<BTreeMap<u64, Write>> = None;
    let revision = converged.unwrap_or(0);
    for m in (0..clients.len()).filter(|_| converged.is_some()) {
        match applied_history(clients, m, revision).await {
            None => report.problems.push(format!(
                "m{m} did not deliver its history up to revision {revision}"
            )),
            Some(w) => match &writes {
                None => writes = Some(w),
                Some(first) => {
                    if let Some(d) = first_difference(first, &w) {
                        report
                            .problems
                            .push(format!("m{m}'s applied history differs from m0's: {d}"));
                    }
                }
            },
        }
    }

    let history = finish(recorder);
    let kv_log = std::mem::take(&mut *lock(&kv_log));
    let chains = std::mem::take(&mut *lock(&chains));
    let leases = std::mem::take(&mut *lock(&leases));
    let observations = std::mem::take(&mut *lock(&observations));
    count(&history, report);
    report.serial = kv_log.serial.len();
    report.watch_events = chains
        .iter()
        .flat_map(|c| &c.sessions)
        .map(|s| s.events.len())
        .sum();
    report.leases = leases.len();
    for g in &kv_log.garbage {
        report.problems.push(format!("unparseable answer: {g}"));
    }
    check_linearizable(&history, report);
    if let Err(e) = check_revisions_follow_real_time(&history) {
        report.problems.push(e);
    }
    if let Some(writes) = writes {
        report.expired_leases = leases
            .keys()
            .filter(|id| {
                let prefix = format!("l/{id:x}/");
                writes.values().any(|w| {
                    w.events.iter().any(|e| {
                        e.kind == keel_core::mvcc::EventKind::Delete
                            && e.kv.key.starts_with(prefix.as_bytes())
                    })
                })
            })
            .count();
        if let Err(e) = check_serial_reads(&writes, &kv_log.serial, revision) {
            report.problems.push(e);
        }
        if let Err(e) = check_watches(&writes, &chains, 0) {
            report.problems.push(e);
        }
        if let Err(e) = check_leases(&writes, &leases, &observations) {
            report.problems.push(e);
        }
    }
}

/// The highest raft term any member reports.
async fn max_term(clients: &Clients) -> u64 {
    let mut term = 0;
    for i in 0..clients.len() {
        if let Some(s) = clients.status(i).await {
            term = term.max(s.raft_term);
        }
    }
    term
}

fn count(history: &KvHistory, report: &mut Report) {
    for op in history.ops() {
        match op.completion {
            Completion::Returned { .. } => report.ok += 1,
            Completion::Unknown => report.unknown += 1,
        }
    }
}

fn check_linearizable(history: &KvHistory, report: &mut Report) {
    let outcome = check_with(
        &EtcdKv::new(),
        history,
        &CheckOptions {
            max_steps: LINEARIZABILITY_STEPS,
        },
    );
    match outcome.verdict() {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable => report
            .problems
            .push(format!("not linearizable: {}", outcome.explain(history))),
        // An undecided history is an unchecked one.
        Verdict::Unknown => report.problems.push(format!(
            "linearizability undecided within {LINEARIZABILITY_STEPS} steps: {}",
            outcome.explain(history)
        )),
    }
}

/// After healing: every member running, answering, at the same revision with the same
/// KV hash. The revision, or None (with the problem reported).
async fn converge(
    clients: &Clients,
    cluster: &Arc<Mutex<Cluster>>,
    report: &mut Report,
) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last;
    loop {
        for i in 0..clients.len() {
            if let Some(st) = lock(cluster).exited(i) {
                report.problems.push(format!(
                    "m{i} exited ({st}) instead of recovering; see its log"
                ));
                return None;
            }
        }
        let mut revs = Vec::new();
        for i in 0..clients.len() {
            revs.push(clients.status(i).await.map(|s| {
                (
                    s.header.map_or(0, |h| h.revision.max(0) as u64),
                    s.leader,
                    s.raft_applied_index,
                )
            }));
        }
        last = format!("{revs:?}");
        let all: Option<Vec<_>> = revs.into_iter().collect();
        if let Some(all) = all {
            let same_rev = all.windows(2).all(|w| w[0].0 == w[1].0);
            let same_leader = all[0].1 != 0 && all.windows(2).all(|w| w[0].1 == w[1].1);
            if same_rev && same_leader {
                let revision = all[0].0;
                let mut hashes = Vec::new();
                for i in 0..clients.len() {
                    let mut m = clients.maintenance(i);
                    let req = HashKvRequest {
                        revision: revision as i64,
                    };
                    match tokio::time::timeout(REQUEST_TIMEOUT, m.hash_kv(req)).await {
                        Ok(Ok(r)) => hashes.push(r.into_inner().hash),
                        _ => break,
                    }
                }
                if hashes.len() == clients.len() {
                    if hashes.windows(2).all(|w| w[0] == w[1]) {
                        return Some(revision);
                    }
                    report.problems.push(format!(
                        "members disagree on HashKV at revision {revision}: {hashes:?}"
                    ));
                    return None;
                }
            }
        }
        if Instant::now() > deadline {
            report.problems.push(format!(
                "no convergence within 20 s of healing: (revision, leader, applied) per member {last}"
            ));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first difference between two members' applied histories, described.
fn first_difference(a: &BTreeMap<u64, Write>, b: &BTreeMap<u64, Write>) -> Option<String> {
    for (rev, wa) in a {
        match b.get(rev) {
            None => return Some(format!("revision {rev} missing")),
            Some(wb) if wb.events != wa.events => {
                return Some(format!(
                    "revision {rev}: {:?} vs {:?}",
                    wa.events, wb.events
                ))
            }
            _ => {}
        }
    }
    b.keys()
        .find(|r| !a.contains_key(r))
        .map(|r| format!("revision {r} extra"))
}

/// A serializable get may be stale, but what it returns must have been written: the
/// value it shows was put at its `mod_revision`, which is at most the header's.
fn check_serial_reads(
    writes: &BTreeMap<u64, Write>,
    reads: &[SerialRead],
    final_revision: u64,
) -> Result<(), String> {
    for r in reads {
        if r.revision > final_revision {
            return Err(format!(
                "serializable get on m{} answered at revision {}, beyond the cluster's final {final_revision}",
                r.member, r.revision
            ));
        }
        let Some((value, mod_rev)) = r.kv else {
            continue;
        };
        let key = crate::workload::key_bytes(r.key);
        let written = writes.get(&mod_rev).is_some_and(|w| {
            w.events
                .iter()
                .any(|e| e.kv.key == key && e.kv.value.as_ref() == value.to_string().as_bytes())
        });
        if !written || mod_rev > r.revision {
            return Err(format!(
                "serializable get on m{} of k{} returned value {value} at mod_revision {mod_rev} \
                 (header {}), which the applied history never wrote",
                r.member, r.key, r.revision
            ));
        }
    }
    Ok(())
}
