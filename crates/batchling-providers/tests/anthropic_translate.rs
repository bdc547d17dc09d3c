//! The OpenAI ⇄ Anthropic translation (`anthropic::translate`) against its
//! goldens, `tests/fixtures/anthropic/*.json`, compared as JSON values: adding
//! a case is adding a file. Then hostile input: arbitrary JSON (and JSON
//! shaped like the real thing), arbitrary bytes, deep nesting, never a panic.
//!
//! A fixture is one object:
//! - `about`: what the case shows;
//! - `translate`: `request`, `answer` or `error` (which function);
//! - `input` (a JSON value) or `input_text` (the exact bytes, as a string);
//! - `options` (requests): `{"mode": "strict"|"lenient", "default_max_tokens": N}`;
//! - `created` (answers): the `created` to give, default 1700000000;
//! - `expected` (the translated JSON), or `expected_error`:
//!   `{"kind": ..., "field": ...}` (field for request errors only);
//! - `expected_warnings` (requests): `[{"field": ..., "action": "dropped"|"clamped"}]`,
//!   default none.
//!
//! The goldens' translated values are also checked against the official
//! `anthropic` and `openai` Python packages' types
//! (`scripts/anthropic-sdk/check_translation.py`, packages pinned and installed
//! by `scripts/anthropic-sdk/setup.sh`); that test is skipped, with a
//! `SKIPPED:` line, only when the script exits 3 (cannot install).

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use batchling_providers::anthropic::translate::{
    Action, AnswerError, Mode, RequestError, RequestOptions, error_to_openai,
    message_to_chat_completion, request_to_messages,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic")
}

fn request_error_kind(e: &RequestError) -> &'static str {
    match e {
        RequestError::TooLarge { .. } => "too_large",
        RequestError::NotJson(_) => "not_json",
        RequestError::Streaming => "streaming",
        RequestError::Unsupported { .. } => "unsupported",
        RequestError::Invalid { .. } => "invalid",
        RequestError::Missing { .. } => "missing",
        _ => "other",
    }
}

fn answer_error_kind(e: &AnswerError) -> &'static str {
    match e {
        AnswerError::TooLarge { .. } => "too_large",
        AnswerError::Malformed { .. } => "malformed",
        AnswerError::UnknownStopReason(_) => "unknown_stop_reason",
        _ => "other",
    }
}

fn options(fixture: &Value) -> RequestOptions {
    let mut options = RequestOptions::default();
    if let Some(o) = fixture.get("options") {
        if o["mode"] == "lenient" {
            options.mode = Mode::Lenient;
        }
        if let Some(n) = o["default_max_tokens"].as_u64() {
            options.default_max_tokens = n;
        }
    }
    options
}

/// What the fixture's function gave: the JSON, or the error as
/// `{"kind", "field"}`, and the warnings.
fn run(fixture: &Value) -> Result<(Result<Value, Value>, Value), String> {
    let input = match (fixture.get("input"), fixture.get("input_text")) {
        (Some(v), None) => serde_json::to_vec(v).unwrap(),
        (None, Some(Value::String(s))) => s.clone().into_bytes(),
        _ => return Err("needs exactly one of input and input_text".into()),
    };
    let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    let no_warnings = json!([]);
    Ok(match fixture["translate"].as_str() {
        Some("request") => match request_to_messages(&input, &options(fixture)) {
            Ok(t) => {
                let warnings: Vec<Value> = t
                    .warnings
                    .iter()
                    .map(|w| {
                        let action = match w.action {
                            Action::Dropped => "dropped",
                            Action::Clamped { .. } => "clamped",
                            _ => "other",
                        };
                        json!({"field": w.field, "action": action})
                    })
                    .collect();
                (Ok(parse(t.body)), Value::Array(warnings))
            }
            Err(e) => (
                Err(json!({"kind": request_error_kind(&e), "field": e.field()})),
                no_warnings,
            ),
        },
        Some("answer") => {
            let created = fixture["created"].as_u64().unwrap_or(1_700_000_000);
            let out = message_to_chat_completion(&input, created)
                .map(parse)
                .map_err(|e| json!({"kind": answer_error_kind(&e)}));
            (out, no_warnings)
        }
        Some("error") => {
            let out = error_to_openai(&input)
                .map(parse)
                .map_err(|e| json!({"kind": answer_error_kind(&e)}));
            (out, no_warnings)
        }
        other => return Err(format!("unknown translate {other:?}")),
    })
}

/// How the fixture at `path` disagrees with the translation, if it does.
fn check(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let fixture: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    let (got, warnings) = match run(&fixture) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let want_warnings = fixture
        .get("expected_warnings")
        .cloned()
        .unwrap_or(json!([]));
    let problem = match (&got, fixture.get("expected"), fixture.get("expected_error")) {
        (_, Some(_), Some(_)) | (_, None, None) => {
            Some("needs exactly one of expected and expected_error".into())
        }
        (Ok(got), Some(want), None) if got == want => None,
        // A wanted error names its kind, and its field when it has one.
        (Err(got), None, Some(want))
            if got["kind"] == want["kind"]
                && want.get("field").is_none_or(|f| *f == got["field"]) =>
        {
            None
        }
        _ => Some(format!(
            "got {}",
            serde_json::to_string_pretty(&got).unwrap()
        )),
    };
    problem.or_else(|| {
        (warnings != want_warnings)
            .then(|| format!("warnings: got {warnings}, want {want_warnings}"))
    })
}

#[test]
fn every_fixture_translates_as_expected() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 25, "only {} fixtures", paths.len());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            check(p).map(|why| format!("{}: {why}", p.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_golden_is_valid_for_the_official_sdks() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let setup = Command::new("bash")
        .arg(repo.join("scripts/anthropic-sdk/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run setup.sh");
    if setup.status.code() == Some(3) {
        println!(
            "SKIPPED: the anthropic and openai packages cannot be installed (see setup.sh above)"
        );
        return;
    }
    assert!(
        setup.status.success(),
        "setup.sh failed: {:?}",
        setup.status
    );
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_owned();
    let check = Command::new(python)
        .arg(repo.join("scripts/anthropic-sdk/check_translation.py"))
        .arg(fixtures_dir())
        .output()
        .expect("run check_translation.py");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && stdout.trim_end().ends_with("OK"),
        "the goldens do not fit the SDKs' types:\n{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_translate_kind_and_error_kind_has_a_fixture() {
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let kind = fixture["translate"].as_str().unwrap_or_default().to_owned();
        match fixture.get("expected_error") {
            Some(e) => seen.insert(format!("{kind}:{}", e["kind"].as_str().unwrap_or_default())),
            None => seen.insert(kind),
        };
    }
    for want in [
        "request",
        "answer",
        "error",
        "request:unsupported",
        "request:invalid",
        "request:missing",
        "request:streaming",
        "answer:unknown_stop_reason",
        "answer:malformed",
        "error:malformed",
    ] {
        assert!(seen.contains(want), "no fixture for {want}; seen {seen:?}");
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_without_recursion() {
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let body = format!(r#"{{"model":"claude","messages":{deep}}}"#);
    assert!(matches!(
        request_to_messages(body.as_bytes(), &RequestOptions::default()),
        Err(RequestError::NotJson(_))
    ));
    let answer = format!(r#"{{"type":"message","content":{deep}}}"#);
    assert!(matches!(
        message_to_chat_completion(answer.as_bytes(), 0),
        Err(AnswerError::Malformed { .. })
    ));
    assert!(matches!(
        error_to_openai(answer.as_bytes()),
        Err(AnswerError::Malformed { .. })
    ));
}

#[test]
fn a_body_over_the_limit_is_refused_before_parsing() {
    let big = vec![b' '; batchling_providers::anthropic::translate::MAX_REQUEST_BYTES + 1];
    assert!(matches!(
        request_to_messages(&big, &RequestOptions::default()),
        Err(RequestError::TooLarge { .. })
    ));
}

#[test]
fn lenient_mode_lists_a_bounded_number_of_warnings() {
    let messages: Vec<Value> = (0..100)
        .map(|i| json!({"role": "user", "content": "hi", "name": format!("u{i}")}))
        .collect();
    let body =
        serde_json::to_vec(&json!({"model": "claude-haiku-4-5", "messages": messages})).unwrap();
    let options = RequestOptions {
        mode: Mode::Lenient,
        ..RequestOptions::default()
    };
    let t = request_to_messages(&body, &options).unwrap();
    assert_eq!(
        t.warnings.len(),
        batchling_providers::anthropic::translate::MAX_WARNINGS
    );
    assert_eq!(t.warnings.len() + t.more_warnings, 100);
    assert_eq!(t.warnings[3].field, "messages[3].name");
}

/// Member names the translation reads, so that generated objects reach past
/// the first check.
const NAMES: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "detail",
    "tool_calls",
    "id",
    "function",
    "name",
    "arguments",
    "tool_call_id",
    "tools",
    "parameters",
    "description",
    "strict",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "json_schema",
    "schema",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "user",
    "n",
    "logprobs",
    "stream",
    "cache_control",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "stop_reason",
    "stop_sequence",
    "input",
    "error",
    "message",
    "details",
    "error_code",
];

const STRINGS: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "text",
    "image_url",
    "function",
    "auto",
    "none",
    "required",
    "json_object",
    "json_schema",
    "message",
    "error",
    "tool_use",
    "end_turn",
    "refusal",
    "batchling_json_response",
    "data:image/png;base64,AAAA",
    "https://x.test/a.png",
    "{\"a\":1}",
    "",
    " ",
    "claude-haiku-4-5",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(NAMES), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Every fixture's input, to mutate: hostile input that is mostly right
/// reaches the translation's inner rules.
fn fixture_inputs() -> &'static [Value] {
    static INPUTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    INPUTS.get_or_init(read_fixture_inputs)
}

fn read_fixture_inputs() -> Vec<Value> {
    let mut inputs: Vec<Value> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
            fixture.get("input").cloned()
        })
        .collect();
    inputs.sort_by_key(Value::to_string);
    inputs
}

/// Replace the node `pick` (counted depth first, modulo the node count) of
/// `v` with `with`.
fn replace_node(v: &mut Value, pick: &mut usize, with: &Value) -> bool {
    if *pick == 0 {
        *v = with.clone();
        return true;
    }
    *pick -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|item| replace_node(item, pick, with)),
        Value::Object(members) => members
            .values_mut()
            .any(|item| replace_node(item, pick, with)),
        _ => false,
    }
}

fn translate_all(bytes: &[u8], mode: Mode) -> Result<(), TestCaseError> {
    if let Ok(t) = request_to_messages(
        bytes,
        &RequestOptions {
            mode,
            ..RequestOptions::default()
        },
    ) {
        let out: Value = serde_json::from_slice(&t.body).unwrap();
        prop_assert!(out["max_tokens"].is_u64() && out["messages"].is_array());
    }
    if let Ok(out) = message_to_chat_completion(bytes, 1) {
        let out: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&out["object"], "chat.completion");
    }
    if let Ok(out) = error_to_openai(bytes) {
        let out: Value = serde_json::from_slice(&out).unwrap();
        prop_assert!(out["error"]["message"].is_string());
    }
    Ok(())
}

proptest! {
    #[test]
    fn mutated_fixtures_never_panic(which: usize, pick: usize, with in json_value(), lenient: bool) {
        let inputs = fixture_inputs();
        let mut input = inputs[which % inputs.len()].clone();
        replace_node(&mut input, &mut (pick % 64), &with);
        let mode = if lenient { Mode::Lenient } else { Mode::Strict };
        translate_all(&serde_json::to_vec(&input).unwrap(), mode)?;
    }

    #[test]
    fn arbitrary_json_never_panics_and_successes_are_json(v in json_value(), lenient: bool) {
        let mode = if lenient { Mode::Lenient } else { Mode::Strict };
        translate_all(&serde_json::to_vec(&v).unwrap(), mode)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = request_to_messages(&bytes, &RequestOptions::default());
        let _ = message_to_chat_completion(&bytes, 1);
        let _ = error_to_openai(&bytes);
    }
}
