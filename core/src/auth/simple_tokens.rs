//! etcd's simple tokens: random strings each member remembers (token → user) with a TTL
//! that restarts on every use, as etcd's `simpleTokenTTLKeeper`; sans-IO (the caller
//! gives the time), so both drivers keep their tokens with this same code.
//!
//! etcd sweeps expired tokens every second from a goroutine; here expired tokens are
//! dropped when they are looked up and swept in bulk whenever the map has doubled since
//! the last sweep, and the map is capped: at the cap the tokens closest to expiry are
//! evicted. A client authenticating in a loop therefore costs bounded memory.

use std::collections::HashMap;

use super::AuthInfo;
use crate::raft::Time;

/// Live simple tokens kept at most (etcd keeps any number and warns every 10 000).
pub const MAX_TOKENS: usize = 100_000;
/// No bulk sweep below this many tokens.
const SWEEP_FLOOR: usize = 1024;

/// The raft index after the single dot of a simple token, as etcd's
/// `isValidSimpleToken` splits it; `None` when the token has no dot, more than one, or
/// no number after it.
pub fn index_of(token: &str) -> Option<u64> {
    let (_, index) = token.split_once('.')?;
    if index.contains('.') {
        return None;
    }
    index.parse().ok()
}

/// What a client's simple token means to this member now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// A live token of this user.
    Valid(AuthInfo),
    /// Unknown here, but it names the raft index of its Authenticate entry: a member
    /// that has not applied that entry yet must apply it, then look again (etcd's
    /// `isValidSimpleToken`).
    WaitFor(u64),
    /// Not a token of this cluster (or expired).
    Invalid,
}

/// A member's token table, kept in step with the auth store by
/// [`crate::node::AuthNote::apply`] (core's [`SimpleTokens`], or a driver's table that
/// also signs JWTs).
pub trait TokenKeeper {
    /// An Authenticate entry issued `token` to user `name` at auth `revision`.
    fn issue(&mut self, name: &str, token: &str, revision: u64, now: Time) -> Result<(), String>;
    /// The user was deleted or changed password: their tokens go.
    fn invalidate_user(&mut self, name: &str);
    /// Auth was disabled: every token goes.
    fn invalidate_all(&mut self);
}

impl TokenKeeper for SimpleTokens {
    fn issue(&mut self, name: &str, token: &str, revision: u64, now: Time) -> Result<(), String> {
        self.assign(name, token, revision, now).map(|_| ())
    }
    fn invalidate_user(&mut self, name: &str) {
        SimpleTokens::invalidate_user(self, name);
    }
    fn invalidate_all(&mut self) {
        SimpleTokens::invalidate_all(self);
    }
}

/// The simple tokens a member knows.
#[derive(Debug)]
pub struct SimpleTokens {
    ttl_ms: u64,
    cap: usize,
    tokens: HashMap<String, Entry>,
    /// Sweep expired tokens when the map reaches this size.
    sweep_at: usize,
}

#[derive(Debug)]
struct Entry {
    user: String,
    revision: u64,
    expires: Time,
}

impl SimpleTokens {
    /// Tokens that live `ttl_ms` after their last use.
    pub fn new(ttl_ms: u64) -> SimpleTokens {
        SimpleTokens::with_cap(ttl_ms, MAX_TOKENS)
    }

    /// As [`SimpleTokens::new`], keeping at most `cap` tokens.
    pub fn with_cap(ttl_ms: u64, cap: usize) -> SimpleTokens {
        SimpleTokens {
            ttl_ms,
            cap: cap.max(1),
            tokens: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }

    /// Remembers `token` for user `name` at auth `revision` (an Authenticate entry was
    /// applied). Returns how many live tokens were evicted to make room.
    pub fn assign(
        &mut self,
        name: &str,
        token: &str,
        revision: u64,
        now: Time,
    ) -> Result<usize, String> {
        if token.is_empty() {
            return Err("auth: failed to assign an empty simple token".into());
        }
        let expires = now.plus(self.ttl_ms);
        if let Some(e) = self.tokens.get_mut(token) {
            // The same Authenticate applied again (a replay): keep it; anything else would
            // hand one token to two users, which etcd treats as fatal.
            if e.user != name {
                return Err("auth: simple token already assigned to another user".into());
            }
            e.revision = revision;
            e.expires = expires;
            return Ok(0);
        }
        let mut evicted = 0;
        if self.tokens.len() >= self.sweep_at || self.tokens.len() >= self.cap {
            evicted = self.make_room(now);
        }
        self.tokens.insert(
            token.to_owned(),
            Entry {
                user: name.to_owned(),
                revision,
                expires,
            },
        );
        Ok(evicted)
    }

    /// The user and auth revision of a live token (its TTL restarts).
    pub fn info(&mut self, token: &str, now: Time) -> Option<AuthInfo> {
        let e = self.tokens.get_mut(token)?;
        if now >= e.expires {
            self.tokens.remove(token);
            return None;
        }
        e.expires = now.plus(self.ttl_ms);
        Some(AuthInfo {
            user: e.user.clone(),
            revision: e.revision,
        })
    }

    /// What `token` means now (see [`TokenCheck`]).
    pub fn check(&mut self, token: &str, now: Time) -> TokenCheck {
        match (self.info(token, now), index_of(token)) {
            (Some(info), _) => TokenCheck::Valid(info),
            (None, Some(index)) => TokenCheck::WaitFor(index),
            (None, None) => TokenCheck::Invalid,
        }
    }

    /// Forgets every token of user `name`.
    pub fn invalidate_user(&mut self, name: &str) {
        self.tokens.retain(|_, e| e.user != name);
    }

    /// Forgets every token.
    pub fn invalidate_all(&mut self) {
        self.tokens = HashMap::new();
        self.sweep_at = SWEEP_FLOOR;
    }

    /// Tokens held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Drops expired tokens; if the map is still at the cap, evicts the tenth of it
    /// closest to expiry (sorting once per tenth of the cap keeps inserts cheap on
    /// average). Returns how many live tokens were evicted.
    fn make_room(&mut self, now: Time) -> usize {
        self.tokens.retain(|_, e| now < e.expires);
        let cap = self.cap;
        let mut evict = 0;
        if self.tokens.len() >= cap {
            evict = (cap / 10).max(1).max(self.tokens.len() + 1 - cap);
            let mut by_expiry: Vec<(Time, String)> = self
                .tokens
                .iter()
                .map(|(t, e)| (e.expires, t.clone()))
                .collect();
            by_expiry.sort_unstable();
            for (_, t) in by_expiry.into_iter().take(evict) {
                self.tokens.remove(&t);
            }
        }
        self.sweep_at = (self.tokens.len() * 2).max(SWEEP_FLOOR);
        evict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 300_000;

    fn user_rev(i: Option<AuthInfo>) -> Option<(String, u64)> {
        i.map(|i| (i.user, i.revision))
    }

    #[test]
    fn assign_then_info() {
        let mut s = SimpleTokens::new(TTL);
        let t = Time(0);
        assert_eq!(s.assign("alice", "abc", 3, t), Ok(0));
        assert_eq!(user_rev(s.info("abc", t)), Some(("alice".into(), 3)));
        assert_eq!(user_rev(s.info("abd", t)), None);
        assert_eq!(user_rev(s.info("", t)), None);
        assert!(s.assign("alice", "", 3, t).is_err());
        // A replay of the same Authenticate is harmless; another user is refused.
        assert!(s.assign("alice", "abc", 4, t).is_ok());
        assert!(s.assign("bob", "abc", 4, t).is_err());
        assert_eq!(user_rev(s.info("abc", t)), Some(("alice".into(), 4)));
    }

    #[test]
    fn expires_after_ttl_and_each_use_restarts_it() {
        let mut s = SimpleTokens::new(TTL);
        s.assign("alice", "tok", 1, Time(0)).expect("assign");
        // Used at 200 s: alive, and now good until 500 s.
        assert!(s.info("tok", Time(200_000)).is_some());
        assert!(s.info("tok", Time(499_000)).is_some());
        // Unused for a full TTL: gone, and dropped from the map.
        assert!(s.info("tok", Time(799_000)).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn check_says_valid_wait_or_invalid() {
        let mut s = SimpleTokens::new(TTL);
        s.assign("alice", "abc.7", 1, Time(0)).expect("assign");
        assert!(matches!(s.check("abc.7", Time(1)), TokenCheck::Valid(_)));
        assert_eq!(s.check("xyz.9", Time(1)), TokenCheck::WaitFor(9));
        assert_eq!(s.check("xyz", Time(1)), TokenCheck::Invalid);
    }

    #[test]
    fn invalidate_user_and_all() {
        let mut s = SimpleTokens::new(TTL);
        let t = Time(0);
        for (user, tok) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
            s.assign(user, tok, 1, t).expect("assign");
        }
        s.invalidate_user("alice");
        assert!(s.info("a1", t).is_none() && s.info("a2", t).is_none());
        assert!(s.info("b1", t).is_some());
        s.invalidate_all();
        assert!(s.info("b1", t).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn expired_tokens_do_not_accumulate() {
        // A client authenticating in a loop, a token per second with a 10 s TTL: the map
        // stays around the sweep threshold instead of growing with the loop.
        let mut s = SimpleTokens::new(10_000);
        for i in 0..50_000u64 {
            s.assign("alice", &format!("t{i}"), 1, Time(i * 1000))
                .expect("assign");
        }
        assert!(s.len() <= SWEEP_FLOOR, "{} tokens kept", s.len());
    }

    #[test]
    fn live_tokens_are_capped() {
        // All alive (long TTL), far more than the cap: the oldest go first.
        let mut s = SimpleTokens::with_cap(TTL, 1000);
        let mut evicted = 0;
        for i in 0..20_000u64 {
            evicted += s
                .assign("alice", &format!("t{i}"), 1, Time(i))
                .expect("assign");
        }
        assert!(s.len() <= 1000, "{} tokens kept", s.len());
        assert!(evicted >= 19_000);
        assert!(s.info("t19999", Time(20_000)).is_some());
        assert!(s.info("t0", Time(20_000)).is_none());
    }

    #[test]
    fn the_index_is_the_number_after_the_only_dot() {
        assert_eq!(index_of("AbcDefGhiJklMnoP.17"), Some(17));
        assert_eq!(index_of(".0"), Some(0));
        for bad in [
            "", "abc", "abc.", "abc.x1", "abc.1.2", "a.b.3", "abc.-1", "abc. 1",
        ] {
            assert_eq!(index_of(bad), None, "{bad:?}");
        }
    }
}
