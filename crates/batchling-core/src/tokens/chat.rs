//! Chat messages, content parts and tool definitions: the cookbook's rules
//! plus our documented extension for the shapes the cookbook does not
//! handle (both in docs/providers.md, "Token counting").

use serde_json::{Map, Value};

use super::{Encoding, IMAGE_PART_TOKENS, TokenError, count_text};

/// Added for every message (`<|start|>{role}<|message|>...<|end|>`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Added once more for every message with a `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// Added once per conversation: the reply is primed with `<|start|>assistant<|message|>`.
pub const REPLY_PRIMING: u64 = 3;

/// Deepest nesting of object properties counted in a tool's parameters.
const MAX_SCHEMA_DEPTH: usize = 8;

/// Tokens of one message object (without the reply priming).
///
/// Every string field is encoded (role, content, name, tool_call_id, ...), `name`
/// adds [`TOKENS_PER_NAME`]. Beyond the cookbook: a `content` (or Responses
/// `output`) array is counted part by part ([`count_part`]); `tool_calls` and
/// `function_call` count each call's name and arguments; every other value
/// (numbers, booleans, null, other objects) is ignored.
pub fn count_message(encoding: Encoding, message: &Map<String, Value>) -> u64 {
    let mut n = TOKENS_PER_MESSAGE;
    for (key, value) in message {
        n += match value {
            Value::String(s) => {
                count_text(encoding, s) + if key == "name" { TOKENS_PER_NAME } else { 0 }
            }
            Value::Array(parts) if key == "content" || key == "output" => {
                parts.iter().map(|p| count_part(encoding, p)).sum()
            }
            Value::Array(calls) if key == "tool_calls" => calls
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|call| ["function", "custom"].map(|k| call.get(k)))
                .flatten()
                .filter_map(Value::as_object)
                .map(|f| count_call(encoding, f))
                .sum(),
            Value::Object(f) if key == "function_call" => count_call(encoding, f),
            _ => 0,
        };
    }
    n
}

/// Name, arguments (function calls) and input (custom tool calls) of a call.
fn count_call(encoding: Encoding, call: &Map<String, Value>) -> u64 {
    ["name", "arguments", "input"]
        .iter()
        .filter_map(|k| call.get(*k).and_then(Value::as_str))
        .map(|s| count_text(encoding, s))
        .sum()
}

/// Tokens of one content part.
///
/// A part with a string `text` (`text`, `input_text`, `output_text`) counts that
/// text; a `refusal` part its refusal; an image part (`image_url`,
/// `input_image`, `image`) counts [`IMAGE_PART_TOKENS`]; a bare string counts as
/// text. Anything else (audio, files, junk) counts 0.
pub fn count_part(encoding: Encoding, part: &Value) -> u64 {
    let obj = match part {
        Value::String(s) => return count_text(encoding, s),
        Value::Object(obj) => obj,
        _ => return 0,
    };
    if let Some(text) = obj.get("text").and_then(Value::as_str) {
        return count_text(encoding, text);
    }
    if let Some(text) = obj.get("refusal").and_then(Value::as_str) {
        return count_text(encoding, text);
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("image_url" | "input_image" | "image") => IMAGE_PART_TOKENS,
        _ => 0,
    }
}

/// Tokens of a chat `messages` array, including the reply priming.
///
/// Every message must be an object (else a [`TokenError`] naming its index).
pub fn count_chat_messages(encoding: Encoding, messages: &[Value]) -> Result<u64, TokenError> {
    let mut n = REPLY_PRIMING;
    for (i, message) in messages.iter().enumerate() {
        let obj = message
            .as_object()
            .ok_or_else(|| TokenError(format!("messages[{i}] is not an object")))?;
        n += count_message(encoding, obj);
    }
    Ok(n)
}

/// The cookbook's `num_tokens_for_tools` constants.
#[derive(Debug, Clone, Copy)]
struct ToolConstants {
    func_init: i64,
    prop_init: i64,
    prop_key: i64,
    enum_init: i64,
    enum_item: i64,
    func_end: i64,
}

/// cl100k models get the cookbook's gpt-3.5 / gpt-4 constants; o200k and
/// unknown models its gpt-4o / gpt-4o-mini ones.
fn tool_constants(encoding: Encoding) -> ToolConstants {
    ToolConstants {
        func_init: if encoding == Encoding::Cl100kBase {
            10
        } else {
            7
        },
        prop_init: 3,
        prop_key: 3,
        enum_init: -3,
        enum_item: 3,
        func_end: 12,
    }
}

/// The function objects among a body's tools: `tools[].function` (chat),
/// `tools[].custom`, flat `{type: "function", name, ...}` tools (Responses API,
/// when `flat` is true or the tool has a `name`), and chat's legacy `functions`
/// (when `legacy_functions`). Built-in tools (web_search, file_search, ...) and
/// junk are skipped.
pub(super) fn tool_functions(
    body: &Map<String, Value>,
    flat: bool,
    legacy_functions: bool,
) -> Vec<&Map<String, Value>> {
    let mut out = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        for tool in tools.iter().filter_map(Value::as_object) {
            let kind = match tool.get("type").and_then(Value::as_str) {
                Some(k @ ("function" | "custom")) => k,
                _ => continue,
            };
            if let Some(inner) = tool.get(kind).and_then(Value::as_object) {
                out.push(inner);
            } else if flat || tool.contains_key("name") {
                out.push(tool);
            }
        }
    }
    if legacy_functions && let Some(fns) = body.get("functions").and_then(Value::as_array) {
        out.extend(fns.iter().filter_map(Value::as_object));
    }
    out
}

/// Tool-definition overhead for a list of function objects (`{name,
/// description, parameters}`), by the cookbook's `num_tokens_for_tools`:
/// per function `func_init` + `"name:description"` (one trailing period
/// dropped); if it has properties, `prop_init` and per property `prop_key` +
/// `"key:type:description"`, with `enum_init` + per enum value `enum_item` +
/// the value; `func_end` once at the end. 0 for no functions.
///
/// Beyond the cookbook: a missing name/description/type counts as "", an
/// array `type` is joined with `" | "`, non-string enum values count as their
/// JSON text, and nested object properties (`properties`, or
/// `items.properties`) are counted like top-level ones, without `prop_init`.
pub fn count_tools(encoding: Encoding, functions: &[&Map<String, Value>]) -> u64 {
    if functions.is_empty() {
        return 0;
    }
    let c = tool_constants(encoding);
    let mut n: i64 = 0;
    let mut line = String::new();
    for f in functions {
        n += c.func_init;
        line.clear();
        line.push_str(f.get("name").and_then(Value::as_str).unwrap_or(""));
        line.push(':');
        line.push_str(strip_period(f.get("description")));
        n += count_text(encoding, &line) as i64;
        let props = f
            .get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        if let Some(props) = props.filter(|p| !p.is_empty()) {
            n += c.prop_init;
            n += count_properties(encoding, &c, props, 0, &mut line);
        }
    }
    n += c.func_end;
    n.max(0) as u64
}

fn count_properties(
    encoding: Encoding,
    c: &ToolConstants,
    props: &Map<String, Value>,
    depth: usize,
    line: &mut String,
) -> i64 {
    let mut n = 0;
    for (key, prop) in props {
        n += c.prop_key;
        line.clear();
        line.push_str(key);
        line.push(':');
        let Some(prop) = prop.as_object() else {
            line.push(':');
            n += count_text(encoding, line) as i64;
            continue;
        };
        if let Some(values) = prop.get("enum") {
            n += c.enum_init;
            for item in values.as_array().map(Vec::as_slice).unwrap_or_default() {
                n += c.enum_item;
                n += match item {
                    Value::String(s) => count_text(encoding, s),
                    Value::Array(_) | Value::Object(_) => 0,
                    scalar => count_text(encoding, &scalar.to_string()),
                } as i64;
            }
        }
        match prop.get("type") {
            Some(Value::String(t)) => line.push_str(t),
            Some(Value::Array(types)) => {
                for (i, t) in types.iter().filter_map(Value::as_str).enumerate() {
                    if i > 0 {
                        line.push_str(" | ");
                    }
                    line.push_str(t);
                }
            }
            _ => {}
        }
        line.push(':');
        line.push_str(strip_period(prop.get("description")));
        n += count_text(encoding, line) as i64;
        if depth < MAX_SCHEMA_DEPTH {
            let nested = prop
                .get("properties")
                .and_then(Value::as_object)
                .or_else(|| {
                    prop.get("items")
                        .and_then(|i| i.get("properties"))
                        .and_then(Value::as_object)
                });
            if let Some(nested) = nested {
                n += count_properties(encoding, c, nested, depth + 1, line);
            }
        }
    }
    n
}

fn strip_period(desc: Option<&Value>) -> &str {
    let d = desc.and_then(Value::as_str).unwrap_or("");
    d.strip_suffix('.').unwrap_or(d)
}
