//! Login throttling: too many failed logins for one handle or from one address lock
//! further attempts for a while, so passwords cannot be guessed at line speed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const FAILURES_MAX: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Keys remembered at once; the oldest are forgotten first when full.
const KEYS_MAX: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_at: Instant,
    last_at: Instant,
}

impl LoginThrottle {
    /// How long until `key` may try again, if it is locked now.
    pub fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.get(key)?;
        if failures.count < FAILURES_MAX || now.duration_since(failures.first_at) > FAILURE_WINDOW + LOCKOUT {
            return None;
        }
        let until = failures.last_at + LOCKOUT;
        (until > now).then(|| until - now)
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        if self.failures.len() >= KEYS_MAX && !self.failures.contains_key(key) {
            self.forget_oldest(now);
        }
        let failures =
            self.failures.entry(key.to_owned()).or_insert(Failures { count: 0, first_at: now, last_at: now });
        if now.duration_since(failures.first_at) > FAILURE_WINDOW {
            *failures = Failures { count: 0, first_at: now, last_at: now };
        }
        failures.count += 1;
        failures.last_at = now;
    }

    pub fn record_success(&mut self, key: &str) {
        self.failures.remove(key);
    }

    fn forget_oldest(&mut self, now: Instant) {
        self.failures.retain(|_, failures| now.duration_since(failures.last_at) < FAILURE_WINDOW);
        if self.failures.len() >= KEYS_MAX {
            if let Some(oldest) =
                self.failures.iter().min_by_key(|(_, failures)| failures.last_at).map(|(key, _)| key.clone())
            {
                self.failures.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_and_unlocks_after_the_lockout() {
        let mut throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..FAILURES_MAX {
            assert!(throttle.locked_for("h:ada", start).is_none());
            throttle.record_failure("h:ada", start);
        }
        assert!(throttle.locked_for("h:ada", start).is_some());
        assert!(throttle.locked_for("h:bob", start).is_none());
        assert!(throttle.locked_for("h:ada", start + LOCKOUT + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn success_clears_failures() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FAILURES_MAX - 1 {
            throttle.record_failure("k", now);
        }
        throttle.record_success("k");
        throttle.record_failure("k", now);
        assert!(throttle.locked_for("k", now).is_none());
    }
}
