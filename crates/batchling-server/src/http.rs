//! The HTTP/1.1 connections under the API: bounds on heads and bodies, and
//! answers that reach clients who are still sending.
//!
//! - Heads: a size and count cap (431 beyond, from hyper) and a read timeout
//!   that also closes kept-alive connections left idle.
//! - Bodies: a deadline for the whole body and one between pieces (408), and
//!   a byte cap for any body (413).
//! - Early answers: an answer given before the body was read (401, 404, 413,
//!   ...) says `Connection: close`, and the rest of the body is then read and
//!   discarded, up to a bound, before the connection closes. Closing with
//!   unread bytes makes the kernel reset the connection, and a client still
//!   writing its upload then sees a broken pipe instead of the answer (the
//!   Node SDK reports a connection error, not the 401). nginx's "lingering
//!   close" does the same.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::config::HttpLimits;

/// How long connections may finish their requests after a shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accept connections until `stop`, serving each with `app` under `limits`.
/// Then let requests in flight finish, for a bounded time.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<HttpLimits>,
    stop: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(connection(tcp, app.clone(), limits.clone(), stop.clone()));
                }
                // Out of file descriptors, most likely: wait for some to be
                // freed rather than spin.
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "closing connections still busy after the shutdown grace"
        );
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    app: Router,
    limits: Arc<HttpLimits>,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        // Trailing slashes go before routing, so `/v1/files/` is `/v1/files`.
        let req = crate::api::trim_trailing_slash(req.map(Body::new));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// What a request body's guard knows once the handler is done with it.
#[derive(Debug, Default)]
struct Slot {
    /// The body itself, kept here so that it outlives the handler.
    body: Option<Body>,
    read: u64,
    timed_out: bool,
    too_large: bool,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The body a handler reads: the real one under the deadlines and the cap.
struct Guarded {
    slot: Arc<Mutex<Slot>>,
    cap: u64,
    idle_for: Duration,
    idle: Pin<Box<Sleep>>,
    whole: Pin<Box<Sleep>>,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let mut slot = lock(&this.slot);
        if slot.timed_out || slot.too_large {
            return Poll::Ready(None);
        }
        let Some(body) = slot.body.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
            if let Some(Ok(f)) = &frame
                && let Some(data) = f.data_ref()
            {
                slot.read += data.len() as u64;
                if slot.read > this.cap {
                    slot.too_large = true;
                    return Poll::Ready(Some(Err(axum::Error::new("request body too large"))));
                }
            }
            this.idle.as_mut().reset(Instant::now() + this.idle_for);
            return Poll::Ready(frame);
        }
        if this.idle.as_mut().poll(cx).is_ready() || this.whole.as_mut().poll(cx).is_ready() {
            slot.timed_out = true;
            return Poll::Ready(Some(Err(axum::Error::new("request body timed out"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.slot);
        slot.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.slot)
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

/// The limits the body guard applies.
#[derive(Debug, Clone)]
pub(crate) struct BodyLimits {
    pub(crate) http: Arc<HttpLimits>,
    /// No request body may be longer (the upload cap and room for the form).
    pub(crate) max_body_bytes: u64,
    /// The upload cap, named in the 413 for an upload's body.
    pub(crate) max_upload_bytes: u64,
}

/// Middleware: the request body under the deadlines and the cap, a 408 or
/// 413 when they are hit, and the lingering close after an early answer.
pub(crate) async fn guard_body(
    State(limits): State<BodyLimits>,
    req: Request,
    next: Next,
) -> Response {
    let expects_continue = req.headers().contains_key(header::EXPECT);
    // Only an upload's body can be this long; say so in its terms (an
    // unannounced length reaches this cap before the file part's own).
    let upload = req.uri().path() == "/v1/files";
    let (parts, body) = req.into_parts();
    let slot = Arc::new(Mutex::new(Slot {
        body: Some(body),
        ..Slot::default()
    }));
    let now = Instant::now();
    let guarded = Guarded {
        slot: slot.clone(),
        cap: limits.max_body_bytes,
        idle_for: limits.http.body_idle_timeout,
        idle: Box::pin(tokio::time::sleep_until(
            now + limits.http.body_idle_timeout,
        )),
        whole: Box::pin(tokio::time::sleep_until(now + limits.http.body_timeout)),
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::new(guarded)))
        .await;

    let (body, timed_out, too_large) = {
        let mut s = lock(&slot);
        (s.body.take(), s.timed_out, s.too_large)
    };
    if timed_out {
        resp = ApiError::body_timeout(limits.http.body_timeout, limits.http.body_idle_timeout)
            .into_response();
    } else if too_large && upload {
        resp = ApiError::too_large(limits.max_upload_bytes).into_response();
    } else if too_large {
        resp = ApiError::body_too_large(limits.max_body_bytes).into_response();
    }
    let unread = body.filter(|b| !b.is_end_stream());
    if let Some(body) = unread {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        // A client waiting for `100 Continue` sends no body after a final
        // answer; a slow one is not worth more waiting.
        if !(expects_continue || timed_out) {
            tokio::spawn(linger(body, limits.http.clone()));
        }
    }
    resp
}

/// Read and discard the rest of a body, within the linger bounds; dropping
/// it then lets the connection close.
async fn linger(mut body: Body, limits: Arc<HttpLimits>) {
    let deadline = tokio::time::sleep(limits.linger_time);
    tokio::pin!(deadline);
    let mut read = 0u64;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            frame = body.frame() => match frame {
                Some(Ok(f)) => {
                    read += f.data_ref().map_or(0, |d| d.len() as u64);
                    if read > limits.linger_bytes {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}
