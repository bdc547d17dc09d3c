//! Anthropic's message object → a `chat.completion`; Anthropic's error body
//! → OpenAI's error envelope.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AnswerError, JSON_TOOL_NAME, MAX_ANSWER_BYTES, MAX_DEPTH, depth_within};

/// The fields of a message object that are translated; others (`role`,
/// `container`, server-tool details, ...) are ignored: they have no place in
/// a `chat.completion`.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    content: Vec<AnswerBlock<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_sequence: Option<Cow<'a, str>>,
    usage: AnthropicUsage,
}

/// A content block, flat: which fields matter depends on `type`.
#[derive(Deserialize)]
struct AnswerBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

/// Cache writes by lifetime; the price of a write depends on it.
#[derive(Deserialize, Serialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: u64,
    #[serde(default)]
    ephemeral_1h_input_tokens: u64,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: ChatUsage,
    /// Anthropic's own stop reason and sequence, which `finish_reason`
    /// cannot always tell apart.
    x_anthropic: Raw<'a>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation: Option<CacheCreation>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Serialize)]
struct Raw<'a> {
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
}

/// Translate Anthropic's message object (a Messages answer's body, or a
/// batch result's `message`) into a `chat.completion` object. `created` is
/// its Unix time in seconds (Anthropic's message has none).
///
/// # Errors
/// The body is too large, is not a message object, or its `stop_reason` is
/// unknown or missing.
pub fn message_to_chat_completion(body: &[u8], created: u64) -> Result<Vec<u8>, AnswerError> {
    const EXPECTED: &str = "message";
    check_size(body, EXPECTED)?;
    let message: Message<'_> = serde_json::from_slice(body).map_err(|e| malformed(EXPECTED, &e))?;
    if message.kind != "message" {
        return Err(AnswerError::Malformed {
            expected: EXPECTED,
            reason: format!("type is {:?}", message.kind),
        });
    }
    let (content, tool_calls, json_answer) = content(&message.content);
    let finish_reason = finish_reason(message.stop_reason.as_deref(), json_answer)?;
    let completion = ChatCompletion {
        id: &message.id,
        object: "chat.completion",
        created,
        model: &message.model,
        choices: [Choice {
            index: 0,
            message: ChatMessage {
                role: "assistant",
                content,
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason,
        }],
        usage: usage(message.usage),
        x_anthropic: Raw {
            stop_reason: message.stop_reason.as_deref(),
            stop_sequence: message.stop_sequence.as_deref(),
        },
    };
    serde_json::to_vec(&completion).map_err(|e| malformed(EXPECTED, &e))
}

/// The text blocks joined, the `tool_use` blocks as tool calls, and whether
/// the answer was JSON mode's forced tool (its input is then the content).
/// Other blocks (thinking, server tools' calls and results) are left out.
fn content<'a>(blocks: &'a [AnswerBlock<'a>]) -> (Option<Cow<'a, str>>, Vec<ToolCall<'a>>, bool) {
    let mut text: Option<Cow<'a, str>> = None;
    let mut calls = Vec::new();
    for block in blocks {
        match (
            &*block.kind,
            &block.text,
            &block.id,
            &block.name,
            block.input,
        ) {
            ("text", Some(t), ..) => match &mut text {
                None => text = Some(Cow::Borrowed(t)),
                Some(joined) => joined.to_mut().push_str(t),
            },
            ("tool_use", _, _, Some(name), Some(input)) if name == JSON_TOOL_NAME => {
                return (Some(Cow::Borrowed(input.get())), Vec::new(), true);
            }
            ("tool_use", _, Some(id), Some(name), Some(input)) => calls.push(ToolCall {
                id,
                kind: "function",
                function: Function {
                    name,
                    arguments: input.get(),
                },
            }),
            _ => {}
        }
    }
    (text, calls, false)
}

/// `stop_reason` → `finish_reason` (docs/providers.md, "Anthropic: Messages
/// API and translation"): an unknown one is an error, never `stop`.
fn finish_reason(
    stop_reason: Option<&str>,
    json_answer: bool,
) -> Result<&'static str, AnswerError> {
    Ok(match stop_reason {
        Some("end_turn" | "stop_sequence") => "stop",
        Some("tool_use") if json_answer => "stop",
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded" | "pause_turn") => "length",
        Some("refusal") => "content_filter",
        other => return Err(AnswerError::UnknownStopReason(other.map(str::to_owned))),
    })
}

/// Anthropic counts cache reads and writes beside `input_tokens`; OpenAI
/// counts cached tokens inside `prompt_tokens`.
fn usage(u: AnthropicUsage) -> ChatUsage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens.saturating_add(read).saturating_add(write);
    ChatUsage {
        prompt_tokens: prompt,
        completion_tokens: u.output_tokens,
        total_tokens: prompt.saturating_add(u.output_tokens),
        prompt_tokens_details: PromptDetails {
            cached_tokens: read,
            cache_write_tokens: write,
        },
        cache_creation: u.cache_creation,
    }
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    error: ErrorObject<'a>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default, borrow)]
    details: Option<ErrorDetails<'a>>,
}

#[derive(Deserialize)]
struct ErrorDetails<'a> {
    #[serde(default, borrow)]
    error_code: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<&'a str>,
}

/// Translate Anthropic's error body (`{"type": "error", "error": {"type",
/// "message"}}`) into OpenAI's envelope: the same type and message, `code`
/// from `error.details.error_code` when there is one, `param` null.
///
/// # Errors
/// The body is too large or not an Anthropic error body.
pub fn error_to_openai(body: &[u8]) -> Result<Vec<u8>, AnswerError> {
    const EXPECTED: &str = "error body";
    check_size(body, EXPECTED)?;
    let parsed: ErrorBody<'_> =
        serde_json::from_slice(body).map_err(|e| malformed(EXPECTED, &e))?;
    if parsed.kind != "error" {
        return Err(AnswerError::Malformed {
            expected: EXPECTED,
            reason: format!("type is {:?}", parsed.kind),
        });
    }
    let envelope = Envelope {
        error: OpenAiError {
            message: &parsed.error.message,
            kind: &parsed.error.kind,
            param: None,
            code: parsed
                .error
                .details
                .as_ref()
                .and_then(|d| d.error_code.as_deref()),
        },
    };
    serde_json::to_vec(&envelope).map_err(|e| malformed(EXPECTED, &e))
}

fn check_size(body: &[u8], expected: &'static str) -> Result<(), AnswerError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError::TooLarge {
            size: body.len(),
            limit: MAX_ANSWER_BYTES,
        });
    }
    if !depth_within(body, MAX_DEPTH) {
        return Err(AnswerError::Malformed {
            expected,
            reason: format!("nested deeper than {MAX_DEPTH}"),
        });
    }
    Ok(())
}

fn malformed(expected: &'static str, e: &serde_json::Error) -> AnswerError {
    AnswerError::Malformed {
        expected,
        reason: e.to_string(),
    }
}
