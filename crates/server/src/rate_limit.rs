//! Per-device request limits: a token bucket per device, shared by all its connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use redoubt_proto::DeviceId;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<DeviceId, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `device`; false when the device is over its limit.
    pub(crate) fn allow(&self, device: &DeviceId, now: Instant) -> bool {
        // A poisoned lock only means another thread panicked mid-update of a counter;
        // the map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(*device).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
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
}
