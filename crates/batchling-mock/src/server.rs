//! The HTTP side: the accept loop, one hyper HTTP/1.1 connection per task,
//! and the request handler that ties limits, faults and answers together.
//!
//! hyper is driven directly (not through `axum::serve`) because the
//! `drop_connection` fault needs the service to fail: hyper then closes the
//! connection without writing a response, and the client sees an incomplete
//! message.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use batchling_core::endpoint::Endpoint;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::{self, ApiError};
use crate::config::{Faults, MockConfig};
use crate::faults::{Fault, draw, mix64};
use crate::format_go_duration;
use crate::limits::{Admission, LimitKind, Limiter};
use crate::stats::{Counters, KeyTable};

/// The header the batchling client sends to name a request.
pub const CUSTOM_ID_HEADER: &str = "x-batchling-custom-id";

/// Marker: a body containing this text always gets 400.
pub const MARKER_FAIL_400: &str = "__fail_400__";
/// Marker: a body containing this text always gets 500 (after admission).
pub const MARKER_FAIL_500_ALWAYS: &str = "__fail_500_always__";
/// Marker: a body containing this text always gets a 200 that is not JSON.
pub const MARKER_NO_JSON: &str = "__no_json__";

/// The body answered for [`MARKER_NO_JSON`].
pub const NO_JSON_BODY: &str = "<html><body>mock: this is not JSON</body></html>";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// An answer every request gets while set (see `MockServer::set_status_override`).
#[derive(Debug)]
pub(crate) struct StatusOverride {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) latency_nanos: AtomicU64,
    pub(crate) jitter_nanos: AtomicU64,
    pub(crate) faults: RwLock<Faults>,
    pub(crate) override_on: AtomicBool,
    pub(crate) status_override: RwLock<Option<Arc<StatusOverride>>>,
    pub(crate) limiter: Limiter,
    pub(crate) counters: Counters,
    pub(crate) keys: KeyTable,
    /// The Files + Batches API.
    pub(crate) batches: crate::batches::BatchApi,
    /// Arrival number of admitted requests (input of the fault draw).
    admitted_seq: AtomicU64,
    /// Counter behind `x-request-id`.
    request_seq: AtomicU64,
    request_nonce: u64,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        let start = tokio::time::Instant::now();
        let nonce =
            batchling_core::clock::unix_nanos() ^ u64::from(std::process::id()).rotate_left(32);
        Shared {
            latency_nanos: AtomicU64::new(config.latency.as_nanos() as u64),
            jitter_nanos: AtomicU64::new(config.latency_jitter.as_nanos() as u64),
            faults: RwLock::new(config.faults),
            override_on: AtomicBool::new(false),
            status_override: RwLock::new(None),
            limiter: Limiter::new(start, config.window, config.rpm, config.tpm),
            counters: Counters::default(),
            keys: KeyTable::default(),
            batches: crate::batches::BatchApi::default(),
            admitted_seq: AtomicU64::new(0),
            request_seq: AtomicU64::new(0),
            request_nonce: mix64(nonce),
            config,
        }
    }

    fn request_id(&self) -> HeaderValue {
        let n = self.request_seq.fetch_add(1, Relaxed);
        // mix64 is a bijection: distinct counters give distinct ids.
        let id = format!("req_{:016x}", mix64(self.request_nonce.wrapping_add(n)));
        HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("req_mock"))
    }

    fn current_override(&self) -> Option<Arc<StatusOverride>> {
        if !self.override_on.load(Relaxed) {
            return None;
        }
        self.status_override
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Returned by the service to make hyper close the connection unanswered.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mock fault: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

/// Accept connections until `graceful` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    hard: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            biased;
            () = graceful.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    use std::io::ErrorKind::*;
                    if !matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "mock server: accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(
            stream,
            shared.clone(),
            graceful.clone(),
            hard.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    hard: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    // Connection errors (client resets, dropped-connection faults) are
    // expected: nothing to report.
    tokio::select! {
        _ = conn.as_mut() => {}
        () = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                () = hard.cancelled() => {}
            }
        }
    }
}

enum Route {
    Endpoint(Endpoint),
    Stats,
    Batches,
    WrongMethod,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    if path == "/_mock/stats" {
        return Route::Stats;
    }
    if crate::batches::is_batch_path(path) {
        return Route::Batches;
    }
    match path.parse::<Endpoint>() {
        Ok(e) if method == Method::POST => Route::Endpoint(e),
        Ok(_) => Route::WrongMethod,
        Err(_) => Route::NotFound,
    }
}

/// Which markers a raw body contains.
#[derive(Debug, Default, Clone, Copy)]
struct Markers {
    fail_400: bool,
    fail_500: bool,
    no_json: bool,
}

fn scan_markers(body: &[u8]) -> Markers {
    let mut m = Markers::default();
    let mut rest = body;
    while let Some(at) = rest.iter().position(|&b| b == b'_') {
        let tail = &rest[at..];
        if tail.starts_with(b"__") {
            m.fail_400 |= tail.starts_with(MARKER_FAIL_400.as_bytes());
            m.fail_500 |= tail.starts_with(MARKER_FAIL_500_ALWAYS.as_bytes());
            m.no_json |= tail.starts_with(MARKER_NO_JSON.as_bytes());
        }
        rest = &tail[1..];
    }
    m
}

/// The request key used by `ok_count_for`.
fn request_key<'a>(header: Option<&'a str>, body: Option<&'a Value>, hash: u64) -> Cow<'a, str> {
    if let Some(h) = header {
        return Cow::Borrowed(h);
    }
    if let Some(user) = body.and_then(|b| b.get("user")).and_then(Value::as_str) {
        return Cow::Borrowed(user);
    }
    Cow::Owned(format!("{hash:016x}"))
}

/// The request key for a raw body without headers: what `ok_count_for`
/// uses when the client sends no `x-batchling-custom-id`.
pub fn body_key(raw_body: &[u8]) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(raw_body);
    let value: Option<Value> = serde_json::from_slice(raw_body).ok();
    request_key(None, value.as_ref(), hash).into_owned()
}

struct Reply {
    status: StatusCode,
    body: Body,
    content_type: &'static str,
    retry_after: Option<Duration>,
}

impl Reply {
    fn json(status: StatusCode, body: Vec<u8>) -> Self {
        Reply {
            status,
            body: Body::from(body),
            content_type: "application/json",
            retry_after: None,
        }
    }

    fn error(e: &ApiError) -> Self {
        Reply::json(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        )
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, incoming) = req.into_parts();
    let endpoint = match route(&parts.method, parts.uri.path()) {
        Route::Endpoint(e) => e,
        Route::Stats => {
            let body = serde_json::to_vec(&shared.counters.snapshot()).unwrap_or_default();
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(resp);
        }
        Route::Batches => {
            let _guard = shared.counters.enter();
            let limit = shared.config.max_body_bytes.max(256 << 20);
            let body = axum::body::to_bytes(Body::new(incoming), limit)
                .await
                .unwrap_or_default();
            return Ok(crate::batches::handle(&shared, parts, body).await);
        }
        other => {
            let _guard = shared.counters.enter();
            if let Some(ov) = shared.current_override() {
                return Ok(overridden(&shared, &ov));
            }
            shared.counters.bad_request.fetch_add(1, Relaxed);
            let (status, message) = match other {
                Route::WrongMethod => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "Invalid method for URL ({} {}).",
                        parts.method,
                        parts.uri.path()
                    ),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    format!("Invalid URL ({} {})", parts.method, parts.uri.path()),
                ),
            };
            let err = ApiError {
                status: status.as_u16(),
                message,
                kind: "invalid_request_error",
                param: None,
                code: None,
            };
            return Ok(finish(&shared, Reply::error(&err)));
        }
    };
    let _guard = shared.counters.enter();
    let config = &shared.config;

    let too_long = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > config.max_body_bytes as u64);
    let raw = if too_long {
        None
    } else {
        axum::body::to_bytes(Body::new(incoming), config.max_body_bytes)
            .await
            .ok()
    };
    let Some(raw) = raw else {
        shared.counters.bad_request.fetch_add(1, Relaxed);
        let err = ApiError {
            status: 413,
            message: format!(
                "Request body too large or unreadable (limit {} bytes).",
                config.max_body_bytes
            ),
            kind: "invalid_request_error",
            param: None,
            code: None,
        };
        return Ok(finish(&shared, Reply::error(&err)));
    };

    let hash = xxhash_rust::xxh3::xxh3_64(&raw);
    let header_key = parts
        .headers
        .get(CUSTOM_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    let parsed: Result<Value, _> = serde_json::from_slice(&raw);
    let key = config
        .track_keys
        .then(|| request_key(header_key, parsed.as_ref().ok(), hash));
    if let Some(key) = &key {
        shared.keys.attempt(key);
    }

    if let Some(ov) = shared.current_override() {
        return Ok(overridden(&shared, &ov));
    }

    let bad = |e: ApiError| {
        shared.counters.bad_request.fetch_add(1, Relaxed);
        Ok(finish(&shared, Reply::error(&e)))
    };
    let body = match &parsed {
        Ok(v) => v,
        Err(_) => {
            return bad(ApiError::invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means \
                 you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                 payload, but what was sent was not valid JSON.)",
                None,
            ));
        }
    };
    let markers = scan_markers(&raw);
    if markers.fail_400 {
        return bad(ApiError::invalid(
            format!("Mock marker {MARKER_FAIL_400}: this request always fails."),
            None,
        ));
    }
    let plan = match answer::validate(endpoint, body, config.default_max_output) {
        Ok(plan) => plan,
        Err(e) => return bad(e),
    };
    let estimated = if body.get("model").is_some_and(Value::is_string) {
        batchling_core::tokens::estimate(endpoint, body, config.default_max_output)
    } else {
        // Moderations may omit the model: count with the default one.
        let mut with_model = body.clone();
        with_model["model"] = Value::from(plan.model);
        batchling_core::tokens::estimate(endpoint, &with_model, config.default_max_output)
    };
    let estimate = match estimated {
        Ok(e) => e,
        Err(e) => return bad(ApiError::invalid(e.to_string(), None)),
    };
    let cost = estimate.total();

    match shared.limiter.admit(cost) {
        Admission::Admitted => {}
        Admission::Limited {
            kind,
            limit,
            used,
            requested,
            retry_after,
        } => {
            shared.counters.rate_limited.fetch_add(1, Relaxed);
            let (per, short) = match kind {
                LimitKind::Requests => ("requests per min", "RPM"),
                LimitKind::Tokens => ("tokens per min", "TPM"),
            };
            let enforced = match config.window {
                crate::LimitWindow::Minute => "",
                crate::LimitWindow::Second => ", enforced per second",
            };
            let message = format!(
                "Rate limit reached for {model} in organization org-mock on {per} ({short}){enforced}: \
                 Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. \
                 Visit https://platform.openai.com/account/rate-limits to learn more.",
                model = plan.model,
                wait = format_go_duration(retry_after),
            );
            let body = answer::error_envelope(
                &message,
                kind.error_type(),
                None,
                Some("rate_limit_exceeded"),
            );
            let mut reply = Reply::json(StatusCode::TOO_MANY_REQUESTS, body);
            reply.retry_after = Some(retry_after);
            return Ok(finish(&shared, reply));
        }
        Admission::TooLarge { limit, requested } => {
            shared.counters.rate_limited.fetch_add(1, Relaxed);
            let message = format!(
                "Request too large for {model} in organization org-mock on tokens per min (TPM): \
                 Limit {limit}, Requested {requested}. The input or output tokens must be \
                 reduced in order to run successfully.",
                model = plan.model,
            );
            let body =
                answer::error_envelope(&message, "tokens", None, Some("rate_limit_exceeded"));
            return Ok(finish(
                &shared,
                Reply::json(StatusCode::TOO_MANY_REQUESTS, body),
            ));
        }
    }
    shared.counters.tokens_admitted.fetch_add(cost, Relaxed);

    // Admitted: decide faults, then take our time.
    let seq = shared.admitted_seq.fetch_add(1, Relaxed);
    let faults = *shared.faults.read().unwrap_or_else(|e| e.into_inner());
    let jitter = Duration::from_nanos(shared.jitter_nanos.load(Relaxed));
    let drawn = draw(config.seed, seq, &faults, jitter);
    let mut delay = Duration::from_nanos(shared.latency_nanos.load(Relaxed)) + drawn.jitter;
    if drawn.slow {
        shared.counters.slowed.fetch_add(1, Relaxed);
        delay += faults.slow_delay;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let fault_reply = |status: u16| {
        shared.counters.faults.fetch_add(1, Relaxed);
        Ok(finish(
            &shared,
            Reply::error(&ApiError::server_error(status)),
        ))
    };
    if markers.fail_500 {
        return fault_reply(500);
    }
    if markers.no_json {
        shared.counters.faults.fetch_add(1, Relaxed);
        let reply = Reply {
            status: StatusCode::OK,
            body: Body::from(NO_JSON_BODY),
            content_type: "text/html",
            retry_after: None,
        };
        return Ok(finish(&shared, reply));
    }
    match drawn.fault {
        Fault::None => {}
        Fault::Error500 => return fault_reply(500),
        Fault::Error503 => return fault_reply(503),
        Fault::DropConnection => {
            shared.counters.faults.fetch_add(1, Relaxed);
            shared.counters.dropped.fetch_add(1, Relaxed);
            return Err(DropConnection);
        }
        Fault::MalformedBody => {
            shared.counters.faults.fetch_add(1, Relaxed);
            let mut answer = answer::render(endpoint, body, &plan, estimate.input, hash).body;
            answer.truncate(answer.len() / 2);
            return Ok(finish(&shared, Reply::json(StatusCode::OK, answer)));
        }
    }

    let answer = answer::render(endpoint, body, &plan, estimate.input, hash);
    let c = &shared.counters;
    c.ok.fetch_add(1, Relaxed);
    c.prompt_tokens.fetch_add(answer.prompt_tokens, Relaxed);
    c.completion_tokens
        .fetch_add(answer.completion_tokens, Relaxed);
    if let Some(key) = &key {
        shared.keys.ok(key);
    }
    Ok(finish(&shared, Reply::json(StatusCode::OK, answer.body)))
}

/// The status override's answer.
fn overridden(shared: &Shared, ov: &StatusOverride) -> Response<Body> {
    shared.counters.overridden.fetch_add(1, Relaxed);
    let mut resp = finish(
        shared,
        Reply {
            status: ov.status,
            body: Body::from(ov.body.clone()),
            content_type: "application/json",
            retry_after: None,
        },
    );
    for (name, value) in &ov.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// Turn a reply into a response with the common headers.
fn finish(shared: &Shared, reply: Reply) -> Response<Body> {
    let mut resp = Response::new(reply.body);
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    h.insert(X_REQUEST_ID, shared.request_id());
    if shared.config.send_limit_headers && shared.limiter.is_active() {
        let snap = shared.limiter.snapshot();
        let reset = HeaderValue::try_from(format_go_duration(snap.reset))
            .unwrap_or_else(|_| HeaderValue::from_static("0s"));
        if let Some((limit, remaining)) = snap.requests {
            h.insert(LIMIT_REQUESTS, HeaderValue::from(limit));
            h.insert(REMAINING_REQUESTS, HeaderValue::from(remaining));
            h.insert(RESET_REQUESTS, reset.clone());
        }
        if let Some((limit, remaining)) = snap.tokens {
            h.insert(LIMIT_TOKENS, HeaderValue::from(limit));
            h.insert(REMAINING_TOKENS, HeaderValue::from(remaining));
            h.insert(RESET_TOKENS, reset);
        }
    }
    if let Some(wait) = reply.retry_after {
        let ms = (wait.as_nanos().div_ceil(1_000_000) as u64).max(1);
        h.insert(RETRY_AFTER_MS, HeaderValue::from(ms));
        h.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_anywhere() {
        let m = scan_markers(br#"{"x":"a __fail_400__ b","y":"__no_json__"}"#);
        assert!(m.fail_400 && m.no_json && !m.fail_500);
        let m = scan_markers(br#"{"x":"___fail_500_always__"}"#);
        assert!(m.fail_500);
        let m = scan_markers(br#"{"x":"__fail_40"}"#);
        assert!(!m.fail_400);
    }

    #[test]
    fn keys_prefer_header_then_user_then_hash() {
        let v: Value = serde_json::json!({"user": "u1"});
        assert_eq!(request_key(Some("h"), Some(&v), 1), "h");
        assert_eq!(request_key(None, Some(&v), 1), "u1");
        assert_eq!(request_key(None, None, 255), "00000000000000ff");
    }
}
