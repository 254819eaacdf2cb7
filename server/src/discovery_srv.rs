//! `--discovery-srv <domain>`: the initial cluster from DNS SRV records.

use crate::bootstrap::Plan;
use crate::config::ServerConfig;

/// Looks up the SRV records of `domain` and returns the cluster they name.
pub async fn plan(_cfg: &ServerConfig, _domain: &str) -> Result<Plan, String> {
    Err("--discovery-srv is not supported yet: use --initial-cluster".into())
}
