//! How often, and how patiently, a unit of work is re-run after a retryable
//! error.

use std::time::Duration;

use rand::Rng;

/// Bounded retries with jittered exponential backoff.
///
/// The default makes 3 attempts (as Zope's publisher did) and waits a random
/// time up to 2 ms, then up to 4 ms, ... capped at 100 ms between them.
///
/// ```
/// use std::time::Duration;
/// use keel_txn::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .with_attempts(8)
///     .with_backoff(Duration::from_millis(1), Duration::from_millis(50));
/// assert_eq!(policy.attempts(), 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// Make at most `attempts` attempts in all (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Wait a random time in `[0, min(max, initial * 2^(n-1))]` before the
    /// n-th retry ("full jitter", so retrying clients spread out).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The most attempts made in all.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long to wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(20);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_never_exceeds_its_cap_and_grows_with_retries() {
        let policy =
            RetryPolicy::default().with_backoff(Duration::from_millis(1), Duration::from_millis(8));
        for retry in 1..30 {
            let cap = Duration::from_millis(1 << (retry - 1).min(3));
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= cap);
            }
        }
    }

    #[test]
    fn at_least_one_attempt_is_made() {
        assert_eq!(RetryPolicy::default().with_attempts(0).attempts(), 1);
    }
}
