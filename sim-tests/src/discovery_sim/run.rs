//! One seeded discovery run: the service node, the would-be members (each on its own
//! node, running [`V2Discovery`] as `server/src/discovery_v2.rs` does, with madsim's
//! clock for its timers), the faults, and the checks on how it ended.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_core::discovery::member_id;
use keel_core::discovery::v2::{
    Action, DiscoveryError, Method, Reply, Request, V2Discovery, DIAL_TIMEOUT_MS,
};
use keel_core::raft::Time;
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::Instant;

use super::check::{check, DiscoveryOutcome, Facts, MemberFacts, Problem, Registration};
use super::service::{Handled, HttpRequest, HttpResponse, Store, Watch};

/// Where the discovery service listens.
const SERVICE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1)), 2379);
/// `scheme://authority` of the discovery URL.
const ENDPOINT: &str = "http://10.0.9.1:2379";
/// The `--discovery` URL every member is given.
pub const DISCOVERY_URL: &str = "http://10.0.9.1:2379/v2/keys/_etcd/registry/keel-token";
/// Endpoint tag of requests to the service; an answer's tag is its connection's number.
const SERVICE_TAG: u64 = 1;
/// Faults are injected during this much simulated time, then repaired.
pub const FAULT_WINDOW_MS: u64 = 20_000;
/// After the faults, members have this long to finish (retries back off up to 256 s).
pub const SETTLE_MS: u64 = 600_000;

/// One would-be member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    /// `--name`.
    pub name: String,
    /// `--initial-advertise-peer-urls` (one URL).
    pub peer_url: String,
    /// When it starts.
    pub start_ms: u64,
}

/// The faults of a run. Times are simulated milliseconds from the start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a request or a response is lost.
    pub loss: f64,
    /// Probability that a request or a response is delivered twice.
    pub duplicate: f64,
    /// Each copy is held back up to this long.
    pub max_delay_ms: u64,
    /// The service is paused at `.0` for `.1`.
    pub service_pause: Option<(u64, u64)>,
    /// The service crashes at `.0` and restarts `.1` later, its data kept.
    pub service_crash: Option<(u64, u64)>,
    /// Member `.0` is killed at `.1` if still discovering, and started again `.2` later
    /// if it was killed or had failed on a transport error (as a supervisor restarts a
    /// process that exited).
    pub member_restarts: Vec<(usize, u64, u64)>,
    /// The answer to these members' successful registrations is lost (the create
    /// happened; the member never hears of it).
    pub lost_create_answers: Vec<usize>,
}

impl Faults {
    /// No fault at all.
    pub fn is_calm(&self) -> bool {
        *self == Faults::default()
    }
}

/// What a run simulates.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// `_config/size`.
    pub size: u64,
    /// The service's index before the discovery directory was made.
    pub base_index: u64,
    /// The would-be members (possibly more than `size`, possibly sharing a name).
    pub members: Vec<MemberPlan>,
    /// The faults.
    pub faults: Faults,
}

/// SplitMix64: the scenario's shape is a function of the seed alone.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn member_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, i as u8 + 1))
}

impl Scenario {
    /// The scenario of `seed`: 3 or 5 wanted, sometimes one or two more members than
    /// that, sometimes two members with one name; a fifth of the seeds have no faults,
    /// the rest a random mix of loss, duplication and delay of requests and answers, a
    /// service pause, a service crash (data kept), member restarts, and the lost answer
    /// to a member's successful create (often followed by that member's restart).
    pub fn for_seed(seed: u64) -> Scenario {
        let mut r = SplitMix(seed ^ 0x6b65_656c_6469_7363);
        let size = if r.chance(50) { 3 } else { 5 };
        let extra = match r.below(10) {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        let n = size as usize + extra;
        let mut members: Vec<MemberPlan> = (0..n)
            .map(|i| MemberPlan {
                name: format!("m{}", i + 1),
                peer_url: format!("http://{}:2380", member_ip(i)),
                start_ms: 0,
            })
            .collect();
        for m in &mut members {
            m.start_ms = r.below(3_000);
        }
        if r.chance(35) {
            let a = r.below(n as u64) as usize;
            let b = (a + 1 + r.below(n as u64 - 1) as usize) % n;
            members[b].name = members[a].name.clone();
        }
        let mut faults = Faults::default();
        if !r.chance(20) {
            faults.loss = [0.0, 0.01, 0.03, 0.06][r.below(4) as usize];
            faults.duplicate = [0.0, 0.05, 0.15, 0.3][r.below(4) as usize];
            faults.max_delay_ms = [0, 50, 400, 3_000][r.below(4) as usize];
            // While the handshakes run (the first seconds); the crash after the pause.
            let mut free_from = 0;
            if r.chance(40) {
                let (at, d) = (r.below(5_000), r.range(500, 9_000));
                faults.service_pause = Some((at, d));
                free_from = at + d + 1;
            }
            if r.chance(40) {
                faults.service_crash = Some((free_from + r.below(5_000), r.range(300, 8_000)));
            }
            for _ in 0..r.below(4) {
                let i = r.below(n as u64) as usize;
                faults
                    .member_restarts
                    .push((i, r.below(6_000), r.range(100, 5_000)));
            }
            if r.chance(25) {
                let i = r.below(n as u64) as usize;
                faults.lost_create_answers.push(i);
                if r.chance(70) {
                    faults
                        .member_restarts
                        .push((i, r.range(3_000, 8_000), r.range(100, 3_000)));
                }
            }
        }
        Scenario {
            size,
            base_index: r.range(3, 200),
            members,
            faults,
        }
    }

    /// Whether the run is fault-free.
    pub fn is_calm(&self) -> bool {
        self.faults.is_calm()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        write!(f, "size {}, members {names:?}", self.size)?;
        if self.is_calm() {
            return write!(f, ", no faults");
        }
        let x = &self.faults;
        write!(
            f,
            ", loss {}, duplicate {}, delay <= {} ms",
            x.loss, x.duplicate, x.max_delay_ms
        )?;
        if let Some((at, d)) = x.service_pause {
            write!(f, ", service paused at {at} ms for {d} ms")?;
        }
        if let Some((at, d)) = x.service_crash {
            write!(f, ", service crashed at {at} ms for {d} ms")?;
        }
        for (i, at, d) in &x.member_restarts {
            write!(
                f,
                ", m#{} ({}) restarted at {at} ms after {d} ms",
                i + 1,
                self.members[*i].name
            )?;
        }
        for i in &x.lost_create_answers {
            write!(f, ", m#{} loses its create's answer", i + 1)?;
        }
        Ok(())
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// What was simulated.
    pub scenario: Scenario,
    /// How it ended.
    pub facts: Facts,
    /// Every violated check.
    pub problems: Vec<Problem>,
    /// Hash of every event of the run (same seed, same hash).
    pub trace_hash: u64,
    /// Simulated milliseconds the run lasted.
    pub sim_ms: u64,
    /// The run's events, one line each.
    pub log: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed)
    }

    /// Members whose outcome satisfies `pred`.
    pub fn count(&self, pred: impl Fn(&DiscoveryOutcome) -> bool) -> usize {
        self.facts
            .members
            .iter()
            .filter(|m| pred(&m.outcome))
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {}; {:.1} s simulated, trace {:016x}",
            self.seed,
            self.scenario,
            self.sim_ms as f64 / 1000.0,
            self.trace_hash
        )?;
        for m in &self.facts.members {
            writeln!(f, "  {} ({:x}): {:?}", m.name, m.id, m.outcome)?;
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

/// The command that replays `seed` (also for a seed that panicked and left no report).
pub fn replay_command(seed: u64) -> String {
    format!(
        "KEEL_SIM_SEED={seed} cargo test --features sim --test discovery_chaos -- replay --nocapture"
    )
}

/// Runs the scenario of `seed` and checks it.
pub fn run_seed(seed: u64) -> Report {
    run_scenario(seed, &Scenario::for_seed(seed))
}

/// Runs `scenario` under madsim seeded with `seed` and checks it.
pub fn run_scenario(seed: u64, scenario: &Scenario) -> Report {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let sc = scenario.clone();
    let (facts, mut extra, trace_hash, sim_ms, log) = rt.block_on(simulate(sc));
    let mut problems = check(&facts);
    problems.append(&mut extra);
    Report {
        seed,
        scenario: scenario.clone(),
        facts,
        problems,
        trace_hash,
        sim_ms,
        log,
    }
}

// --- the simulated world ---

/// A request on the wire to the service.
struct Wire {
    conn: u64,
    req: HttpRequest,
}

/// What comes back on a connection.
enum Answer {
    Http(HttpResponse),
    /// The connection broke (the service died, or the network lost the answer).
    Reset,
}

#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    loss: f64,
    duplicate: f64,
    max_delay_ms: u64,
}

struct World {
    epoch: Instant,
    store: Store,
    service_up: bool,
    rates: Rates,
    /// Open connections (requests awaiting an answer) and the member address each
    /// answer goes to: a service crash resets them.
    conns: BTreeMap<u64, SocketAddr>,
    next_conn: u64,
    outcomes: Vec<DiscoveryOutcome>,
    incarnations: Vec<u32>,
    killed: Vec<bool>,
    /// Keys whose (first) successful create loses its answer.
    lose_create_answer: BTreeSet<String>,
    hasher: DefaultHasher,
    log: Vec<String>,
    problems: Vec<Problem>,
}

type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_millis() as u64
}

impl World {
    fn trace(&mut self, what: String) {
        let ms = now_ms(self.epoch);
        (ms, &what).hash(&mut self.hasher);
        self.log.push(format!("{ms:>8} ms  {what}"));
    }
}

/// How the network treats one message: lost, or delivered once or twice with these
/// delays.
fn fate(rates: Rates) -> Option<Vec<u64>> {
    let mut rng = thread_rng();
    if rates.loss > 0.0 && rng.gen_bool(rates.loss.min(1.0)) {
        return None;
    }
    let copies = if rates.duplicate > 0.0 && rng.gen_bool(rates.duplicate.min(1.0)) {
        2
    } else {
        1
    };
    Some(
        (0..copies)
            .map(|_| {
                if rates.max_delay_ms == 0 {
                    0
                } else {
                    rng.gen_range(0..=rates.max_delay_ms)
                }
            })
            .collect(),
    )
}

async fn send_later<T: Send + Sync + 'static>(
    ep: &Arc<Endpoint>,
    to: SocketAddr,
    tag: u64,
    delay: u64,
    msg: T,
) {
    if delay == 0 {
        let _ = ep.send_to_raw(to, tag, Box::new(msg)).await;
    } else {
        let ep = ep.clone();
        madsim::task::spawn(async move {
            madsim::time::sleep(Duration::from_millis(delay)).await;
            let _ = ep.send_to_raw(to, tag, Box::new(msg)).await;
        });
    }
}

type RunOutput = (Facts, Vec<Problem>, u64, u64, Vec<String>);

async fn simulate(sc: Scenario) -> RunOutput {
    let handle = Handle::current();
    let epoch = Instant::now();
    let n = sc.members.len();
    let world: Shared = Arc::new(Mutex::new(World {
        epoch,
        store: Store::new(sc.size, sc.base_index),
        service_up: false,
        rates: Rates {
            loss: sc.faults.loss,
            duplicate: sc.faults.duplicate,
            max_delay_ms: sc.faults.max_delay_ms,
        },
        conns: BTreeMap::new(),
        next_conn: 0,
        outcomes: vec![DiscoveryOutcome::Pending; n],
        incarnations: vec![0; n],
        killed: vec![false; n],
        lose_create_answer: sc
            .faults
            .lost_create_answers
            .iter()
            .map(|&i| {
                let id = member_id(
                    std::slice::from_ref(&sc.members[i].peer_url),
                    DISCOVERY_URL,
                    None,
                );
                format!("{}/{id:x}", super::service::DIR)
            })
            .collect(),
        hasher: DefaultHasher::new(),
        log: Vec::new(),
        problems: Vec::new(),
    }));
    let w = world.clone();
    let service = handle
        .create_node()
        .name("discovery")
        .ip(SERVICE_ADDR.ip())
        .init(move || service_main(w.clone()))
        .build();
    let mut members = Vec::new();
    for (i, plan) in sc.members.iter().enumerate() {
        let (w, plan) = (world.clone(), plan.clone());
        members.push(
            handle
                .create_node()
                .name(plan.name.clone())
                .ip(member_ip(i))
                .init(move || member_main(i, plan.clone(), w.clone()))
                .build(),
        );
    }
    let net = handle
        .create_node()
        .name("net")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 2)))
        .build();
    let w = world.clone();
    let scenario = sc.clone();
    let _ = net
        .spawn(async move { control(scenario, w, handle, service, members).await })
        .await;

    let mut w = lock(&world);
    let registrations = w
        .store
        .registrations()
        .into_iter()
        .map(|(key, value, index)| Registration {
            key,
            value,
            created_index: index,
            modified_index: index,
        })
        .collect();
    let members = sc
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| MemberFacts {
            name: m.name.clone(),
            id: member_id(std::slice::from_ref(&m.peer_url), DISCOVERY_URL, None),
            registration: format!("{}={}", m.name, m.peer_url),
            outcome: w.outcomes[i].clone(),
        })
        .collect();
    let facts = Facts {
        size: sc.size,
        registrations,
        members,
        calm: sc.is_calm(),
    };
    format!("{facts:?}").hash(&mut w.hasher);
    let sim_ms = now_ms(epoch);
    (
        facts,
        std::mem::take(&mut w.problems),
        w.hasher.finish(),
        sim_ms,
        std::mem::take(&mut w.log),
    )
}

#[derive(Debug)]
enum Event {
    NetworkRepaired,
    Pause,
    Resume,
    Crash,
    Restart,
    KillMember(usize),
    RestartMember(usize),
}

/// Injects the scenario's faults, repairs them, then waits until every member is done
/// (or the settling time is over).
async fn control(
    sc: Scenario,
    world: Shared,
    handle: Handle,
    service: NodeHandle,
    members: Vec<NodeHandle>,
) {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        lock(&world).problems.push(Problem {
            check: super::check::Check::UnexpectedError,
            detail: "the controller could not bind".into(),
        });
        return;
    };
    let epoch = lock(&world).epoch;
    let f = &sc.faults;
    let mut timeline: Vec<(u64, Event)> = vec![(FAULT_WINDOW_MS, Event::NetworkRepaired)];
    if let Some((at, d)) = f.service_pause {
        timeline.push((at, Event::Pause));
        timeline.push((at + d, Event::Resume));
    }
    if let Some((at, d)) = f.service_crash {
        timeline.push((at, Event::Crash));
        timeline.push((at + d, Event::Restart));
    }
    for &(i, at, d) in &f.member_restarts {
        timeline.push((at, Event::KillMember(i)));
        timeline.push((at + d, Event::RestartMember(i)));
    }
    // Stable: a kill and its restart keep their order.
    timeline.sort_by_key(|(at, _)| *at);
    for (at, ev) in timeline {
        madsim::time::sleep_until(epoch + Duration::from_millis(at)).await;
        let resets = {
            let mut w = lock(&world);
            w.trace(format!("fault: {ev:?}"));
            match ev {
                Event::NetworkRepaired => {
                    w.rates = Rates::default();
                    Vec::new()
                }
                Event::Pause => {
                    handle.pause(service.id());
                    Vec::new()
                }
                Event::Resume => {
                    handle.resume(service.id());
                    Vec::new()
                }
                Event::Crash => {
                    w.service_up = false;
                    handle.kill(service.id());
                    // The process is gone: its kernel resets every connection to it.
                    w.conns.iter().map(|(c, a)| (*c, *a)).collect()
                }
                Event::Restart => {
                    // The service marks itself up once it listens again.
                    handle.restart(service.id());
                    Vec::new()
                }
                Event::KillMember(i) => {
                    if w.outcomes[i] == DiscoveryOutcome::Pending && !w.killed[i] {
                        w.killed[i] = true;
                        handle.kill(members[i].id());
                        w.trace(format!("{} killed mid-handshake", sc.members[i].name));
                    }
                    Vec::new()
                }
                Event::RestartMember(i) => {
                    let exited = matches!(
                        w.outcomes[i],
                        DiscoveryOutcome::Failed(
                            DiscoveryError::Timeout(_) | DiscoveryError::Unavailable(_)
                        )
                    );
                    if w.killed[i] || exited {
                        w.killed[i] = false;
                        handle.restart(members[i].id());
                    }
                    Vec::new()
                }
            }
        };
        for (conn, addr) in resets {
            let _ = ep.send_to_raw(addr, conn, Box::new(Answer::Reset)).await;
        }
    }
    let deadline = epoch + Duration::from_millis(FAULT_WINDOW_MS + SETTLE_MS);
    loop {
        {
            let w = lock(&world);
            if !w.outcomes.contains(&DiscoveryOutcome::Pending) {
                return;
            }
        }
        if Instant::now() >= deadline {
            return;
        }
        madsim::time::sleep(Duration::from_millis(1_000)).await;
    }
}

// --- the discovery service node ---

async fn service_main(world: Shared) {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], SERVICE_ADDR.port()))).await else {
        return;
    };
    let ep = Arc::new(ep);
    {
        let mut w = lock(&world);
        w.service_up = true;
        w.trace("service listening".into());
    }
    // Long-polls live in the process: a crash drops them (their connections reset).
    let mut parked: Vec<(u64, SocketAddr, Watch)> = Vec::new();
    loop {
        let Ok((payload, from)) = ep.recv_from_raw(SERVICE_TAG).await else {
            return;
        };
        let Ok(wire) = payload.downcast::<Wire>() else {
            continue;
        };
        let mut ready = Vec::new();
        let mut resets = Vec::new();
        {
            let mut w = lock(&world);
            let (handled, created) = w.store.handle(&wire.req, |v| {
                let mut rng = thread_rng();
                for i in (1..v.len()).rev() {
                    v.swap(i, rng.gen_range(0..=i));
                }
            });
            let what = match &handled {
                Handled::Now(r) => format!("status {}", r.status),
                Handled::Wait(_) => "parked".into(),
            };
            w.trace(format!(
                "service #{} {} {}: {what}",
                wire.conn,
                if wire.req.put { "PUT" } else { "GET" },
                wire.req.path_and_query
            ));
            match handled {
                Handled::Now(r) => {
                    let path = wire.req.path_and_query.split('?').next().unwrap_or("");
                    let key = path.strip_prefix("/v2/keys").unwrap_or(path);
                    if created && w.lose_create_answer.remove(key) {
                        let reset = thread_rng().gen_bool(0.5);
                        w.trace(format!(
                            "net: answer #{} to the create of {key} lost{}",
                            wire.conn,
                            if reset { " (reset)" } else { "" }
                        ));
                        if reset {
                            resets.push((wire.conn, from));
                        }
                    } else {
                        let long_poll = wire.req.path_and_query.contains("wait=true");
                        ready.push((wire.conn, from, r, long_poll))
                    }
                }
                Handled::Wait(watch) => parked.push((wire.conn, from, watch)),
            }
            if created {
                parked.retain(|(conn, to, watch)| match w.store.answer_watch(watch) {
                    Some(r) => {
                        ready.push((*conn, *to, r, true));
                        false
                    }
                    None => true,
                });
            }
        }
        for (conn, to) in resets {
            send_later(&ep, to, conn, 0, Answer::Reset).await;
        }
        for (conn, to, resp, watch) in ready {
            respond(&ep, &world, to, conn, resp, watch).await;
        }
    }
}

/// Sends an answer, subject to the network's faults: a lost answer is a reset
/// connection (always for a long-poll, which would otherwise hang for good) or silence.
async fn respond(
    ep: &Arc<Endpoint>,
    world: &Shared,
    to: SocketAddr,
    conn: u64,
    resp: HttpResponse,
    watch: bool,
) {
    let rates = lock(world).rates;
    match fate(rates) {
        None => {
            let reset = watch || thread_rng().gen_bool(0.5);
            lock(world).trace(format!(
                "net: answer #{conn} lost{}",
                if reset { " (reset)" } else { "" }
            ));
            if reset {
                send_later(ep, to, conn, 0, Answer::Reset).await;
            }
        }
        Some(delays) => {
            if delays.len() > 1 {
                lock(world).trace(format!("net: answer #{conn} duplicated"));
            }
            for d in delays {
                send_later(ep, to, conn, d, Answer::Http(resp.clone())).await;
            }
        }
    }
}

// --- a would-be member ---

async fn member_main(i: usize, plan: MemberPlan, world: Shared) {
    let (epoch, first) = {
        let mut w = lock(&world);
        w.incarnations[i] += 1;
        w.outcomes[i] = DiscoveryOutcome::Pending;
        (w.epoch, w.incarnations[i] == 1)
    };
    if first {
        madsim::time::sleep(Duration::from_millis(plan.start_ms)).await;
    }
    let finish = |outcome: DiscoveryOutcome| {
        let mut w = lock(&world);
        w.trace(format!("{} ends: {outcome:?}", plan.name));
        w.outcomes[i] = outcome;
    };
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        finish(DiscoveryOutcome::Failed(DiscoveryError::Unavailable(
            "cannot bind".into(),
        )));
        return;
    };
    let Ok(local) = ep.local_addr() else { return };
    let me = SocketAddr::new(member_ip(i), local.port());
    let ep = Arc::new(ep);
    let mut m = match V2Discovery::new(
        DISCOVERY_URL,
        &plan.name,
        std::slice::from_ref(&plan.peer_url),
    ) {
        Ok(m) => m,
        Err(e) => return finish(DiscoveryOutcome::Failed(e)),
    };
    lock(&world).trace(format!(
        "{} starts discovery as {:x} ({})",
        plan.name,
        m.member_id(),
        m.registration()
    ));
    let now = || Time(now_ms(epoch));
    let mut step = m.start();
    loop {
        step = match step {
            Err(e) => return finish(DiscoveryOutcome::Failed(e)),
            Ok(Action::Done(found)) => {
                if found.token != DISCOVERY_URL {
                    lock(&world).problems.push(Problem {
                        check: super::check::Check::UnexpectedError,
                        detail: format!("{} got token {:?}", plan.name, found.token),
                    });
                }
                return finish(DiscoveryOutcome::Done {
                    initial_cluster: found.initial_cluster,
                });
            }
            Ok(Action::Send(req)) => {
                let reply = exchange(&ep, me, &world, &plan.name, &req).await;
                m.on_reply(now(), reply)
            }
            Ok(Action::RetryAt {
                at,
                backoff_ms,
                reason,
                cause,
            }) => {
                lock(&world).trace(format!(
                    "{} retries in {backoff_ms} ms ({reason}: {cause})",
                    plan.name
                ));
                madsim::time::sleep_until(epoch + Duration::from_millis(at.0)).await;
                m.on_timer(now())
            }
        };
    }
}

/// Makes one request of the handshake over the simulated network and reports what
/// came of it, as `execute` in `server/src/discovery_v2.rs` does over HTTP.
async fn exchange(
    ep: &Arc<Endpoint>,
    me: SocketAddr,
    world: &Shared,
    who: &str,
    req: &Request,
) -> Reply {
    let http = HttpRequest {
        put: req.method == Method::Put,
        path_and_query: req
            .url
            .strip_prefix(ENDPOINT)
            .unwrap_or(&req.url)
            .to_owned(),
        form: req.form.clone(),
    };
    let (conn, up, rates) = {
        let mut w = lock(world);
        w.next_conn += 1;
        let conn = w.next_conn;
        w.trace(format!("{who} #{conn} {:?} {}", req.purpose, req.url));
        (conn, w.service_up, w.rates)
    };
    let reset = || {
        Reply::Unreachable(format!(
            "read tcp {me}->{SERVICE_ADDR}: read: connection reset by peer"
        ))
    };
    if !up {
        lock(world).trace(format!("{who} #{conn} refused"));
        return Reply::Unreachable(format!(
            "dial tcp {SERVICE_ADDR}: connect: connection refused"
        ));
    }
    lock(world).conns.insert(conn, me);
    let reply = match fate(rates) {
        None => {
            let broke = thread_rng().gen_bool(0.5);
            lock(world).trace(format!(
                "net: request #{conn} lost{}",
                if broke { " (reset)" } else { "" }
            ));
            if broke {
                let after = thread_rng().gen_range(1..100);
                madsim::time::sleep(Duration::from_millis(after)).await;
                Some(reset())
            } else if req.timeout_ms.is_none() {
                // A long-poll has no deadline; only its dial is bounded.
                madsim::time::sleep(Duration::from_millis(DIAL_TIMEOUT_MS)).await;
                Some(Reply::TimedOut)
            } else {
                // Silence: the deadline below ends it.
                None
            }
        }
        Some(delays) => {
            if delays.len() > 1 {
                lock(world).trace(format!("net: request #{conn} duplicated"));
            }
            for d in delays {
                send_later(
                    ep,
                    SERVICE_ADDR,
                    SERVICE_TAG,
                    d,
                    Wire {
                        conn,
                        req: http.clone(),
                    },
                )
                .await;
            }
            None
        }
    };
    let reply = match reply {
        Some(r) => r,
        None => {
            let got = match req.timeout_ms {
                Some(ms) => {
                    madsim::time::timeout(Duration::from_millis(ms), ep.recv_from_raw(conn))
                        .await
                        .ok()
                }
                None => Some(ep.recv_from_raw(conn).await),
            };
            match got {
                None => Reply::TimedOut,
                Some(Err(e)) => Reply::Unreachable(e.to_string()),
                Some(Ok((payload, _))) => match payload.downcast::<Answer>() {
                    Ok(a) => match *a {
                        Answer::Http(r) => Reply::Http {
                            status: r.status,
                            etcd_index: r.etcd_index,
                            body: r.body,
                        },
                        Answer::Reset => reset(),
                    },
                    Err(_) => Reply::Unreachable("garbled answer".into()),
                },
            }
        }
    };
    let mut w = lock(world);
    w.conns.remove(&conn);
    let what = match &reply {
        Reply::Http { status, body, .. } => {
            format!("{status} {}", String::from_utf8_lossy(body))
        }
        other => format!("{other:?}"),
    };
    w.trace(format!("{who} #{conn} -> {what}"));
    reply
}
