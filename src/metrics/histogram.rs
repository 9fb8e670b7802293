//! A histogram of durations that takes an observation with atomics alone, for the fan-out path.
//!
//! prometheus-client's own histogram takes a mutex per observation. That is fine once per request, but the
//! listener → socket histogram is observed by every subscriber's session for every event it sends: thousands
//! of sessions on every core would queue on one lock. Here an observation is a bucket search over a dozen
//! bounds and two relaxed atomic adds, on the counts of the observing thread (see [`super::shard`]); the
//! encoder adds the threads' counts up and turns them into Prometheus' cumulative buckets when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::shard::{Line, SHARDS, shard};

/// A handle: clones share the same counts (as prometheus-client's metrics do).
#[derive(Clone, Debug)]
pub struct FastHistogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    /// Upper bounds, in seconds, ascending; `+Inf` is implied.
    bounds: &'static [f64],
    /// Each thread's counts (see [`super::shard`]).
    shards: Box<[Line<Counts>]>,
}

/// Bounds a histogram may have at most (with `+Inf`, one count more).
const MAX_BOUNDS: usize = 15;

#[derive(Debug, Default)]
struct Counts {
    /// Observations per bucket (not cumulative); the one after the last bound is `+Inf`.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// The sum of the observations, in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

impl FastHistogram {
    pub fn new(bounds: &'static [f64]) -> FastHistogram {
        assert!(bounds.len() <= MAX_BOUNDS && bounds.windows(2).all(|w| w[0] < w[1]));
        let shards = (0..SHARDS).map(|_| Line::default()).collect();
        FastHistogram(Arc::new(Buckets { bounds, shards }))
    }

    pub fn observe(&self, d: Duration) {
        let h = &*self.0;
        let secs = d.as_secs_f64();
        let bucket = h.bounds.iter().position(|b| secs <= *b).unwrap_or(h.bounds.len());
        let mine = &h.shards[shard()].0;
        mine.counts[bucket].fetch_add(1, Ordering::Relaxed);
        mine.sum_nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for FastHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for FastHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &*self.0;
        // Read without a lock: a scrape during observations may see a bucket's count before the sum moved, a
        // difference of one observation that the next scrape settles. The encoder makes the counts cumulative.
        let count = |i: usize| h.shards.iter().map(|l| l.0.counts[i].load(Ordering::Relaxed)).sum::<u64>();
        let buckets: Vec<(f64, u64)> =
            (0..=h.bounds.len()).map(|i| (h.bounds.get(i).copied().unwrap_or(f64::INFINITY), count(i))).collect();
        let total = buckets.iter().map(|b| b.1).sum();
        let sum = h.shards.iter().map(|l| l.0.sum_nanos.load(Ordering::Relaxed)).sum::<u64>() as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_encoded_as_cumulative_buckets_with_their_sum() {
        static BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
        let h = FastHistogram::new(BOUNDS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("delay_seconds", "test", h);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("delay_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("delay_seconds_bucket{le=\"0.01\"} 3\n"), "{text}");
        assert!(text.contains("delay_seconds_bucket{le=\"0.1\"} 3\n"), "{text}");
        assert!(text.contains("delay_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("delay_seconds_count 4\n"), "{text}");
        assert!(text.contains("delay_seconds_sum 2.0105\n"), "{text}");
    }
}
