//! Running many seeds: on every core, results in seed order, each failure printed with
//! its replay line as soon as it is known. Shared by the chaos and discovery tests.

use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A number from the environment (`KEEL_SIM_SEEDS` and the like), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `run` for every seed on every core; returns the reports in the order of
/// `seeds`. A report `failed` says is bad is printed (its `Display` carries the replay
/// command) when it arrives.
pub fn run_parallel<R: Display + Send>(
    seeds: &[u64],
    run: impl Fn(u64) -> R + Sync,
    failed: impl Fn(&R) -> bool + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { return };
                let r = run(seed);
                if failed(&r) {
                    eprint!("{r}");
                }
                reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_seed_order() {
        let seeds: Vec<u64> = (0..50).rev().collect();
        let out = run_parallel(&seeds, |s| s * 2, |_| false);
        assert_eq!(out, seeds.iter().map(|s| s * 2).collect::<Vec<_>>());
    }
}
