//! Anthropic Messages bodies (`/v1/messages`): the same rules as chat
//! messages where the shapes agree, and Anthropic's blocks where they do
//! not. Claude's tokenizer is not public, so every count here is an
//! estimate (the encoding is [`Encoding::Approximate`](super::Encoding)
//! for Claude models) that the answer's `usage` corrects.

use serde_json::{Map, Value};

use super::chat::{REPLY_PRIMING, TOKENS_PER_MESSAGE, count_part};
use super::{Encoding, TokenError, count_text};

/// Deepest nesting of `tool_result` contents followed.
const MAX_NESTING: usize = 4;

/// Input tokens of a Messages body: `system` (a string or text blocks) as
/// one system message, each turn as a chat message (its blocks by
/// [`count_block`]), the reply priming, and each tool's name, description
/// and `input_schema` as text.
pub(super) fn count_input(encoding: Encoding, obj: &Map<String, Value>) -> Result<u64, TokenError> {
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TokenError("body has no \"messages\" array".into()))?;
    let mut n = REPLY_PRIMING;
    match obj.get("system") {
        Some(Value::String(s)) => n += TOKENS_PER_MESSAGE + count_text(encoding, s),
        Some(Value::Array(blocks)) => {
            n += TOKENS_PER_MESSAGE
                + blocks
                    .iter()
                    .map(|b| count_block(encoding, b, 0))
                    .sum::<u64>();
        }
        _ => {}
    }
    for (i, message) in messages.iter().enumerate() {
        let turn = message
            .as_object()
            .ok_or_else(|| TokenError(format!("messages[{i}] is not an object")))?;
        n += TOKENS_PER_MESSAGE;
        if let Some(role) = turn.get("role").and_then(Value::as_str) {
            n += count_text(encoding, role);
        }
        n += match turn.get("content") {
            Some(Value::String(s)) => count_text(encoding, s),
            Some(Value::Array(blocks)) => blocks.iter().map(|b| count_block(encoding, b, 0)).sum(),
            _ => 0,
        };
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        n += tools
            .iter()
            .filter_map(Value::as_object)
            .map(|t| count_tool(encoding, t))
            .sum::<u64>();
    }
    Ok(n)
}

/// One content block: `text` (and every part chat knows, images
/// included), `tool_use` (its name and input as JSON text), `tool_result`
/// (its content, a string or blocks). Anything else counts 0.
fn count_block(encoding: Encoding, block: &Value, depth: usize) -> u64 {
    let Some(obj) = block.as_object() else {
        return count_part(encoding, block);
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("tool_use") => {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
            let input = obj.get("input").map(Value::to_string).unwrap_or_default();
            count_text(encoding, name) + count_text(encoding, &input)
        }
        Some("tool_result") => match obj.get("content") {
            Some(Value::String(s)) => count_text(encoding, s),
            Some(Value::Array(inner)) if depth < MAX_NESTING => inner
                .iter()
                .map(|b| count_block(encoding, b, depth + 1))
                .sum(),
            _ => 0,
        },
        _ => count_part(encoding, block),
    }
}

/// A tool definition: `name:description` and its `input_schema` as JSON
/// text (the cookbook's rule for OpenAI's schemas does not apply: Claude
/// renders tools its own way).
fn count_tool(encoding: Encoding, tool: &Map<String, Value>) -> u64 {
    let mut line = String::new();
    line.push_str(tool.get("name").and_then(Value::as_str).unwrap_or(""));
    line.push(':');
    line.push_str(
        tool.get("description")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let schema = tool
        .get("input_schema")
        .map(Value::to_string)
        .unwrap_or_default();
    count_text(encoding, &line) + count_text(encoding, &schema)
}

/// `max_tokens`, required by Anthropic; `default` when absent (the API
/// would refuse the request, and the reservation does not matter then).
pub(super) fn max_tokens(obj: &Map<String, Value>, default: u64) -> Result<u64, TokenError> {
    match obj.get("max_tokens") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            TokenError(format!(
                "\"max_tokens\" must be a non-negative integer, got {v}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::tokens::{IMAGE_PART_TOKENS, estimate};
    use serde_json::json;

    fn tokens(text: &str) -> u64 {
        count_text(Encoding::Approximate, text)
    }

    #[test]
    fn counts_system_messages_tools_and_max_tokens() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": "x"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "found"},
                    {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}
                ]}
            ],
            "tools": [{"name": "look", "description": "Look up", "input_schema": {"type": "object"}}]
        });
        let e = estimate(Endpoint::Messages, &body, 1000).unwrap();
        let want = REPLY_PRIMING
            + (TOKENS_PER_MESSAGE + tokens("Be brief."))
            + (TOKENS_PER_MESSAGE + tokens("user") + tokens("Hello there"))
            + (TOKENS_PER_MESSAGE + tokens("assistant") + tokens("Hi") + tokens("look"))
            + tokens(r#"{"q":"x"}"#)
            + (TOKENS_PER_MESSAGE + tokens("user") + tokens("found") + IMAGE_PART_TOKENS)
            + tokens("look:Look up")
            + tokens(r#"{"type":"object"}"#);
        assert_eq!(e.input, want);
        assert_eq!(e.max_output, 300);
        assert!(!e.exact, "Claude's tokenizer is not known");
        let plain = json!({"model": "claude-x", "system": "S", "messages": [{"role": "user", "content": "u"}]});
        let e = estimate(Endpoint::Messages, &plain, 77).unwrap();
        assert_eq!(e.max_output, 77);
        assert_eq!(
            e.input,
            REPLY_PRIMING + TOKENS_PER_MESSAGE * 2 + tokens("S") + tokens("user") + tokens("u")
        );
    }

    #[test]
    fn refuses_what_is_not_a_messages_body() {
        let est = |b: Value| estimate(Endpoint::Messages, &b, 10);
        assert!(est(json!({"model": "c", "prompt": "x"})).is_err());
        assert!(est(json!({"model": "c", "messages": [1]})).is_err());
        assert!(est(json!({"model": "c", "messages": [], "max_tokens": -1})).is_err());
    }
}
