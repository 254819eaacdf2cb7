//! `--discovery-fallback proxy`: a member that found the discovered cluster full forwards
//! its clients to the cluster's members instead of joining.

use std::future::Future;

use tokio::net::TcpListener;

/// Forwards client connections on `client` to the members behind `peer_urls` until
/// `shutdown` completes.
pub async fn run(
    _peer_urls: Vec<String>,
    _client: Vec<TcpListener>,
    _shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    Err("the discovery proxy fallback is not supported yet: use --discovery-fallback exit".into())
}
