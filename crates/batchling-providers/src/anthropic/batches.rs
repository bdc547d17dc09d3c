//! The client of Anthropic's Message Batches API (docs/providers.md,
//! "Anthropic: Message Batches API"), and [`BatchApi`] on top of it, which
//! is all `batchling submit` sees.
//!
//! - **create** (`POST /v1/messages/batches`): a part's requests go inline,
//!   `{"requests": [{"custom_id", "params"}]}`; nothing is uploaded. A
//!   native `/v1/messages` line's `params` is its body verbatim; an OpenAI
//!   chat line's is its body translated ([`request_to_messages`], strict
//!   unless the client is lenient).
//! - **retrieve** / **cancel**: `processing_status` `in_progress`,
//!   `canceling` or `ended` (an ended batch whose cancel was asked is
//!   `cancelled`, any other `completed`).
//! - **results** (the batch's `results_url`, JSONL): read as a stream, one
//!   line at a time, each line within the response cap; `succeeded`,
//!   `errored`, `canceled` and `expired` become [`RequestOutcome`]s in
//!   OpenAI's batch output shape (a chat line's message translated back
//!   to a `chat.completion`, an error to OpenAI's envelope).
//! - **warnings** (lenient only): the results of a batch do not say what
//!   its requests lost, so once they are in, the part's requests are
//!   translated again (the same lines, checked against the plan's hash, the
//!   same options: [`BatchApi::settings`] keeps them across resumes) and
//!   each answer gets its line's warnings in `x_batchling.warnings`, as an
//!   online answer does ([`BatchApi::add_warnings`]).
//! - **find**: message batches carry no metadata, so a part's batch is
//!   recognised by what can be seen of it: created after the part's first
//!   create attempt (less a minute for clock skew), with the part's number
//!   of requests, and not already another part's. Of several such
//!   batches, the one created after the attempt was sent is taken; if that
//!   does not settle it, the lookup is an error
//!   ([`BatchApiError::Ambiguous`]) rather than a guess.
//!
//! The key never appears in an error (messages are passed through
//! [`crate::secret::redact`]).

use std::collections::HashMap;
use std::time::Duration;

use batchling_core::batch::{EXPIRED_CODE, EXPIRED_MESSAGE};
use batchling_core::output::{self, LineFailure};
use batchling_core::usage::{BodyRead, read_body};
use batchling_core::{Endpoint, RequestLine, Usage};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::client::AnthropicConfig;
use super::headers;
use super::translate::{
    Mode, RequestOptions, Warning, error_to_openai, message_to_chat_completion,
};
use crate::ProviderError;
use crate::batch::{
    BatchApi, BatchApiError, BatchCounts, BatchInfo, BatchInput, BatchLimits, BatchResults,
    BatchStatus, Lookup, NewBatch, OutcomeError, Refusal, RequestOutcome, ResultRefs, SizeCap,
};
use crate::http::Cut;
use crate::http::plain::{oversize_message, size_text};
use crate::secret::ApiKey;

pub use super::translate::request_to_messages;

/// Most requests in one message batch.
pub const MAX_BATCH_REQUESTS: usize = 100_000;

/// Largest create body Anthropic takes: 256 MB.
pub const MAX_CREATE_BYTES: u64 = 256 * 1000 * 1000;

/// What `submit` plans a part's requests to at most, as batchling request
/// lines: below [`MAX_CREATE_BYTES`], because a translated body can be
/// longer than the OpenAI body it comes from (the create is checked against
/// the real limit before it is sent).
pub const MAX_PART_BYTES: u64 = 240 * 1000 * 1000;

/// The cap on a batch's results stream (100,000 answers), as on an
/// OpenAI result file; each line is also within the response cap.
pub const MAX_RESULTS_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// Slack for the difference between our clock and Anthropic's when
/// [`BatchApi::find`] looks at creation times.
pub const CLOCK_SLACK_SECS: u64 = 60;

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// A message batch, as far as batchling reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageBatch {
    /// `msgbatch_...`.
    pub id: String,
    /// `in_progress`, `canceling` or `ended`.
    pub processing_status: String,
    /// Requests by outcome.
    #[serde(default)]
    pub request_counts: RequestCounts,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339, once a cancel was asked.
    #[serde(default)]
    pub cancel_initiated_at: Option<String>,
    /// Where the results are, once ended.
    #[serde(default)]
    pub results_url: Option<String>,
}

/// A message batch's `request_counts`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct RequestCounts {
    /// Not ended yet.
    #[serde(default)]
    pub processing: u64,
    /// Answered.
    #[serde(default)]
    pub succeeded: u64,
    /// Failed.
    #[serde(default)]
    pub errored: u64,
    /// Cancelled before they ran.
    #[serde(default)]
    pub canceled: u64,
    /// Not run within the 24 hours.
    #[serde(default)]
    pub expired: u64,
}

impl MessageBatch {
    /// Requests in the batch.
    pub fn total(&self) -> u64 {
        let c = self.request_counts;
        c.processing + c.succeeded + c.errored + c.canceled + c.expired
    }

    /// Where it stands, in the Batch API's words.
    pub fn status(&self) -> BatchStatus {
        match self.processing_status.as_str() {
            "in_progress" => BatchStatus::InProgress,
            "canceling" => BatchStatus::Cancelling,
            "ended" if self.cancel_initiated_at.is_some() => BatchStatus::Cancelled,
            "ended" => BatchStatus::Completed,
            other => BatchStatus::Other(other.to_owned()),
        }
    }

    /// Unix seconds of `created_at`, when it reads.
    pub fn created_unix(&self) -> Option<u64> {
        let nanos = headers::parse_rfc3339(self.created_at.as_deref()?)?;
        u64::try_from(nanos / 1_000_000_000).ok()
    }

    /// The batch in the Batch API's neutral words.
    pub fn info(&self) -> BatchInfo {
        let c = self.request_counts;
        BatchInfo {
            id: self.id.clone(),
            status: self.status(),
            counts: BatchCounts {
                total: self.total(),
                completed: c.succeeded,
                failed: c.errored + c.canceled + c.expired,
            },
            results: ResultRefs {
                output: self.results_url.clone(),
                errors: None,
            },
            problems: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    data: Vec<MessageBatch>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// A client of one server's Message Batches API.
#[derive(Debug, Clone)]
pub struct MessageBatchClient {
    http: reqwest::Client,
    /// The API root, with `/v1`.
    api: String,
    key: Option<ApiKey>,
    /// The cap on an API object's body, and on one results line.
    max_body: u64,
    translation: RequestOptions,
    limits: BatchLimits,
}

impl MessageBatchClient {
    /// Build the client from the online client's settings (base URL, key,
    /// `anthropic-version`, extra headers, timeout per call, response cap,
    /// the translation's mode and default `max_tokens`).
    pub fn new(config: &AnthropicConfig) -> Result<Self, ProviderError> {
        crate::http::install_crypto();
        let (base, _) = crate::http::base_url(&config.base_url, super::client::DEFAULT_BASE_URL)?;
        let api = if base.ends_with("/v1") {
            base
        } else {
            format!("{base}/v1")
        };
        let mut h = HeaderMap::new();
        if let Some(key) = &config.api_key {
            h.insert(
                X_API_KEY.clone(),
                crate::http::key_header(&X_API_KEY, key.expose())?,
            );
        }
        let version =
            HeaderValue::from_str(config.version.trim()).map_err(|e| ProviderError::BadHeader {
                name: ANTHROPIC_VERSION.to_string(),
                reason: e.to_string(),
            })?;
        h.insert(ANTHROPIC_VERSION.clone(), version);
        crate::http::add_user_headers(&mut h, &config.headers)?;
        let http = reqwest::Client::builder()
            .default_headers(h)
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .http1_only()
            .user_agent(concat!("batchling/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Client(e.to_string()))?;
        Ok(MessageBatchClient {
            http,
            api,
            key: config.api_key.clone(),
            max_body: config.max_response_bytes,
            translation: config.translation,
            limits: BatchLimits {
                max_requests: MAX_BATCH_REQUESTS,
                max_bytes: MAX_PART_BYTES,
            },
        })
    }

    /// The same client with other per-batch limits (tests: a small cap).
    pub fn with_limits(mut self, limits: BatchLimits) -> Self {
        self.limits = limits;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn redact(&self, text: &str) -> String {
        crate::secret::redact(self.key.as_ref(), text)
    }

    fn transport(&self, what: &str, message: &str) -> BatchApiError {
        BatchApiError::Transport {
            what: what.to_owned(),
            message: self.redact(message),
        }
    }

    /// Send; a 2xx answer's response, else the error the body tells.
    async fn send_raw(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BatchApiError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.transport(what, &crate::http::error_chain(&e)))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let h = resp.headers().clone();
        // An error body is short; what is past the cap is not read.
        let body = crate::http::read_capped(&mut resp, 64 * 1024)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                let e = &v["error"];
                let m = e["message"].as_str()?;
                Some(match e["type"].as_str() {
                    Some(t) => format!("{t}: {m}"),
                    None => m.to_owned(),
                })
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        Err(BatchApiError::Status {
            what: what.to_owned(),
            status,
            message: self.redact(&message),
            retry_after: headers::retry_after(&h),
            should_retry: headers::should_retry(&h),
        })
    }

    /// Send, and parse a 2xx answer (within the response cap).
    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, BatchApiError> {
        let mut resp = self.send_raw(what, req).await?;
        let body = match crate::http::read_capped(&mut resp, self.max_body).await {
            Ok(b) => b,
            Err(Cut::Http(e)) => return Err(self.transport(what, &crate::http::error_chain(&e))),
            Err(Cut::Over(o)) => {
                let cap = format!("the {} response cap", size_text(self.max_body));
                return Err(BatchApiError::TooLarge {
                    what: what.to_owned(),
                    message: oversize_message(o, &cap),
                    cap: SizeCap::Answer,
                });
            }
            Err(Cut::NoMemory(n)) => {
                return Err(self.transport(
                    what,
                    &format!("cannot set aside memory for {n} more bytes of the answer"),
                ));
            }
        };
        serde_json::from_slice(&body).map_err(|e| BatchApiError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    /// `POST /v1/messages/batches` with a create body already built.
    pub async fn create_batch(&self, body: Vec<u8>) -> Result<MessageBatch, BatchApiError> {
        let req = self
            .http
            .post(self.url("/messages/batches"))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.json("creating a message batch", req).await
    }

    /// `GET /v1/messages/batches/{id}`.
    pub async fn retrieve_batch(&self, id: &str) -> Result<MessageBatch, BatchApiError> {
        let req = self.http.get(self.url(&format!("/messages/batches/{id}")));
        self.json(&format!("checking message batch {id}"), req)
            .await
    }

    /// `POST /v1/messages/batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: &str) -> Result<MessageBatch, BatchApiError> {
        let req = self
            .http
            .post(self.url(&format!("/messages/batches/{id}/cancel")));
        self.json(&format!("cancelling message batch {id}"), req)
            .await
    }

    /// One page of `GET /v1/messages/batches` (newest first), after the
    /// batch `after_id`: the batches, and the id to page on from if more
    /// follow.
    pub async fn list_batches(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<MessageBatch>, Option<String>), BatchApiError> {
        // Batch ids are URL-safe ([A-Za-z0-9_]).
        let url = match after_id {
            Some(a) => self.url(&format!("/messages/batches?limit={limit}&after_id={a}")),
            None => self.url(&format!("/messages/batches?limit={limit}")),
        };
        let page: Page = self
            .json("listing message batches", self.http.get(url))
            .await?;
        let next = if page.has_more && !page.data.is_empty() {
            page.last_id
                .or_else(|| page.data.last().map(|b| b.id.clone()))
        } else {
            None
        };
        Ok((page.data, next))
    }

    /// The create body of a part: its batchling request lines as
    /// `{"requests": [{"custom_id", "params"}]}`.
    fn create_body(&self, requests: &[u8]) -> Result<Vec<u8>, BatchApiError> {
        let what = "building a message batch";
        let mut out = Vec::with_capacity(requests.len() + 64);
        out.extend_from_slice(b"{\"requests\":[");
        let mut first = true;
        for (i, raw) in requests.split(|&b| b == b'\n').enumerate() {
            if batchling_core::request::is_blank(raw) {
                continue;
            }
            let line = batchling_core::request::parse_line(i as u64 + 1, raw).map_err(|e| {
                BatchApiError::Decode {
                    what: what.to_owned(),
                    message: e.to_string(),
                }
            })?;
            let params = self.params(&line).map_err(|r| BatchApiError::Decode {
                what: what.to_owned(),
                message: r.message,
            })?;
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(b"{\"custom_id\":");
            output::push_json_str(&mut out, &line.custom_id);
            out.extend_from_slice(b",\"params\":");
            output::push_one_line(&mut out, &params);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        if out.len() as u64 > MAX_CREATE_BYTES {
            return Err(BatchApiError::TooLarge {
                what: what.to_owned(),
                message: format!(
                    "the create body is {} bytes, over Anthropic's {MAX_CREATE_BYTES}-byte limit: give a smaller --max-batch-bytes",
                    out.len()
                ),
                cap: SizeCap::Answer,
            });
        }
        Ok(out)
    }

    /// What lenient mode drops from each chat line of a part's requests,
    /// by `custom_id` (only the lines that lose something).
    fn warnings_of(&self, requests: &[u8]) -> HashMap<String, (Vec<Warning>, usize)> {
        let mut lost = HashMap::new();
        for (i, raw) in requests.split(|&b| b == b'\n').enumerate() {
            if batchling_core::request::is_blank(raw) {
                continue;
            }
            let Ok(line) = batchling_core::request::parse_line(i as u64 + 1, raw) else {
                continue;
            };
            if line.endpoint != Endpoint::ChatCompletions {
                continue;
            }
            // A line that does not translate was refused when planned.
            if let Ok(t) = request_to_messages(line.body.as_bytes(), &self.translation)
                && !t.warnings.is_empty()
            {
                lost.insert(line.custom_id, (t.warnings, t.more_warnings));
            }
        }
        lost
    }

    /// A line's `params`: a Messages body as given, or an OpenAI chat body
    /// translated.
    fn params(&self, line: &RequestLine) -> Result<Vec<u8>, Refusal> {
        if let Some(r) = refusal_of_form(line) {
            return Err(r);
        }
        match line.endpoint {
            Endpoint::ChatCompletions => {
                request_to_messages(line.body.as_bytes(), &self.translation)
                    .map(|t| t.body)
                    .map_err(|e| Refusal {
                        code: "invalid_request",
                        message: format!("line {}: {e}", line.line_no),
                    })
            }
            _ => Ok(line.body.as_bytes().to_vec()),
        }
    }

    /// Read a results stream: one [`RequestOutcome`] per line.
    async fn read_results(
        &self,
        what: &str,
        mut resp: reqwest::Response,
        batch_id: &str,
        translate: bool,
    ) -> Result<BatchResults, BatchApiError> {
        let mut lines = LineSplitter::new(self.max_body);
        let mut results = BatchResults::default();
        let (mut n, mut read) = (0u64, 0u64);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport(what, &crate::http::error_chain(&e)))?
        {
            read += chunk.len() as u64;
            if read > MAX_RESULTS_BYTES {
                return Err(BatchApiError::TooLarge {
                    what: what.to_owned(),
                    message: format!(
                        "the results are over the {} cap on a batch's results",
                        size_text(MAX_RESULTS_BYTES)
                    ),
                    cap: SizeCap::ResultFile,
                });
            }
            lines.feed(&chunk, &mut |line| match line {
                Some(raw) => {
                    n += 1;
                    match read_result_line(raw, &format!("batch_req_{batch_id}_{n}"), translate) {
                        Some(o) => results.outcomes.push(o),
                        None => results.unreadable += 1,
                    }
                }
                None => results.unreadable += 1,
            });
        }
        lines.finish(&mut |line| match line {
            Some(raw) => {
                n += 1;
                match read_result_line(raw, &format!("batch_req_{batch_id}_{n}"), translate) {
                    Some(o) => results.outcomes.push(o),
                    None => results.unreadable += 1,
                }
            }
            None => results.unreadable += 1,
        });
        Ok(results)
    }

    /// Whether `url` is on this client's server: the key is sent only there.
    fn is_ours(&self, url: &str) -> bool {
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_owned(),
                    u.host_str().map(str::to_owned),
                    u.port_or_known_default(),
                )
            })
        };
        origin(url).is_some() && origin(url) == origin(&self.api)
    }
}

/// Whether a line's form can go in a message batch at all: its endpoint,
/// and its id (Anthropic's pattern `^[a-zA-Z0-9_-]{1,64}$`).
fn refusal_of_form(line: &RequestLine) -> Option<Refusal> {
    if !matches!(
        line.endpoint,
        Endpoint::Messages | Endpoint::ChatCompletions
    ) {
        return Some(Refusal {
            code: "invalid_url",
            message: format!(
                "line {}: \"url\" {} has no equivalent in Anthropic's Message Batches API: only /v1/messages and /v1/chat/completions lines can be sent",
                line.line_no,
                line.endpoint.path()
            ),
        });
    }
    let id = &line.custom_id;
    let fits = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!fits).then(|| Refusal {
        code: "invalid_custom_id",
        message: format!(
            "line {}: \"custom_id\" {id:?} is not one Anthropic's Message Batches API accepts: 1 to 64 of A-Z, a-z, 0-9, _ and -",
            line.line_no
        ),
    })
}

/// Splits a byte stream into lines, none held past `cap` bytes: a longer
/// line is skipped to its end and reported as `None`.
struct LineSplitter {
    buf: Vec<u8>,
    cap: u64,
    /// Inside a line over the cap: drop bytes to the next newline.
    skipping: bool,
}

impl LineSplitter {
    fn new(cap: u64) -> Self {
        LineSplitter {
            buf: Vec::new(),
            cap,
            skipping: false,
        }
    }

    fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(Option<&[u8]>)) {
        while !chunk.is_empty() {
            let end = memchr_newline(chunk);
            let (piece, rest, ended) = match end {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            if !self.skipping {
                if (self.buf.len() + piece.len()) as u64 > self.cap {
                    self.buf = Vec::new();
                    self.skipping = true;
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
            if ended {
                self.line(each);
            }
            chunk = rest;
        }
    }

    fn line(&mut self, each: &mut impl FnMut(Option<&[u8]>)) {
        if self.skipping {
            each(None);
        } else {
            let raw = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
            if !batchling_core::request::is_blank(raw) {
                each(Some(raw));
            }
        }
        self.buf.clear();
        self.skipping = false;
    }

    fn finish(&mut self, each: &mut impl FnMut(Option<&[u8]>)) {
        if self.skipping || !self.buf.is_empty() {
            self.line(each);
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// The HTTP status Anthropic gives an error type.
fn status_of(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// One results line, `{"custom_id", "result": {"type", ...}}`, as an
/// outcome with an OpenAI batch output line (`line_id` its `id`). `None`
/// when the line is not JSON or names no `custom_id`.
pub fn read_result_line(raw: &[u8], line_id: &str, translate: bool) -> Option<RequestOutcome> {
    let v = serde_json::from_slice::<Value>(raw).ok()?;
    let custom_id = v["custom_id"].as_str()?.to_owned();
    let result = &v["result"];
    let mut line = Vec::new();
    let outcome = |status_code, answer, usage, line| RequestOutcome {
        custom_id: custom_id.clone(),
        status_code,
        answer,
        usage,
        line,
    };
    match result["type"].as_str() {
        Some("succeeded") => {
            let message = serde_json::to_vec(&result["message"]).ok()?;
            let usage = match read_body(&message) {
                BodyRead::Json(u) => u.unwrap_or_default(),
                BodyRead::NotJson => Usage::default(),
            };
            let id = result["message"]["id"].as_str().unwrap_or("").to_owned();
            let body = if translate {
                match message_to_chat_completion(&message, batchling_core::clock::unix_now()) {
                    Ok(b) => b,
                    Err(e) => {
                        let m = format!(
                            "Anthropic's answer cannot be translated to a chat.completion: {e}"
                        );
                        return Some(failed(&custom_id, line_id, "untranslatable_answer", &m));
                    }
                }
            } else {
                message
            };
            output::write_response_line(&mut line, line_id, &custom_id, 200, &id, &body);
            Some(outcome(Some(200), Ok(Bytes::from(body)), usage, line))
        }
        Some("errored") => {
            let envelope = &result["error"];
            let kind = envelope["error"]["type"].as_str().unwrap_or("api_error");
            let message = envelope["error"]["message"]
                .as_str()
                .unwrap_or("the request failed")
                .to_owned();
            let status = status_of(kind);
            let request_id = envelope["request_id"].as_str().unwrap_or("");
            let raw_envelope = serde_json::to_vec(envelope).ok()?;
            let body = if translate {
                error_to_openai(&raw_envelope).unwrap_or(raw_envelope)
            } else {
                raw_envelope
            };
            output::write_response_line(&mut line, line_id, &custom_id, status, request_id, &body);
            let error = OutcomeError {
                code: Some(kind.to_owned()),
                message: format!("{kind}: {message}"),
            };
            Some(outcome(Some(status), Err(error), Usage::default(), line))
        }
        Some("canceled") => Some(failed(
            &custom_id,
            line_id,
            "batch_cancelled",
            "The batch was cancelled before this request ran.",
        )),
        Some("expired") => Some(failed(&custom_id, line_id, EXPIRED_CODE, EXPIRED_MESSAGE)),
        _ => None,
    }
}

/// The members of an output line that [`with_warnings`] writes again.
#[derive(Deserialize)]
struct LineHead {
    id: String,
    response: ResponseHead,
}

#[derive(Deserialize)]
struct ResponseHead {
    #[serde(default)]
    request_id: String,
}

/// An answered outcome with its request's warnings in its body (and its
/// line written again around it); `false` if it has no body to take them.
fn with_warnings(o: &mut RequestOutcome, warnings: &[Warning], more: usize) -> bool {
    let Ok(answer) = &o.answer else {
        return false;
    };
    let Ok(head) = serde_json::from_slice::<LineHead>(&o.line) else {
        return false;
    };
    let mut body = answer.to_vec();
    if !super::client::add_warnings(&mut body, warnings, more) {
        return false;
    }
    let mut line = Vec::with_capacity(body.len() + 256);
    let status = o.status_code.unwrap_or(200);
    output::write_response_line(
        &mut line,
        &head.id,
        &o.custom_id,
        status,
        &head.response.request_id,
        &body,
    );
    o.answer = Ok(Bytes::from(body));
    o.line = line;
    true
}

/// The journal's record of a client's translation options (its
/// [`BatchApi::settings`]).
pub fn settings_text(options: &RequestOptions) -> String {
    let mode = match options.mode {
        Mode::Strict => "strict",
        Mode::Lenient => "lenient",
    };
    serde_json::json!({"translation": mode, "default_max_tokens": options.default_max_tokens})
        .to_string()
}

/// The translation's mode a journal's record ([`settings_text`]) names;
/// `None` when it names none.
pub fn recorded_mode(settings: &str) -> Option<Mode> {
    let v: Value = serde_json::from_str(settings).ok()?;
    match v["translation"].as_str()? {
        "strict" => Some(Mode::Strict),
        "lenient" => Some(Mode::Lenient),
        _ => None,
    }
}

/// An outcome with no answer to show: a failure line.
fn failed(custom_id: &str, line_id: &str, code: &str, message: &str) -> RequestOutcome {
    let mut line = Vec::new();
    output::write_failure_line(
        &mut line,
        line_id,
        custom_id,
        &LineFailure { code, message },
    );
    RequestOutcome {
        custom_id: custom_id.to_owned(),
        status_code: None,
        answer: Err(OutcomeError {
            code: Some(code.to_owned()),
            message: message.to_owned(),
        }),
        usage: Usage::default(),
        line,
    }
}

impl BatchApi for MessageBatchClient {
    async fn upload(&self, _name: &str, _requests: Bytes) -> Result<Option<String>, BatchApiError> {
        // Requests go inline in the create call.
        Ok(None)
    }

    async fn create(&self, batch: &NewBatch) -> Result<BatchInfo, BatchApiError> {
        let BatchInput::Inline(requests) = &batch.input else {
            return Err(BatchApiError::Decode {
                what: "creating a message batch".into(),
                message: "message batches take their requests inline, not as a file".into(),
            });
        };
        let body = self.create_body(requests)?;
        Ok(self.create_batch(body).await?.info())
    }

    async fn find(&self, lookup: &Lookup<'_>) -> Result<Option<BatchInfo>, BatchApiError> {
        let oldest = lookup.since_unix.saturating_sub(CLOCK_SLACK_SECS);
        let mut after: Option<String> = None;
        let mut found: Vec<MessageBatch> = Vec::new();
        loop {
            let (page, next) = self.list_batches(after.as_deref(), 100).await?;
            let mut older = false;
            for b in page {
                let created = b.created_unix();
                if created.is_some_and(|t| t < oldest) {
                    older = true;
                    continue;
                }
                if b.total() == lookup.requests && !lookup.known.contains(&b.id) {
                    found.push(b);
                }
            }
            match next {
                Some(n) if !older => after = Some(n),
                _ => break,
            }
        }
        // Within the slack, a batch created before the create was sent can
        // still look like ours; one created after it is preferred.
        if found.len() > 1 {
            let after: Vec<MessageBatch> = found
                .iter()
                .filter(|b| b.created_unix().is_some_and(|t| t >= lookup.since_unix))
                .cloned()
                .collect();
            if after.len() == 1 {
                found = after;
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(|b| b.info())),
            _ => Err(BatchApiError::Ambiguous {
                what: format!("looking for the message batch of part {}", lookup.tag),
                message: format!(
                    "{} message batches of {} requests were created since this part's create was sent: {}; batchling cannot tell which is this part's, so it creates none. Cancel the ones that are not this job's (or wait for them to end) and rerun",
                    found.len(),
                    lookup.requests,
                    found
                        .iter()
                        .map(|b| b.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    async fn retrieve(&self, id: &str) -> Result<BatchInfo, BatchApiError> {
        Ok(self.retrieve_batch(id).await?.info())
    }

    async fn cancel(&self, id: &str) -> Result<Option<BatchInfo>, BatchApiError> {
        match self.cancel_batch(id).await {
            Ok(b) if b.processing_status == "ended" => Ok(None),
            Ok(b) => Ok(Some(b.info())),
            Err(e) if matches!(e.status(), Some(400 | 409)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn results(
        &self,
        batch: &BatchInfo,
        endpoint: &str,
    ) -> Result<BatchResults, BatchApiError> {
        let what = format!("downloading the results of message batch {}", batch.id);
        let own = format!("{}/messages/batches/{}/results", self.api, batch.id);
        // The key goes to this client's server only.
        let url = match &batch.results.output {
            Some(u) if self.is_ours(u) => u.clone(),
            _ => own,
        };
        let req = self.http.get(url);
        let resp = self.send_raw(&what, req).await?;
        let translate = endpoint == Endpoint::ChatCompletions.path();
        self.read_results(&what, resp, &batch.id, translate).await
    }

    fn is_transient(&self, error: &BatchApiError) -> bool {
        crate::openai::classify::is_transient(error)
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn refuse(&self, line: &RequestLine) -> Option<Refusal> {
        self.params(line).err()
    }

    fn settings(&self) -> Option<String> {
        Some(settings_text(&self.translation))
    }

    fn warns_on(&self, endpoint: &str) -> bool {
        self.translation.mode == Mode::Lenient && endpoint == Endpoint::ChatCompletions.path()
    }

    fn add_warnings(&self, requests: &[u8], results: &mut BatchResults) -> u64 {
        let mut lost = self.warnings_of(requests);
        let mut n = 0;
        for o in &mut results.outcomes {
            // The first result of an id takes them, as the engine keeps
            // the first; an error answer shows none (as online).
            if let Some((warnings, more)) = lost.remove(o.custom_id.as_str())
                && with_warnings(o, &warnings, more)
            {
                n += (warnings.len() + more) as u64;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], cap: u64, piece: usize) -> (Vec<String>, usize) {
        let mut s = LineSplitter::new(cap);
        let (mut got, mut over) = (Vec::new(), 0);
        let mut each = |l: Option<&[u8]>| match l {
            Some(l) => got.push(String::from_utf8_lossy(l).into_owned()),
            None => over += 1,
        };
        for c in data.chunks(piece) {
            s.feed(c, &mut each);
        }
        s.finish(&mut each);
        (got, over)
    }

    #[test]
    fn lines_split_across_chunks_and_long_ones_are_skipped() {
        let data = b"ab\r\n\nabcdefgh\ncd\nefg";
        for piece in [1, 2, 3, 100] {
            let (got, over) = lines(data, 4, piece);
            assert_eq!(got, ["ab", "cd", "efg"], "piece {piece}");
            assert_eq!(over, 1);
        }
    }

    #[test]
    fn results_map_to_openai_lines() {
        let ok = br#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":2}}}}"#;
        let o = read_result_line(ok, "batch_req_x_1", false).unwrap();
        assert!(o.succeeded());
        assert_eq!((o.usage.input, o.usage.output), (5, 2));
        let v: Value = serde_json::from_slice(&o.line).unwrap();
        assert_eq!(v["response"]["body"]["id"], "msg_1");
        assert_eq!(v["response"]["status_code"], 200);
        let t = read_result_line(ok, "batch_req_x_1", true).unwrap();
        let v: Value = serde_json::from_slice(&t.line).unwrap();
        assert_eq!(v["response"]["body"]["object"], "chat.completion");
        assert_eq!(
            v["response"]["body"]["choices"][0]["message"]["content"],
            "hi"
        );
        assert_eq!((t.usage.input, t.usage.output), (5, 2));

        let err = br#"{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"bad"},"request_id":"req_9"}}}"#;
        let e = read_result_line(err, "batch_req_x_2", true).unwrap();
        assert_eq!(e.status_code, Some(400));
        let oe = e.answer.clone().unwrap_err();
        assert_eq!(oe.code.as_deref(), Some("invalid_request_error"));
        let v: Value = serde_json::from_slice(&e.line).unwrap();
        assert_eq!(v["response"]["request_id"], "req_9");
        assert!(
            v["response"]["body"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bad")
        );

        for (kind, code) in [("canceled", "batch_cancelled"), ("expired", EXPIRED_CODE)] {
            let raw = format!(r#"{{"custom_id":"c","result":{{"type":"{kind}"}}}}"#);
            let o = read_result_line(raw.as_bytes(), "batch_req_x_3", false).unwrap();
            assert_eq!(o.answer.unwrap_err().code.as_deref(), Some(code));
            let v: Value = serde_json::from_slice(&o.line).unwrap();
            assert_eq!(v["error"]["code"], code);
            assert!(v["response"].is_null());
        }
        assert!(read_result_line(b"{\"result\":{}}", "x", false).is_none());
        assert!(
            read_result_line(
                b"{\"custom_id\":\"a\",\"result\":{\"type\":\"what\"}}",
                "x",
                false
            )
            .is_none()
        );
    }

    #[test]
    fn statuses_and_counts_read_in_neutral_words() {
        let b: MessageBatch = serde_json::from_value(serde_json::json!({
            "id": "msgbatch_1", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 1, "expired": 1},
            "created_at": "2025-01-01T00:00:10.5Z", "cancel_initiated_at": "2025-01-01T00:01:00Z",
            "results_url": "http://x/r",
        }))
        .unwrap();
        let info = b.info();
        assert_eq!(info.status, BatchStatus::Cancelled);
        assert_eq!(
            (info.counts.total, info.counts.completed, info.counts.failed),
            (5, 2, 3)
        );
        assert_eq!(b.created_unix(), Some(1_735_689_610));
        assert_eq!(info.results.output.as_deref(), Some("http://x/r"));
    }

    #[test]
    fn create_bodies_carry_native_params_byte_for_byte_and_translate_chat() {
        let c = MessageBatchClient::new(&AnthropicConfig {
            base_url: "http://127.0.0.1:1".into(),
            ..AnthropicConfig::default()
        })
        .unwrap();
        let native = r#"{ "model":"claude-x",  "max_tokens":5,"messages":[{"role":"user","content":"caf\u00e9"}] }"#;
        let chat = r#"{"model":"claude-x","messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}]}"#;
        let lines = format!(
            "{{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/messages\",\"body\":{native}}}\n\
             {{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{chat}}}\n"
        );
        let body = c.create_body(lines.as_bytes()).unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(
            text.contains(&format!(r#"{{"custom_id":"a","params":{native}}}"#)),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        let b = &v["requests"][1];
        assert_eq!(b["custom_id"], "b");
        assert_eq!(
            b["params"]["system"][0]["text"], "s",
            "the system message is hoisted"
        );
        assert_eq!(b["params"]["max_tokens"], 4096, "the default max_tokens");
    }

    #[test]
    fn lenient_lines_are_taken_and_their_answers_list_what_they_lost() {
        let client = |mode| {
            MessageBatchClient::new(&AnthropicConfig {
                base_url: "http://127.0.0.1:1".into(),
                translation: RequestOptions {
                    mode,
                    ..RequestOptions::default()
                },
                ..AnthropicConfig::default()
            })
            .unwrap()
        };
        let c = client(Mode::Lenient);
        let chat = |id: &str, extra: &str| {
            format!(
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"claude-x","messages":[{{"role":"user","content":"x"}}]{extra}}}}}"#
            )
        };
        let requests = format!(
            "{}\n{}\n",
            chat("a", r#","n":2,"logprobs":true"#),
            chat("b", "")
        );
        let line =
            batchling_core::request::parse_line(1, requests.lines().next().unwrap().as_bytes())
                .unwrap();
        assert_eq!(c.refuse(&line), None, "lenient: taken");
        assert!(client(Mode::Strict).refuse(&line).is_some());
        let body: Value =
            serde_json::from_slice(&c.create_body(requests.as_bytes()).unwrap()).unwrap();
        let params = &body["requests"][0]["params"];
        assert!(
            params.get("n").is_none() && params.get("logprobs").is_none(),
            "{params}"
        );
        assert!(c.warns_on("/v1/chat/completions") && !c.warns_on("/v1/messages"));
        assert!(!client(Mode::Strict).warns_on("/v1/chat/completions"));

        let ok = |id: &str| {
            format!(
                r#"{{"custom_id":"{id}","result":{{"type":"succeeded","message":{{"id":"msg_{id}","type":"message","role":"assistant","model":"claude-x","content":[{{"type":"text","text":"hi"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":5,"output_tokens":2}}}}}}}}"#
            )
        };
        let read = |raw: String, n: u32| {
            read_result_line(raw.as_bytes(), &format!("batch_req_x_{n}"), true).unwrap()
        };
        let mut results = BatchResults {
            outcomes: vec![read(ok("a"), 1), read(ok("b"), 2), read(ok("a"), 3)],
            unreadable: 0,
        };
        assert_eq!(c.add_warnings(requests.as_bytes(), &mut results), 2);
        let lines: Vec<Value> = results
            .outcomes
            .iter()
            .map(|o| serde_json::from_slice(&o.line).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], "batch_req_x_1");
        assert_eq!(lines[0]["response"]["request_id"], "msg_a");
        let body = &lines[0]["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        let said = body["x_batchling"]["warnings"].to_string();
        assert!(
            said.contains("`n`") && said.contains("`logprobs`"),
            "{said}"
        );
        let answer: Value =
            serde_json::from_slice(results.outcomes[0].answer.as_ref().unwrap()).unwrap();
        assert_eq!(&answer, body);
        assert!(lines[1]["response"]["body"].get("x_batchling").is_none());
        assert!(
            lines[2]["response"]["body"].get("x_batchling").is_none(),
            "once per id"
        );

        let strict = client(Mode::Strict).settings().unwrap();
        assert_ne!(c.settings().unwrap(), strict);
        assert_eq!(recorded_mode(&strict), Some(Mode::Strict));
        assert_eq!(recorded_mode(&c.settings().unwrap()), Some(Mode::Lenient));
        assert_eq!(recorded_mode("{}"), None);
    }

    #[test]
    fn lines_anthropic_cannot_take_are_refused_naming_the_field() {
        let c = MessageBatchClient::new(&AnthropicConfig {
            base_url: "http://127.0.0.1:1".into(),
            ..AnthropicConfig::default()
        })
        .unwrap();
        let line = |id: &str, url: &str, body: &str| {
            let raw =
                format!(r#"{{"custom_id":"{id}","method":"POST","url":"{url}","body":{body}}}"#);
            batchling_core::request::parse_line(3, raw.as_bytes()).unwrap()
        };
        let chat = r#"{"model":"claude-x","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(c.refuse(&line("a", "/v1/chat/completions", chat)), None);
        let n2 = r#"{"model":"claude-x","messages":[{"role":"user","content":"x"}],"n":2}"#;
        let r = c.refuse(&line("a", "/v1/chat/completions", n2)).unwrap();
        assert!(
            r.message.starts_with("line 3: ") && r.message.contains("`n`"),
            "{}",
            r.message
        );
        let r = c.refuse(&line("a b", "/v1/messages", chat)).unwrap();
        assert_eq!(r.code, "invalid_custom_id");
        let r = c
            .refuse(&line("a", "/v1/embeddings", r#"{"model":"e","input":"x"}"#))
            .unwrap();
        assert_eq!(r.code, "invalid_url");
    }
}
