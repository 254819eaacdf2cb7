//! From etcd's TLS flags to what the listeners serve and how peers are dialed, checked
//! at start so a bad certificate is one clear line before anything listens.

use keel_runtime_tokio::listen::{is_secure_url, SocketListener};
use keel_runtime_tokio::serve::Listener;
use keel_runtime_tokio::tls::{url_host, PeerDialer, Side, SideTls, TlsFlags, TlsPolicy};

use crate::config::{ClientSocket, ServerConfig, TlsConfig};

/// gRPC needs HTTP/2; `/health` and friends are also served to HTTP/1.1 clients.
const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The member's TLS, both sides; a side is None when it runs plain http.
pub struct MemberTls {
    client: Option<SideTls>,
    peer: Option<SideTls>,
}

fn https(urls: &[String]) -> Option<&String> {
    urls.iter().find(|u| is_secure_url(u))
}

fn flags(t: &TlsConfig) -> TlsFlags {
    TlsFlags {
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        trusted_ca_file: t.trusted_ca_file.clone(),
        client_cert_auth: t.client_cert_auth,
        auto_tls: t.auto_tls,
        crl_file: t.crl_file.clone(),
        allowed_cn: t.allowed_cn.clone(),
        allowed_hostname: t.allowed_hostname.clone(),
    }
}

fn hosts(urls: &[&[String]]) -> Vec<String> {
    urls.iter()
        .flat_map(|u| u.iter())
        .filter_map(|u| url_host(u).map(str::to_string))
        .collect()
}

impl MemberTls {
    /// Loads and checks both sides: certificates readable and matching their keys, and
    /// naming every host of the https URLs this member advertises.
    pub fn load(cfg: &ServerConfig) -> Result<MemberTls, String> {
        let policy = TlsPolicy {
            cipher_suites: cfg.cipher_suites.clone(),
            min_version: cfg.tls_min_version.clone(),
        };
        // https metrics listeners serve with the client TLS settings, as etcd's do.
        let client_https = https(&cfg.listen_client_urls)
            .or(https(&cfg.advertise_client_urls))
            .or(https(&cfg.listen_metrics_urls));
        let client = match client_https {
            Some(url) => {
                if !cfg.client_tls.can_serve_https() {
                    return Err(format!("TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"));
                }
                let all = hosts(&[&cfg.listen_client_urls, &cfg.advertise_client_urls]);
                let side = SideTls::load(Side::Client, &flags(&cfg.client_tls), &policy, &all)
                    .map_err(|e| e.to_string())?;
                for u in cfg
                    .advertise_client_urls
                    .iter()
                    .filter(|u| is_secure_url(u))
                {
                    side.check_covers("--advertise-client-urls", u)
                        .map_err(|e| e.to_string())?;
                }
                Some(side)
            }
            None => {
                if cfg.client_tls.cert_file.is_some() {
                    tracing::warn!("scheme is HTTP while key and cert files are present; ignoring key and cert files");
                }
                None
            }
        };
        // Peer TLS also serves dialing: a member listening on http may still have to
        // reach https peers, so the flags alone are enough to load it.
        let peer_flags_given = cfg.peer_tls.can_serve_https()
            || cfg.peer_tls.cert_file.is_some()
            || cfg.peer_tls.key_file.is_some();
        let peer_https = https(&cfg.listen_peer_urls).or(https(&cfg.initial_advertise_peer_urls));
        let peer = match (peer_https, peer_flags_given) {
            (None, false) => None,
            (Some(url), _) if !cfg.peer_tls.can_serve_https() => {
                return Err(format!("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {url} with HTTPS scheme"));
            }
            _ => {
                let all = hosts(&[&cfg.listen_peer_urls, &cfg.initial_advertise_peer_urls]);
                let side = SideTls::load(Side::Peer, &flags(&cfg.peer_tls), &policy, &all)
                    .map_err(|e| e.to_string())?;
                for u in cfg
                    .initial_advertise_peer_urls
                    .iter()
                    .filter(|u| is_secure_url(u))
                {
                    side.check_covers("--initial-advertise-peer-urls", u)
                        .map_err(|e| e.to_string())?;
                }
                Some(side)
            }
        };
        Ok(MemberTls { client, peer })
    }

    /// How this member dials peers (and asks them for the member list).
    pub fn dialer(&self) -> Result<PeerDialer, String> {
        match &self.peer {
            Some(p) => p.dialer().map_err(|e| e.to_string()),
            None => Ok(PeerDialer::plain()),
        }
    }

    /// The client listeners, TLS on those an https (or unixs) URL names (`bound[i]` is
    /// bound for `sockets[i]`).
    pub fn client_listeners(
        &self,
        sockets: &[ClientSocket],
        bound: Vec<SocketListener>,
    ) -> Result<Vec<Listener>, String> {
        let side = self.client.as_ref();
        let config = side
            .map(|s| s.server_config(CLIENT_ALPN))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(bound
            .into_iter()
            .zip(sockets)
            .map(|(socket, s)| Listener {
                socket,
                tls: if s.secure { config.clone() } else { None },
                also_plain: s.plain,
                cert_names_user: s.secure && side.is_some_and(SideTls::certificate_names_user),
            })
            .collect())
    }

    /// The peer listeners, TLS on those bound for https URLs.
    pub fn peer_listeners(
        &self,
        urls: &[String],
        bound: Vec<SocketListener>,
    ) -> Result<Vec<Listener>, String> {
        let config = self
            .peer
            .as_ref()
            .map(|s| s.server_config(&[]))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(bound
            .into_iter()
            .zip(urls)
            .map(|(socket, url)| Listener {
                socket,
                tls: if is_secure_url(url) {
                    config.clone()
                } else {
                    None
                },
                also_plain: false,
                cert_names_user: false,
            })
            .collect())
    }
}
