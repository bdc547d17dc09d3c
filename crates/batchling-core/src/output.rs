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
/// error status), with `response.body` embedded verbatim. `body_json` must be
/// one valid JSON value.
pub fn write_response_line(
    out: &mut Vec<u8>,
    line_id: &str,
    custom_id: &str,
    status_code: u16,
    request_id: &str,
    body_json: &[u8],
) {
    write_response_head(out, line_id, custom_id, status_code, request_id);
    out.extend_from_slice(body_json);
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
/// large answer is not copied into a second buffer. With spare room for the
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
    let len = body_json.len();
    body_json.reserve(head.len() + RESPONSE_TAIL.len());
    body_json.resize(len + head.len(), 0);
    body_json.copy_within(..len, head.len());
    body_json[..head.len()].copy_from_slice(&head);
    body_json.extend_from_slice(RESPONSE_TAIL);
    body_json
}

/// Append a line for a request that has no HTTP response to show.
/// `custom_id` is `None` only for input lines whose id could not be read.
pub fn write_failure_line(
    out: &mut Vec<u8>,
    line_id: &str,
    custom_id: Option<&str>,
    failure: &LineFailure<'_>,
) {
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, line_id);
    out.extend_from_slice(b",\"custom_id\":");
    match custom_id {
        Some(id) => push_json_str(out, id),
        None => out.extend_from_slice(b"null"),
    }
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
        write_failure_line(&mut out, "batch_req_2", None, &f);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"id":"batch_req_2","custom_id":null,"response":null,"error":{"code":"invalid_json_line","message":"line 4: not valid JSON"}})
        );
    }

    #[test]
    fn text_envelope_is_an_object() {
        let body = envelope_for_text(502, "<html>bad gateway</html>");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(v["error"]["code"], "http_502");
    }
}
