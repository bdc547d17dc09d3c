//! Token usage as reported by providers, normalised across endpoint shapes.

use serde::Deserialize;

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
    pub fn add(&mut self, other: Usage) {
        self.input += other.input;
        self.cached_input += other.cached_input;
        self.output += other.output;
    }

    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

#[derive(Deserialize)]
struct Envelope {
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
struct Details {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

/// The result of reading a 2xx response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// The body is JSON; `usage` if it carried one.
    Json(Option<Usage>),
    /// The body is not valid JSON: a truncated or garbled answer.
    NotJson,
}

/// Parse a response body just enough to validate it as JSON and pull out its
/// `usage` (chat, completions, embeddings and responses shapes).
pub fn read_body(body: &[u8]) -> BodyRead {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => BodyRead::Json(env.usage.map(|u| {
            Usage {
                input: u.prompt_tokens.or(u.input_tokens).unwrap_or(0),
                cached_input: u
                    .prompt_tokens_details
                    .or(u.input_tokens_details)
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
                output: u.completion_tokens.or(u.output_tokens).unwrap_or(0),
            }
        })),
        Err(_) => BodyRead::NotJson,
    }
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
    }
}
