//! The run's time base: nanoseconds since the run started, on the monotonic clock, for
//! every recorded call, return, grant and keepalive.

use std::time::Instant;

/// Nanoseconds since the run's start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}
