//! keel-sim-tests: chaos scenarios over whole simulated clusters and the history
//! checkers.
//!
//! - [`linearizability`]: a Wing–Gong–Lowe search (the algorithm of Porcupine) over
//!   histories of concurrent operations against a sequential model, validated against
//!   Porcupine's and Jepsen's published corpus in `tests/linearizability_corpus.rs`.
//! - [`chaos`]: one seeded run of a simulated cluster (`keel-runtime-sim` on madsim)
//!   under a random fault schedule with random clients, then every check: invariants
//!   the members report as they run, linearizability per key, revisions agreeing with
//!   real time. `tests/chaos.rs` (`cargo test --features sim`) runs many seeds.

pub mod chaos;
pub mod discovery_sim;
pub mod linearizability;
pub mod seeds;

/// Locks `m`, taking over a lock a panicking thread left poisoned: the state is still
/// what the checks need to see, and the panic itself is reported.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
