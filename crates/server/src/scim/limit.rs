//! Token buckets: one per provisioning token, and one shared by every failed
//! authentication. (`crate::rate_limit` is keyed by device; this one by token name.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// Buckets of `burst` tokens refilled at `per_second`, one per key. Keys are token names
/// (or one fixed key), so the map is as large as the number of tokens.
#[derive(Debug)]
pub(crate) struct Buckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token from `key`'s bucket, or says in how many whole seconds (at least 1)
    /// one will be there.
    pub(crate) fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        // A poisoned lock only means another thread panicked mid-update of a counter.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: self.burst,
                refilled_at: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = ((1.0 - bucket.tokens) / self.per_second).ceil();
            // Float-to-integer casts saturate; the value is small and positive.
            Err((wait_s as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_key() {
        let buckets = Buckets::new(2, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| buckets.take("a", t0).is_ok()));
        assert_eq!(buckets.take("a", t0), Err(1));
        assert!(buckets.take("b", t0).is_ok(), "another key has its own bucket");
        assert!(buckets.take("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(buckets.take("a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let buckets = Buckets::new(1, 1);
        let t0 = Instant::now();
        assert!(buckets.take("a", t0).is_ok());
        assert_eq!(buckets.take("a", t0 + Duration::from_millis(100)), Err(1));
        let slow = Buckets::new(1, 1);
        assert!(slow.take("a", t0).is_ok());
        // Refill is per second, so a bucket empty for 0 s waits 1 s.
        assert_eq!(slow.take("a", t0), Err(1));
    }
}
