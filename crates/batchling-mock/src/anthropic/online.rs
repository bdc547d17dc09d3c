//! `POST /v1/messages` as named steps, like the OpenAI pipeline
//! (`online.rs`): the headers, the body, its key, the status override,
//! validation, admission against the lane's RPM / ITPM / OTPM, our time,
//! the answer.

use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use hyper::Response;
use hyper::http::request::Parts;
use serde_json::Value;

use super::message::{self, InputUsage, Request};
use super::{AnthropicError, MARKER_SPEND_LIMIT, envelope, error_response, respond};
use crate::faults::{Draw, Fault};
use crate::limits::{Admission, Cost, LaneId, LimitKind};
use crate::online::{CUSTOM_ID_HEADER, Markers, NO_JSON_BODY, scan_markers, take_our_time};
use crate::server::{DropConnection, Shared};

/// A request that passed validation, with its lane and input split.
struct Checked<'a> {
    body: &'a Value,
    req: Request<'a>,
    markers: Markers,
    lane: LaneId,
    group: usize,
    usage: InputUsage,
}

/// Serve one Messages request.
pub(crate) async fn handle(
    shared: &Shared,
    parts: Parts,
    incoming: hyper::body::Incoming,
) -> Result<Response<Body>, DropConnection> {
    let _guard = shared.counters.enter();
    let key = super::api_key(&parts.headers);
    let key_lane = shared.limits.lane(key, None);
    let refuse = |e: AnthropicError| {
        shared.counters.bad_request.fetch_add(1, Relaxed);
        Ok(error_response(shared, &e, Some(key_lane)))
    };
    if let Err(e) = super::check_headers(shared, &parts.headers) {
        return refuse(e);
    }
    let raw = match super::read_body(&parts, incoming, shared.config.max_body_bytes).await {
        Ok(raw) => raw,
        Err(e) => return refuse(e),
    };
    let hash = xxhash_rust::xxh3::xxh3_64(&raw);
    let parsed: Option<Value> = serde_json::from_slice(&raw).ok();
    let request_key = count_attempt(shared, &parts, parsed.as_ref(), hash);
    if let Some(ov) = shared.current_override() {
        shared.counters.overridden.fetch_add(1, Relaxed);
        let mut resp = respond(
            shared,
            ov.status.as_u16(),
            ov.body.to_vec(),
            Some(key_lane),
            None,
            shared.request_id(),
        );
        for (name, value) in &ov.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        return Ok(resp);
    }
    let checked = match check(shared, key, &raw, parsed.as_ref()) {
        Ok(checked) => checked,
        Err(e) if e.status == 429 => return Ok(spend_limit(shared, key_lane, &e)),
        Err(e) => return refuse(e),
    };
    if let Some(refusal) = admit(shared, &checked) {
        return Ok(refusal);
    }
    let drawn = take_our_time(shared).await;
    answer(shared, &checked, &drawn, hash, request_key.as_deref())
}

/// Count an attempt for the request's key: `x-batchling-custom-id`, else
/// `metadata.user_id`, else the body's xxh3 in hex.
fn count_attempt(
    shared: &Shared,
    parts: &Parts,
    body: Option<&Value>,
    hash: u64,
) -> Option<String> {
    if !shared.config.track_keys {
        return None;
    }
    let header = (parts.headers.get(CUSTOM_ID_HEADER)).and_then(|v| v.to_str().ok());
    let user = body
        .and_then(|b| b.pointer("/metadata/user_id"))
        .and_then(Value::as_str);
    let key = header
        .or(user)
        .map_or_else(|| format!("{hash:016x}"), str::to_owned);
    shared.keys.attempt(&key);
    Some(key)
}

/// JSON, the markers that answer at once, Anthropic's checks; then the
/// lane and how the input splits over the prompt cache.
fn check<'a>(
    shared: &Shared,
    key: Option<&str>,
    raw: &[u8],
    parsed: Option<&'a Value>,
) -> Result<Checked<'a>, AnthropicError> {
    let body = parsed.ok_or_else(|| {
        AnthropicError::invalid(
            "There was an error parsing the body of your request: not valid JSON.",
        )
    })?;
    let markers = scan_markers(raw);
    if markers.fail_400 {
        return Err(AnthropicError::invalid(format!(
            "Mock marker {}: this request always fails.",
            crate::MARKER_FAIL_400
        )));
    }
    if raw
        .windows(MARKER_SPEND_LIMIT.len())
        .any(|w| w == MARKER_SPEND_LIMIT.as_bytes())
    {
        return Err(AnthropicError::new(
            429,
            "You have reached your specified workspace API usage limits.",
        ));
    }
    let req = message::validate(body, "")?;
    let lane = shared.limits.lane(key, Some(req.model));
    let group = shared.limits.group_index(lane);
    let usage = shared.prompt_cache.split(group, &req);
    Ok(Checked {
        body,
        req,
        markers,
        lane,
        group,
        usage,
    })
}

/// The spend-cap 429: no `retry-after`, an `error_code` in `details`.
fn spend_limit(shared: &Shared, lane: LaneId, e: &AnthropicError) -> Response<Body> {
    shared.counters.rate_limited.fetch_add(1, Relaxed);
    let mut error = e.object();
    error["details"] = serde_json::json!({"error_code": "enforced_spend_limit_reached"});
    let id = shared.request_id();
    respond(shared, 429, envelope(error, &id), Some(lane), None, id)
}

/// Charge the lane: one request, input without cache reads against ITPM,
/// `max_tokens` against OTPM, both against TPM. `None` when admitted, else
/// the 429 that says why not (a request that can never fit is a 400).
fn admit(shared: &Shared, c: &Checked<'_>) -> Option<Response<Body>> {
    let input = c.usage.charged();
    let cost = Cost {
        tokens: input + c.req.max_tokens,
        input,
        output: c.req.max_tokens,
    };
    let (kind, limit, retry_after) = match shared.limits.admit(c.lane, cost).0 {
        Admission::Admitted => {
            shared
                .counters
                .tokens_admitted
                .fetch_add(cost.tokens, Relaxed);
            return None;
        }
        Admission::Limited {
            kind,
            limit,
            retry_after,
            ..
        } => (kind, limit, Some(retry_after)),
        Admission::TooLarge { kind, limit, .. } => (kind, limit, None),
    };
    let per = match kind {
        LimitKind::Requests => "requests",
        LimitKind::Tokens => "tokens",
        LimitKind::InputTokens => "input tokens",
        LimitKind::OutputTokens => "output tokens",
    };
    let org = shared.limits.group_name(c.lane);
    let model = c.req.model;
    let Some(wait) = retry_after else {
        shared.counters.bad_request.fetch_add(1, Relaxed);
        let e = AnthropicError::invalid(format!(
            "This request alone exceeds the rate limit for your organization ({org}) of \
             {limit} {per} per minute for {model}; it can never succeed as sent."
        ));
        return Some(error_response(shared, &e, Some(c.lane)));
    };
    shared.counters.rate_limited.fetch_add(1, Relaxed);
    let e = AnthropicError::new(
        429,
        format!(
            "This request would exceed the rate limit for your organization ({org}) of {limit} \
             {per} per minute for {model}. For details, refer to: \
             https://docs.claude.com/en/api/rate-limits."
        ),
    );
    let id = shared.request_id();
    Some(respond(
        shared,
        429,
        envelope(e.object(), &id),
        Some(c.lane),
        Some(wait),
        id,
    ))
}

/// The answer: a marker's or the drawn fault's, else the message, which
/// counts for the request's key and writes its cache prefix.
fn answer(
    shared: &Shared,
    c: &Checked<'_>,
    drawn: &Draw,
    hash: u64,
    key: Option<&str>,
) -> Result<Response<Body>, DropConnection> {
    let counters = &shared.counters;
    let fault = |status: u16, message: &str| {
        counters.faults.fetch_add(1, Relaxed);
        Ok(error_response(
            shared,
            &AnthropicError::new(status, message),
            Some(c.lane),
        ))
    };
    if c.markers.fail_500 {
        return fault(500, "Internal server error");
    }
    if c.markers.no_json {
        counters.faults.fetch_add(1, Relaxed);
        let mut resp = respond(
            shared,
            200,
            NO_JSON_BODY.into(),
            Some(c.lane),
            None,
            shared.request_id(),
        );
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html"),
        );
        return Ok(resp);
    }
    match drawn.fault {
        Fault::Error500 => return fault(500, "Internal server error"),
        // Anthropic's word for a busy upstream is 529, not 503.
        Fault::Error503 | Fault::Overloaded => return fault(529, "Overloaded"),
        Fault::DropConnection => {
            counters.faults.fetch_add(1, Relaxed);
            counters.dropped.fetch_add(1, Relaxed);
            return Err(DropConnection);
        }
        Fault::None | Fault::MalformedBody => {}
    }
    let (message, words) = message::render(c.body, &c.req, &c.usage, hash);
    let mut body = serde_json::to_vec(&message).unwrap_or_default();
    if drawn.fault == Fault::MalformedBody {
        counters.faults.fetch_add(1, Relaxed);
        body.truncate(body.len() / 2);
        return Ok(respond(
            shared,
            200,
            body,
            Some(c.lane),
            None,
            shared.request_id(),
        ));
    }
    shared.prompt_cache.written(c.group, &c.req);
    counters.ok.fetch_add(1, Relaxed);
    if let Some(key) = key {
        shared.keys.ok(key);
    }
    let u = &c.usage;
    counters
        .prompt_tokens
        .fetch_add(u.input + u.cache_write + u.cache_read, Relaxed);
    counters.completion_tokens.fetch_add(words, Relaxed);
    Ok(respond(
        shared,
        200,
        body,
        Some(c.lane),
        None,
        shared.request_id(),
    ))
}
