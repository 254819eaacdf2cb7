//! The fault schedule: at random moments a random fault from the scenario's mix is
//! injected and held for a random while, then repaired on its own schedule; up to two
//! held faults overlap (a partition and a crash, loss and a pause or a disk fault), and
//! membership changes and clock faults come at any time, also while others are held. Faults: partitions (a member
//! isolated, the leader isolated, minority/majority splits, a bridge, one-way cuts),
//! crashes of one member or of a majority at once (unsynced bytes lost, last write
//! torn), pauses longer than an election timeout, loss/duplication/delay, failing
//! fsyncs and a full disk (the member stops, as etcd does, and is restarted), clock
//! drift and steps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::raft::{ConfChange, MemberId};
use keel_runtime_sim::net::NetFaultRates;
use keel_runtime_sim::Cluster;
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

use crate::lock;

/// Which clock faults a run may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockFaults {
    /// Clocks agree.
    None,
    /// Members drift by at most this many ppm either way: within a lease's bound when
    /// twice this is below the lease's drift allowance.
    WithinBound {
        /// Largest drift of one member, either way.
        max_drift_ppm: i64,
    },
    /// Steps of seconds and drifts of up to 50%: beyond any lease bound (only for
    /// ReadIndex reads, which must stay linearizable regardless).
    Beyond,
}

/// The faults a run may see.
#[derive(Clone, Debug)]
pub struct FaultMix {
    /// Partitions of every shape.
    pub partitions: bool,
    /// Crashes and restarts, single and of a majority.
    pub crashes: bool,
    /// Long pauses of a member.
    pub pauses: bool,
    /// Loss, duplication and delay.
    pub network: bool,
    /// Failing fsyncs and a full disk.
    pub disk: bool,
    /// Membership changes (a spare added as a learner or a voter, a learner promoted,
    /// a voter removed) while the other faults go on.
    pub membership: bool,
    /// Clock faults.
    pub clocks: ClockFaults,
    /// Each member's clock starts up to this far ahead of global time. An offset
    /// changes no duration a member measures (election timeouts, leases, TTLs), so any
    /// offset is within the lease-read bound; it tests that nothing compares one
    /// member's clock readings with another's. Kept non-negative (clocks differ by up to
    /// this either way) because a clock behind global time would stand still at zero
    /// until global time caught up, which is a rate error, not an offset.
    pub start_offset_max_ms: i64,
}

/// Members' clocks start up to half an election timeout apart.
const START_OFFSET_MAX_MS: i64 = 500;

impl FaultMix {
    /// Every fault, with the given clock faults.
    pub fn all(clocks: ClockFaults) -> FaultMix {
        FaultMix {
            partitions: true,
            crashes: true,
            pauses: true,
            network: true,
            disk: true,
            membership: true,
            clocks,
            start_offset_max_ms: START_OFFSET_MAX_MS,
        }
    }

    /// No faults at all.
    pub fn none() -> FaultMix {
        FaultMix {
            partitions: false,
            crashes: false,
            pauses: false,
            network: false,
            disk: false,
            membership: false,
            clocks: ClockFaults::None,
            start_offset_max_ms: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Partition,
    Crash,
    Pause,
    Network,
    Disk,
    Clock,
    Membership,
}

impl Kind {
    /// Whether the fault is held until a repair (clock faults stay until the end of the
    /// run; a membership change is a request, not a fault to undo).
    fn is_held(self) -> bool {
        !matches!(self, Kind::Clock | Kind::Membership)
    }
}

/// A fault being held, and what repairing it undoes. At most one of each kind is held
/// at once, so each repair undoes exactly its own fault: links are healed all at once
/// and the network's rates are global.
enum Held {
    /// Every member-to-member link is healed.
    Partition,
    /// These members come back.
    Crash(Vec<usize>),
    /// This member is resumed.
    Pause(usize),
    /// Loss, duplication and delay end.
    Network,
    /// This member gets a healthy disk and is restarted (after losing what it had not
    /// synced), unless a held crash keeps it down.
    Disk(usize),
}

impl Held {
    fn kind(&self) -> Kind {
        match self {
            Held::Partition => Kind::Partition,
            Held::Crash(_) => Kind::Crash,
            Held::Pause(_) => Kind::Pause,
            Held::Network => Kind::Network,
            Held::Disk(_) => Kind::Disk,
        }
    }
}

/// Faults held at once: two let a partition meet a crash, loss meet a pause or a disk
/// fault, without so many at once that the cluster rarely has a quorum to make progress.
const MAX_HELD: usize = 2;

/// Member clocks' drifts as the nemesis set them, and the run's start (the global
/// clock's zero, which member clocks' drift is measured from).
struct Clocks {
    epoch: Instant,
    drift_ppm: Vec<i64>,
}

impl Clocks {
    /// Sets member `i`'s drift. A member clock applies its drift to the whole time since
    /// the start, so changing it alone would step the clock by (new - old) x elapsed;
    /// within the bound, the offset is moved to cancel that: the clock keeps reading
    /// continuously and only its rate changes.
    fn set_drift(&mut self, c: &Cluster, i: usize, drift_ppm: i64) {
        let elapsed_ms = Instant::now().duration_since(self.epoch).as_millis() as i64;
        let old = std::mem::replace(&mut self.drift_ppm[i], drift_ppm);
        let step = -(elapsed_ms * (drift_ppm - old)) / 1_000_000;
        c.skew_clock(i, step, drift_ppm);
    }
}

/// What the nemesis keeps track of between faults.
struct State {
    held: Vec<(Instant, Held)>,
    removed: Vec<u64>,
    clocks: Clocks,
}

/// Injects faults until `until`, each held for its own random while and repaired on its
/// own schedule (so up to [`MAX_HELD`] overlap), then repairs everything. Every choice
/// comes from madsim's seeded RNG in this one task: the schedule is a function of the
/// seed.
pub(crate) async fn run(
    cluster: Arc<Mutex<Cluster>>,
    mix: FaultMix,
    epoch: Instant,
    until: Instant,
) {
    let mut kinds = Vec::new();
    if mix.partitions {
        kinds.extend([Kind::Partition, Kind::Partition]);
    }
    if mix.crashes {
        kinds.extend([Kind::Crash, Kind::Crash]);
    }
    if mix.pauses {
        kinds.push(Kind::Pause);
    }
    if mix.network {
        kinds.push(Kind::Network);
    }
    if mix.disk {
        kinds.push(Kind::Disk);
    }
    if mix.clocks != ClockFaults::None {
        kinds.push(Kind::Clock);
    }
    if mix.membership {
        kinds.push(Kind::Membership);
    }
    if kinds.is_empty() {
        return;
    }
    let mut st = State {
        held: Vec::new(),
        removed: Vec::new(),
        clocks: Clocks {
            epoch,
            drift_ppm: vec![0; lock(&cluster).len()],
        },
    };
    let mut next_fault = Instant::now() + quiet();
    loop {
        let wake = st
            .held
            .iter()
            .map(|(at, _)| *at)
            .fold(next_fault, Instant::min)
            .min(until);
        madsim::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= until {
            break;
        }
        let mut c = lock(&cluster);
        // Due repairs, in the order the faults were injected.
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.held)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        st.held = kept;
        for (_, h) in due {
            repair(&mut c, h, &st.held);
        }
        if now >= next_fault {
            next_fault = now + quiet();
            let allowed: Vec<Kind> = kinds
                .iter()
                .copied()
                .filter(|k| {
                    !k.is_held()
                        || (st.held.len() < MAX_HELD && st.held.iter().all(|(_, h)| h.kind() != *k))
                })
                .collect();
            if allowed.is_empty() {
                continue;
            }
            let kind = allowed[thread_rng().gen_range(0..allowed.len())];
            if let Some(h) = inject(&mut c, kind, mix.clocks, &mut st) {
                let hold = Duration::from_millis(thread_rng().gen_range(300..4000));
                st.held.push((now + hold, h));
            }
        }
    }
    let within = matches!(mix.clocks, ClockFaults::WithinBound { .. });
    let mut c = lock(&cluster);
    for (_, h) in std::mem::take(&mut st.held) {
        repair(&mut c, h, &[]);
    }
    // Belt and braces: whatever a fault left behind is undone before the final reads.
    c.heal();
    c.set_net_faults(NetFaultRates::default());
    for i in 0..c.len() {
        c.resume(i);
        c.restart(i);
    }
    // Clock drift stays until here; drift within the bound is undone without a step.
    for i in 0..c.len() {
        if within {
            st.clocks.set_drift(&c, i, 0);
        } else {
            c.skew_clock(i, 0, 0);
        }
    }
}

/// Each member's clock offset at the start (see [`FaultMix::start_offset_max_ms`]).
pub(crate) fn start_offsets(mix: &FaultMix, members: usize) -> Vec<i64> {
    (0..members)
        .map(|_| match mix.start_offset_max_ms {
            0 => 0,
            max => thread_rng().gen_range(0..=max),
        })
        .collect()
}

/// Time between injections. With holds of 0.3-4 s this keeps about one fault held on
/// average: often two at once, yet with healthy stretches for the clients to make
/// progress in (one injection every 0.2-1.5 s kept two held nearly all the time and
/// cut the operations a run checks to a third).
fn quiet() -> Duration {
    Duration::from_millis(thread_rng().gen_range(500..3000))
}

fn leader_index(c: &Cluster) -> usize {
    let leader = c.observer().latest_leader();
    c.ids()
        .iter()
        .position(|id| *id == leader)
        .unwrap_or_else(|| thread_rng().gen_range(0..c.len()))
}

fn random_members(c: &Cluster, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..c.len()).collect();
    let mut rng = thread_rng();
    for i in (1..all.len()).rev() {
        all.swap(i, rng.gen_range(0..=i));
    }
    all.truncate(count);
    all
}

/// Asks the leader for one membership change: add a member outside the configuration
/// (as a learner or a voter), promote a learner, or remove a voter while at least four
/// remain. Removed members never come back (etcd never reuses a removed ID).
fn reconfigure(c: &Cluster, removed: &mut Vec<u64>) {
    let ids = c.ids();
    let voters = c
        .observer()
        .voters()
        .unwrap_or_else(|| ids[..c.founders()].to_vec());
    let outside: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !voters.contains(id) && !removed.contains(id))
        .collect();
    let mut rng = thread_rng();
    let change = match rng.gen_range(0..3) {
        0 if !outside.is_empty() => {
            ConfChange::AddLearner(MemberId(outside[rng.gen_range(0..outside.len())]))
        }
        1 if !outside.is_empty() => {
            ConfChange::AddVoter(MemberId(outside[rng.gen_range(0..outside.len())]))
        }
        _ if voters.len() >= 4 => {
            let id = voters[rng.gen_range(0..voters.len())];
            removed.push(id);
            ConfChange::Remove(MemberId(id))
        }
        _ => return,
    };
    drop(rng);
    c.reconfigure(leader_index(c), change);
}

/// Injects one fault of `kind`; returns what to repair if it is held.
fn inject(c: &mut Cluster, kind: Kind, clocks: ClockFaults, st: &mut State) -> Option<Held> {
    let n = c.len();
    let variant = thread_rng().gen_range(0..5);
    match kind {
        Kind::Membership => {
            reconfigure(c, &mut st.removed);
            None
        }
        Kind::Partition => {
            match variant {
                0 => c.isolate(leader_index(c)),
                1 => c.isolate(thread_rng().gen_range(0..n)),
                2 => {
                    // A bridge: two sides that cannot talk, one member talking to both
                    // (with 3 members: a-b and b-c up, a-c cut). Each side may elect a
                    // leader the bridge votes for; the bridge sees both.
                    let order = random_members(c, n);
                    let (left, right) = order[1..].split_at((n - 1) / 2);
                    for a in left {
                        for b in right {
                            c.cut(*a, *b);
                            c.cut(*b, *a);
                        }
                    }
                }
                3 => c.partition(&random_members(c, n / 2)),
                _ => {
                    for _ in 0..thread_rng().gen_range(1..=n) {
                        let pair = random_members(c, 2);
                        c.cut(pair[0], pair[1]);
                    }
                }
            }
            Some(Held::Partition)
        }
        Kind::Crash => {
            let victims = match variant {
                0 => random_members(c, n / 2 + 1),
                1 => vec![leader_index(c)],
                _ => random_members(c, 1),
            };
            for &v in &victims {
                let tear = thread_rng()
                    .gen_bool(0.5)
                    .then(|| thread_rng().gen_range(0..256));
                c.crash(v, tear);
            }
            Some(Held::Crash(victims))
        }
        Kind::Pause => {
            let v = if variant == 0 {
                leader_index(c)
            } else {
                thread_rng().gen_range(0..n)
            };
            c.pause(v);
            Some(Held::Pause(v))
        }
        Kind::Network => {
            let mut rng = thread_rng();
            c.set_net_faults(NetFaultRates {
                loss: rng.gen_range(0.0..0.3),
                duplicate: rng.gen_range(0.0..0.3),
                max_extra_delay_ms: rng.gen_range(0..200),
            });
            Some(Held::Network)
        }
        Kind::Disk => {
            let v = thread_rng().gen_range(0..n);
            if c.is_down(v) {
                return None;
            }
            if variant % 2 == 0 {
                c.disk(v).fail_syncs(1);
            } else {
                // Full now: the next segment the member needs cannot be created.
                c.disk(v).set_capacity(Some(0));
            }
            Some(Held::Disk(v))
        }
        Kind::Clock => {
            let v = thread_rng().gen_range(0..n);
            let mut rng = thread_rng();
            match clocks {
                ClockFaults::None => {}
                ClockFaults::WithinBound { max_drift_ppm } => {
                    let drift = rng.gen_range(-max_drift_ppm..=max_drift_ppm);
                    drop(rng);
                    st.clocks.set_drift(c, v, drift);
                }
                ClockFaults::Beyond => {
                    let (step, drift) = (
                        rng.gen_range(-5000..=5000),
                        rng.gen_range(-500_000..=500_000),
                    );
                    st.clocks.drift_ppm[v] = drift;
                    c.skew_clock(v, step, drift);
                }
            }
            None
        }
    }
}

/// Repairs one held fault, leaving the `others` still held in place: a member a held
/// crash keeps down is not restarted by a disk repair.
fn repair(c: &mut Cluster, h: Held, others: &[(Instant, Held)]) {
    let crashed_by_others = |v: usize| {
        others
            .iter()
            .any(|(_, o)| matches!(o, Held::Crash(victims) if victims.contains(&v)))
    };
    match h {
        Held::Partition => c.heal(),
        Held::Crash(victims) => {
            for v in victims {
                c.restart(v);
            }
        }
        Held::Pause(v) => c.resume(v),
        Held::Network => c.set_net_faults(NetFaultRates::default()),
        Held::Disk(v) => {
            c.disk(v).fail_syncs(0);
            c.disk(v).set_capacity(None);
            // A member a disk fault stopped is still "up" to the cluster: crash it so
            // the restart starts it from what its disk holds.
            c.crash(v, None);
            if !crashed_by_others(v) {
                c.restart(v);
            }
        }
    }
}
