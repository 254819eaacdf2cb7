//! keel-runtime-tokio: the production driver. It gives keel-core members real time,
//! sockets and disk: timers, the peer transport, the mmap WAL and snapshot files, and
//! etcd's gRPC services. Everything it does is mechanical; decisions live in the core.
//!
//! [`MonotonicClock`] is how the core sees time here: milliseconds since the driver
//! started, from the OS monotonic clock, so wall-clock steps never reach raft.

use std::time::Instant;

use keel_core::raft::Time;

pub mod auth;
pub mod corruption;
pub mod durable_dir;
pub mod etcd_db;
pub mod founding;
pub mod gateway;
pub mod go_duration;
pub mod grpc;
pub mod http;
pub mod http_access;
pub mod leader_call;
pub mod listen;
pub mod member;
pub mod metrics;
pub mod pb;
pub mod peer;
pub mod peer_info;
pub mod ping_policy;
#[cfg(feature = "robustness-bugs")]
pub mod planted;
pub mod serve;
pub mod storage;
pub mod tls;
pub mod v2keys;
pub mod version;
pub mod wal_files;

pub use storage::{Recovery, Storage, StorageError, StoragePolicy};

/// Whether this build has the robustness runs' planted bugs (`robustness-bugs`
/// feature): `keel` then warns loudly at start, and serves only for those runs.
pub const ROBUSTNESS_BUGS: bool = cfg!(feature = "robustness-bugs");
pub use wal_files::{FileStore, WriteMode};

/// Milliseconds since the driver started, from the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn start() -> MonotonicClock {
        MonotonicClock {
            epoch: Instant::now(),
        }
    }

    /// The core's time for the instant `at`.
    pub fn at(&self, at: Instant) -> Time {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        Time(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The core's time now.
    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// The instant at which the core's time reads `t` (for arming timers from
    /// `Ready::wake_at`).
    pub fn instant(&self, t: Time) -> Instant {
        self.epoch + std::time::Duration::from_millis(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn maps_instants_both_ways() {
        let c = MonotonicClock::start();
        let later = c.instant(Time(1_500));
        assert_eq!(c.at(later), Time(1_500));
        assert_eq!(c.at(later - Duration::from_millis(500)), Time(1_000));
        // Instants before the epoch read as zero rather than wrapping.
        assert_eq!(c.at(c.instant(Time(0))), Time(0));
    }
}
