//! Token usage as reported by providers, normalised across endpoint shapes.

use std::ops::Range;

use crate::json::scan_object;

/// Normalised usage of one answered request.
///
/// Every input count is a part of `input`, as in OpenAI's `usage`:
/// `cache_write_1h` ⊆ `cache_write` ⊆ `input` and `cached_input` ⊆ `input`.
/// Anthropic reports its cache reads and writes *beside* `input_tokens`, so
/// for its shape `input` is `input_tokens + cache_read_input_tokens +
/// cache_creation_input_tokens`: what the request read, whatever it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All input tokens, cache reads and writes included.
    pub input: u64,
    /// Input tokens read from the provider's cache (a part of `input`).
    pub cached_input: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Input tokens written to the provider's cache, every lifetime (a part
    /// of `input`; Anthropic's `cache_creation_input_tokens`).
    pub cache_write: u64,
    /// The cache writes with a 1-hour lifetime (a part of `cache_write`;
    /// the rest live 5 minutes and cost less).
    pub cache_write_1h: u64,
}

impl Usage {
    /// Add another request's usage.
    /// Saturating: the counts come from upstream answers, and a hostile or
    /// broken one may send `u64::MAX` (an overflow panics in debug builds).
    pub fn add(&mut self, other: Usage) {
        self.input = self.input.saturating_add(other.input);
        self.cached_input = self.cached_input.saturating_add(other.cached_input);
        self.output = self.output.saturating_add(other.output);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.cache_write_1h = self.cache_write_1h.saturating_add(other.cache_write_1h);
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

/// Whether an answer (a 2xx body) is the model refusing: Anthropic's
/// `stop_reason: "refusal"`, or a chat completion whose choice ended with
/// `finish_reason: "content_filter"` (OpenAI's and Azure's filter, and a
/// translated Claude refusal). Read only for a route with a content-policy
/// chain: the hot path never pays for it.
pub fn says_refusal(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Ok([stop, choices]) = scan_object(text, ["stop_reason", "choices"]) else {
        return false;
    };
    if stop.is_some_and(|r| crate::json::string_value(&text[r]).as_deref() == Some("refusal")) {
        return true;
    }
    let Some(r) = choices else {
        return false;
    };
    let Ok(serde_json::Value::Array(choices)) = serde_json::from_str(&text[r]) else {
        return false;
    };
    (choices.iter())
        .any(|c| c.get("finish_reason").and_then(|f| f.as_str()) == Some("content_filter"))
}

/// The `usage` object of any endpoint's shape, when it is one: OpenAI's
/// (`prompt_tokens` or `input_tokens`, cache counts inside them) or
/// Anthropic's (cache counts beside `input_tokens`).
fn read_usage(usage: &str) -> Option<Usage> {
    let [
        prompt,
        completion,
        input,
        output,
        prompt_details,
        input_details,
        cache_read,
        cache_creation_input,
        cache_creation,
    ] = scan_object(
        usage,
        [
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "prompt_tokens_details",
            "input_tokens_details",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation",
        ],
    )
    .ok()?;
    let count = |v: &Option<Range<usize>>| v.clone().and_then(|r| number(&usage[r]));
    let [write_5m, write_1h] = cache_creation
        .as_ref()
        .and_then(|r| {
            counts(
                &usage[r.clone()],
                ["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"],
            )
        })
        .unwrap_or_default();
    let anthropic = prompt.is_none()
        && (cache_read.is_some() || cache_creation_input.is_some() || cache_creation.is_some());
    let (input, cached, write) = if anthropic {
        let read = count(&cache_read).unwrap_or(0);
        let write = count(&cache_creation_input)
            .unwrap_or_else(|| write_5m.unwrap_or(0).saturating_add(write_1h.unwrap_or(0)));
        let plain = count(&input).unwrap_or(0);
        (
            plain.saturating_add(read).saturating_add(write),
            read,
            write,
        )
    } else {
        let [cached, write] = prompt_details
            .or(input_details)
            .and_then(|r| counts(&usage[r], ["cached_tokens", "cache_write_tokens"]))
            .unwrap_or_default();
        let input = count(&prompt).or(count(&input)).unwrap_or(0);
        (input, cached.unwrap_or(0), write.unwrap_or(0))
    };
    Some(Usage {
        input,
        cached_input: cached,
        output: count(&completion).or(count(&output)).unwrap_or(0),
        cache_write: write,
        // A broken report with more 1-hour writes than writes keeps the
        // parts inside the whole.
        cache_write_1h: write_1h.unwrap_or(0).min(write),
    })
}

/// The counts named by `keys` in the object `text`, when it is one.
fn counts<const N: usize>(text: &str, keys: [&str; N]) -> Option<[Option<u64>; N]> {
    let spans = scan_object(text, keys).ok()?;
    Some(spans.map(|s| s.and_then(|r| number(&text[r]))))
}

/// A token count: a JSON integer that fits in `u64`.
fn number(text: &str) -> Option<u64> {
    text.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_answers() {
        for yes in [
            r#"{"type":"message","stop_reason":"refusal","content":[]}"#,
            r#"{"object":"chat.completion","choices":[{"index":0,"finish_reason":"content_filter","message":{"content":null}}]}"#,
            r#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"content_filter"}]}"#,
        ] {
            assert!(says_refusal(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"type":"message","stop_reason":"end_turn"}"#,
            r#"{"choices":[{"finish_reason":"stop","message":{"content":"content_filter"}}]}"#,
            r#"{"data":[{"embedding":[0.1]}]}"#,
            "not json",
        ] {
            assert!(!says_refusal(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn chat_shape() {
        let b = br#"{"choices":[],"usage":{"prompt_tokens":22,"completion_tokens":2,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(
            read_body(b),
            BodyRead::Json(Some(Usage {
                input: 22,
                cached_input: 8,
                output: 2,
                ..Usage::default()
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
                output: 7,
                ..Usage::default()
            }))
        );
        let e = br#"{"object":"list","data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(
            read_body(e),
            BodyRead::Json(Some(Usage {
                input: 4,
                cached_input: 0,
                output: 0,
                ..Usage::default()
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
                output: 3,
                ..Usage::default()
            }))
        );
        assert_eq!(read_body(br#"{"usage":null}"#), BodyRead::Json(None));
        assert_eq!(read_body(b"{\"a\":\"\xff\"}"), BodyRead::NotJson);
    }

    #[test]
    fn anthropic_shape_counts_cache_reads_and_writes_as_input() {
        let b = br#"{"type":"message","usage":{"input_tokens":10,"output_tokens":36,"cache_creation_input_tokens":300,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"service_tier":"standard"}}"#;
        assert_eq!(
            read_body(b),
            BodyRead::Json(Some(Usage {
                input: 2310,
                cached_input: 2000,
                output: 36,
                cache_write: 300,
                cache_write_1h: 200,
            }))
        );
        // A batch result's usage without cache fields reads as plain input.
        let plain = br#"{"usage":{"input_tokens":11,"output_tokens":36,"service_tier":"batch"}}"#;
        assert_eq!(
            read_body(plain),
            BodyRead::Json(Some(Usage {
                input: 11,
                output: 36,
                ..Usage::default()
            }))
        );
        // Only the split by lifetime: the writes are its sum.
        let split = br#"{"usage":{"input_tokens":1,"output_tokens":2,"cache_creation":{"ephemeral_5m_input_tokens":4,"ephemeral_1h_input_tokens":8}}}"#;
        assert_eq!(
            read_body(split),
            BodyRead::Json(Some(Usage {
                input: 13,
                output: 2,
                cache_write: 12,
                cache_write_1h: 8,
                ..Usage::default()
            }))
        );
    }

    #[test]
    fn translated_chat_shape_carries_cache_writes() {
        // What `providers`' Anthropic translation writes: OpenAI's meaning
        // (cache counts inside `prompt_tokens`) plus the write lifetimes.
        let b = br#"{"object":"chat.completion","usage":{"prompt_tokens":2310,"completion_tokens":36,"total_tokens":2346,"prompt_tokens_details":{"cached_tokens":2000,"cache_write_tokens":300},"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}}"#;
        assert_eq!(
            read_body(b),
            BodyRead::Json(Some(Usage {
                input: 2310,
                cached_input: 2000,
                output: 36,
                cache_write: 300,
                cache_write_1h: 200,
            }))
        );
        // More 1-hour writes than writes (a broken report): clamped.
        let odd = br#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cache_write_tokens":2},"cache_creation":{"ephemeral_1h_input_tokens":9}}}"#;
        assert_eq!(
            read_body(odd),
            BodyRead::Json(Some(Usage {
                input: 5,
                cache_write: 2,
                cache_write_1h: 2,
                ..Usage::default()
            }))
        );
    }
}
