//! What the mock is told to do: latency, limits, faults, seed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
        }
    }
}

/// The name of the limit group of keys that are in no [`LimitGroup`] (and of
/// requests without a key): it is the organisation 429 messages name.
pub const DEFAULT_GROUP: &str = "org-mock";

/// The name [`LaneStats`](crate::LaneStats) gives the limit shared by every
/// model without one of its own (`MockConfig::rpm` / `tpm`).
pub const DEFAULT_LIMIT: &str = "*";

/// Limits beyond the default `rpm` / `tpm`, the way OpenAI keeps them: per
/// model (some families share one), and per organisation or project, so
/// two keys of one project share a budget and two projects' budgets add up
/// (docs/providers.md, "OpenAI: rate-limit headers").
///
/// A request is charged to one *lane*: its key's group, and the first
/// [`ModelLimit`] listing its model (or the default limit). Every group has
/// every limit of the table, each with budgets of its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitTable {
    /// Limits of their own for some models. A model listed in none shares
    /// the default limit (`MockConfig::rpm` / `tpm`) with every other such
    /// model; a model listed twice uses the first.
    pub models: Vec<ModelLimit>,
    /// The limit groups keys belong to. A key in none, and a request
    /// without `Authorization: Bearer`, is in [`DEFAULT_GROUP`].
    pub groups: Vec<LimitGroup>,
}

/// One limit: requests and tokens per minute, shared by the models listed
/// (for Anthropic, a model class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimit {
    /// The limit's name, shown in [`LaneStats`](crate::LaneStats).
    pub name: String,
    /// The models (the `model` field of a request) that share it.
    pub models: Vec<String>,
    /// Requests per minute; `None` = unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute; `None` = unlimited.
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM); `None` = unlimited.
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM); `None` = unlimited.
    pub otpm: Option<u64>,
}

impl ModelLimit {
    /// A limit for one model, named after it.
    pub fn new(model: &str, rpm: Option<u64>, tpm: Option<u64>) -> Self {
        Self::shared(model, &[model], rpm, tpm)
    }

    /// A limit named `name` shared by a family of models.
    pub fn shared(name: &str, models: &[&str], rpm: Option<u64>, tpm: Option<u64>) -> Self {
        ModelLimit {
            name: name.to_owned(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            rpm,
            tpm,
            itpm: None,
            otpm: None,
        }
    }

    /// The same limit with Anthropic's input and output token limits.
    pub fn with_input_output(self, itpm: Option<u64>, otpm: Option<u64>) -> Self {
        ModelLimit { itpm, otpm, ..self }
    }
}

/// A limit group (an organisation or project) and the API keys in it.
#[derive(Clone, PartialEq, Eq)]
pub struct LimitGroup {
    /// The group's name: the organisation 429 messages name.
    pub name: String,
    /// The keys (what follows `Bearer ` in `Authorization`) that share its
    /// budgets.
    pub keys: Vec<String>,
}

impl LimitGroup {
    /// A group of keys.
    pub fn new(name: &str, keys: &[&str]) -> Self {
        LimitGroup {
            name: name.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

impl fmt::Debug for LimitGroup {
    // Keys are secrets even in a mock's config: debug output counts them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitGroup")
            .field("name", &self.name)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// How a request's tokens are counted against a TPM limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenCount {
    /// The tokenizer's count: `batchling_core::tokens::estimate(..).total()`,
    /// the input with chat overhead plus the reserved output (the
    /// `max_output` of the estimate: `n` × the request's `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens`, else
    /// [`MockConfig::default_max_output`]).
    #[default]
    Exact,
    /// OpenAI's documented rule (docs/providers.md, "Token counting": "the
    /// maximum of max_tokens and the estimated number of tokens based on
    /// the character count of your request"). Our reading, as the issue
    /// that asked for it reads it: the character estimate is *added* to the
    /// reservation, not compared with it, since a request's input and its
    /// output both take budget. So a request costs `ceil(chars / 4)` plus
    /// the same reserved output as [`TokenCount::Exact`], where `chars`
    /// counts the characters (Unicode scalar values) of every string value
    /// in the body except the top-level `model`: message texts, roles and
    /// names, prompts, inputs, instructions, tool definitions.
    OpenAi,
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenCount::Exact => "exact",
            TokenCount::OpenAi => "openai",
        })
    }
}

impl FromStr for TokenCount {
    type Err = String;

    /// Accepts `exact` / `openai`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "exact" => Ok(TokenCount::Exact),
            "openai" => Ok(TokenCount::OpenAi),
            _ => Err(format!(
                "unknown token count {s:?}: expected exact or openai"
            )),
        }
    }
}

/// How RPM and TPM limits are enforced. Both use fixed windows aligned to
/// the instant the server started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitWindow {
    /// 60 s windows, each allowing `rpm` requests and `tpm` tokens.
    #[default]
    Minute,
    /// 1 s windows, each allowing `rpm / 60` requests and `tpm / 60` tokens
    /// (floor, at least 1). OpenAI documents that it may enforce per-minute
    /// limits in shorter quanta like this. A request costing more tokens than
    /// one quantum (but not more than `tpm`) is admitted only into an empty
    /// window, which it then fills.
    Second,
}

impl LimitWindow {
    /// The length of one window.
    pub(crate) fn length(self) -> Duration {
        match self {
            LimitWindow::Minute => Duration::from_secs(60),
            LimitWindow::Second => Duration::from_secs(1),
        }
    }

    /// How much of a per-minute limit one window allows.
    pub(crate) fn quantum(self, per_minute: u64) -> u64 {
        match self {
            LimitWindow::Minute => per_minute,
            LimitWindow::Second => (per_minute / 60).max(1),
        }
    }
}

impl fmt::Display for LimitWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitWindow::Minute => "minute",
            LimitWindow::Second => "second",
        })
    }
}

impl FromStr for LimitWindow {
    type Err = String;

    /// Accepts `minute` / `second` (and `m`, `s`, `min`, `sec`), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "minute" | "min" | "m" => Ok(LimitWindow::Minute),
            "second" | "sec" | "s" => Ok(LimitWindow::Second),
            _ => Err(format!(
                "unknown limit window {s:?}: expected minute or second"
            )),
        }
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
