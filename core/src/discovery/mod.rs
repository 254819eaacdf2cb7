//! Bootstrap: member and cluster IDs exactly as etcd derives them, and the static
//! `--initial-cluster` configuration.

mod ids;
mod initial_cluster;
mod srv;
mod srv_clients;
pub mod v2;

pub use ids::{cluster_id, member_id};
pub use initial_cluster::{
    bootstrap_members, check_url, BootstrapError, InitialCluster, InitialClusterError,
    InitialMember, UrlError,
};
pub use srv::{
    srv_services, DnsError, DnsReason, HostAddrs, PeerScheme, QueryError, ResolveError,
    ServiceError, SrvAnswers, SrvCluster, SrvDiscovery, SrvEntry, SrvError, SrvRecord, SrvService,
};
pub use srv_clients::{client_services, insecure_endpoint, srv_clients, SrvClient};
