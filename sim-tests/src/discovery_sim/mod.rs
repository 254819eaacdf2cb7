//! Discovery chaos (issue #7): would-be members run keel-core's etcd 3.4 v2 discovery
//! handshake ([`keel_core::discovery::v2::V2Discovery`]) against a simulated discovery
//! service (the subset of etcd's v2 keys API the protocol uses) on madsim, with
//! duplicate names, members beyond the size, lost, repeated and delayed requests and
//! answers, a paused or crashed (data kept) service and members restarted mid-handshake.
//!
//! - [`service`]: the v2 keys store the service node serves.
//! - [`run`]: one seeded run (scenario, nodes, faults) and its report.
//! - [`check`]: the checks on how a run ended, against etcd 3.4's behaviour.
//!
//! The same seed replays the same run event for event: the scenario is a function of
//! the seed, madsim's executor, network and random numbers are seeded by it, and the
//! report's trace hash covers every event.

pub mod check;
pub mod run;
pub mod service;

pub use check::{check, Check, DiscoveryOutcome, Facts, MemberFacts, Problem, Registration};
pub use run::{
    replay_command, run_scenario, run_seed, Faults, MemberPlan, Report, Scenario, DISCOVERY_URL,
};
