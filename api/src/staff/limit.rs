//! Rate limits: a token bucket per key (client address, sign-in email), in memory, bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys a limiter remembers; past it, full (idle) buckets are forgotten, then the oldest.
const MAX_KEYS: usize = 10_000;

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `false` (refuse: 429) when it has none.
    pub fn allow_at(&self, key: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_KEYS
                && let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    /// How long until `key` has a token again (for `Retry-After`), at most a minute.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.per_second).clamp(1.0, 60.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_until_tokens_refill_and_keys_are_separate() {
        let l = RateLimiter::new(3, 1.0);
        let t = Instant::now();
        assert!((0..3).all(|_| l.allow_at("a", t)));
        assert!(!l.allow_at("a", t));
        assert!(l.allow_at("b", t), "another key has its own bucket");
        assert!(!l.allow_at("a", t + Duration::from_millis(500)));
        assert!(l.allow_at("a", t + Duration::from_millis(1600)));
    }

    #[test]
    fn memory_stays_bounded_under_many_keys() {
        let l = RateLimiter::new(2, 1.0);
        let t = Instant::now();
        for i in 0..(MAX_KEYS + 500) {
            l.allow_at(&format!("k{i}"), t);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
