//! The token and password machinery behind etcd's auth API.
//!
//! - [`Tokens`] issues and resolves the tokens clients send in the `token` metadata
//!   after `Authenticate`: etcd's *simple* tokens (random strings remembered by every
//!   member with a sliding TTL) or *JWT* tokens (signed, self-contained, verified by any
//!   member holding the key), chosen by `--auth-token` exactly as etcd parses it.
//! - [`Passwords`] hashes and checks bcrypt passwords off the async threads, with a cap
//!   on concurrent checks so a stream of wrong passwords queues instead of eating the
//!   member's CPU.
//!
//! The replicated part of auth (users, roles, permissions, the auth revision) lives in
//! `keel_core::auth`; everything here is per-member and in memory.

mod es512;
mod jwt;
mod password;
mod simple;
mod spec;

use std::time::Duration;

pub use keel_core::auth::AuthInfo;
pub use password::Passwords;

use jwt::JwtTokens;
use simple::SimpleTokens;
use spec::TokenSpec;

/// etcd's simple-token TTL when `--auth-token-ttl` is 0.
pub const DEFAULT_SIMPLE_TTL: Duration = Duration::from_secs(300);

/// How this member issues and resolves auth tokens (`--auth-token`). Shared as
/// `Arc<Tokens>`; every method takes `&self`.
pub struct Tokens {
    kind: Kind,
}

enum Kind {
    /// `simple`: random tokens remembered here with a sliding TTL.
    Simple(SimpleTokens),
    /// `jwt,...`: signed tokens.
    Jwt(Box<JwtTokens>),
    /// An empty `--auth-token`: etcd's no-op provider; authentication always fails.
    Nop,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Simple(_) => "simple",
            Kind::Jwt(_) => "jwt",
            Kind::Nop => "none",
        };
        f.debug_struct("Tokens").field("kind", &kind).finish()
    }
}

/// The driver's token table as core's notes update it (the time is the simple-token
/// keeper's own clock's; JWTs are signed per answer, so an Authenticate issues none here).
impl keel_core::auth::TokenKeeper for &Tokens {
    fn issue(
        &mut self,
        name: &str,
        token: &str,
        revision: u64,
        _now: keel_core::raft::Time,
    ) -> Result<(), String> {
        self.assign(name, token, revision).map(|_| ())
    }
    fn invalidate_user(&mut self, name: &str) {
        Tokens::invalidate_user(self, name);
    }
    fn invalidate_all(&mut self) {
        Tokens::invalidate_all(self);
    }
}

impl Tokens {
    /// From the `--auth-token` spec (`simple`, or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m` as etcd takes it) and
    /// `--auth-token-ttl` (the simple-token TTL; 0 means etcd's 300 s). JWT key files are
    /// read and checked here, so a bad spec fails at start. The error is one line for the
    /// operator, starting with etcd's error text.
    pub fn from_spec(spec: &str, simple_ttl: Duration) -> Result<Tokens, String> {
        let kind = match spec::parse(spec)? {
            TokenSpec::Simple => {
                let ttl = if simple_ttl.is_zero() {
                    DEFAULT_SIMPLE_TTL
                } else {
                    simple_ttl
                };
                Kind::Simple(SimpleTokens::new(ttl))
            }
            TokenSpec::Jwt(opts) => Kind::Jwt(Box::new(JwtTokens::load(&opts)?)),
            TokenSpec::Nop => Kind::Nop,
        };
        Ok(Tokens { kind })
    }

    /// The token prefix to carry in an Authenticate proposal: 16 random ASCII letters for
    /// simple tokens (etcd's prefix; applying the entry appends `.` and its raft index),
    /// empty for JWT and the no-op provider. Empty too if the OS has no randomness to
    /// give, which makes Authenticate fail rather than hand out a guessable token.
    pub fn new_simple_token(&self) -> String {
        match &self.kind {
            Kind::Simple(_) => simple::random_token(),
            Kind::Jwt(_) | Kind::Nop => String::new(),
        }
    }

    /// Called by every member when it applies an Authenticate of user `name` at auth
    /// revision `revision`, with the proposal's `token`: simple tokens are remembered
    /// (TTL refreshed on every use) and returned as they are; JWT signs
    /// `{username, revision, exp}` and returns the signed token.
    pub fn assign(&self, name: &str, token: &str, revision: u64) -> Result<String, String> {
        match &self.kind {
            Kind::Simple(s) => s.assign(name, token, revision),
            Kind::Jwt(j) => j.assign(name, revision),
            Kind::Nop => Err("auth: authentication failed, invalid user ID or password".into()),
        }
    }

    /// Resolves a client's token: for simple tokens the user and the auth revision at
    /// [`Tokens::assign`] if the token is known and not expired (its TTL restarts); for
    /// JWT the `username` and `revision` claims once the signature, algorithm and `exp`
    /// check out. `None` for anything else.
    ///
    /// etcd reports a simple token's revision as the store's current one (simple tokens
    /// never go stale: users' tokens are dropped instead when their password changes);
    /// [`Tokens::info_at_revision`] gives that behaviour.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        match &self.kind {
            Kind::Simple(s) => s.info(token),
            Kind::Jwt(j) => j.info(token),
            Kind::Nop => None,
        }
    }

    /// [`Tokens::info`] as etcd answers it given the store's current auth revision:
    /// a simple token resolves at `current_revision`; a JWT at its own `revision` claim.
    pub fn info_at_revision(&self, token: &str, current_revision: u64) -> Option<AuthInfo> {
        let mut info = self.info(token)?;
        if let Kind::Simple(_) = self.kind {
            info.revision = current_revision;
        }
        Some(info)
    }

    /// The raft index a simple token names (etcd's `isValidSimpleToken`: exactly one dot,
    /// a number after it): the member must have applied that Authenticate entry before
    /// the token can be known here. `None` for a malformed simple token and for JWT, whose
    /// [`Tokens::info`] never depends on this member's progress.
    pub fn simple_token_index(&self, token: &str) -> Option<u64> {
        match &self.kind {
            Kind::Simple(_) => keel_core::auth::index_of(token),
            Kind::Jwt(_) | Kind::Nop => None,
        }
    }

    /// Forgets every simple token of user `name` (etcd does this when the user is
    /// deleted or its password changes). JWTs can't be recalled: they stay valid until
    /// `exp`, and the auth revision check rejects them.
    pub fn invalidate_user(&self, name: &str) {
        if let Kind::Simple(s) = &self.kind {
            s.invalidate_user(name);
        }
    }

    /// Forgets every simple token (etcd does this when auth is disabled).
    pub fn invalidate_all(&self) {
        if let Kind::Simple(s) = &self.kind {
            s.invalidate_all();
        }
    }

    /// Whether tokens are JWT (for logging).
    pub fn is_jwt(&self) -> bool {
        matches!(self.kind, Kind::Jwt(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_round_trip_through_the_public_api() {
        let t = Tokens::from_spec("simple", Duration::from_secs(300)).expect("simple");
        assert!(!t.is_jwt());
        let token = t.new_simple_token();
        assert_eq!(token.len(), 16);
        assert!(token.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_eq!(t.assign("alice", &token, 7).as_deref(), Ok(token.as_str()));
        let info = t.info(&token).expect("known token");
        assert_eq!((info.user.as_str(), info.revision), ("alice", 7));
        let info = t.info_at_revision(&token, 9).expect("known token");
        assert_eq!(info.revision, 9);
        assert_eq!(t.info("nope"), None);
        assert_eq!(t.simple_token_index("abc.42"), Some(42));
        assert_eq!(t.simple_token_index(&token), None, "no index");
        t.invalidate_all();
        assert_eq!(t.info(&token), None);
    }

    #[test]
    fn random_tokens_differ() {
        let t = Tokens::from_spec("simple", Duration::ZERO).expect("simple");
        assert_ne!(t.new_simple_token(), t.new_simple_token());
    }

    #[test]
    fn empty_spec_is_etcds_no_op_provider() {
        let t = Tokens::from_spec("", Duration::ZERO).expect("nop");
        assert_eq!(t.new_simple_token(), "");
        assert_eq!(
            t.assign("alice", "", 1),
            Err("auth: authentication failed, invalid user ID or password".to_owned())
        );
        assert_eq!(t.info("x"), None);
        assert_eq!(t.simple_token_index("abc.42"), None);
    }
}
