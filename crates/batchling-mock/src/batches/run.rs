//! Running a batch: validating its input file, then answering each line
//! the way the online endpoints would.

use std::sync::atomic::Ordering::Relaxed;

use batchling_core::endpoint::Endpoint;
use batchling_core::output::{LineFailure, write_failure_line, write_response_line};
use serde_json::{Value, json};

use super::MARKER_BATCH_INVALID;
use crate::answer::{self, ApiError};
use crate::server::Shared;

/// The first problem of a batch input file, as a `BatchError`.
pub(crate) fn validate_file(content: &[u8], endpoint: &str) -> Option<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut any = false;
    for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        any = true;
        let line = i + 1;
        let bad = |code: &str, message: &str| {
            Some(json!({"code": code, "line": line, "message": message, "param": null}))
        };
        let Ok(v) = serde_json::from_slice::<Value>(raw) else {
            return bad(
                "invalid_json_line",
                "This line is not parseable as valid JSON.",
            );
        };
        let Some(cid) = v["custom_id"].as_str() else {
            return bad(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.",
            );
        };
        if !seen.insert(cid.to_owned()) {
            return bad(
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request.",
            );
        }
        if v["url"] != endpoint {
            return bad(
                "invalid_url",
                "The URL provided for this request does not match the batch endpoint.",
            );
        }
        if v["body"].to_string().contains(MARKER_BATCH_INVALID) {
            return bad(
                "invalid_request",
                "Mock marker __batch_invalid__: this line fails validation.",
            );
        }
    }
    if !any {
        return Some(
            json!({"code": "empty_file", "line": null, "message": "The input file is empty.", "param": null}),
        );
    }
    None
}

/// Answer the first `answered` lines like the online mock does; the rest get
/// `code`. Returns the output and error files and their line counts.
pub(crate) fn execute(
    shared: &Shared,
    content: &[u8],
    answered: usize,
    code: &str,
    message: &str,
) -> (Vec<u8>, Vec<u8>, u64, u64) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut done, mut failed) = (0u64, 0u64);
    let lines = content
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    for (i, raw) in lines.enumerate() {
        let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let cid = v["custom_id"].as_str().unwrap_or("");
        let line_id = shared.batches.new_id("batch_req_", 24);
        if i >= answered {
            write_failure_line(&mut err, &line_id, cid, &LineFailure { code, message });
            failed += 1;
            continue;
        }
        let request_id = shared.batches.new_id("req_", 16);
        let (status, body) = answer_line(shared, &v);
        if status == 200 {
            write_response_line(&mut out, &line_id, cid, 200, &request_id, &body);
            shared.batches.lines_answered.fetch_add(1, Relaxed);
            done += 1;
        } else {
            write_response_line(&mut err, &line_id, cid, status, &request_id, &body);
            failed += 1;
        }
    }
    (out, err, done, failed)
}

/// One line's answer, as the online endpoint would give it.
fn answer_line(shared: &Shared, line: &Value) -> (u16, Vec<u8>) {
    let body = &line["body"];
    let Ok(endpoint) = line["url"].as_str().unwrap_or("").parse::<Endpoint>() else {
        return (400, ApiError::invalid("Invalid URL.", None).body());
    };
    let text = body.to_string();
    if text.contains(crate::MARKER_FAIL_400) {
        return (
            400,
            ApiError::invalid(
                format!(
                    "Mock marker {}: this request always fails.",
                    crate::MARKER_FAIL_400
                ),
                None,
            )
            .body(),
        );
    }
    let max_out = shared.config.default_max_output;
    let plan = match answer::validate(endpoint, body, max_out) {
        Ok(p) => p,
        Err(e) => return (e.status, e.body()),
    };
    let mut with_model = body.clone();
    with_model["model"] = Value::from(plan.model);
    let input =
        batchling_core::tokens::estimate(endpoint, &with_model, max_out).map_or(0, |e| e.input);
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let answer = answer::render(endpoint, body, &plan, input, hash).body;
    if shared.config.shape != crate::Shape::Groq {
        return (200, answer);
    }
    let mut v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    crate::shape::groq_answer(&mut v, &shared.batches.new_id("req_", 16));
    (200, v.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_line() {
        let file =
            b"{\"custom_id\":\"a\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n\nnot json\n";
        let e = validate_file(file, "/v1/chat/completions").unwrap();
        assert_eq!(e["line"], 3);
        assert_eq!(e["code"], "invalid_json_line");
    }
}
