//! `--discovery <url>`: etcd 3.4's v2 discovery protocol, driven over HTTP.

use crate::bootstrap::Plan;
use crate::config::ServerConfig;

/// Runs the discovery handshake against `url` and returns the cluster it found.
pub async fn plan(_cfg: &ServerConfig, _url: &str) -> Result<Plan, String> {
    Err("--discovery is not supported yet: use --initial-cluster".into())
}
