//! What goes into and comes out of one HTTP call.

use std::time::Duration;

use batchling_core::Endpoint;
use batchling_core::Usage;
use batchling_core::ratelimit::RateLimitSnapshot;
use bytes::Bytes;

/// One request about to be sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The caller's id, sent as `x-batchling-custom-id` for tracing.
    pub custom_id: String,
    /// Where to send it.
    pub endpoint: Endpoint,
    /// The JSON body, verbatim from the input line.
    pub body: Bytes,
}

/// The outcome of one HTTP call.
// Answers are the common case and are moved a few times, never stored in
// bulk: boxing them would cost an allocation each for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The server answered (any status).
    Answered(Answer),
    /// No answer: connection failure or timeout.
    Transport(TransportError),
}

impl Attempt {
    /// Rate-limit headers, when there was an answer.
    pub fn limits(&self) -> Option<&RateLimitSnapshot> {
        match self {
            Attempt::Answered(a) => Some(&a.limits),
            Attempt::Transport(_) => None,
        }
    }
}

/// An HTTP response, read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body as received.
    pub body: Bytes,
    /// `x-request-id` (or `request-id`).
    pub request_id: Option<String>,
    /// `x-ratelimit-*` readings.
    pub limits: RateLimitSnapshot,
    /// `retry-after-ms` / `retry-after`, when sent.
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, when sent.
    pub should_retry: Option<bool>,
    /// Whether the body is valid JSON.
    pub body_is_json: bool,
    /// Usage from a 2xx body.
    pub usage: Option<Usage>,
}

/// Why there was no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Could not connect, or the connection broke before a full answer.
    Connection,
    /// The per-attempt timeout passed.
    Timeout,
    /// The request could not even be built (not retryable).
    Invalid,
    /// What came back is not well-formed HTTP (impossible or conflicting
    /// lengths, a broken chunk, no valid status, an oversized head, an
    /// unasked protocol switch or compression). Retried like a broken
    /// connection.
    Malformed,
    /// The answer is larger than `--max-response-mb`: cut off, not retried
    /// (the same request would most likely get the same answer, paid for
    /// again).
    TooLarge,
}

/// A failed HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// Which kind of failure.
    pub kind: TransportKind,
    /// What happened, already free of secrets.
    pub message: String,
}
