//! A fake Anthropic API (docs/providers.md, "Anthropic: Messages and
//! Message Batches"), served by the same server as the OpenAI one and told
//! apart by path: `POST /v1/messages` (`online.rs`, the message itself
//! `message.rs`) and `/v1/messages/batches...` (`batches.rs`).
//!
//! What is common to both: the key check (`x-api-key`, or `Authorization:
//! Bearer`), the `anthropic-version` check, Anthropic's error envelope
//! `{"type":"error","error":{"type","message"},"request_id"}` and its
//! headers (`request-id`, `anthropic-ratelimit-*` with RFC 3339 resets,
//! `retry-after` in whole seconds).

mod batches;
mod message;
mod online;
mod time;

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use hyper::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::limits::{LaneId, LimitSnapshot};
use crate::server::Shared;

pub(crate) use batches::MessageBatches;
pub use batches::{MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, MessageBatchStats};
pub(crate) use message::PromptCache;

/// The `anthropic-version` the mock knows; any other value is accepted too
/// (the mock answers every version alike), a missing one is a 400.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Marker: a Messages body containing this text gets Anthropic's spend-cap
/// 429 (`rate_limit_error` with `enforced_spend_limit_reached` and no
/// `retry-after`), which a client must not retry.
pub const MARKER_SPEND_LIMIT: &str = "__spend_limit__";

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// Whether a path belongs to the Anthropic API.
pub(crate) fn is_anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// Route a request of the Anthropic API.
pub(crate) async fn handle(
    shared: &Shared,
    parts: Parts,
    incoming: hyper::body::Incoming,
) -> Result<Response<Body>, crate::server::DropConnection> {
    if parts.uri.path() == "/v1/messages" {
        return online::handle(shared, parts, incoming).await;
    }
    Ok(batches::handle(shared, parts, incoming).await)
}

/// An Anthropic error: its status, `error.type` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnthropicError {
    pub(crate) status: u16,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl AnthropicError {
    /// The error type Anthropic gives a status.
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        AnthropicError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// The `error` object (without the envelope), as a batch result holds it.
    pub(crate) fn object(&self) -> serde_json::Value {
        json!({"type": self.kind, "message": self.message})
    }
}

/// Anthropic's error envelope.
pub(crate) fn envelope(error: serde_json::Value, request_id: &HeaderValue) -> Vec<u8> {
    let id = request_id.to_str().unwrap_or("req_mock");
    serde_json::to_vec(&json!({"type": "error", "error": error, "request_id": id}))
        .unwrap_or_default()
}

/// A JSON answer with `request-id`, and (for `lane`) the rate-limit headers.
pub(crate) fn respond(
    shared: &Shared,
    status: u16,
    body: Vec<u8>,
    lane: Option<LaneId>,
    retry_after: Option<Duration>,
    request_id: HeaderValue,
) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(REQUEST_ID, request_id);
    if shared.config.send_limit_headers
        && let Some(snap) = lane.and_then(|lane| shared.limits.snapshot(lane))
    {
        limit_headers(h, &snap);
    }
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up: retrying earlier fails.
        let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64;
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// An error answer in Anthropic's envelope.
pub(crate) fn error_response(
    shared: &Shared,
    e: &AnthropicError,
    lane: Option<LaneId>,
) -> Response<Body> {
    let id = shared.request_id();
    respond(shared, e.status, envelope(e.object(), &id), lane, None, id)
}

/// The `anthropic-ratelimit-*` headers of a lane's limits. `tokens-*` is
/// the lane's TPM when it has one, else input and output combined.
fn limit_headers(h: &mut HeaderMap, snap: &LimitSnapshot) {
    let reset = HeaderValue::try_from(time::rfc3339_after(snap.reset))
        .unwrap_or_else(|_| HeaderValue::from_static("1970-01-01T00:00:00Z"));
    let combined = match (snap.input_tokens, snap.output_tokens) {
        (Some((il, ir)), Some((ol, or))) => Some((il + ol, ir + or)),
        _ => None,
    };
    let groups = [
        ("requests", snap.requests),
        ("tokens", snap.tokens.or(combined)),
        ("input-tokens", snap.input_tokens),
        ("output-tokens", snap.output_tokens),
    ];
    for (name, value) in groups {
        let Some((limit, remaining)) = value else {
            continue;
        };
        let header = |part: &str| {
            HeaderName::try_from(format!("anthropic-ratelimit-{name}-{part}"))
                .unwrap_or_else(|_| HeaderName::from_static("x-mock-bad-header"))
        };
        h.insert(header("limit"), HeaderValue::from(limit));
        h.insert(header("remaining"), HeaderValue::from(remaining));
        h.insert(header("reset"), reset.clone());
    }
}

/// The API key of a request: `x-api-key`, else `Authorization: Bearer`.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = || {
        (headers.get(AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    };
    (headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .or_else(bearer)
        .filter(|k| !k.is_empty())
}

/// The key a test requires (see `MockServer::require_anthropic_key`).
#[derive(Debug, Default)]
pub(crate) struct RequiredKey(Mutex<Option<String>>);

impl RequiredKey {
    pub(crate) fn set(&self, key: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn matches(&self, given: &str) -> bool {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(want) => want == given,
            None => true,
        }
    }
}

/// The checks every Anthropic call passes first: a key (401
/// `authentication_error`, never echoing it) and `anthropic-version` (400).
pub(crate) fn check_headers(shared: &Shared, headers: &HeaderMap) -> Result<(), AnthropicError> {
    let Some(key) = api_key(headers) else {
        return Err(AnthropicError::new(401, "x-api-key header is required"));
    };
    if !shared.anthropic_key.matches(key) {
        return Err(AnthropicError::new(401, "invalid x-api-key"));
    }
    if headers.get("anthropic-version").is_none() {
        return Err(AnthropicError::invalid(
            "anthropic-version: header is required",
        ));
    }
    Ok(())
}

/// The body, read up to `max` bytes: over it, Anthropic's 413
/// `request_too_large`, before anything larger is allocated.
pub(crate) async fn read_body(
    parts: &Parts,
    incoming: hyper::body::Incoming,
    max: usize,
) -> Result<bytes::Bytes, AnthropicError> {
    let declared = (parts.headers.get(CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if declared.is_some_and(|len| len > max as u64) {
        None
    } else {
        axum::body::to_bytes(Body::new(incoming), max).await.ok()
    };
    body.ok_or_else(|| {
        AnthropicError::new(
            413,
            format!("Request exceeds the maximum allowed number of bytes ({max})."),
        )
    })
}
