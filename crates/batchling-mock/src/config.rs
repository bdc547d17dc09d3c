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
    /// Requests per minute. `None` = unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute (input + reserved output, see the crate docs). `None` = unlimited.
    pub tpm: Option<u64>,
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
    pub fn length(self) -> Duration {
        match self {
            LimitWindow::Minute => Duration::from_secs(60),
            LimitWindow::Second => Duration::from_secs(1),
        }
    }

    /// How much of a per-minute limit one window allows.
    pub fn quantum(self, per_minute: u64) -> u64 {
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
/// `error_500`, `error_503`, `drop_connection` and `malformed_body` exclude
/// each other and are tried in that order from one draw (so their sum should
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
        }
    }
}

impl Faults {
    /// No fault can happen.
    pub fn is_none(&self) -> bool {
        self.error_500 <= 0.0
            && self.error_503 <= 0.0
            && self.drop_connection <= 0.0
            && self.slow <= 0.0
            && self.malformed_body <= 0.0
    }
}
