//! Bootstrap: member and cluster IDs exactly as etcd derives them, and the static
//! `--initial-cluster` configuration.

mod ids;
mod initial_cluster;

pub use ids::{cluster_id, member_id};
pub use initial_cluster::{
    bootstrap_members, check_url, BootstrapError, InitialCluster, InitialClusterError,
    InitialMember, UrlError,
};
