//! Parsing `--auth-token` as etcd does (`decomposeOpts` and `jwtOptions.Parse`): the token
//! type, then comma-separated `name=value` options, each name at most once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::go_duration::parse as parse_go_duration;

/// etcd's `ErrInvalidAuthOpts`.
pub(crate) const INVALID_OPTS: &str = "auth: invalid auth options";
/// etcd's `ErrInvalidAuthMethod`.
pub(crate) const INVALID_METHOD: &str = "auth: invalid auth signature method";
/// etcd's `ErrMissingKey`.
pub(crate) const MISSING_KEY: &str = "auth: missing key data";
/// etcd's `ErrKeyMismatch`.
pub(crate) const KEY_MISMATCH: &str = "auth: public and private keys don't match";
/// etcd's `ErrVerifyOnly`.
pub(crate) const VERIFY_ONLY: &str = "auth: token signing attempted with verify-only key";

/// etcd's default JWT lifetime when the spec has no `ttl`.
pub(crate) const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// What `--auth-token` asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenSpec {
    /// `simple` (options, if any, are ignored as etcd does).
    Simple,
    /// `jwt,...`.
    Jwt(JwtOptions),
    /// An empty spec: etcd's no-op token provider.
    Nop,
}

/// The options of a `jwt` spec.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JwtOptions {
    /// `sign-method` as given (validated when the keys are loaded).
    pub sign_method: String,
    /// `pub-key`: a PEM public key (or certificate) file.
    pub pub_key: Option<PathBuf>,
    /// `priv-key`: a PEM private key file, or the shared secret for HS*.
    pub priv_key: Option<PathBuf>,
    /// `ttl` (default 5 minutes).
    pub ttl: Duration,
}

const KNOWN_JWT_OPTIONS: [&str; 4] = ["sign-method", "pub-key", "priv-key", "ttl"];

pub(crate) fn parse(spec: &str) -> Result<TokenSpec, String> {
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or("");
    let mut opts: HashMap<&str, &str> = HashMap::new();
    for opt in parts {
        let pair: Vec<&str> = opt.split('=').collect();
        let [name, value] = pair[..] else {
            return Err(format!("{INVALID_OPTS}: option {opt:?} is not name=value"));
        };
        if opts.insert(name, value).is_some() {
            return Err(format!("{INVALID_OPTS}: option {name:?} is given twice"));
        }
    }
    match kind {
        "simple" => Ok(TokenSpec::Simple),
        "jwt" => jwt_options(&opts).map(TokenSpec::Jwt),
        "" => Ok(TokenSpec::Nop),
        other => Err(format!(
            "{INVALID_OPTS}: unknown token type {other:?} (expected \"simple\" or \"jwt,...\")"
        )),
    }
}

fn jwt_options(opts: &HashMap<&str, &str>) -> Result<JwtOptions, String> {
    let unknown: Vec<&str> = opts
        .keys()
        .copied()
        .filter(|k| !KNOWN_JWT_OPTIONS.contains(k))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(keys = ?unknown, "unknown JWT options in --auth-token");
    }
    let get = |name: &str| opts.get(name).copied().filter(|v| !v.is_empty());
    let ttl = match get("ttl") {
        None => DEFAULT_JWT_TTL,
        Some(ttl) => {
            let d = parse_go_duration(ttl)
                .map_err(|e| format!("{INVALID_OPTS}: jwt ttl {ttl:?}: {e}"))?;
            if d.is_zero() {
                return Err(format!("{INVALID_OPTS}: jwt ttl {ttl:?} must be positive"));
            }
            d
        }
    };
    let sign_method = get("sign-method")
        .ok_or_else(|| format!("{INVALID_METHOD}: jwt needs sign-method=..."))?
        .to_owned();
    Ok(JwtOptions {
        sign_method,
        pub_key: get("pub-key").map(PathBuf::from),
        priv_key: get("priv-key").map(PathBuf::from),
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_empty() {
        assert_eq!(parse("simple"), Ok(TokenSpec::Simple));
        assert_eq!(parse("simple,ttl=5m"), Ok(TokenSpec::Simple));
        assert_eq!(parse(""), Ok(TokenSpec::Nop));
    }

    #[test]
    fn jwt_options_with_defaults() {
        assert_eq!(
            parse("jwt,pub-key=/a.pub,priv-key=/a.key,sign-method=RS256"),
            Ok(TokenSpec::Jwt(JwtOptions {
                sign_method: "RS256".into(),
                pub_key: Some("/a.pub".into()),
                priv_key: Some("/a.key".into()),
                ttl: Duration::from_secs(300),
            }))
        );
        assert_eq!(
            parse("jwt,sign-method=ES256,priv-key=k,ttl=1h30m,extra=1"),
            Ok(TokenSpec::Jwt(JwtOptions {
                sign_method: "ES256".into(),
                pub_key: None,
                priv_key: Some("k".into()),
                ttl: Duration::from_secs(5400),
            }))
        );
    }

    #[test]
    fn bad_specs_are_one_line() {
        let err = |s: &str| parse(s).expect_err(s);
        assert_eq!(
            err("jwtt,sign-method=RS256"),
            "auth: invalid auth options: unknown token type \"jwtt\" (expected \"simple\" or \"jwt,...\")"
        );
        assert_eq!(
            err("jwt,priv-key"),
            "auth: invalid auth options: option \"priv-key\" is not name=value"
        );
        assert_eq!(
            err("jwt,ttl=1m,ttl=2m"),
            "auth: invalid auth options: option \"ttl\" is given twice"
        );
        assert_eq!(
            err("jwt,priv-key=k"),
            "auth: invalid auth signature method: jwt needs sign-method=..."
        );
        assert_eq!(
            err("jwt,sign-method=RS256,ttl=5x"),
            "auth: invalid auth options: jwt ttl \"5x\": time: unknown unit \"x\" in duration \"5x\""
        );
        assert_eq!(
            err("jwt,sign-method=RS256,ttl=0s"),
            "auth: invalid auth options: jwt ttl \"0s\" must be positive"
        );
    }
}
