//! A trusted CA certificate presented as the peer's own certificate.
//!
//! Quick setups and etcd's own test fixtures use one self-signed certificate as CA,
//! server and client certificate at once. Go's crypto/x509, which etcd verifies with,
//! accepts such a certificate when it is itself one of the trusted roots; webpki refuses
//! every CA certificate (basicConstraints CA:TRUE) as an end entity
//! (`CaUsedAsEndEntity`). The verifiers here run webpki first, unchanged, and only when
//! it refuses for exactly that reason accept the certificate if it is byte for byte a
//! certificate of the trusted CA file, valid now, allowed for the purpose (when it names
//! purposes) and, for a server, issued for the host dialed. Nothing else is loosened.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::allowed::Allowed;

/// What the presented certificate must be good for.
#[derive(Clone, Copy, Debug)]
enum Purpose<'a> {
    /// A server dialed by this name.
    Server(&'a ServerName<'a>),
    /// A client.
    Client,
}

/// Whether webpki refused `e` only because the certificate is a CA's.
fn refused_as_ca(e: &Error) -> bool {
    match e {
        Error::InvalidCertificate(CertificateError::Other(o)) => {
            o.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity)
        }
        _ => false,
    }
}

/// Go's answer for a CA certificate presented as an end entity: accepted if it is one of
/// `trusted` and usable now for `purpose`.
fn accept_trusted(
    presented: &CertificateDer<'_>,
    trusted: &[CertificateDer<'static>],
    now: UnixTime,
    purpose: Purpose<'_>,
) -> Result<(), Error> {
    if !trusted.iter().any(|t| t.as_ref() == presented.as_ref()) {
        return Err(CertificateError::UnknownIssuer.into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(presented)
        .map_err(|_| Error::from(CertificateError::BadEncoding))?;
    let at = i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| x509_parser::time::ASN1Time::from_timestamp(s).ok())
        .ok_or(Error::from(CertificateError::Expired))?;
    if !cert.validity().is_valid_at(at) {
        return Err(CertificateError::Expired.into());
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        let allowed = eku.any
            || match purpose {
                Purpose::Server(_) => eku.server_auth,
                Purpose::Client => eku.client_auth,
            };
        if !allowed {
            return Err(CertificateError::InvalidPurpose.into());
        }
    }
    if let Purpose::Server(name) = purpose {
        let ee = webpki::EndEntityCert::try_from(presented)
            .map_err(|_| Error::from(CertificateError::BadEncoding))?;
        ee.verify_is_valid_for_subject_name(name)
            .map_err(|_| Error::from(CertificateError::NotValidForName))?;
    }
    Ok(())
}

/// A server verifier that also takes a trusted CA certificate as the server's own.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    /// A further requirement on a verified certificate (allowed CN or hostname).
    allowed: Option<Allowed>,
}

impl ServerVerifier {
    /// `inner` (webpki over the trusted CA file), tolerating the file's own certificates,
    /// then requiring `allowed` of the certificate.
    pub(super) fn new(
        inner: Arc<dyn ServerCertVerifier>,
        trusted: Vec<CertificateDer<'static>>,
        allowed: Option<Allowed>,
    ) -> ServerVerifier {
        ServerVerifier {
            inner,
            trusted,
            allowed,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(e) if refused_as_ca(&e) => {
                accept_trusted(end_entity, &self.trusted, now, Purpose::Server(server_name))?;
                ServerCertVerified::assertion()
            }
            r => r?,
        };
        if let Some(a) = &self.allowed {
            a.check(end_entity)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client verifier that also takes a trusted CA certificate as the client's own.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    /// A further requirement on a verified certificate (allowed CN or hostname).
    allowed: Option<Allowed>,
}

impl ClientVerifier {
    /// `inner` (webpki over the trusted CA file), tolerating the file's own certificates,
    /// then requiring `allowed` of the certificate.
    pub(super) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        trusted: Vec<CertificateDer<'static>>,
        allowed: Option<Allowed>,
    ) -> ClientVerifier {
        ClientVerifier {
            inner,
            trusted,
            allowed,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(e) if refused_as_ca(&e) => {
                accept_trusted(end_entity, &self.trusted, now, Purpose::Client)?;
                ClientCertVerified::assertion()
            }
            r => r?,
        };
        if let Some(a) = &self.allowed {
            a.check(end_entity)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
