//! Retry decisions and backoff, as pure values.

use std::time::Duration;

/// What to do after one attempt. Decided by a provider's `classify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request is answered.
    Success,
    /// Transient: try the request again, after `after` when the server said.
    Retry {
        /// Server-given delay (`retry-after-ms`, `retry-after`), if any.
        after: Option<Duration>,
        /// Why, for counters and the error file.
        reason: RetryReason,
    },
    /// Permanent for this request (e.g. 400): record it as failed.
    Fail,
    /// The whole run cannot go on (bad key, no quota): stop dispatching.
    StopRun(StopReason),
}

/// Why an attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// HTTP 429 rate limit: every worker pauses together.
    RateLimited,
    /// 5xx, 408, 409, 529 or `x-should-retry: true`.
    ServerError,
    /// Connection refused, reset or closed early.
    Connection,
    /// No answer within the per-attempt timeout.
    Timeout,
    /// A 2xx whose body is not JSON.
    MalformedBody,
}

impl RetryReason {
    /// Whether this says the upstream as a whole may be down (as opposed to
    /// a rate limit or one odd answer).
    pub fn is_outage_sign(self) -> bool {
        matches!(
            self,
            RetryReason::ServerError | RetryReason::Connection | RetryReason::Timeout
        )
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// 401 or 403: the key is wrong or lacks access.
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 429 `insufficient_quota` (or a spend cap): no retry will help.
    QuotaExhausted {
        /// The provider's message.
        message: String,
    },
}

/// Exponential backoff with full jitter, capped; a server-given delay wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Delay scale of the first retry.
    pub base: Duration,
    /// Largest computed delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retries_done + 1`. `unit` is a uniform
    /// random number in [0, 1) (full jitter: anywhere from zero to the
    /// exponential ceiling, which spreads a herd of retries out).
    pub fn backoff(
        &self,
        retries_done: u32,
        server_delay: Option<Duration>,
        unit: f64,
    ) -> Duration {
        if let Some(d) = server_delay {
            return d;
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << retries_done.min(20))
            .min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(0, None, 0.999_999).as_millis(), 99);
        assert_eq!(p.backoff(2, None, 0.999_999).as_millis(), 399);
        assert_eq!(p.backoff(10, None, 0.999_999).as_millis(), 999);
        assert_eq!(p.backoff(40, None, 0.5), Duration::from_millis(500));
        assert_eq!(p.backoff(3, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn server_delay_wins() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.backoff(0, Some(Duration::from_secs(7)), 0.1),
            Duration::from_secs(7)
        );
    }
}
