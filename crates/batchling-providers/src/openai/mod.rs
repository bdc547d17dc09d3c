//! OpenAI-compatible upstreams: OpenAI itself, Azure's v1 API, vLLM,
//! llama.cpp's server and the built-in mock; [`batches`] is the client of
//! the Files + Batches API behind `batchling submit`.

pub mod batches;
pub mod classify;
pub mod client;
pub mod headers;
pub(crate) mod plain;

pub use batches::{BatchApiError, BatchClient, BatchStatus};
pub use classify::classify;
pub use client::{AuthStyle, ClientConfig, DEFAULT_MAX_RESPONSE_BYTES, LINE_ROOM, OpenAiClient};

/// An error and its sources, joined by ": ". reqwest's own message names the
/// URL but not the cause ("connection refused" is a source); it never holds
/// headers, so no key, but callers still redact it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    message
}
