//! etcd's JWT tokens: `{"username", "revision", "exp"}` signed with the key and method of
//! `--auth-token jwt,...` (RS*, PS*, ES256, ES384, ES512, EdDSA with PEM keys; HS* with
//! the `priv-key` file's bytes as the shared secret). ES512 has its own signer
//! (`es512.rs`); the rest go through jsonwebtoken.
//!
//! As in etcd, `priv-key` alone signs and verifies, `pub-key` alone only verifies (a
//! member that can't sign fails Authenticate), and both must be halves of one key pair.
//! Private keys may be PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`, what
//! `openssl ecparam -genkey` writes) or PKCS#8; public keys SPKI (`PUBLIC KEY`), PKCS#1
//! (`RSA PUBLIC KEY`) or a certificate.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::spec::{
    JwtOptions, INVALID_METHOD, INVALID_OPTS, KEY_MISMATCH, MISSING_KEY, VERIFY_ONLY,
};
use super::{es512, AuthInfo};

/// The sign methods keel takes, as etcd spells them.
const METHODS: &str =
    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512";

#[derive(Clone, Copy)]
enum Family {
    Rsa,
    Ec(&'static sig::EcdsaSigningAlgorithm, Curve),
    Ed,
    Hmac,
}

#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The DER of the curve's OID (with tag and length).
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }
}

/// A sign method: one of jsonwebtoken's, or ES512.
enum Method {
    Lib(Algorithm, Family),
    Es512,
}

fn method(name: &str) -> Result<Method, String> {
    let m = match name {
        "RS256" => (Algorithm::RS256, Family::Rsa),
        "RS384" => (Algorithm::RS384, Family::Rsa),
        "RS512" => (Algorithm::RS512, Family::Rsa),
        "PS256" => (Algorithm::PS256, Family::Rsa),
        "PS384" => (Algorithm::PS384, Family::Rsa),
        "PS512" => (Algorithm::PS512, Family::Rsa),
        "ES256" => (
            Algorithm::ES256,
            Family::Ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256),
        ),
        "ES384" => (
            Algorithm::ES384,
            Family::Ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384),
        ),
        "EdDSA" => (Algorithm::EdDSA, Family::Ed),
        "HS256" => (Algorithm::HS256, Family::Hmac),
        "HS384" => (Algorithm::HS384, Family::Hmac),
        "HS512" => (Algorithm::HS512, Family::Hmac),
        "ES512" => return Ok(Method::Es512),
        other => {
            return Err(format!(
                "{INVALID_METHOD}: unknown sign-method {other:?} (expected one of {METHODS})"
            ))
        }
    };
    Ok(Method::Lib(m.0, m.1))
}

pub(crate) struct JwtTokens {
    ttl: Duration,
    keys: MethodKeys,
}

/// The keys of one method; a `None` signing key means verify-only (only `pub-key` given).
enum MethodKeys {
    Lib {
        alg: Algorithm,
        signing: Option<EncodingKey>,
        verifying: DecodingKey,
        validation: Validation,
    },
    P521 {
        signing: Option<p521::ecdsa::SigningKey>,
        verifying: p521::ecdsa::VerifyingKey,
    },
}

impl JwtTokens {
    /// Reads and checks the keys named by the options.
    pub(crate) fn load(opts: &JwtOptions) -> Result<JwtTokens, String> {
        let method_name = &opts.sign_method;
        // The method first: an unknown one is the error, whatever the key files hold.
        let method = method(method_name)?;
        let private = opts.priv_key.as_deref().map(read).transpose()?;
        let public = opts.pub_key.as_deref().map(read).transpose()?;
        let keys = match method {
            Method::Lib(alg, Family::Hmac) => {
                let Some((_, secret)) = private.filter(|(_, s)| !s.is_empty()) else {
                    return Err(format!(
                        "{MISSING_KEY}: jwt with {method_name} needs priv-key=PATH holding the shared secret"
                    ));
                };
                lib_keys(
                    alg,
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Method::Lib(alg, family) => {
                let signing = private
                    .as_ref()
                    .map(|(path, pem)| private_key(family, path, pem))
                    .transpose()?;
                let from_pub = public
                    .as_ref()
                    .map(|(path, pem)| public_key(family, path, pem))
                    .transpose()?;
                let (signing, verifying) = one_pair(method_name, signing, from_pub, |enc, dec| {
                    check_pair(alg, enc, dec)
                })?;
                lib_keys(alg, signing, verifying)
            }
            Method::Es512 => {
                let signing = private
                    .as_ref()
                    .map(|(path, pem)| {
                        let key = es512::signing_key(pem).map_err(|e| {
                            format!("{INVALID_OPTS}: priv-key {path} is not a P-521 EC private key in PEM ({e})")
                        })?;
                        let derived = *key.verifying_key();
                        Ok::<_, String>((key, derived))
                    })
                    .transpose()?;
                let from_pub = public
                    .as_ref()
                    .map(|(path, pem)| {
                        es512::verifying_key(pem).map_err(|e| {
                            format!("{INVALID_OPTS}: pub-key {path} is not a P-521 EC public key in PEM ({e})")
                        })
                    })
                    .transpose()?;
                let (signing, verifying) = one_pair(method_name, signing, from_pub, |sk, vk| {
                    if es512::is_pair(sk, vk) {
                        Ok(())
                    } else {
                        Err(KEY_MISMATCH.to_owned())
                    }
                })?;
                MethodKeys::P521 { signing, verifying }
            }
        };
        Ok(JwtTokens {
            ttl: opts.ttl,
            keys,
        })
    }

    pub(crate) fn assign(&self, name: &str, revision: u64) -> Result<String, String> {
        let exp = (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sign(name, revision, exp)
    }

    /// A token for `name` at `revision` expiring at `exp` (Unix seconds).
    pub(crate) fn sign(&self, name: &str, revision: u64, exp: u64) -> Result<String, String> {
        let claims = serde_json::json!({
            "username": name,
            "revision": revision,
            "exp": exp,
        });
        match &self.keys {
            MethodKeys::Lib { alg, signing, .. } => {
                let key = signing.as_ref().ok_or_else(|| VERIFY_ONLY.to_owned())?;
                jsonwebtoken::encode(&Header::new(*alg), &claims, key)
                    .map_err(|e| format!("auth: failed to sign a JWT token: {e}"))
            }
            MethodKeys::P521 { signing, .. } => {
                let key = signing.as_ref().ok_or_else(|| VERIFY_ONLY.to_owned())?;
                Ok(es512::sign(key, &claims))
            }
        }
    }

    pub(crate) fn info(&self, token: &str) -> Option<AuthInfo> {
        let claims = match &self.keys {
            MethodKeys::Lib {
                verifying,
                validation,
                ..
            } => {
                jsonwebtoken::decode::<serde_json::Value>(token, verifying, validation)
                    .map_err(|e| tracing::debug!(error = %e, "rejected a JWT token"))
                    .ok()?
                    .claims
            }
            MethodKeys::P521 { verifying, .. } => es512::verify(verifying, token)?,
        };
        let user = claims.get("username")?.as_str()?.to_owned();
        // Go decodes JSON numbers as float64; take either spelling.
        let rev = claims.get("revision")?;
        let revision = rev.as_u64().or_else(|| {
            rev.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })?;
        Some(AuthInfo { user, revision })
    }
}

/// jsonwebtoken's keys for `alg`, checked as golang-jwt (which etcd uses) checks tokens.
fn lib_keys(alg: Algorithm, signing: Option<EncodingKey>, verifying: DecodingKey) -> MethodKeys {
    let mut validation = Validation::new(alg);
    // golang-jwt allows no clock skew on `exp`.
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.set_required_spec_claims(&["exp"]);
    MethodKeys::Lib {
        alg,
        signing,
        verifying,
        validation,
    }
}

/// The signing key (if `priv-key` was given) and the verifying key: `pub-key`'s if given,
/// which must then be the public half of `priv-key` (`check`), else the one derived from
/// `priv-key`.
fn one_pair<S, V>(
    method_name: &str,
    signing: Option<(S, V)>,
    from_pub: Option<V>,
    check: impl FnOnce(&S, &V) -> Result<(), String>,
) -> Result<(Option<S>, V), String> {
    match (signing, from_pub) {
        (None, None) => Err(format!(
            "{MISSING_KEY}: jwt with {method_name} needs priv-key=PATH, or pub-key=PATH to only verify tokens"
        )),
        (None, Some(verifying)) => Ok((None, verifying)),
        (Some((signing, derived)), None) => Ok((Some(signing), derived)),
        (Some((signing, _)), Some(verifying)) => {
            check(&signing, &verifying)?;
            Ok((Some(signing), verifying))
        }
    }
}

fn read(path: &Path) -> Result<(String, Vec<u8>), String> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{INVALID_OPTS}: cannot read key file {shown}: {e}"))?;
    Ok((shown, bytes))
}

/// The signing key and the verifying key derived from it.
fn private_key(
    family: Family,
    path: &str,
    pem: &[u8],
) -> Result<(EncodingKey, DecodingKey), String> {
    let what = match family {
        Family::Rsa => "an RSA",
        Family::Ec(_, Curve::P256) => "a P-256 EC",
        Family::Ec(_, Curve::P384) => "a P-384 EC",
        Family::Ed | Family::Hmac => "an Ed25519",
    };
    let bad = |detail: String| {
        format!("{INVALID_OPTS}: priv-key {path} is not {what} private key in PEM ({detail})")
    };
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(e.to_string()))?;
    match (family, &der) {
        (Family::Rsa, PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_)) => {
            let pair = match &der {
                PrivateKeyDer::Pkcs1(k) => sig::RsaKeyPair::from_der(k.secret_pkcs1_der()),
                _ => sig::RsaKeyPair::from_pkcs8(der.secret_der()),
            }
            .map_err(|e| bad(e.to_string()))?;
            let enc = EncodingKey::from_rsa_pem(pem).map_err(|e| bad(e.to_string()))?;
            Ok((enc, DecodingKey::from_rsa_der(pair.public_key().as_ref())))
        }
        (Family::Ec(alg, curve), PrivateKeyDer::Sec1(_) | PrivateKeyDer::Pkcs8(_)) => {
            let pkcs8 = match &der {
                PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der(), curve),
                _ => der.secret_der().to_vec(),
            };
            let pair = sig::EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &SystemRandom::new())
                .map_err(|e| bad(e.to_string()))?;
            Ok((
                EncodingKey::from_ec_der(&pkcs8),
                DecodingKey::from_ec_der(pair.public_key().as_ref()),
            ))
        }
        (Family::Ed, PrivateKeyDer::Pkcs8(k)) => {
            let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
                .map_err(|e| bad(e.to_string()))?;
            Ok((
                EncodingKey::from_ed_der(k.secret_pkcs8_der()),
                DecodingKey::from_ed_der(pair.public_key().as_ref()),
            ))
        }
        _ => Err(bad("another kind of key".into())),
    }
}

fn public_key(family: Family, path: &str, pem: &[u8]) -> Result<DecodingKey, String> {
    let (key, what) = match family {
        Family::Rsa => (DecodingKey::from_rsa_pem(pem), "an RSA"),
        Family::Ec(..) => (DecodingKey::from_ec_pem(pem), "an EC"),
        Family::Ed | Family::Hmac => (DecodingKey::from_ed_pem(pem), "an Ed25519"),
    };
    key.map_err(|e| format!("{INVALID_OPTS}: pub-key {path} is not {what} public key in PEM ({e})"))
}

/// etcd refuses a `pub-key` that is not the public half of `priv-key`: sign a probe with
/// one and verify it with the other.
fn check_pair(
    alg: Algorithm,
    signing: &EncodingKey,
    verifying: &DecodingKey,
) -> Result<(), String> {
    let probe = b"keel auth key pair check";
    let matches = jsonwebtoken::crypto::sign(probe, signing, alg)
        .and_then(|s| jsonwebtoken::crypto::verify(&s, probe, verifying, alg))
        .unwrap_or(false);
    if matches {
        Ok(())
    } else {
        Err(KEY_MISMATCH.to_owned())
    }
}

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo`, which ring reads.
fn sec1_to_pkcs8(sec1: &[u8], curve: Curve) -> Vec<u8> {
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let mut alg_id = EC_PUBLIC_KEY.to_vec();
    alg_id.extend_from_slice(curve.oid());
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend(der(0x30, &alg_id));
    body.extend(der(0x04, sec1));
    der(0x30, &body)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use std::path::PathBuf;
    use std::sync::OnceLock;

    /// Test key files, generated once per test binary (RSA generation is slow).
    struct Keys {
        _dir: tempfile::TempDir,
        rsa_pkcs8: PathBuf,
        rsa_pkcs1: PathBuf,
        rsa_pub: PathBuf,
        other_rsa: PathBuf,
        other_rsa_pub: PathBuf,
        ec: PathBuf,
        ec_sec1: PathBuf,
        ec_pub: PathBuf,
        other_ec: PathBuf,
        ed: PathBuf,
        secret: PathBuf,
        garbage: PathBuf,
        dir: PathBuf,
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().to_owned();
            let write = |name: &str, data: &[u8]| {
                let path = p.join(name);
                std::fs::write(&path, data).expect("write key");
                path
            };
            let mut rng = rsa::rand_core::OsRng;
            let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
            let other_rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
            let pkcs8 = rsa_key.to_pkcs8_pem(LineEnding::LF).expect("pem");
            let pkcs1 = rsa_key.to_pkcs1_pem(LineEnding::LF).expect("pem");
            let rsa_pub = rsa_key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem");
            let other_pkcs8 = other_rsa_key.to_pkcs8_pem(LineEnding::LF).expect("pem");
            let other_pub = other_rsa_key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem");
            let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
            let other_ec =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
            let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed");
            Keys {
                rsa_pkcs8: write("rsa.key", pkcs8.as_bytes()),
                rsa_pkcs1: write("rsa1.key", pkcs1.as_bytes()),
                rsa_pub: write("rsa.pub", rsa_pub.as_bytes()),
                other_rsa: write("other.key", other_pkcs8.as_bytes()),
                other_rsa_pub: write("other.pub", other_pub.as_bytes()),
                ec: write("ec.key", ec.serialize_pem().as_bytes()),
                ec_sec1: write("ec1.key", sec1_pem(&ec.serialize_der()).as_bytes()),
                ec_pub: write("ec.pub", ec.public_key_pem().as_bytes()),
                other_ec: write("other-ec.key", other_ec.serialize_pem().as_bytes()),
                ed: write("ed.key", ed.serialize_pem().as_bytes()),
                secret: write("hmac.secret", b"s3cr3t-shared-by-all-members\n"),
                garbage: write("garbage.pem", b"not a key\n"),
                dir: p,
                _dir: dir,
            }
        })
    }

    /// The SEC1 `EC PRIVATE KEY` inside a PKCS#8 P-256 key (openssl's usual EC format).
    fn sec1_pem(pkcs8: &[u8]) -> String {
        // PrivateKeyInfo = SEQ { INT 0, SEQ { 2 OIDs }, OCTET STRING { ECPrivateKey } }:
        // the ECPrivateKey is the content of the last OCTET STRING, at the end.
        let alg_len = 2 + 9 + 10; // SEQ header + ecPublicKey OID + prime256v1 OID
        let start = hdr_len(pkcs8) + 3 + alg_len;
        let octets = &pkcs8[start..];
        let sec1 = &octets[hdr_len(octets)..];
        let b64 = base64_encode(sec1);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    fn hdr_len(der: &[u8]) -> usize {
        if der[1] < 0x80 {
            2
        } else {
            2 + usize::from(der[1] & 0x7f)
        }
    }

    fn base64_encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn spec(method: &str, pubk: Option<&Path>, privk: Option<&Path>) -> String {
        let mut s = format!("jwt,sign-method={method}");
        if let Some(p) = pubk {
            s.push_str(&format!(",pub-key={}", p.display()));
        }
        if let Some(p) = privk {
            s.push_str(&format!(",priv-key={}", p.display()));
        }
        s
    }

    fn tokens(spec: &str) -> Tokens {
        Tokens::from_spec(spec, Duration::ZERO).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn round_trip(t: &Tokens) {
        assert!(t.is_jwt());
        assert_eq!(t.new_simple_token(), "");
        let token = t.assign("alice", "", 42).expect("sign");
        assert_eq!(token.split('.').count(), 3);
        let info = t.info(&token).expect("valid token");
        assert_eq!((info.user.as_str(), info.revision), ("alice", 42));
        // JWT info carries its own revision, whatever the store's.
        assert_eq!(t.info_at_revision(&token, 50).map(|i| i.revision), Some(42));
        assert!(t.info("garbage").is_none());
        assert!(t.info(&format!("{token}x")).is_none());
    }

    #[test]
    fn rsa_round_trips() {
        let k = keys();
        for m in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            round_trip(&tokens(&spec(m, Some(&k.rsa_pub), Some(&k.rsa_pkcs8))));
        }
        // Private key alone (public half derived), PKCS#1 too.
        round_trip(&tokens(&spec("RS256", None, Some(&k.rsa_pkcs8))));
        round_trip(&tokens(&spec("RS256", None, Some(&k.rsa_pkcs1))));
    }

    #[test]
    fn ec_ed_and_hmac_round_trip() {
        let k = keys();
        round_trip(&tokens(&spec("ES256", Some(&k.ec_pub), Some(&k.ec))));
        round_trip(&tokens(&spec("ES256", None, Some(&k.ec))));
        round_trip(&tokens(&spec("ES256", Some(&k.ec_pub), Some(&k.ec_sec1))));
        round_trip(&tokens(&spec("EdDSA", None, Some(&k.ed))));
        for m in ["HS256", "HS384", "HS512"] {
            round_trip(&tokens(&spec(m, None, Some(&k.secret))));
        }
    }

    #[test]
    fn verify_only_members_check_but_cannot_sign() {
        let k = keys();
        let signer = tokens(&spec("RS256", None, Some(&k.rsa_pkcs8)));
        let verifier = tokens(&spec("RS256", Some(&k.rsa_pub), None));
        let token = signer.assign("bob", "", 3).expect("sign");
        let info = verifier.info(&token).expect("verified");
        assert_eq!((info.user.as_str(), info.revision), ("bob", 3));
        assert_eq!(
            verifier.assign("bob", "", 3),
            Err("auth: token signing attempted with verify-only key".to_owned())
        );
        let ec_verifier = tokens(&spec("ES256", Some(&k.ec_pub), None));
        let ec_token = tokens(&spec("ES256", None, Some(&k.ec)))
            .assign("carol", "", 1)
            .expect("sign");
        assert!(ec_verifier.info(&ec_token).is_some());
    }

    #[test]
    fn tokens_from_another_key_or_method_are_rejected() {
        let k = keys();
        let ours = tokens(&spec("RS256", None, Some(&k.rsa_pkcs8)));
        let theirs = tokens(&spec("RS256", None, Some(&k.other_rsa)));
        let token = theirs.assign("alice", "", 1).expect("sign");
        assert!(ours.info(&token).is_none());
        // Same key, another algorithm.
        let rs512 = tokens(&spec("RS512", None, Some(&k.rsa_pkcs8)));
        assert!(ours
            .info(&rs512.assign("alice", "", 1).expect("sign"))
            .is_none());
        let ec = tokens(&spec("ES256", None, Some(&k.ec)));
        let other_ec = tokens(&spec("ES256", None, Some(&k.other_ec)));
        assert!(ec
            .info(&other_ec.assign("a", "", 1).expect("sign"))
            .is_none());
        // An HMAC token made with the RSA public key as secret (the classic confusion).
        let pub_pem = std::fs::read(&k.rsa_pub).expect("read");
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"username": "root", "revision": 1, "exp": u64::MAX / 2}),
            &EncodingKey::from_secret(&pub_pem),
        )
        .expect("encode");
        assert!(tokens(&spec("RS256", Some(&k.rsa_pub), None))
            .info(&forged)
            .is_none());
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let k = keys();
        let Kind::Jwt(j) = tokens(&spec("ES256", None, Some(&k.ec))).kind else {
            panic!("jwt expected");
        };
        let MethodKeys::Lib { signing, .. } = &j.keys else {
            panic!("jsonwebtoken keys expected");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(j
            .info(&j.sign("alice", 1, now - 1).expect("sign"))
            .is_none());
        assert!(j
            .info(&j.sign("alice", 1, now + 60).expect("sign"))
            .is_some());
        // Claims etcd needs, missing.
        let no_user = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"revision": 1, "exp": now + 60}),
            signing.as_ref().expect("key"),
        )
        .expect("encode");
        assert!(j.info(&no_user).is_none());
        // Go's float revision is accepted.
        let float_rev = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"username": "a", "revision": 5.0, "exp": now + 60}),
            signing.as_ref().expect("key"),
        )
        .expect("encode");
        assert_eq!(j.info(&float_rev).map(|i| i.revision), Some(5));
    }

    #[test]
    fn ttl_sets_exp() {
        let k = keys();
        let t = tokens(&format!("{},ttl=1h", spec("HS256", None, Some(&k.secret))));
        let Kind::Jwt(j) = &t.kind else {
            panic!("jwt expected");
        };
        let MethodKeys::Lib {
            verifying,
            validation,
            ..
        } = &j.keys
        else {
            panic!("jsonwebtoken keys expected");
        };
        let token = t.assign("a", "", 1).expect("sign");
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, verifying, validation)
            .expect("decode");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let exp = data.claims["exp"].as_u64().expect("exp");
        assert!(
            (now + 3599..=now + 3601).contains(&exp),
            "exp {exp} now {now}"
        );
    }

    #[test]
    fn bad_jwt_specs_give_one_line() {
        let k = keys();
        let err = |s: String| Tokens::from_spec(&s, Duration::ZERO).expect_err(&s);
        assert_eq!(
            err(spec("RS256", None, None)),
            "auth: missing key data: jwt with RS256 needs priv-key=PATH, or pub-key=PATH to only verify tokens"
        );
        assert_eq!(
            err(spec("HS256", Some(&k.rsa_pub), None)),
            "auth: missing key data: jwt with HS256 needs priv-key=PATH holding the shared secret"
        );
        assert_eq!(
            err(spec("XS256", None, Some(&k.rsa_pkcs8))),
            format!("auth: invalid auth signature method: unknown sign-method \"XS256\" (expected one of {METHODS})")
        );
        let e = err(spec("ES512", None, Some(&k.ec)));
        assert!(e.contains("is not a P-521 EC private key in PEM"), "{e}");
        let e = err(spec("ES512", Some(&k.ec_pub), None));
        assert!(e.contains("is not a P-521 EC public key in PEM"), "{e}");
        assert_eq!(
            err(spec("ES512", None, None)),
            "auth: missing key data: jwt with ES512 needs priv-key=PATH, or pub-key=PATH to only verify tokens"
        );
        assert_eq!(
            err(spec(
                "ES512",
                Some(&es512("other-public.pem")),
                Some(&es512("sec1.key"))
            )),
            "auth: public and private keys don't match"
        );
        let missing = k.dir.join("missing.key");
        assert_eq!(
            err(spec("RS256", None, Some(&missing))),
            format!(
                "auth: invalid auth options: cannot read key file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let e = err(spec("RS256", None, Some(&k.garbage)));
        assert!(
            e.starts_with(&format!(
                "auth: invalid auth options: priv-key {} is not an RSA private key in PEM (",
                k.garbage.display()
            )),
            "{e}"
        );
        let e = err(spec("RS256", None, Some(&k.ec)));
        assert!(e.contains("is not an RSA private key in PEM"), "{e}");
        let e = err(spec("ES384", None, Some(&k.ec)));
        assert!(e.contains("is not a P-384 EC private key in PEM"), "{e}");
        let e = err(spec("RS256", Some(&k.garbage), None));
        assert!(
            e.starts_with(&format!(
                "auth: invalid auth options: pub-key {} is not an RSA public key in PEM (",
                k.garbage.display()
            )),
            "{e}"
        );
        assert_eq!(
            err(spec("RS256", Some(&k.other_rsa_pub), Some(&k.rsa_pkcs8))),
            "auth: public and private keys don't match"
        );
        for e in [
            err(spec("RS256", None, None)),
            err("jwt,sign-method=RS256,ttl=x".into()),
        ] {
            assert!(!e.contains('\n'));
        }
    }

    /// A file of `testdata/es512` (P-521 keys made by openssl; see its README).
    fn es512(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/es512")
            .join(name)
    }

    #[test]
    fn es512_round_trips_with_every_key_format() {
        let (sec1, pkcs8) = (es512("sec1.key"), es512("pkcs8.key"));
        let (public, cert) = (es512("public.pem"), es512("cert.pem"));
        round_trip(&tokens(&spec("ES512", Some(&public), Some(&sec1))));
        round_trip(&tokens(&spec("ES512", Some(&cert), Some(&pkcs8))));
        round_trip(&tokens(&spec("ES512", None, Some(&sec1))));
        // Verify-only members, from the public key or the certificate.
        let token = tokens(&spec("ES512", None, Some(&pkcs8)))
            .assign("dave", "", 9)
            .expect("sign");
        for verifier in [&public, &cert] {
            let t = tokens(&spec("ES512", Some(verifier), None));
            let info = t.info(&token).expect("verified");
            assert_eq!((info.user.as_str(), info.revision), ("dave", 9));
            assert_eq!(
                t.assign("dave", "", 9),
                Err("auth: token signing attempted with verify-only key".to_owned())
            );
        }
    }

    #[test]
    fn es512_accepts_what_etcd_signs() {
        // Signed by etcd 3.4.23 with sec1.key (see testdata/es512/README.md).
        let token = std::fs::read_to_string(es512("etcd-3.4.23-root.jwt")).expect("token");
        let t = tokens(&spec("ES512", Some(&es512("public.pem")), None));
        let info = t.info(token.trim()).expect("etcd's token verifies");
        assert_eq!((info.user.as_str(), info.revision), ("root", 4));
        let other = tokens(&spec("ES512", Some(&es512("other-public.pem")), None));
        assert!(other.info(token.trim()).is_none());
    }

    #[test]
    fn es512_rejects_forged_expired_and_other_method_tokens() {
        let ours = tokens(&spec("ES512", None, Some(&es512("sec1.key"))));
        let Kind::Jwt(j) = &ours.kind else {
            panic!("jwt expected");
        };
        let theirs = tokens(&spec("ES512", None, Some(&es512("other.key"))));
        assert!(ours
            .info(&theirs.assign("root", "", 1).expect("sign"))
            .is_none());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(j.info(&j.sign("a", 1, now - 1).expect("sign")).is_none());
        assert!(j.info(&j.sign("a", 1, now + 60).expect("sign")).is_some());
        // A valid token with its claims swapped for root's keeps no valid signature.
        let good = j.sign("alice", 1, now + 60).expect("sign");
        let parts: Vec<&str> = good.split('.').collect();
        let root = serde_json::json!({"username": "root", "revision": 1, "exp": now + 60});
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(root.to_string()),
            parts[2]
        );
        assert!(j.info(&swapped).is_none());
        // HS512 keyed with the public key's PEM: refused for its method.
        let pub_pem = std::fs::read(es512("public.pem")).expect("read");
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &root,
            &EncodingKey::from_secret(&pub_pem),
        )
        .expect("encode");
        assert!(j.info(&forged).is_none());
        for junk in ["", "a.b", "a.b.c.d", "...", &format!("{good}.x")] {
            assert!(j.info(junk).is_none(), "{junk:?}");
        }
    }

    use crate::auth::Kind;
    use base64::Engine;
}
