//! The HTTP surface: routing, client authentication, request ids, logs and
//! OpenAI's error envelope. The handlers are in `files` and `batches`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ring::digest;

use crate::meta::MetaDb;
use crate::runner::Runner;
use crate::{batches, files, metrics};

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) meta: Arc<MetaDb>,
    pub(crate) runner: Arc<Runner>,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) max_upload_bytes: u64,
    pub(crate) limits: Arc<crate::config::HttpLimits>,
    /// Owners (key digests) allowed in; `None` when auth is off.
    pub(crate) owners: Option<HashSet<String>>,
}

pub(crate) type Shared = State<Arc<AppState>>;

/// Who is asking: the digest of their key (keys themselves are never
/// stored). With auth off, everyone is the one owner `anonymous`.
#[derive(Debug, Clone)]
pub(crate) struct Owner(pub(crate) String);

/// The owner name for a client key: a SHA-256 digest, so the metadata never
/// holds a key and a stolen database reveals none.
pub(crate) fn owner_of(key: &str) -> String {
    let d = digest::digest(
        &digest::SHA256,
        format!("batchling-owner\0{key}").as_bytes(),
    );
    batchling_core::hex::hex(&d.as_ref()[..16])
}

/// An error in OpenAI's envelope:
/// `{"error":{"message","type","param","code"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub(crate) fn not_found(what: &str, id: &str, param: &'static str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("No such {what} object: {id}"),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
        }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub(crate) fn too_large(cap: u64) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("File too large: this server accepts files of at most {cap} bytes."),
            kind: "invalid_request_error",
            param: Some("file"),
            code: Some("file_too_large"),
        }
    }

    /// A request body over the server's cap for any body.
    pub(crate) fn body_too_large(cap: u64) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Request body too large: this server accepts bodies of at most {cap} bytes."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// A JSON body over its cap.
    pub(crate) fn json_too_large(cap: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Request body too large: this endpoint accepts JSON bodies of at most {cap} bytes."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// A body that did not arrive in time.
    pub(crate) fn body_timeout(whole: std::time::Duration, idle: std::time::Duration) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "The request body did not arrive in time: this server waits at most {} s for a whole body and {} s for each piece of it.",
                whole.as_secs_f64(),
                idle.as_secs_f64()
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
        }
    }

    fn unauthorized(message: &str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// A failure of ours: logged in full, answered without details.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "The server had an error while processing your request.".into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub(crate) fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

impl From<crate::meta::MetaError> for ApiError {
    fn from(e: crate::meta::MetaError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut r = (self.status, axum::Json(body)).into_response();
        // The official SDKs retry 409 and 5xx; none of our 4xx answers gets
        // better by retrying.
        if self.status.is_client_error() {
            r.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        r
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Read a JSON request body of at most `cap` bytes (413 beyond, before
/// reading anything when its length is announced).
pub(crate) async fn json_body(
    mut body: axum::body::Body,
    cap: usize,
) -> ApiResult<serde_json::Value> {
    use http_body_util::BodyExt;
    if axum::body::HttpBody::size_hint(&body).lower() > cap as u64 {
        return Err(ApiError::json_too_large(cap));
    }
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("cannot read the request body: {e}"), None)
        })?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > cap {
                return Err(ApiError::json_too_large(cap));
            }
            buf.extend_from_slice(data);
        }
    }
    // serde_json stops at 128 levels of nesting, so a deep body is a 400,
    // never a stack overflow.
    serde_json::from_slice(&buf).map_err(|e| {
        ApiError::bad_request(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new unguessable file id: `file-` and 24 base62 characters (143 bits
/// from the OS-seeded CSPRNG).
pub(crate) fn new_file_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect();
    format!("file-{tail}")
}

/// A new unguessable batch id: `batch_` and 32 hex digits.
pub(crate) fn new_batch_id() -> String {
    format!("batch_{:032x}", rand::random::<u128>())
}

/// Whether `id` could be one of ours: the prefix and only ASCII letters and
/// digits after it. Anything else (dots, slashes, ...) is never looked up.
pub(crate) fn plausible_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|t| {
        !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

async fn authenticate(State(st): Shared, mut req: Request, next: Next) -> Response {
    let owner = match &st.owners {
        None => "anonymous".to_owned(),
        Some(owners) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|k| !k.is_empty());
            let Some(key) = given else {
                return ApiError::unauthorized(
                    "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
                )
                .into_response();
            };
            let owner = owner_of(key);
            if !owners.contains(&owner) {
                return ApiError::unauthorized("Incorrect API key provided.").into_response();
            }
            owner
        }
    };
    req.extensions_mut().insert(Owner(owner));
    next.run(req).await
}

/// An `x-request-id` on every answer, and one log line per request (never a
/// header: the Authorization header holds a key).
async fn trace(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = format!("req_{:024x}", rand::random::<u128>() >> 32);
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id = %id,
        %method,
        path = %path,
        status,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    resp
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("Invalid URL ({} {})", req.method(), req.uri().path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
    }
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "Method {} is not allowed for {}",
            req.method(),
            req.uri().path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("method_not_allowed"),
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Room in an upload's body for the form around the file: a few short text
/// parts and their headers.
pub(crate) const FORM_ROOM: u64 = 64 << 10;

/// The whole API. Trailing slashes are trimmed before routing, so
/// `/v1/files/` works as the SDKs and curl users expect.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let body_limits = crate::http::BodyLimits {
        http: state.limits.clone(),
        max_body_bytes: state.max_upload_bytes.saturating_add(FORM_ROOM),
        max_upload_bytes: state.max_upload_bytes,
    };
    let v1 = Router::new()
        .route(
            "/v1/files",
            post(files::upload)
                .layer(DefaultBodyLimit::disable())
                .get(files::list),
        )
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
        .merge(v1)
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            body_limits,
            crate::http::guard_body,
        ))
        .layer(middleware::from_fn(trace))
        .with_state(state)
}

/// Trim one trailing slash from the path (not from `/`).
pub(crate) fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let new = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = new.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_use() {
        let f = new_file_id();
        assert!(plausible_id(&f, "file-"), "{f}");
        assert_eq!(f.len(), 29);
        assert!(plausible_id(&new_batch_id(), "batch_"));
        for bad in ["file-../x", "file-", "file-a/b", "batch_1", "file-a.b", "x"] {
            assert!(!plausible_id(bad, "file-"), "{bad}");
        }
        assert_ne!(new_file_id(), new_file_id());
    }

    #[test]
    fn owners_are_digests_not_keys() {
        let o = owner_of("sk-secret");
        assert_eq!(o.len(), 32);
        assert!(!o.contains("secret"));
        assert_eq!(o, owner_of("sk-secret"));
        assert_ne!(o, owner_of("sk-secreT"));
    }
}
