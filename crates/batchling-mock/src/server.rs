//! The HTTP side: the accept loop, one hyper HTTP/1.1 connection per task,
//! the state every handler shares, and routing: online requests go to
//! `online.rs`, the Files + Batches API to `batches/`, Anthropic's Messages
//! and Message Batches APIs (`/v1/messages...`) to `anthropic/`.
//!
//! hyper is driven directly (not through `axum::serve`) because the
//! `drop_connection` fault needs the service to fail: hyper then closes the
//! connection without writing a response, and the client sees an incomplete
//! message.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use batchling_core::endpoint::Endpoint;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::ApiError;
use crate::config::{Faults, MockConfig};
use crate::faults::mix64;
use crate::limits::Limits;
use crate::reply::{Reply, finish, overridden};
use crate::shape::{Shape, ShapeCounters};
use crate::stats::{Counters, KeyTable, LaneStats, MockStats};

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
    pub(crate) limits: Limits,
    pub(crate) counters: Counters,
    pub(crate) keys: KeyTable,
    /// The Files + Batches API.
    pub(crate) batches: crate::batches::BatchApi,
    /// Anthropic's prompt cache: the prefixes written so far.
    pub(crate) prompt_cache: crate::anthropic::PromptCache,
    /// Anthropic's Message Batches API.
    pub(crate) message_batches: crate::anthropic::MessageBatches,
    /// The key Anthropic calls must carry, when a test sets one.
    pub(crate) anthropic_key: crate::anthropic::RequiredKey,
    /// What the Azure and Groq shapes saw.
    pub(crate) shape_counters: ShapeCounters,
    /// Arrival number of admitted requests (input of the fault draw).
    pub(crate) admitted_seq: AtomicU64,
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
            limits: Limits::new(start, &config),
            counters: Counters::default(),
            keys: KeyTable::default(),
            batches: crate::batches::BatchApi::default(),
            prompt_cache: crate::anthropic::PromptCache::default(),
            message_batches: crate::anthropic::MessageBatches::default(),
            anthropic_key: crate::anthropic::RequiredKey::default(),
            shape_counters: ShapeCounters::default(),
            admitted_seq: AtomicU64::new(0),
            request_seq: AtomicU64::new(0),
            request_nonce: mix64(nonce),
            config,
        }
    }

    pub(crate) fn request_id(&self) -> HeaderValue {
        let n = self.request_seq.fetch_add(1, Relaxed);
        // mix64 is a bijection: distinct counters give distinct ids.
        let id = format!("req_{:016x}", mix64(self.request_nonce.wrapping_add(n)));
        HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("req_mock"))
    }

    pub(crate) fn current_override(&self) -> Option<Arc<StatusOverride>> {
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
    Anthropic,
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
    if crate::anthropic::is_anthropic_path(path) {
        return Route::Anthropic;
    }
    match path.parse::<Endpoint>() {
        Ok(e) if method == Method::POST => Route::Endpoint(e),
        Ok(_) => Route::WrongMethod,
        Err(_) => Route::NotFound,
    }
}

/// Every request starts here: its shape's URLs (OpenAI's, Azure's,
/// Groq's) onto the routes, then its handler.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    // The mock's own pages (`/_mock/stats`) are the same in every shape.
    if req.uri().path().starts_with("/_mock/") {
        return route_and_handle(shared, req).await;
    }
    match shared.config.shape {
        Shape::OpenAi => route_and_handle(shared, req).await,
        Shape::Azure => crate::shape::azure(shared, req).await,
        Shape::Groq => crate::shape::groq(shared, req).await,
    }
}

/// Route a request (OpenAI's URLs), then hand it to its handler.
pub(crate) async fn route_and_handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, incoming) = req.into_parts();
    match route(&parts.method, parts.uri.path()) {
        Route::Endpoint(endpoint) => {
            crate::online::handle(&shared, endpoint, parts, incoming).await
        }
        Route::Stats => Ok(stats_page(&shared)),
        Route::Batches => Ok(batch_api(&shared, parts, incoming).await),
        Route::Anthropic => crate::anthropic::handle(&shared, parts, incoming).await,
        Route::WrongMethod => Ok(no_such_route(&shared, &parts, true)),
        Route::NotFound => Ok(no_such_route(&shared, &parts, false)),
    }
}

/// The API key of a request: what follows `Bearer ` in `Authorization`.
pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// `GET /_mock/stats`: [`MockStats`] and the lanes, as JSON.
fn stats_page(shared: &Shared) -> Response<Body> {
    #[derive(Serialize)]
    struct Page {
        #[serde(flatten)]
        stats: MockStats,
        lanes: Vec<LaneStats>,
    }
    let page = Page {
        stats: shared.counters.snapshot(),
        lanes: shared.limits.stats(),
    };
    let mut resp = Response::new(Body::from(serde_json::to_vec(&page).unwrap_or_default()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The Files + Batches API, which skips limits, faults and the override.
async fn batch_api(shared: &Shared, parts: Parts, incoming: Incoming) -> Response<Body> {
    let _guard = shared.counters.enter();
    let limit = shared.config.max_body_bytes.max(256 << 20);
    let body = axum::body::to_bytes(Body::new(incoming), limit)
        .await
        .unwrap_or_default();
    crate::batches::handle(shared, parts, body).await
}

/// 404 or 405 (`wrong_method`), unless the status override answers.
fn no_such_route(shared: &Shared, parts: &Parts, wrong_method: bool) -> Response<Body> {
    let _guard = shared.counters.enter();
    let lane = shared.limits.lane(api_key(&parts.headers), None);
    if let Some(ov) = shared.current_override() {
        return overridden(shared, lane, &ov);
    }
    shared.counters.bad_request.fetch_add(1, Relaxed);
    let (method, path) = (&parts.method, parts.uri.path());
    let (status, message) = if wrong_method {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Invalid method for URL ({method} {path})."),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
        )
    };
    let err = ApiError {
        status: status.as_u16(),
        message,
        kind: "invalid_request_error",
        param: None,
        code: None,
    };
    finish(shared, Reply::error(lane, &err))
}
