//! `--discovery-srv <domain>`: the initial cluster from DNS SRV answers, derived as etcd
//! derives it (`pkg/srv.GetCluster` and `embed.Config.GetDNSClusterNames`).
//!
//! The driver performs the lookups; this module decides everything else. The steps:
//! 1. [`SrvDiscovery::services`]: look up both SRV names, `_etcd-server-ssl[-<name>]._tcp.<domain>`
//!    (https peers) and `_etcd-server[-<name>]._tcp.<domain>` (http peers).
//! 2. [`SrvDiscovery::hosts_to_resolve`]: resolve the host names of this member's advertised
//!    peer URLs and of every SRV target (IP literals need no lookup).
//! 3. [`SrvDiscovery::initial_cluster`]: an SRV entry whose target address equals the address
//!    of one of this member's advertised peer URLs is named with this member's `--name`;
//!    the others get temporary names `0`, `1`, ... (counted per service, as etcd does). The
//!    URLs keep the target's name, not its address, so member IDs match etcd's.
//!
//! Both services are combined (https entries first) and discovery fails only when neither
//! yields an entry. That is etcd's behaviour since the fix for etcd-io/etcd#11321
//! (3.5 and later). etcd 3.4.23 (checked against the binary) fails whenever
//! `_etcd-server-ssl` has no usable entry and otherwise ignores `_etcd-server` entirely,
//! so it never bootstraps from http records; keel does not copy that bug.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;

use super::initial_cluster::check_url;

/// The URL scheme under which a SRV service names its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerScheme {
    /// `_etcd-server-ssl`: TLS peers.
    Https,
    /// `_etcd-server`: plain peers.
    Http,
}

impl PeerScheme {
    /// `"https"` or `"http"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerScheme::Https => "https",
            PeerScheme::Http => "http",
        }
    }
}

/// One SRV name to look up and the scheme of the peers it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvService {
    /// Peer URL scheme of the entries this service yields.
    pub scheme: PeerScheme,
    /// The service without underscore, `etcd-server-ssl-<name>`, as etcd's messages name it.
    pub service: String,
    /// The name to query for SRV records, `_<service>._tcp.<domain>`.
    pub query_name: String,
}

/// The SRV names etcd queries for `--discovery-srv <domain>` and `--discovery-srv-name
/// <service_name>` (empty: no suffix): https first, then http.
pub fn srv_services(domain: &str, service_name: &str) -> [SrvService; 2] {
    services_named("etcd-server", domain, service_name)
}

/// etcd's `srv.GetSRVService` for `base` (`etcd-server`, `etcd-client`): the https
/// service `<base>-ssl[-<service_name>]`, then the http one `<base>[-<service_name>]`.
pub(super) fn services_named(base: &str, domain: &str, service_name: &str) -> [SrvService; 2] {
    let suffix = if service_name.is_empty() {
        String::new()
    } else {
        format!("-{service_name}")
    };
    [
        (PeerScheme::Https, format!("{base}-ssl")),
        (PeerScheme::Http, base.to_owned()),
    ]
    .map(|(scheme, base)| {
        let service = format!("{base}{suffix}");
        SrvService {
            scheme,
            query_name: format!("_{service}._tcp.{domain}"),
            service,
        }
    })
}

/// One SRV answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// The target host name as the answer gives it, usually with a trailing dot.
    pub target: String,
    /// The target port.
    pub port: u16,
    /// Lower is tried first.
    pub priority: u16,
    /// Relative weight among records of equal priority.
    pub weight: u16,
}

/// Why a DNS lookup failed, worded as Go's resolver words it (etcd passes its text on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsReason {
    /// NXDOMAIN, or no records of the asked type.
    #[error("no such host")]
    NoSuchHost,
    /// No answer in time.
    #[error("i/o timeout")]
    Timeout,
    /// SERVFAIL or an unusable answer.
    #[error("server misbehaving")]
    ServerMisbehaving,
    /// Anything else, in the resolver's words.
    #[error("{0}")]
    Other(String),
}

/// A failed DNS lookup: `lookup <name> on <server>: <reason>`, as Go's `net.DNSError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lookup {name} on {server}: {reason}")]
pub struct DnsError {
    /// The name looked up, exactly as asked.
    pub name: String,
    /// The name server asked, `ip:port`.
    pub server: String,
    /// What went wrong.
    pub reason: DnsReason,
}

/// The driver's answers to the two SRV queries of [`SrvDiscovery::services`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswers {
    /// Records of the https service (`_etcd-server-ssl...`), in answer order.
    pub https: Result<Vec<SrvRecord>, DnsError>,
    /// Records of the http service (`_etcd-server...`), in answer order.
    pub http: Result<Vec<SrvRecord>, DnsError>,
}

impl SrvAnswers {
    pub(super) fn get(&self, scheme: PeerScheme) -> &Result<Vec<SrvRecord>, DnsError> {
        match scheme {
            PeerScheme::Https => &self.https,
            PeerScheme::Http => &self.http,
        }
    }
}

/// The driver's address lookups: host name (as [`SrvDiscovery::hosts_to_resolve`] gave it)
/// to its addresses in resolver order, A and AAAA records together.
pub type HostAddrs = BTreeMap<String, Result<Vec<IpAddr>, DnsError>>;

/// Why a host name gave no address to match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed.
    #[error("{0}")]
    Dns(#[from] DnsError),
    /// The lookup succeeded without an address (Go's `AddrError`).
    #[error("address {0}: no suitable address found")]
    NoAddress(String),
    /// An advertised peer URL is not `scheme://host:port`.
    #[error("{0}")]
    BadUrl(String),
}

/// Why one SRV service gave no entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// One of this member's advertised peer URLs did not resolve. etcd reports this bare,
    /// before querying SRV records at all.
    #[error("{0}")]
    AdvertiseUrl(ResolveError),
    /// The SRV query failed, or none of its entries was usable.
    #[error("error querying DNS SRV records for _{service} {cause}")]
    Query {
        /// The service, e.g. `etcd-server-ssl`.
        service: String,
        /// The last failure among the service's entries, or of the query itself.
        cause: QueryError,
    },
}

/// The failure reported for a SRV service that yielded no entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The SRV lookup failed, or a target did not resolve.
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    /// A target is this member, but under the other scheme than it advertises.
    #[error(
        "bootstrap at {url} from DNS for {service} has scheme mismatch with expected peer {expected}"
    )]
    SchemeMismatch {
        /// The URL the SRV record gives.
        url: String,
        /// The service that gave it.
        service: String,
        /// This member's advertised URL at the same address.
        expected: String,
    },
}

/// Why SRV discovery found no initial cluster for this member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrvError {
    /// Neither service gave an entry; the per-service failures, joined as etcd's
    /// `multierr` joins them.
    #[error("{}", join_errors(.0))]
    NoEntries(Vec<ServiceError>),
    /// Entries were found but none resolves to this member's advertised peer URLs.
    #[error("cannot find local etcd member {0:?} in SRV records")]
    NotListed(String),
}

fn join_errors(errors: &[ServiceError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One `name=url` entry of the discovered initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvEntry {
    /// This member's `--name` or a temporary name (`0`, `1`, ...).
    pub name: String,
    /// `scheme://target:port`, the target without its trailing dot.
    pub url: String,
}

/// The discovered initial cluster, in etcd's order: https entries, then http entries, each
/// in SRV order (priority, then weighted random).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvCluster {
    /// The entries. A name may repeat (a member with several peer URLs).
    pub entries: Vec<SrvEntry>,
    /// Failures of a service that did not prevent discovery, for the log.
    pub warnings: Vec<ServiceError>,
}

impl fmt::Display for SrvCluster {
    /// The `--initial-cluster` form, `name=url,name=url`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", e.name, e.url)?;
        }
        Ok(())
    }
}

/// DNS SRV bootstrap for one member: what to look up, and the cluster the answers name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvDiscovery {
    name: String,
    advertise_peer_urls: Vec<String>,
    services: [SrvService; 2],
}

impl SrvDiscovery {
    /// Discovery under `domain` with the `--discovery-srv-name` suffix `service_name`
    /// (empty: none), for the member `name` advertising `advertise_peer_urls`.
    pub fn new(
        domain: &str,
        service_name: &str,
        name: &str,
        advertise_peer_urls: &[String],
    ) -> Self {
        Self {
            name: name.to_owned(),
            advertise_peer_urls: advertise_peer_urls.to_vec(),
            services: srv_services(domain, service_name),
        }
    }

    /// The SRV names to query: https, then http.
    pub fn services(&self) -> &[SrvService; 2] {
        &self.services
    }

    /// Host names whose addresses [`Self::initial_cluster`] needs: those of the advertised
    /// peer URLs, then the SRV targets (trailing dot kept, looked up as given). IP literals
    /// are left out; each name appears once.
    pub fn hosts_to_resolve(&self, answers: &SrvAnswers) -> Vec<String> {
        let advertised = self
            .advertise_peer_urls
            .iter()
            .filter_map(|u| split_url(u).map(|(_, host, _)| host.to_owned()));
        let targets = [&answers.https, &answers.http]
            .into_iter()
            .filter_map(|a| a.as_ref().ok())
            .flatten()
            .map(|r| r.target.clone());
        let mut out: Vec<String> = Vec::new();
        for host in advertised.chain(targets) {
            if host.parse::<IpAddr>().is_err() && !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    /// The initial cluster the answers name, or why there is none for this member.
    /// `rng` orders records of equal priority by weight, as Go's resolver does.
    pub fn initial_cluster(
        &self,
        answers: &SrvAnswers,
        addrs: &HostAddrs,
        rng: &mut impl RngCore,
    ) -> Result<SrvCluster, SrvError> {
        let mut entries = Vec::new();
        let mut failures = Vec::new();
        for service in &self.services {
            match self.service_entries(service, answers.get(service.scheme), addrs, rng) {
                Ok(found) => entries.extend(found),
                Err(e) => failures.push(e),
            }
        }
        if entries.is_empty() && !failures.is_empty() {
            return Err(SrvError::NoEntries(failures));
        }
        if !entries.iter().any(|e| e.name == self.name) {
            return Err(SrvError::NotListed(self.name.clone()));
        }
        Ok(SrvCluster {
            entries,
            warnings: failures,
        })
    }

    /// etcd's `srv.GetCluster` for one service.
    fn service_entries(
        &self,
        service: &SrvService,
        answer: &Result<Vec<SrvRecord>, DnsError>,
        addrs: &HostAddrs,
        rng: &mut impl RngCore,
    ) -> Result<Vec<SrvEntry>, ServiceError> {
        // Advertised URLs by address; a later URL at the same address wins, as in etcd's map.
        let mut own: BTreeMap<SocketAddr, &str> = BTreeMap::new();
        for url in &self.advertise_peer_urls {
            let addr = advertised_addr(url, addrs).map_err(ServiceError::AdvertiseUrl)?;
            own.insert(addr, url);
        }
        let query_failed = |cause: QueryError| ServiceError::Query {
            service: service.service.clone(),
            cause,
        };
        let mut records = answer
            .clone()
            .map_err(|e| query_failed(ResolveError::Dns(e).into()))?;
        order_records(&mut records, rng);

        let mut entries = Vec::new();
        let mut last_error = None;
        let mut temp_name = 0u32;
        for record in &records {
            let addr = match resolve(&record.target, addrs) {
                Ok(ip) => SocketAddr::new(ip, record.port),
                Err(e) => {
                    last_error = Some(QueryError::Resolve(e));
                    continue;
                }
            };
            let own_url = own.get(&addr).copied();
            let name = match own_url {
                Some(_) => self.name.clone(),
                None => {
                    let n = temp_name.to_string();
                    temp_name += 1;
                    n
                }
            };
            let host = record.target.strip_suffix('.').unwrap_or(&record.target);
            let url = format!(
                "{}://{}",
                service.scheme.as_str(),
                join_host_port(host, record.port)
            );
            match own_url {
                Some(expected) if scheme_of(expected) != Some(service.scheme) => {
                    last_error = Some(QueryError::SchemeMismatch {
                        url,
                        service: service.service.clone(),
                        expected: expected.to_owned(),
                    });
                }
                _ => entries.push(SrvEntry { name, url }),
            }
        }
        match (entries.is_empty(), last_error) {
            (true, Some(cause)) => Err(query_failed(cause)),
            _ => Ok(entries),
        }
    }
}

/// Go's `net.LookupSRV` order (RFC 2782): by priority, then within a priority a weighted
/// random permutation. Records of weight 0 keep their order after those drawn by weight.
pub(super) fn order_records(records: &mut [SrvRecord], rng: &mut impl RngCore) {
    records.sort_by_key(|r| (r.priority, r.weight));
    let mut start = 0;
    while start < records.len() {
        let priority = records[start].priority;
        let end = records[start..]
            .iter()
            .position(|r| r.priority != priority)
            .map_or(records.len(), |n| start + n);
        shuffle_by_weight(&mut records[start..end], rng);
        start = end;
    }
}

/// Go's `byPriorityWeight.shuffleByWeight`.
fn shuffle_by_weight(mut records: &mut [SrvRecord], rng: &mut impl RngCore) {
    let mut sum: u64 = records.iter().map(|r| u64::from(r.weight)).sum();
    while sum > 0 && records.len() > 1 {
        let n = below(rng, sum + 1);
        let mut s = 0;
        for i in 0..records.len() {
            s += u64::from(records[i].weight);
            if s >= n {
                records.swap(0, i);
                break;
            }
        }
        sum -= u64::from(records[0].weight);
        records = &mut records[1..];
    }
}

/// A uniform draw from `0..n` (`n > 0`), by widening multiplication; the bias is below
/// 2^-40 for the sums SRV weights can reach.
fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// The address etcd matches an advertised peer URL on (`net.ResolveTCPAddr` of its host).
fn advertised_addr(url: &str, addrs: &HostAddrs) -> Result<SocketAddr, ResolveError> {
    let (_, host, port) = split_url(url).ok_or_else(|| {
        ResolveError::BadUrl(match check_url(url) {
            Err(e) => e.to_string(),
            Ok(()) => format!("URL address does not have the form \"host:port\": {url}"),
        })
    })?;
    Ok(SocketAddr::new(resolve(host, addrs)?, port))
}

/// The address Go's `ResolveTCPAddr` picks for a host: a literal as is, else the first
/// IPv4 address of the lookup, else its first address.
fn resolve(host: &str, addrs: &HostAddrs) -> Result<IpAddr, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_canonical());
    }
    let found = match addrs.get(host) {
        Some(Ok(found)) => found,
        Some(Err(e)) => return Err(ResolveError::Dns(e.clone())),
        None => return Err(ResolveError::NoAddress(host.to_owned())),
    };
    found
        .iter()
        .map(|ip| ip.to_canonical())
        .find(IpAddr::is_ipv4)
        .or_else(|| found.first().map(|ip| ip.to_canonical()))
        .ok_or_else(|| ResolveError::NoAddress(host.to_owned()))
}

/// Splits `scheme://host:port` (host unbracketed), or None if it is not that form.
fn split_url(url: &str) -> Option<(PeerScheme, &str, u16)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (PeerScheme::Https, rest)
    } else {
        (PeerScheme::Http, url.strip_prefix("http://")?)
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => rest.rsplit_once(':')?,
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((scheme, host, port.parse().ok()?))
}

fn scheme_of(url: &str) -> Option<PeerScheme> {
    split_url(url).map(|(scheme, _, _)| scheme)
}

/// Go's `net.JoinHostPort`: brackets a host that contains a colon.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{bootstrap_members, member_id};
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    const SERVER: &str = "127.0.0.1:53";

    fn srv(target: &str, port: u16) -> SrvRecord {
        SrvRecord {
            target: target.to_owned(),
            port,
            priority: 0,
            weight: 0,
        }
    }

    fn nx(name: &str) -> DnsError {
        DnsError {
            name: name.to_owned(),
            server: SERVER.to_owned(),
            reason: DnsReason::NoSuchHost,
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|u| (*u).to_owned()).collect()
    }

    /// m1..m3.keel.test on 127.0.0.1 ports 12380, 22380, 32380.
    fn three() -> Vec<SrvRecord> {
        vec![
            srv("m1.keel.test.", 12380),
            srv("m2.keel.test.", 22380),
            srv("m3.keel.test.", 32380),
        ]
    }

    fn loopback_hosts() -> HostAddrs {
        ["m1.keel.test.", "m2.keel.test.", "m3.keel.test."]
            .into_iter()
            .map(|h| (h.to_owned(), Ok(vec![v4(1)])))
            .collect()
    }

    fn http_only(records: Vec<SrvRecord>) -> SrvAnswers {
        SrvAnswers {
            https: Err(nx("_etcd-server-ssl._tcp.keel.test")),
            http: Ok(records),
        }
    }

    fn https_only(records: Vec<SrvRecord>) -> SrvAnswers {
        SrvAnswers {
            https: Ok(records),
            http: Err(nx("_etcd-server._tcp.keel.test")),
        }
    }

    fn run(
        name: &str,
        advertise: &[&str],
        answers: &SrvAnswers,
        addrs: &HostAddrs,
    ) -> Result<SrvCluster, SrvError> {
        SrvDiscovery::new("keel.test", "", name, &urls(advertise)).initial_cluster(
            answers,
            addrs,
            &mut ChaCha8Rng::seed_from_u64(7),
        )
    }

    #[test]
    fn service_names_with_and_without_suffix() {
        let names = |s: &str| srv_services("keel.test", s).map(|s| (s.scheme, s.query_name));
        assert_eq!(
            names(""),
            [
                (
                    PeerScheme::Https,
                    "_etcd-server-ssl._tcp.keel.test".to_owned()
                ),
                (PeerScheme::Http, "_etcd-server._tcp.keel.test".to_owned()),
            ]
        );
        assert_eq!(
            names("foo"),
            [
                (
                    PeerScheme::Https,
                    "_etcd-server-ssl-foo._tcp.keel.test".to_owned()
                ),
                (
                    PeerScheme::Http,
                    "_etcd-server-foo._tcp.keel.test".to_owned()
                ),
            ]
        );
        assert_eq!(srv_services("d", "foo")[0].service, "etcd-server-ssl-foo");
    }

    #[test]
    fn http_records_name_own_entry_and_number_the_others() {
        let c = run(
            "m2",
            &["http://127.0.0.1:22380"],
            &http_only(three()),
            &loopback_hosts(),
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "0=http://m1.keel.test:12380,m2=http://m2.keel.test:22380,1=http://m3.keel.test:32380"
        );
        assert_eq!(
            c.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.keel.test on 127.0.0.1:53: no such host"]
        );
    }

    /// Checked against etcd 3.4.23 with these records and the default token: the member
    /// and cluster IDs it logged.
    #[test]
    fn https_records_give_etcds_member_ids() {
        let c = run(
            "m1",
            &["https://127.0.0.1:12380"],
            &https_only(three()),
            &loopback_hosts(),
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "m1=https://m1.keel.test:12380,0=https://m2.keel.test:22380,1=https://m3.keel.test:32380"
        );
        let own = urls(&["https://m1.keel.test:12380"]);
        let members = bootstrap_members(&c.to_string(), "m1", &own, "etcd-cluster").unwrap();
        let ids: Vec<String> = members.iter().map(|m| format!("{:x}", m.id)).collect();
        assert_eq!(
            ids,
            ["2cfd0928adb3c38a", "8d372f31946ef5c0", "db08edfc12eb1ba6"]
        );
        assert_eq!(
            format!("{:x}", member_id(&own, "etcd-cluster", None)),
            "2cfd0928adb3c38a"
        );
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        assert_eq!(
            format!("{:x}", crate::discovery::cluster_id(&ids)),
            "1b84423aff4f7a02"
        );
    }

    #[test]
    fn both_services_combine_https_first_with_temp_names_per_service() {
        let answers = SrvAnswers {
            https: Ok(vec![
                srv("m1.keel.test.", 12380),
                srv("m2.keel.test.", 22380),
            ]),
            http: Ok(vec![srv("m3.keel.test.", 32380)]),
        };
        let c = run(
            "m1",
            &["https://127.0.0.1:12380"],
            &answers,
            &loopback_hosts(),
        )
        .unwrap();
        // The counter restarts per service, so m2 and m3 both become "0": one member with
        // two URLs, exactly what etcd's URLsMap makes of it.
        assert_eq!(
            c.to_string(),
            "m1=https://m1.keel.test:12380,0=https://m2.keel.test:22380,0=http://m3.keel.test:32380"
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn suffix_queries_suffixed_records() {
        let d = SrvDiscovery::new("keel.test", "foo", "m1", &urls(&["http://127.0.0.1:12380"]));
        assert_eq!(
            d.services()[1].query_name,
            "_etcd-server-foo._tcp.keel.test"
        );
        let answers = SrvAnswers {
            https: Err(nx("_etcd-server-ssl-foo._tcp.keel.test")),
            http: Err(nx("_etcd-server-foo._tcp.keel.test")),
        };
        let e = d
            .initial_cluster(
                &answers,
                &loopback_hosts(),
                &mut ChaCha8Rng::seed_from_u64(1),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "error querying DNS SRV records for _etcd-server-ssl-foo lookup _etcd-server-ssl-foo._tcp.keel.test on 127.0.0.1:53: no such host; \
             error querying DNS SRV records for _etcd-server-foo lookup _etcd-server-foo._tcp.keel.test on 127.0.0.1:53: no such host"
        );
    }

    #[test]
    fn no_records_at_all() {
        let answers = SrvAnswers {
            https: Err(nx("_etcd-server-ssl._tcp.keel.test")),
            http: Err(nx("_etcd-server._tcp.keel.test")),
        };
        let e = run(
            "m1",
            &["http://127.0.0.1:12380"],
            &answers,
            &HostAddrs::new(),
        )
        .unwrap_err();
        assert!(matches!(&e, SrvError::NoEntries(v) if v.len() == 2));
        assert!(e.to_string().starts_with(
            "error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.keel.test on 127.0.0.1:53: no such host; "
        ));
        // Empty answers without an error name nobody, this member included.
        let empty = SrvAnswers {
            https: Ok(vec![]),
            http: Ok(vec![]),
        };
        assert_eq!(
            run("m1", &["http://127.0.0.1:12380"], &empty, &HostAddrs::new()),
            Err(SrvError::NotListed("m1".to_owned()))
        );
    }

    #[test]
    fn own_url_absent_is_etcds_error() {
        let e = run(
            "m4",
            &["http://127.0.0.1:42380"],
            &http_only(three()),
            &loopback_hosts(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot find local etcd member \"m4\" in SRV records"
        );
        // Same host, other address: no match either.
        let e = run(
            "m1",
            &["http://127.0.0.2:12380"],
            &http_only(three()),
            &loopback_hosts(),
        )
        .unwrap_err();
        assert_eq!(e, SrvError::NotListed("m1".to_owned()));
    }

    #[test]
    fn own_url_by_host_name_matches_by_address() {
        let mut addrs = loopback_hosts();
        addrs.insert("node-a.example".to_owned(), Ok(vec![v4(1)]));
        let d = SrvDiscovery::new(
            "keel.test",
            "",
            "a",
            &urls(&["http://node-a.example:12380"]),
        );
        let answers = http_only(three());
        assert_eq!(
            d.hosts_to_resolve(&answers),
            [
                "node-a.example",
                "m1.keel.test.",
                "m2.keel.test.",
                "m3.keel.test."
            ]
        );
        let c = d
            .initial_cluster(&answers, &addrs, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        assert_eq!(c.entries[0].name, "a");
        assert_eq!(c.entries[0].url, "http://m1.keel.test:12380");
    }

    #[test]
    fn several_advertised_urls_make_one_member() {
        let c = run(
            "m1",
            &["http://127.0.0.1:12380", "http://127.0.0.1:22380"],
            &http_only(three()),
            &loopback_hosts(),
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "m1=http://m1.keel.test:12380,m1=http://m2.keel.test:22380,0=http://m3.keel.test:32380"
        );
    }

    #[test]
    fn unresolvable_target_is_skipped_unless_nothing_is_left() {
        let mut addrs = loopback_hosts();
        addrs.insert("m2.keel.test.".to_owned(), Err(nx("m2.keel.test.")));
        let c = run(
            "m1",
            &["http://127.0.0.1:12380"],
            &http_only(three()),
            &addrs,
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "m1=http://m1.keel.test:12380,0=http://m3.keel.test:32380"
        );

        let only_bad = http_only(vec![srv("m2.keel.test.", 22380)]);
        let e = run("m1", &["http://127.0.0.1:12380"], &only_bad, &addrs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.keel.test on 127.0.0.1:53: no such host; \
             error querying DNS SRV records for _etcd-server lookup m2.keel.test. on 127.0.0.1:53: no such host"
        );
        // A lookup with no address at all.
        addrs.insert("m2.keel.test.".to_owned(), Ok(vec![]));
        let e = run("m1", &["http://127.0.0.1:12380"], &only_bad, &addrs).unwrap_err();
        assert!(e
            .to_string()
            .ends_with("_etcd-server address m2.keel.test.: no suitable address found"));
    }

    #[test]
    fn advertised_host_that_does_not_resolve() {
        let mut addrs = loopback_hosts();
        addrs.insert("nohost.keel.test".to_owned(), Err(nx("nohost.keel.test")));
        let e = run(
            "m1",
            &["http://nohost.keel.test:12380"],
            &http_only(three()),
            &addrs,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "lookup nohost.keel.test on 127.0.0.1:53: no such host; lookup nohost.keel.test on 127.0.0.1:53: no such host"
        );
    }

    #[test]
    fn scheme_mismatch() {
        // The only record is this member under https while it advertises http.
        let e = run(
            "m1",
            &["http://127.0.0.1:12380"],
            &https_only(vec![srv("m1.keel.test.", 12380)]),
            &loopback_hosts(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "error querying DNS SRV records for _etcd-server-ssl bootstrap at https://m1.keel.test:12380 from DNS for etcd-server-ssl has scheme mismatch with expected peer http://127.0.0.1:12380; \
             error querying DNS SRV records for _etcd-server lookup _etcd-server._tcp.keel.test on 127.0.0.1:53: no such host"
        );
        // With other records the mismatching one is dropped silently: not listed.
        let e = run(
            "m1",
            &["http://127.0.0.1:12380"],
            &https_only(three()),
            &loopback_hosts(),
        )
        .unwrap_err();
        assert_eq!(e, SrvError::NotListed("m1".to_owned()));
    }

    #[test]
    fn ipv6_targets_and_ipv4_preference() {
        let ip6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let answers = https_only(vec![
            srv("m1.keel.test.", 12380),
            srv("m2.keel.test.", 22380),
        ]);
        let addrs: HostAddrs = [
            ("m1.keel.test.".to_owned(), Ok(vec![ip6])),
            ("m2.keel.test.".to_owned(), Ok(vec![ip6, v4(1)])),
        ]
        .into_iter()
        .collect();
        // An AAAA-only target matches a bracketed advertise URL.
        let c = run("m1", &["https://[::1]:12380"], &answers, &addrs).unwrap();
        assert_eq!(
            c.to_string(),
            "m1=https://m1.keel.test:12380,0=https://m2.keel.test:22380"
        );
        // A target with A and AAAA resolves to IPv4, as in Go: [::1] does not match.
        let e = run("m2", &["https://[::1]:22380"], &answers, &addrs).unwrap_err();
        assert_eq!(e, SrvError::NotListed("m2".to_owned()));
        // A literal IPv6 target is bracketed in the URL.
        let c = run(
            "m1",
            &["https://[::1]:12380"],
            &https_only(vec![srv("::1", 12380)]),
            &HostAddrs::new(),
        )
        .unwrap();
        assert_eq!(c.to_string(), "m1=https://[::1]:12380");
    }

    #[test]
    fn trailing_dots_are_trimmed_once_and_names_resolved_as_given() {
        let answers = http_only(vec![
            srv("m1.keel.test", 12380),
            srv("m2.keel.test..", 22380),
        ]);
        let d = SrvDiscovery::new("keel.test", "", "m1", &urls(&["http://127.0.0.1:12380"]));
        assert_eq!(
            d.hosts_to_resolve(&answers),
            ["m1.keel.test", "m2.keel.test.."]
        );
        let addrs: HostAddrs = d
            .hosts_to_resolve(&answers)
            .into_iter()
            .map(|h| (h, Ok(vec![v4(1)])))
            .collect();
        let c = d
            .initial_cluster(&answers, &addrs, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        assert_eq!(
            c.to_string(),
            "m1=http://m1.keel.test:12380,0=http://m2.keel.test.:22380"
        );
    }

    #[test]
    fn records_ordered_by_priority_then_weight() {
        let rec = |t: &str, priority, weight| SrvRecord {
            target: t.to_owned(),
            port: 1,
            priority,
            weight,
        };
        // Zero weights: only the priority reorders, stably.
        let mut r = vec![rec("c", 2, 0), rec("a", 1, 0), rec("b", 1, 0)];
        order_records(&mut r, &mut ChaCha8Rng::seed_from_u64(3));
        let targets: Vec<&str> = r.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["a", "b", "c"]);

        // Within a priority, weights 0, 1 and 3: Go draws n in 0..=4 and takes the first
        // record whose running weight reaches n, so the first place goes to the weight-0
        // record (sorted first) 1 time in 5, the light one 1 in 5, the heavy one 3 in 5.
        let mut first = BTreeMap::<String, u32>::new();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..5000 {
            let mut r = vec![rec("heavy", 0, 3), rec("zero", 0, 0), rec("light", 0, 1)];
            order_records(&mut r, &mut rng);
            *first.entry(r[0].target.clone()).or_default() += 1;
        }
        assert!((2800..3200).contains(&first["heavy"]), "{first:?}");
        assert!((850..1150).contains(&first["zero"]), "{first:?}");
        assert!((850..1150).contains(&first["light"]), "{first:?}");
    }

    #[test]
    fn bad_advertise_url() {
        let e = run(
            "m1",
            &["http://127.0.0.1"],
            &http_only(three()),
            &loopback_hosts(),
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("URL address does not have the form \"host:port\": http://127.0.0.1"));
    }
}
