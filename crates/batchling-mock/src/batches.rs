//! A fake OpenAI Files + Batches API, in memory (what it imitates:
//! docs/providers.md, "OpenAI: Files and Batches API").
//!
//! Routes: `POST /v1/files` (multipart `file` + `purpose`), `GET /v1/files`
//! (`purpose`, `after`, `limit`, `order`), `GET /v1/files/{id}`,
//! `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches`
//! (`after`, `limit`, newest first), `GET /v1/batches/{id}`,
//! `POST /v1/batches/{id}/cancel`. Errors use OpenAI's envelope.
//!
//! A batch runs when it is polled, not on a clock, so tests are
//! deterministic: each `GET /v1/batches/{id}` is one poll. The first poll
//! validates the input file (`validating` → `in_progress`, or `failed` with
//! `errors.data` naming the bad line); after [`BatchBehavior::polls_to_finish`]
//! polls the batch ends as [`BatchBehavior::end`] says. Each line is answered
//! the way the online mock answers it ([`crate::answer`]), markers included
//! (`__fail_400__` gives a 400 line in the error file). A line whose body
//! contains [`MARKER_BATCH_INVALID`] fails the batch's validation.
//!
//! Tests steer it through [`crate::MockServer`]: the behaviour of every
//! batch ([`BatchBehavior`], read at each poll, so it can change while a
//! batch runs), transient failures of the next uploads or creates, a create
//! that stores the batch and then never answers (the client's crash
//! window), a required API key, and counters ([`BatchStats`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Body;
use batchling_core::endpoint::Endpoint;
use batchling_core::output::{LineFailure, write_failure_line, write_response_line};
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::answer::{self, ApiError};
use crate::faults::mix64;
use crate::server::Shared;

/// Marker: a batch input line whose body contains this text makes the
/// batch fail validation, with `errors.data[0].line` = that line.
pub const MARKER_BATCH_INVALID: &str = "__batch_invalid__";

/// How batches end. Read at each poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every line is answered; the batch ends `completed`.
    Complete,
    /// The first [`BatchBehavior::answered_before_stop`] lines are answered,
    /// the rest get `batch_expired`; the batch ends `expired`.
    Expire,
    /// The batch stays `in_progress` until cancelled.
    Hold,
}

/// What batches do (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBehavior {
    /// Polls (retrieves) before the batch ends; at least 1.
    pub polls_to_finish: u32,
    /// How it ends.
    pub end: BatchEnd,
    /// Lines answered when a batch ends early (expired or cancelled).
    pub answered_before_stop: usize,
}

impl Default for BatchBehavior {
    fn default() -> Self {
        BatchBehavior {
            polls_to_finish: 2,
            end: BatchEnd::Complete,
            answered_before_stop: 0,
        }
    }
}

/// Counters of the Files + Batches API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Files stored by `POST /v1/files`.
    pub files_uploaded: u64,
    /// Batches stored by `POST /v1/batches` (whether or not the client got
    /// the answer).
    pub batches_created: u64,
    /// `POST /v1/batches/{id}/cancel` calls that found a live batch.
    pub batches_cancelled: u64,
    /// `GET /v1/batches/{id}` calls.
    pub polls: u64,
    /// Lines answered 200 inside batches.
    pub lines_answered: u64,
    /// Answers refused with 401.
    pub unauthorized: u64,
}

struct StoredFile {
    id: String,
    filename: String,
    purpose: String,
    created_at: u64,
    content: Bytes,
}

impl StoredFile {
    fn object(&self) -> Value {
        json!({
            "id": self.id, "object": "file", "bytes": self.content.len(),
            "created_at": self.created_at, "expires_at": null, "filename": self.filename,
            "purpose": self.purpose, "status": "processed", "status_details": null,
        })
    }
}

struct StoredBatch {
    object: Value,
    polls: u32,
    cancel_requested: bool,
}

#[derive(Default)]
struct Store {
    files: Vec<StoredFile>,
    batches: Vec<StoredBatch>,
}

/// The Files + Batches state behind the server.
pub(crate) struct BatchApi {
    store: Mutex<Store>,
    behavior: Mutex<BatchBehavior>,
    next_id: AtomicU64,
    fail_uploads: AtomicU32,
    fail_creates: AtomicU32,
    fail_status: AtomicU32,
    hang_creates: AtomicBool,
    lose_creates: AtomicU32,
    required_key: Mutex<Option<String>>,
    files_uploaded: AtomicU64,
    batches_created: AtomicU64,
    batches_cancelled: AtomicU64,
    polls: AtomicU64,
    lines_answered: AtomicU64,
    unauthorized: AtomicU64,
}

impl std::fmt::Debug for BatchApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchApi").finish_non_exhaustive()
    }
}

impl Default for BatchApi {
    fn default() -> Self {
        BatchApi {
            store: Mutex::default(),
            behavior: Mutex::default(),
            next_id: AtomicU64::new(1),
            fail_uploads: AtomicU32::new(0),
            fail_creates: AtomicU32::new(0),
            fail_status: AtomicU32::new(500),
            hang_creates: AtomicBool::new(false),
            lose_creates: AtomicU32::new(0),
            required_key: Mutex::new(None),
            files_uploaded: AtomicU64::new(0),
            batches_created: AtomicU64::new(0),
            batches_cancelled: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            lines_answered: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        }
    }
}

fn now() -> u64 {
    batchling_core::clock::unix_now()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BatchApi {
    pub(crate) fn set_behavior(&self, b: BatchBehavior) {
        *lock(&self.behavior) = b;
    }

    pub(crate) fn fail_next(&self, uploads: u32, creates: u32, status: u16) {
        self.fail_uploads.store(uploads, Relaxed);
        self.fail_creates.store(creates, Relaxed);
        self.fail_status.store(u32::from(status), Relaxed);
    }

    pub(crate) fn set_hang_creates(&self, on: bool) {
        self.hang_creates.store(on, Relaxed);
    }

    pub(crate) fn lose_next_creates(&self, n: u32) {
        self.lose_creates.store(n, Relaxed);
    }

    pub(crate) fn set_required_key(&self, key: Option<String>) {
        *lock(&self.required_key) = key;
    }

    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            files_uploaded: self.files_uploaded.load(Relaxed),
            batches_created: self.batches_created.load(Relaxed),
            batches_cancelled: self.batches_cancelled.load(Relaxed),
            polls: self.polls.load(Relaxed),
            lines_answered: self.lines_answered.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
        }
    }

    /// Every batch object as it stands now, newest first.
    pub(crate) fn batches(&self) -> Vec<Value> {
        lock(&self.store)
            .batches
            .iter()
            .rev()
            .map(|b| b.object.clone())
            .collect()
    }

    fn new_id(&self, prefix: &str, hex: usize) -> String {
        let n = self.next_id.fetch_add(1, Relaxed);
        let a = mix64(n ^ 0x5bd1_e995);
        let b = mix64(a);
        let text = format!("{a:016x}{b:016x}");
        format!("{prefix}{}", &text[..hex])
    }
}

/// Whether a path belongs to this API.
pub(crate) fn is_batch_path(path: &str) -> bool {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    p == "/files" || p.starts_with("/files/") || p == "/batches" || p.starts_with("/batches/")
}

fn reply(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn ok_json(v: &Value) -> Response<Body> {
    reply(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        "application/json",
    )
}

fn error(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Response<Body> {
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

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Take one pending injected failure, if any.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// The injected error answer, if one is pending on `counter`.
fn injected_failure(api: &BatchApi, counter: &AtomicU32) -> Option<Response<Body>> {
    take(counter).then(|| {
        error(
            api.fail_status.load(Relaxed) as u16,
            "The server had an error while processing your request.",
            None,
            None,
        )
    })
}

/// Serve one Files/Batches request.
pub(crate) async fn handle(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    let api = &shared.batches;
    if let Some(want) = lock(&api.required_key).clone() {
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if given != want {
            api.unauthorized.fetch_add(1, Relaxed);
            // Echoes the whole key, as a careless server would: the client
            // must redact it.
            return error(
                401,
                &format!("Incorrect API key provided: {given}."),
                None,
                Some("invalid_api_key"),
            );
        }
    }
    let path = parts.uri.path();
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let query = query_map(parts.uri.query());
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["files"]) => upload(shared, &parts, &body),
        (&Method::GET, ["files"]) => list_files(api, &query),
        (&Method::GET, ["files", id]) => with_file(api, id, |f| ok_json(&f.object())),
        (&Method::GET, ["files", id, "content"]) => with_file(api, id, |f| {
            let mut r = Response::new(Body::from(f.content.clone()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }),
        (&Method::POST, ["batches"]) => create(api, &body).await,
        (&Method::GET, ["batches"]) => list_batches(api, &query),
        (&Method::GET, ["batches", id]) => poll(shared, id),
        (&Method::POST, ["batches", id, "cancel"]) => cancel(api, id),
        _ => error(
            404,
            &format!("Invalid URL ({} {})", parts.method, parts.uri.path()),
            None,
            None,
        ),
    }
}

fn with_file(
    api: &BatchApi,
    id: &str,
    f: impl FnOnce(&StoredFile) -> Response<Body>,
) -> Response<Body> {
    let store = lock(&api.store);
    match store.files.iter().find(|x| x.id == id) {
        Some(file) => f(file),
        None => error(
            404,
            &format!("No such File object: {id}"),
            Some("file_id"),
            None,
        ),
    }
}

/// The parts of a multipart/form-data body: (name, filename, content).
fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<(String, Option<String>, Bytes)>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delim}").as_bytes())?;
        let content = Bytes::copy_from_slice(&rest[..end]);
        rest = &rest[end + 2 + delim.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let field = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        out.push((field("name=")?, field("filename="), content));
    }
}

fn upload(shared: &Shared, parts: &hyper::http::request::Parts, body: &[u8]) -> Response<Body> {
    let api = &shared.batches;
    if let Some(r) = injected_failure(api, &api.fail_uploads) {
        return r;
    }
    let ct = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(fields) = multipart(ct, body) else {
        return error(
            400,
            "Expected a multipart/form-data body with 'file' and 'purpose'.",
            None,
            None,
        );
    };
    let purpose = fields
        .iter()
        .find(|(n, _, _)| n == "purpose")
        .map(|(_, _, c)| String::from_utf8_lossy(c).into_owned());
    let file = fields.iter().find(|(n, _, _)| n == "file");
    let (Some(purpose), Some((_, filename, content))) = (purpose, file) else {
        return error(
            400,
            "Missing required parameter: 'file' or 'purpose'.",
            None,
            None,
        );
    };
    let filename = filename.clone().unwrap_or_else(|| "upload".into());
    if purpose == "batch" && !filename.ends_with(".jsonl") {
        return error(
            400,
            "Invalid file format for Batch API. Must be .jsonl",
            Some("file"),
            None,
        );
    }
    let f = StoredFile {
        id: api.new_id("file-", 24),
        filename,
        purpose,
        created_at: now(),
        content: content.clone(),
    };
    let object = f.object();
    lock(&api.store).files.push(f);
    api.files_uploaded.fetch_add(1, Relaxed);
    ok_json(&object)
}

fn list_files(api: &BatchApi, q: &HashMap<String, String>) -> Response<Body> {
    let store = lock(&api.store);
    let mut files: Vec<&StoredFile> = store
        .files
        .iter()
        .filter(|f| q.get("purpose").is_none_or(|p| *p == f.purpose))
        .collect();
    if q.get("order").is_none_or(|o| o != "asc") {
        files.reverse();
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10_000usize);
    page(
        files.iter().map(|f| f.object()).collect(),
        q.get("after"),
        limit,
    )
}

fn page(all: Vec<Value>, after: Option<&String>, limit: usize) -> Response<Body> {
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

async fn create(api: &BatchApi, body: &[u8]) -> Response<Body> {
    if let Some(r) = injected_failure(api, &api.fail_creates) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    let Some(file_id) = req["input_file_id"].as_str() else {
        return error(
            400,
            "Missing required parameter: 'input_file_id'.",
            Some("input_file_id"),
            None,
        );
    };
    let Some(endpoint) = req["endpoint"]
        .as_str()
        .filter(|e| e.parse::<Endpoint>().is_ok())
    else {
        return error(400, "Invalid value for 'endpoint'.", Some("endpoint"), None);
    };
    if req["completion_window"] != "24h" {
        return error(
            400,
            "Invalid value for 'completion_window': only '24h' is supported.",
            Some("completion_window"),
            None,
        );
    }
    let object = {
        let mut store = lock(&api.store);
        let Some(file) = store.files.iter().find(|f| f.id == file_id) else {
            return error(
                400,
                &format!("No such File object: {file_id}"),
                Some("input_file_id"),
                None,
            );
        };
        if file.purpose != "batch" {
            return error(
                400,
                "The input file must have purpose 'batch'.",
                Some("input_file_id"),
                None,
            );
        }
        let total = file
            .content
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        let created = now();
        let object = json!({
            "id": api.new_id("batch_", 32), "object": "batch", "endpoint": endpoint, "model": null,
            "errors": null, "input_file_id": file_id, "completion_window": "24h",
            "status": "validating", "output_file_id": null, "error_file_id": null,
            "created_at": created, "in_progress_at": null, "expires_at": created + 86_400,
            "finalizing_at": null, "completed_at": null, "failed_at": null, "expired_at": null,
            "cancelling_at": null, "cancelled_at": null,
            "request_counts": {"total": total, "completed": 0, "failed": 0},
            "usage": null, "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
        });
        store.batches.push(StoredBatch {
            object: object.clone(),
            polls: 0,
            cancel_requested: false,
        });
        api.batches_created.fetch_add(1, Relaxed);
        object
    };
    if take(&api.lose_creates) {
        // Stored, but the answer says otherwise: a retry must find it.
        return error(
            502,
            "Bad gateway (the batch was created all the same).",
            None,
            None,
        );
    }
    if api.hang_creates.load(Relaxed) {
        // The batch exists; the client never hears of it (it times out or
        // is killed): the crash window between create and journal write.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    ok_json(&object)
}

fn list_batches(api: &BatchApi, q: &HashMap<String, String>) -> Response<Body> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20usize)
        .min(100);
    page(api.batches(), q.get("after"), limit)
}

fn cancel(api: &BatchApi, id: &str) -> Response<Body> {
    let mut store = lock(&api.store);
    let Some(b) = store.batches.iter_mut().find(|b| b.object["id"] == id) else {
        return error(
            404,
            &format!("No such Batch object: {id}"),
            Some("batch_id"),
            None,
        );
    };
    match b.object["status"].as_str().unwrap_or("") {
        "validating" | "in_progress" | "finalizing" => {
            b.cancel_requested = true;
            b.object["status"] = "cancelling".into();
            b.object["cancelling_at"] = now().into();
            api.batches_cancelled.fetch_add(1, Relaxed);
            ok_json(&b.object)
        }
        "cancelling" | "cancelled" => ok_json(&b.object),
        other => {
            let mut r = error(
                400,
                &format!("Cannot cancel a batch with status '{other}'."),
                None,
                None,
            );
            r.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
            r
        }
    }
}

/// One poll: advance the batch, then return it.
fn poll(shared: &Shared, id: &str) -> Response<Body> {
    let api = &shared.batches;
    api.polls.fetch_add(1, Relaxed);
    let behavior = *lock(&api.behavior);
    let mut store = lock(&api.store);
    let Some(index) = store.batches.iter().position(|b| b.object["id"] == id) else {
        return error(
            404,
            &format!("No such Batch object: {id}"),
            Some("batch_id"),
            None,
        );
    };
    let status = store.batches[index].object["status"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if matches!(
        status.as_str(),
        "completed" | "failed" | "expired" | "cancelled"
    ) {
        return ok_json(&store.batches[index].object);
    }
    store.batches[index].polls += 1;
    let polls = store.batches[index].polls;
    let file_id = store.batches[index].object["input_file_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let content = store
        .files
        .iter()
        .find(|f| f.id == file_id)
        .map(|f| f.content.clone())
        .unwrap_or_default();
    let endpoint = store.batches[index].object["endpoint"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let t = now();
    if status == "validating" {
        if let Some(e) = validate_file(&content, &endpoint) {
            let b = &mut store.batches[index].object;
            b["status"] = "failed".into();
            b["failed_at"] = t.into();
            b["errors"] = json!({"object": "list", "data": [e]});
            return ok_json(b);
        }
        let b = &mut store.batches[index].object;
        b["status"] = "in_progress".into();
        b["in_progress_at"] = t.into();
    }
    let end = if store.batches[index].cancel_requested {
        Some((
            "cancelled",
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
            behavior.answered_before_stop,
        ))
    } else if polls >= behavior.polls_to_finish.max(1) {
        match behavior.end {
            BatchEnd::Complete => Some(("completed", "", "", usize::MAX)),
            BatchEnd::Expire => Some((
                "expired",
                "batch_expired",
                "This request could not be executed before the completion window expired.",
                behavior.answered_before_stop,
            )),
            BatchEnd::Hold => None,
        }
    } else {
        None
    };
    let Some((final_status, code, message, answered)) = end else {
        return ok_json(&store.batches[index].object);
    };
    let (out, err, done, failed) = execute(shared, &content, answered, code, message);
    let mut new_file = |lines: Vec<u8>, kind: &str| -> Value {
        if lines.is_empty() {
            return Value::Null;
        }
        let f = StoredFile {
            id: api.new_id("file-", 24),
            filename: format!("{id}_{kind}.jsonl"),
            purpose: "batch_output".into(),
            created_at: t,
            content: Bytes::from(lines),
        };
        let fid = f.id.clone();
        store.files.push(f);
        Value::from(fid)
    };
    let out_id = new_file(out, "output");
    let err_id = new_file(err, "error");
    let b = &mut store.batches[index].object;
    b["status"] = final_status.into();
    b["output_file_id"] = out_id;
    b["error_file_id"] = err_id;
    b["finalizing_at"] = t.into();
    b[format!("{final_status}_at").as_str()] = t.into();
    b["request_counts"]["completed"] = done.into();
    b["request_counts"]["failed"] = failed.into();
    ok_json(b)
}

/// The first problem of a batch input file, as a `BatchError`.
fn validate_file(content: &[u8], endpoint: &str) -> Option<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut any = false;
    for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        any = true;
        let line = i + 1;
        let bad = |code: &str, message: &str| {
            Some(json!({"code": code, "line": line, "message": message, "param": null}))
        };
        let Ok(v) = serde_json::from_slice::<Value>(raw) else {
            return bad(
                "invalid_json_line",
                "This line is not parseable as valid JSON.",
            );
        };
        let Some(cid) = v["custom_id"].as_str() else {
            return bad(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.",
            );
        };
        if !seen.insert(cid.to_owned()) {
            return bad(
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request.",
            );
        }
        if v["url"] != endpoint {
            return bad(
                "invalid_url",
                "The URL provided for this request does not match the batch endpoint.",
            );
        }
        if v["body"].to_string().contains(MARKER_BATCH_INVALID) {
            return bad(
                "invalid_request",
                "Mock marker __batch_invalid__: this line fails validation.",
            );
        }
    }
    if !any {
        return Some(
            json!({"code": "empty_file", "line": null, "message": "The input file is empty.", "param": null}),
        );
    }
    None
}

/// Answer the first `answered` lines like the online mock does; the rest get
/// `code`. Returns the output and error files and their line counts.
fn execute(
    shared: &Shared,
    content: &[u8],
    answered: usize,
    code: &str,
    message: &str,
) -> (Vec<u8>, Vec<u8>, u64, u64) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut done, mut failed) = (0u64, 0u64);
    let lines = content
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    for (i, raw) in lines.enumerate() {
        let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let cid = v["custom_id"].as_str().unwrap_or("");
        let line_id = shared.batches.new_id("batch_req_", 24);
        if i >= answered {
            write_failure_line(&mut err, &line_id, cid, &LineFailure { code, message });
            failed += 1;
            continue;
        }
        let request_id = shared.batches.new_id("req_", 16);
        let (status, body) = answer_line(shared, &v);
        if status == 200 {
            write_response_line(&mut out, &line_id, cid, 200, &request_id, &body);
            shared.batches.lines_answered.fetch_add(1, Relaxed);
            done += 1;
        } else {
            write_response_line(&mut err, &line_id, cid, status, &request_id, &body);
            failed += 1;
        }
    }
    (out, err, done, failed)
}

/// One line's answer, as the online endpoint would give it.
fn answer_line(shared: &Shared, line: &Value) -> (u16, Vec<u8>) {
    let body = &line["body"];
    let Ok(endpoint) = line["url"].as_str().unwrap_or("").parse::<Endpoint>() else {
        return (400, ApiError::invalid("Invalid URL.", None).body());
    };
    let text = body.to_string();
    if text.contains(crate::MARKER_FAIL_400) {
        return (
            400,
            ApiError::invalid(
                format!(
                    "Mock marker {}: this request always fails.",
                    crate::MARKER_FAIL_400
                ),
                None,
            )
            .body(),
        );
    }
    let max_out = shared.config.default_max_output;
    let plan = match answer::validate(endpoint, body, max_out) {
        Ok(p) => p,
        Err(e) => return (e.status, e.body()),
    };
    let mut with_model = body.clone();
    with_model["model"] = Value::from(plan.model);
    let input =
        batchling_core::tokens::estimate(endpoint, &with_model, max_out).map_or(0, |e| e.input);
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    (200, answer::render(endpoint, body, &plan, input, hash).body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_split_into_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{\"a\":1}\n\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "purpose");
        assert_eq!(&parts[0].2[..], b"batch");
        assert_eq!(parts[1].1.as_deref(), Some("a.jsonl"));
        assert_eq!(&parts[1].2[..], b"{\"a\":1}\n");
    }

    #[test]
    fn validation_names_the_bad_line() {
        let file =
            b"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n\nnot json\n";
        let e = validate_file(file, "/v1/chat/completions").unwrap();
        assert_eq!(e["line"], 3);
        assert_eq!(e["code"], "invalid_json_line");
    }
}
