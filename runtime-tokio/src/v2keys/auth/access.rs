//! Who a v2 request is and what it may do, as etcd's `v2http/client_auth.go` decides:
//! HTTP Basic credentials checked against the user's bcrypt hash (or, with
//! `--client-cert-auth` and no `Authorization` header, the user named by the client
//! certificate's common name), then `hasRootAccess` for the auth and member admin
//! endpoints and `hasKeyPrefixAccess` / `hasGuestAccess` for the keys API.

use axum::http::{header, HeaderMap};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::model::{User, ROOT};
use super::stored::AccessView;
use crate::auth::Passwords;

/// Go's `base64.StdEncoding` as `Request.BasicAuth` decodes: padding required, stray
/// bits in the last character tolerated (it is not `Strict`).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// What a request presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header and no certificate user: a guest.
    Guest,
    /// A verified client certificate's common name (with `--client-cert-auth`).
    Certificate(String),
    /// Basic credentials.
    Basic {
        /// The user name.
        name: String,
        /// The password.
        password: String,
    },
    /// An `Authorization` header that is not well-formed Basic credentials.
    Malformed,
}

impl Credentials {
    /// From the request's headers and the client certificate's common name (present
    /// only when certificates name users).
    pub fn of(headers: &HeaderMap, cert_name: Option<&str>) -> Credentials {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if auth.is_empty() {
            return match cert_name {
                Some(cn) => Credentials::Certificate(cn.to_string()),
                None => Credentials::Guest,
            };
        }
        parse_basic(auth).map_or(Credentials::Malformed, |(name, password)| {
            Credentials::Basic { name, password }
        })
    }

    /// The user whose record the check needs.
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Credentials::Certificate(n) | Credentials::Basic { name: n, .. } => Some(n),
            Credentials::Guest | Credentials::Malformed => None,
        }
    }
}

/// Go's `parseBasicAuth`: "Basic " (any case), standard base64 (CR and LF skipped),
/// then `name:password` split at the first colon.
fn parse_basic(auth: &[u8]) -> Option<(String, String)> {
    const PREFIX: &[u8] = b"basic ";
    if auth.len() < PREFIX.len() || !auth[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let encoded: Vec<u8> = auth[PREFIX.len()..]
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let decoded = GO_STD.decode(encoded).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    // Go strings hold any bytes; a name or password that is not UTF-8 can never match
    // a stored (UTF-8) one, so reading it lossily changes no answer.
    let name = String::from_utf8_lossy(&decoded[..colon]).into_owned();
    let password = String::from_utf8_lossy(&decoded[colon + 1..]).into_owned();
    Some((name, password))
}

/// The authenticated user (`userFromBasicAuth` / `userFromClientCertificate`), or None.
/// Only a password check costs anything; it waits for a slot of the member's capped
/// bcrypt verifier.
pub async fn authenticate<'v>(
    who: &Credentials,
    view: &'v AccessView,
    passwords: &Passwords,
) -> Option<&'v User> {
    let user = view.user.as_ref()?;
    match who {
        Credentials::Certificate(_) => Some(user),
        Credentials::Basic { password, .. } => {
            let ok = passwords
                .verify(password.clone(), user.password.clone())
                .await;
            if !ok {
                tracing::warn!(user_name = %user.user, "incorrect password");
            }
            ok.then_some(user)
        }
        Credentials::Guest | Credentials::Malformed => None,
    }
}

/// `hasRootAccess`: auth is off, or the user has the root role.
pub async fn has_root_access(who: &Credentials, view: &AccessView, passwords: &Passwords) -> bool {
    if !view.enabled {
        return true;
    }
    match authenticate(who, view, passwords).await {
        Some(u) => u.role_names().any(|r| r == ROOT),
        None => false,
    }
}

/// `hasKeyPrefixAccess` for a keys request on `key` (the request path after
/// `/v2/keys`, uncleaned, as etcd takes it): a guest gets the guest role's access,
/// anyone else their roles' (recursive requests need a glob covering the key).
pub async fn has_key_access(
    who: &Credentials,
    view: &AccessView,
    passwords: &Passwords,
    key: &str,
    write: bool,
    recursive: bool,
) -> bool {
    if !view.enabled {
        return true;
    }
    let guest = match who {
        Credentials::Guest => true,
        // A certificate naming no user is a guest; a wrong password is nobody.
        Credentials::Certificate(_) => view.user.is_none(),
        Credentials::Basic { .. } | Credentials::Malformed => false,
    };
    if guest {
        return view
            .guest
            .as_ref()
            .is_some_and(|g| g.has_key_access(key, write));
    }
    if authenticate(who, view, passwords).await.is_none() {
        return false;
    }
    let allowed = view.roles.iter().any(|r| {
        if recursive {
            r.has_recursive_access(key, write)
        } else {
            r.has_key_access(key, write)
        }
    });
    if !allowed {
        tracing::warn!(
            user_name = who.user_name().unwrap_or(""),
            key,
            "invalid access for user on key"
        );
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn creds(auth: &str) -> Credentials {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        Credentials::of(&h, None)
    }

    fn basic(name: &str, password: &str) -> Credentials {
        Credentials::Basic {
            name: name.into(),
            password: password.into(),
        }
    }

    #[test]
    fn basic_credentials_parse_as_go() {
        // "alice:a:pw" -> the password keeps its colon.
        assert_eq!(creds("Basic YWxpY2U6YTpwdw=="), basic("alice", "a:pw"));
        assert_eq!(creds("bAsIc YWxpY2U6YTpwdw=="), basic("alice", "a:pw"));
        assert_eq!(creds("Basic YWxpY2U6"), basic("alice", ""));
        assert_eq!(creds("Basic Og=="), basic("", ""));
        assert_eq!(creds("Basic YWxpY2U="), Credentials::Malformed, "no colon");
        assert_eq!(
            creds("Basic YWxpY2U6YTpwdw"),
            Credentials::Malformed,
            "padding"
        );
        assert_eq!(creds("Basic !!!"), Credentials::Malformed);
        assert_eq!(creds("Bearer x"), Credentials::Malformed);
        assert_eq!(creds("Basic"), Credentials::Malformed);
        // Trailing bits Go's non-strict decoder keeps: "YQ==" and "YR==" are both "a".
        assert_eq!(creds("Basic YTpi"), basic("a", "b"));
        assert_eq!(creds("Basic YTpj"), basic("a", "c"));
        assert_eq!(parse_basic(b"Basic YR=="), None, "no colon in \"a\"");
        assert_eq!(
            GO_STD.decode(b"YR==").ok(),
            Some(b"a".to_vec()),
            "stray bits tolerated"
        );
        assert_eq!(Credentials::of(&HeaderMap::new(), None), Credentials::Guest);
        assert_eq!(
            Credentials::of(&HeaderMap::new(), Some("cn")),
            Credentials::Certificate("cn".into())
        );
        let mut empty = HeaderMap::new();
        empty.insert(header::AUTHORIZATION, HeaderValue::from_static(""));
        assert_eq!(Credentials::of(&empty, None), Credentials::Guest);
    }
}
