//! `--auto-tls` / `--peer-auto-tls`: etcd's SelfCert, a self-signed ECDSA P-256
//! certificate for the member's hosts, valid for a year, for servers and clients alike
//! (peers present it when they dial).

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// A fresh self-signed certificate naming `hosts` (IP addresses and DNS names).
pub(super) fn self_signed(
    hosts: &[String],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let failed =
        |e: rcgen::Error| TlsError::Config(format!("auto TLS: cannot generate a certificate: {e}"));
    let mut names: Vec<String> = hosts.iter().filter(|h| !h.is_empty()).cloned().collect();
    names.sort();
    names.dedup();
    let mut params = CertificateParams::new(names).map_err(failed)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "keel");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    // A little slack before now for members whose clocks lag.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert.der().clone()], der, provider)
        .map_err(|e| TlsError::Config(format!("auto TLS: unusable generated key: {e}")))
}
