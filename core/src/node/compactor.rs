//! `--auto-compaction-mode` / `--auto-compaction-retention`: when the leader proposes a
//! compaction, and to which revision, as etcd's compactors decide it.
//!
//! - Revision mode keeps the last `n` revisions: every five minutes it compacts to
//!   `current - n`.
//! - Periodic mode keeps a window of time: it samples the revision every tenth of the
//!   window (at most hourly) and compacts to the newest sample at least a window old.

use std::collections::VecDeque;
use std::time::Duration;

use crate::raft::Time;

/// How history is compacted automatically.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum AutoCompaction {
    /// Never (retention "0").
    #[default]
    Off,
    /// Keep this many revisions.
    Revisions(u64),
    /// Keep this much time.
    Period(Duration),
}

/// etcd's revision compactor checks every five minutes.
const REVISION_CHECK_MS: u64 = 5 * 60 * 1000;

/// The leader's compaction schedule.
#[derive(Clone, Debug)]
pub struct Compactor {
    mode: AutoCompaction,
    samples: VecDeque<(Time, i64)>,
    next: Option<Time>,
}

impl Compactor {
    /// A schedule for `mode`.
    pub fn new(mode: AutoCompaction) -> Compactor {
        Compactor {
            mode,
            samples: VecDeque::new(),
            next: None,
        }
    }

    /// This member stopped leading: the next leader starts its own schedule.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.next = None;
    }

    /// Called regularly on the leader with the current and compacted revisions; returns
    /// the revision to compact to when one is due.
    pub fn tick(&mut self, now: Time, rev: i64, compacted: i64) -> Option<i64> {
        let step = match self.mode {
            AutoCompaction::Off => return None,
            AutoCompaction::Revisions(_) => REVISION_CHECK_MS,
            AutoCompaction::Period(d) => {
                let window = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
                (window / 10).clamp(1, 3_600_000)
            }
        };
        let next = *self.next.get_or_insert(now.plus(step));
        if now < next {
            if let AutoCompaction::Period(_) = self.mode {
                if self.samples.is_empty() {
                    self.samples.push_back((now, rev));
                }
            }
            return None;
        }
        self.next = Some(now.plus(step));
        let target = match self.mode {
            AutoCompaction::Off => None,
            AutoCompaction::Revisions(n) => Some(rev - i64::try_from(n).unwrap_or(i64::MAX)),
            AutoCompaction::Period(d) => {
                self.samples.push_back((now, rev));
                let window = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                // The newest sample taken at least a window ago, dropping older ones.
                let mut chosen = None;
                while let Some(&(t, r)) = self.samples.front() {
                    if now.since(t) >= window {
                        chosen = Some(r);
                        self.samples.pop_front();
                    } else {
                        break;
                    }
                }
                chosen
            }
        };
        target.filter(|t| *t > compacted && *t > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_keeps_the_last_n_every_five_minutes() {
        let mut c = Compactor::new(AutoCompaction::Revisions(100));
        assert_eq!(c.tick(Time(0), 1000, 0), None, "first check is 5 min away");
        assert_eq!(c.tick(Time(299_999), 1000, 0), None);
        assert_eq!(c.tick(Time(300_000), 1000, 0), Some(900));
        assert_eq!(c.tick(Time(300_500), 2000, 900), None);
        assert_eq!(c.tick(Time(600_000), 950, 900), None, "nothing new to free");
        assert_eq!(c.tick(Time(900_000), 1500, 900), Some(1400));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_a_window_ago() {
        let mut c = Compactor::new(AutoCompaction::Period(Duration::from_secs(100)));
        // Samples every 10 s; revision grows 10 per second.
        let mut out = Vec::new();
        for s in 0..=300u64 {
            if let Some(r) = c.tick(Time(s * 1000), 1 + 10 * s as i64, 0) {
                out.push((s, r));
            }
        }
        assert_eq!(
            out.first(),
            Some(&(100, 1)),
            "the revision at t=0, a window later"
        );
        assert!(out.iter().all(|(s, r)| (*r - 1) / 10 + 100 <= *s as i64));
        assert_eq!(out.last(), Some(&(300, 2001)), "the revision at t=200");
        assert!(Compactor::new(AutoCompaction::Off)
            .tick(Time(1 << 40), 99, 0)
            .is_none());
    }
}
