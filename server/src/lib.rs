//! keel-server: the `keel` binary (an etcd-compatible member started with etcd's flags)
//! and `keelctl` (benchmarks and operator tools).
//!
//! Today it holds the benchmarks behind `keelctl bench raft` and `keelctl bench wal`; the
//! server itself arrives with the runtime and API work.

pub mod client_bench;
pub mod config;
pub mod latency;
pub mod launch;
pub mod mvcc_bench;
pub mod raft_bench;
pub mod wal_bench;
