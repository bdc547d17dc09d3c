//! The fake provider: a real HTTP/1.1 server that answers like OpenAI's
//! synchronous API and like Anthropic's Messages API (by path, from the
//! same server), with rate limits, latency and seeded faults, and fakes of
//! both Batch APIs.
//!
//! `batchling mock` runs it as a process (benchmarks drive it at well over
//! 10,000 requests/s), and integration tests start it in-process:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use batchling_mock::{MockConfig, MockServer};
//! let server = MockServer::start(
//!     MockConfig { rpm: Some(120), ..MockConfig::default() },
//!     "127.0.0.1:0".parse().unwrap(),
//! )
//! .await?;
//! let base_url = server.base_url(); // "http://127.0.0.1:PORT/v1"
//! // ... send POST {base_url}/chat/completions ...
//! assert_eq!(server.stats().rate_limited, 0);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What a request goes through
//! 0. Its [`Shape`] (`shape.rs`): Azure's or Groq's URLs rewritten onto
//!    OpenAI's, Azure's `api-key` required, and on the way back Azure's
//!    headers and 429 body, Groq's `x_groq` (OpenAI's shape: nothing).
//! 1. Routing (`server.rs`): `POST /v1/{chat/completions,completions,embeddings,responses,moderations}`
//!    (404/405 otherwise); `/v1/files...` and `/v1/batches...` go to the fake Batch API
//!    (`batches/`, see its docs) and skip the steps below. `GET /_mock/stats` returns
//!    [`MockStats`] as JSON, with a `lanes` list of [`LaneStats`].
//! 2. The steps of `online.rs`, in order: read the body (413 over
//!    `max_body_bytes`); count an attempt for its key; the status
//!    override, when set, answers at once.
//! 3. Validation, answered with 400 and OpenAI's error envelope: invalid
//!    JSON, a missing `model`, a body containing `__fail_400__`, ...
//! 4. Admission against its lane's RPM/TPM (see *Limits* below; cost by
//!    [`TokenCount`], input plus reserved output, never refunded). Over a
//!    limit: 429 at once with `retry-after-ms` / `retry-after`; a rejected
//!    request costs nothing. A request costing more than the whole TPM gets
//!    a "Request too large" 429 without `retry-after` (it can never
//!    succeed).
//! 5. The seeded fault draw, then the latency sleep.
//! 6. The answer: a deterministic function of the body (see `answer.rs`), or
//!    the drawn fault; `__fail_500_always__` → 500, `__no_json__` → 200 with
//!    a non-JSON body.
//!
//! Every answer carries `x-request-id` and, when its lane has limits and
//! `send_limit_headers` is on, the six `x-ratelimit-*` headers of that lane,
//! computed when the answer is sent (`reply.rs`).
//!
//! # Limits
//! OpenAI keeps limits per model (some families share one) and per
//! organisation or project, not per key (docs/providers.md, "OpenAI:
//! rate-limit headers"). The mock does the same: a request is charged to
//! one *lane*, the pair of
//! - its limit group: the [`LimitGroup`] its `Authorization: Bearer` key is
//!   in, else [`DEFAULT_GROUP`] (`org-mock`); two keys of one group share
//!   every budget, two groups have budgets of their own;
//! - its model limit: the first [`ModelLimit`] listing its `model`, else
//!   the default limit [`MockConfig::rpm`] / [`MockConfig::tpm`], which
//!   every other model shares (so with no [`LimitTable`], one budget for
//!   everything, as before lanes).
//!
//! The `x-ratelimit-*` headers and the 429 message ("Rate limit reached for
//! MODEL in organization GROUP on tokens per min (TPM): Limit N, Used U,
//! Requested R. Please try again in 1.5s. ...") describe the lane charged.
//! TPM counts the tokenizer's tokens ([`TokenCount::Exact`]) or OpenAI's
//! documented rule, characters / 4 plus the reserved output
//! ([`TokenCount::OpenAi`]). [`MockServer::lane_stats`] gives each lane's
//! admitted requests and tokens second by second, so a test can check that
//! no second went over a lane's share. `batchling mock --limits FILE` reads
//! the same from TOML ([`LimitsFile`]).
//!
//! # Anthropic
//! `/v1/messages...` is Anthropic's API (docs/providers.md, "Anthropic:
//! Messages and Message Batches"); its base URL is
//! [`MockServer::anthropic_base_url`]. Every call needs a key (`x-api-key`,
//! or `Authorization: Bearer`; [`MockServer::require_anthropic_key`] pins
//! one) and an `anthropic-version` header (a 400 without, as Anthropic
//! answers). Errors use Anthropic's envelope `{"type":"error","error":
//! {"type","message"},"request_id"}`; every answer has `request-id`.
//!
//! `POST /v1/messages` goes through the same steps as an OpenAI request:
//! 1. the key and version; the body, bounded by `max_body_bytes` (413
//!    `request_too_large` over it, before it is read); its key for
//!    [`MockServer::ok_count_for`] (`x-batchling-custom-id`, else
//!    `metadata.user_id`, else the body's xxh3); the status override;
//! 2. Anthropic's checks (400 `invalid_request_error` naming the field):
//!    `model`, `max_tokens` ≥ 1, `messages` non-empty with roles `user` /
//!    `assistant` (a `system` role is refused; consecutive turns of one
//!    role are combined, as Anthropic does),
//!    content a string or typed blocks, `system` a string or text blocks,
//!    `temperature` in 0..=1, no `stream`. A body with `__fail_400__` gets
//!    400; one with [`MARKER_SPEND_LIMIT`] the spend-cap 429 (no
//!    `retry-after`);
//! 3. admission to its lane (the same lanes, keyed by `x-api-key`): one
//!    request against RPM, input tokens plus cache writes against ITPM
//!    ([`MockConfig::itpm`]; cache reads do not count, as Anthropic says),
//!    `max_tokens` against OTPM ([`MockConfig::otpm`]), both against TPM.
//!    Over a limit: 429 `rate_limit_error` with `retry-after` (whole
//!    seconds) naming the limit; a request that alone exceeds one is a
//!    400, since it can never succeed;
//! 4. the fault draw and latency: `error_500` gives 500 `api_error`,
//!    `error_503` and [`Faults::overloaded`] 529 `overloaded_error`;
//! 5. the message object (`msg_...`, one text block echoing the last user
//!    text, `stop_reason` `end_turn`, `max_tokens` or `stop_sequence`, and
//!    `usage` with `input_tokens`, `output_tokens`,
//!    `cache_creation_input_tokens`, `cache_read_input_tokens`,
//!    `cache_creation`). Tokens are characters / 4; a block with
//!    `cache_control` makes the first request with that prefix report it as
//!    cache writes and later ones as cache reads (`anthropic/message.rs`).
//!
//! Answers carry `anthropic-ratelimit-{requests,tokens,input-tokens,
//! output-tokens}-{limit,remaining,reset}` for the limits the lane has
//! (`tokens-*` is its TPM, else input and output combined), the reset as
//! an RFC 3339 instant. Unlike Anthropic, remaining counts are exact, not
//! rounded to thousands, and limits are fixed windows like OpenAI's, not a
//! token bucket.
//!
//! The Message Batches API (`anthropic/batches.rs`) takes requests inline
//! (at most [`MAX_BATCH_REQUESTS`] and [`MAX_BATCH_BYTES`]), moves a batch
//! `in_progress` → (`canceling` →) `ended` when it is retrieved, steered by
//! [`MockServer::set_message_batch_behavior`] and the setters below it,
//! and serves JSONL results (`succeeded` / `errored` / `canceled` /
//! `expired`) at the batch's `results_url`.
//!
//! # Files
//! - `lib.rs`: [`MockServer`]: start, stop, stats, runtime setters.
//! - `config.rs`: [`MockConfig`], [`LimitTable`], [`TokenCount`],
//!   [`LimitWindow`], [`Faults`].
//! - `limits/`: lanes (`mod.rs`), each lane's fixed-window budget and
//!   per-second log (`budget.rs`), the TPM counting rules (`count.rs`), the
//!   limits file (`file.rs`). The reset headers' Go-duration text reads
//!   back with [`parse_go_duration`].
//! - `faults.rs`: the seeded per-request draw (fault, slow, jitter).
//! - `answer.rs`: validation and the deterministic answer bodies.
//! - `batches/`: a fake Files + Batches API (upload, create, poll,
//!   cancel, list, download) that answers each batch line like the online
//!   endpoints, steered by [`BatchBehavior`] and the setters below.
//! - `anthropic/`: the Anthropic API: common checks, envelope and headers
//!   (`mod.rs`), the Messages steps (`online.rs`), validation, the prompt
//!   cache and the message object (`message.rs`), the Message Batches API
//!   (`batches.rs`), RFC 3339 times (`time.rs`).
//! - `server.rs`: accept loop, hyper connections, routing, shared state.
//! - `online.rs`: the online request's steps; `reply.rs`: the common
//!   headers.
//! - `stats.rs`: [`MockStats`], [`LaneStats`] and the per-request-key table.
//! - `examples/serve.rs`: the server as a standalone process;
//!   `examples/loadgen.rs`: a reqwest load generator for throughput checks.
//! - `tests/`: everything above over real HTTP.
//!
//! Request keys (for [`MockServer::ok_count_for`]): the `x-batchling-custom-id`
//! header, else the body's `"user"`, else the xxh3 of the raw body in hex
//! ([`body_key`]). Set `track_keys: false` for very long benchmark runs: the
//! table keeps one entry per distinct key.
//!
//! The hot path takes no lock across an await and logs nothing per request.

#![deny(missing_docs)]

// Dev-dependencies of the integration tests (`tests/`) only.
#[cfg(test)]
use {reqwest as _, rustls as _};

mod answer;
mod anthropic;
mod batches;
mod config;
mod faults;
mod limits;
mod online;
mod reply;
mod server;
mod shape;
mod stats;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use anthropic::{
    ANTHROPIC_VERSION, MARKER_SPEND_LIMIT, MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, MessageBatchStats,
};
pub use batches::{BatchBehavior, BatchEnd, BatchStats, MARKER_BATCH_INVALID};
pub use batchling_core::duration::parse_duration as parse_go_duration;
pub use config::{
    DEFAULT_GROUP, DEFAULT_LIMIT, Faults, LimitGroup, LimitTable, LimitWindow, MockConfig,
    ModelLimit, TokenCount,
};
pub use limits::{LimitsFile, LimitsFileError, MAX_LIMITS_FILE_BYTES};
pub use online::{
    CUSTOM_ID_HEADER, MARKER_FAIL_400, MARKER_FAIL_500_ALWAYS, MARKER_NO_JSON, NO_JSON_BODY,
    body_key,
};
pub use shape::{Shape, ShapeStats};
pub use stats::{LaneStats, MockStats, SecondCount};

use server::{Shared, StatusOverride};

/// A fixed answer for [`MockServer::set_status_override`]: status, JSON
/// body, extra headers `(name, value)`.
pub type StatusAnswer = (u16, String, Vec<(String, String)>);

/// How long [`MockServer::shutdown`] lets in-flight requests finish before
/// cutting their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running mock server. Dropping it stops the server abruptly; prefer
/// [`MockServer::shutdown`].
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
    accept: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Bind `addr` (port 0 picks a free port) and serve on the current tokio
    /// runtime.
    ///
    /// The first call in a process also loads the tokenizers (a few hundred
    /// ms, on a blocking thread) so that no request pays for it.
    pub async fn start(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let _ = tokio::task::spawn_blocking(warm_tokenizers).await;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let graceful = CancellationToken::new();
        let hard = CancellationToken::new();
        let tracker = TaskTracker::new();
        let accept = tokio::spawn(server::accept_loop(
            listener,
            shared.clone(),
            graceful.clone(),
            hard.clone(),
            tracker.clone(),
        ));
        Ok(MockServer {
            addr,
            shared,
            graceful,
            hard,
            tracker,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/v1`; an unspecified bind address (0.0.0.0, ::) is
    /// written as loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// The configuration the server started with (runtime setters not applied).
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// What the Azure and Groq shapes saw (URL forms, refused keys,
    /// content-filtered requests).
    pub fn shape_stats(&self) -> ShapeStats {
        self.shared.shape_counters.snapshot()
    }

    /// Every lane that has a limit: its group, its model limit, and what it
    /// admitted, second by second (see the crate docs, *Limits*).
    pub fn lane_stats(&self) -> Vec<LaneStats> {
        self.shared.limits.stats()
    }

    /// How many well-formed 200 answers were given for a request key: the
    /// `x-batchling-custom-id` header, else the body's `"user"`, else the
    /// xxh3 of the raw body as 16 hex digits (see [`body_key`]). Always 0
    /// when `track_keys` is off.
    pub fn ok_count_for(&self, key: &str) -> u64 {
        self.shared.keys.get(key).ok
    }

    /// How many requests arrived with a request key, whatever the answer.
    pub fn attempts_for(&self, key: &str) -> u64 {
        self.shared.keys.get(key).attempts
    }

    /// Every key with at least one 200, and its count.
    pub fn ok_counts(&self) -> HashMap<String, u64> {
        self.shared.keys.ok_counts()
    }

    /// Replace the fault probabilities from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Replace the latency and jitter from now on.
    pub fn set_latency(&self, latency: Duration, jitter: Duration) {
        self.shared
            .latency_nanos
            .store(latency.as_nanos() as u64, Relaxed);
        self.shared
            .jitter_nanos
            .store(jitter.as_nanos() as u64, Relaxed);
    }

    /// Make EVERY request (valid or not, before limits and latency) answer
    /// `status` with the JSON `body` and the extra `headers` (which replace
    /// the mock's own headers of the same name), until called with `None`.
    /// Overridden requests consume no rate budget. `POST /v1/messages` is
    /// overridden too; the Files + Batches API and the Message Batches API
    /// are not: steer them with the batch setters below.
    ///
    /// # Panics
    /// On a status outside 100..=999 or an invalid header name or value.
    pub fn set_status_override(&self, answer: Option<StatusAnswer>) {
        let new = answer.map(|(status, body, headers)| {
            let status = StatusCode::from_u16(status)
                .unwrap_or_else(|_| panic!("invalid status override {status}"));
            let headers = headers
                .into_iter()
                .map(|(name, value)| {
                    let n = HeaderName::try_from(name.as_str())
                        .unwrap_or_else(|_| panic!("invalid header name {name:?}"));
                    let v = HeaderValue::try_from(value.as_str())
                        .unwrap_or_else(|_| panic!("invalid header value {value:?}"));
                    (n, v)
                })
                .collect();
            Arc::new(StatusOverride {
                status,
                body: Bytes::from(body),
                headers,
            })
        });
        let on = new.is_some();
        *self
            .shared
            .status_override
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new;
        self.shared.override_on.store(on, Relaxed);
    }

    /// How batches of the Files + Batches API behave from now on (read at
    /// each poll, so it also changes batches already running).
    pub fn set_batch_behavior(&self, behavior: BatchBehavior) {
        self.shared.batches.set_behavior(behavior);
    }

    /// Answer the next `uploads` file uploads and the next `creates` batch
    /// creates with `status` (e.g. 500, or 429 with `retry-after-ms: 10`),
    /// storing nothing.
    pub fn fail_next_batch_calls(&self, uploads: u32, creates: u32, status: u16) {
        self.shared.batches.fail_next(uploads, creates, status);
    }

    /// While on, a batch create stores the batch and then never answers: a
    /// test kills the client in that window (created, not yet journaled).
    pub fn set_hang_batch_creates(&self, on: bool) {
        self.shared.batches.set_hang_creates(on);
    }

    /// The next `n` batch creates store the batch, then answer 502: the
    /// client sees a failure for a batch that exists.
    pub fn lose_next_batch_creates(&self, n: u32) {
        self.shared.batches.lose_next_creates(n);
    }

    /// Require `Authorization: Bearer KEY` on the Files + Batches API; a
    /// wrong key gets a 401 that echoes it (as a careless server would).
    pub fn require_batch_api_key(&self, key: Option<&str>) {
        self.shared.batches.set_required_key(key.map(str::to_owned));
    }

    /// Counters of the Files + Batches API.
    pub fn batch_stats(&self) -> BatchStats {
        self.shared.batches.stats()
    }

    /// Every batch object, newest first.
    pub fn batch_objects(&self) -> Vec<serde_json::Value> {
        self.shared.batches.batches()
    }

    /// `http://HOST:PORT`, the base URL Anthropic's SDKs take (they add
    /// `/v1/messages` themselves).
    pub fn anthropic_base_url(&self) -> String {
        self.base_url().trim_end_matches("/v1").to_owned()
    }

    /// Require this key (`x-api-key`, or `Authorization: Bearer`) on the
    /// Anthropic API; any other gets a 401 `authentication_error` that does
    /// not repeat it. `None` (the default): any non-empty key.
    pub fn require_anthropic_key(&self, key: Option<&str>) {
        self.shared.anthropic_key.set(key.map(str::to_owned));
    }

    /// How Message Batches behave from now on (read at each retrieve, so it
    /// also changes batches in progress); the same [`BatchBehavior`] as the
    /// OpenAI batches, kept apart.
    pub fn set_message_batch_behavior(&self, behavior: BatchBehavior) {
        self.shared.message_batches.set_behavior(behavior);
    }

    /// Answer the next `n` Message Batch creates with `status` (Anthropic's
    /// error type for it), storing nothing.
    pub fn fail_next_message_batch_creates(&self, n: u32, status: u16) {
        self.shared.message_batches.fail_next_creates(n, status);
    }

    /// The next `n` Message Batch creates store the batch, then answer 500:
    /// the client sees a failure for a batch that exists.
    pub fn lose_next_message_batch_creates(&self, n: u32) {
        self.shared.message_batches.lose_next_creates(n);
    }

    /// While on, a Message Batch create stores the batch and then never
    /// answers: a test kills the client in that window.
    pub fn set_hang_message_batch_creates(&self, on: bool) {
        self.shared.message_batches.set_hang_creates(on);
    }

    /// Counters of the Message Batches API.
    pub fn message_batch_stats(&self) -> MessageBatchStats {
        self.shared.message_batches.stats()
    }

    /// Every Message Batch object as it stands now, newest first.
    pub fn message_batch_objects(&self) -> Vec<serde_json::Value> {
        let base = self.anthropic_base_url();
        self.shared.message_batches.objects(&base)
    }

    /// Stop accepting, let in-flight requests finish (up to
    /// [`SHUTDOWN_GRACE`]), then close every connection.
    pub async fn shutdown(mut self) {
        self.graceful.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            self.hard.cancel();
            self.tracker.wait().await;
        }
    }
}

/// Load the tokenizers behind `estimate` (o200k_base and cl100k_base) once.
fn warm_tokenizers() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        for model in ["gpt-4o", "gpt-4"] {
            let body = serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": "warm up"}],
            });
            let _ = batchling_core::tokens::estimate(
                batchling_core::endpoint::Endpoint::ChatCompletions,
                &body,
                1,
            );
        }
    });
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.graceful.cancel();
        self.hard.cancel();
    }
}
