//! batchling's vocabulary, shared by every other crate. Pure: no async
//! runtime, no network; the only files it reads are the ones the user names
//! (a price file, a limits file, a routes config).
//!
//! # Tour
//! - [`request`]: one input line (`custom_id`, `method`, `url`, `body`),
//!   parsed and validated on its own; bodies stay verbatim.
//! - [`endpoint`]: the supported `/v1/...` endpoints.
//! - [`output`]: writing output and error-file lines in OpenAI's batch format.
//! - [`usage`]: reading `usage` out of response bodies.
//! - [`json`]: a one-pass JSON validator that finds top-level members, for
//!   the per-line and per-answer hot paths.
//! - [`tokens`]: token counts with OpenAI's tokenizers, for pacing and cost.
//! - [`pricing`]: the price catalog (USD per 1M tokens, built in or from a
//!   TOML/JSON file) and what tokens cost, online or through a Batch API.
//! - [`ratelimit`]: rate-limit readings from response headers.
//! - [`limits`]: limits per model and families of models, and the limits
//!   file `batchling run --limits` and `batchling mock --limits` read.
//! - [`routes`]: the routes config (`--config`): providers, limit groups of
//!   keys, models and the chains of routes.
//! - [`retry`]: the [`retry::Verdict`] a classifier gives an attempt, and backoff.
//! - [`batch`]: the Batches API's statuses.
//! - [`clock`]: the wall clock (`unix_now`), read in one place.
//! - [`seqset`]: [`SeqSet`], the set of input lines a journal has finished.
//! - [`Order`]: the order output lines are written in.
//! - [`duration`]: Go-style durations (`6m0s`) used in rate-limit headers.
//! - [`hex`]: lower-case hex, for digests that name things.
//!
//! # Glossary
//! A *request* is one input line; an *attempt* is one HTTP call for it; a
//! *run* is one pass of `batchling run` over a file; an *outcome* is what a
//! request finally became (succeeded, failed, invalid).
#![deny(missing_docs)]

// A dev-dependency of `tests/tokens.rs` only (unit tests see it too).
#[cfg(test)]
use tiktoken_rs as _;

pub mod batch;
pub mod clock;
pub mod duration;
pub mod endpoint;
pub mod hex;
pub mod json;
pub mod limits;
pub mod output;
pub mod pricing;
pub mod ratelimit;
pub mod request;
pub mod retry;
pub mod routes;
pub mod seqset;
pub mod tokens;
pub mod usage;

mod tomlfile;

pub use endpoint::Endpoint;
pub use request::{LineError, LineProblem, RequestLine};
pub use retry::{FailKind, RetryPolicy, RetryReason, StopReason, Verdict};
pub use seqset::SeqSet;
pub use usage::Usage;

/// The order output lines are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The order of the input file (the default).
    #[default]
    Input,
    /// The order requests finished in, across runs.
    Completion,
}
