//! The `/v1/responses` answer: a `Response` object as OpenAI's returns it.

use serde::Serialize;
use serde_json::Value;

use super::{Answer, CREATED, Plan, echo, responses_input_text, to_vec};

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: String,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<Incomplete>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<u64>,
    max_tool_calls: Option<u64>,
    model: &'a str,
    output: [Output<'a>; 1],
    parallel_tool_calls: bool,
    previous_response_id: Option<&'a str>,
    reasoning: Reasoning,
    service_tier: &'static str,
    store: bool,
    temperature: f64,
    text: &'a Value,
    tool_choice: &'a Value,
    tools: &'a Value,
    top_logprobs: u64,
    top_p: f64,
    truncation: &'a str,
    usage: Usage,
    user: Option<&'a str>,
    metadata: &'a Value,
}
#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}
#[derive(Serialize)]
struct Reasoning {
    effort: Option<()>,
    summary: Option<()>,
}
#[derive(Serialize)]
struct Output<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    status: &'static str,
    role: &'static str,
    content: [Content<'a>; 1],
}
#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}
#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}
#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}
#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

impl<'a> Output<'a> {
    /// The one assistant message of the answer.
    fn message(hash: u64, status: &'static str, text: &'a str) -> Self {
        Output {
            kind: "message",
            id: format!("msg_{hash:016x}"),
            status,
            role: "assistant",
            content: [Content {
                kind: "output_text",
                text,
                annotations: [],
                logprobs: [],
            }],
        }
    }
}

impl Usage {
    fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: 0,
                cache_write_tokens: 0,
            },
            output_tokens,
            output_tokens_details: OutputDetails {
                reasoning_tokens: 0,
            },
            total_tokens: input_tokens + output_tokens,
        }
    }
}

/// Every field present, the request's settings echoed (defaults where it
/// set none), and a cut answer `incomplete` for `max_output_tokens`, as the
/// real API marks it.
pub(super) fn render(body: &Value, plan: &Plan<'_>, prompt_tokens: u64, hash: u64) -> Answer {
    static EMPTY_LIST: Value = Value::Array(Vec::new());
    static EMPTY_OBJECT: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));
    static TEXT_FORMAT: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
        || serde_json::json!({"format": {"type": "text"}, "verbosity": "medium"}),
    );
    static AUTO: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| Value::String("auto".into()));
    let given = |name: &str| body.get(name).filter(|v| !v.is_null());
    let (text, words, cut) = echo(&responses_input_text(body), plan.max_out);
    let status = if cut { "incomplete" } else { "completed" };
    Answer {
        body: to_vec(&ResponseObject {
            id: format!("resp_{hash:016x}"),
            object: "response",
            created_at: CREATED,
            status,
            background: false,
            error: None,
            incomplete_details: cut.then_some(Incomplete {
                reason: "max_output_tokens",
            }),
            instructions: given("instructions").and_then(Value::as_str),
            max_output_tokens: given("max_output_tokens").and_then(Value::as_u64),
            max_tool_calls: given("max_tool_calls").and_then(Value::as_u64),
            model: plan.model,
            output: [Output::message(hash, status, &text)],
            parallel_tool_calls: given("parallel_tool_calls")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            previous_response_id: given("previous_response_id").and_then(Value::as_str),
            reasoning: Reasoning {
                effort: None,
                summary: None,
            },
            service_tier: "default",
            store: given("store").and_then(Value::as_bool).unwrap_or(true),
            temperature: given("temperature").and_then(Value::as_f64).unwrap_or(1.0),
            text: given("text").unwrap_or(&TEXT_FORMAT),
            tool_choice: given("tool_choice").unwrap_or(&AUTO),
            tools: given("tools").unwrap_or(&EMPTY_LIST),
            top_logprobs: given("top_logprobs").and_then(Value::as_u64).unwrap_or(0),
            top_p: given("top_p").and_then(Value::as_f64).unwrap_or(1.0),
            truncation: given("truncation")
                .and_then(Value::as_str)
                .unwrap_or("disabled"),
            usage: Usage::new(prompt_tokens, words),
            user: given("user").and_then(Value::as_str),
            metadata: given("metadata").unwrap_or(&EMPTY_OBJECT),
        }),
        prompt_tokens,
        completion_tokens: words,
    }
}
