//! ES512 tokens (ECDSA on P-521 with SHA-512), which etcd signs and verifies but
//! jsonwebtoken 9 cannot: it runs on ring, which has no P-521. The compact JWS
//! (`header.claims.signature`, base64url without padding, the signature `r || s` as two
//! 66-byte integers) is put together here around RustCrypto's `p521`; the claims and
//! their checks are the same as for every other method (see `jwt.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p521::ecdsa::signature::{Signer, Verifier};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use p521::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde_json::Value;

/// The header etcd's golang-jwt writes for ES512 (field order does not matter to a reader).
const HEADER: &str = r#"{"alg":"ES512","typ":"JWT"}"#;

/// A P-521 private key in PEM: SEC1 (`EC PRIVATE KEY`, what `openssl ecparam -genkey`
/// writes) or PKCS#8 (`PRIVATE KEY`).
pub(super) fn signing_key(pem: &[u8]) -> Result<SigningKey, String> {
    let pem = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        let secret = p521::SecretKey::from_sec1_pem(pem).map_err(|e| e.to_string())?;
        Ok(SigningKey::from(secret))
    } else {
        SigningKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())
    }
}

/// A P-521 public key in PEM: SPKI (`PUBLIC KEY`) or a certificate holding one.
pub(super) fn verifying_key(pem: &[u8]) -> Result<VerifyingKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| e.to_string());
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    VerifyingKey::from_public_key_der(cert.tbs_certificate.subject_pki.raw)
        .map_err(|e| e.to_string())
}

/// The token for `claims`.
pub(super) fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut token = format!("{}.{}", B64.encode(HEADER), B64.encode(claims.to_string()));
    let sig: Signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&B64.encode(sig.to_bytes()));
    token
}

/// The claims of `token` if it is an ES512 token signed by `key` that has not expired
/// (`exp` is required and, as golang-jwt has it, allows no clock skew).
pub(super) fn verify(key: &VerifyingKey, token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (header, claims, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // The method is the member's, never the token's: an `alg` other than ES512 (say
    // HS512, keyed with the public key) is refused before any signature is looked at.
    let h: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
    if h.get("alg")?.as_str()? != "ES512" {
        return None;
    }
    let sig = Signature::from_slice(&B64.decode(sig).ok()?).ok()?;
    let signed = &token[..header.len() + 1 + claims.len()];
    key.verify(signed.as_bytes(), &sig).ok()?;
    let claims: Value = serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    (claims.get("exp")?.as_u64()? >= now).then_some(claims)
}

/// Whether `signing` and `verifying` are the two halves of one key pair.
pub(super) fn is_pair(signing: &SigningKey, verifying: &VerifyingKey) -> bool {
    VerifyingKey::from(signing) == *verifying
}
