//! Deterministic answers: every 200 body is a pure function of the request
//! body, so tests can check each output against its input.
//!
//! The rules, per endpoint:
//! - the answer text is `"echo:" + <the last user text>`;
//! - the mock counts one completion token per whitespace-separated word of
//!   its answer text and cuts the text after `max_out` words (`max_out` =
//!   `max_completion_tokens`, `max_tokens` or `max_output_tokens`, else
//!   [`crate::MockConfig::default_max_output`]); a cut answer has
//!   `finish_reason: "length"`;
//! - `prompt_tokens` / `input_tokens` = `batchling_core::tokens::estimate(..).input`;
//! - ids are `<prefix><xxh3 of the raw body in hex>` and `created` is a
//!   fixed timestamp, so the same body always gives the same bytes.

use std::borrow::Cow;

use batchling_core::endpoint::Endpoint;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::faults::mix64;

mod responses;

/// The fixed `created` timestamp of every answer (2025-01-01T00:00:00Z).
pub(crate) const CREATED: u64 = 1_735_689_600;

/// Embedding length when the request sets no `dimensions`.
pub(crate) const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

/// An OpenAI-style error answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<&'static str>,
    pub(crate) code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub(crate) fn server_error(status: u16) -> Self {
        ApiError {
            status,
            message: match status {
                503 => "The server is overloaded or not ready yet.".to_owned(),
                _ => "The server had an error while processing your request. Sorry about that!"
                    .to_owned(),
            },
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub(crate) fn body(&self) -> Vec<u8> {
        error_envelope(&self.message, self.kind, self.param, self.code)
    }
}

/// OpenAI's error envelope with all four keys.
pub(crate) fn error_envelope(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    serde_json::to_vec(&Envelope {
        error: Inner {
            message,
            kind,
            param,
            code,
        },
    })
    .unwrap_or_default()
}

/// What a valid request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub(crate) model: &'a str,
    /// Most output tokens per choice.
    pub(crate) max_out: u64,
    /// Choices per prompt.
    pub(crate) n: u64,
}

/// A rendered 200 answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

/// Check the fields the mock relies on; 400 when they are wrong.
pub(crate) fn validate<'a>(
    endpoint: Endpoint,
    body: &'a Value,
    default_max_output: u64,
) -> Result<Plan<'a>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("The request body must be a JSON object.", None))?;
    let model = model_of(endpoint, obj)?;
    if matches!(obj.get("stream"), Some(Value::Bool(true))) {
        return Err(ApiError::invalid(
            "The mock does not support streaming ('stream': true).",
            Some("stream"),
        ));
    }
    check_input(endpoint, obj)?;
    Ok(Plan {
        model,
        max_out: max_out(endpoint, obj, default_max_output)?,
        n: choices(endpoint, obj)?,
    })
}

/// The `model`; moderations may omit it.
fn model_of(endpoint: Endpoint, obj: &Map<String, Value>) -> Result<&str, ApiError> {
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.as_str()),
        None | Some(Value::Null) if endpoint == Endpoint::Moderations => {
            Ok("omni-moderation-latest")
        }
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ApiError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
        Some(_) => Err(ApiError::invalid(
            "Invalid type for 'model': expected a string.",
            Some("model"),
        )),
    }
}

/// The endpoint's required input: chat `messages`, an `input` to embed or
/// moderate.
fn check_input(endpoint: Endpoint, obj: &Map<String, Value>) -> Result<(), ApiError> {
    match endpoint {
        Endpoint::ChatCompletions => match obj.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => Ok(()),
            Some(Value::Array(_)) => Err(ApiError::invalid(
                "[] is too short - 'messages'",
                Some("messages"),
            )),
            _ => Err(ApiError::invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            )),
        },
        Endpoint::Embeddings | Endpoint::Moderations => match obj.get("input") {
            None | Some(Value::Null) => Err(ApiError::invalid(
                "Missing required parameter: 'input'.",
                Some("input"),
            )),
            Some(Value::Array(a)) if a.is_empty() => Err(ApiError::invalid(
                "'$.input' is invalid: it must not be empty.",
                Some("input"),
            )),
            _ => Ok(()),
        },
        Endpoint::Completions | Endpoint::Responses => Ok(()),
        // Served by `anthropic/`, never here: an OpenAI batch naming it
        // gets the refusal OpenAI's would.
        Endpoint::Messages => Err(ApiError::invalid(
            "/v1/messages is not an endpoint of this API",
            Some("url"),
        )),
    }
}

/// Most output tokens per choice: the first output cap the endpoint knows
/// that is set, else the default.
fn max_out(
    endpoint: Endpoint,
    obj: &Map<String, Value>,
    default_max_output: u64,
) -> Result<u64, ApiError> {
    let max_keys: &[&'static str] = match endpoint {
        Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Endpoint::Completions => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Messages => &["max_tokens"],
        Endpoint::Embeddings | Endpoint::Moderations => &[],
    };
    for &key in max_keys {
        match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(v) => match v.as_u64() {
                Some(m) if m >= 1 => return Ok(m),
                _ => {
                    return Err(ApiError::invalid(
                        format!("Invalid '{key}': expected an integer of at least 1."),
                        Some(key),
                    ));
                }
            },
        }
    }
    Ok(default_max_output.max(1))
}

/// Choices per prompt (`n`).
fn choices(endpoint: Endpoint, obj: &Map<String, Value>) -> Result<u64, ApiError> {
    match obj.get("n") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=128) if endpoint != Endpoint::Responses => Ok(n),
            _ => Err(ApiError::invalid(
                "Invalid 'n': expected an integer between 1 and 128.",
                Some("n"),
            )),
        },
    }
}

/// The 200 body for a valid request. `hash` is the xxh3 of the raw body.
pub(crate) fn render(
    endpoint: Endpoint,
    body: &Value,
    plan: &Plan<'_>,
    prompt_tokens: u64,
    hash: u64,
) -> Answer {
    match endpoint {
        // Messages never passes `check_input`.
        Endpoint::ChatCompletions | Endpoint::Messages => chat(body, plan, prompt_tokens, hash),
        Endpoint::Completions => completions(body, plan, prompt_tokens, hash),
        Endpoint::Responses => responses::render(body, plan, prompt_tokens, hash),
        Endpoint::Embeddings => embeddings(body, plan, prompt_tokens),
        Endpoint::Moderations => moderations(body, plan, hash),
    }
}

/// `"echo:" + text` cut after `max_words` words: (text, words, was cut).
pub(crate) fn echo(text: &str, max_words: u64) -> (String, u64, bool) {
    let mut full = String::with_capacity(5 + text.len());
    full.push_str("echo:");
    full.push_str(text);
    let mut words = 0u64;
    let mut cut_at = None;
    for word in full.split_whitespace() {
        if words == max_words {
            cut_at = Some(word.as_ptr() as usize - full.as_ptr() as usize);
            break;
        }
        words += 1;
    }
    match cut_at {
        Some(at) => {
            full.truncate(at);
            full.truncate(full.trim_end().len());
            (full, words, true)
        }
        None => (full, words, false),
    }
}

/// The text of a message `content`: a string, or the `text` of its parts
/// joined with `"\n"`.
fn content_text(content: Option<&Value>) -> Cow<'_, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => {
            let mut texts = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str));
            match (texts.next(), texts.next()) {
                (None, _) => Cow::Borrowed(""),
                (Some(one), None) => Cow::Borrowed(one),
                (Some(a), Some(b)) => {
                    let mut s = format!("{a}\n{b}");
                    for t in texts {
                        s.push('\n');
                        s.push_str(t);
                    }
                    Cow::Owned(s)
                }
            }
        }
        _ => Cow::Borrowed(""),
    }
}

/// The text of the last `role: "user"` item of a list (chat `messages` or
/// responses `input`), or "".
pub(crate) fn last_user_text(items: &[Value]) -> Cow<'_, str> {
    items
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or(Cow::Borrowed(""))
}

fn finish(cut: bool) -> &'static str {
    if cut { "length" } else { "stop" }
}

#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl ChatUsage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        ChatUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // Serialising these plain structs cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

fn chat(body: &Value, plan: &Plan<'_>, prompt_tokens: u64, hash: u64) -> Answer {
    #[derive(Serialize)]
    struct Completion<'a> {
        id: String,
        object: &'static str,
        created: u64,
        model: &'a str,
        choices: Vec<Choice<'a>>,
        usage: ChatUsage,
        system_fingerprint: &'static str,
        service_tier: &'static str,
    }
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u64,
        message: Message<'a>,
        logprobs: Option<()>,
        finish_reason: &'static str,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        role: &'static str,
        content: &'a str,
        refusal: Option<()>,
        annotations: [(); 0],
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (text, words, cut) = echo(&last_user_text(messages), plan.max_out);
    let choices = (0..plan.n)
        .map(|index| Choice {
            index,
            message: Message {
                role: "assistant",
                content: &text,
                refusal: None,
                annotations: [],
            },
            logprobs: None,
            finish_reason: finish(cut),
        })
        .collect();
    let completion_tokens = words * plan.n;
    Answer {
        body: to_vec(&Completion {
            id: format!("chatcmpl-{hash:016x}"),
            object: "chat.completion",
            created: CREATED,
            model: plan.model,
            choices,
            usage: ChatUsage::new(prompt_tokens, completion_tokens),
            system_fingerprint: "fp_mock",
            service_tier: "default",
        }),
        prompt_tokens,
        completion_tokens,
    }
}

/// The prompts of a `/v1/completions` request: a string, a list of strings,
/// or token arrays (whose text counts as "").
pub(crate) fn completion_prompts(body: &Value) -> Vec<&str> {
    match body.get("prompt") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![""],
        Some(Value::Array(items)) => items.iter().map(|p| p.as_str().unwrap_or("")).collect(),
        _ => vec![""],
    }
}

fn completions(body: &Value, plan: &Plan<'_>, prompt_tokens: u64, hash: u64) -> Answer {
    #[derive(Serialize)]
    struct Completion<'a> {
        id: String,
        object: &'static str,
        created: u64,
        model: &'a str,
        choices: Vec<Choice>,
        usage: ChatUsage,
        system_fingerprint: &'static str,
    }
    #[derive(Serialize)]
    struct Choice {
        text: String,
        index: u64,
        logprobs: Option<()>,
        finish_reason: &'static str,
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for prompt in completion_prompts(body) {
        let (text, words, cut) = echo(prompt, plan.max_out);
        for _ in 0..plan.n {
            completion_tokens += words;
            choices.push(Choice {
                text: text.clone(),
                index: choices.len() as u64,
                logprobs: None,
                finish_reason: finish(cut),
            });
        }
    }
    Answer {
        body: to_vec(&Completion {
            id: format!("cmpl-{hash:016x}"),
            object: "text_completion",
            created: CREATED,
            model: plan.model,
            choices,
            usage: ChatUsage::new(prompt_tokens, completion_tokens),
            system_fingerprint: "fp_mock",
        }),
        prompt_tokens,
        completion_tokens,
    }
}

/// The user text of a `/v1/responses` request: `input` as a string, or the
/// last user item of an `input` list.
pub(crate) fn responses_input_text(body: &Value) -> Cow<'_, str> {
    match body.get("input") {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(items)) => last_user_text(items),
        _ => Cow::Borrowed(""),
    }
}

/// The hash each embedding vector is derived from, one per input: xxh3 of a
/// string's bytes, or of a token array's numbers as little-endian u64s.
pub(crate) fn embedding_input_hashes(input: &Value) -> Vec<u64> {
    fn tokens_hash(tokens: &[Value]) -> u64 {
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|t| t.as_u64().unwrap_or(0).to_le_bytes())
            .collect();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
    match input {
        Value::String(s) => vec![xxhash_rust::xxh3::xxh3_64(s.as_bytes())],
        Value::Array(items) if items.iter().all(Value::is_number) => vec![tokens_hash(items)],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => xxhash_rust::xxh3::xxh3_64(s.as_bytes()),
                Value::Array(tokens) => tokens_hash(tokens),
                other => xxhash_rust::xxh3::xxh3_64(other.to_string().as_bytes()),
            })
            .collect(),
        other => vec![xxhash_rust::xxh3::xxh3_64(other.to_string().as_bytes())],
    }
}

/// A unit-length vector of `dims` floats derived from `hash`.
pub(crate) fn embedding_vector(hash: u64, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims as u64)
        .map(|i| ((mix64(hash ^ mix64(i)) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn embeddings(body: &Value, plan: &Plan<'_>, prompt_tokens: u64) -> Answer {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Embedding>,
        model: &'a str,
        usage: Usage,
    }
    #[derive(Serialize)]
    struct Embedding {
        object: &'static str,
        index: usize,
        embedding: Vec<f32>,
    }
    #[derive(Serialize)]
    struct Usage {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .filter(|d| (1..=4096).contains(d))
        .map_or(DEFAULT_EMBEDDING_DIMENSIONS, |d| d as usize);
    let input = body.get("input").unwrap_or(&Value::Null);
    let data = embedding_input_hashes(input)
        .into_iter()
        .enumerate()
        .map(|(index, h)| Embedding {
            object: "embedding",
            index,
            embedding: embedding_vector(h, dims),
        })
        .collect();
    Answer {
        body: to_vec(&List {
            object: "list",
            data,
            model: plan.model,
            usage: Usage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }),
        prompt_tokens,
        completion_tokens: 0,
    }
}

const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn moderations(body: &Value, plan: &Plan<'_>, hash: u64) -> Answer {
    #[derive(Serialize)]
    struct Moderation<'a> {
        id: String,
        model: &'a str,
        results: Vec<&'a serde_json::value::RawValue>,
    }
    // One result shape for every input: nothing flagged.
    static RESULT: std::sync::OnceLock<Box<serde_json::value::RawValue>> =
        std::sync::OnceLock::new();
    let result = RESULT.get_or_init(|| {
        let categories: serde_json::Map<String, Value> = MODERATION_CATEGORIES
            .iter()
            .map(|c| ((*c).to_owned(), Value::Bool(false)))
            .collect();
        let scores: serde_json::Map<String, Value> = MODERATION_CATEGORIES
            .iter()
            .map(|c| ((*c).to_owned(), Value::from(1e-6)))
            .collect();
        let applied: serde_json::Map<String, Value> = MODERATION_CATEGORIES
            .iter()
            .map(|c| ((*c).to_owned(), Value::Array(vec![Value::from("text")])))
            .collect();
        let r = serde_json::json!({
            "flagged": false,
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": applied,
        });
        serde_json::value::to_raw_value(&r).expect("static moderation result")
    });
    let count = match body.get("input") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.len(),
        _ => 1,
    };
    Answer {
        body: to_vec(&Moderation {
            id: format!("modr-{hash:016x}"),
            model: plan.model,
            results: vec![result.as_ref(); count],
        }),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn echo_counts_and_cuts_words() {
        assert_eq!(
            echo("hello world", 16),
            ("echo:hello world".into(), 2, false)
        );
        assert_eq!(echo("", 16), ("echo:".into(), 1, false));
        assert_eq!(echo(" a b  c ", 2), ("echo: a".into(), 2, true));
        assert_eq!(echo("a b c", 3), ("echo:a b c".into(), 3, false));
        assert_eq!(echo("a b c", 1), ("echo:a".into(), 1, true));
        assert_eq!(echo("x\n\ny z", 16), ("echo:x\n\ny z".into(), 3, false));
    }

    #[test]
    fn last_user_text_handles_parts() {
        let m = json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "later"}
        ]);
        assert_eq!(last_user_text(m.as_array().unwrap()), "a\nb");
        assert_eq!(last_user_text(&[]), "");
    }

    #[test]
    fn validate_rules() {
        let ok = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "n": 2});
        let plan = validate(Endpoint::ChatCompletions, &ok, 16).unwrap();
        assert_eq!((plan.model, plan.max_out, plan.n), ("m", 5, 2));
        let both =
            json!({"model": "m", "messages": [{}], "max_tokens": 5, "max_completion_tokens": 7});
        assert_eq!(
            validate(Endpoint::ChatCompletions, &both, 16)
                .unwrap()
                .max_out,
            7
        );
        for bad in [
            json!({"messages": [{}]}),
            json!({"model": 3, "messages": [{}]}),
            json!({"model": "m"}),
            json!({"model": "m", "messages": []}),
            json!({"model": "m", "messages": [{}], "max_tokens": 0}),
            json!({"model": "m", "messages": [{}], "n": 0}),
            json!({"model": "m", "messages": [{}], "stream": true}),
            json!([1, 2]),
        ] {
            let err = validate(Endpoint::ChatCompletions, &bad, 16).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
        }
        assert!(validate(Endpoint::Embeddings, &json!({"model": "e"}), 16).is_err());
        assert_eq!(
            validate(Endpoint::Moderations, &json!({"input": "x"}), 16)
                .unwrap()
                .model,
            "omni-moderation-latest"
        );
    }

    #[test]
    fn embedding_vectors_are_unit_and_deterministic() {
        let a = embedding_vector(42, 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, embedding_vector(42, 8));
        assert_ne!(a, embedding_vector(43, 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(embedding_input_hashes(&json!(["a", "b"])).len(), 2);
        assert_eq!(embedding_input_hashes(&json!([1, 2, 3])).len(), 1);
        assert_eq!(embedding_input_hashes(&json!([[1, 2], [3]])).len(), 2);
    }
}
