//! keel-server: the `keel` binary (an etcd-compatible member started with etcd's flags)
//! and `keelctl` (benchmarks and operator tools).
//!

pub mod backup;
pub mod bootstrap;
pub mod client_bench;
pub mod config;
pub mod config_file;
pub mod discovery_new;
pub mod discovery_srv;
pub mod discovery_v2;
pub mod gateway;
pub mod join;
pub mod k8s_bench;
pub mod latency;
pub mod launch;
pub mod mvcc_bench;
pub mod proxy;
pub mod raft_bench;
pub mod tls;
pub mod wal_bench;
