//! etcd's simple tokens: random strings each member remembers (token → user) with a TTL
//! that restarts on every use, as etcd's `simpleTokenTTLKeeper`.
//!
//! etcd sweeps expired tokens every second from a goroutine; here expired tokens are
//! dropped when they are looked up and swept in bulk whenever the map has doubled since
//! the last sweep, and the map is capped: at the cap the tokens closest to expiry are
//! evicted. A client authenticating in a loop therefore costs bounded memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::AuthInfo;

/// etcd's simple-token alphabet and length.
const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TOKEN_LEN: usize = 16;

/// Live simple tokens kept at most (etcd keeps any number and warns every 10 000).
pub(crate) const MAX_TOKENS: usize = 100_000;
/// No bulk sweep below this many tokens.
const SWEEP_FLOOR: usize = 1024;

/// 16 random ASCII letters from the OS's generator; empty if it fails.
pub(crate) fn random_token() -> String {
    let mut out = String::with_capacity(TOKEN_LEN);
    let mut buf = [0u8; 32];
    while out.len() < TOKEN_LEN {
        if let Err(e) = getrandom::fill(&mut buf) {
            tracing::error!(error = %e, "no randomness for a simple auth token");
            return String::new();
        }
        // 208 = 4 × 52: rejecting bytes above it keeps every letter equally likely.
        for b in buf.iter().filter(|b| **b < 208) {
            if out.len() == TOKEN_LEN {
                break;
            }
            out.push(char::from(LETTERS[usize::from(*b) % LETTERS.len()]));
        }
    }
    out
}

/// The raft index after the single dot of a simple token, as etcd's
/// `isValidSimpleToken` splits it; `None` when the token has no dot, more than one, or
/// no number after it.
pub(crate) fn index_of(token: &str) -> Option<u64> {
    let (_, index) = token.split_once('.')?;
    if index.contains('.') {
        return None;
    }
    index.parse().ok()
}

pub(crate) struct SimpleTokens {
    ttl: Duration,
    cap: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    tokens: HashMap<String, Entry>,
    /// Sweep expired tokens when the map reaches this size.
    sweep_at: usize,
}

struct Entry {
    user: String,
    revision: u64,
    expires: Instant,
}

impl SimpleTokens {
    pub(crate) fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens::with_cap(ttl, MAX_TOKENS)
    }

    pub(crate) fn with_cap(ttl: Duration, cap: usize) -> SimpleTokens {
        SimpleTokens {
            ttl,
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                tokens: HashMap::new(),
                sweep_at: SWEEP_FLOOR,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn assign(&self, name: &str, token: &str, revision: u64) -> Result<String, String> {
        self.assign_at(name, token, revision, Instant::now())
    }

    pub(crate) fn assign_at(
        &self,
        name: &str,
        token: &str,
        revision: u64,
        now: Instant,
    ) -> Result<String, String> {
        if token.is_empty() {
            return Err("auth: failed to assign an empty simple token".into());
        }
        let expires = now + self.ttl;
        let mut g = self.lock();
        if let Some(e) = g.tokens.get_mut(token) {
            // The same Authenticate applied again (a replay): keep it; anything else would
            // hand one token to two users, which etcd treats as fatal.
            if e.user != name {
                return Err("auth: simple token already assigned to another user".into());
            }
            e.revision = revision;
            e.expires = expires;
            return Ok(token.to_owned());
        }
        if g.tokens.len() >= g.sweep_at || g.tokens.len() >= self.cap {
            g.make_room(now, self.cap);
        }
        g.tokens.insert(
            token.to_owned(),
            Entry {
                user: name.to_owned(),
                revision,
                expires,
            },
        );
        Ok(token.to_owned())
    }

    pub(crate) fn info(&self, token: &str) -> Option<AuthInfo> {
        self.info_at(token, Instant::now())
    }

    pub(crate) fn info_at(&self, token: &str, now: Instant) -> Option<AuthInfo> {
        let mut g = self.lock();
        let e = g.tokens.get_mut(token)?;
        if now >= e.expires {
            g.tokens.remove(token);
            return None;
        }
        e.expires = now + self.ttl;
        Some(AuthInfo {
            user: e.user.clone(),
            revision: e.revision,
        })
    }

    pub(crate) fn invalidate_user(&self, name: &str) {
        self.lock().tokens.retain(|_, e| e.user != name);
    }

    pub(crate) fn invalidate_all(&self) {
        let mut g = self.lock();
        g.tokens = HashMap::new();
        g.sweep_at = SWEEP_FLOOR;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().tokens.len()
    }
}

impl Inner {
    /// Drops expired tokens; if the map is still at `cap`, evicts the tenth of it closest
    /// to expiry (sorting once per tenth of the cap keeps inserts cheap on average).
    fn make_room(&mut self, now: Instant, cap: usize) {
        self.tokens.retain(|_, e| now < e.expires);
        if self.tokens.len() >= cap {
            let evict = (cap / 10).max(1).max(self.tokens.len() + 1 - cap);
            let mut by_expiry: Vec<(Instant, String)> = self
                .tokens
                .iter()
                .map(|(t, e)| (e.expires, t.clone()))
                .collect();
            by_expiry.sort_unstable();
            for (_, t) in by_expiry.into_iter().take(evict) {
                self.tokens.remove(&t);
            }
            tracing::warn!(
                evicted = evict,
                cap,
                "too many live simple auth tokens: evicted those closest to expiry"
            );
        }
        self.sweep_at = (self.tokens.len() * 2).max(SWEEP_FLOOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn user_rev(i: Option<AuthInfo>) -> Option<(String, u64)> {
        i.map(|i| (i.user, i.revision))
    }

    #[test]
    fn assign_then_info() {
        let s = SimpleTokens::new(TTL);
        assert_eq!(s.assign("alice", "abc", 3).as_deref(), Ok("abc"));
        assert_eq!(user_rev(s.info("abc")), Some(("alice".into(), 3)));
        assert_eq!(user_rev(s.info("abd")), None);
        assert_eq!(user_rev(s.info("")), None);
        assert!(s.assign("alice", "", 3).is_err());
        // A replay of the same Authenticate is harmless; another user is refused.
        assert!(s.assign("alice", "abc", 4).is_ok());
        assert!(s.assign("bob", "abc", 4).is_err());
        assert_eq!(user_rev(s.info("abc")), Some(("alice".into(), 4)));
    }

    #[test]
    fn expires_after_ttl_and_each_use_restarts_it() {
        let s = SimpleTokens::new(TTL);
        let t0 = Instant::now();
        s.assign_at("alice", "tok", 1, t0).expect("assign");
        // Used at 200 s: alive, and now good until 500 s.
        assert!(s.info_at("tok", t0 + Duration::from_secs(200)).is_some());
        assert!(s.info_at("tok", t0 + Duration::from_secs(499)).is_some());
        // Unused for a full TTL: gone, and dropped from the map.
        assert!(s.info_at("tok", t0 + Duration::from_secs(799)).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn invalidate_user_and_all() {
        let s = SimpleTokens::new(TTL);
        for (user, tok) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
            s.assign(user, tok, 1).expect("assign");
        }
        s.invalidate_user("alice");
        assert!(s.info("a1").is_none() && s.info("a2").is_none());
        assert!(s.info("b1").is_some());
        s.invalidate_all();
        assert!(s.info("b1").is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn expired_tokens_do_not_accumulate() {
        // A client authenticating in a loop, a token per second with a 10 s TTL: the map
        // stays around the sweep threshold instead of growing with the loop.
        let s = SimpleTokens::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..50_000u64 {
            let now = t0 + Duration::from_secs(i);
            s.assign_at("alice", &format!("t{i}"), 1, now)
                .expect("assign");
        }
        assert!(s.len() <= SWEEP_FLOOR, "{} tokens kept", s.len());
    }

    #[test]
    fn live_tokens_are_capped() {
        // All alive (long TTL), far more than the cap: the oldest go first.
        let s = SimpleTokens::with_cap(TTL, 1000);
        let t0 = Instant::now();
        for i in 0..20_000u64 {
            let now = t0 + Duration::from_millis(i);
            s.assign_at("alice", &format!("t{i}"), 1, now)
                .expect("assign");
        }
        assert!(s.len() <= 1000, "{} tokens kept", s.len());
        let late = t0 + Duration::from_secs(20);
        assert!(s.info_at("t19999", late).is_some());
        assert!(s.info_at("t0", late).is_none());
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

    #[test]
    fn random_tokens_are_sixteen_letters() {
        for _ in 0..100 {
            let t = random_token();
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(t.bytes().all(|b| b.is_ascii_alphabetic()));
        }
    }
}
