//! Talking to LLM APIs.
//!
//! # Tour
//! - [`Provider`]: the one trait the engine's online path sees: send an
//!   attempt, classify it, describe a failed answer.
//! - [`openai`]: OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, the
//!   built-in mock): [`openai::client`] sends, [`openai::classify`](mod@openai::classify) decides
//!   retry / give up / success, [`openai::headers`] reads rate-limit headers.
//! - [`anthropic`]: Anthropic's Messages API: [`anthropic::client`] sends
//!   native Messages lines as they are and OpenAI chat lines translated
//!   ([`anthropic::translate`]), with Anthropic's own classifier and
//!   rate-limit headers.
//! - [`azure`]: Azure OpenAI: OpenAI's bodies and batch client, with the
//!   `api-key` header, the v1 and dated URL forms, Azure's rate-limit
//!   headers and its own classifier.
//! - [`any`]: [`AnyClient`], a client of any of them, for a kind chosen
//!   at run time (a routes config, a serve upstream).
//! - [`batch`]: the Batch API trait `batchling submit` drives
//!   ([`BatchApi`]); [`openai::batches`] implements it.
//! - [`attempt`]: what one HTTP call produced, whatever the provider.
//! - `http` (private): the connections, caps and timeouts both online
//!   clients share.
//! - [`secret`]: API keys that cannot be printed.
//!
//! A provider never touches the store or the pacer: it reports what the
//! server said, and the engine acts on it.
#![deny(missing_docs)]

// Dev-dependencies of the integration tests (`tests/`) only.
#[cfg(test)]
use batchling_mock as _;
#[cfg(test)]
use proptest as _;
#[cfg(test)]
use xxhash_rust as _;

pub mod anthropic;
pub mod any;
pub mod attempt;
pub mod azure;
pub mod batch;
mod http;
pub mod openai;
pub mod secret;
#[cfg(test)]
mod test_support;

use std::future::Future;

pub use any::{AnyBatchClient, AnyClient, KeyClient};
pub use attempt::{Answer, Attempt, Outgoing, TransportError, TransportKind};
pub use batch::{BatchApi, BatchApiError};

/// Entry points for fuzzers; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Feed `data` to the lean HTTP/1.1 client's answer reader as the
    /// bytes a peer sent after a request (several answers, as on a
    /// kept-alive connection), with small caps (64 KiB bodies, 4 KiB heads,
    /// 4 informational answers): once in one piece, once three bytes at a
    /// time. Never panics, unless the two readings disagree about the first
    /// answer, which would be a bug of its own.
    pub fn http_response(data: &[u8]) {
        crate::http::plain::feed::http_response(data);
    }
}
pub use batchling_core::Verdict;
pub use secret::ApiKey;

/// An upstream the engine can send requests to.
pub trait Provider: Send + Sync + 'static {
    /// Make one HTTP call for a request. Never fails: transport problems are
    /// part of the returned [`Attempt`].
    fn send(&self, request: &Outgoing) -> impl Future<Output = Attempt> + Send;

    /// Decide what an attempt means: success, retry, failure or stop the run.
    fn classify(&self, attempt: &Attempt) -> Verdict;

    /// The error message of an answer that did not succeed, in the
    /// provider's own terms (its error object's message, or the start of
    /// the body), for the error file and notices. The engine puts
    /// `HTTP <status>: ` before it.
    fn describe(&self, answer: &Answer) -> String;
}

/// A provider could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The base URL does not parse or is not http(s).
    #[error("invalid base URL {url:?}: {reason}; expected something like {example}")]
    BadBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
        /// A good one for the provider at hand.
        example: &'static str,
    },
    /// A header given by the user is not a valid HTTP header.
    #[error("invalid header {name:?}: {reason}")]
    BadHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}
