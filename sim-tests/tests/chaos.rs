//! Chaos scenarios over whole simulated clusters (`cargo test --features sim`).
//!
//! Every failure prints its seed and the command that replays it. Environment:
//! - `KEEL_SIM_SEEDS` (default 200) and `KEEL_SIM_FIRST_SEED` (default 1): the seeds
//!   `many_seeds_of_the_standard_mix`, `many_seeds_with_snapshots` and
//!   `many_seeds_with_compactions` run; a soak is `KEEL_SIM_SEEDS=5000`.
//! - `KEEL_SIM_SEED` and `KEEL_SIM_SCENARIO` (`standard`, `snapshots`, `compactions`, `calm` or a planted bug's
//!   name, see [`SCENARIOS`]; any other name fails): the run `replay` repeats.
#![cfg(feature = "sim")]

use std::time::Instant;

use keel_runtime_sim::Bug;
use keel_sim_tests::chaos::{
    divergent_store, replay_command, require_leader_watch_on_a_cut_off_member, run_seed,
    slow_leader_disk, token_on_a_lagging_member, Report, Scenario,
};
use keel_sim_tests::seeds::{env_u64, run_parallel, SeedRun};

/// Runs `seeds` on every core; returns the reports in seed order. A failing seed, a
/// panicking one or a hung one prints its replay command and fails the test.
fn run_many(seeds: Vec<u64>, scenario: impl Fn(u64) -> Scenario + Sync) -> Vec<Report> {
    run_parallel(
        &seeds,
        SeedRun {
            run: |seed| run_seed(seed, &scenario(seed)),
            failed: |r: &Report| !r.passed(),
            replay: |seed| replay_command(seed, &scenario(seed).name),
        },
    )
}

/// The standard mix. Its seeds must reach what only production ran before the member
/// was shared: requests refused at once for want of a leader (require-leader), watch
/// streams opened with require-leader ended on a member long without a leader,
/// membership changes through etcd's checks, applied and refused by the strict
/// reconfiguration check, and the leader's corruption checks comparing peers' hashes
/// (which must never raise CORRUPT on these healthy clusters: a run checks that).
#[test]
fn many_seeds_of_the_standard_mix() {
    let reports = many_seeds(Scenario::standard);
    for what in [
        "requests refused for want of a leader",
        "require-leader watch streams ended for want of a leader",
        "membership changes applied",
        "membership changes refused by the strict reconfiguration check",
        "peer hashes compared by the corruption check",
    ] {
        let n = count(&reports, what);
        println!("{what}: {n}");
        assert!(n > 0, "no run reached {what}");
    }
}

/// The same seeds again with members snapshotting often, so that followers are caught up
/// by snapshot transfer and install (the standard mix keeps its whole log), and WAL
/// segments are released behind snapshots before crashes and restarts.
#[test]
fn many_seeds_with_snapshots() {
    let reports = many_seeds(Scenario::snapshots);
    let released = count(&reports, "WAL segments released");
    println!("WAL segments released: {released}");
    assert!(released > 0, "no run released a WAL segment");
}

/// What the runs counted of `what`, summed.
fn count(reports: &[Report], what: &str) -> u64 {
    reports.iter().filter_map(|r| r.counts.get(what)).sum()
}

/// The snapshots mix again with a client compacting the keyspace all along; the runs
/// must actually compact, and cancel watchers for compacted history, or they would
/// prove nothing about compaction.
#[test]
fn many_seeds_with_compactions() {
    let reports = many_seeds(Scenario::compactions);
    let compacted: usize = reports.iter().map(|r| r.compactions.0).sum();
    let canceled: usize = reports.iter().map(|r| r.compactions.1).sum();
    assert!(
        compacted >= reports.len() && canceled > 0,
        "{compacted} compactions and {canceled} canceled watches over {} runs",
        reports.len()
    );
}

fn many_seeds(scenario: fn(u64) -> Scenario) -> Vec<Report> {
    let first = env_u64("KEEL_SIM_FIRST_SEED", 1);
    let count = env_u64("KEEL_SIM_SEEDS", 200);
    let started = Instant::now();
    let reports = run_many((first..first + count).collect(), scenario);
    let wall = started.elapsed().as_secs_f64();
    let sim: f64 = reports.iter().map(|r| r.sim_ms as f64 / 1000.0).sum();
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let events: usize = reports.iter().map(|r| r.watch_events).sum();
    let sessions: usize = reports.iter().map(|r| r.watch_sessions).sum();
    let leases: usize = reports.iter().map(|r| r.leases.0).sum();
    let expired: usize = reports.iter().map(|r| r.leases.1).sum();
    let conf_changes: u64 = reports.iter().map(|r| r.conf_changes).sum();
    let compactions: usize = reports.iter().map(|r| r.compactions.0).sum();
    println!(
        "{}: {count} seeds in {wall:.1} s wall ({:.0} seeds/min): {sim:.0} s simulated \
         ({:.0}x real time over all cores), {ops} client operations, {events} watch events \
         in {sessions} watch sessions, {leases} leases ({expired} expired) checked, \
         {conf_changes} membership changes, {compactions} compactions",
        scenario(first).name,
        count as f64 / wall * 60.0,
        sim / wall
    );
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failed.len(),
        failed.iter().map(|r| r.to_string()).collect::<String>()
    );
    reports
}

/// The scenarios `KEEL_SIM_SCENARIO` may name.
const SCENARIOS: [&str; 11] = [
    "standard",
    "snapshots",
    "compactions",
    "calm",
    "AckBeforeFsync",
    "CommitWithoutQuorum",
    "LeaseReadPastBound",
    "RefuseButPropose",
    "ReleaseWalAhead",
    "StreamsOutliveLeader",
    "ProgressBeforeEvents",
];

/// The scenario called `name`; an unknown name is an error listing the valid ones (a
/// typo must not silently replay `standard`, which would pass where the failure was).
fn scenario_named(name: &str, seed: u64) -> Result<Scenario, String> {
    Ok(match name {
        "standard" => Scenario::standard(seed),
        "snapshots" => Scenario::snapshots(seed),
        "compactions" => Scenario::compactions(seed),
        "calm" => Scenario::calm(seed),
        "AckBeforeFsync" => Scenario::with_bug(seed, Bug::AckBeforeFsync),
        "CommitWithoutQuorum" => Scenario::with_bug(seed, Bug::CommitWithoutQuorum),
        "LeaseReadPastBound" => Scenario::with_bug(seed, Bug::LeaseReadPastBound),
        "RefuseButPropose" => Scenario::with_bug(seed, Bug::RefuseButPropose),
        "ReleaseWalAhead" => Scenario::with_bug(seed, Bug::ReleaseWalAhead),
        "StreamsOutliveLeader" => Scenario::with_bug(seed, Bug::StreamsOutliveLeader),
        "ProgressBeforeEvents" => Scenario::with_bug(seed, Bug::ProgressBeforeEvents),
        _ => {
            return Err(format!(
                "unknown KEEL_SIM_SCENARIO {name:?}; valid: {}",
                SCENARIOS.join(", ")
            ))
        }
    })
}

#[test]
fn every_scenario_name_is_known_and_others_are_refused() {
    for name in SCENARIOS {
        let s = scenario_named(name, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, name);
    }
    let err = scenario_named("strict", 3).expect_err("not a scenario");
    assert!(
        err.contains("standard, snapshots, compactions, calm, AckBeforeFsync"),
        "{err}"
    );
}

/// Replays one run: `KEEL_SIM_SEED=7 KEEL_SIM_SCENARIO=standard cargo test --features sim
/// --test chaos -- replay --nocapture`.
#[test]
fn replay() {
    let seed = env_u64("KEEL_SIM_SEED", 1);
    let name = std::env::var("KEEL_SIM_SCENARIO").unwrap_or_else(|_| "standard".into());
    let scenario = scenario_named(&name, seed).unwrap_or_else(|e| panic!("{e}"));
    let r = run_seed(seed, &scenario);
    print!("{r}");
    for n in &r.notes {
        println!("  note: {n}");
    }
    assert!(r.passed(), "{r}");
}

#[test]
fn the_same_seed_replays_the_identical_run() {
    for seed in [3, 6] {
        let a = run_seed(seed, &Scenario::standard(seed));
        let b = run_seed(seed, &Scenario::standard(seed));
        assert!(a.ops > 100, "{a}");
        assert_eq!(
            (a.trace_hash, a.ops, a.applied, a.sim_ms),
            (b.trace_hash, b.ops, b.applied, b.sim_ms),
            "seed {seed} did not replay identically:\n{a}{b}"
        );
    }
    let other = run_seed(4, &Scenario::standard(4));
    let three = run_seed(3, &Scenario::standard(3));
    assert_ne!(
        other.trace_hash, three.trace_hash,
        "different seeds, different runs"
    );
}

/// A divergence planted in one member's store: on every seed the leader's corruption
/// check finds it, CORRUPT is raised through raft and every member refuses writes with
/// etcd's "etcdserver: corrupt cluster"; the same seeds without it raise nothing and
/// keep taking writes, though their checks compared peers' hashes.
#[test]
fn a_divergent_store_raises_corrupt_and_writes_are_refused() {
    for seed in 1..=BUG_SEEDS / 2 {
        let run =
            |diverge| divergent_store(seed, diverge).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let (refused, compared, raised) = run(true);
        assert!(
            refused && raised > 0,
            "seed {seed}: the divergence went unnoticed ({compared} hashes compared, {raised} alarms)"
        );
        println!("seed {seed}: divergence found, {raised} alarm notes, {compared} hashes compared");
        let (refused, compared, raised) = run(false);
        println!("seed {seed} without it: {compared} hashes compared, no alarm");
        assert!(
            !refused && raised == 0 && compared > 0,
            "seed {seed} without a divergence: refused {refused}, {compared} hashes compared, {raised} alarms"
        );
    }
}

/// A planted bug must be caught within this many seeds.
const BUG_SEEDS: u64 = 16;

fn caught(bug: Bug) {
    let reports = run_many((1..=BUG_SEEDS).collect(), |seed| {
        Scenario::with_bug(seed, bug)
    });
    let caught: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    println!(
        "{bug:?}: caught by {} of {BUG_SEEDS} seeds{}",
        caught.len(),
        caught
            .first()
            .map(|r| format!(
                ", first: seed {}: {}",
                r.seed,
                r.problems[0].lines().next().unwrap_or("")
            ))
            .unwrap_or_default()
    );
    assert!(
        !caught.is_empty(),
        "{bug:?} went unnoticed in {BUG_SEEDS} seeds"
    );
}

#[test]
fn planted_bug_ack_before_fsync_is_caught() {
    caught(Bug::AckBeforeFsync);
}

#[test]
fn planted_bug_progress_before_events_is_caught() {
    caught(Bug::ProgressBeforeEvents);
}

#[test]
fn planted_bug_commit_without_quorum_is_caught() {
    caught(Bug::CommitWithoutQuorum);
}

#[test]
fn planted_bug_lease_read_past_its_bound_is_caught() {
    caught(Bug::LeaseReadPastBound);
}

/// A simple token used on a member that has not applied its login yet: served once the
/// member catches up, on every seed; and refused on some when the member does not wait
/// (the planted bug), so the scenario does reach a lagging member.
#[test]
fn simple_tokens_work_on_a_lagging_member() {
    targeted(token_on_a_lagging_member, Bug::TokenWithoutWait);
}

/// A targeted scenario: it must pass on every seed, and fail on some with `bug` planted
/// (so it does reach what the bug breaks).
fn targeted(scenario: fn(u64, Option<Bug>) -> Result<(), String>, bug: Bug) {
    for seed in 1..=BUG_SEEDS {
        if let Err(e) = scenario(seed, None) {
            panic!("seed {seed}: {e}");
        }
    }
    let caught = (1..=BUG_SEEDS)
        .filter(|seed| scenario(*seed, Some(bug)).is_err())
        .count();
    println!("{bug:?}: caught by {caught} of {BUG_SEEDS} seeds");
    assert!(caught > 0, "{bug:?} went unnoticed in {BUG_SEEDS} seeds");
}

/// A leader whose every WAL sync takes three election timeouts, followers healthy: no
/// election in ten election timeouts, and writes through a follower keep committing.
#[test]
fn a_slow_leader_disk_costs_no_election() {
    for seed in 1..=BUG_SEEDS {
        if let Err(e) = slow_leader_disk(seed, None) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn planted_bug_refuse_but_propose_is_caught() {
    caught(Bug::RefuseButPropose);
}

#[test]
fn planted_bug_release_wal_ahead_is_caught() {
    caught(Bug::ReleaseWalAhead);
}

/// A require-leader watch on a member cut off from the quorum: ended with "no leader"
/// within the bound on every seed, a plain one kept, a new one refused; and the planted
/// bug that never ends such streams caught. (The chaos runs check the same bound on
/// every require-leader stream, but reach a long enough loss on few seeds.)
#[test]
fn require_leader_watches_end_on_a_cut_off_member() {
    targeted(
        require_leader_watch_on_a_cut_off_member,
        Bug::StreamsOutliveLeader,
    );
}

/// Bugs the simulator found, each pinned to seeds of the current standard mix that
/// catch it with its fix reverted (re-pin when the mix changes: a seed that no longer
/// reaches the bug guards nothing; how: revert the fix, run `many_seeds`, pick failing
/// seeds, restore the fix).
#[test]
fn regressions() {
    let pinned_in = |scenario: fn(u64) -> Scenario, seeds: &[u64]| {
        for &seed in seeds {
            let r = run_seed(seed, &scenario(seed));
            assert!(r.passed(), "{r}");
        }
    };
    let pinned = |seeds: &[u64]| pinned_in(Scenario::standard, seeds);
    let pinned_with_snapshots = |seeds: &[u64]| pinned_in(Scenario::snapshots, seeds);
    // A duplicated forward of a proposal was applied twice: a get saw version 9 of a key
    // the history put 7 times (fixed in ef42c54: the state machine applies each (origin,
    // request) once). Re-pinned under overlapping faults: with the fix reverted, 115 of
    // seeds 1-500 fail, these among them (the earlier pins 4, 2, 6 no longer did).
    pinned(&[16, 18, 20]);
    // A leader renewed a lease on a keepalive just after proposing its revocation (it had
    // expired, the client's keepalive came late); the client was told the lease lives a
    // TTL more and its keys were deleted 9-26 ms after it sent the keepalive (fixed in
    // 20c42d9: `Lessor::renew` refuses an expired lease, as etcd's does). Re-pinned: with
    // the fix reverted, 35 of seeds 1-500 fail, these among them (of the earlier pins 13,
    // 37, 59 only 59 still did).
    pinned(&[5, 59, 73]);
    // A new leader renewed a lease whose revocation an earlier leader had committed: the
    // revocation (term 2) was in its log but not yet known committed, its lessor had been
    // promoted on election, it told the client the lease lived 2 s more and applied the
    // revocation 83 ms later (fixed in f89c984: the lessor becomes primary only once the
    // leader has applied an entry of its own term, `StateMachine::track_leadership`, as
    // etcd's). It is rare: 1 of seeds 1-2500 reached it.
    pinned(&[1065]);

    // A follower was cut off (a failed fsync) after storing a leader's snapshot image and
    // before its WAL marker; it resumed from the image, appended the entries after it to
    // the WAL's old tail, and could not restart again: "entry index 145 ... does not
    // follow 79" (fixed by `keel_core::wal::add_missing_snapshot_marker`: the marker is
    // written at open). With the fix reverted, seed 70 of 1-200 fails.
    pinned_with_snapshots(&[70]);
    // A watch resumed on a lagging member starts in the future; a snapshot install sent
    // it back to history, whose catch-up moved its next revision back to the store's and
    // repeated a revision the client had seen (fixed in `WatchHub::catch_up`, which now
    // leaves a watcher ahead of the store waiting). With the fix reverted, 7 of seeds
    // 1-4000 fail, these among them.
    pinned_with_snapshots(&[228, 2265, 3914]);
}
