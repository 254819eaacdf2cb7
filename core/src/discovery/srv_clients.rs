//! `etcd gateway start --discovery-srv <domain>`: the client endpoints SRV records name,
//! as etcd 3.4's `srv.GetClient("etcd-client", domain, serviceName)` and the gateway's
//! `discoverEndpoints` find them.
//!
//! 1. [`client_services`]: look up `_etcd-client-ssl[-<name>]._tcp.<domain>` (https) and
//!    `_etcd-client[-<name>]._tcp.<domain>` (http).
//! 2. [`srv_clients`]: every record of both, https first, each service in SRV order, as
//!    `scheme://target:port` (the target keeps its trailing dot, as Go's `LookupSRV`
//!    gives it); an error only when both lookups failed.
//! 3. Unless `--insecure-discovery`, [`insecure_endpoint`] drops the http ones; the driver
//!    then keeps the https endpoints it can connect to (etcd's
//!    `transport.ValidateSecureEndpoints` only dials TCP: no TLS handshake).

use rand_core::RngCore;

use super::srv::{order_records, services_named, PeerScheme};
use super::{SrvAnswers, SrvRecord, SrvService};

/// The two SRV names the gateway looks up for `domain` and `--discovery-srv-name`
/// `service_name` (empty: no suffix): https first.
pub fn client_services(domain: &str, service_name: &str) -> [SrvService; 2] {
    services_named("etcd-client", domain, service_name)
}

/// One discovered client endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvClient {
    /// `https://target:port` or `http://target:port`.
    pub url: String,
    /// The record it came from: the gateway dials its target and port and picks by its
    /// priority and weight.
    pub record: SrvRecord,
}

/// The endpoints the answers to [`client_services`] name; `answers.https` and
/// `answers.http` are those of the https and http service. Fails with etcd's text
/// (`dns lookup errors: <https error> and <http error>`) only when both lookups failed.
pub fn srv_clients(answers: &SrvAnswers, rng: &mut impl RngCore) -> Result<Vec<SrvClient>, String> {
    if let (Err(https), Err(http)) = (&answers.https, &answers.http) {
        return Err(format!("dns lookup errors: {https} and {http}"));
    }
    let mut clients = Vec::new();
    for scheme in [PeerScheme::Https, PeerScheme::Http] {
        let Ok(records) = answers.get(scheme) else {
            continue;
        };
        let mut records = records.clone();
        order_records(&mut records, rng);
        for record in records {
            let host = if record.target.contains(':') {
                format!("[{}]", record.target)
            } else {
                record.target.clone()
            };
            clients.push(SrvClient {
                url: format!("{}://{host}:{}", scheme.as_str(), record.port),
                record,
            });
        }
    }
    Ok(clients)
}

/// Why `url` cannot be validated as secure, if it is not https: etcd's
/// `"<url>" is insecure`.
pub fn insecure_endpoint(url: &str) -> Option<String> {
    (!url.starts_with("https://")).then(|| format!("{url:?} is insecure"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DnsError, DnsReason};
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn rec(target: &str, port: u16) -> SrvRecord {
        SrvRecord {
            target: target.into(),
            port,
            priority: 0,
            weight: 0,
        }
    }

    fn nxdomain(name: &str) -> DnsError {
        DnsError {
            name: name.into(),
            server: "127.0.0.1:53".into(),
            reason: DnsReason::NoSuchHost,
        }
    }

    #[test]
    fn services_are_etcd_client_with_the_optional_suffix() {
        let [https, http] = client_services("example.com", "");
        assert_eq!(https.query_name, "_etcd-client-ssl._tcp.example.com");
        assert_eq!(http.query_name, "_etcd-client._tcp.example.com");
        let [https, http] = client_services("example.com", "east");
        assert_eq!(https.query_name, "_etcd-client-ssl-east._tcp.example.com");
        assert_eq!(http.query_name, "_etcd-client-east._tcp.example.com");
    }

    #[test]
    fn https_records_come_first_and_one_failed_service_is_no_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let answers = SrvAnswers {
            https: Ok(vec![rec("a.example.com.", 2379)]),
            http: Ok(vec![rec("b.example.com.", 2379), rec("::1", 22379)]),
        };
        let urls: Vec<String> = srv_clients(&answers, &mut rng)
            .unwrap()
            .into_iter()
            .map(|c| c.url)
            .collect();
        assert_eq!(
            urls,
            [
                "https://a.example.com.:2379",
                "http://b.example.com.:2379",
                "http://[::1]:22379"
            ]
        );
        let answers = SrvAnswers {
            https: Err(nxdomain("_etcd-client-ssl._tcp.example.com")),
            http: Ok(vec![rec("b.example.com.", 2379)]),
        };
        assert_eq!(srv_clients(&answers, &mut rng).unwrap().len(), 1);
    }

    #[test]
    fn both_lookups_failing_is_etcds_error() {
        let answers = SrvAnswers {
            https: Err(nxdomain("_etcd-client-ssl._tcp.example.com")),
            http: Err(nxdomain("_etcd-client._tcp.example.com")),
        };
        assert_eq!(
            srv_clients(&answers, &mut ChaCha8Rng::seed_from_u64(1)),
            Err("dns lookup errors: lookup _etcd-client-ssl._tcp.example.com on 127.0.0.1:53: no such host and lookup _etcd-client._tcp.example.com on 127.0.0.1:53: no such host".into())
        );
    }

    #[test]
    fn only_https_endpoints_can_be_secure() {
        assert_eq!(insecure_endpoint("https://a:1"), None);
        assert_eq!(
            insecure_endpoint("http://a.example.com.:2379"),
            Some("\"http://a.example.com.:2379\" is insecure".into())
        );
    }
}
