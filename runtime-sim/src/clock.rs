//! A member's clock: the simulation's one global clock seen through a per-member offset
//! and drift, since madsim has a single clock for the whole simulated world.

use keel_core::raft::Time;

/// A member's view of time: the simulation's global clock with a fixed offset and a rate
/// error (drift), never going backwards.
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock {
    offset_ms: i64,
    drift_ppm: i64,
    last: Time,
}

impl SkewedClock {
    /// A clock `offset_ms` ahead of (or behind, if negative) global time, running
    /// `drift_ppm` parts per million fast (or slow, if negative).
    pub fn new(offset_ms: i64, drift_ppm: i64) -> SkewedClock {
        SkewedClock {
            offset_ms,
            drift_ppm,
            last: Time(0),
        }
    }

    /// The member's reading when the global clock shows `global_ms`. Monotonic even if
    /// the scenario changes the offset backwards: a member's clock never runs back.
    pub fn read(&mut self, global_ms: u64) -> Time {
        let g = i128::from(global_ms);
        let drifted = g + g * i128::from(self.drift_ppm) / 1_000_000;
        let local = (drifted + i128::from(self.offset_ms)).clamp(0, i128::from(u64::MAX));
        let t = Time(local as u64);
        if t > self.last {
            self.last = t;
        }
        self.last
    }

    /// Global milliseconds that pass while this clock advances `local_ms`.
    pub fn global_delay(&self, local_ms: u64) -> u64 {
        let rate = 1_000_000 + self.drift_ppm.max(-999_000);
        (u128::from(local_ms) * 1_000_000).div_ceil(rate as u128) as u64
    }

    /// Sets the drift (parts per million fast, or slow if negative).
    pub fn set_drift(&mut self, drift_ppm: i64) {
        self.drift_ppm = drift_ppm;
    }

    /// Changes the offset (a clock step, as NTP may make).
    pub fn step(&mut self, delta_ms: i64) {
        self.offset_ms = self.offset_ms.saturating_add(delta_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_drift_apply_and_time_never_runs_back() {
        let mut c = SkewedClock::new(50, 100_000); // 50 ms ahead, 10% fast
        assert_eq!(c.read(0), Time(50));
        assert_eq!(c.read(1_000), Time(1_150));
        c.step(-500);
        assert_eq!(
            c.read(1_010),
            Time(1_150),
            "a backwards step holds the clock"
        );
        assert_eq!(c.read(2_000), Time(1_750));
        let mut slow = SkewedClock::new(0, -500_000);
        assert_eq!(slow.read(1_000), Time(500));
    }
}
