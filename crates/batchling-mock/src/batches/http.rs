//! Answer helpers of the Files + Batches API: JSON, OpenAI's error
//! envelope, query strings and list pages.

use std::collections::HashMap;

use axum::body::Body;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::answer;

pub(crate) fn reply(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn ok_json(v: &Value) -> Response<Body> {
    reply(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        "application/json",
    )
}

pub(crate) fn error(
    status: u16,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<Body> {
    let kind = match status {
        500.. => "server_error",
        429 => "requests",
        _ => "invalid_request_error",
    };
    let mut r = reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        answer::error_envelope(message, kind, param, code),
        "application/json",
    );
    if status == 429 {
        r.headers_mut()
            .insert("retry-after-ms", HeaderValue::from_static("10"));
    }
    r
}

pub(crate) fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(crate) fn page(all: Vec<Value>, after: Option<&String>, limit: usize) -> Response<Body> {
    let start = match after {
        Some(a) => all
            .iter()
            .position(|v| v["id"] == **a)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let limit = limit.max(1);
    let data: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + data.len() < all.len();
    ok_json(&json!({
        "object": "list",
        "first_id": data.first().map(|v| v["id"].clone()),
        "last_id": data.last().map(|v| v["id"].clone()),
        "has_more": has_more,
        "data": data,
    }))
}
