//! A lock-free latency histogram in microseconds: exact below 1 ms, then log-linear with 512 sub-buckets
//! per power of two (a relative error below 0.2%), up to about 2^40 µs. Many client tasks record into one
//! histogram with relaxed atomic adds; no allocation per sample.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

const LINEAR: u64 = 1024;
const SUB: u64 = 512;
const MAX_EXP: u64 = 40;
const BUCKETS: usize = (LINEAR + (MAX_EXP - 10 + 1) * SUB) as usize;

pub struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    total: AtomicU64,
    sum: AtomicU64,
}

/// A histogram's counts, to carry between processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub buckets: Vec<(u64, u64)>,
    pub max: u64,
    pub sum: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as u64; // >= 10
    let log = log.min(MAX_EXP);
    let shift = log - 9; // mantissa in 512..1024
    let mantissa = (us >> shift).min(2 * SUB - 1);
    (LINEAR + (log - 10) * SUB + (mantissa - SUB)) as usize
}

/// The largest value a bucket holds.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let log = (i - LINEAR) / SUB + 10;
    let mantissa = (i - LINEAR) % SUB + SUB;
    let shift = log - 9;
    ((mantissa + 1) << shift) - 1
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn record(&self, us: u64) {
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 { 0.0 } else { self.sum.load(Ordering::Relaxed) as f64 / n as f64 }
    }

    /// The value at quantile `q` (0..=1), in µs: the upper bound of the bucket holding it (never below the
    /// true value, so percentiles are not flattered), capped at the exact maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i).min(self.max());
            }
        }
        self.max()
    }

    /// The non-empty buckets as `(a value of the bucket, count)`, with the maximum and the sum: what another
    /// process (a load-generator child) sends for [`Histogram::merge`].
    pub fn snapshot(&self) -> Snapshot {
        let buckets = (self.counts.iter().enumerate())
            .filter_map(|(i, c)| Some((upper(i), c.load(Ordering::Relaxed))).filter(|x| x.1 > 0))
            .collect();
        Snapshot { buckets, max: self.max(), sum: self.sum.load(Ordering::Relaxed) }
    }

    /// Adds the samples of a snapshot (each bucket's value falls in the same bucket here).
    pub fn merge(&self, s: &Snapshot) {
        for &(v, n) in &s.buckets {
            self.counts[index(v)].fetch_add(n, Ordering::Relaxed);
            self.total.fetch_add(n, Ordering::Relaxed);
        }
        self.sum.fetch_add(s.sum, Ordering::Relaxed);
        self.max.fetch_max(s.max, Ordering::Relaxed);
    }

    /// `(value µs, fraction of samples <= value)` for each non-empty bucket: the CDF.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let n = self.count();
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                seen += c;
                out.push((upper(i).min(self.max()), seen as f64 / n as f64));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for v in [0, 1, 999, 1023, 1024, 1500, 4096, 123_456, 9_999_999, 1 << 39] {
            let i = index(v);
            assert!(upper(i) >= v, "{v}: upper {}", upper(i));
            assert!(upper(i) as f64 <= v as f64 * 1.002 + 1.0, "{v}: upper {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < v);
            }
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.max(), 1000);
        let merged = Histogram::new();
        merged.merge(&h.snapshot());
        merged.merge(&h.snapshot());
        assert_eq!((merged.count(), merged.quantile(0.5), merged.max()), (2000, 500, 1000));
    }
}
