//! Latency summaries for the client benchmarks: every request's duration is kept (one
//! `Vec` per client task, merged and sorted once at the end), so the percentiles are
//! exact rather than read off a histogram's buckets.

use std::time::Duration;

/// The sorted durations of the requests that succeeded.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// Merges the per-task recordings and sorts them once; sorting per task and merging
    /// would save nothing at these sizes.
    pub fn merge(parts: impl IntoIterator<Item = Vec<Duration>>) -> Self {
        let mut sorted: Vec<Duration> = parts.into_iter().flatten().collect();
        sorted.sort_unstable();
        Latencies { sorted }
    }

    /// Number of recorded durations.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether nothing was recorded (every request failed, or none was sent).
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The nearest-rank percentile, `per_mille` in thousandths (500 = p50, 999 = p99.9):
    /// the smallest recorded duration that at least that share of requests did not
    /// exceed. Integer arithmetic, so p99.9 of 1000 samples is exactly the 999th and not
    /// a float rounding away from it. Zero when nothing was recorded.
    pub fn percentile(&self, per_mille: u32) -> Duration {
        let n = self.sorted.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (u64::from(per_mille.min(1000)) * n as u64).div_ceil(1000) as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }

    /// The shortest duration (zero when empty).
    pub fn fastest(&self) -> Duration {
        self.sorted.first().copied().unwrap_or_default()
    }

    /// The longest duration (zero when empty).
    pub fn slowest(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    /// The mean duration (zero when empty).
    pub fn average(&self) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let sum: u128 = self.sorted.iter().map(Duration::as_nanos).sum();
        Duration::from_nanos((sum / self.sorted.len() as u128) as u64)
    }
}

/// A duration in milliseconds, the unit every benchmark line reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=1000 µs in scrambled order over two parts: pN is exactly N% of the way up.
        let a: Vec<u64> = (1..=1000).filter(|x| x % 3 == 0).rev().collect();
        let b: Vec<u64> = (1..=1000).filter(|x| x % 3 != 0).collect();
        let l = Latencies::merge([us(&a), us(&b)]);
        assert_eq!(l.len(), 1000);
        assert_eq!(l.percentile(500), Duration::from_micros(500));
        assert_eq!(l.percentile(900), Duration::from_micros(900));
        assert_eq!(l.percentile(990), Duration::from_micros(990));
        assert_eq!(l.percentile(999), Duration::from_micros(999));
        assert_eq!(l.percentile(1000), Duration::from_micros(1000));
        assert_eq!(l.fastest(), Duration::from_micros(1));
        assert_eq!(l.slowest(), Duration::from_micros(1000));
        assert_eq!(l.average(), Duration::from_nanos(500_500));
    }

    #[test]
    fn small_samples_round_up_to_a_recorded_value() {
        let l = Latencies::merge([us(&[40, 10, 30, 20])]);
        // Rank ceil(0.5 * 4) = 2 → 20; ceil(0.9 * 4) = 4 → 40.
        assert_eq!(l.percentile(500), Duration::from_micros(20));
        assert_eq!(l.percentile(900), Duration::from_micros(40));
        assert_eq!(l.percentile(0), Duration::from_micros(10));
        let one = Latencies::merge([us(&[7])]);
        assert_eq!(one.percentile(999), Duration::from_micros(7));
        let none = Latencies::merge(Vec::<Vec<Duration>>::new());
        assert!(none.is_empty());
        assert_eq!(none.percentile(500), Duration::ZERO);
        assert_eq!(none.average(), Duration::ZERO);
    }
}
