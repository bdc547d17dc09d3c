//! The client of OpenAI's Files + Batches API (provider-apis.md §3-4):
//! upload a batch input file, create, retrieve, cancel and list batches,
//! download result files.
//!
//! It reports what the server said, as a typed [`BatchApiError`] that knows
//! whether a retry can help ([`BatchApiError::is_transient`]); the caller
//! owns the retry loop. The key never appears in an error: messages and
//! transport errors are passed through [`ApiKey::redact`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;

pub use batchling_core::batch::BatchStatus;

use super::client::{ClientConfig, Cut};
use super::headers;
use super::plain::oversize_message;
use crate::ProviderError;
use crate::secret::ApiKey;

/// `Batch.request_counts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct RequestCounts {
    /// Requests in the batch.
    #[serde(default)]
    pub total: u64,
    /// Succeeded so far.
    #[serde(default)]
    pub completed: u64,
    /// Failed so far.
    #[serde(default)]
    pub failed: u64,
}

/// One `BatchError` of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchErrorItem {
    /// Machine-readable code.
    #[serde(default)]
    pub code: Option<String>,
    /// For people.
    #[serde(default)]
    pub message: Option<String>,
    /// The offending parameter.
    #[serde(default)]
    pub param: Option<String>,
    /// 1-based line of the batch's input file.
    #[serde(default)]
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorList {
    #[serde(default)]
    data: Vec<BatchErrorItem>,
}

/// A batch, as far as batchling reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Batch {
    /// `batch_...`.
    pub id: String,
    /// Where it stands.
    pub status: BatchStatus,
    /// The input file.
    #[serde(default)]
    pub input_file_id: Option<String>,
    /// Successes, once finished.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// Failures, once finished.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Progress.
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    #[serde(default)]
    errors: Option<ErrorList>,
    /// Create-time metadata.
    #[serde(default)]
    pub metadata: Option<HashMap<String, Value>>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<u64>,
}

impl Batch {
    /// Validation errors of a failed batch.
    pub fn errors(&self) -> &[BatchErrorItem] {
        self.errors.as_ref().map_or(&[], |e| &e.data)
    }

    /// A metadata value, when it is a string.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

/// An uploaded file.
#[derive(Debug, Clone, Deserialize)]
pub struct FileObject {
    /// `file-...`.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: Option<bool>,
}

/// A Files or Batches API call that did not work. Messages never contain
/// the API key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BatchApiError {
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        /// The call, e.g. "uploading part 3".
        what: String,
        /// The HTTP status.
        status: u16,
        /// `error.message` of the envelope, or the body's start.
        message: String,
        /// The server-given wait, if any.
        retry_after: Option<Duration>,
        /// `x-should-retry`, if sent.
        should_retry: Option<bool>,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("{what}: {message}")]
    Transport {
        /// The call.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// An answer that is not what the API defines.
    #[error("{what}: the server's answer is not a valid API object ({message})")]
    Decode {
        /// The call.
        what: String,
        /// What the parser said.
        message: String,
    },
    /// An answer over the cap (`--max-response-mb` for API objects,
    /// [`MAX_RESULT_FILE_BYTES`] for a file's content): cut off, not
    /// retried.
    #[error("{what}: {message}")]
    TooLarge {
        /// The call.
        what: String,
        /// Its size, and the cap.
        message: String,
    },
}

/// The cap on a result file's content (`GET /files/{id}/content`): files
/// hold up to 50,000 answers, so `--max-response-mb` does not apply to them.
pub const MAX_RESULT_FILE_BYTES: u64 = 16 * 1024 * 1024 * 1024;

impl BatchApiError {
    /// Whether trying again can help: 408, 409, 429, 5xx, no answer
    /// (`x-should-retry` overrides the status rule, as in the SDK).
    pub fn is_transient(&self) -> bool {
        match self {
            BatchApiError::Status {
                status,
                should_retry,
                ..
            } => should_retry.unwrap_or(matches!(status, 408 | 409 | 429 | 500..)),
            BatchApiError::Transport { .. } => true,
            BatchApiError::Decode { .. } | BatchApiError::TooLarge { .. } => false,
        }
    }

    /// The server's requested wait before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BatchApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A 401 or 403: the key is wrong or lacks access.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            BatchApiError::Status {
                status: 401 | 403,
                ..
            }
        )
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            BatchApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one server's Files + Batches API.
#[derive(Debug, Clone)]
pub struct BatchClient {
    http: reqwest::Client,
    base: String,
    key: Option<ApiKey>,
    /// The cap on an API object's body.
    max_body: u64,
}

static BOUNDARY_SEQ: AtomicU64 = AtomicU64::new(0);

impl BatchClient {
    /// Build the client from the same settings as the online client (base
    /// URL with `/v1`, key, extra headers, timeout per call).
    pub fn new(config: &ClientConfig) -> Result<Self, ProviderError> {
        super::client::install_crypto();
        let (base, _, default_headers) = super::client::prepare(config)?;
        let http = reqwest::Client::builder()
            .default_headers(default_headers)
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .http1_only()
            .user_agent(concat!("batchling/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Client(e.to_string()))?;
        Ok(BatchClient {
            http,
            base,
            key: config.api_key.clone(),
            max_body: config.max_response_bytes,
        })
    }

    fn redact(&self, text: &str) -> String {
        crate::secret::redact(self.key.as_ref(), text)
    }

    fn transport(&self, what: &str, e: &reqwest::Error) -> BatchApiError {
        BatchApiError::Transport {
            what: what.to_owned(),
            message: self.redact(&super::error_chain(e)),
        }
    }

    /// Send, and return the body of a 2xx answer (at most `cap` bytes).
    async fn send_capped(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        cap: (u64, &str),
    ) -> Result<Bytes, BatchApiError> {
        let mut resp = req.send().await.map_err(|e| self.transport(what, &e))?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = match super::client::read_capped(&mut resp, cap.0).await {
            Ok(b) => b,
            Err(Cut::Http(e)) => return Err(self.transport(what, &e)),
            Err(Cut::Over(o)) => {
                return Err(BatchApiError::TooLarge {
                    what: what.to_owned(),
                    message: oversize_message(o, cap.1),
                });
            }
            Err(Cut::NoMemory(n)) => {
                return Err(BatchApiError::Transport {
                    what: what.to_owned(),
                    message: format!("cannot set aside memory for {n} more bytes of the answer"),
                });
            }
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        Err(BatchApiError::Status {
            what: what.to_owned(),
            status,
            message: self.redact(&message),
            retry_after: headers::retry_after(&h),
            should_retry: headers::should_retry(&h),
        })
    }

    /// Send, and return the body of a 2xx answer (an API object, within
    /// `--max-response-mb`).
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Bytes, BatchApiError> {
        let cap = format!(
            "the {} cap (--max-response-mb)",
            super::plain::size_text(self.max_body)
        );
        self.send_capped(what, req, (self.max_body, &cap)).await
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, BatchApiError> {
        let body = self.send(what, req).await?;
        serde_json::from_slice(&body).map_err(|e| BatchApiError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /files` with `purpose=batch`, as multipart/form-data.
    pub async fn upload_file(
        &self,
        filename: &str,
        content: Bytes,
    ) -> Result<FileObject, BatchApiError> {
        let what = format!("uploading {filename}");
        let boundary = loop {
            let nanos = batchling_core::clock::unix_nanos();
            let b = format!(
                "batchling-{nanos:x}-{:x}",
                BOUNDARY_SEQ.fetch_add(1, Relaxed)
            );
            if !content.windows(b.len()).any(|w| w == b.as_bytes()) {
                break b;
            }
        };
        let mut body = Vec::with_capacity(content.len() + 512);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                 Content-Type: application/jsonl\r\n\r\n",
                filename.replace('"', "_")
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = self
            .http
            .post(self.url("/files"))
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        self.json(&what, req).await
    }

    /// `POST /batches` with `completion_window: "24h"` and `metadata`.
    pub async fn create_batch(
        &self,
        input_file_id: &str,
        endpoint: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Batch, BatchApiError> {
        let body = serde_json::json!({
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": metadata,
        });
        let req = self
            .http
            .post(self.url("/batches"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.json(&format!("creating a batch for {input_file_id}"), req)
            .await
    }

    /// `GET /batches/{id}`.
    pub async fn retrieve_batch(&self, id: &str) -> Result<Batch, BatchApiError> {
        let req = self.http.get(self.url(&format!("/batches/{id}")));
        self.json(&format!("checking batch {id}"), req).await
    }

    /// `POST /batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: &str) -> Result<Batch, BatchApiError> {
        let req = self.http.post(self.url(&format!("/batches/{id}/cancel")));
        self.json(&format!("cancelling batch {id}"), req).await
    }

    /// One page of `GET /batches` (newest first): the batches and whether
    /// more follow.
    pub async fn list_batches(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Batch>, bool), BatchApiError> {
        // Batch ids are URL-safe ([A-Za-z0-9_]), so no encoding is needed.
        let url = match after {
            Some(a) => self.url(&format!("/batches?limit={limit}&after={a}")),
            None => self.url(&format!("/batches?limit={limit}")),
        };
        let req = self.http.get(url);
        let page: Page<Batch> = self.json("listing batches", req).await?;
        // As the SDK does: a next page exists only if this one is not empty
        // and `has_more` is not false.
        let more = !page.data.is_empty() && page.has_more != Some(false);
        Ok((page.data, more))
    }

    /// Find a batch whose metadata holds `key: value`, walking the list
    /// newest first and stopping at batches created before `since_unix`
    /// (with a minute of slack for clock skew).
    pub async fn find_batch(
        &self,
        key: &str,
        value: &str,
        since_unix: u64,
    ) -> Result<Option<Batch>, BatchApiError> {
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self.list_batches(after.as_deref(), 100).await?;
            let mut older = false;
            for b in &page {
                if b.metadata_str(key) == Some(value) {
                    return Ok(Some(b.clone()));
                }
                older |= b.created_at.is_some_and(|t| t + 60 < since_unix);
            }
            if !more || older {
                return Ok(None);
            }
            after = page.last().map(|b| b.id.clone());
        }
    }

    /// `GET /files/{id}/content`.
    pub async fn file_content(&self, id: &str) -> Result<Bytes, BatchApiError> {
        let req = self
            .http
            .get(self.url(&format!("/files/{id}/content")))
            .header("accept", "application/binary");
        let cap = format!(
            "the {} cap on a result file",
            super::plain::size_text(MAX_RESULT_FILE_BYTES)
        );
        self.send_capped(
            &format!("downloading file {id}"),
            req,
            (MAX_RESULT_FILE_BYTES, &cap),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_told_apart() {
        let status = |status, should_retry| BatchApiError::Status {
            what: "x".into(),
            status,
            message: String::new(),
            retry_after: None,
            should_retry,
        };
        assert!(status(429, None).is_transient());
        assert!(status(503, None).is_transient());
        assert!(!status(400, None).is_transient());
        assert!(!status(401, None).is_transient());
        assert!(status(401, None).is_auth());
        assert!(!status(500, Some(false)).is_transient());
    }
}
