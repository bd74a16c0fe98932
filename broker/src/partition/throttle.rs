//! The reassignment throttle (Kafka's `leader.replication.throttled.rate` for the replicas a
//! reassignment adds): a leader serves the fetches of adding replicas from one byte budget per
//! broker, refilled at the cluster's rate (`MetadataImage::effective_replication_throttle`,
//! 0 = unthrottled) with at most one second's worth saved up. A fetch is served whole while the
//! budget is positive, and the budget goes negative by what it took: batches are never split,
//! and the average holds. An over-budget fetch gets no records (the follower's long poll ends
//! with the next append or its max wait) while replicas already in sync fetch as usual.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct ReplicationThrottle {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may still be served; negative after a fetch larger than what was left.
    budget: f64,
    rate: u64,
    refilled: Instant,
}

impl Default for ReplicationThrottle {
    fn default() -> Self {
        Self { bucket: Mutex::new(Bucket { budget: 0.0, rate: 0, refilled: Instant::now() }) }
    }
}

impl ReplicationThrottle {
    /// Whether a throttled replica may be served now, at `rate` bytes per second.
    pub fn allows(&self, rate: u64) -> bool {
        self.allows_at(rate, Instant::now())
    }

    /// Count `bytes` served to a throttled replica.
    pub fn served(&self, bytes: usize) {
        self.bucket.lock().expect("throttle lock").budget -= bytes as f64;
    }

    fn allows_at(&self, rate: u64, now: Instant) -> bool {
        let mut b = self.bucket.lock().expect("throttle lock");
        let burst = rate as f64;
        if rate != b.rate {
            // A new rate starts from what the old one left, capped at the new burst.
            b.rate = rate;
            b.budget = b.budget.min(burst);
        }
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.budget = (b.budget + elapsed * burst).min(burst);
        b.refilled = now;
        b.budget > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_refills_at_the_rate_and_saves_up_at_most_a_second() {
        let t = ReplicationThrottle::default();
        let start = t.bucket.lock().unwrap().refilled;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 1 MB/s: after 0.5 s there is budget; one 1 MB fetch overdraws it by 0.5 MB.
        assert!(t.allows_at(1_000_000, at(500)));
        t.served(1_000_000);
        assert!(!t.allows_at(1_000_000, at(700)), "0.3 MB short");
        assert!(t.allows_at(1_000_000, at(1_010)));
        t.served(1_000_000);
        // Idle for ten seconds: only one second's worth is saved up.
        assert!(t.allows_at(1_000_000, at(11_010)));
        t.served(2_500_000);
        assert!(!t.allows_at(1_000_000, at(12_000)));
        assert!(t.allows_at(1_000_000, at(12_600)));
    }

    #[test]
    fn a_lower_rate_caps_what_was_saved_under_the_higher_one() {
        let t = ReplicationThrottle::default();
        let start = t.bucket.lock().unwrap().refilled;
        assert!(t.allows_at(10_000_000, start + Duration::from_secs(2)));
        // 10 MB saved under 10 MB/s; at 100 kB/s at most 100 kB remain.
        assert!(t.allows_at(100_000, start + Duration::from_secs(2)));
        t.served(150_000);
        assert!(!t.allows_at(100_000, start + Duration::from_millis(2_400)));
        assert!(t.allows_at(100_000, start + Duration::from_millis(2_600)));
    }
}
