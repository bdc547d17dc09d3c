//! The Batch API boundary: what `batchling submit` asks of a provider's
//! batch service, in words no provider owns.
//!
//! A *part* is a slice of the input that becomes one batch. Its requests
//! are given as batchling request lines (`{"custom_id", "method", "url",
//! "body"}`, one per line); a provider turns them into its own shape. The
//! engine drives [`BatchApi`] and never sees a wire format:
//!
//! 1. [`BatchApi::upload`] the part's requests (OpenAI: a file of the Files
//!    API); an API that takes requests inline in the create call uploads
//!    nothing and says so.
//! 2. [`BatchApi::create`] its batch, tagged so that [`BatchApi::find`] can
//!    tell it was made for this part.
//! 3. [`BatchApi::retrieve`] it until its status is terminal;
//!    [`BatchApi::cancel`] it if time runs out.
//! 4. [`BatchApi::results`]: one [`RequestOutcome`] per result the server
//!    has, which the engine joins on `custom_id`.
//!
//! # Contract
//! - Every call is one attempt: no method retries. A failed call is a
//!   [`BatchApiError`]; [`BatchApi::is_transient`] says whether trying again
//!   can help, and the caller owns the retry loop (and its backoff, honouring
//!   [`BatchApiError::retry_after`]).
//! - `upload`, `retrieve`, `find` and `results` have no effect a retry could
//!   double: an upload repeated makes a second file, which costs nothing.
//! - `create` is **not** idempotent: a create whose answer was lost may have
//!   made a batch. Before creating again, the caller asks [`BatchApi::find`]
//!   for the part ([`Lookup`]); an implementation must find a batch it
//!   created for it if its API lets it (OpenAI: the tag in metadata;
//!   Anthropic, whose batches carry no metadata: the request count and the
//!   creation time, see `anthropic::batches`), and may return `Ok(None)`
//!   only if its API cannot list batches by anything the caller gave (then
//!   a lost answer can cost a second batch).
//! - `cancel` of a batch that already ended is `Ok(None)`, not an error.
//! - The API key never appears in an error's text.

use std::future::Future;
use std::time::Duration;

use batchling_core::Usage;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use batchling_core::batch::BatchStatus;

/// The Batch API of one provider, as `batchling submit` drives it (see the
/// module docs for the contract).
pub trait BatchApi: Send + Sync {
    /// Make a part's requests (batchling request lines, JSONL) available to
    /// a create. Returns the uploaded file's id, or `None` when this API
    /// takes requests inline ([`BatchInput::Inline`]) and nothing was sent.
    fn upload(
        &self,
        name: &str,
        requests: Bytes,
    ) -> impl Future<Output = Result<Option<String>, BatchApiError>> + Send;

    /// Create one batch of a part's requests.
    fn create(
        &self,
        batch: &NewBatch,
    ) -> impl Future<Output = Result<BatchInfo, BatchApiError>> + Send;

    /// The batch created for a part ([`Lookup`]), if there is one.
    fn find(
        &self,
        lookup: &Lookup<'_>,
    ) -> impl Future<Output = Result<Option<BatchInfo>, BatchApiError>> + Send;

    /// Where a batch stands now.
    fn retrieve(&self, id: &str) -> impl Future<Output = Result<BatchInfo, BatchApiError>> + Send;

    /// Ask the server to cancel a batch; `None` when it had already ended.
    fn cancel(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<BatchInfo>, BatchApiError>> + Send;

    /// The results of an ended batch, read from where `batch.results`
    /// says, in the order the server gives them. `endpoint` is the part's
    /// ([`NewBatch::endpoint`]): an API that translates requests translates
    /// their answers back by it.
    fn results(
        &self,
        batch: &BatchInfo,
        endpoint: &str,
    ) -> impl Future<Output = Result<BatchResults, BatchApiError>> + Send;

    /// Whether trying a failed call again can help (this provider's
    /// classifier decides).
    fn is_transient(&self, error: &BatchApiError) -> bool;

    /// The most one batch of this API may hold; `submit` cuts its parts
    /// at these (or at the user's smaller limits).
    fn limits(&self) -> BatchLimits;

    /// Whether this API cannot take a (valid) request line at all: its
    /// endpoint has no batch equivalent here, its id is not one the API
    /// accepts, its body cannot be translated. Such a line fails alone,
    /// before anything is sent, with the returned reason.
    fn refuse(&self, line: &batchling_core::RequestLine) -> Option<Refusal> {
        let _ = line;
        None
    }

    /// The settings of this client that change what a part's requests
    /// become on the server (Anthropic: how chat lines are translated), as
    /// text; `None` (the default) when nothing does. `submit` records them
    /// in its journal and refuses to go on with other ones: a part must be
    /// created, and its answers read, the way it was planned.
    fn settings(&self) -> Option<String> {
        None
    }

    /// Whether this API may change some requests of a part of `endpoint`
    /// to take them (a lenient translation leaves fields out), so that
    /// [`BatchApi::add_warnings`] wants the part's requests once its
    /// results are in. `false` (the default): they are not rebuilt.
    fn warns_on(&self, endpoint: &str) -> bool {
        let _ = endpoint;
        false
    }

    /// Join to each answered outcome's line what its request lost on the
    /// way, given the part's requests as they were created (batchling
    /// request lines, JSONL), as `run` shows them in its answers. Returns
    /// how many warnings the lines carry now.
    fn add_warnings(&self, requests: &[u8], results: &mut BatchResults) -> u64 {
        let _ = (requests, results);
        0
    }
}

/// The most one batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Requests (OpenAI counts an embeddings input array's entries).
    pub max_requests: usize,
    /// Bytes of the part's requests as batchling request lines.
    pub max_bytes: u64,
}

/// Why an API cannot take a request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error file's `error.code`, e.g. `invalid_url`.
    pub code: &'static str,
    /// For people, naming the field.
    pub message: String,
}

/// What [`BatchApi::find`] looks for: the batch created for one part.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// The part's tag ([`NewBatch::tag`]).
    pub tag: &'a str,
    /// Unix seconds before the part's first create attempt: a batch
    /// created earlier is not the part's (an implementation allows for
    /// clock skew).
    pub since_unix: u64,
    /// The part's number of requests.
    pub requests: u64,
    /// Batches already known to be other parts' (their ids).
    pub known: &'a [String],
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Its requests.
    pub input: BatchInput,
    /// The endpoint all of them go to, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// Names the part, unique per journal and part; [`BatchApi::find`]
    /// looks batches up by it.
    pub tag: String,
    /// How many requests the part has.
    pub requests: u64,
}

/// Where a batch's requests are.
#[derive(Debug, Clone)]
pub enum BatchInput {
    /// Uploaded, under this file id ([`BatchApi::upload`] returned it).
    File(String),
    /// Given in the create call: batchling request lines, JSONL.
    Inline(Bytes),
}

/// A batch, as far as `submit` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// The server's id.
    pub id: String,
    /// Where it stands.
    pub status: BatchStatus,
    /// Requests so far.
    pub counts: BatchCounts,
    /// Where its results are once it ended: opaque to the caller, read by
    /// [`BatchApi::results`] (OpenAI: the output and error file ids).
    pub results: ResultRefs,
    /// Why the batch as a whole failed (a failed validation), if it did.
    pub problems: Vec<BatchProblem>,
}

/// Progress counts of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct BatchCounts {
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

/// Where an ended batch's results are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRefs {
    /// The successes (or all results, for an API with one stream).
    pub output: Option<String>,
    /// The failures, if the API keeps them apart.
    pub errors: Option<String>,
}

/// One reason a batch failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProblem {
    /// Machine-readable code.
    #[serde(default)]
    pub code: Option<String>,
    /// For people.
    #[serde(default)]
    pub message: Option<String>,
    /// The offending parameter.
    #[serde(default)]
    pub param: Option<String>,
    /// 1-based line of the part's requests it is about.
    #[serde(default)]
    pub line: Option<u64>,
}

/// What the server gave back for an ended batch.
#[derive(Debug, Clone, Default)]
pub struct BatchResults {
    /// One per result line that names a request, in the server's order
    /// (an id may repeat, or name no request of the part: the caller joins).
    pub outcomes: Vec<RequestOutcome>,
    /// Result lines that could not be read at all.
    pub unreadable: u64,
}

/// One request's result in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutcome {
    /// The request it answers.
    pub custom_id: String,
    /// The HTTP status the request got, if the server says.
    pub status_code: Option<u16>,
    /// The answer's body, or why there is none.
    pub answer: Result<Bytes, OutcomeError>,
    /// Tokens a successful answer used (zero for a failure).
    pub usage: Usage,
    /// The line for the output or error file, newline included: batchling
    /// writes OpenAI's batch output shape, whatever the provider.
    pub line: Vec<u8>,
}

impl RequestOutcome {
    /// Whether the request was answered.
    pub fn succeeded(&self) -> bool {
        self.answer.is_ok()
    }
}

/// Why a request of a batch has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeError {
    /// Machine-readable code, if the server gave one.
    pub code: Option<String>,
    /// For people.
    pub message: String,
}

/// A Batch API call that did not work. Messages never contain the API key.
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
        /// The error envelope's message, or the body's start.
        message: String,
        /// The server-given wait, if any.
        retry_after: Option<Duration>,
        /// The server's own word on retrying (OpenAI: `x-should-retry`).
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
    /// A lookup found several batches that could be the one asked for, and
    /// cannot tell which (not retried).
    #[error("{what}: {message}")]
    Ambiguous {
        /// The call.
        what: String,
        /// The candidates, and what to do.
        message: String,
    },
    /// An answer over its cap: cut off, not retried.
    #[error("{what}: {message}")]
    TooLarge {
        /// The call.
        what: String,
        /// Its size, and the cap.
        message: String,
        /// Which cap.
        cap: SizeCap,
    },
}

/// The caps on what a Batch API call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeCap {
    /// The cap on an API object's answer, the user's response cap (the
    /// same as for online answers).
    Answer,
    /// The fixed cap on a result file's content.
    ResultFile,
}

impl BatchApiError {
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
