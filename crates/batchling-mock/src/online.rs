//! One online request (`POST /v1/chat/completions` and the other
//! endpoints), as a pipeline of named steps that reads top to bottom:
//! read the body, note its key, the status override, validate, admit
//! against the lane's limits, take our time, answer. Each step either
//! passes the request on or answers it.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use batchling_core::duration::format_duration as format_go_duration;
use batchling_core::endpoint::Endpoint;
use batchling_core::tokens::TokenEstimate;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::answer::{self, ApiError, Plan};
use crate::config::LimitWindow;
use crate::faults::{Draw, Fault, draw};
use crate::limits::{Admission, Cost, LaneId, LimitKind, LimitSnapshot, charge};
use crate::reply::{Reply, finish, overridden};
use crate::server::{DropConnection, Shared, api_key};

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

/// A request that passed validation: what it asks for and what it costs.
struct Checked<'a> {
    endpoint: Endpoint,
    body: &'a Value,
    plan: Plan<'a>,
    markers: Markers,
    estimate: TokenEstimate,
    /// Where it is charged, and how many tokens.
    lane: LaneId,
    cost: u64,
}

/// Serve one online request.
pub(crate) async fn handle(
    shared: &Shared,
    endpoint: Endpoint,
    parts: Parts,
    incoming: Incoming,
) -> Result<Response<Body>, DropConnection> {
    let _guard = shared.counters.enter();
    let key_lane = shared.limits.lane(api_key(&parts.headers), None);
    let raw = match read_body(shared, &parts, incoming).await {
        Ok(raw) => raw,
        Err(e) => return Ok(bad_request(shared, key_lane, e)),
    };
    let hash = xxhash_rust::xxh3::xxh3_64(&raw);
    let parsed: Result<Value, _> = serde_json::from_slice(&raw);
    let key = count_attempt(shared, &parts, parsed.as_ref().ok(), hash);
    if let Some(ov) = shared.current_override() {
        return Ok(overridden(shared, key_lane, &ov));
    }
    let req = match check(shared, &parts, endpoint, &raw, parsed.as_ref().ok()) {
        Ok(req) => req,
        Err(e) => return Ok(bad_request(shared, key_lane, e)),
    };
    let limits = match admit(shared, &req) {
        Ok(limits) => limits,
        Err(reply) => {
            shared.counters.rate_limited.fetch_add(1, Relaxed);
            return Ok(finish(shared, *reply));
        }
    };
    let drawn = take_our_time(shared).await;
    let mut reply = answer(shared, &req, &drawn, hash, key.as_deref())?;
    reply.limits = limits;
    Ok(finish(shared, reply))
}

/// The body, unless it is larger than `max_body_bytes` (413).
async fn read_body(shared: &Shared, parts: &Parts, incoming: Incoming) -> Result<Bytes, ApiError> {
    let max = shared.config.max_body_bytes;
    let too_long = (parts.headers.get(CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max as u64);
    let raw = if too_long {
        None
    } else {
        axum::body::to_bytes(Body::new(incoming), max).await.ok()
    };
    raw.ok_or_else(|| ApiError {
        status: 413,
        message: format!("Request body too large or unreadable (limit {max} bytes)."),
        kind: "invalid_request_error",
        param: None,
        code: None,
    })
}

/// Count an attempt for the request's key (when keys are tracked) and
/// return the key.
fn count_attempt<'a>(
    shared: &Shared,
    parts: &'a Parts,
    body: Option<&'a Value>,
    hash: u64,
) -> Option<Cow<'a, str>> {
    if !shared.config.track_keys {
        return None;
    }
    let header = (parts.headers.get(CUSTOM_ID_HEADER)).and_then(|v| v.to_str().ok());
    let key = request_key(header, body, hash);
    shared.keys.attempt(&key);
    Some(key)
}

/// The checks that answer 400: JSON, the `__fail_400__` marker, the fields
/// the mock relies on, a countable body. Also works out the lane and cost.
fn check<'a>(
    shared: &Shared,
    parts: &Parts,
    endpoint: Endpoint,
    raw: &[u8],
    parsed: Option<&'a Value>,
) -> Result<Checked<'a>, ApiError> {
    let config = &shared.config;
    let body = parsed.ok_or_else(|| {
        ApiError::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means \
             you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
             payload, but what was sent was not valid JSON.)",
            None,
        )
    })?;
    let markers = scan_markers(raw);
    if markers.fail_400 {
        return Err(ApiError::invalid(
            format!("Mock marker {MARKER_FAIL_400}: this request always fails."),
            None,
        ));
    }
    let plan = answer::validate(endpoint, body, config.default_max_output)?;
    let estimate = estimate(endpoint, body, &plan, config.default_max_output)?;
    let lane = shared
        .limits
        .lane(api_key(&parts.headers), Some(plan.model));
    Ok(Checked {
        endpoint,
        body,
        plan,
        markers,
        estimate,
        lane,
        cost: charge(config.token_count, body, &estimate),
    })
}

/// The tokenizer's count of a valid body.
fn estimate(
    endpoint: Endpoint,
    body: &Value,
    plan: &Plan<'_>,
    default_max_output: u64,
) -> Result<TokenEstimate, ApiError> {
    let estimated = if body.get("model").is_some_and(Value::is_string) {
        batchling_core::tokens::estimate(endpoint, body, default_max_output)
    } else {
        // Moderations may omit the model: count with the default one.
        let mut with_model = body.clone();
        with_model["model"] = Value::from(plan.model);
        batchling_core::tokens::estimate(endpoint, &with_model, default_max_output)
    };
    estimated.map_err(|e| ApiError::invalid(e.to_string(), None))
}

/// Charge the request to its lane, or the 429 that says why not; with the
/// header values its admission left.
fn admit(shared: &Shared, req: &Checked<'_>) -> Result<Option<LimitSnapshot>, Box<Reply>> {
    let cost = Cost {
        tokens: req.cost,
        input: req.estimate.input,
        output: req.estimate.max_output,
    };
    let (admission, limits) = shared.limits.admit(req.lane, cost);
    match admission {
        Admission::Admitted => {
            shared.counters.tokens_admitted.fetch_add(req.cost, Relaxed);
            Ok(limits)
        }
        Admission::Limited {
            kind,
            limit,
            used,
            requested,
            retry_after,
        } => {
            let (per, short) = match kind {
                LimitKind::Requests => ("requests per min", "RPM"),
                LimitKind::Tokens => ("tokens per min", "TPM"),
                LimitKind::InputTokens => ("input tokens per min", "ITPM"),
                LimitKind::OutputTokens => ("output tokens per min", "OTPM"),
            };
            let enforced = match shared.config.window {
                LimitWindow::Minute => "",
                LimitWindow::Second => ", enforced per second",
            };
            let message = format!(
                "Rate limit reached for {model} in organization {org} on {per} ({short}){enforced}: \
                 Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. \
                 Visit https://platform.openai.com/account/rate-limits to learn more.",
                model = req.plan.model,
                org = shared.limits.group_name(req.lane),
                wait = format_go_duration(retry_after),
            );
            let body = answer::error_envelope(
                &message,
                kind.error_type(),
                None,
                Some("rate_limit_exceeded"),
            );
            let mut reply = Reply::json(req.lane, StatusCode::TOO_MANY_REQUESTS, body);
            reply.retry_after = Some(retry_after);
            reply.limits = limits;
            Err(Box::new(reply))
        }
        Admission::TooLarge {
            limit, requested, ..
        } => {
            let message = format!(
                "Request too large for {model} in organization {org} on tokens per min (TPM): \
                 Limit {limit}, Requested {requested}. The input or output tokens must be \
                 reduced in order to run successfully.",
                model = req.plan.model,
                org = shared.limits.group_name(req.lane),
            );
            let body =
                answer::error_envelope(&message, "tokens", None, Some("rate_limit_exceeded"));
            Err(Box::new(Reply::json(
                req.lane,
                StatusCode::TOO_MANY_REQUESTS,
                body,
            )))
        }
    }
}

/// Draw the admitted request's fault, then sleep its latency.
pub(crate) async fn take_our_time(shared: &Shared) -> Draw {
    let seq = shared.admitted_seq.fetch_add(1, Relaxed);
    let faults = *shared.faults.read().unwrap_or_else(|e| e.into_inner());
    let jitter = Duration::from_nanos(shared.jitter_nanos.load(Relaxed));
    let drawn = draw(shared.config.seed, seq, &faults, jitter);
    let mut delay = Duration::from_nanos(shared.latency_nanos.load(Relaxed)) + drawn.jitter;
    if drawn.slow {
        shared.counters.slowed.fetch_add(1, Relaxed);
        delay += faults.slow_delay;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drawn
}

/// The answer: a marker's or the drawn fault's, else the 200, which counts
/// for the request's key.
fn answer(
    shared: &Shared,
    req: &Checked<'_>,
    drawn: &Draw,
    hash: u64,
    key: Option<&str>,
) -> Result<Reply, DropConnection> {
    let counters = &shared.counters;
    let fault = |status: u16| {
        counters.faults.fetch_add(1, Relaxed);
        Ok(Reply::error(req.lane, &ApiError::server_error(status)))
    };
    if req.markers.fail_500 {
        return fault(500);
    }
    if req.markers.no_json {
        counters.faults.fetch_add(1, Relaxed);
        return Ok(Reply {
            content_type: "text/html",
            body: Body::from(NO_JSON_BODY),
            ..Reply::json(req.lane, StatusCode::OK, Vec::new())
        });
    }
    match drawn.fault {
        Fault::Error500 => return fault(500),
        // Overloaded is Anthropic's 529; OpenAI says the same with a 503.
        Fault::Error503 | Fault::Overloaded => return fault(503),
        Fault::DropConnection => {
            counters.faults.fetch_add(1, Relaxed);
            counters.dropped.fetch_add(1, Relaxed);
            return Err(DropConnection);
        }
        Fault::None | Fault::MalformedBody => {}
    }
    let rendered = answer::render(req.endpoint, req.body, &req.plan, req.estimate.input, hash);
    if drawn.fault == Fault::MalformedBody {
        counters.faults.fetch_add(1, Relaxed);
        let mut body = rendered.body;
        body.truncate(body.len() / 2);
        return Ok(Reply::json(req.lane, StatusCode::OK, body));
    }
    counters.ok.fetch_add(1, Relaxed);
    if let Some(key) = key {
        shared.keys.ok(key);
    }
    counters
        .prompt_tokens
        .fetch_add(rendered.prompt_tokens, Relaxed);
    counters
        .completion_tokens
        .fetch_add(rendered.completion_tokens, Relaxed);
    Ok(Reply::json(req.lane, StatusCode::OK, rendered.body))
}

/// A 400 or 413.
fn bad_request(shared: &Shared, lane: LaneId, e: ApiError) -> Response<Body> {
    shared.counters.bad_request.fetch_add(1, Relaxed);
    finish(shared, Reply::error(lane, &e))
}

/// Which markers a raw body contains.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Markers {
    pub(crate) fail_400: bool,
    pub(crate) fail_500: bool,
    pub(crate) no_json: bool,
}

pub(crate) fn scan_markers(body: &[u8]) -> Markers {
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
