//! Counts kept per thread, for the metrics the fan-out path records at every delivery.
//!
//! One atomic counter shared by every core is one cache line that each increment must pull to its core: in a
//! fan-out, where every core writes events to sockets and counts each, the line travels between them at
//! every delivery. Here each worker thread adds to a line of its own (threads are spread over [`SHARDS`]
//! lines, round-robin, in the order they first count), and a scrape adds the lines up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Lines per metric: more than the server's worker threads on most machines (threads beyond share lines,
/// which is still correct).
pub const SHARDS: usize = 8;

/// A value on a cache line of its own (128 bytes: adjacent-line prefetch pairs lines of 64).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Line<T>(pub T);

/// The line the current thread counts on.
pub fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A counter (`_total`) kept per thread: what `prometheus_client`'s `Counter` is, for the fan-out path.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(std::sync::Arc<[Line<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, v: u64) {
        self.0[shard()].0.fetch_add(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

impl prometheus_client::metrics::TypedMetric for ShardedCounter {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Counter;
}

impl prometheus_client::encoding::EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        <Self as prometheus_client::metrics::TypedMetric>::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_add_up() {
        let c = ShardedCounter::default();
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc_by(2)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        c.inc();
        assert_eq!(c.get(), 24_001);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("frames", "test", c);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE frames counter\n") && text.contains("frames_total 24001\n"), "{text}");
    }
}
