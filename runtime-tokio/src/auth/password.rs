//! bcrypt password hashes, as etcd stores them (`$2a$`, cost from `--bcrypt-cost`).
//!
//! bcrypt is deliberately slow (tens of milliseconds at cost 10), so both operations run
//! on tokio's blocking threads, and at most [`MAX_CONCURRENT_VERIFIES`] checks run at once:
//! a client hammering Authenticate with wrong passwords waits in line instead of taking
//! every core from the member.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Password checks running at the same time, at most.
pub const MAX_CONCURRENT_VERIFIES: usize = 2;

/// etcd's default cost (Go's `bcrypt.DefaultCost`), used for out-of-range costs.
pub const DEFAULT_COST: u32 = 10;

/// bcrypt reads at most this many bytes of a password; Go's bcrypt refuses longer ones.
const MAX_PASSWORD_BYTES: usize = 72;

/// Hashes and checks passwords. Shared as `Arc<Passwords>`.
#[derive(Debug)]
pub struct Passwords {
    cost: u32,
    verifying: Arc<Semaphore>,
    /// Checks of this instance running at once (tests look at the peak).
    #[cfg(test)]
    gauge: Arc<tests::Gauge>,
}

impl Passwords {
    /// With the `--bcrypt-cost` factor; outside bcrypt's 4..=31, etcd's default 10.
    pub fn new(cost: u32) -> Passwords {
        let cost = if (4..=31).contains(&cost) {
            cost
        } else {
            DEFAULT_COST
        };
        Passwords {
            cost,
            verifying: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFIES)),
            #[cfg(test)]
            gauge: Arc::default(),
        }
    }

    /// The cost new hashes get.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The bcrypt hash of `password` (`$2a$<cost>$...`), computed on a blocking thread.
    /// Passwords over 72 bytes are refused with Go's error, as etcd does.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err("bcrypt: password length exceeds 72 bytes".into());
        }
        let cost = self.cost;
        tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password.as_bytes(), cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA))
                .map_err(|e| format!("bcrypt: {e}"))
        })
        .await
        .map_err(|e| format!("bcrypt: hashing failed: {e}"))?
    }

    /// The bcrypt hash of `password` as etcd's v2 auth makes it: at Go's
    /// `bcrypt.DefaultCost` whatever `--bcrypt-cost` says, and (x/crypto as etcd 3.4.23
    /// is built with) from the first 72 bytes, longer passwords accepted, not refused.
    pub async fn hash_v2(&self, password: String) -> Result<String, String> {
        tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password.as_bytes(), DEFAULT_COST)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA))
                .map_err(|e| format!("bcrypt: {e}"))
        })
        .await
        .map_err(|e| format!("bcrypt: hashing failed: {e}"))?
    }

    /// Whether `password` matches the bcrypt `hash`, checked on a blocking thread once
    /// one of the [`MAX_CONCURRENT_VERIFIES`] slots is free. A malformed or empty hash
    /// (a user without password) never matches.
    pub async fn verify(&self, password: String, hash: String) -> bool {
        let Ok(permit) = Arc::clone(&self.verifying).acquire_owned().await else {
            return false;
        };
        // The slot is held by the blocking task itself, so a caller that gives up
        // (client gone) doesn't let more checks run than the cap.
        #[cfg(test)]
        let gauge = Arc::clone(&self.gauge);
        tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            let running = gauge.enter();
            let ok = bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false);
            #[cfg(test)]
            drop(running);
            drop(permit);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// bcrypt checks running now, and the most seen at once.
    #[derive(Debug, Default)]
    pub(super) struct Gauge {
        running: AtomicUsize,
        peak: AtomicUsize,
    }

    /// One running check, counted while alive.
    pub(super) struct Running<'g>(&'g Gauge);

    impl Gauge {
        pub(super) fn enter(&self) -> Running<'_> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            Running(self)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = Passwords::new(4);
        let h = p.hash("s3cret".into()).await.expect("hash");
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(p.verify("s3cret".into(), h.clone()).await);
        assert!(!p.verify("s3creT".into(), h.clone()).await);
        assert!(!p.verify(String::new(), h).await);
        // Each hash has its own salt.
        let h2 = p.hash("s3cret".into()).await.expect("hash");
        assert!(p.verify("s3cret".into(), h2).await);
    }

    #[tokio::test]
    async fn v2_hashes_use_the_default_cost_and_72_bytes() {
        let p = Passwords::new(4);
        let long = "x".repeat(80);
        let h = p.hash_v2(long.clone()).await.expect("hash");
        assert!(h.starts_with("$2a$10$"), "{h}");
        assert!(p.verify(long, h.clone()).await);
        assert!(
            p.verify("x".repeat(72), h.clone()).await,
            "bytes past 72 are not read"
        );
        assert!(!p.verify("x".repeat(71), h).await);
    }

    #[tokio::test]
    async fn malformed_hashes_never_match() {
        let p = Passwords::new(4);
        for bad in [
            "",
            "plain",
            "$2a$04$short",
            "$2a$99$abcdefghijklmnopqrstuuOWaQnTz0eV7Dd1h4qjjtIbUazRmZ6a",
            "$9z$04$abcdefghijklmnopqrstuuOWaQnTz0eV7Dd1h4qjjtIbUazRmZ6a",
        ] {
            assert!(!p.verify("x".into(), bad.into()).await, "{bad}");
        }
    }

    #[tokio::test]
    async fn reads_go_and_2b_hashes() {
        let p = Passwords::new(4);
        let h = p.hash("pw".into()).await.expect("hash");
        let as_2b = h.replacen("$2a$", "$2b$", 1);
        assert!(p.verify("pw".into(), as_2b).await);
    }

    #[tokio::test]
    async fn long_passwords_and_costs() {
        let p = Passwords::new(4);
        assert_eq!(
            p.hash("x".repeat(73)).await,
            Err("bcrypt: password length exceeds 72 bytes".to_owned())
        );
        assert!(p.hash("x".repeat(72)).await.is_ok());
        assert_eq!(Passwords::new(3).cost(), DEFAULT_COST);
        assert_eq!(Passwords::new(32).cost(), DEFAULT_COST);
        assert_eq!(Passwords::new(31).cost(), 31);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_queue_and_all_answer() {
        let p = Arc::new(Passwords::new(4));
        let h = p.hash("pw".into()).await.expect("hash");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (p, h) = (Arc::clone(&p), h.clone());
            tasks.push(tokio::spawn(async move {
                let guess = if i % 2 == 0 { "pw" } else { "nope" };
                p.verify(guess.into(), h).await == (i % 2 == 0)
            }));
        }
        for t in tasks {
            assert!(t.await.expect("task"));
        }
        assert_eq!(p.verifying.available_permits(), MAX_CONCURRENT_VERIFIES);
    }

    /// A flood of wrong passwords takes at most the cap's worth of blocking threads, however
    /// many the pool would give (it has 512): the rest wait in line.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_never_run_beyond_the_cap() {
        // Cost 8 (about 15 ms a check) so that checks overlap whenever the cap allows.
        let p = Arc::new(Passwords::new(8));
        let h = p.hash("pw".into()).await.expect("hash");
        let flood: Vec<_> = (0..12)
            .map(|_| {
                let (p, h) = (Arc::clone(&p), h.clone());
                tokio::spawn(async move { p.verify("wrong".into(), h).await })
            })
            .collect();
        for t in flood {
            assert!(!t.await.expect("task"));
        }
        // Without the cap the peak is 12 (one blocking thread each); with it, usually
        // exactly 2, but a loaded machine may finish one check before the next starts.
        let peak = p.gauge.peak.load(Ordering::SeqCst);
        assert!((1..=MAX_CONCURRENT_VERIFIES).contains(&peak), "peak {peak}");
    }
}
