//! Request limits: a token bucket per key — per device (shared by all its connections),
//! per SCIM token, or one for all failed SCIM authentications.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use redoubt_proto::DeviceId;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// `per_second` requests a second per key, `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimiter<K = DeviceId> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether `key` may make a request now (and counts it).
    pub(crate) fn allow<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.take(key, now).is_ok()
    }

    /// Counts a request of `key`, or says in how many whole seconds one will be allowed.
    /// Every device request comes here: a known key costs one lookup, and a key is copied
    /// only for its first request.
    pub(crate) fn take<Q>(&self, key: &Q, now: Instant) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            return self.spend(bucket, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        self.spend(bucket, now)
    }

    fn spend(&self, bucket: &mut Bucket, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = ((1.0 - bucket.tokens) / self.per_second).ceil();
            Err((wait_s as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(10, 3);
        let device = DeviceId::from([1; 16]);
        let other = DeviceId::from([2; 16]);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(&device, t0)));
        assert!(!limiter.allow(&device, t0));
        // Another device has its own bucket.
        assert!(limiter.allow(&other, t0));
        // 100 ms at 10/s refills one token.
        assert!(limiter.allow(&device, t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(&device, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn burst_then_refill_per_key() {
        let buckets = RateLimiter::<String>::new(2, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| buckets.take("a", t0).is_ok()));
        assert_eq!(buckets.take("a", t0), Err(1));
        assert!(buckets.take("b", t0).is_ok(), "another key has its own bucket");
        assert!(buckets.take("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(buckets.take("a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let buckets = RateLimiter::<String>::new(1, 1);
        let t0 = Instant::now();
        assert!(buckets.take("a", t0).is_ok());
        assert_eq!(buckets.take("a", t0 + Duration::from_millis(100)), Err(1));
        let slow = RateLimiter::<String>::new(1, 1);
        assert!(slow.take("a", t0).is_ok());
        // Refill is per second, so a bucket empty for 0 s waits 1 s.
        assert_eq!(slow.take("a", t0), Err(1));
    }
}
