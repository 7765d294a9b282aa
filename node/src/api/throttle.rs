//! Login throttling: too many failed logins for one handle or from one address lock
//! further attempts for a while, so passwords cannot be guessed at line speed.
//! Attempts still being checked count against the limit too, so a burst of guesses
//! sent at once cannot all be checked before the first failure is recorded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const FAILURES_MAX: u32 = 5;
pub const FAILURE_WINDOW_MS: u64 = (5 * 60) * 1000;
pub const LOCKOUT_MS: u64 = 60_000;
/// Keys remembered at once; the oldest are forgotten first when full.
const KEYS_MAX: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts begun and not finished yet.
    pending: u32,
    first_at: Instant,
    last_at: Instant,
}

impl LoginThrottle {
    /// How long until `key` may try again, if it is locked now.
    pub fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.get(key)?;
        if failures.count < FAILURES_MAX
            || now.duration_since(failures.first_at)
                > Duration::from_millis(FAILURE_WINDOW_MS) + Duration::from_millis(LOCKOUT_MS)
        {
            return None;
        }
        let until = failures.last_at + Duration::from_millis(LOCKOUT_MS);
        (until > now).then(|| until - now)
    }

    /// Starts an attempt for `key`: `Err(wait)` when it is locked, or when the
    /// attempts in flight would use up its remaining tries.
    pub fn try_begin(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.locked_for(key, now) {
            return Err(wait);
        }
        let failures = self.entry(key, now);
        if failures.count + failures.pending >= FAILURES_MAX {
            return Err(Duration::from_secs(1));
        }
        failures.pending += 1;
        Ok(())
    }

    /// Ends an attempt begun with `try_begin`.
    pub fn finish(&mut self, key: &str, now: Instant, succeeded: bool) {
        let Some(failures) = self.failures.get_mut(key) else { return };
        failures.pending = failures.pending.saturating_sub(1);
        if succeeded {
            if failures.pending == 0 {
                self.failures.remove(key);
            } else {
                failures.count = 0;
            }
        } else {
            failures.count += 1;
            failures.last_at = now;
        }
    }

    /// Takes back an attempt begun with `try_begin` that was never made.
    pub fn cancel(&mut self, key: &str) {
        if let Some(failures) = self.failures.get_mut(key) {
            failures.pending = failures.pending.saturating_sub(1);
        }
    }

    fn entry(&mut self, key: &str, now: Instant) -> &mut Failures {
        if self.failures.len() >= KEYS_MAX && !self.failures.contains_key(key) {
            self.forget_oldest(now);
        }
        let fresh = Failures { count: 0, pending: 0, first_at: now, last_at: now };
        let failures = self.failures.entry(key.to_owned()).or_insert(fresh);
        if now.duration_since(failures.first_at) > Duration::from_millis(FAILURE_WINDOW_MS) {
            *failures = Failures { pending: failures.pending, ..fresh };
        }
        failures
    }

    #[cfg(test)]
    fn record_failure(&mut self, key: &str, now: Instant) {
        self.try_begin(key, now).expect("not locked");
        self.finish(key, now, false);
    }

    #[cfg(test)]
    fn record_success(&mut self, key: &str) {
        let now = Instant::now();
        self.try_begin(key, now).expect("not locked");
        self.finish(key, now, true);
    }

    fn forget_oldest(&mut self, now: Instant) {
        self.failures.retain(|_, failures| {
            failures.pending > 0 || now.duration_since(failures.last_at) < Duration::from_millis(FAILURE_WINDOW_MS)
        });
        if self.failures.len() >= KEYS_MAX {
            if let Some(oldest) = self
                .failures
                .iter()
                .filter(|(_, failures)| failures.pending == 0)
                .min_by_key(|(_, failures)| failures.last_at)
                .map(|(key, _)| key.clone())
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
    fn guesses_in_flight_count_against_the_limit() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FAILURES_MAX {
            throttle.try_begin("h:ada", now).expect("within the limit");
        }
        assert!(throttle.try_begin("h:ada", now).is_err(), "a sixth guess waits for the five in flight");
        for _ in 0..FAILURES_MAX {
            throttle.finish("h:ada", now, false);
        }
        assert!(throttle.locked_for("h:ada", now).is_some(), "five failures lock");
    }

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
        assert!(throttle
            .locked_for("h:ada", start + Duration::from_millis(LOCKOUT_MS) + Duration::from_secs(1))
            .is_none());
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
