//! A Messages request: the checks Anthropic makes (answered 400
//! `invalid_request_error`), what it costs, and the message object that
//! answers it.
//!
//! Tokens: there is no local Claude tokenizer, so the mock counts one token
//! per 4 characters (rounded up) of every string in `system`, `messages`
//! and `tools`, the block `type`s and `cache_control`s left out.
//!
//! Prompt caching, steerable: the cacheable prefix runs up to and including
//! the last block (in `tools`, `system`, `messages` order) that carries a
//! `cache_control`. The first request with a prefix reports its tokens as
//! `cache_creation_input_tokens` (the 5-minute or 1-hour bucket by the
//! block's `ttl`); later ones with the same prefix, model and limit group
//! as `cache_read_input_tokens`. The rest is `input_tokens`. No minimum
//! length and no expiry: a write is remembered while the server runs (up to
//! [`MAX_CACHED_PREFIXES`], then forgotten all at once).

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::AnthropicError;
use crate::answer::{echo, last_user_text};

/// Prefixes remembered before the cache is emptied.
pub(crate) const MAX_CACHED_PREFIXES: usize = 1 << 20;

/// What a valid request asks for.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub(crate) model: &'a str,
    pub(crate) max_tokens: u64,
    /// Input tokens, cache prefix included.
    pub(crate) input: u64,
    /// The cacheable prefix, when a block asks for one.
    pub(crate) prefix: Option<Prefix>,
}

/// The cacheable prefix of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    /// Its tokens.
    pub(crate) tokens: u64,
    /// xxh3 of the model and the prefix's blocks.
    pub(crate) hash: u64,
    /// Whether the breakpoint asks for the 1-hour cache.
    pub(crate) one_hour: bool,
}

/// The input tokens of a request, as usage reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InputUsage {
    pub(crate) input: u64,
    pub(crate) cache_write: u64,
    pub(crate) cache_read: u64,
    pub(crate) one_hour: bool,
}

impl InputUsage {
    /// What counts against ITPM: input and cache writes, not cache reads
    /// (docs/providers.md, "Anthropic: rate limits").
    pub(crate) fn charged(&self) -> u64 {
        self.input + self.cache_write
    }
}

/// The prefixes written so far, by (group, prefix hash).
#[derive(Debug, Default)]
pub(crate) struct PromptCache(Mutex<HashSet<(usize, u64)>>);

impl PromptCache {
    /// How a request's input splits, given what is cached now.
    pub(crate) fn split(&self, group: usize, req: &Request<'_>) -> InputUsage {
        let Some(prefix) = req.prefix else {
            return InputUsage {
                input: req.input,
                ..InputUsage::default()
            };
        };
        let cached = self.lock().contains(&(group, prefix.hash));
        let rest = req.input.saturating_sub(prefix.tokens);
        InputUsage {
            input: rest,
            cache_write: if cached { 0 } else { prefix.tokens },
            cache_read: if cached { prefix.tokens } else { 0 },
            one_hour: prefix.one_hour,
        }
    }

    /// Remember a request's prefix as written (its answer was given).
    pub(crate) fn written(&self, group: usize, req: &Request<'_>) {
        if let Some(prefix) = req.prefix {
            let mut set = self.lock();
            if set.len() >= MAX_CACHED_PREFIXES {
                set.clear();
            }
            set.insert((group, prefix.hash));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(usize, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Check a Messages body as Anthropic does; `at` prefixes field names
/// (`requests.3.params.` inside a batch).
pub(crate) fn validate<'a>(body: &'a Value, at: &str) -> Result<Request<'a>, AnthropicError> {
    let bad = |field: &str, what: &str| AnthropicError::invalid(format!("{at}{field}: {what}"));
    let obj = body
        .as_object()
        .ok_or_else(|| AnthropicError::invalid("The request body must be a JSON object."))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        None | Some(Value::Null) => return Err(bad("model", "Field required")),
        Some(_) => return Err(bad("model", "Input should be a non-empty string")),
    };
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err(bad("max_tokens", "Field required")),
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or_else(|| bad("max_tokens", "Input should be an integer of at least 1"))?,
    };
    if obj.get("stream") == Some(&Value::Bool(true)) {
        return Err(bad("stream", "the mock does not stream"));
    }
    if let Some(t) = obj.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err(bad("temperature", "Input should be a number from 0 to 1"));
    }
    check_system(obj.get("system"), at)?;
    check_messages(obj.get("messages"), at)?;
    Ok(Request {
        model,
        max_tokens,
        input: tokens(obj),
        prefix: prefix(model, obj),
    })
}

/// `system`: a string or a list of text blocks.
fn check_system(system: Option<&Value>, at: &str) -> Result<(), AnthropicError> {
    match system {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text")
                    || !block.get("text").is_some_and(Value::is_string)
                {
                    return Err(AnthropicError::invalid(format!(
                        "{at}system.{i}: Input should be a text block with a string 'text'"
                    )));
                }
            }
            Ok(())
        }
        Some(_) => Err(AnthropicError::invalid(format!(
            "{at}system: Input should be a valid string or a list of text blocks"
        ))),
    }
}

/// `messages`: at least one, each `user` or `assistant` (a `system` role is
/// Anthropic's own error), each content a string or a non-empty list of
/// typed blocks. Consecutive turns of one role are allowed: Anthropic
/// combines them (and a last `assistant` turn is a prefill).
fn check_messages(messages: Option<&Value>, at: &str) -> Result<(), AnthropicError> {
    let bad = |field: String, what: &str| AnthropicError::invalid(format!("{at}{field}: {what}"));
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(bad("messages".into(), "at least one message is required"));
        }
        None | Some(Value::Null) => return Err(bad("messages".into(), "Field required")),
        Some(_) => return Err(bad("messages".into(), "Input should be a valid list")),
    };
    for (i, m) in list.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some("system") => {
                return Err(bad(
                    format!("messages.{i}.role"),
                    "Unexpected role \"system\". The Messages API accepts a top-level `system` \
                     parameter, not \"system\" as an input message role.",
                ));
            }
            _ => {
                return Err(bad(
                    format!("messages.{i}.role"),
                    "Input should be 'user' or 'assistant'",
                ));
            }
        }
        check_content(m.get("content"), &format!("messages.{i}.content"), at)?;
    }
    Ok(())
}

/// A message `content`: a string, or a non-empty list of blocks with a
/// string `type` (a `text` block with a string `text`).
fn check_content(content: Option<&Value>, field: &str, at: &str) -> Result<(), AnthropicError> {
    let bad = |field: String, what: &str| AnthropicError::invalid(format!("{at}{field}: {what}"));
    let blocks = match content {
        Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(blocks)) if !blocks.is_empty() => blocks,
        Some(Value::Array(_)) => return Err(bad(field.into(), "at least one block is required")),
        None | Some(Value::Null) => return Err(bad(field.into(), "Field required")),
        Some(_) => {
            return Err(bad(
                field.into(),
                "Input should be a valid string or a list of blocks",
            ));
        }
    };
    for (j, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") if !block.get("text").is_some_and(Value::is_string) => {
                return Err(bad(format!("{field}.{j}.text"), "Field required"));
            }
            Some(_) => {}
            None => return Err(bad(format!("{field}.{j}.type"), "Field required")),
        }
    }
    Ok(())
}

/// Characters of every string in `value`, leaving out what is structure:
/// block `type`s, `cache_control`s and message `role`s.
fn chars(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().map(chars).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "cache_control" | "role"))
            .map(|(_, v)| chars(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// A request's input tokens: its characters over 4, rounded up.
fn tokens(obj: &Map<String, Value>) -> u64 {
    let text: u64 = ["tools", "system", "messages"]
        .iter()
        .filter_map(|k| obj.get(*k))
        .map(chars)
        .sum();
    text.div_ceil(4)
}

/// Every block of the prompt in cache order: tools, system, then each
/// message's content blocks (a string content is one block).
fn blocks(obj: &Map<String, Value>) -> Vec<&Value> {
    let list = |key: &str| {
        obj.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut out = list("tools");
    match obj.get("system") {
        Some(s @ Value::String(_)) => out.push(s),
        Some(Value::Array(a)) => out.extend(a),
        _ => {}
    }
    for m in list("messages") {
        match m.get("content") {
            Some(Value::Array(a)) => out.extend(a),
            Some(c) => out.push(c),
            None => {}
        }
    }
    out
}

/// The cacheable prefix: everything up to the last `cache_control` block.
fn prefix(model: &str, obj: &Map<String, Value>) -> Option<Prefix> {
    let blocks = blocks(obj);
    let last = blocks
        .iter()
        .rposition(|b| b.get("cache_control").is_some())?;
    let mut bytes = model.as_bytes().to_vec();
    let mut text = 0;
    for block in &blocks[..=last] {
        bytes.extend_from_slice(block.to_string().as_bytes());
        text += chars(block);
    }
    let one_hour = blocks[last]["cache_control"]["ttl"] == "1h";
    Some(Prefix {
        tokens: u64::div_ceil(text, 4),
        hash: xxhash_rust::xxh3::xxh3_64(&bytes),
        one_hour,
    })
}

/// The message object answering a valid request: `"echo:"` and the last
/// user text, cut after `max_tokens` words (`stop_reason: "max_tokens"`)
/// or at the first of its `stop_sequences` it contains.
pub(crate) fn render(
    body: &Value,
    req: &Request<'_>,
    usage: &InputUsage,
    hash: u64,
) -> (Value, u64) {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (mut text, mut words, cut) = echo(&last_user_text(messages), req.max_tokens);
    let mut stop = (if cut { "max_tokens" } else { "end_turn" }, Value::Null);
    let sequences = body.get("stop_sequences").and_then(Value::as_array);
    let hit = (sequences.into_iter().flatten())
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s).map(|at| (at, s)))
        .min();
    if let Some((at, sequence)) = hit {
        text.truncate(at);
        words = text.split_whitespace().count() as u64;
        stop = ("stop_sequence", Value::from(sequence));
    }
    let (five, hour) = if usage.one_hour {
        (0, usage.cache_write)
    } else {
        (usage.cache_write, 0)
    };
    let message = json!({
        "id": format!("msg_{:016x}{:08x}", hash, crate::faults::mix64(hash) >> 32),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop.0,
        "stop_sequence": stop.1,
        "usage": {
            "input_tokens": usage.input,
            "output_tokens": words,
            "cache_creation_input_tokens": usage.cache_write,
            "cache_read_input_tokens": usage.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
            "service_tier": "standard",
        },
    });
    (message, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "model": "claude-x", "max_tokens": 5,
            "system": [{"type": "text", "text": "abcdefgh", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "one two three four five six"}],
        })
    }

    #[test]
    fn cache_prefix_is_written_once_then_read() {
        let b = body();
        let req = validate(&b, "").unwrap();
        assert_eq!(req.input, (8u64 + 27).div_ceil(4));
        let cache = PromptCache::default();
        let first = cache.split(0, &req);
        assert_eq!((first.cache_write, first.cache_read), (2, 0));
        assert_eq!(first.input, req.input - 2);
        cache.written(0, &req);
        let again = cache.split(0, &req);
        assert_eq!((again.cache_write, again.cache_read), (0, 2));
        assert_eq!(again.charged(), req.input - 2);
        // Another group has a cache of its own.
        assert_eq!(cache.split(1, &req).cache_write, 2);
    }

    #[test]
    fn answers_cut_at_max_tokens_or_stop_sequence() {
        let b = body();
        let req = validate(&b, "").unwrap();
        let (m, words) = render(&b, &req, &InputUsage::default(), 1);
        assert_eq!((words, m["stop_reason"].as_str()), (5, Some("max_tokens")));
        let mut stopping = b.clone();
        stopping["stop_sequences"] = json!(["three"]);
        let (m, _) = render(&stopping, &req, &InputUsage::default(), 1);
        assert_eq!(m["content"][0]["text"], "echo:one two ");
        assert_eq!(m["stop_sequence"], "three");
    }

    #[test]
    fn checks_name_the_field() {
        let err = |b: Value| validate(&b, "p.").unwrap_err().message;
        assert_eq!(err(json!({"max_tokens": 1})), "p.model: Field required");
        assert_eq!(
            err(json!({"model": "m", "max_tokens": 1, "messages": []})),
            "p.messages: at least one message is required"
        );
        let two = json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]});
        assert_eq!(
            err(two),
            "p.messages.1.role: Input should be 'user' or 'assistant'"
        );
        let block = json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": [{"text": "a"}]}]});
        assert_eq!(err(block), "p.messages.0.content.0.type: Field required");
    }
}
