//! etcd's `monitorLeader`: streams opened with clientv3's require-leader metadata (watches,
//! lease keepalives, snapshots) end with "etcdserver: no leader" once the member has gone
//! [`NO_LEADER_PERIODS`] election timeouts without a leader, and again at every timeout
//! after that until one is known. A watcher stuck on a member cut off from the quorum
//! thus learns it and reconnects elsewhere instead of waiting silently forever. Unary
//! calls with the metadata fail at once instead (see [`super::Call::require_leader`]):
//! reconnecting a stream costs more than refusing a call, so streams are given longer.
//!
//! etcd samples the leader once per election timeout and ends the streams at the third
//! sample in a row without one, that is between two and three timeouts after the loss.
//! This monitor checks at the same cadence but measures the time since the loss, which
//! is the same in a running member and stays right after the process was paused (a count
//! of samples would start over after a pause of any length).

use crate::raft::Time;

/// Election timeouts without a leader by the end of which required-leader streams have
/// ended (etcd's `maxNoLeaderCnt`).
pub const NO_LEADER_PERIODS: u32 = 3;

/// When the leader was lost, checked once per election timeout.
#[derive(Debug)]
pub(super) struct LeaderMonitor {
    period_ms: u64,
    next: Time,
    /// Since when no leader is known (None: one is).
    leaderless_since: Option<Time>,
}

impl LeaderMonitor {
    /// A monitor for a member that starts at `now` without a known leader.
    pub(super) fn new(period_ms: u64, now: Time) -> LeaderMonitor {
        let period_ms = period_ms.max(1);
        LeaderMonitor {
            period_ms,
            next: now.plus(period_ms),
            leaderless_since: Some(now),
        }
    }

    /// The member learned a leader, or lost it.
    pub(super) fn observe(&mut self, now: Time, has_leader: bool) {
        if has_leader {
            self.leaderless_since = None;
        } else {
            self.leaderless_since.get_or_insert(now);
        }
    }

    /// When the next check is due.
    pub(super) fn due(&self) -> Time {
        self.next
    }

    /// Whether required-leader streams must end now: at a check, the leader has been
    /// gone for at least `NO_LEADER_PERIODS - 1` timeouts (so they end by the end of the
    /// next-to-last).
    pub(super) fn check(&mut self, now: Time) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.plus(self.period_ms);
        let threshold = u64::from(NO_LEADER_PERIODS - 1) * self.period_ms;
        self.leaderless_since
            .is_some_and(|since| now.since(since) >= threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a monitor for `ms` in 10 ms steps, the leader known while `leader(t)`;
    /// the times at which streams end.
    fn run(ms: u64, leader: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut m = LeaderMonitor::new(100, Time(0));
        let mut ends = Vec::new();
        for t in (0..=ms).step_by(10) {
            m.observe(Time(t), leader(t));
            if m.check(Time(t)) {
                ends.push(t);
            }
        }
        ends
    }

    #[test]
    fn streams_end_by_three_timeouts_after_the_loss_and_again_each_timeout() {
        // Leader until 150 ms; checks at 100, 200, ...: the first at least 200 ms after
        // the loss is at 400, within 300 ms of it, as etcd's third sample would be.
        assert_eq!(run(700, |t| t < 150), vec![400, 500, 600, 700]);
    }

    #[test]
    fn a_leader_known_in_between_restarts_the_count() {
        // Leaderless from 0 to 250 and from 260 on: the second loss counts from 260.
        assert_eq!(
            run(700, |t| (250..260).contains(&t)),
            vec![200, 500, 600, 700]
        );
    }

    #[test]
    fn after_a_pause_the_first_check_ends_the_streams() {
        let mut m = LeaderMonitor::new(100, Time(0));
        m.observe(Time(0), true);
        m.observe(Time(50), false);
        assert!(!m.check(Time(100)));
        // Paused from 100 to 5000: one check, long past the bound.
        assert!(m.check(Time(5_000)));
    }
}
