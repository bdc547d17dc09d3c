//! Token counting: exact for OpenAI models (tiktoken's encodings), a documented
//! approximation for everything else.
//!
//! # What is counted (docs/providers.md, "Token counting")
//!
//! [`estimate`] returns the input tokens of a request body and the output tokens
//! it may generate; a rate limiter reserves `input + max_output` and credits back
//! the difference when the real `usage` arrives.
//!
//! * Text is counted with bpe-openai (tiktoken's `o200k_base` / `cl100k_base` vocabularies, loaded once)
//!   with `encode_ordinary` semantics: special-token text such as
//!   `"<|endoftext|>"` counts as plain text, as the API treats user text.
//! * `/v1/chat/completions`: the cookbook rule. 3 tokens per message plus
//!   every string field encoded, +1 per `name`, +3 reply priming; tool
//!   definitions by the cookbook's `num_tokens_for_tools` (see [`count_tools`]).
//!   Content-part arrays count their text parts; image parts count
//!   [`IMAGE_PART_TOKENS`] each (see [`count_part`]).
//! * `/v1/responses`: `instructions` counts as a system message, a string `input`
//!   as a user message, an `input` array item by item like chat messages, +3
//!   priming if there is any; flat function tools as above.
//! * `/v1/completions` and `/v1/embeddings`: each prompt / input is a string (encoded)
//!   or a token array (its length); completions add `suffix` once per prompt.
//! * `/v1/moderations`: `input` strings, or parts with `text` / images.
//! * `/v1/messages` (Anthropic): `system` as a system message, each turn as
//!   a chat message with Anthropic's blocks (`tool_use` input and
//!   `tool_result` content as text), tools as name, description and schema
//!   text, +3 priming; the output reservation is `max_tokens`. Always an
//!   estimate: Claude's tokenizer is not public.
//! * Output reservation: see [`max_output_tokens`]; times `n` for chat, times
//!   `max(n, best_of)` and the number of prompts for completions, 0 for
//!   embeddings and moderations.
//!
//! The verification is `tests/tokens.rs` against fixtures made by Python tiktoken
//! (`scripts/gen_token_fixtures.py`, which also reproduces the cookbook's
//! API-checked totals).

mod chat;
mod count;
mod messages;
mod model;

use serde_json::{Map, Value};

use crate::endpoint::Endpoint;

pub use chat::{
    REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, count_chat_messages, count_message,
    count_part, count_tools,
};

/// Tokens counted for each image content part: OpenAI's figure for a
/// `detail: "low"` image on gpt-4o-family models (base cost of any image).
/// High-detail images cost more (85 + 170 per 512-px tile); the reconciliation
/// with `usage` corrects the difference.
pub const IMAGE_PART_TOKENS: u64 = 85;

/// The tokenizer used for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o-series.
    O200kBase,
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo, text-embedding-3, ada-002.
    Cl100kBase,
    /// Not an OpenAI model: counted with o200k_base and marked as an estimate.
    Approximate,
}

impl Encoding {
    /// tiktoken's name of the encoding the counts use (`Approximate` counts
    /// with `o200k_base`).
    pub fn tiktoken_name(self) -> &'static str {
        match self {
            Encoding::O200kBase | Encoding::Approximate => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// Whether counts are the model's real tokenizer's.
    pub fn is_exact(self) -> bool {
        self != Encoding::Approximate
    }
}

/// Pick the encoding for a model name (exact names first, then prefixes).
///
/// Follows tiktoken 0.14's `model.py` (docs/providers.md, "Token counting"):
/// `gpt-5*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-4o*`, `chatgpt-4o-*`, `o1*`, `o3*`,
/// `o4-mini*`, `gpt-oss-*` and `codex-mini*` → o200k; `gpt-4`, `gpt-4-*`, `gpt-3.5-turbo*`, `gpt-35-turbo*`,
/// `davinci-002`, `babbage-002`, the text-embedding models → cl100k.
/// `ft:<base>:...` uses the base model's encoding. Anything else (Claude,
/// Llama, moderation models, retired p50k/r50k models) → `Approximate`.
/// Names are case-sensitive, as the API's are.
pub fn encoding_for_model(model: &str) -> Encoding {
    model::lookup(model)
}

/// Count the tokens of one text (`encode_ordinary`: special-token text counts
/// as plain text). `Approximate` counts with o200k_base.
///
/// Repeated long texts are answered from a small per-thread memo (see
/// `count.rs`); the result is always the tokenizer's.
pub fn count_text(encoding: Encoding, text: &str) -> u64 {
    count::count(encoding, text)
}

/// Load the encodings' tables now (o200k takes ~150–200 ms in release) instead
/// of on the first count.
pub fn preload() {
    let _ = count::bpe(Encoding::O200kBase);
    let _ = count::bpe(Encoding::Cl100kBase);
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
        self.input.saturating_add(self.max_output)
    }
}

/// A body whose tokens could not be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot count tokens: {0}")]
pub struct TokenError(pub String);

/// The output cap a body sets: the first present (non-null) of
/// `max_completion_tokens`, `max_tokens`, `max_output_tokens`, else `default`.
/// Not multiplied by `n`. A present value must be a non-negative integer.
pub fn max_output_tokens(body: &Value, default: u64) -> Result<u64, TokenError> {
    for key in ["max_completion_tokens", "max_tokens", "max_output_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v.as_u64().ok_or_else(|| {
                    TokenError(format!("\"{key}\" must be a non-negative integer, got {v}"))
                });
            }
        }
    }
    Ok(default)
}

/// A positive integer count field (`n`, `best_of`); 1 when absent or null.
fn positive_count(body: &Value, key: &str) -> Result<u64, TokenError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or_else(|| TokenError(format!("\"{key}\" must be a positive integer, got {v}"))),
    }
}

/// Estimate a request body's token cost for `endpoint`.
///
/// `default_max_output` is the output reservation used when the body sets no
/// `max_completion_tokens` / `max_tokens` / `max_output_tokens`.
///
/// Errors (never panics) when the body has no string `model`, when the
/// endpoint's main field is missing or of the wrong shape (`messages` not an
/// array of objects, `prompt` / `input` not a string or token array, ...), or
/// when an output cap or `n` is not a valid integer. Non-string junk inside
/// messages and tools is ignored.
pub fn estimate(
    endpoint: Endpoint,
    body: &Value,
    default_max_output: u64,
) -> Result<TokenEstimate, TokenError> {
    let no_model = || TokenError("body has no \"model\" string".into());
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(no_model)?;
    estimate_with(
        endpoint,
        body,
        encoding_for_model(model),
        default_max_output,
    )
}

/// [`estimate`] with a chosen encoding instead of the body's model's: what
/// the request would cost if sent to another model (`batchling estimate
/// --model`).
pub fn estimate_with(
    endpoint: Endpoint,
    body: &Value,
    encoding: Encoding,
    default_max_output: u64,
) -> Result<TokenEstimate, TokenError> {
    let obj = body
        .as_object()
        .ok_or_else(|| TokenError("body is not a JSON object".into()))?;
    let (input, max_output) = match endpoint {
        Endpoint::ChatCompletions => {
            let messages = obj
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| TokenError("body has no \"messages\" array".into()))?;
            let input = count_chat_messages(encoding, messages)?
                + count_tools(encoding, &chat::tool_functions(obj, false, true));
            let n = positive_count(body, "n")?;
            let out = max_output_tokens(body, default_max_output)?.saturating_mul(n);
            (input, out)
        }
        Endpoint::Responses => {
            let input = count_responses_input(encoding, obj)?
                + count_tools(encoding, &chat::tool_functions(obj, true, false));
            (input, max_output_tokens(body, default_max_output)?)
        }
        Endpoint::Completions => {
            let prompt = obj
                .get("prompt")
                .ok_or_else(|| TokenError("body has no \"prompt\"".into()))?;
            let (mut input, prompts) = count_prompts(encoding, "prompt", prompt)?;
            if let Some(suffix) = obj.get("suffix").and_then(Value::as_str) {
                input += count_text(encoding, suffix).saturating_mul(prompts);
            }
            let n = positive_count(body, "n")?.max(positive_count(body, "best_of")?);
            let out = max_output_tokens(body, default_max_output)?
                .saturating_mul(n)
                .saturating_mul(prompts);
            (input, out)
        }
        Endpoint::Embeddings => {
            let inp = obj
                .get("input")
                .ok_or_else(|| TokenError("body has no \"input\"".into()))?;
            (count_prompts(encoding, "input", inp)?.0, 0)
        }
        Endpoint::Moderations => {
            let inp = obj
                .get("input")
                .ok_or_else(|| TokenError("body has no \"input\"".into()))?;
            (count_moderation_input(encoding, inp)?, 0)
        }
        Endpoint::Messages => (
            messages::count_input(encoding, obj)?,
            messages::max_tokens(obj, default_max_output)?,
        ),
    };
    Ok(TokenEstimate {
        input,
        max_output,
        exact: encoding.is_exact(),
    })
}

/// Completions `prompt` / embeddings `input`: a string, an array of strings, a
/// token array (counted by length) or an array of token arrays. Returns the
/// tokens and the number of prompts (at least 1, for the output reservation).
fn count_prompts(encoding: Encoding, field: &str, value: &Value) -> Result<(u64, u64), TokenError> {
    let bad = || {
        TokenError(format!(
            "\"{field}\" must be a string, an array of strings, a token array or an array of token arrays"
        ))
    };
    let items = match value {
        Value::String(s) => return Ok((count_text(encoding, s), 1)),
        Value::Array(items) => items,
        _ => return Err(bad()),
    };
    match items.first() {
        None => Ok((0, 1)),
        Some(Value::String(_)) => {
            let mut n = 0;
            for item in items {
                n += count_text(encoding, item.as_str().ok_or_else(bad)?);
            }
            Ok((n, items.len() as u64))
        }
        Some(Value::Number(_)) => Ok((token_array_len(items).ok_or_else(bad)?, 1)),
        Some(Value::Array(_)) => {
            let mut n = 0;
            for item in items {
                let tokens = item.as_array().ok_or_else(bad)?;
                n += token_array_len(tokens).ok_or_else(bad)?;
            }
            Ok((n, items.len() as u64))
        }
        Some(_) => Err(bad()),
    }
}

/// The length of an array of integers, or None if an element is not one.
fn token_array_len(items: &[Value]) -> Option<u64> {
    items
        .iter()
        .all(|t| t.is_u64() || t.is_i64())
        .then_some(items.len() as u64)
}

/// Responses API `instructions` + `input`.
fn count_responses_input(encoding: Encoding, body: &Map<String, Value>) -> Result<u64, TokenError> {
    let mut n = 0;
    let mut messages = 0;
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        n += TOKENS_PER_MESSAGE
            + count_text(encoding, "system")
            + count_text(encoding, instructions);
        messages += 1;
    }
    match body.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            n += TOKENS_PER_MESSAGE + count_text(encoding, "user") + count_text(encoding, s);
            messages += 1;
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let obj = item
                    .as_object()
                    .ok_or_else(|| TokenError(format!("input[{i}] is not an object")))?;
                n += count_message(encoding, obj);
                messages += 1;
            }
        }
        Some(_) => {
            return Err(TokenError(
                "\"input\" must be a string or an array of input items".into(),
            ));
        }
    }
    if messages > 0 {
        n += REPLY_PRIMING;
    }
    Ok(n)
}

/// Moderations `input`: a string, or an array of strings and/or parts
/// (`{type: "text", text}`, `{type: "image_url", ...}`).
fn count_moderation_input(encoding: Encoding, value: &Value) -> Result<u64, TokenError> {
    match value {
        Value::String(s) => Ok(count_text(encoding, s)),
        Value::Array(items) => {
            let mut n = 0;
            for (i, item) in items.iter().enumerate() {
                if !(item.is_string() || item.is_object()) {
                    return Err(TokenError(format!(
                        "input[{i}] must be a string or a content part"
                    )));
                }
                n += count_part(encoding, item);
            }
            Ok(n)
        }
        _ => Err(TokenError(
            "\"input\" must be a string or an array of strings or content parts".into(),
        )),
    }
}
