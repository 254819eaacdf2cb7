//! `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname` and
//! `--client-cert-allowed-hostname`: beyond chaining to the trusted CA, the other end's
//! certificate must carry this common name, or be valid for this host name or IP, as in
//! etcd's `TLSInfo.baseConfig` (which applies the check to both the certificates a
//! listener receives and those of the servers it dials).

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, Error};

/// What a verified leaf certificate must also satisfy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Its subject's common name is exactly this.
    CommonName(String),
    /// It is valid for this host name or IP address (subject alternative names).
    Hostname(String),
}

impl Allowed {
    /// From the two flags of a side; etcd refuses both at once with this text.
    pub fn from_flags(cn: Option<&str>, hostname: Option<&str>) -> Result<Option<Allowed>, String> {
        match (cn, hostname) {
            (Some(cn), Some(h)) => Err(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={h:?})"
            )),
            (Some(cn), None) => Ok(Some(Allowed::CommonName(cn.to_string()))),
            (None, Some(h)) => Ok(Some(Allowed::Hostname(h.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// Ok if the (already verified) leaf satisfies the requirement; otherwise the
    /// handshake fails, as etcd's "client certificate authentication failed".
    pub(super) fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        let ok = match self {
            Allowed::CommonName(want) => x509_parser::parse_x509_certificate(leaf)
                .ok()
                .and_then(|(_, c)| {
                    c.subject()
                        .iter_common_name()
                        .next()
                        .and_then(|cn| cn.as_str().ok().map(|s| s == want))
                })
                .unwrap_or(false),
            Allowed::Hostname(host) => ServerName::try_from(host.as_str())
                .ok()
                .zip(webpki::EndEntityCert::try_from(leaf).ok())
                .is_some_and(|(name, ee)| ee.verify_is_valid_for_subject_name(&name).is_ok()),
        };
        if ok {
            Ok(())
        } else {
            Err(CertificateError::ApplicationVerificationFailure.into())
        }
    }
}
