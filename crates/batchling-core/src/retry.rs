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
    /// Permanent for this request on this target (e.g. 400): record it as
    /// failed, unless a route has somewhere else to send it for this kind.
    Fail(FailKind),
    /// The whole run cannot go on (bad key, no quota): stop dispatching.
    StopRun(StopReason),
}

/// Why a request failed for good on the target that answered, as far as
/// a route cares: only some kinds move a line along a fallback chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The request itself is wrong (400, 413, 422, an answer over the
    /// cap, a body that cannot be sent): it fails everywhere.
    Invalid,
    /// The prompt (plus `max_tokens`) does not fit the model's context
    /// window: only a route's context-window chain may take it.
    ContextWindow,
    /// The model does not exist, or this key may not use it (404
    /// `model_not_found`): the target is out for the run.
    ModelNotFound,
    /// Refused by the provider's content filter (an error, not an
    /// answer): only a route's content-policy chain may take it.
    ContentPolicy,
}

impl FailKind {
    /// The name in journals, summaries and error files.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::Invalid => "invalid_request",
            FailKind::ContextWindow => "context_window",
            FailKind::ModelNotFound => "model_not_found",
            FailKind::ContentPolicy => "content_policy",
        }
    }
}

/// The messages that say "context window exceeded" where a provider gives
/// no better field (a code or a type), lower-cased. The one place such text
/// is matched: everything else goes by status and structured fields.
const CONTEXT_WINDOW_MESSAGES: &[&str] = &[
    // OpenAI (its code `context_length_exceeded` is checked first).
    "maximum context length is",
    // Anthropic's invalid_request_error.
    "prompt is too long",
    "input length and `max_tokens` exceed context limit",
    // vLLM and llama.cpp servers.
    "exceeds the available context size",
    "is longer than the model's context length",
];

/// Whether an error `message` says the prompt does not fit the context
/// window (by the one table of such messages, for providers whose error
/// has no code for it); only the first 4 KiB is read.
pub fn says_context_window(message: &str) -> bool {
    let head: String = message
        .chars()
        .take(4096)
        .collect::<String>()
        .to_lowercase();
    CONTEXT_WINDOW_MESSAGES.iter().any(|m| head.contains(m))
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
    fn context_window_messages_are_told_from_other_errors() {
        for m in [
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
            "prompt is too long: 210000 tokens > 200000 maximum",
            "input length and `max_tokens` exceed context limit: 199000 + 4096 > 200000",
            "the request exceeds the available context size, try increasing it",
            "This model's maximum context length is 8192 tokens",
            "Input is longer than the model's context length",
            "PROMPT IS TOO LONG",
        ] {
            assert!(says_context_window(m), "{m}");
        }
        for m in [
            "Invalid value for 'temperature'",
            "max_tokens: field required",
            "The model `gpt-9` does not exist",
            "",
            "context",
        ] {
            assert!(!says_context_window(m), "{m}");
        }
    }

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
