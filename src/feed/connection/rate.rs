//! Token buckets: how much one connection may ask of the server per second, with a burst.
//!
//! Five per connection: frames received (every kind: a ping costs the server a pong), joins (each costs the
//! database), bytes of history replayed, broadcasts and presence updates (each reaches every server). A request over the limit is refused with `rate_limited` and the
//! time after which it would be accepted; the refusal is counted too, as debt, so a client that ignores the
//! answers and keeps on (as many refused requests as its burst) is closed with 1008 rather than answered forever.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{FeedSettings, Rate};

/// What a connection's rates limit (the close reason and the `rate_limited` message name it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Limit {
    Messages,
    Joins,
    Broadcasts,
    PresenceUpdates,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Messages => "messages",
            Limit::Joins => "joins",
            Limit::Broadcasts => "broadcasts",
            Limit::PresenceUpdates => "presence updates",
        }
    }

    /// As a metric's label (`boardcast_rate_limited_total{limit}`).
    pub fn label(self) -> &'static str {
        match self {
            Limit::Messages => "messages",
            Limit::Joins => "joins",
            Limit::Broadcasts => "broadcasts",
            Limit::PresenceUpdates => "presence_updates",
        }
    }

    pub fn rate(self, settings: &FeedSettings) -> Rate {
        match self {
            Limit::Messages => settings.messages,
            Limit::Joins => settings.joins,
            Limit::Broadcasts => settings.broadcasts,
            Limit::PresenceUpdates => settings.presence_updates,
        }
    }
}

pub(super) struct Bucket {
    /// May be negative: debt, refused requests or bytes sent beyond the budget.
    tokens: f64,
    at: Instant,
    per_sec: f64,
    burst: f64,
}

/// The answer to a request, by its connection's bucket.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Allowed,
    /// Refused: it would be accepted after this long.
    Limited(Duration),
    /// Refused, and the client has ignored as many refusals as its burst: close the connection.
    Abusive,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> Bucket {
        Bucket::with(f64::from(rate.per_sec), f64::from(rate.burst))
    }

    /// A full bucket of `burst` tokens, refilled at `per_sec`.
    pub fn with(per_sec: f64, burst: f64) -> Bucket {
        Bucket { tokens: burst, at: Instant::now(), per_sec: per_sec.max(f64::MIN_POSITIVE), burst }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.at = self.at.max(now);
    }

    /// One request.
    pub fn take(&mut self) -> Verdict {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Verdict {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allowed
        } else if self.tokens < -self.burst {
            Verdict::Abusive
        } else {
            // When one token is back, counting this refusal.
            Verdict::Limited(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }

    /// Tokens available now (negative while in debt).
    pub fn available(&mut self) -> f64 {
        self.refill(Instant::now());
        self.tokens
    }

    /// Spends `n` tokens, into debt if need be.
    pub fn spend(&mut self, n: f64) {
        self.refill(Instant::now());
        self.tokens -= n;
    }

    /// When the bucket will hold `n` tokens (at most its burst).
    pub fn when(&mut self, n: f64) -> Instant {
        self.refill(Instant::now());
        self.at + Duration::from_secs_f64((n.min(self.burst) - self.tokens).max(0.0) / self.per_sec)
    }
}

/// `retry_after` in whole milliseconds, rounded up, for the error frame.
pub(super) fn millis(d: Duration) -> u64 {
    d.as_micros().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_ms(v: Verdict) -> u64 {
        match v {
            Verdict::Limited(d) => millis(d),
            other => panic!("expected a refusal with a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_calls_persistence_abuse() {
        let mut b = Bucket::new(Rate { per_sec: 10, burst: 3 });
        let t = b.at;
        for _ in 0..3 {
            assert_eq!(b.take_at(t), Verdict::Allowed);
        }
        // Over the limit: refused, with the wait for one token (counting each refusal as debt).
        let waits: Vec<u64> = (0..3).map(|_| wait_ms(b.take_at(t))).collect();
        assert_eq!(waits, [200, 300, 400]);
        assert_eq!(b.take_at(t), Verdict::Abusive);
        // A client that waits as told is served again.
        let mut b = Bucket::new(Rate { per_sec: 10, burst: 3 });
        let t = b.at;
        for _ in 0..3 {
            b.take_at(t);
        }
        let wait = wait_ms(b.take_at(t));
        assert_eq!(b.take_at(t + Duration::from_millis(wait)), Verdict::Allowed);
        // A bucket never holds more than its burst, however long it waits.
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take_at(later), Verdict::Allowed);
        }
        assert!(matches!(b.take_at(later), Verdict::Limited(_)));
    }

    #[test]
    fn a_byte_budget_goes_into_debt_and_says_when_it_is_paid() {
        let mut b = Bucket::with(1000.0, 500.0);
        b.spend(800.0);
        let debt = b.available();
        assert!((-300.0..-299.0).contains(&debt), "{debt}");
        let wait = b.when(500.0).saturating_duration_since(b.at);
        assert!((799..=800).contains(&millis(wait)), "{wait:?}");
    }
}
