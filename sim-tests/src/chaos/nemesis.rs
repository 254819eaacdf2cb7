//! The fault schedule: at random moments a random fault from the scenario's mix is
//! injected, held for a random while, then repaired. Faults: partitions (a member
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

use super::workload::lock;

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
}

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
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Partition,
    Crash,
    Pause,
    Network,
    Disk,
    Clock,
    Membership,
}

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

/// Injects faults until `until`, then repairs everything.
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
    let mut disk_faulted = Vec::new();
    let mut removed = Vec::new();
    let mut clocks = Clocks {
        epoch,
        drift_ppm: vec![0; lock(&cluster).len()],
    };
    while Instant::now() < until {
        let quiet = thread_rng().gen_range(200..1500);
        madsim::time::sleep(Duration::from_millis(quiet)).await;
        let kind = kinds[thread_rng().gen_range(0..kinds.len())];
        {
            let mut c = lock(&cluster);
            if let Kind::Membership = kind {
                reconfigure(&c, &mut removed);
            } else {
                inject(&mut c, kind, mix.clocks, &mut disk_faulted, &mut clocks);
            }
        }
        let hold = thread_rng().gen_range(300..4000);
        madsim::time::sleep(Duration::from_millis(hold)).await;
        let mut c = lock(&cluster);
        repair(&mut c, &mut disk_faulted, None);
    }
    let within = matches!(mix.clocks, ClockFaults::WithinBound { .. });
    repair(
        &mut lock(&cluster),
        &mut disk_faulted,
        Some((&mut clocks, within)),
    );
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

fn inject(
    c: &mut Cluster,
    kind: Kind,
    clocks: ClockFaults,
    disk_faulted: &mut Vec<usize>,
    drifts: &mut Clocks,
) {
    let n = c.len();
    let variant = thread_rng().gen_range(0..4);
    match kind {
        // Asked of the leader by `reconfigure`, not injected.
        Kind::Membership => {}
        Kind::Partition => match variant {
            0 => c.isolate(leader_index(c)),
            1 => c.isolate(thread_rng().gen_range(0..n)),
            2 if n >= 5 => {
                // A bridge: two halves that cannot talk, one member talking to both.
                let order = random_members(c, n);
                let (left, right) = order[1..].split_at((n - 1) / 2);
                for a in left {
                    for b in right {
                        c.cut(*a, *b);
                        c.cut(*b, *a);
                    }
                }
            }
            2 => c.partition(&random_members(c, n / 2)),
            _ => {
                for _ in 0..thread_rng().gen_range(1..=n) {
                    let pair = random_members(c, 2);
                    c.cut(pair[0], pair[1]);
                }
            }
        },
        Kind::Crash => {
            let victims = match variant {
                0 => random_members(c, n / 2 + 1),
                1 => vec![leader_index(c)],
                _ => random_members(c, 1),
            };
            for v in victims {
                let tear = thread_rng()
                    .gen_bool(0.5)
                    .then(|| thread_rng().gen_range(0..256));
                c.crash(v, tear);
            }
        }
        Kind::Pause => {
            let v = if variant == 0 {
                leader_index(c)
            } else {
                thread_rng().gen_range(0..n)
            };
            c.pause(v);
        }
        Kind::Network => {
            let mut rng = thread_rng();
            c.set_net_faults(NetFaultRates {
                loss: rng.gen_range(0.0..0.3),
                duplicate: rng.gen_range(0.0..0.3),
                max_extra_delay_ms: rng.gen_range(0..200),
            });
        }
        Kind::Disk => {
            let v = thread_rng().gen_range(0..n);
            if c.is_down(v) || disk_faulted.contains(&v) {
                return;
            }
            if variant % 2 == 0 {
                c.disk(v).fail_syncs(1);
            } else {
                // Full now: the next segment the member needs cannot be created.
                c.disk(v).set_capacity(Some(0));
            }
            disk_faulted.push(v);
        }
        Kind::Clock => {
            let v = thread_rng().gen_range(0..n);
            let mut rng = thread_rng();
            match clocks {
                ClockFaults::None => {}
                ClockFaults::WithinBound { max_drift_ppm } => {
                    let drift = rng.gen_range(-max_drift_ppm..=max_drift_ppm);
                    drop(rng);
                    drifts.set_drift(c, v, drift);
                }
                ClockFaults::Beyond => {
                    let (step, drift) = (
                        rng.gen_range(-5000..=5000),
                        rng.gen_range(-500_000..=500_000),
                    );
                    drifts.drift_ppm[v] = drift;
                    c.skew_clock(v, step, drift);
                }
            }
        }
    }
}

/// Repairs what a fault broke. Crashed members come back; a member stopped by a disk
/// fault is restarted with a healthy disk (after losing what it had not synced). Clock
/// drift stays until the end of the run (`end`: the clocks, and whether drift within
/// the bound is undone without a step), and so does an offset.
fn repair(c: &mut Cluster, disk_faulted: &mut Vec<usize>, end: Option<(&mut Clocks, bool)>) {
    c.heal();
    c.set_net_faults(NetFaultRates::default());
    for i in 0..c.len() {
        c.resume(i);
        c.restart(i);
    }
    for v in disk_faulted.drain(..) {
        c.disk(v).fail_syncs(0);
        c.disk(v).set_capacity(None);
        c.crash(v, None);
        c.restart(v);
    }
    if let Some((clocks, within)) = end {
        for i in 0..c.len() {
            if within {
                clocks.set_drift(c, i, 0);
            } else {
                c.skew_clock(i, 0, 0);
            }
        }
    }
}
