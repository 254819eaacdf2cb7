//! Certificates and trusted CAs that follow their files: at each handshake the files'
//! modification times are compared with those last loaded, and changed files are read
//! again. A file that cannot be loaded (say, a certificate rewritten before its key) is
//! reported and the previous material kept, so a rotation never breaks serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{allowed::Allowed, ca_leaf, files, Side, TlsError};

/// Modification times of the files a value was loaded from.
type Stamp = Vec<Option<SystemTime>>;

/// The member's certificate and key, as a server (listeners) and as a client (dialing
/// peers).
pub(super) struct ReloadingIdentity {
    files: Option<IdentityFiles>,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

struct IdentityFiles {
    cert_flag: String,
    cert: PathBuf,
    key_flag: String,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl IdentityFiles {
    fn stamp(&self) -> Stamp {
        vec![files::mtime(&self.cert), files::mtime(&self.key)]
    }

    fn load(&self) -> Result<CertifiedKey, TlsError> {
        files::load_certified_key(
            &self.cert_flag,
            &self.cert,
            &self.key_flag,
            &self.key,
            &self.provider,
        )
    }
}

impl ReloadingIdentity {
    /// Loads `cert` and `key` now (errors name the file) and follows them from then on.
    pub(super) fn from_files(
        side: Side,
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingIdentity, TlsError> {
        let files = IdentityFiles {
            cert_flag: side.flag("cert-file"),
            cert: cert.to_path_buf(),
            key_flag: side.flag("key-file"),
            key: key.to_path_buf(),
            provider,
        };
        let stamp = files.stamp();
        let loaded = files.load()?;
        Ok(ReloadingIdentity {
            files: Some(files),
            current: Mutex::new((stamp, Arc::new(loaded))),
        })
    }

    /// A certificate that never changes (auto TLS).
    pub(super) fn fixed(key: CertifiedKey) -> ReloadingIdentity {
        ReloadingIdentity {
            files: None,
            current: Mutex::new((Vec::new(), Arc::new(key))),
        }
    }

    /// The certificate file, when there is one.
    pub(super) fn cert_path(&self) -> Option<PathBuf> {
        self.files.as_ref().map(|f| f.cert.clone())
    }

    /// The certificate to present now, reloaded first if its files changed.
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        // Nothing panics while the lock is held; should it ever, the value is still whole.
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &self.files {
            let stamp = f.stamp();
            if stamp != cur.0 {
                // Remember the stamp even on failure: the error is reported once per
                // change, and the next write to either file triggers another attempt.
                cur.0 = stamp;
                match f.load() {
                    Ok(k) => {
                        tracing::info!(cert = %f.cert.display(), "reloaded the TLS certificate");
                        cur.1 = Arc::new(k);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reload the TLS certificate; keeping the previous one")
                    }
                }
            }
        }
        cur.1.clone()
    }
}

impl fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("cert", &self.cert_path())
            .finish()
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `--client-cert-auth` with `--trusted-ca-file`: a client certificate is required and
/// must chain to the trusted CA file as it is now, not be revoked by the CRL file as it
/// is now (etcd reads it at every connection), and satisfy the allowed CN or hostname.
pub(super) struct ReloadingClientVerifier {
    files: VerifierFiles,
    current: Mutex<(Stamp, Arc<dyn ClientCertVerifier>)>,
}

/// What a client verifier is built from.
struct VerifierFiles {
    flag: String,
    ca: PathBuf,
    crl: Option<(String, PathBuf)>,
    allowed: Option<Allowed>,
    provider: Arc<CryptoProvider>,
}

impl ReloadingClientVerifier {
    /// Loads the CA file now (errors name it) and follows it from then on.
    pub(super) fn new(
        side: Side,
        ca: &Path,
        crl: Option<&Path>,
        allowed: Option<Allowed>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingClientVerifier, TlsError> {
        let crl_flag = match side {
            Side::Client => "--client-crl-file".to_string(),
            Side::Peer => "--peer-crl-file".to_string(),
        };
        let files = VerifierFiles {
            flag: side.flag("trusted-ca-file"),
            ca: ca.to_path_buf(),
            crl: crl.map(|p| (crl_flag, p.to_path_buf())),
            allowed,
            provider,
        };
        let stamp = files.stamp();
        let verifier = files.build()?;
        Ok(ReloadingClientVerifier {
            files,
            current: Mutex::new((stamp, verifier)),
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.files.stamp();
        if stamp != cur.0 {
            cur.0 = stamp;
            match self.files.build() {
                Ok(v) => {
                    tracing::info!(ca = %self.files.ca.display(), "reloaded the trusted CA");
                    cur.1 = v;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not reload the trusted CA; keeping the previous one")
                }
            }
        }
        cur.1.clone()
    }
}

impl VerifierFiles {
    fn stamp(&self) -> Stamp {
        let mut s = vec![files::mtime(&self.ca)];
        if let Some((_, crl)) = &self.crl {
            s.push(files::mtime(crl));
        }
        s
    }

    fn build(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let (roots, certs) = files::load_roots(&self.flag, &self.ca)?;
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone());
        if let Some((flag, path)) = &self.crl {
            // Go's etcd looks up every presented certificate's serial in one list; webpki
            // checks each certificate against its issuer's CRL. Certificates no CRL
            // speaks for stay accepted, as in etcd.
            builder = builder
                .with_crls(files::load_crls(flag, path)?)
                .allow_unknown_revocation_status();
        }
        let webpki = builder.build().map_err(|e| TlsError::File {
            flag: self.flag.clone(),
            path: self.ca.clone(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(ca_leaf::ClientVerifier::new(
            webpki,
            certs,
            self.allowed.clone(),
        )))
    }
}

impl fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingClientVerifier")
            .field("ca", &self.files.ca)
            .finish()
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients then send the certificate they have (Go and OpenSSL clients
        // hold one), and the hints would go stale when the CA file changes.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.files.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.files.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.files
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
