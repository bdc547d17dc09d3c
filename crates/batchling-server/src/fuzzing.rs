//! Entry points for the fuzz targets (`crates/batchling-fuzz`): client
//! bytes driven through the real router in-process, no socket. Not API.
//!
//! One server state per process, built on first use in a fresh directory
//! under the system temp dir (`TMPDIR`; point it at a tmpfs when fuzzing:
//! the metadata database syncs every write). Auth is off and the one
//! upstream is a closed loopback port, so a batch that gets created fails
//! fast and sends nothing anywhere. The directory outlives the process
//! (statics are never dropped) unless [`remove_data_dir`] is called.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::config::UpstreamConfig;
use crate::meta::{FileRow, MetaDb};
use crate::runner::{Runner, RunnerConfig};
use crate::upstream::UpstreamClient;

/// The boundary [`upload`] declares in its `Content-Type`.
pub const BOUNDARY: &str = "fuzzboundary";

/// In a [`batch_request`] body, replaced by the id of a stored
/// `purpose=batch` file (one valid request line), so a fuzzer can reach the
/// paths past the file lookup.
pub const BATCH_FILE_PLACEHOLDER: &str = "FILE_BATCH";
/// Likewise, the id of a stored file whose purpose is not `batch`.
pub const OTHER_FILE_PLACEHOLDER: &str = "FILE_OTHER";
const BATCH_FILE_ID: &str = "file-fuzzbatchinput";
const OTHER_FILE_ID: &str = "file-fuzzuserdata";

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    dir: PathBuf,
    // Held so the runner's tasks are never told to stop.
    _stop: CancellationToken,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

/// Set-up failures are the fuzz set-up's own: they abort the fuzz run, not
/// a finding.
fn harness() -> &'static Mutex<Harness> {
    HARNESS.get_or_init(|| Mutex::new(build().unwrap_or_else(|e| panic!("fuzz harness: {e}"))))
}

fn build() -> Result<Harness, String> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("batchling-fuzz-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["files", "batches", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let meta = Arc::new(MetaDb::open(&dir.join("meta.sqlite")).map_err(|e| e.to_string())?);
    let line = br#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}"#;
    for (id, purpose) in [(BATCH_FILE_ID, "batch"), (OTHER_FILE_ID, "user_data")] {
        std::fs::write(crate::files::content_path(&dir, id), line).map_err(|e| e.to_string())?;
        meta.insert_file(&FileRow {
            id: id.into(),
            owner: "anonymous".into(),
            filename: "in.jsonl".into(),
            purpose: purpose.into(),
            bytes: line.len() as u64,
            created_at: crate::unix_now(),
            expires_at: None,
        })
        .map_err(|e| e.to_string())?;
    }
    let upstream = UpstreamClient::new(UpstreamConfig::new("closed", "http://127.0.0.1:9/v1"))
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let runner = Arc::new(Runner::new(
        meta.clone(),
        stop.child_token(),
        RunnerConfig {
            data_dir: dir.clone(),
            upstreams: vec![upstream],
            routed: None,
            completion_window: std::time::Duration::from_secs(24 * 3600),
            max_attempts: 1,
            max_running: 2,
            keep_journals: false,
        },
    ));
    let state_dir = dir.clone();
    let state = Arc::new(AppState {
        meta,
        runner,
        data_dir: dir,
        max_upload_bytes: 1 << 20,
        limits: Arc::new(crate::config::HttpLimits::default()),
        owners: None,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Harness {
        runtime,
        router: api::router(state),
        dir: state_dir,
        _stop: stop,
    })
}

/// Remove the harness's data directory, if one was made; for a test that
/// has sent its last request (later requests fail with 500s).
pub fn remove_data_dir() {
    if let Some(h) = HARNESS.get() {
        let h = h.lock().unwrap_or_else(|p| p.into_inner());
        let _ = std::fs::remove_dir_all(&h.dir);
    }
}

/// Send one request through the router; the answer's status code. The body
/// is read to its end, as a client would.
fn send(req: Request<Body>) -> u16 {
    let h = harness().lock().unwrap_or_else(|p| p.into_inner());
    let router = h.router.clone();
    h.runtime.block_on(async move {
        let Ok(resp) = router.oneshot(api::trim_trailing_slash(req)).await;
        let status = resp.status().as_u16();
        let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
        status
    })
}

/// `POST /v1/files` with `body` as a `multipart/form-data` body (boundary
/// [`BOUNDARY`]); the status code.
pub fn upload(body: &[u8]) -> u16 {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/files")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body.to_vec()));
    req.map_or(0, send)
}

/// `POST /v1/batches` with `body` as its JSON body (placeholders replaced,
/// see [`BATCH_FILE_PLACEHOLDER`]); the status code.
pub fn batch_request(body: &[u8]) -> u16 {
    let body = replace(body, BATCH_FILE_PLACEHOLDER, BATCH_FILE_ID);
    let body = replace(&body, OTHER_FILE_PLACEHOLDER, OTHER_FILE_ID);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/batches")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body));
    req.map_or(0, send)
}

/// `GET` of `path_and_query` (e.g. `/v1/batches?limit=3`); the status code,
/// or 0 when it is not a valid request target.
pub fn get(path_and_query: &[u8]) -> u16 {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path_and_query)
        .body(Body::empty());
    req.map_or(0, send)
}

fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
