//! Lines of OpenAI batch output and error files (`BatchRequestOutput`).
//!
//! Lines are written by hand rather than through a serde struct so that a
//! provider's response body is embedded byte for byte.

use std::io::Write;

/// The `error` object of a line whose request never got an HTTP answer
/// (or was rejected before sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFailure<'a> {
    /// Machine-readable code, e.g. `invalid_json_line`, `request_timeout`.
    pub code: &'a str,
    /// What happened, for people.
    pub message: &'a str,
}

/// Append a line for a request that got an HTTP response (success or an
/// error status), with `response.body` embedded verbatim but for raw CR and
/// LF bytes (see [`push_one_line`]). `body_json` must be one valid JSON value.
pub fn write_response_line(
    out: &mut Vec<u8>,
    line_id: &str,
    custom_id: &str,
    status_code: u16,
    request_id: &str,
    body_json: &[u8],
) {
    write_response_head(out, line_id, custom_id, status_code, request_id);
    push_one_line(out, body_json);
    out.extend_from_slice(RESPONSE_TAIL);
}

/// What follows the body in a response line.
const RESPONSE_TAIL: &[u8] = b"},\"error\":null}\n";

/// A response line up to its body.
fn write_response_head(
    out: &mut Vec<u8>,
    line_id: &str,
    custom_id: &str,
    status_code: u16,
    request_id: &str,
) {
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, line_id);
    out.extend_from_slice(b",\"custom_id\":");
    push_json_str(out, custom_id);
    let _ = write!(
        out,
        ",\"response\":{{\"status_code\":{status_code},\"request_id\":"
    );
    push_json_str(out, request_id);
    out.extend_from_slice(b",\"body\":");
}

/// [`write_response_line`] built around `body_json` in its own memory: the
/// body is moved up within it and the envelope written around it, so a
/// large answer is not copied into a second buffer. Raw CR and LF bytes are
/// removed in place, as [`push_one_line`] does. With spare room for the
/// envelope (a few hundred bytes) nothing is allocated.
pub fn response_line_around(
    mut body_json: Vec<u8>,
    line_id: &str,
    custom_id: &str,
    status_code: u16,
    request_id: &str,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(96 + line_id.len() + custom_id.len() + request_id.len());
    write_response_head(&mut head, line_id, custom_id, status_code, request_id);
    remove_line_breaks(&mut body_json);
    let len = body_json.len();
    body_json.reserve(head.len() + RESPONSE_TAIL.len());
    body_json.resize(len + head.len(), 0);
    body_json.copy_within(..len, head.len());
    body_json[..head.len()].copy_from_slice(&head);
    body_json.extend_from_slice(RESPONSE_TAIL);
    body_json
}

/// Append a line for a request that has no HTTP response to show. An input
/// line whose id could not be read has a
/// [`placeholder_custom_id`](crate::request::placeholder_custom_id) here.
pub fn write_failure_line(
    out: &mut Vec<u8>,
    line_id: &str,
    custom_id: &str,
    failure: &LineFailure<'_>,
) {
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, line_id);
    out.extend_from_slice(b",\"custom_id\":");
    push_json_str(out, custom_id);
    out.extend_from_slice(b",\"response\":null,\"error\":{\"code\":");
    push_json_str(out, failure.code);
    out.extend_from_slice(b",\"message\":");
    push_json_str(out, failure.message);
    out.extend_from_slice(b"}}\n");
}

/// Wrap a non-JSON error body in OpenAI's error envelope so that
/// `response.body` is always an object, as readers of the format expect.
pub fn envelope_for_text(status_code: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 96);
    out.extend_from_slice(b"{\"error\":{\"message\":");
    push_json_str(&mut out, text);
    let _ = write!(
        out,
        ",\"type\":\"non_json_response\",\"param\":null,\"code\":\"http_{status_code}\"}}}}"
    );
    out
}

/// Append one valid JSON text without its raw CR and LF bytes, so that it fits
/// on one JSONL line whatever whitespace the upstream put in it (a
/// pretty-printed body, a lone `\r`).
///
/// Lossless: inside a JSON string CR and LF must be escaped (`\n`), so a raw
/// one is whitespace between tokens, and two tokens that need a separator
/// always have a structural character (`,` `:` `[` `]` `{` `}`) between them.
/// A body without them (the usual case) costs one `memchr2` scan.
pub fn push_one_line(out: &mut Vec<u8>, json: &[u8]) {
    let mut rest = json;
    while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// [`push_one_line`] within `json`'s own buffer.
fn remove_line_breaks(json: &mut Vec<u8>) {
    let Some(first) = memchr::memchr2(b'\n', b'\r', json) else {
        return;
    };
    let mut kept = first;
    for i in first + 1..json.len() {
        let b = json[i];
        if b != b'\n' && b != b'\r' {
            json[kept] = b;
            kept += 1;
        }
    }
    json.truncate(kept);
}

/// Append `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct for every code point; writing into a
    // Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn response_line_matches_the_spec_shape() {
        let mut out = Vec::new();
        write_response_line(
            &mut out,
            "batch_req_1",
            "req-\"2\"",
            200,
            "req_9",
            br#"{"id":"chatcmpl-1","usage":{"prompt_tokens":3}}"#,
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"id":"batch_req_1","custom_id":"req-\"2\"","response":{"status_code":200,"request_id":"req_9","body":{"id":"chatcmpl-1","usage":{"prompt_tokens":3}}},"error":null})
        );
    }

    #[test]
    fn a_line_built_in_place_is_the_same_line() {
        let body = br#"{"id":"chatcmpl-1","usage":{"prompt_tokens":3}}"#;
        let mut copied = Vec::new();
        write_response_line(&mut copied, "batch_req_1", "a\"é", 200, "req_9", body);
        let mut room = Vec::with_capacity(body.len() + 4096);
        room.extend_from_slice(body);
        let at = room.as_ptr();
        let in_place = response_line_around(room, "batch_req_1", "a\"é", 200, "req_9");
        assert_eq!(in_place, copied);
        assert_eq!(
            in_place.as_ptr(),
            at,
            "no new allocation with room to spare"
        );
        // Without room it still works (one reallocation).
        let tight = response_line_around(body.to_vec(), "batch_req_1", "a\"é", 200, "req_9");
        assert_eq!(tight, copied);
    }

    #[test]
    fn failure_line_shape() {
        let mut out = Vec::new();
        let f = LineFailure {
            code: "invalid_json_line",
            message: "line 4: not valid JSON",
        };
        write_failure_line(&mut out, "batch_req_2", "batchling:line:4", &f);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"id":"batch_req_2","custom_id":"batchling:line:4","response":null,"error":{"code":"invalid_json_line","message":"line 4: not valid JSON"}})
        );
    }

    /// A JSON value printed with arbitrary whitespace (CR, LF, tab, space)
    /// between every pair of tokens, as a pretty-printing upstream might.
    fn spaced(v: &Value, ws: &mut impl Iterator<Item = &'static str>, out: &mut String) {
        fn gap(ws: &mut impl Iterator<Item = &'static str>, out: &mut String) {
            out.push_str(ws.next().unwrap_or(""));
        }
        gap(ws, out);
        match v {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        gap(ws, out);
                        out.push(',');
                    }
                    spaced(item, ws, out);
                }
                gap(ws, out);
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (k, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    gap(ws, out);
                    out.push_str(&serde_json::to_string(k).unwrap());
                    gap(ws, out);
                    out.push(':');
                    spaced(item, ws, out);
                }
                gap(ws, out);
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
        gap(ws, out);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Strings full of what must stay: escaped CR/LF, quotes, backslashes.
            "[a\\r\\n\\t \"\\\\é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\\n]{0,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever whitespace the body holds, the line is one JSONL line
        /// (one LF, at its end; no CR) whose body is the same value.
        #[test]
        fn every_line_is_one_line(
            v in json_value(),
            ws in proptest::collection::vec(
                proptest::sample::select(vec!["", " ", "\n", "\r", "\r\n", "\t", " \n  ", "\n\n\r"]),
                0..200,
            ),
        ) {
            let mut body = String::new();
            spaced(&v, &mut ws.into_iter(), &mut body);
            let mut out = Vec::new();
            write_response_line(&mut out, "batch_req_1", "id\n1", 200, "req\r", body.as_bytes());
            proptest::prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            proptest::prop_assert_eq!(out.last(), Some(&b'\n'));
            proptest::prop_assert!(!out.contains(&b'\r'));
            let line: Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&line["response"]["body"], &v);
            proptest::prop_assert_eq!(&line["custom_id"], "id\n1");
            // The in-place builder for large answers writes the same bytes.
            let around = response_line_around(body.into_bytes(), "batch_req_1", "id\n1", 200, "req\r");
            proptest::prop_assert_eq!(around, out);
        }
    }

    #[test]
    fn a_body_without_line_breaks_is_copied_as_is() {
        let body = br#"{ "a" : [1, 2,	3] }"#;
        let mut out = Vec::new();
        push_one_line(&mut out, body);
        assert_eq!(out, body);
        out.clear();
        push_one_line(&mut out, b"{\r\n  \"a\": \"x\\ny\"\r\n}\r");
        assert_eq!(out, br#"{  "a": "x\ny"}"#);
    }

    #[test]
    fn text_envelope_is_an_object() {
        let body = envelope_for_text(502, "<html>bad gateway</html>");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(v["error"]["code"], "http_502");
    }
}
