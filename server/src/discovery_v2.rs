//! `--discovery <url>`: etcd 3.4's v2 discovery protocol, driven over HTTP.
//!
//! The handshake itself (which requests, what the answers mean, when to back off, the
//! error texts) is `keel_core::discovery::v2`; this module makes its requests with an
//! HTTP client (http and https, through `--discovery-proxy` when set), runs its timers,
//! and turns its outcome into a [`Plan`] with etcd's operator messages.

use std::time::{Duration, Instant};

use keel_core::discovery::v2::{
    Action, DiscoveryError, Method, Purpose, Reply, Request, V2Discovery, DIAL_TIMEOUT_MS,
};
use keel_core::raft::Time;

use crate::bootstrap::Plan;
use crate::config::{DiscoveryFallback, ServerConfig};

/// Largest response body read from the discovery service: a directory listing of a
/// few members is well under a kilobyte, so anything near this is not a v2 keys API.
const MAX_BODY: usize = 4 << 20;

/// Runs the discovery handshake against `url` and returns the cluster it found.
pub async fn plan(cfg: &ServerConfig, url: &str) -> Result<Plan, String> {
    let mut machine = V2Discovery::new(url, &cfg.name, &cfg.initial_advertise_peer_urls)
        .map_err(|e| join_failed(&e))?;
    let client = http_client(cfg.discovery_proxy.as_deref())?;
    tracing::info!(
        discovery_url = url,
        member_id = %format!("{:x}", machine.member_id()),
        registration = machine.registration(),
        "bootstrapping with the discovery service"
    );
    let epoch = Instant::now();
    let now = || Time(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut reported = None;
    let mut step = machine.start();
    loop {
        let action = match step {
            Ok(a) => a,
            Err(e) => return on_error(cfg, url, e),
        };
        step = match action {
            Action::Send(req) => {
                if req.purpose == Purpose::WaitNodes && machine.progress() != reported {
                    reported = machine.progress();
                    if let Some((found, size)) = reported {
                        tracing::info!(
                            discovery_url = url,
                            found_peers = found,
                            needed_peers = size.saturating_sub(found as u64),
                            "found peers from discovery server; waiting for more"
                        );
                    }
                }
                let reply = execute(&client, &req).await;
                machine.on_reply(now(), reply)
            }
            Action::RetryAt {
                at,
                backoff_ms,
                reason,
                cause,
            } => {
                tracing::warn!(
                    url,
                    reason,
                    error = %cause,
                    backoff = ?Duration::from_millis(backoff_ms),
                    "retry connecting to discovery service"
                );
                let deadline = tokio::time::Instant::from_std(epoch) + Duration::from_millis(at.0);
                tokio::time::sleep_until(deadline).await;
                machine.on_timer(now())
            }
            Action::Done(found) => {
                tracing::info!(
                    discovery_url = url,
                    initial_cluster = %found.initial_cluster,
                    "found all needed peers from discovery server"
                );
                return Ok(Plan::New {
                    initial_cluster: found.initial_cluster,
                    token: found.token,
                });
            }
        };
    }
}

/// etcd's one-line error for every discovery failure: `DiscoveryError{Op: "join"}`.
fn join_failed(e: &DiscoveryError) -> String {
    format!("failed to join discovery cluster ({e})")
}

/// A failed handshake: a full cluster may still become a proxy; otherwise the advice
/// etcd's `etcdmain` logs for the error, and the error.
fn on_error(cfg: &ServerConfig, url: &str, e: DiscoveryError) -> Result<Plan, String> {
    match &e {
        DiscoveryError::FullCluster(full) if cfg.discovery_fallback == DiscoveryFallback::Proxy => {
            tracing::info!(
                discovery_url = url,
                cluster = %full,
                "discovery cluster is full, falling back to proxy"
            );
            let peer_urls = full.peer_urls().map_err(|e| join_failed(&e))?;
            return Ok(Plan::Proxy { peer_urls });
        }
        DiscoveryError::DuplicateId => {
            tracing::error!(name = %cfg.name, discovery_token = url, "member has been registered with discovery service");
            tracing::error!(data_dir = %cfg.data_dir.display(), "but could not find valid cluster configuration");
            tracing::warn!("check data dir if previous bootstrap succeeded");
            tracing::warn!("or use a new discovery token if previous bootstrap failed");
        }
        DiscoveryError::DuplicateName { cluster } => {
            tracing::error!(discovery_token = url, registered = %cluster, "member with duplicated name has already been registered");
            tracing::warn!("cURL the discovery token URL for details");
            tracing::warn!(
                "do not reuse discovery token; generate a new one to bootstrap a cluster"
            );
        }
        _ => {
            tracing::warn!(
                discovery_token = url,
                "failed to bootstrap; discovery token was already used"
            );
            tracing::warn!(
                "do not reuse discovery token; generate a new one to bootstrap a cluster"
            );
        }
    }
    Err(join_failed(&e))
}

/// The client etcd's discovery uses: a 30 s dial timeout, and either exactly the
/// `--discovery-proxy` or no proxy at all (etcd replaces the environment's proxy
/// settings with its flag, so `HTTP_PROXY` alone does not apply).
fn http_client(proxy: Option<&str>) -> Result<reqwest::Client, String> {
    let mut builder =
        reqwest::Client::builder().connect_timeout(Duration::from_millis(DIAL_TIMEOUT_MS));
    builder = match proxy.filter(|p| !p.is_empty()) {
        None => builder.no_proxy(),
        Some(p) => {
            let with_scheme = proxy_url(p);
            let proxy = reqwest::Proxy::all(&with_scheme)
                .map_err(|e| format!("invalid proxy address {p:?}: {e}"))?;
            tracing::info!(proxy_url = %with_scheme, "running proxy with discovery");
            builder.proxy(proxy)
        }
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the discovery HTTP client: {e}"))
}

/// etcd's reading of `--discovery-proxy`: a proxy given without an http(s) scheme
/// (`host:3128`) means http.
fn proxy_url(p: &str) -> String {
    if p.starts_with("http://") || p.starts_with("https://") {
        p.to_owned()
    } else {
        format!("http://{p}")
    }
}

/// Makes one request of the handshake and reports what came of it.
async fn execute(client: &reqwest::Client, req: &Request) -> Reply {
    tracing::debug!(method = ?req.method, url = %req.url, purpose = ?req.purpose, "discovery request");
    let mut builder = match req.method {
        Method::Get => client.get(&req.url),
        Method::Put => client
            .put(&req.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(req.form.clone().unwrap_or_default()),
    };
    if let Some(ms) = req.timeout_ms {
        builder = builder.timeout(Duration::from_millis(ms));
    }
    let mut resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    let status = resp.status().as_u16();
    let etcd_index = resp
        .headers()
        .get("X-Etcd-Index")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Reply::Unreachable(format!(
                        "{}: response body exceeds {MAX_BODY} bytes",
                        req.url
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return failure(&e),
        }
    }
    Reply::Http {
        status,
        etcd_index,
        body,
    }
}

fn failure(e: &reqwest::Error) -> Reply {
    if e.is_timeout() {
        return Reply::TimedOut;
    }
    // reqwest's own text is terse ("error sending request"); the causes say what broke.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    Reply::Unreachable(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_proxy_without_scheme_means_http() {
        assert_eq!(proxy_url("127.0.0.1:3128"), "http://127.0.0.1:3128");
        assert_eq!(proxy_url("proxy.example:80"), "http://proxy.example:80");
        assert_eq!(proxy_url("https://p:1"), "https://p:1");
        assert!(http_client(Some("127.0.0.1:3128")).is_ok());
        assert!(http_client(None).is_ok());
    }
}
