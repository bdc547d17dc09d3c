//! What the mock is told to do: latency, limits, faults, seed.

use std::time::Duration;

use batchling_core::limits::LimitsFile;

use crate::shape::Shape;
pub use batchling_core::limits::{
    DEFAULT_LIMIT, LimitGroup, LimitTable, LimitWindow, ModelLimit, TokenCount,
};

/// How the mock behaves. Build with struct update syntax:
/// `MockConfig { rpm: Some(120), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Added before every admitted answer (not before 400s and 429s, which
    /// come back at once, as OpenAI's do).
    pub latency: Duration,
    /// A uniform extra delay in `0..latency_jitter`, drawn from `seed`.
    pub latency_jitter: Duration,
    /// Requests per minute of every model without a limit of its own in
    /// [`MockConfig::limits`], in every limit group. `None` = unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute of the same, counted by [`MockConfig::token_count`].
    /// `None` = unlimited.
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM) of the same: input
    /// tokens plus cache writes, cache reads left out (see the crate docs,
    /// *Anthropic*). `None` = unlimited.
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM) of the same: the
    /// reserved output (`max_tokens`). `None` = unlimited.
    pub otpm: Option<u64>,
    /// Limits per model (or family of models) and the limit groups keys
    /// belong to. Empty by default: one budget for everything.
    pub limits: LimitTable,
    /// How a request's tokens are counted against TPM.
    pub token_count: TokenCount,
    /// How the limits are enforced over time.
    pub window: LimitWindow,
    /// Send `x-ratelimit-*` headers for the limits that are configured.
    pub send_limit_headers: bool,
    /// Seeded random failures.
    pub faults: Faults,
    /// Seed for faults and jitter. The same seed and the same arrival order
    /// give the same decisions.
    pub seed: u64,
    /// Output tokens assumed when a request sets no `max_completion_tokens`,
    /// `max_tokens` or `max_output_tokens`: both the most the answer will
    /// generate and what admission reserves against TPM. Default 16.
    pub default_max_output: u64,
    /// Keep per-request-key counters for [`crate::MockServer::ok_count_for`].
    /// Costs a map entry per distinct key; benchmarks with millions of
    /// requests may turn it off. Default true.
    pub track_keys: bool,
    /// Largest accepted request body; larger ones get 413. Default 32 MiB.
    pub max_body_bytes: usize,
    /// Which provider's URLs, headers and bodies it serves (OpenAI's by
    /// default; see [`Shape`]).
    pub shape: Shape,
    /// Azure's shape: the share (`0.0..=1.0`) of chat requests its content
    /// filter refuses with a 400 `content_filter`, drawn from `seed`.
    pub content_filter: f64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            rpm: None,
            tpm: None,
            itpm: None,
            otpm: None,
            limits: LimitTable::default(),
            token_count: TokenCount::Exact,
            window: LimitWindow::Minute,
            send_limit_headers: true,
            faults: Faults::default(),
            seed: 0,
            default_max_output: 16,
            track_keys: true,
            max_body_bytes: 32 << 20,
            shape: Shape::OpenAi,
            content_filter: 0.0,
        }
    }
}

/// The name of the limit group of keys that are in no [`LimitGroup`] (and of
/// requests without a key): it is the organisation 429 messages name.
pub const DEFAULT_GROUP: &str = "org-mock";

impl MockConfig {
    /// Put what a limits file says into this config: its table, and each
    /// of the default limits, window and token count the file sets.
    pub fn apply_limits(&mut self, file: LimitsFile) {
        self.limits = file.table;
        self.rpm = file.rpm.or(self.rpm);
        self.tpm = file.tpm.or(self.tpm);
        self.itpm = file.itpm.or(self.itpm);
        self.otpm = file.otpm.or(self.otpm);
        self.window = file.window.unwrap_or(self.window);
        self.token_count = file.token_count.unwrap_or(self.token_count);
    }
}

/// Probabilities (each `0.0..=1.0`, default 0) of injected failures, decided
/// per admitted request from `(seed, arrival number)`.
///
/// `error_500`, `error_503`, `drop_connection`, `malformed_body` and
/// `overloaded` exclude each other and are tried in that order from one draw (so their sum should
/// stay at most 1). `slow` is drawn independently and can add to any answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// 500 with a `server_error` envelope.
    pub error_500: f64,
    /// 503 with a `server_error` envelope.
    pub error_503: f64,
    /// Close the connection after reading the request, without any response.
    pub drop_connection: f64,
    /// Sleep an extra `slow_delay` before answering.
    pub slow: f64,
    /// The extra delay of a slow answer. Default 1 s.
    pub slow_delay: Duration,
    /// 200 whose JSON body is cut off half way.
    pub malformed_body: f64,
    /// Anthropic's 529 `overloaded_error` (on the OpenAI endpoints, a 503,
    /// OpenAI's word for the same). Tried after the four above.
    pub overloaded: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_500: 0.0,
            error_503: 0.0,
            drop_connection: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(1),
            malformed_body: 0.0,
            overloaded: 0.0,
        }
    }
}

impl Faults {
    /// No fault can happen.
    pub(crate) fn is_none(&self) -> bool {
        self.error_500 <= 0.0
            && self.error_503 <= 0.0
            && self.drop_connection <= 0.0
            && self.slow <= 0.0
            && self.malformed_body <= 0.0
            && self.overloaded <= 0.0
    }
}
