//! A fake OpenAI Files + Batches API (docs/providers.md, "OpenAI: Files
//! and Batches API"), in memory.
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
//!
//! Files: `mod.rs` holds the state and routes a request; `http.rs` the
//! answer helpers; `files.rs` the Files API; `lifecycle.rs` create, list,
//! cancel and poll; `run.rs` validates an input file and answers its lines.

mod files;
mod http;
mod lifecycle;
mod run;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use axum::body::Body;
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::mix64;
use crate::server::{Shared, api_key};

use http::{error, ok_json, query_map};

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

pub(crate) struct StoredFile {
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

pub(crate) struct StoredBatch {
    object: Value,
    polls: u32,
    cancel_requested: bool,
}

#[derive(Default)]
pub(crate) struct Store {
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

pub(crate) fn now() -> u64 {
    batchling_core::clock::unix_now()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// Take one pending injected failure, if any.
pub(crate) fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// The injected error answer, if one is pending on `counter`.
pub(crate) fn injected_failure(api: &BatchApi, counter: &AtomicU32) -> Option<Response<Body>> {
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
        let given = api_key(&parts.headers).unwrap_or("");
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
        (&Method::POST, ["files"]) => files::upload(shared, &parts, &body),
        (&Method::GET, ["files"]) => files::list(api, &query),
        (&Method::GET, ["files", id]) => files::with_file(api, id, |f| ok_json(&f.object())),
        (&Method::GET, ["files", id, "content"]) => files::with_file(api, id, |f| {
            let mut r = Response::new(Body::from(f.content.clone()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }),
        (&Method::POST, ["batches"]) => lifecycle::create(api, shared.config.shape, &body).await,
        (&Method::GET, ["batches"]) => lifecycle::list(api, &query),
        (&Method::GET, ["batches", id]) => lifecycle::poll(shared, id),
        (&Method::POST, ["batches", id, "cancel"]) => lifecycle::cancel(api, id),
        _ => error(
            404,
            &format!("Invalid URL ({} {})", parts.method, parts.uri.path()),
            None,
            None,
        ),
    }
}
