//! One line of an OpenAI batch input file, parsed and validated on its own.

use serde::de::IgnoredAny;
use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::json::{ScanError, scan_object, string_value};

/// A validated request line, ready to send.
///
/// The body is kept as the exact bytes of the input (`body` field), so it is
/// forwarded to the provider byte for byte, never re-serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// 1-based physical line number in the input file.
    pub line_no: u64,
    /// The caller's id for this request, unique within the file.
    pub custom_id: String,
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The JSON object to POST, verbatim.
    pub body: String,
    /// The body's `model`, when it is a string (for pricing).
    pub model: Option<String>,
}

impl RequestLine {
    /// Parse the body for inspection (token counting, model name).
    pub fn body_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.body)
    }
}

/// Why a line was rejected. Each becomes an error-file line naming the input
/// line number, and the rest of the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// The line is not a JSON object.
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    /// `custom_id` is absent.
    #[error("missing \"custom_id\"")]
    MissingCustomId,
    /// `custom_id` is not a non-empty string.
    #[error("\"custom_id\" must be a non-empty string, found {0}")]
    BadCustomId(String),
    /// `custom_id` starts with the prefix of the ids batchling writes for
    /// lines without a usable one ([`placeholder_custom_id`]).
    #[error(
        "\"custom_id\" {0:?} starts with {PLACEHOLDER_PREFIX:?}, which batchling reserves for lines without a usable id"
    )]
    ReservedCustomId(String),
    /// The same `custom_id` appeared on an earlier line.
    #[error("duplicate \"custom_id\" {custom_id:?}: first seen on line {first_line}")]
    DuplicateCustomId {
        /// The repeated id.
        custom_id: String,
        /// Where it was first seen (0 when unknown).
        first_line: u64,
    },
    /// `method` is absent or not POST.
    #[error("\"method\" must be \"POST\", found {0}")]
    BadMethod(String),
    /// `url` is absent or not a supported endpoint.
    #[error("{0}")]
    BadUrl(String),
    /// `body` is absent or not a JSON object.
    #[error("\"body\" must be a JSON object, found {0}")]
    BadBody(String),
    /// The body asks for streaming, which a batch cannot return.
    #[error("\"stream\": true is not supported in a batch; remove it or set it to false")]
    Streaming,
    /// The line is longer than the reader holds; it was skipped unread.
    #[error(
        "the line is longer than {} MiB, the most one request line may hold; it was skipped",
        limit_bytes >> 20
    )]
    TooLarge {
        /// The cap, in bytes.
        limit_bytes: u64,
    },
}

impl LineProblem {
    /// The `error.code` written to the error file.
    pub fn code(&self) -> &'static str {
        match self {
            LineProblem::InvalidJson(_) => "invalid_json_line",
            LineProblem::MissingCustomId
            | LineProblem::BadCustomId(_)
            | LineProblem::ReservedCustomId(_) => "invalid_custom_id",
            LineProblem::DuplicateCustomId { .. } => "duplicate_custom_id",
            LineProblem::BadMethod(_) => "invalid_method",
            LineProblem::BadUrl(_) => "invalid_url",
            LineProblem::BadBody(_) => "invalid_body",
            LineProblem::Streaming => "streaming_unsupported",
            LineProblem::TooLarge { .. } => "line_too_large",
        }
    }
}

/// A rejected line: where, which request (when its id could be read) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_no}: {problem}")]
pub struct LineError {
    /// 1-based physical line number.
    pub line_no: u64,
    /// The line's `custom_id`, when it was a usable string.
    pub custom_id: Option<String>,
    /// What is wrong.
    pub problem: LineProblem,
}

/// The prefix of [`placeholder_custom_id`]; an input line whose own id starts
/// with it is refused, so a placeholder never equals a real id.
pub const PLACEHOLDER_PREFIX: &str = "batchling:line:";

/// The `custom_id` written in the error-file line of an input line whose own
/// id is missing or not a usable string (`batchling:line:7` for line 7):
/// the format requires a string there, and strict readers refuse `null`.
/// Unique per line, and never a real id (see [`PLACEHOLDER_PREFIX`]).
pub fn placeholder_custom_id(line_no: u64) -> String {
    format!("{PLACEHOLDER_PREFIX}{line_no}")
}

/// Whether a physical line holds no request (blank lines are skipped, as the
/// Batch API does).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// What a value is, for messages, without reading it: its first byte says.
fn describe_raw(raw: &str) -> String {
    match raw.as_bytes().first() {
        Some(b'[') => "an array".into(),
        Some(b'{') => "an object".into(),
        Some(b'"') => "a string".into(),
        Some(b'n') => "null".into(),
        Some(b't' | b'f') => "a boolean".into(),
        _ => "a number".into(),
    }
}

/// A value already checked by the scanner, read for a message.
fn describe_span(raw: &str) -> String {
    serde_json::from_str::<Value>(raw).map_or_else(|_| describe_raw(raw), |v| describe(&v))
}

/// Why a line is not a JSON object, in serde_json's words when it has them.
fn invalid_reason(line: &[u8], scan: ScanError, keys: &[&str]) -> String {
    match scan {
        ScanError::DuplicateKey(k) => format!("duplicate field `{}`", keys[k]),
        ScanError::Syntax(_) => match serde_json::from_slice::<IgnoredAny>(line) {
            Err(e) => json_reason(&e),
            Ok(_) => "the line must be a JSON object".into(),
        },
    }
}

/// Parse and validate one non-blank line. Duplicate ids are the caller's
/// concern: it alone sees the whole file.
pub fn parse_line(line_no: u64, line: &[u8]) -> Result<RequestLine, LineError> {
    let fail = |custom_id: Option<String>, problem| LineError {
        line_no,
        custom_id,
        problem,
    };
    const KEYS: [&str; 4] = ["custom_id", "method", "url", "body"];
    let invalid = |scan| {
        fail(
            None,
            LineProblem::InvalidJson(invalid_reason(line, scan, &KEYS)),
        )
    };
    let text =
        std::str::from_utf8(line).map_err(|e| invalid(ScanError::Syntax(e.valid_up_to())))?;
    let [custom_id, method, url, body] = scan_object(text, KEYS).map_err(invalid)?;

    let custom_id = match custom_id.map(|r| &text[r]) {
        None => return Err(fail(None, LineProblem::MissingCustomId)),
        Some(raw) => match string_value(raw) {
            Some(s) if s.starts_with(PLACEHOLDER_PREFIX) => {
                return Err(fail(None, LineProblem::ReservedCustomId(s.into_owned())));
            }
            Some(s) if !s.trim().is_empty() => s.into_owned(),
            _ => return Err(fail(None, LineProblem::BadCustomId(describe_span(raw)))),
        },
    };
    let id = Some(custom_id.clone());
    match method.map(|r| &text[r]) {
        Some("\"POST\"") => {}
        Some(raw) if string_value(raw).is_some_and(|m| m == "POST") => {}
        Some(raw) => return Err(fail(id, LineProblem::BadMethod(describe_span(raw)))),
        None => return Err(fail(id, LineProblem::BadMethod("nothing".into()))),
    }
    let endpoint = match url.map(|r| &text[r]) {
        Some(raw) => match string_value(raw) {
            Some(u) => u
                .parse::<Endpoint>()
                .map_err(|e| fail(id.clone(), LineProblem::BadUrl(e.to_string())))?,
            None => {
                let msg = format!("\"url\" must be a string, found {}", describe_span(raw));
                return Err(fail(id, LineProblem::BadUrl(msg)));
            }
        },
        None => return Err(fail(id, LineProblem::BadUrl("missing \"url\"".into()))),
    };
    let body = match body.map(|r| &text[r]) {
        Some(raw) if raw.starts_with('{') => raw,
        Some(raw) => return Err(fail(id, LineProblem::BadBody(describe_raw(raw)))),
        None => return Err(fail(id, LineProblem::BadBody("nothing".into()))),
    };
    const PEEK: [&str; 2] = ["stream", "model"];
    // The line was checked whole, so only a repeated key can fail here.
    let [stream, model] = scan_object(body, PEEK).map_err(|e| {
        let found = match e {
            ScanError::DuplicateKey(k) => format!("an object with \"{}\" twice", PEEK[k]),
            ScanError::Syntax(_) => invalid_reason(body.as_bytes(), e, &PEEK),
        };
        fail(id.clone(), LineProblem::BadBody(found))
    })?;
    if stream.is_some_and(|r| &body[r] == "true") {
        return Err(fail(id, LineProblem::Streaming));
    }
    let model = model.and_then(|r| string_value(&body[r]).map(|m| m.into_owned()));
    Ok(RequestLine {
        line_no,
        custom_id,
        endpoint,
        body: body.to_owned(),
        model,
    })
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json reports "at line 1 column N"; within one JSONL line only the
    // column is meaningful.
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &msg[..i], e.column()),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> RequestLine {
        parse_line(3, line.as_bytes()).unwrap()
    }

    fn problem(line: &str) -> LineProblem {
        parse_line(3, line.as_bytes()).unwrap_err().problem
    }

    #[test]
    fn keeps_body_bytes_verbatim() {
        let body = r#"{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi \u00e9"}],"x":1.50}"#;
        let line = format!(
            r#"{{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{body}}}"#
        );
        let r = ok(&line);
        assert_eq!(r.body, body);
        assert_eq!(r.custom_id, "a");
        assert_eq!(r.endpoint, Endpoint::ChatCompletions);
        assert_eq!(r.line_no, 3);
    }

    #[test]
    fn refuses_ids_that_could_equal_a_placeholder() {
        let line = |id: &str| {
            format!(r#"{{"custom_id":{id},"method":"POST","url":"/v1/embeddings","body":{{}}}}"#)
        };
        assert_eq!(
            problem(&line(r#""batchling:line:2""#)),
            LineProblem::ReservedCustomId("batchling:line:2".into())
        );
        // Escaped spellings of the same text are the same id.
        assert!(matches!(
            problem(&line(r#""batchling\u003aline:9""#)),
            LineProblem::ReservedCustomId(_)
        ));
        assert_eq!(
            ok(&line(r#""batchling:lines""#)).custom_id,
            "batchling:lines"
        );
        assert_eq!(placeholder_custom_id(7), "batchling:line:7");
    }

    #[test]
    fn rejects_each_bad_field() {
        assert!(matches!(problem("{not json"), LineProblem::InvalidJson(_)));
        assert!(matches!(problem("[1,2]"), LineProblem::InvalidJson(_)));
        assert_eq!(
            problem(r#"{"method":"POST","url":"/v1/embeddings","body":{}}"#),
            LineProblem::MissingCustomId
        );
        assert_eq!(
            problem(r#"{"custom_id":"","method":"POST","url":"/v1/embeddings","body":{}}"#),
            LineProblem::BadCustomId("\"\"".into())
        );
        assert_eq!(
            problem(r#"{"custom_id":7,"method":"POST","url":"/v1/embeddings","body":{}}"#),
            LineProblem::BadCustomId("7".into())
        );
        assert_eq!(
            problem(r#"{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{}}"#),
            LineProblem::BadMethod("\"GET\"".into())
        );
        assert!(matches!(
            problem(r#"{"custom_id":"a","method":"POST","url":"/v1/images/edits","body":{}}"#),
            LineProblem::BadUrl(m) if m.contains("/v1/images/edits")
        ));
        assert_eq!(
            problem(r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":"x"}"#),
            LineProblem::BadBody("a string".into())
        );
        assert_eq!(
            problem(r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings"}"#),
            LineProblem::BadBody("nothing".into())
        );
        assert_eq!(
            problem(
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"stream":true}}"#
            ),
            LineProblem::Streaming
        );
    }

    #[test]
    fn repeated_keys_are_refused() {
        assert_eq!(
            problem(
                r#"{"custom_id":"a","custom_id":"b","method":"POST","url":"/v1/embeddings","body":{}}"#
            ),
            LineProblem::InvalidJson("duplicate field `custom_id`".into())
        );
        assert_eq!(
            problem(
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"stream":true,"stream":false}}"#
            ),
            LineProblem::BadBody("an object with \"stream\" twice".into())
        );
    }

    #[test]
    fn stream_false_is_fine() {
        ok(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"stream":false}}"#,
        );
    }

    #[test]
    fn error_names_line_and_keeps_id() {
        let e = parse_line(
            9,
            br#"{"custom_id":"x","method":"PUT","url":"/v1/embeddings","body":{}}"#,
        )
        .unwrap_err();
        assert_eq!(e.custom_id.as_deref(), Some("x"));
        assert!(e.to_string().starts_with("line 9: \"method\""), "{e}");
        assert_eq!(e.problem.code(), "invalid_method");
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(b"  \r"));
        assert!(!is_blank(b" {}"));
    }
}
