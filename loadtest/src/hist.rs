//! A log-linear histogram of microsecond values (about 1.5 % precision),
//! recordable from many tasks at once without a lock.
//!
//! Values below 128 µs have their own bucket; above, each power of two is
//! split into 64 buckets. Every sample counts, so percentiles come from the
//! full distribution rather than a reservoir.

use std::sync::atomic::{AtomicU64, Ordering};

const LINEAR: u64 = 128;
const SUB: u64 = 64;
/// Enough for values up to 2^48 µs (years).
const BUCKETS: usize = (LINEAR + (48 - 7) * SUB) as usize;

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros());
    let m = v >> (e - 6);
    let idx = LINEAR + (e - 7) * SUB + (m - SUB);
    (idx as usize).min(BUCKETS - 1)
}

/// The middle of bucket `idx`, in µs.
fn value_of(idx: usize) -> f64 {
    let idx = idx as u64;
    if idx < LINEAR {
        return idx as f64;
    }
    let e = 7 + (idx - LINEAR) / SUB;
    let m = SUB + (idx - LINEAR) % SUB;
    let lo = (m << (e - 6)) as f64;
    let width = (1u64 << (e - 6)) as f64;
    lo + width / 2.0
}

/// Shared histogram: `record` from any task.
pub struct AtomicHist {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    sum: AtomicU64,
}

impl Default for AtomicHist {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl AtomicHist {
    pub fn record(&self, us: u64) {
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> Hist {
        Hist {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            max: self.max.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A plain histogram (a snapshot, or one task's own).
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    max: u64,
    sum: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            max: 0,
            sum: 0,
        }
    }
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.counts[index(us)] += 1;
        self.max = self.max.max(us);
        self.sum += us;
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// What was recorded after `earlier` (a snapshot of the same
    /// histogram): counts and sum subtracted; `max` stays the overall one.
    pub fn since(&self, earlier: &Hist) -> Hist {
        Hist {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            max: self.max,
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (value_of(i).min(self.max as f64)) / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.max as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum as f64 / n as f64 / 1000.0,
        }
    }

    /// `{count, p50, p90, p99, p999, max, mean}` in ms, for JSON output.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count(),
            "p50_ms": round3(self.quantile_ms(0.5)),
            "p90_ms": round3(self.quantile_ms(0.9)),
            "p99_ms": round3(self.quantile_ms(0.99)),
            "p999_ms": round3(self.quantile_ms(0.999)),
            "max_ms": round3(self.max_ms()),
            "mean_ms": round3(self.mean_ms()),
        })
    }
}

/// Rounds to three decimals (µs precision for ms values) for readable JSON.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut last = 0;
        for v in [0, 1, 127, 128, 129, 1000, 65_535, 1 << 30] {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            let back = value_of(i);
            assert!(
                (back - v as f64).abs() <= (v as f64 * 0.016).max(1.0),
                "{v} -> {back}"
            );
        }
    }

    #[test]
    fn quantiles_follow_the_samples() {
        let h = AtomicHist::default();
        for v in 1..=1000u64 {
            h.record(v * 10);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        assert!(
            (s.quantile_ms(0.5) - 5.0).abs() < 0.1,
            "{}",
            s.quantile_ms(0.5)
        );
        assert!((s.quantile_ms(0.99) - 9.9).abs() < 0.2);
        assert_eq!(s.max_ms(), 10.0);
    }
}
