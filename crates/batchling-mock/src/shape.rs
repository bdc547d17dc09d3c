//! The fake provider as Azure OpenAI or Groq ([`Shape`]): each rewrites a
//! request's URL onto the OpenAI routes, checks what its provider checks,
//! serves it as OpenAI's mock does, then dresses the answer in its
//! provider's headers and bodies.
//!
//! - Azure: `/openai/deployments/{d}/{chat/completions,completions,embeddings}`
//!   and `/openai/{responses,files,batches}...` with `?api-version=`, and
//!   everything under `/openai/v1/`; the key in `api-key` (a request
//!   without one, or with `Authorization`, gets Azure's 401); headers as
//!   Azure sends them (`x-ratelimit-remaining-*`, `x-ratelimit-limit-tokens`
//!   and `x-ratelimit-reset-tokens` in integer seconds, no request limit or
//!   reset); its 429 body (`code: "429"`, "Please retry after N seconds");
//!   a share of chat requests refused by the content filter
//!   ([`crate::MockConfig::content_filter`]).
//! - Groq: everything under `/openai/v1/`; batches take a
//!   `completion_window` from `24h` to `7d`; answers carry `x_groq` and
//!   usage timings, online and in batch result files.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::mix64;
use crate::server::{DropConnection, Shared};

/// Which provider the fake provider looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// OpenAI's API under `/v1` (and Anthropic's), as always.
    #[default]
    OpenAi,
    /// Azure OpenAI (see the module docs).
    Azure,
    /// Groq (see the module docs).
    Groq,
}

/// What the Azure and Groq shapes saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShapeStats {
    /// Azure: online requests on `/openai/deployments/{d}/...`.
    pub deployment_requests: u64,
    /// Azure: other requests with `api-version` (responses, files, batches).
    pub dated_requests: u64,
    /// Requests under `/openai/v1/`.
    pub v1_requests: u64,
    /// Azure: requests refused for their key (no `api-key`, or an
    /// `Authorization` header).
    pub unauthorized: u64,
    /// Azure: requests refused by the content filter.
    pub content_filtered: u64,
    /// Requests on no route of the shape.
    pub not_found: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ShapeCounters {
    deployment_requests: AtomicU64,
    dated_requests: AtomicU64,
    v1_requests: AtomicU64,
    unauthorized: AtomicU64,
    content_filtered: AtomicU64,
    not_found: AtomicU64,
    seq: AtomicU64,
}

impl ShapeCounters {
    pub(crate) fn snapshot(&self) -> ShapeStats {
        ShapeStats {
            deployment_requests: self.deployment_requests.load(Relaxed),
            dated_requests: self.dated_requests.load(Relaxed),
            v1_requests: self.v1_requests.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
            content_filtered: self.content_filtered.load(Relaxed),
            not_found: self.not_found.load(Relaxed),
        }
    }
}

/// Where an Azure request goes on the OpenAI routes.
struct AzureRoute {
    /// The OpenAI path (`/v1/...`).
    path: String,
    /// `api-version`, for the dated forms.
    version: Option<String>,
    /// A chat request, which the content filter may refuse.
    chat: bool,
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn azure_error(status: u16, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": status.to_string(), "message": message}}),
    )
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Azure's URL forms onto the OpenAI routes; `None` for no route.
fn azure_route(path: &str, query: Option<&str>, counters: &ShapeCounters) -> Option<AzureRoute> {
    if let Some(rest) = path.strip_prefix("/openai/v1/") {
        counters.v1_requests.fetch_add(1, Relaxed);
        return Some(AzureRoute {
            path: format!("/v1/{rest}"),
            version: None,
            chat: rest == "chat/completions",
        });
    }
    let version = query_param(query, "api-version").filter(|v| !v.is_empty())?;
    let rest = path.strip_prefix("/openai/")?;
    let (rest, counter) = match rest.strip_prefix("deployments/") {
        Some(d) => {
            let (deployment, endpoint) = d.split_once('/')?;
            let online = ["chat/completions", "completions", "embeddings"];
            if deployment.is_empty() || !online.contains(&endpoint) {
                return None;
            }
            (endpoint, &counters.deployment_requests)
        }
        None => (rest, &counters.dated_requests),
    };
    counter.fetch_add(1, Relaxed);
    Some(AzureRoute {
        path: format!("/v1/{rest}"),
        version: Some(version.to_owned()),
        chat: rest == "chat/completions",
    })
}

/// The request with its path replaced by `path` (the query kept).
fn rerouted(req: Request<Incoming>, path: &str) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    if let Ok(uri) = target.parse::<Uri>() {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

/// An Azure request: see the module docs.
pub(crate) async fn azure(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let counters = &shared.shape_counters;
    let Some(route) = azure_route(req.uri().path(), req.uri().query(), counters) else {
        counters.not_found.fetch_add(1, Relaxed);
        return Ok(azure_error(404, "Resource not found"));
    };
    let key = req
        .headers()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (Some(key), false) = (key, req.headers().contains_key(AUTHORIZATION)) else {
        counters.unauthorized.fetch_add(1, Relaxed);
        return Ok(azure_error(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        ));
    };
    if route.chat && filtered(&shared) {
        counters.content_filtered.fetch_add(1, Relaxed);
        return Ok(json_response(400, &content_filter_body()));
    }
    // The OpenAI routes find the key where OpenAI sends it.
    if let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {key}")) {
        req.headers_mut().insert(AUTHORIZATION, bearer);
    }
    let resp = crate::server::route_and_handle(shared.clone(), rerouted(req, &route.path)).await?;
    Ok(azure_answer(resp, route.version.as_deref()).await)
}

/// Whether the content filter refuses the next chat request (seeded).
fn filtered(shared: &Shared) -> bool {
    let rate = shared.config.content_filter;
    if rate <= 0.0 {
        return false;
    }
    let n = shared.shape_counters.seq.fetch_add(1, Relaxed);
    let draw = mix64(shared.config.seed ^ mix64(n ^ 0xA2u64.rotate_left(56)));
    ((draw >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// Azure's 400 for a prompt its content filter refused.
fn content_filter_body() -> Value {
    json!({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": null, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            "hate": {"filtered": false, "severity": "safe"},
            "jailbreak": {"filtered": false, "detected": false},
            "self_harm": {"filtered": false, "severity": "safe"},
            "sexual": {"filtered": true, "severity": "medium"},
            "violence": {"filtered": false, "severity": "safe"}
        }}
    }})
}

/// OpenAI's answer as Azure's: its limit headers, and its 429 body.
async fn azure_answer(resp: Response<Body>, version: Option<&str>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    h.remove("x-ratelimit-limit-requests");
    h.remove("x-ratelimit-reset-requests");
    if let Some(reset) = h.get("x-ratelimit-reset-tokens")
        && let Some(d) = reset
            .to_str()
            .ok()
            .and_then(batchling_core::duration::parse_duration)
    {
        let secs = d.as_nanos().div_ceil(1_000_000_000) as u64;
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from(secs));
    }
    if parts.status != StatusCode::TOO_MANY_REQUESTS {
        return Response::from_parts(parts, body);
    }
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let openai: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if openai["error"]["code"] != "rate_limit_exceeded" {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let wait = parts
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    let which = if openai["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("requests"))
    {
        "call rate limit"
    } else {
        "token rate limit"
    };
    let message = format!(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {} have exceeded {which} of your current OpenAI S0 pricing tier. Please retry after {wait} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
        version.unwrap_or("v1")
    );
    let body = json!({"error": {"code": "429", "message": message}}).to_string();
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A Groq request: see the module docs.
pub(crate) async fn groq(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let Some(rest) = req.uri().path().strip_prefix("/openai/v1/") else {
        shared.shape_counters.not_found.fetch_add(1, Relaxed);
        let message = format!(
            "Unknown request URL: {} {}. Please check the URL for typos, or see the docs at https://console.groq.com/docs/",
            req.method(),
            req.uri().path()
        );
        return Ok(json_response(
            404,
            &json!({"error": {"message": message, "type": "invalid_request_error", "code": "unknown_url"}}),
        ));
    };
    shared.shape_counters.v1_requests.fetch_add(1, Relaxed);
    let path = format!("/v1/{rest}");
    let online = path.parse::<batchling_core::Endpoint>().is_ok();
    let resp = crate::server::route_and_handle(shared.clone(), rerouted(req, &path)).await?;
    if !online || resp.status() != StatusCode::OK {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    };
    groq_answer(
        &mut answer,
        shared.request_id().to_str().unwrap_or("req_mock"),
    );
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(answer.to_string())))
}

/// Groq's additions to an answer: `x_groq` and usage timings.
pub(crate) fn groq_answer(answer: &mut Value, id: &str) {
    let Some(fields) = answer.as_object_mut() else {
        return;
    };
    fields.insert("x_groq".into(), json!({"id": id}));
    if let Some(usage) = fields.get_mut("usage").and_then(Value::as_object_mut) {
        for (k, v) in [
            ("queue_time", 0.012),
            ("prompt_time", 0.004),
            ("completion_time", 0.021),
            ("total_time", 0.025),
        ] {
            usage.insert(k.into(), json!(v));
        }
    }
}

/// The batch windows a shape accepts.
pub(crate) fn accepts_window(shape: Shape, window: &Value) -> bool {
    let Some(w) = window.as_str() else {
        return false;
    };
    match shape {
        Shape::Groq => {
            let hours = match (w.strip_suffix('h'), w.strip_suffix('d')) {
                (Some(h), _) => h.parse::<u32>().ok(),
                (_, Some(d)) => d.parse::<u32>().ok().map(|d| d * 24),
                _ => None,
            };
            hours.is_some_and(|h| (24..=168).contains(&h))
        }
        Shape::OpenAi | Shape::Azure => w == "24h",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_routes() {
        let c = ShapeCounters::default();
        let r = |p, q| azure_route(p, q, &c).map(|r| (r.path, r.version, r.chat));
        assert_eq!(
            r(
                "/openai/deployments/gpt-4o/chat/completions",
                Some("api-version=2024-10-21")
            ),
            Some((
                "/v1/chat/completions".into(),
                Some("2024-10-21".into()),
                true
            ))
        );
        assert_eq!(
            r(
                "/openai/batches/batch_1",
                Some("limit=3&api-version=2024-10-21")
            )
            .map(|r| r.0),
            Some("/v1/batches/batch_1".into())
        );
        assert_eq!(
            r("/openai/v1/files", None),
            Some(("/v1/files".into(), None, false))
        );
        assert!(r("/openai/deployments/gpt-4o/chat/completions", None).is_none());
        assert!(
            r(
                "/openai/deployments//chat/completions",
                Some("api-version=1")
            )
            .is_none()
        );
        assert!(r("/v1/chat/completions", Some("api-version=1")).is_none());
        let s = c.snapshot();
        assert_eq!(
            (s.deployment_requests, s.dated_requests, s.v1_requests),
            (1, 1, 1)
        );
    }

    #[test]
    fn windows() {
        for w in ["24h", "48h", "7d", "168h"] {
            assert!(accepts_window(Shape::Groq, &json!(w)), "{w}");
        }
        for w in ["8d", "1h", "x", "d"] {
            assert!(!accepts_window(Shape::Groq, &json!(w)), "{w}");
        }
        assert!(!accepts_window(Shape::Azure, &json!("48h")));
        assert!(accepts_window(Shape::OpenAi, &json!("24h")));
    }
}
