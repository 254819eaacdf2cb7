//! The static `--initial-cluster` configuration: parsing it and turning it into the
//! bootstrap member set, with etcd's checks and error texts.

use std::collections::BTreeMap;
use std::fmt;

use super::ids::member_id;

/// Why a URL is not the `http(s)://host:port` (or `unix(s)://host:port`) form etcd
/// accepts for peers and clients.
///
/// The texts follow etcd's `types.NewURLs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The scheme is none of `http`, `https`, `unix` and `unixs`.
    #[error("URL scheme must be http, https, unix, or unixs: {0}")]
    Scheme(String),
    /// The part after the scheme is not `host:port` with a non-empty host and a numeric port.
    #[error("URL address does not have the form \"host:port\": {0}")]
    HostPort(String),
    /// Something follows `host:port` (a path, even `/`, a query or a fragment).
    #[error("URL must not contain a path: {0}")]
    Path(String),
}

/// Checks that `url` is `http(s)://host:port` or `unix(s)://host:port`, where host is a name,
/// an IPv4 address or a bracketed IPv6 address, and port is a number up to 65535.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("unix://"))
        .or_else(|| url.strip_prefix("unixs://"))
        .ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (host, port) =
        split_host_port(authority).ok_or_else(|| UrlError::HostPort(url.to_owned()))?;
    let host_ok = !host.is_empty() && !host.contains(['@', ' ', '[', ']']);
    // All digits first: `u16::from_str` alone would also take "+1".
    let port_ok = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    if !host_ok || !port_ok {
        return Err(UrlError::HostPort(url.to_owned()));
    }
    if !tail.is_empty() {
        return Err(UrlError::Path(url.to_owned()));
    }
    Ok(())
}

/// Splits `host:port` or `[v6]:port`, returning the host without brackets.
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = after.strip_prefix(':')?;
        // A bracketed host must be an IPv6 literal; anything else is not host:port.
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return Some((host, port));
    }
    let (host, port) = authority.rsplit_once(':')?;
    // A bare IPv6 address ("::1:2379") is ambiguous; Go's SplitHostPort rejects it too.
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Why an `--initial-cluster` string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialClusterError {
    /// An entry has no `=` between name and URL.
    #[error("initial cluster entry \"{0}\" is not of the form name=url")]
    MissingEquals(String),
    /// An entry's name is empty (`=http://...`).
    #[error("initial cluster entry \"{0}\" has an empty name")]
    EmptyName(String),
    /// An entry's URL is malformed.
    #[error("initial cluster entry \"{entry}\": {source}")]
    BadUrl {
        /// The entry as written (trimmed).
        entry: String,
        /// What is wrong with its URL.
        source: UrlError,
    },
}

/// A parsed `--initial-cluster`: member names with their peer URLs.
///
/// Like etcd's `URLsMap`, a name listed several times (`a=u1,a=u2`) is one member with
/// several URLs. Names are kept in sorted order and each member's URLs sorted, so
/// iteration and [`fmt::Display`] are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialCluster {
    members: BTreeMap<String, Vec<String>>,
}

impl InitialCluster {
    /// Parses `name=url,name=url,...`. Entries and their parts are whitespace-trimmed and
    /// empty entries (a trailing comma) are skipped, as etcd does; `""` is an empty cluster.
    pub fn parse(s: &str) -> Result<Self, InitialClusterError> {
        let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, url) = entry
                .split_once('=')
                .ok_or_else(|| InitialClusterError::MissingEquals(entry.to_owned()))?;
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty() {
                return Err(InitialClusterError::EmptyName(entry.to_owned()));
            }
            check_url(url).map_err(|source| InitialClusterError::BadUrl {
                entry: entry.to_owned(),
                source,
            })?;
            members
                .entry(name.to_owned())
                .or_default()
                .push(url.to_owned());
        }
        for urls in members.values_mut() {
            urls.sort();
        }
        Ok(Self { members })
    }

    /// The peer URLs listed for `name` (sorted), if it is listed.
    pub fn peer_urls(&self, name: &str) -> Option<&[String]> {
        self.members.get(name).map(Vec::as_slice)
    }

    /// Members in name order, each with its sorted peer URLs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.members.iter().map(|(n, u)| (n.as_str(), u.as_slice()))
    }

    /// Number of distinct member names.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is listed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl fmt::Display for InitialCluster {
    /// `name=url` pairs sorted and comma-joined, as etcd's `URLsMap.String`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs: Vec<String> = self
            .iter()
            .flat_map(|(name, urls)| urls.iter().map(move |u| format!("{name}={u}")))
            .collect();
        pairs.sort();
        f.write_str(&pairs.join(","))
    }
}

/// One member of the cluster being bootstrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's `--name`.
    pub name: String,
    /// Its peer URLs, sorted.
    pub peer_urls: Vec<String>,
    /// Its member ID, as etcd derives it from the URLs and the cluster token.
    pub id: u64,
}

/// Why this member cannot bootstrap from its `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    /// `--initial-cluster` does not parse.
    #[error("error setting up initial cluster: {0}")]
    InitialCluster(#[from] InitialClusterError),
    /// This member's own name is not in `--initial-cluster`.
    #[error("{0} not listed in the initial cluster config")]
    NotListed(String),
    /// This member's `--initial-advertise-peer-urls` differ from its `--initial-cluster` entry.
    #[error(
        "error setting up initial cluster: {0} has different advertised URLs in the cluster and advertised peer URLs list"
    )]
    AdvertiseMismatch(String),
    /// A peer URL appears more than once in `--initial-cluster`.
    #[error(
        "error setting up initial cluster: peer URL {url} is listed for both {first} and {second}"
    )]
    DuplicateUrl {
        /// The repeated URL.
        url: String,
        /// The member it is first listed for (in name order).
        first: String,
        /// The member it is listed for again (may equal `first`).
        second: String,
    },
}

/// The initial member set of a new cluster: `--initial-cluster` parsed and checked against
/// this member's `--name` and `--initial-advertise-peer-urls`, each member's ID derived
/// with `token` (`--initial-cluster-token`). Members are sorted by ID.
///
/// Checks run in etcd's order: own name listed, own URLs match (compared as sorted sets),
/// no peer URL listed twice.
pub fn bootstrap_members(
    initial_cluster: &str,
    own_name: &str,
    own_advertise_peer_urls: &[String],
    token: &str,
) -> Result<Vec<InitialMember>, BootstrapError> {
    let cluster = InitialCluster::parse(initial_cluster)?;
    let listed = cluster
        .peer_urls(own_name)
        .ok_or_else(|| BootstrapError::NotListed(own_name.to_owned()))?;
    if sorted_set(listed) != sorted_set(own_advertise_peer_urls) {
        return Err(BootstrapError::AdvertiseMismatch(own_name.to_owned()));
    }
    let mut owner_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, urls) in cluster.iter() {
        for url in urls {
            if let Some(first) = owner_of.insert(url, name) {
                return Err(BootstrapError::DuplicateUrl {
                    url: url.clone(),
                    first: first.to_owned(),
                    second: name.to_owned(),
                });
            }
        }
    }
    let mut members: Vec<InitialMember> = cluster
        .iter()
        .map(|(name, urls)| InitialMember {
            name: name.to_owned(),
            peer_urls: urls.to_vec(),
            id: member_id(urls, token, None),
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Ok(members)
}

fn sorted_set(urls: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = urls.iter().map(|u| u.trim()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str =
        "infra1=http://127.0.0.1:12380, infra2=http://127.0.0.1:22380 ,infra3=http://127.0.0.1:32380";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn parses_three_members_with_whitespace() {
        let c = InitialCluster::parse(THREE).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.peer_urls("infra2").unwrap(), ["http://127.0.0.1:22380"]);
        assert_eq!(
            c.to_string(),
            "infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"
        );
    }

    #[test]
    fn repeated_name_is_one_member_with_several_urls() {
        let c =
            InitialCluster::parse("a=https://[::1]:2380,a=http://node-a.example:2380,").unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.peer_urls("a").unwrap(),
            ["http://node-a.example:2380", "https://[::1]:2380"]
        );
        assert!(InitialCluster::parse("").unwrap().is_empty());
    }

    #[test]
    fn parse_errors() {
        let e = InitialCluster::parse("a=http://h:1,foo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "initial cluster entry \"foo\" is not of the form name=url"
        );
        let e = InitialCluster::parse(" =http://h:1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "initial cluster entry \"=http://h:1\" has an empty name"
        );
        let e = InitialCluster::parse("a=localhost:2380").unwrap_err();
        assert_eq!(
            e.to_string(),
            "initial cluster entry \"a=localhost:2380\": URL scheme must be http, https, unix, or unixs: localhost:2380"
        );
        let e = InitialCluster::parse("a=http://localhost").unwrap_err();
        assert_eq!(
            e.to_string(),
            "initial cluster entry \"a=http://localhost\": URL address does not have the form \"host:port\": http://localhost"
        );
        let e = InitialCluster::parse("a=http://h:2380/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "initial cluster entry \"a=http://h:2380/x\": URL must not contain a path: http://h:2380/x"
        );
    }

    #[test]
    fn url_grammar() {
        for ok in [
            "http://127.0.0.1:2380",
            "https://[fe80::1]:1",
            "http://a-b.c:65535",
            "http://0.0.0.0:0",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://:2380",
            "http://h:",
            "http://h:99999",
            "http://h:+1",
            "http://::1:2",
            "http://[x]:1",
            "http://u@h:1",
        ] {
            assert_eq!(
                check_url(bad),
                Err(UrlError::HostPort(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            check_url("http://h:1/"),
            Err(UrlError::Path("http://h:1/".to_owned()))
        );
        // etcd's unix sockets are named by a host:port too: a bare path is refused.
        assert_eq!(check_url("unix://localhost:1"), Ok(()));
        assert_eq!(check_url("unixs://a:1"), Ok(()));
        for bad in ["unix://sock", "unix:///tmp/sock"] {
            assert_eq!(check_url(bad), Err(UrlError::HostPort(bad.to_owned())));
        }
        assert_eq!(
            check_url("ftp://h:1"),
            Err(UrlError::Scheme("ftp://h:1".to_owned()))
        );
    }

    #[test]
    fn bootstraps_three_members_sorted_by_id() {
        let m = bootstrap_members(
            THREE,
            "infra2",
            &s(&["http://127.0.0.1:22380"]),
            "etcd-cluster-1",
        )
        .unwrap();
        let got: Vec<(&str, String)> = m
            .iter()
            .map(|m| (m.name.as_str(), format!("{:x}", m.id)))
            .collect();
        assert_eq!(
            got,
            [
                ("infra1", "8211f1d0f64f3269".to_owned()),
                ("infra2", "91bc3c398fb3c146".to_owned()),
                ("infra3", "fd422379fda50e48".to_owned()),
            ]
        );
        assert_eq!(m[0].peer_urls, ["http://127.0.0.1:12380"]);
    }

    #[test]
    fn own_urls_compare_as_sets() {
        let cluster = "a=http://10.0.0.1:2380,a=http://10.0.0.2:2380";
        let own = s(&["http://10.0.0.2:2380", "http://10.0.0.1:2380"]);
        let m = bootstrap_members(cluster, "a", &own, "t").unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn not_listed() {
        let e =
            bootstrap_members(THREE, "infra4", &s(&["http://127.0.0.1:42380"]), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "infra4 not listed in the initial cluster config"
        );
    }

    #[test]
    fn advertised_urls_differ() {
        let e =
            bootstrap_members(THREE, "infra1", &s(&["http://10.0.1.10:12380"]), "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "error setting up initial cluster: infra1 has different advertised URLs in the cluster and advertised peer URLs list"
        );
        // A subset is not enough.
        let e = bootstrap_members("a=http://h:1,a=http://h:2", "a", &s(&["http://h:1"]), "t")
            .unwrap_err();
        assert_eq!(e, BootstrapError::AdvertiseMismatch("a".to_owned()));
    }

    #[test]
    fn duplicate_peer_url() {
        let e = bootstrap_members("a=http://h:1,b=http://h:1", "a", &s(&["http://h:1"]), "t")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "error setting up initial cluster: peer URL http://h:1 is listed for both a and b"
        );
    }

    #[test]
    fn bad_initial_cluster() {
        let e = bootstrap_members("foo", "a", &[], "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "error setting up initial cluster: initial cluster entry \"foo\" is not of the form name=url"
        );
    }
}
