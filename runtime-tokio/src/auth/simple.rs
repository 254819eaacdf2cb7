//! etcd's simple tokens on tokio: core's [`keel_core::auth::SimpleTokens`] behind a lock
//! (the services resolve tokens off the member task), on a monotonic clock of its own,
//! and the random token prefixes.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keel_core::auth::SimpleTokens as Keeper;

use super::AuthInfo;
use crate::MonotonicClock;

/// etcd's simple-token alphabet and length.
const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TOKEN_LEN: usize = 16;

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

pub(crate) struct SimpleTokens {
    clock: MonotonicClock,
    keeper: Mutex<Keeper>,
}

impl SimpleTokens {
    pub(crate) fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens {
            clock: MonotonicClock::start(),
            keeper: Mutex::new(Keeper::new(ttl.as_millis() as u64)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Keeper> {
        self.keeper.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn assign(&self, name: &str, token: &str, revision: u64) -> Result<String, String> {
        let evicted = self
            .lock()
            .assign(name, token, revision, self.clock.now())?;
        if evicted > 0 {
            tracing::warn!(
                evicted,
                cap = keel_core::auth::MAX_TOKENS,
                "too many live simple auth tokens: evicted those closest to expiry"
            );
        }
        Ok(token.to_owned())
    }

    pub(crate) fn info(&self, token: &str) -> Option<AuthInfo> {
        self.lock().info(token, self.clock.now())
    }

    pub(crate) fn invalidate_user(&self, name: &str) {
        self.lock().invalidate_user(name);
    }

    pub(crate) fn invalidate_all(&self) {
        self.lock().invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_sixteen_letters() {
        for _ in 0..100 {
            let t = random_token();
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(t.bytes().all(|b| b.is_ascii_alphabetic()));
        }
    }

    #[test]
    fn tokens_live_on_the_keeper() {
        let s = SimpleTokens::new(Duration::from_secs(300));
        assert_eq!(s.assign("alice", "abc.3", 3).as_deref(), Ok("abc.3"));
        assert_eq!(s.info("abc.3").map(|i| i.user), Some("alice".into()));
        s.invalidate_user("alice");
        assert!(s.info("abc.3").is_none());
    }
}
