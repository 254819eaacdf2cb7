//! keel-robustness: the shipped `keel` binary (or etcd, for comparison) as real
//! processes on loopback, under network faults (a TCP proxy in front of every peer
//! port), process faults (kill -9, SIGSTOP/SIGCONT, restarts on the same data dir) and
//! concurrent clients over the real gRPC API; every run's history is checked with the
//! simulator's checkers (`keel-sim-tests`): linearizability with etcd's KV model,
//! revisions in real time, watch sessions against the applied history, and leases.
//!
//! A seed fixes the schedule of faults and every client's choices; timing on real
//! processes is not deterministic. See the README's "Robustness runs".

pub mod client;
pub mod clock;
pub mod cluster;
pub mod leases;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod watchers;
pub mod workload;
