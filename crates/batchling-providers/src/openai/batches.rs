//! The client of OpenAI's Files + Batches API (docs/providers.md, "OpenAI:
//! Files and Batches API"): upload a batch input file, create, retrieve,
//! cancel and list batches, download result files; and [`BatchApi`] on top
//! of it, which is all `batchling submit` sees. Reading OpenAI's batch
//! output lines (docs/providers.md, "OpenAI: batch input and output lines")
//! into [`RequestOutcome`]s is [`read_result_line`].
//!
//! It reports what the server said, as a typed [`BatchApiError`];
//! [`classify::is_transient`](super::classify::is_transient) says whether a
//! retry can help, and the caller owns the retry loop. The key never
//! appears in an error: messages and transport errors are passed through
//! [`ApiKey::redact`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use batchling_core::Usage;
use batchling_core::output;
use batchling_core::usage::{BodyRead, read_body};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;

pub use crate::batch::{BatchApiError, BatchStatus};

use super::client::ClientConfig;
use super::headers;
use crate::ProviderError;
use crate::batch::{
    BatchApi, BatchCounts, BatchInfo, BatchInput, BatchLimits, BatchProblem, BatchResults, Lookup,
    NewBatch, OutcomeError, Refusal, RequestOutcome, ResultRefs, SizeCap,
};
use crate::http::Cut;
use crate::http::plain::oversize_message;
use crate::secret::ApiKey;
use batchling_core::{Endpoint, RequestLine};

/// The metadata key a batch is created with: [`NewBatch::tag`], naming its
/// part, so that [`BatchApi::find`] can find it.
pub const PART_METADATA_KEY: &str = "batchling_part";

#[derive(Debug, Clone, Default, Deserialize)]
struct ErrorList {
    #[serde(default)]
    data: Vec<BatchProblem>,
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
    pub request_counts: Option<BatchCounts>,
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
    pub fn errors(&self) -> &[BatchProblem] {
        self.errors.as_ref().map_or(&[], |e| &e.data)
    }

    /// A metadata value, when it is a string.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    /// The batch in the Batch API's neutral words.
    pub fn info(&self) -> BatchInfo {
        BatchInfo {
            id: self.id.clone(),
            status: self.status.clone(),
            counts: self.request_counts.unwrap_or_default(),
            results: ResultRefs {
                output: self.output_file_id.clone(),
                errors: self.error_file_id.clone(),
            },
            problems: self.errors().to_vec(),
        }
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

/// The cap on a result file's content (`GET /files/{id}/content`): files
/// hold up to 50,000 answers, so the response cap does not apply to them.
pub const MAX_RESULT_FILE_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// A client of one server's Files + Batches API.
#[derive(Debug, Clone)]
pub struct BatchClient {
    http: reqwest::Client,
    base: String,
    /// Added to every URL's query (Azure's `api-version=...`).
    query: Option<String>,
    key: Option<ApiKey>,
    /// The cap on an API object's body.
    max_body: u64,
}

static BOUNDARY_SEQ: AtomicU64 = AtomicU64::new(0);

impl BatchClient {
    /// Build the client from the same settings as the online client (base
    /// URL with `/v1`, key, extra headers, timeout per call).
    pub fn new(config: &ClientConfig) -> Result<Self, ProviderError> {
        Self::with_query(config, None)
    }

    /// As [`BatchClient::new`], with `query` (`name=value`, URL-safe) added
    /// to every URL: Azure's `api-version`.
    pub(crate) fn with_query(
        config: &ClientConfig,
        query: Option<String>,
    ) -> Result<Self, ProviderError> {
        crate::http::install_crypto();
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
            query,
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
        cap: (u64, &str, SizeCap),
    ) -> Result<Bytes, BatchApiError> {
        let mut resp = req.send().await.map_err(|e| self.transport(what, &e))?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = match crate::http::read_capped(&mut resp, cap.0).await {
            Ok(b) => b,
            Err(Cut::Http(e)) => return Err(self.transport(what, &e)),
            Err(Cut::Over(o)) => {
                return Err(BatchApiError::TooLarge {
                    what: what.to_owned(),
                    message: oversize_message(o, cap.1),
                    cap: cap.2,
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
    /// the response cap).
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Bytes, BatchApiError> {
        let cap = format!(
            "the {} response cap",
            crate::http::plain::size_text(self.max_body)
        );
        self.send_capped(what, req, (self.max_body, &cap, SizeCap::Answer))
            .await
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
        let mut url = format!("{}{path}", self.base);
        if let Some(q) = &self.query {
            url.push(if path.contains('?') { '&' } else { '?' });
            url.push_str(q);
        }
        url
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
            crate::http::plain::size_text(MAX_RESULT_FILE_BYTES)
        );
        self.send_capped(
            &format!("downloading file {id}"),
            req,
            (MAX_RESULT_FILE_BYTES, &cap, SizeCap::ResultFile),
        )
        .await
    }
}

impl BatchApi for BatchClient {
    async fn upload(&self, name: &str, requests: Bytes) -> Result<Option<String>, BatchApiError> {
        Ok(Some(self.upload_file(name, requests).await?.id))
    }

    async fn create(&self, batch: &NewBatch) -> Result<BatchInfo, BatchApiError> {
        // The Batches API reads its requests from a file only.
        let file_id = match &batch.input {
            BatchInput::File(id) => id.clone(),
            BatchInput::Inline(requests) => {
                let name = format!("batchling-{}.jsonl", batch.tag.replace(':', "-part-"));
                self.upload_file(&name, requests.clone()).await?.id
            }
        };
        let metadata = HashMap::from([(PART_METADATA_KEY.to_owned(), batch.tag.clone())]);
        let b = self
            .create_batch(&file_id, &batch.endpoint, &metadata)
            .await?;
        Ok(b.info())
    }

    async fn find(&self, lookup: &Lookup<'_>) -> Result<Option<BatchInfo>, BatchApiError> {
        let found = self
            .find_batch(PART_METADATA_KEY, lookup.tag, lookup.since_unix)
            .await?;
        Ok(found.as_ref().map(Batch::info))
    }

    async fn retrieve(&self, id: &str) -> Result<BatchInfo, BatchApiError> {
        Ok(self.retrieve_batch(id).await?.info())
    }

    async fn cancel(&self, id: &str) -> Result<Option<BatchInfo>, BatchApiError> {
        match self.cancel_batch(id).await {
            Ok(b) => Ok(Some(b.info())),
            // The batch ended meanwhile: there is nothing left to cancel.
            Err(e) if matches!(e.status(), Some(400 | 409)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn results(
        &self,
        batch: &BatchInfo,
        _endpoint: &str,
    ) -> Result<BatchResults, BatchApiError> {
        let mut results = BatchResults::default();
        let files = [&batch.results.output, &batch.results.errors];
        for id in files.into_iter().flatten() {
            let content = self.file_content(id).await?;
            read_result_file(&content, &mut results);
        }
        Ok(results)
    }

    fn is_transient(&self, error: &BatchApiError) -> bool {
        super::classify::is_transient(error)
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: MAX_BATCH_REQUESTS,
            max_bytes: MAX_BATCH_BYTES,
        }
    }

    /// Anthropic's Messages lines have no OpenAI batch endpoint.
    fn refuse(&self, line: &RequestLine) -> Option<Refusal> {
        (line.endpoint == Endpoint::Messages).then(|| Refusal {
            code: "invalid_url",
            message: format!(
                "line {}: \"url\" /v1/messages is Anthropic's Messages API, which OpenAI's Batch API does not serve; give --provider anthropic",
                line.line_no
            ),
        })
    }
}

/// Most requests in one OpenAI batch (embeddings: inputs).
pub const MAX_BATCH_REQUESTS: usize = 50_000;

/// Largest OpenAI batch input file: 200 MB.
pub const MAX_BATCH_BYTES: u64 = 200 * 1000 * 1000;

/// Add the lines of one result file (output or error file) to `results`.
pub fn read_result_file(content: &[u8], results: &mut BatchResults) {
    for raw in content.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match read_result_line(raw) {
            Some(outcome) => results.outcomes.push(outcome),
            None => results.unreadable += 1,
        }
    }
}

/// One line of a batch's output or error file: `{"id", "custom_id",
/// "response": {"status_code", "request_id", "body"}, "error"}`. A request
/// succeeded when `error` is null and its status is 2xx. `None` when the
/// line is not JSON or names no `custom_id`.
pub fn read_result_line(raw: &[u8]) -> Option<RequestOutcome> {
    let v = serde_json::from_slice::<Value>(raw).ok()?;
    let custom_id = v["custom_id"].as_str()?.to_owned();
    let status_code = v["response"]["status_code"]
        .as_u64()
        .map(|s| u16::try_from(s).unwrap_or(u16::MAX));
    let error = &v["error"];
    let body = &v["response"]["body"];
    let ok = error.is_null() && status_code.is_some_and(|s| (200..300).contains(&s));
    let (answer, usage) = if ok {
        let body = body.to_string();
        let usage = match read_body(body.as_bytes()) {
            BodyRead::Json(u) => u.unwrap_or_default(),
            BodyRead::NotJson => Usage::default(),
        };
        (Ok(Bytes::from(body)), usage)
    } else {
        // OpenAI's `error` is {code, message}; vLLM's may be a plain string.
        let message = error["message"]
            .as_str()
            .or_else(|| error.as_str())
            .or_else(|| body["error"]["message"].as_str())
            .map_or_else(
                || format!("HTTP {}", status_code.unwrap_or(0)),
                str::to_owned,
            );
        let code = error["code"].as_str().map(str::to_owned);
        (Err(OutcomeError { code, message }), Usage::default())
    };
    // A raw CR left inside the line by the upstream would split it for
    // text-mode readers.
    let mut line = Vec::with_capacity(raw.len() + 1);
    output::push_one_line(&mut line, raw);
    line.push(b'\n');
    Some(RequestOutcome {
        custom_id,
        status_code,
        answer,
        usage,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(file: &[u8]) -> BatchResults {
        let mut r = BatchResults::default();
        read_result_file(file, &mut r);
        r
    }

    #[test]
    fn result_lines_become_outcomes() {
        let file = br#"{"id":"r1","custom_id":"b","response":{"status_code":200,"request_id":"x","body":{"usage":{"prompt_tokens":7,"completion_tokens":2}}},"error":null}

not json
{"id":"r2","response":{"status_code":200}}
{"id":"r3","custom_id":"a","response":{"status_code":400,"request_id":"x","body":{"error":{"message":"bad"}}},"error":null}
{"id":"r4","custom_id":"c","response":null,"error":{"code":"batch_expired","message":"too late"}}
{"id":"r5","custom_id":"d","response":{"status_code":500},"error":"vLLM says no"}
{"id":"r6","custom_id":"e","response":{"status_code":502},"error":null}
"#;
        let r = outcomes(file);
        assert_eq!(r.unreadable, 2);
        let o: Vec<_> = r.outcomes.iter().map(|o| o.custom_id.as_str()).collect();
        assert_eq!(o, ["b", "a", "c", "d", "e"]);
        let b = &r.outcomes[0];
        assert!(b.succeeded());
        assert_eq!((b.usage.input, b.usage.output), (7, 2));
        assert_eq!(b.status_code, Some(200));
        assert!(b.line.starts_with(b"{\"id\":\"r1\"") && b.line.ends_with(b"}\n"));
        let err = |i: usize| r.outcomes[i].answer.clone().unwrap_err();
        assert_eq!(err(1).message, "bad");
        assert_eq!(err(2).code.as_deref(), Some("batch_expired"));
        assert_eq!(err(2).message, "too late");
        assert_eq!(err(3).message, "vLLM says no");
        assert_eq!(err(4).message, "HTTP 502");
        assert_eq!(r.outcomes[1].usage, Usage::default());
    }

    #[test]
    fn a_raw_cr_inside_a_line_does_not_split_it() {
        // JSON allows a CR between tokens.
        let r = outcomes(
            b"{\"custom_id\":\"a\",\r\"response\":{\"status_code\":200,\"body\":{}},\"error\":null}\r\n",
        );
        assert_eq!(r.outcomes.len(), 1);
        let line = &r.outcomes[0].line;
        assert!(
            !line.contains(&b'\r'),
            "{:?}",
            String::from_utf8_lossy(line)
        );
        assert!(line.ends_with(b"}\n"));
    }

    #[test]
    fn a_batch_reads_in_neutral_words() {
        let b: Batch = serde_json::from_value(serde_json::json!({
            "id": "batch_1", "status": "failed", "output_file_id": "file-o",
            "request_counts": {"total": 3, "completed": 1, "failed": 2},
            "errors": {"object": "list", "data": [{"code": "invalid_json_line", "line": 2}]},
        }))
        .unwrap();
        let info = b.info();
        assert_eq!(info.status, BatchStatus::Failed);
        assert_eq!(info.counts.failed, 2);
        assert_eq!(info.results.output.as_deref(), Some("file-o"));
        assert_eq!(info.results.errors, None);
        assert_eq!(info.problems[0].line, Some(2));
    }
}
