//! Planted bugs for the robustness runs (`robustness-bugs` feature; never in a default
//! build, and a binary that has them says so loudly at start). Each breaks one safety
//! rule of the member on purpose, selected at start by `KEEL_PLANTED_BUG`, so the
//! robustness runner's checks can be shown to catch it on the real binary:
//!
//! - `ack-before-fsync`: WAL writes are never fdatasync'd, so entries are acknowledged
//!   (and votes given) before they are durable. Only a crash that loses the page cache
//!   (power loss) can show it; kill -9 does not.
//! - `commit-without-quorum`: the leader commits what it holds itself (core's
//!   `PlantedBug::CommitWithoutQuorum`).
//! - `lease-read-past-bound`: lease reads, with a lease that lasts ten election
//!   timeouts and survives the loss of leadership (core's `PlantedBug::LeaseReadPastBound`).

use keel_core::raft::{Config, PlantedBug as CoreBug, ReadMode};

/// The environment variable that selects the bug.
pub const ENV: &str = "KEEL_PLANTED_BUG";

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Acknowledge WAL writes without syncing them.
    AckBeforeFsync,
    /// Commit without a quorum.
    CommitWithoutQuorum,
    /// Serve lease reads past the lease.
    LeaseReadPastBound,
}

impl PlantedBug {
    /// Names, as `KEEL_PLANTED_BUG` takes them.
    pub const NAMES: [&'static str; 3] = [
        "ack-before-fsync",
        "commit-without-quorum",
        "lease-read-past-bound",
    ];

    /// The bug `KEEL_PLANTED_BUG` selects: None if unset or empty, an error naming the
    /// choices if it names none of them.
    pub fn from_env() -> Result<Option<PlantedBug>, String> {
        let Ok(v) = std::env::var(ENV) else {
            return Ok(None);
        };
        match v.as_str() {
            "" => Ok(None),
            "ack-before-fsync" => Ok(Some(PlantedBug::AckBeforeFsync)),
            "commit-without-quorum" => Ok(Some(PlantedBug::CommitWithoutQuorum)),
            "lease-read-past-bound" => Ok(Some(PlantedBug::LeaseReadPastBound)),
            other => Err(format!(
                "{ENV}={other:?} names no planted bug; one of {:?}",
                Self::NAMES
            )),
        }
    }

    /// Plants the bug's raft part in `cfg`; true if WAL syncs must be skipped.
    pub fn plant(self, cfg: &mut Config) -> bool {
        match self {
            PlantedBug::AckBeforeFsync => return true,
            PlantedBug::CommitWithoutQuorum => cfg.planted_bug = Some(CoreBug::CommitWithoutQuorum),
            PlantedBug::LeaseReadPastBound => {
                cfg.read_mode = ReadMode::Lease {
                    max_clock_drift_ppm: 100_000,
                };
                cfg.planted_bug = Some(CoreBug::LeaseReadPastBound);
            }
        }
        false
    }
}
