//! TLS for the client listeners, the peer listeners and peer dialing (etcd's
//! `--cert-file`, `--peer-cert-file` and their companions), on rustls with ring.
//!
//! One [`SideTls`] per side (client, peer) is loaded and checked at start. Certificates,
//! keys and the trusted CA used to verify client certificates are re-read when their
//! files change (their modification times are compared at each handshake), so rotating
//! certificates needs no restart. TLS 1.2 and 1.3 only.

mod allowed;
mod auto;
mod ca_leaf;
mod dial;
mod files;
mod incoming;
mod names;
mod reload;
mod skip_verify;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

pub use allowed::Allowed;
pub use dial::{PeerDialer, PeerIo};
pub use incoming::{client_incoming, ClientConn, ClientConnInfo, ClientSchemes};
pub use names::url_host;

use reload::{ReloadingClientVerifier, ReloadingIdentity};

/// One side's TLS flags: `--cert-file`... for clients, `--peer-cert-file`... for peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// The certificate (chain) file, PEM.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM.
    pub key_file: Option<PathBuf>,
    /// CA certificates that verify the other end's certificate, PEM.
    pub trusted_ca_file: Option<PathBuf>,
    /// Take a client certificate's common name as the user (auth). A certificate signed
    /// by the trusted CA is required whenever `trusted_ca_file` is given, with or without
    /// this flag, as etcd 3.4 does.
    pub client_cert_auth: bool,
    /// Generate a self-signed certificate at start (ignored when files are given).
    pub auto_tls: bool,
    /// A certificate revocation list (PEM or DER): certificates it revokes are refused.
    pub crl_file: Option<PathBuf>,
    /// The common name the other end's certificate must carry (peer side only in etcd).
    pub allowed_cn: Option<String>,
    /// The host name or IP the other end's certificate must be valid for.
    pub allowed_hostname: Option<String>,
}

/// The flags both sides share: `--cipher-suites` and `--tls-min-version`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// TLS 1.2 cipher suites by their IANA (Go) names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// `TLS1.2` (the default) or `TLS1.3`.
    pub min_version: Option<String>,
}

/// Which listener a [`SideTls`] serves; names the flags in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client listeners (`--cert-file` and so on).
    Client,
    /// The peer listeners and peer dialing (`--peer-cert-file` and so on).
    Peer,
}

impl Side {
    fn flag(self, name: &str) -> String {
        match self {
            Side::Client => format!("--{name}"),
            Side::Peer => format!("--peer-{name}"),
        }
    }
}

/// A TLS setup that cannot be used; one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file that cannot be read or parsed.
    #[error("{flag} {}: {reason}", path.display())]
    File {
        /// The flag that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate does not name a host it is advertised under (Go's x509 text,
    /// then which flag and URL advertise the host).
    #[error("{0}")]
    NotCovered(String),
    /// Flags that do not go together, or a value rustls cannot honour.
    #[error("{0}")]
    Config(String),
}

/// Where a dialing member's trust in the server it reaches comes from.
#[derive(Clone)]
enum Trust {
    /// `--peer-auto-tls`: no verification, as etcd's InsecureSkipVerify.
    Anything,
    /// The trusted CA file, as trust anchors and as certificates.
    Roots(Arc<RootCertStore>, Arc<Vec<CertificateDer<'static>>>),
}

/// One side's TLS material, loaded and checked: what its listeners serve and, for the
/// peer side, how peers are dialed.
#[derive(Clone)]
pub struct SideTls {
    side: Side,
    identity: Arc<ReloadingIdentity>,
    client_auth: Option<Arc<ReloadingClientVerifier>>,
    /// `--client-cert-auth`: a verified certificate's common name names the user.
    names_users: bool,
    trust: Trust,
    /// Required of the servers this side dials, too (etcd's `VerifyPeerCertificate`).
    allowed: Option<Allowed>,
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
}

impl SideTls {
    /// Loads the side's certificate (or generates one for `hosts` with auto TLS) and
    /// checks the flags. `hosts` are the hosts of this side's listen and advertise URLs.
    pub fn load(
        side: Side,
        flags: &TlsFlags,
        policy: &TlsPolicy,
        hosts: &[String],
    ) -> Result<SideTls, TlsError> {
        let provider = Arc::new(provider(policy)?);
        let versions = versions(policy)?;
        let allowed = Allowed::from_flags(
            flags.allowed_cn.as_deref(),
            flags.allowed_hostname.as_deref(),
        )
        .map_err(TlsError::Config)?;
        let given = flags.cert_file.is_some() || flags.key_file.is_some();
        if !given && !flags.auto_tls {
            return Err(TlsError::Config(format!(
                "{} and {} are required for TLS",
                side.flag("cert-file"),
                side.flag("key-file")
            )));
        }
        if given {
            let (Some(cert), Some(key)) = (&flags.cert_file, &flags.key_file) else {
                return Err(TlsError::Config(format!(
                    "{} and {} must be given together",
                    side.flag("cert-file"),
                    side.flag("key-file")
                )));
            };
            if flags.auto_tls {
                match side {
                    Side::Client => tracing::warn!("ignoring client auto TLS since certs given"),
                    Side::Peer => tracing::warn!("ignoring peer auto TLS since certs given"),
                }
            }
            let identity = ReloadingIdentity::from_files(side, cert, key, provider.clone())?;
            // etcd 3.4's TLSInfo.ServerConfig: `if TrustedCAFile != "" || ClientCertAuth`
            // the listener requires and verifies client certificates, so a trusted CA
            // alone already turns them on.
            let client_auth = match (&flags.trusted_ca_file, flags.client_cert_auth) {
                (Some(ca), _) => Some(Arc::new(ReloadingClientVerifier::new(
                    side,
                    ca,
                    flags.crl_file.as_deref(),
                    allowed.clone(),
                    provider.clone(),
                )?)),
                (None, true) => {
                    return Err(TlsError::Config(format!(
                        "{} needs {} to verify certificates with",
                        side.flag("client-cert-auth"),
                        side.flag("trusted-ca-file")
                    )))
                }
                (None, false) => None,
            };
            let roots = match &flags.trusted_ca_file {
                Some(ca) => files::load_roots(&side.flag("trusted-ca-file"), ca)?,
                None => (
                    RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                    Vec::new(),
                ),
            };
            Ok(SideTls {
                side,
                identity: Arc::new(identity),
                client_auth,
                names_users: flags.client_cert_auth,
                trust: Trust::Roots(Arc::new(roots.0), Arc::new(roots.1)),
                allowed,
                provider,
                versions,
            })
        } else {
            // etcd's SelfCert: a fresh certificate, no client authentication, and peers
            // dial each other without verification.
            let key = auto::self_signed(hosts, &provider)?;
            tracing::warn!(
                hosts = %hosts.join(","),
                "{}: serving a generated self-signed certificate",
                side.flag("auto-tls")
            );
            Ok(SideTls {
                side,
                identity: Arc::new(ReloadingIdentity::fixed(key)),
                client_auth: None,
                names_users: false,
                trust: Trust::Anything,
                allowed: None,
                provider,
                versions,
            })
        }
    }

    /// Checks that the certificate names the host of `url` (advertised with `url_flag`).
    pub fn check_covers(&self, url_flag: &str, url: &str) -> Result<(), TlsError> {
        let Some(host) = url_host(url) else {
            return Ok(());
        };
        let key = self.identity.current();
        let Some(cert) = key.cert.first() else {
            return Ok(());
        };
        names::covers(cert, host).map_err(|valid_for| {
            TlsError::NotCovered(format!(
                "{} {}: x509: certificate is valid for {valid_for}, not {host} (the host of {url_flag} {url})",
                self.side.flag("cert-file"),
                self.identity.cert_path().unwrap_or_default().display()
            ))
        })
    }

    /// Whether a verified client certificate's common name is the user (etcd's
    /// `AuthInfoFromTLS`, only with `--client-cert-auth`, not with a trusted CA alone).
    pub fn certificate_names_user(&self) -> bool {
        self.names_users && self.client_auth.is_some()
    }

    /// The listener configuration; `alpn` lists the protocols offered (gRPC needs `h2`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| TlsError::Config(format!("TLS: {e}")))?;
        let builder = match &self.client_auth {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_cert_resolver(self.identity.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// How this member dials https peers: its certificate as the client certificate,
    /// the server verified against the trusted CA (or not at all with auto TLS).
    pub fn dialer(&self) -> Result<PeerDialer, TlsError> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| TlsError::Config(format!("TLS: {e}")))?;
        let builder = match &self.trust {
            Trust::Anything => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(skip_verify::SkipVerify::new(
                    self.provider.clone(),
                ))),
            Trust::Roots(roots, certs) => {
                let v = WebPkiServerVerifier::builder_with_provider(
                    roots.clone(),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Config(format!("TLS: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ca_leaf::ServerVerifier::new(
                        v,
                        certs.as_ref().clone(),
                        self.allowed.clone(),
                    )))
            }
        };
        let cfg = builder.with_client_cert_resolver(self.identity.clone());
        Ok(PeerDialer::with_tls(Arc::new(cfg)))
    }
}

/// ring's provider, its TLS 1.2 suites narrowed to `--cipher-suites` (TLS 1.3 suites are
/// not configurable, as in Go).
fn provider(policy: &TlsPolicy) -> Result<CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if policy.cipher_suites.is_empty() {
        return Ok(p);
    }
    if policy.min_version.as_deref() == Some("TLS1.3") {
        return Err(TlsError::Config(
            "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
        ));
    }
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    for wanted in &policy.cipher_suites {
        // Go also accepts the CHACHA20 names without their `_SHA256` suffix.
        let known = p.cipher_suites.iter().any(|s| {
            let n = name(s);
            n == *wanted || n == format!("{wanted}_SHA256")
        });
        if !known {
            return Err(TlsError::Config(format!(
                "unexpected TLS cipher suite {wanted:?}"
            )));
        }
    }
    p.cipher_suites.retain(|s| {
        let n = name(s);
        s.version() == &rustls::version::TLS13
            || policy
                .cipher_suites
                .iter()
                .any(|w| n == *w || n == format!("{w}_SHA256"))
    });
    Ok(p)
}

fn versions(policy: &TlsPolicy) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    match policy.min_version.as_deref() {
        None | Some("") | Some("TLS1.2") => {
            Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12])
        }
        Some("TLS1.3") => Ok(vec![&rustls::version::TLS13]),
        Some(v @ ("TLS1.0" | "TLS1.1")) => Err(TlsError::Config(format!(
            "--tls-min-version {v}: keel speaks TLS1.2 and TLS1.3 only"
        ))),
        Some(v) => Err(TlsError::Config(format!(
            "unexpected TLS version {v:?} (must be one of: TLS1.0, TLS1.1, TLS1.2, TLS1.3)"
        ))),
    }
}
