//! A run's schedule, drawn from its seed: which faults, when, for how long, and the
//! seeds of every client's operation mix. Timing on real processes is not
//! deterministic; the schedule is, so a seed replays the same faults in the same order
//! against the same operations.

use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One fault. Member numbers are indexes into the cluster; `Leader` variants are
/// resolved when the fault starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut one member off from the others, both ways.
    IsolateOne(usize),
    /// Cut whoever leads when the fault starts off from the others, both ways.
    IsolateLeader,
    /// Cut each member off from every other: no majority anywhere.
    IsolateAll,
    /// Bytes from `from` never reach `to`; the other direction still works.
    OneWayCut {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
    /// `a` and `b` cannot talk; both still talk to the third member.
    Bridge {
        /// One end.
        a: usize,
        /// The other.
        b: usize,
    },
    /// Delay, with jitter, every byte through a member's proxy.
    Latency {
        /// The member.
        member: usize,
        /// Added delay.
        delay_ms: u64,
        /// Up to this much more, order kept.
        jitter_ms: u64,
    },
    /// Close every connection to a member's peer port with an RST, repeatedly.
    ResetConnections(usize),
    /// kill -9 of these members at once; restarted on the same data dirs when the
    /// fault ends.
    Kill(Vec<usize>),
    /// kill -9 of the leader; restarted when the fault ends.
    KillLeader,
    /// SIGSTOP of a member, SIGCONT when the fault ends (held longer than an election
    /// timeout).
    Pause(usize),
}

impl Fault {
    /// The fault kinds, in the order seeds cycle through them.
    pub const KINDS: [&'static str; 10] = [
        "isolate-one",
        "isolate-leader",
        "isolate-all",
        "one-way-cut",
        "bridge",
        "latency",
        "reset-connections",
        "kill",
        "kill-leader",
        "pause",
    ];

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::IsolateOne(_) => "isolate-one",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateAll => "isolate-all",
            Fault::OneWayCut { .. } => "one-way-cut",
            Fault::Bridge { .. } => "bridge",
            Fault::Latency { .. } => "latency",
            Fault::ResetConnections(_) => "reset-connections",
            Fault::Kill(_) => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause(_) => "pause",
        }
    }

    fn draw(kind: &str, members: usize, rng: &mut ChaCha8Rng) -> Fault {
        let mut pick = || (rng.next_u64() % members as u64) as usize;
        match kind {
            "isolate-one" => Fault::IsolateOne(pick()),
            "isolate-leader" => Fault::IsolateLeader,
            "isolate-all" => Fault::IsolateAll,
            "one-way-cut" => {
                let from = pick();
                let to = (from + 1 + pick() % (members - 1)) % members;
                Fault::OneWayCut { from, to }
            }
            "bridge" => {
                let a = pick();
                let b = (a + 1 + pick() % (members - 1)) % members;
                Fault::Bridge { a, b }
            }
            "latency" => {
                let member = pick();
                let delay_ms = 20 + pick() as u64 * 40;
                Fault::Latency {
                    member,
                    delay_ms,
                    jitter_ms: 10 + rng.next_u64() % 100,
                }
            }
            "reset-connections" => Fault::ResetConnections(pick()),
            "kill" => {
                // One member, or a majority at once.
                let first = pick();
                if rng.next_u64().is_multiple_of(2) {
                    Fault::Kill(vec![first])
                } else {
                    let count = members / 2 + 1;
                    Fault::Kill((0..count).map(|k| (first + k) % members).collect())
                }
            }
            "kill-leader" => Fault::KillLeader,
            _ => Fault::Pause(pick()),
        }
    }
}

/// A fault held over part of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// What.
    pub fault: Fault,
    /// When it starts, from the start of the load.
    pub at: Duration,
    /// How long it is held.
    pub hold: Duration,
}

/// Everything a seed decides.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The seed.
    pub seed: u64,
    /// How long clients send requests.
    pub load: Duration,
    /// Faults, by start time; they may overlap.
    pub faults: Vec<Held>,
    /// Seeds of the KV clients, watchers and lease clients.
    pub client_seeds: Vec<u64>,
}

impl Schedule {
    /// The schedule of `seed` for `members` members. Its first fault's kind is
    /// [`Fault::KINDS`]`[seed % KINDS.len()]`, so consecutive seeds cover every kind;
    /// one or two more are drawn at random. `only` restricts every fault to one kind.
    pub fn new(seed: u64, members: usize, load: Duration, only: Option<&str>) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let count = 1 + rng.next_u64() % 3;
        let load_ms = load.as_millis() as u64;
        let mut faults = Vec::new();
        for i in 0..count {
            let kind = match (only, i) {
                (Some(k), _) => k,
                (None, 0) => Fault::KINDS[(seed % Fault::KINDS.len() as u64) as usize],
                (None, _) => Fault::KINDS[(rng.next_u64() % Fault::KINDS.len() as u64) as usize],
            };
            let fault = Fault::draw(kind, members, &mut rng);
            // Start within the first two thirds of the load; hold 0.7-2 s (longer than
            // the 500 ms election timeout, so leaders change under it).
            let at = Duration::from_millis(300 + rng.next_u64() % (load_ms * 2 / 3));
            let hold = Duration::from_millis(700 + rng.next_u64() % 1300);
            faults.push(Held { fault, at, hold });
        }
        faults.sort_by_key(|h| h.at);
        let client_seeds = (0..16).map(|_| rng.next_u64()).collect();
        Schedule {
            seed,
            load,
            faults,
            client_seeds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_schedule() {
        let a = Schedule::new(42, 3, Duration::from_secs(5), None);
        let b = Schedule::new(42, 3, Duration::from_secs(5), None);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.client_seeds, b.client_seeds);
    }

    #[test]
    fn consecutive_seeds_cover_every_fault_kind() {
        let n = Fault::KINDS.len() as u64;
        let mut seen: Vec<&str> = (1..=n)
            .map(|s| Schedule::new(s, 3, Duration::from_secs(5), None).faults)
            .flat_map(|f| f.into_iter().map(|h| h.fault.kind()))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), Fault::KINDS.len(), "{seen:?}");
    }

    #[test]
    fn faults_touch_only_existing_members_and_one_way_cuts_two_of_them() {
        for seed in 0..200 {
            for h in Schedule::new(seed, 3, Duration::from_secs(5), None).faults {
                match h.fault {
                    Fault::OneWayCut { from, to } => assert!(from != to && from < 3 && to < 3),
                    Fault::Bridge { a, b } => assert!(a != b && a < 3 && b < 3),
                    Fault::Kill(v) => assert!(!v.is_empty() && v.iter().all(|&m| m < 3)),
                    _ => {}
                }
            }
        }
    }
}
