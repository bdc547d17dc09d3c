//! Token usage as reported by providers, normalised across endpoint shapes.

use crate::json::scan_object;

/// Normalised usage of one answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Input tokens (`prompt_tokens` or `input_tokens`).
    pub input: u64,
    /// Input tokens served from the provider's cache (a subset of `input`).
    pub cached_input: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
}

impl Usage {
    /// Add another request's usage.
    /// Saturating: the counts come from upstream answers, and a hostile or
    /// broken one may send `u64::MAX` (an overflow panics in debug builds).
    pub fn add(&mut self, other: Usage) {
        self.input = self.input.saturating_add(other.input);
        self.cached_input = self.cached_input.saturating_add(other.cached_input);
        self.output = self.output.saturating_add(other.output);
    }

    /// Input plus output (saturating, as [`Usage::add`]).
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The result of reading a 2xx response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// The body is JSON; `usage` if it carried one.
    Json(Option<Usage>),
    /// The body is not valid JSON: a truncated or garbled answer.
    NotJson,
}

/// Check that a response body is one JSON object and pull out its `usage`
/// (chat, completions, embeddings and responses shapes). A `usage` of an
/// unexpected shape reads as none: the answer itself is still good.
pub fn read_body(body: &[u8]) -> BodyRead {
    let Ok(body) = std::str::from_utf8(body) else {
        return BodyRead::NotJson;
    };
    match scan_object(body, ["usage"]) {
        Ok([usage]) => BodyRead::Json(usage.and_then(|span| read_usage(&body[span]))),
        Err(_) => BodyRead::NotJson,
    }
}

/// The `usage` object of any endpoint's shape, when it is one.
fn read_usage(usage: &str) -> Option<Usage> {
    let count = |v: Option<std::ops::Range<usize>>| v.and_then(|r| usage[r].parse::<u64>().ok());
    let [
        prompt,
        completion,
        input,
        output,
        prompt_details,
        input_details,
    ] = scan_object(
        usage,
        [
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "prompt_tokens_details",
            "input_tokens_details",
        ],
    )
    .ok()?;
    let cached = prompt_details.or(input_details).and_then(|r| {
        let [cached] = scan_object(&usage[r.clone()], ["cached_tokens"]).ok()?;
        cached.and_then(|c| usage[r][c].parse::<u64>().ok())
    });
    Some(Usage {
        input: count(prompt).or(count(input)).unwrap_or(0),
        cached_input: cached.unwrap_or(0),
        output: count(completion).or(count(output)).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_shape() {
        let b = br#"{"choices":[],"usage":{"prompt_tokens":22,"completion_tokens":2,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(
            read_body(b),
            BodyRead::Json(Some(Usage {
                input: 22,
                cached_input: 8,
                output: 2
            }))
        );
    }

    #[test]
    fn responses_and_embeddings_shapes() {
        let r = br#"{"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,"input_tokens_details":{"cached_tokens":0}}}"#;
        assert_eq!(
            read_body(r),
            BodyRead::Json(Some(Usage {
                input: 5,
                cached_input: 0,
                output: 7
            }))
        );
        let e = br#"{"object":"list","data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(
            read_body(e),
            BodyRead::Json(Some(Usage {
                input: 4,
                cached_input: 0,
                output: 0
            }))
        );
    }

    #[test]
    fn no_usage_and_garbage() {
        assert_eq!(read_body(br#"{"results":[]}"#), BodyRead::Json(None));
        assert_eq!(read_body(br#"{"choices":[{"#), BodyRead::NotJson);
        assert_eq!(read_body(b"[1]"), BodyRead::NotJson);
        assert_eq!(read_body(b"[null]"), BodyRead::NotJson);
        assert_eq!(read_body(br#"{"usage":1,"usage":2}"#), BodyRead::NotJson);
        assert_eq!(read_body(br#"{"a":1} {"b":2}"#), BodyRead::NotJson);
        // Valid JSON with a usage of another shape: the answer stands.
        assert_eq!(read_body(br#"{"usage":5}"#), BodyRead::Json(None));
        assert_eq!(
            read_body(
                br#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.5,"output_tokens":3}}"#
            ),
            BodyRead::Json(Some(Usage {
                input: 0,
                cached_input: 0,
                output: 3
            }))
        );
        assert_eq!(read_body(br#"{"usage":null}"#), BodyRead::Json(None));
        assert_eq!(read_body(b"{\"a\":\"\xff\"}"), BodyRead::NotJson);
    }
}
