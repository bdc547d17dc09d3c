//! What a request costs against TPM, by the rule [`TokenCount`] chooses.

use batchling_core::tokens::TokenEstimate;
use serde_json::Value;

use crate::config::TokenCount;

/// The tokens a request is charged: see [`TokenCount`] for each rule.
pub(crate) fn charge(rule: TokenCount, body: &Value, estimate: &TokenEstimate) -> u64 {
    match rule {
        TokenCount::Exact => estimate.total(),
        TokenCount::OpenAi => text_chars(body, true).div_ceil(4) + estimate.max_output,
    }
}

/// Characters of every string value in `value`; at the top level (`top`),
/// the `model` is left out.
fn text_chars(value: &Value, top: bool) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().map(|v| text_chars(v, false)).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !(top && k.as_str() == "model"))
            .map(|(_, v)| text_chars(v, false))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_rule_is_chars_over_four_plus_reserved_output() {
        let body = serde_json::json!({
            "model": "gpt-4o-mini-and-a-long-name",
            "messages": [{"role": "user", "content": "héllo wörld"}],
            "max_tokens": 7,
        });
        let estimate = TokenEstimate {
            input: 11,
            max_output: 7,
            exact: true,
        };
        // "user" (4) + "héllo wörld" (11 characters) = 15 → 4, plus 7.
        assert_eq!(charge(TokenCount::OpenAi, &body, &estimate), 11);
        assert_eq!(charge(TokenCount::Exact, &body, &estimate), 18);
        // A nested "model" key is text like any other.
        let nested = serde_json::json!({"model": "m", "input": [{"model": "abcd"}]});
        assert_eq!(text_chars(&nested, true), 4);
    }
}
