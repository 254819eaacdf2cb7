//! Discovery chaos (issue #7): `cargo test --features sim --test discovery_chaos`.
//!
//! Every failure prints its seed and the command that replays it. Environment:
//! - `KEEL_SIM_SEEDS` (default 1000) and `KEEL_SIM_FIRST_SEED` (default 1): the seeds
//!   `many_seeds` runs.
//! - `KEEL_SIM_SEED`: the run `replay` repeats, printing its whole event log.
#![cfg(feature = "sim")]

use std::time::Instant;

use keel_core::discovery::v2::DiscoveryError;
use keel_sim_tests::discovery_sim::{
    replay_command, run_scenario, run_seed, DiscoveryOutcome, Faults, Report, Scenario,
};
use keel_sim_tests::seeds::{env_u64, run_parallel, SeedRun};

/// Runs `seeds` on every core; returns the reports in seed order. A failing seed, a
/// panicking one or a hung one prints its replay command and fails the test.
fn run_many(seeds: Vec<u64>) -> Vec<Report> {
    run_parallel(
        &seeds,
        SeedRun {
            run: run_seed,
            failed: |r: &Report| !r.passed(),
            replay: replay_command,
        },
    )
}

#[test]
fn many_seeds() {
    let first = env_u64("KEEL_SIM_FIRST_SEED", 1);
    let count = env_u64("KEEL_SIM_SEEDS", 1000);
    let started = Instant::now();
    let reports = run_many((first..first + count).collect());
    let wall = started.elapsed().as_secs_f64();
    let total = |pred: &dyn Fn(&DiscoveryOutcome) -> bool| -> usize {
        reports.iter().map(|r| r.count(pred)).sum()
    };
    let members = total(&|_| true);
    let done = total(&|o| matches!(o, DiscoveryOutcome::Done { .. }));
    let full = total(&|o| matches!(o, DiscoveryOutcome::Failed(DiscoveryError::FullCluster(_))));
    let dup_name = total(&|o| {
        matches!(
            o,
            DiscoveryOutcome::Failed(DiscoveryError::DuplicateName { .. })
        )
    });
    let dup_id = total(&|o| matches!(o, DiscoveryOutcome::Failed(DiscoveryError::DuplicateId)));
    let pending = total(&|o| matches!(o, DiscoveryOutcome::Pending));
    let transport = members - done - full - dup_name - dup_id - pending;
    let complete_runs = reports
        .iter()
        .filter(|r| {
            r.count(|o| matches!(o, DiscoveryOutcome::Done { .. })) as u64 == r.scenario.size
        })
        .count();
    let calm = reports.iter().filter(|r| r.scenario.is_calm()).count();
    println!(
        "{count} seeds ({calm} without faults) in {wall:.1} s wall: {members} members: \
         {done} completed, {full} cluster full, {dup_name} duplicate name, {dup_id} duplicate id, \
         {transport} transport failures, {pending} still waiting (cluster never filled); \
         {complete_runs} runs where all `size` members completed"
    );
    // The scenario mix must reach every verdict, or the checks check little.
    assert!(done > 0 && full > 0 && dup_name > 0 && dup_id > 0 && complete_runs > 0);
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failed.len(),
        failed.iter().map(|r| r.to_string()).collect::<String>()
    );
}

/// Replays one run with its event log:
/// `KEEL_SIM_SEED=7 cargo test --features sim --test discovery_chaos -- replay --nocapture`.
#[test]
fn replay() {
    let seed = env_u64("KEEL_SIM_SEED", 1);
    let r = run_seed(seed);
    for line in &r.log {
        println!("{line}");
    }
    print!("{r}");
    assert!(r.passed(), "{r}");
}

#[test]
fn the_same_seed_replays_the_identical_run() {
    for seed in [2, 5, 11] {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert!(a.log.len() > 10, "{a}");
        assert_eq!(
            (a.trace_hash, &a.log, a.sim_ms),
            (b.trace_hash, &b.log, b.sim_ms),
            "seed {seed} did not replay identically"
        );
    }
    assert_ne!(
        run_seed(3).trace_hash,
        run_seed(4).trace_hash,
        "different seeds, different runs"
    );
}

/// etcd 3.4's discovery sends its create once: when the answer to a create that
/// happened is lost, the member fails (a transport error); restarted, it finds its own
/// key and stops with "found duplicate id" ("member has been registered with discovery
/// service"). Its registration still counts: the others complete with it.
#[test]
fn a_lost_create_answer_then_a_restart_finds_its_own_key() {
    for seed in 1..=8 {
        let mut sc = Scenario::for_seed(seed);
        sc.size = 3;
        sc.members.truncate(3);
        for (i, m) in sc.members.iter_mut().enumerate() {
            m.name = format!("m{}", i + 1);
            m.start_ms = 100 * i as u64;
        }
        sc.faults = Faults {
            lost_create_answers: vec![1],
            member_restarts: vec![(1, 6_000, 500)],
            ..Faults::default()
        };
        let r = run_scenario(seed, &sc);
        assert!(r.passed(), "{r}");
        let outcomes: Vec<&DiscoveryOutcome> = r.facts.members.iter().map(|m| &m.outcome).collect();
        assert_eq!(
            outcomes[1],
            &DiscoveryOutcome::Failed(DiscoveryError::DuplicateId),
            "{r}"
        );
        for o in [outcomes[0], outcomes[2]] {
            let DiscoveryOutcome::Done { initial_cluster } = o else {
                panic!("{r}")
            };
            assert!(initial_cluster.contains("m2=http://10.0.2.2:2380"), "{r}");
        }
    }
}
