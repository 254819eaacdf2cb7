//! `--discovery-srv <domain>` (and `--discovery-srv-name <suffix>`): the initial cluster
//! from DNS SRV records, as etcd finds it.
//!
//! This module only performs the lookups; what they mean (which records, how entries are
//! named, the errors) is decided in `keel_core::discovery::SrvDiscovery`. The cluster token
//! stays `--initial-cluster-token`, so member IDs are the ones etcd derives from the SRV
//! URLs and that token.
//!
//! Name resolution follows the system configuration: the name servers, search list and
//! options of `/etc/resolv.conf`, with `/etc/hosts` consulted first. Setting the
//! environment variable `KEEL_DNS_SERVER=<ip:port>` replaces the name servers with that
//! one server, asked over UDP and, on truncation or failure, TCP; tests use it to serve
//! their own records without touching `/etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as NetDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use keel_core::discovery::{
    DnsError, DnsReason, HostAddrs, SrvAnswers, SrvDiscovery, SrvRecord, SrvService,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::bootstrap::Plan;
use crate::config::ServerConfig;

/// The environment variable naming the one DNS server (`ip:port`) to ask instead of the
/// name servers of `/etc/resolv.conf`.
pub const DNS_SERVER_ENV: &str = "KEEL_DNS_SERVER";

/// Looks up the SRV records of `domain` and returns the cluster they name.
pub async fn plan(cfg: &ServerConfig, domain: &str) -> Result<Plan, String> {
    plan_with_server(cfg, domain, server_from_env()?).await
}

/// The DNS server `KEEL_DNS_SERVER` names, if set.
fn server_from_env() -> Result<Option<SocketAddr>, String> {
    match std::env::var(DNS_SERVER_ENV) {
        Ok(s) => {
            Ok(Some(s.parse::<SocketAddr>().map_err(|e| {
                format!("{DNS_SERVER_ENV}={s}: {e} (want ip:port)")
            })?))
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(s)) => {
            Err(format!("{DNS_SERVER_ENV}={s:?}: not an ip:port"))
        }
    }
}

/// [`plan`] asking `server` (UDP, then TCP) if given, else the system's name servers.
pub async fn plan_with_server(
    cfg: &ServerConfig,
    domain: &str,
    server: Option<SocketAddr>,
) -> Result<Plan, String> {
    let dns = Dns::new(server)?;
    let discovery = SrvDiscovery::new(
        domain,
        cfg.discovery_srv_name.as_deref().unwrap_or(""),
        &cfg.name,
        &cfg.initial_advertise_peer_urls,
    );
    let [https, http] = discovery.services();
    let answers = SrvAnswers {
        https: dns.srv(https).await,
        http: dns.srv(http).await,
    };
    let mut addrs = HostAddrs::new();
    for host in discovery.hosts_to_resolve(&answers) {
        let found = dns.ips(&host).await;
        addrs.insert(host, found);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(entropy());
    let cluster = discovery
        .initial_cluster(&answers, &addrs, &mut rng)
        .map_err(|e| format!("error setting up initial cluster: {e}"))?;
    for warning in &cluster.warnings {
        tracing::warn!(error = %warning, "failed to resolve during SRV discovery");
    }
    for entry in &cluster.entries {
        tracing::info!(node = %format!("{}={}", entry.name, entry.url), "got bootstrap from DNS for etcd-server");
    }
    Ok(Plan::New {
        initial_cluster: cluster.to_string(),
        token: cfg.initial_cluster_token.clone(),
    })
}

/// The resolver and the server name its errors report (`ip:port`, as Go's do).
pub struct Dns {
    resolver: TokioResolver,
    server: String,
}

impl Dns {
    /// The resolver of the system configuration, or of `KEEL_DNS_SERVER` when set.
    pub fn from_env() -> Result<Self, String> {
        Dns::new(server_from_env()?)
    }

    fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let (config, mut options) = match server {
            Some(addr) => {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                let ns = NameServerConfig::new(addr.ip(), true, connections);
                (
                    ResolverConfig::from_name_servers(vec![ns]),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("--discovery-srv: reading /etc/resolv.conf: {e}"))?,
        };
        // Both families, A first: the core picks an address the way Go's resolver does.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.try_tcp_on_error = true;
        let server = config
            .name_servers()
            .first()
            .map(|ns| {
                let port = ns.connections.first().map_or(53, |c| c.port);
                SocketAddr::new(ns.ip, port).to_string()
            })
            .unwrap_or_else(|| "127.0.0.1:53".to_owned());
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| format!("--discovery-srv: DNS resolver: {e}"))?;
        Ok(Self { resolver, server })
    }

    /// The records of a SRV service, in answer order.
    pub async fn srv(&self, service: &SrvService) -> Result<Vec<SrvRecord>, DnsError> {
        let name = &service.query_name;
        let lookup = self
            .resolver
            .srv_lookup(name.as_str())
            .await
            .map_err(|e| self.error(name, &e))?;
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvRecord {
                    target: srv.target.to_string(),
                    port: srv.port,
                    priority: srv.priority,
                    weight: srv.weight,
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            // Only CNAMEs or other types: Go's resolver reports no such host.
            return Err(self.dns_error(name, DnsReason::NoSuchHost));
        }
        Ok(records)
    }

    /// The addresses of `host` (A and AAAA), `/etc/hosts` first.
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let lookup = self
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|e| self.error(host, &e))?;
        Ok(lookup.iter().collect())
    }

    fn error(&self, name: &str, e: &NetError) -> DnsError {
        let reason = match e {
            e if e.is_no_records_found() => DnsReason::NoSuchHost,
            NetError::Timeout => DnsReason::Timeout,
            NetError::Dns(NetDnsError::ResponseCode(ResponseCode::ServFail)) => {
                DnsReason::ServerMisbehaving
            }
            e => DnsReason::Other(e.to_string()),
        };
        self.dns_error(name, reason)
    }

    fn dns_error(&self, name: &str, reason: DnsReason) -> DnsError {
        DnsError {
            name: name.to_owned(),
            server: self.server.clone(),
            reason,
        }
    }
}

/// A seed for the weighted order of equal-priority records; it only needs to differ
/// between runs, as Go's does.
pub fn entropy() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
