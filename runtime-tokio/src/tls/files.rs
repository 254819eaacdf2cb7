//! Reading PEM certificates, keys and CA bundles, with errors that name the flag and file.

use std::path::Path;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::TlsError;

fn bad(flag: &str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| bad(flag, path, format!("cannot read: {e}")))
}

/// The certificates of a PEM file; at least one.
pub(super) fn load_certs(
    flag: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(flag, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        // Go's crypto/tls text, which operators of etcd know.
        return Err(bad(
            flag,
            path,
            "tls: failed to find any PEM data in certificate input",
        ));
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub(super) fn load_certified_key(
    cert_flag: &str,
    cert: &Path,
    key_flag: &str,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert_flag, cert)?;
    let pem = read(key_flag, key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad(
            key_flag,
            key,
            "tls: failed to find any PEM data in key input",
        ),
        e => bad(key_flag, key, format!("invalid PEM: {e}")),
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            bad(key_flag, key, "tls: private key does not match public key")
        }
        e => bad(key_flag, key, format!("unusable private key: {e}")),
    })
}

/// The CA certificates of a PEM bundle as trust anchors, and as they are (see
/// [`super::ca_leaf`]).
pub(super) fn load_roots(
    flag: &str,
    path: &Path,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = load_certs(flag, path)?;
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| bad(flag, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok((roots, certs))
}

/// When the file last changed (None if it cannot be read now).
pub(super) fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The revocation lists of a CRL file: PEM (`X509 CRL` blocks) or one DER list, as Go's
/// `x509.ParseCRL` takes either.
pub(super) fn load_crls(
    flag: &str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(flag, path, format!("invalid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(bad(flag, path, "no X509 CRL found"));
    }
    Ok(crls)
}
