//! How a member with an empty data dir finds its cluster: the static `--initial-cluster`,
//! `--discovery` (etcd's v2 protocol), `--discovery-srv` (DNS), or joining a running
//! cluster with `--initial-cluster-state existing`.

use crate::config::ServerConfig;

/// What a member with an empty data dir does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Found a new cluster: its members in `--initial-cluster` form, and the token their
    /// IDs are derived with (the discovery URL when bootstrapped by `--discovery`).
    New {
        /// `name=url,...`.
        initial_cluster: String,
        /// `--initial-cluster-token` or the discovery URL.
        token: String,
    },
    /// Join a running cluster (`--initial-cluster-state existing`).
    Join,
    /// The discovered cluster is full and `--discovery-fallback proxy` is set: forward
    /// clients to the members reachable at these peer URLs.
    Proxy {
        /// The discovered members' peer URLs.
        peer_urls: Vec<String>,
    },
}

/// Decides how this member bootstraps, contacting discovery services as configured.
pub async fn plan(cfg: &ServerConfig) -> Result<Plan, String> {
    if let Some(url) = &cfg.discovery {
        return crate::discovery_v2::plan(cfg, url).await;
    }
    if let Some(domain) = &cfg.discovery_srv {
        return crate::discovery_srv::plan(cfg, domain).await;
    }
    if !cfg.is_new_cluster() {
        return Ok(Plan::Join);
    }
    Ok(Plan::New {
        initial_cluster: cfg.initial_cluster.clone(),
        token: cfg.initial_cluster_token.clone(),
    })
}
