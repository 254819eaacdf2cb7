//! Running many seeds: on every core, results in seed order, each failure printed with
//! its replay line as soon as it is known. Shared by the chaos and discovery tests.
//!
//! A seed fails in one of three ways, and each must name its seed and replay command,
//! or the failure cannot be reproduced:
//! - its report says so (a check found a violation): the report's `Display` carries
//!   the replay command;
//! - it panics (an assertion in a member, madsim's "all tasks will block forever" or
//!   "time limit exceeded"): caught here, printed with the replay command, and the whole
//!   call panics once every other seed has run;
//! - it hangs without advancing simulated time (so madsim's time limit never fires): a
//!   watchdog prints every seed still running past [`wall_limit`] and exits the process,
//!   since a thread stuck in a loop cannot be stopped from outside.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// A number from the environment (`KEEL_SIM_SEEDS` and the like), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long one seed may run in wall time before it counts as hung:
/// `KEEL_SIM_SEED_WALL_SECS`, default 900 s (a debug-build seed takes seconds; the margin
/// is for a loaded CI machine).
pub fn wall_limit() -> Duration {
    Duration::from_secs(env_u64("KEEL_SIM_SEED_WALL_SECS", 900))
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// How to run and judge one seed.
pub struct SeedRun<Run, Failed, Replay> {
    /// Runs a seed.
    pub run: Run,
    /// Whether a report is a failure (printed as it arrives; its `Display` must carry
    /// the replay command).
    pub failed: Failed,
    /// The seed's scenario and the exact command that replays it, for seeds that panic
    /// or hang and so leave no report.
    pub replay: Replay,
}

/// Runs every seed on every core; returns the reports in the order of `seeds`. Panics,
/// after every seed has run, if any seed panicked (see the module's comment).
pub fn run_parallel<R, Run, Failed, Replay>(
    seeds: &[u64],
    how: SeedRun<Run, Failed, Replay>,
) -> Vec<R>
where
    R: Display + Send,
    Run: Fn(u64) -> R + Sync,
    Failed: Fn(&R) -> bool + Sync,
    Replay: Fn(u64) -> String + Sync,
{
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::new());
    let panicked = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Seeds in flight, with their start, for the watchdog.
    let running: Mutex<Vec<Option<(u64, Instant)>>> = Mutex::new(vec![None; threads]);
    let done = AtomicUsize::new(0);
    let limit = wall_limit();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, reports, panicked, running, done, how) =
                (&next, &reports, &panicked, &running, &done, &how);
            s.spawn(move || {
                // Counted even if a report's Display panics, so the watchdog stops.
                let _done = Counted(done);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    lock(running)[t] = Some((seed, Instant::now()));
                    match catch_unwind(AssertUnwindSafe(|| (how.run)(seed))) {
                        Ok(r) => {
                            if (how.failed)(&r) {
                                eprint!("{r}");
                            }
                            lock(reports).push((i, r));
                        }
                        Err(payload) => {
                            let line = format!(
                                "seed {seed} panicked: {}\n  replay: {}\n",
                                panic_message(payload.as_ref()),
                                (how.replay)(seed)
                            );
                            eprint!("{line}");
                            lock(panicked).push((i, line));
                        }
                    }
                    lock(running)[t] = None;
                }
            });
        }
        s.spawn(|| watchdog(threads, &done, &running, limit, &how.replay));
    });
    let mut panicked = panicked.into_inner().unwrap_or_else(|p| p.into_inner());
    panicked.sort_by_key(|(i, _)| *i);
    assert!(
        panicked.is_empty(),
        "{} of {} seeds panicked:\n{}",
        panicked.len(),
        seeds.len(),
        panicked.into_iter().map(|(_, l)| l).collect::<String>()
    );
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Until every worker is done: any seed running longer than `limit` is reported with
/// its replay command, and the process exits (the stuck thread cannot be stopped).
fn watchdog(
    workers: usize,
    done: &AtomicUsize,
    running: &Mutex<Vec<Option<(u64, Instant)>>>,
    limit: Duration,
    replay: &(impl Fn(u64) -> String + Sync),
) {
    while done.load(Ordering::Relaxed) < workers {
        std::thread::sleep(Duration::from_millis(100));
        let hung: Vec<u64> = lock(running)
            .iter()
            .flatten()
            .filter(|(_, started)| started.elapsed() > limit)
            .map(|(seed, _)| *seed)
            .collect();
        if !hung.is_empty() {
            for seed in hung {
                eprintln!(
                    "seed {seed} hung: still running after {limit:?} of wall time\n  replay: {}",
                    replay(seed)
                );
            }
            std::process::exit(101);
        }
    }
}

/// Counts a worker as done when it ends, however it ends.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_seed_order() {
        let seeds: Vec<u64> = (0..50).rev().collect();
        let out = run_parallel(
            &seeds,
            SeedRun {
                run: |s| s * 2,
                failed: |_: &u64| false,
                replay: |s| format!("replay {s}"),
            },
        );
        assert_eq!(out, seeds.iter().map(|s| s * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_seed_fails_the_call_with_its_replay_command() {
        let seeds: Vec<u64> = (0..20).collect();
        let result = catch_unwind(|| {
            run_parallel(
                &seeds,
                SeedRun {
                    run: |s| {
                        assert!(s != 7, "boom at {s}");
                        s
                    },
                    failed: |_: &u64| false,
                    replay: |s| format!("REPLAY-{s}"),
                },
            )
        });
        let message = panic_message(result.expect_err("seed 7 panics").as_ref());
        assert!(message.contains("1 of 20 seeds panicked"), "{message}");
        assert!(message.contains("seed 7 panicked: boom at 7"), "{message}");
        assert!(message.contains("replay: REPLAY-7"), "{message}");
    }
}
