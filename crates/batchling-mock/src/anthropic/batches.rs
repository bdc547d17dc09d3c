//! A fake Message Batches API, in memory: `POST /v1/messages/batches`
//! (requests inline), `GET /v1/messages/batches` (newest first, `limit`
//! 1..=1000, `after_id` / `before_id`), `GET /v1/messages/batches/{id}`,
//! `POST /v1/messages/batches/{id}/cancel`, and the results at the batch's
//! `results_url`, `GET /v1/messages/batches/{id}/results` (JSONL).
//!
//! As the OpenAI fake, a batch moves when it is retrieved, not on a clock:
//! each retrieve is one poll; after [`BatchBehavior::polls_to_finish`] polls
//! it ends as [`BatchBehavior::end`] says (`Complete`: every request
//! answered; `Expire`: the first `answered_before_stop` answered, the rest
//! `expired`; `Hold`: `in_progress` until cancelled). A cancel moves it to
//! `canceling`; the next retrieve ends it, the first `answered_before_stop`
//! answered and the rest `canceled`. Each request is answered as `POST
//! /v1/messages` would answer it (prompt cache included, limits and faults
//! not): `succeeded` with the message, or `errored` for a body with
//! `__fail_400__` (`invalid_request_error`) or `__fail_500_always__`
//! (`api_error`). Result lines come in reverse request order: Anthropic
//! promises no order, so a client must join on `custom_id`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Body;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::message::{self, InputUsage};
use super::time::rfc3339;
use super::{AnthropicError, error_response, respond};
use crate::batches::{BatchBehavior, BatchEnd, take};
use crate::faults::mix64;
use crate::server::Shared;

/// Most requests in one batch.
pub const MAX_BATCH_REQUESTS: usize = 100_000;
/// Largest create body: 256 MB.
pub const MAX_BATCH_BYTES: usize = 256_000_000;

/// Counters of the Message Batches API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MessageBatchStats {
    /// Batches stored by a create (whether or not the client got the answer).
    pub batches_created: u64,
    /// Cancels that found a batch in progress.
    pub batches_canceled: u64,
    /// Retrieves.
    pub polls: u64,
    /// Requests answered `succeeded`.
    pub requests_succeeded: u64,
    /// Results downloads.
    pub results_downloads: u64,
}

/// One stored batch.
struct Stored {
    id: String,
    /// The creating key's limit group: whose prompt cache it uses.
    group: usize,
    created_at: u64,
    requests: Vec<(String, Value)>,
    polls: u32,
    cancel_initiated_at: Option<u64>,
    ended_at: Option<u64>,
    /// Outcome counts once ended: succeeded, errored, canceled, expired.
    counts: [u64; 4],
    results: Vec<u8>,
}

/// The Message Batches state behind the server.
#[derive(Default)]
pub(crate) struct MessageBatches {
    store: Mutex<Vec<Stored>>,
    behavior: Mutex<BatchBehavior>,
    next_id: AtomicU64,
    fail_creates: AtomicU32,
    fail_status: AtomicU32,
    lose_creates: AtomicU32,
    hang_creates: AtomicBool,
    created: AtomicU64,
    canceled: AtomicU64,
    polls: AtomicU64,
    succeeded: AtomicU64,
    downloads: AtomicU64,
}

impl std::fmt::Debug for MessageBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBatches").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MessageBatches {
    pub(crate) fn set_behavior(&self, b: BatchBehavior) {
        *lock(&self.behavior) = b;
    }

    pub(crate) fn fail_next_creates(&self, n: u32, status: u16) {
        self.fail_status.store(u32::from(status), Relaxed);
        self.fail_creates.store(n, Relaxed);
    }

    pub(crate) fn lose_next_creates(&self, n: u32) {
        self.lose_creates.store(n, Relaxed);
    }

    pub(crate) fn set_hang_creates(&self, on: bool) {
        self.hang_creates.store(on, Relaxed);
    }

    pub(crate) fn stats(&self) -> MessageBatchStats {
        MessageBatchStats {
            batches_created: self.created.load(Relaxed),
            batches_canceled: self.canceled.load(Relaxed),
            polls: self.polls.load(Relaxed),
            requests_succeeded: self.succeeded.load(Relaxed),
            results_downloads: self.downloads.load(Relaxed),
        }
    }

    /// Every batch object, newest first (`base`: the results URL's origin).
    pub(crate) fn objects(&self, base: &str) -> Vec<Value> {
        lock(&self.store)
            .iter()
            .rev()
            .map(|b| object(b, base))
            .collect()
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Relaxed);
        format!(
            "msgbatch_{:016x}{:08x}",
            mix64(n ^ 0x6d73_6762),
            mix64(n) >> 32
        )
    }
}

/// A batch object as Anthropic returns it.
fn object(b: &Stored, base: &str) -> Value {
    let total = b.requests.len() as u64;
    let status = match (b.ended_at, b.cancel_initiated_at) {
        (Some(_), _) => "ended",
        (None, Some(_)) => "canceling",
        (None, None) => "in_progress",
    };
    let time = |t: Option<u64>| t.map(rfc3339);
    json!({
        "id": b.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": if b.ended_at.is_some() { 0 } else { total },
            "succeeded": b.counts[0], "errored": b.counts[1],
            "canceled": b.counts[2], "expired": b.counts[3],
        },
        "created_at": rfc3339(b.created_at),
        "expires_at": rfc3339(b.created_at + 86_400),
        "ended_at": time(b.ended_at),
        "cancel_initiated_at": time(b.cancel_initiated_at),
        "archived_at": null,
        "results_url": b.ended_at.map(|_| format!("{base}/v1/messages/batches/{}/results", b.id)),
    })
}

/// Serve one Message Batches call.
pub(crate) async fn handle(
    shared: &Shared,
    parts: Parts,
    incoming: hyper::body::Incoming,
) -> Response<Body> {
    let _guard = shared.counters.enter();
    if let Err(e) = super::check_headers(shared, &parts.headers) {
        return error_response(shared, &e, None);
    }
    let body = match super::read_body(&parts, incoming, MAX_BATCH_BYTES).await {
        Ok(body) => body,
        Err(e) => return error_response(shared, &e, None),
    };
    let base = origin(&parts);
    let path = parts.uri.path().trim_start_matches("/v1/messages/");
    let segments: Vec<&str> = path.split('/').collect();
    let result = match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["batches"]) => {
            let lane = shared.limits.lane(super::api_key(&parts.headers), None);
            let group = shared.limits.group_index(lane);
            return create(shared, &body, &base, group).await;
        }
        (&Method::GET, ["batches"]) => list(shared, parts.uri.query(), &base),
        (&Method::GET, ["batches", id]) => retrieve(shared, id, &base),
        (&Method::POST, ["batches", id, "cancel"]) => cancel(shared, id, &base),
        (&Method::GET, ["batches", id, "results"]) => return results(shared, id),
        _ => Err(AnthropicError::new(
            404,
            format!("Not found: {} {}", parts.method, parts.uri.path()),
        )),
    };
    match result {
        Ok(v) => ok(shared, &v),
        Err(e) => error_response(shared, &e, None),
    }
}

fn ok(shared: &Shared, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    respond(shared, 200, body, None, None, shared.request_id())
}

/// `http://HOST` of the request, for `results_url`.
fn origin(parts: &Parts) -> String {
    let host = (parts.headers.get(hyper::header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// `POST /v1/messages/batches`: check, store, answer (or fail, lose or
/// hang, as the test asked).
async fn create(shared: &Shared, body: &[u8], base: &str, group: usize) -> Response<Body> {
    let api = &shared.message_batches;
    if take(&api.fail_creates) {
        let status = api.fail_status.load(Relaxed) as u16;
        return error_response(
            shared,
            &AnthropicError::new(status, "Injected failure."),
            None,
        );
    }
    let requests = match checked_create(body) {
        Ok(requests) => requests,
        Err(e) => return error_response(shared, &e, None),
    };
    let stored = Stored {
        id: api.new_id(),
        group,
        created_at: batchling_core::clock::unix_now(),
        requests,
        polls: 0,
        cancel_initiated_at: None,
        ended_at: None,
        counts: [0; 4],
        results: Vec::new(),
    };
    let answer = object(&stored, base);
    lock(&api.store).push(stored);
    api.created.fetch_add(1, Relaxed);
    if take(&api.lose_creates) {
        // Stored, but the client hears of a failure: a retry makes a second.
        let e = AnthropicError::new(
            500,
            "Internal server error (the batch was created all the same).",
        );
        return error_response(shared, &e, None);
    }
    if api.hang_creates.load(Relaxed) {
        // The crash window: the batch exists, the client never hears of it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    ok(shared, &answer)
}

/// A create body's requests, checked as Anthropic checks them: at most
/// [`MAX_BATCH_REQUESTS`], each `custom_id` 1..=64 of `[a-zA-Z0-9_-]` and
/// unique, each `params` a valid Messages body without `stream`.
fn checked_create(body: &[u8]) -> Result<Vec<(String, Value)>, AnthropicError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|_| {
        AnthropicError::invalid(
            "There was an error parsing the body of your request: not valid JSON.",
        )
    })?;
    let Some(Value::Array(list)) = parsed.get("requests") else {
        return Err(AnthropicError::invalid("requests: Field required"));
    };
    if list.is_empty() {
        return Err(AnthropicError::invalid(
            "requests: at least one request is required",
        ));
    }
    if list.len() > MAX_BATCH_REQUESTS {
        return Err(AnthropicError::invalid(format!(
            "requests: a batch holds at most {MAX_BATCH_REQUESTS} requests, got {}",
            list.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let id = r.get("custom_id").and_then(Value::as_str).unwrap_or("");
        let well_formed = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(AnthropicError::invalid(format!(
                "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        if !seen.insert(id) {
            return Err(AnthropicError::invalid(format!(
                "requests.{i}.custom_id: duplicate custom_id {id:?}; each must be unique within the batch"
            )));
        }
        let params = r.get("params").cloned().unwrap_or(Value::Null);
        message::validate(&params, &format!("requests.{i}.params."))?;
        out.push((id.to_owned(), params));
    }
    Ok(out)
}

/// `GET /v1/messages/batches/{id}`: one poll, which may end the batch.
fn retrieve(shared: &Shared, id: &str, base: &str) -> Result<Value, AnthropicError> {
    let api = &shared.message_batches;
    api.polls.fetch_add(1, Relaxed);
    let behavior = *lock(&api.behavior);
    let mut store = lock(&api.store);
    let b = find(&mut store, id)?;
    if b.ended_at.is_none() {
        b.polls += 1;
        if let Some(end) = end_of(b, &behavior) {
            run(shared, b, end);
        }
    }
    Ok(object(b, base))
}

fn find<'s>(store: &'s mut [Stored], id: &str) -> Result<&'s mut Stored, AnthropicError> {
    store
        .iter_mut()
        .find(|b| b.id == id)
        .ok_or_else(|| AnthropicError::new(404, format!("No message batch with id {id}.")))
}

/// How a batch ends: requests answered, and what the others are.
struct End {
    answered: usize,
    rest: &'static str,
}

/// Whether this poll ends the batch, and how.
fn end_of(b: &Stored, behavior: &BatchBehavior) -> Option<End> {
    if b.cancel_initiated_at.is_some() {
        return Some(End {
            answered: behavior.answered_before_stop,
            rest: "canceled",
        });
    }
    if b.polls < behavior.polls_to_finish.max(1) {
        return None;
    }
    match behavior.end {
        BatchEnd::Complete => Some(End {
            answered: usize::MAX,
            rest: "expired",
        }),
        BatchEnd::Expire => Some(End {
            answered: behavior.answered_before_stop,
            rest: "expired",
        }),
        BatchEnd::Hold => None,
    }
}

/// End a batch: answer its first `end.answered` requests, write the result
/// lines (reverse order) and the counts.
fn run(shared: &Shared, b: &mut Stored, end: End) {
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(b.requests.len());
    let mut counts = [0u64; 4];
    for (i, (custom_id, params)) in b.requests.iter().enumerate() {
        let result = if i < end.answered {
            answer(shared, b.group, params)
        } else {
            json!({"type": end.rest})
        };
        let slot = match result["type"].as_str() {
            Some("succeeded") => 0,
            Some("errored") => 1,
            Some("canceled") => 2,
            _ => 3,
        };
        counts[slot] += 1;
        let line = json!({"custom_id": custom_id, "result": result});
        lines.push(serde_json::to_vec(&line).unwrap_or_default());
    }
    shared
        .message_batches
        .succeeded
        .fetch_add(counts[0], Relaxed);
    for line in lines.iter().rev() {
        b.results.extend_from_slice(line);
        b.results.push(b'\n');
    }
    b.counts = counts;
    b.ended_at = Some(batchling_core::clock::unix_now());
}

/// One request's result, as `POST /v1/messages` would answer it.
fn answer(shared: &Shared, group: usize, params: &Value) -> Value {
    let text = params.to_string();
    let errored = |e: AnthropicError| {
        let id = shared.request_id();
        let id = id.to_str().unwrap_or("req_mock").to_owned();
        json!({"type": "errored", "error": {"type": "error", "error": e.object(), "request_id": id}})
    };
    if text.contains(crate::MARKER_FAIL_400) {
        return errored(AnthropicError::invalid(format!(
            "Mock marker {}: this request always fails.",
            crate::MARKER_FAIL_400
        )));
    }
    if text.contains(crate::MARKER_FAIL_500_ALWAYS) {
        return errored(AnthropicError::new(500, "Internal server error"));
    }
    let req = match message::validate(params, "") {
        Ok(req) => req,
        Err(e) => return errored(e),
    };
    let usage: InputUsage = shared.prompt_cache.split(group, &req);
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let (mut message, _) = message::render(params, &req, &usage, hash);
    message["usage"]["service_tier"] = "batch".into();
    shared.prompt_cache.written(group, &req);
    json!({"type": "succeeded", "message": message})
}

/// `POST /v1/messages/batches/{id}/cancel`: an in-progress batch becomes
/// `canceling`; any other is returned as it is.
fn cancel(shared: &Shared, id: &str, base: &str) -> Result<Value, AnthropicError> {
    let api = &shared.message_batches;
    let mut store = lock(&api.store);
    let b = find(&mut store, id)?;
    if b.ended_at.is_none() && b.cancel_initiated_at.is_none() {
        b.cancel_initiated_at = Some(batchling_core::clock::unix_now());
        api.canceled.fetch_add(1, Relaxed);
    }
    Ok(object(b, base))
}

/// `GET .../results`: the JSONL once the batch has ended.
fn results(shared: &Shared, id: &str) -> Response<Body> {
    let api = &shared.message_batches;
    let mut store = lock(&api.store);
    let b = match find(&mut store, id) {
        Ok(b) => b,
        Err(e) => return error_response(shared, &e, None),
    };
    if b.ended_at.is_none() {
        let e = AnthropicError::invalid(format!(
            "Message batch {id} is still processing; its results are available once it has ended."
        ));
        return error_response(shared, &e, None);
    }
    api.downloads.fetch_add(1, Relaxed);
    let mut resp = respond(
        shared,
        200,
        b.results.clone(),
        None,
        None,
        shared.request_id(),
    );
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/binary"));
    resp
}

/// `GET /v1/messages/batches`: a page, newest first, as Anthropic pages:
/// `after_id` gives the page after that batch, `before_id` the page before.
fn list(shared: &Shared, query: Option<&str>, base: &str) -> Result<Value, AnthropicError> {
    let q: HashMap<&str, &str> = (query.unwrap_or("").split('&'))
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| AnthropicError::invalid("limit: Input should be between 1 and 1000"))?,
    };
    let all = shared.message_batches.objects(base);
    let position = |id: &str| {
        all.iter()
            .position(|b| b["id"] == id)
            .ok_or_else(|| AnthropicError::invalid(format!("No message batch with id {id}.")))
    };
    let (start, end) = match (q.get("after_id"), q.get("before_id")) {
        (Some(_), Some(_)) => {
            return Err(AnthropicError::invalid(
                "Use after_id or before_id, not both.",
            ));
        }
        (Some(a), None) => {
            let start = position(a)? + 1;
            (start, (start + limit).min(all.len()))
        }
        (None, Some(b)) => {
            let end = position(b)?;
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(all.len())),
    };
    let data = &all[start..end];
    let has_more = if q.contains_key("before_id") {
        start > 0
    } else {
        end < all.len()
    };
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": data.first().map(|b| b["id"].clone()),
        "last_id": data.last().map(|b| b["id"].clone()),
    }))
}
