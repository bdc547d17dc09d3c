//! Token counting: exact for OpenAI models (tiktoken's encodings), a documented
//! approximation for everything else.
//!
//! STUB: the public signatures below are fixed; the bodies are being written.

use crate::endpoint::Endpoint;

/// The tokenizer used for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o-series.
    O200kBase,
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo, text-embedding-3, ada-002.
    Cl100kBase,
    /// Not an OpenAI model: counted with o200k_base and marked as an estimate.
    Approximate,
}

/// Pick the encoding for a model name (exact names first, then prefixes).
pub fn encoding_for_model(model: &str) -> Encoding {
    let _ = model;
    Encoding::O200kBase
}

/// Count the tokens of one text.
pub fn count_text(encoding: Encoding, text: &str) -> u64 {
    let _ = encoding;
    (text.len() as u64).div_ceil(4)
}

/// What a request will cost against a tokens-per-minute budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenEstimate {
    /// Input (prompt) tokens.
    pub input: u64,
    /// The most output tokens the request may generate (already times `n`).
    pub max_output: u64,
    /// False when the model's tokenizer is not known and the count is approximate.
    pub exact: bool,
}

impl TokenEstimate {
    /// Input plus reserved output: what a provider counts against TPM at admission.
    pub fn total(&self) -> u64 {
        self.input + self.max_output
    }
}

/// A body whose tokens could not be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot count tokens: {0}")]
pub struct TokenError(pub String);

/// Estimate a request body's token cost for `endpoint`.
///
/// `default_max_output` is the output reservation used when the body sets no
/// `max_completion_tokens` / `max_tokens` / `max_output_tokens`.
pub fn estimate(
    endpoint: Endpoint,
    body: &serde_json::Value,
    default_max_output: u64,
) -> Result<TokenEstimate, TokenError> {
    let _ = (endpoint, default_max_output);
    Ok(TokenEstimate {
        input: (body.to_string().len() as u64).div_ceil(4),
        max_output: 0,
        exact: false,
    })
}
