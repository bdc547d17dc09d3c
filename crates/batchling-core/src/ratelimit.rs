//! What a provider told us about its rate limits on one response.

use std::time::Duration;

/// One limit (requests or tokens) as seen in response headers. Every field is
/// optional: providers send some, all or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitReading {
    /// The per-minute limit.
    pub limit: Option<u64>,
    /// What is left before the provider starts refusing.
    pub remaining: Option<u64>,
    /// Time until the budget is full again.
    pub reset: Option<Duration>,
}

impl LimitReading {
    /// Whether the reading says anything at all.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// Rate-limit information from one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitSnapshot {
    /// Requests per minute.
    pub requests: LimitReading,
    /// Tokens per minute (Anthropic: the most restrictive token limit in
    /// force, else input and output together).
    pub tokens: LimitReading,
    /// Input tokens per minute (Anthropic's ITPM; OpenAI sends none).
    pub input_tokens: LimitReading,
    /// Output tokens per minute (Anthropic's OTPM; OpenAI sends none).
    pub output_tokens: LimitReading,
    /// The resets were whole-second instants (Anthropic's RFC 3339
    /// timestamps), so each may be up to a second off: they cannot tell
    /// one second's window from the next (the pacer then neither learns a
    /// charge ratio nor holds to `remaining` from them).
    pub coarse_resets: bool,
}

impl RateLimitSnapshot {
    /// Whether the response carried no rate-limit headers.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.tokens.is_empty()
            && self.input_tokens.is_empty()
            && self.output_tokens.is_empty()
    }
}
