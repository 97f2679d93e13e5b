//! Per-token request rates (`--rate-limit N`): a token bucket per token
//! id, refilled at N requests per second and holding at most N (the
//! burst). A request finding the bucket empty is answered 429 with
//! `Retry-After`, the whole seconds until a request will pass.
//!
//! The buckets live in this process's memory: with several replicas, each
//! allows N per second per token, and a restart refills every bucket.
//! Requests are counted once their token is verified (before the role
//! check), so refused and failing requests count too; requests without a
//! valid token are not counted (they have no token to count against).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Instant;

use parking_lot::Mutex;

/// Buckets kept before full ones are dropped (a full bucket is the same
/// as no bucket).
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every token seen.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second` requests per second and token, in bursts of as many.
    pub fn new(per_second: NonZeroU32) -> RateLimiter {
        RateLimiter { rate: f64::from(per_second.get()), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `token_id`'s bucket; `Err(seconds)` when it
    /// is empty: the `Retry-After`.
    pub fn check(&self, token_id: &str) -> Result<(), u64> {
        self.check_at(token_id, Instant::now())
    }

    fn check_at(&self, token_id: &str, now: Instant) -> Result<(), u64> {
        let (rate, burst) = (self.rate, self.rate);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(token_id) {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(token_id.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(NonZeroU32::new(2).unwrap());
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0), Err(1));
        // Another token has its own bucket.
        assert_eq!(limiter.check_at("b", t0), Ok(()));
        // Half a second refills one request at 2/s.
        assert_eq!(limiter.check_at("a", t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.check_at("a", t0 + Duration::from_millis(500)), Err(1));
        // Never more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..3).map(|_| limiter.check_at("a", later).is_ok()).collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn retry_after_counts_whole_seconds_until_a_request_passes() {
        let limiter = RateLimiter::new(NonZeroU32::new(1).unwrap());
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert_eq!(limiter.check_at("a", t0 + Duration::from_millis(999)), Err(1));
        assert_eq!(limiter.check_at("a", t0 + Duration::from_millis(1000)), Ok(()));
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::new(NonZeroU32::new(10).unwrap());
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            limiter.check_at(&format!("t{i}"), t0).unwrap();
        }
        limiter.check_at("new", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(limiter.buckets.lock().len(), 1);
    }
}
