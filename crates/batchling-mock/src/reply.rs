//! Turning a handler's [`Reply`] into a hyper response: the common headers
//! (`x-request-id`, the six `x-ratelimit-*`, `retry-after-ms` /
//! `retry-after`) and the status override's fixed answer.

use std::time::Duration;

use axum::body::Body;
use batchling_core::duration::format_duration as format_go_duration;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::answer::ApiError;
use crate::limits::{LaneId, LimitSnapshot};
use crate::server::{Shared, StatusOverride};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// What a handler step answers, before the common headers are added.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Body,
    pub(crate) content_type: &'static str,
    /// Sent as `retry-after-ms` and `retry-after` (rate-limit 429s only).
    pub(crate) retry_after: Option<Duration>,
    /// The lane whose limits the `x-ratelimit-*` headers describe: the one
    /// the request was charged to, or its key's default lane when the
    /// request never got that far.
    pub(crate) lane: LaneId,
    /// The header values as the request's admission left its lane; `None`
    /// for a request that never got that far (then the lane's now).
    pub(crate) limits: Option<LimitSnapshot>,
}

impl Reply {
    /// A JSON answer.
    pub(crate) fn json(lane: LaneId, status: StatusCode, body: Vec<u8>) -> Self {
        Reply {
            status,
            body: Body::from(body),
            content_type: "application/json",
            retry_after: None,
            lane,
            limits: None,
        }
    }

    /// An error answer with OpenAI's envelope.
    pub(crate) fn error(lane: LaneId, e: &ApiError) -> Self {
        Reply::json(
            lane,
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        )
    }
}

/// Turn a reply into a response with the common headers.
pub(crate) fn finish(shared: &Shared, reply: Reply) -> Response<Body> {
    let mut resp = Response::new(reply.body);
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    h.insert(X_REQUEST_ID, shared.request_id());
    if shared.config.send_limit_headers
        && let Some(snap) = (reply.limits).or_else(|| shared.limits.snapshot(reply.lane))
    {
        limit_headers(h, &snap);
    }
    if let Some(wait) = reply.retry_after {
        let ms = (wait.as_nanos().div_ceil(1_000_000) as u64).max(1);
        h.insert(RETRY_AFTER_MS, HeaderValue::from(ms));
        h.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
    }
    resp
}

/// The `x-ratelimit-*` headers of the limits a lane has.
fn limit_headers(h: &mut HeaderMap, snap: &LimitSnapshot) {
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

/// The status override's answer.
pub(crate) fn overridden(shared: &Shared, lane: LaneId, ov: &StatusOverride) -> Response<Body> {
    shared
        .counters
        .overridden
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut resp = finish(
        shared,
        Reply {
            status: ov.status,
            body: Body::from(ov.body.clone()),
            content_type: "application/json",
            retry_after: None,
            lane,
            limits: None,
        },
    );
    for (name, value) in &ov.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}
