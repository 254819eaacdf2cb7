//! Chaos runs: a simulated cluster under a random fault schedule, random clients
//! (key-value, watch, lease and compaction clients), and every check on what happened.
//!
//! One run is a function of its seed and [`Scenario`]: madsim's executor, network and
//! random numbers are seeded, member clocks are derived from the simulation's, so the
//! same seed replays the same run event for event (the observer's trace hash proves it).

mod compactor;
mod corruption;
mod leaderless_streams;
mod leases;
mod nemesis;
mod revisions;
mod run;
mod slow_disk;
mod tokens;
mod watches;
mod workload;

pub use corruption::{divergent_store, CorruptionRun};
pub use leaderless_streams::require_leader_watch_on_a_cut_off_member;
pub use leases::{check_leases, LeaseLog};
pub use nemesis::{ClockFaults, FaultMix};
pub use revisions::check_revisions_follow_real_time;
pub use run::{replay_command, run_seed, Report, Scenario};
pub use slow_disk::slow_leader_disk;
pub use tokens::token_on_a_lagging_member;
pub use watches::{check_watches, WatchChain, WatchSession};
pub use workload::{Key, KvHistory, Value};
