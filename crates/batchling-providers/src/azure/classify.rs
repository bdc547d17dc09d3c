//! What an Azure OpenAI answer means: OpenAI's rules
//! ([`openai::classify`](crate::openai::classify())), which already know
//! Azure's 400 `content_filter` (a content-policy failure), plus Azure's
//! 429: its delay is in `retry-after-ms` / `retry-after`, and when an
//! answer has neither, in its error's message ("Please retry after 37
//! seconds"), under `code: "429"`.

use std::time::Duration;

use batchling_core::{RetryReason, Verdict};
use serde_json::Value;

use crate::attempt::{Answer, Attempt};
use crate::openai::classify::error_object;

/// Decide retry / give up / success / stop-the-run for one attempt.
pub fn classify(attempt: &Attempt) -> Verdict {
    let verdict = crate::openai::classify(attempt);
    match (verdict, attempt) {
        (
            Verdict::Retry {
                after: None,
                reason: RetryReason::RateLimited,
            },
            Attempt::Answered(a),
        ) => Verdict::Retry {
            after: message_delay(a),
            reason: RetryReason::RateLimited,
        },
        (v, _) => v,
    }
}

/// The wait in an Azure 429's message, when its `code` is "429": the
/// number of seconds after "retry after".
fn message_delay(answer: &Answer) -> Option<Duration> {
    let error = error_object(answer)?;
    if error.get("code").and_then(Value::as_str) != Some("429") {
        return None;
    }
    let message = error.get("message").and_then(Value::as_str)?;
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("retry after ")? + "retry after ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = rest[digits.len()..].trim_start();
    if !after.starts_with("second") {
        return None;
    }
    digits.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchling_core::{FailKind, StopReason};

    use crate::test_support::answer;

    fn verdict(a: Answer) -> Verdict {
        classify(&Attempt::Answered(a))
    }

    /// Azure's token-rate 429, as observed (provider-apis.md §6.4).
    const TOKEN_429: &str = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 37 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;

    #[test]
    fn a_429_is_a_rate_limit_and_its_headers_win() {
        let mut a = answer(429, TOKEN_429);
        a.retry_after = Some(Duration::from_millis(1500));
        assert_eq!(
            verdict(a),
            Verdict::Retry {
                after: Some(Duration::from_millis(1500)),
                reason: RetryReason::RateLimited
            }
        );
    }

    #[test]
    fn without_headers_the_message_says_the_wait() {
        assert_eq!(
            verdict(answer(429, TOKEN_429)),
            Verdict::Retry {
                after: Some(Duration::from_secs(37)),
                reason: RetryReason::RateLimited
            }
        );
        // Another code, or no number of seconds: no wait is made up.
        let other = r#"{"error":{"code":"rate_limit_exceeded","message":"Please retry after 37 seconds."}}"#;
        let vague = r#"{"error":{"code":"429","message":"Please retry after a while."}}"#;
        for body in [other, vague, "not json"] {
            assert_eq!(
                verdict(answer(429, body)),
                Verdict::Retry {
                    after: None,
                    reason: RetryReason::RateLimited
                },
                "{body}"
            );
        }
    }

    #[test]
    fn a_content_filter_400_is_a_content_policy_failure() {
        // Azure's body for a filtered prompt, `innererror` and all.
        let body = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":true,"severity":"medium"},"violence":{"filtered":false,"severity":"safe"}}}}}"#;
        assert_eq!(
            verdict(answer(400, body)),
            Verdict::Fail(FailKind::ContentPolicy)
        );
    }

    #[test]
    fn a_filtered_answer_is_an_answer() {
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"finish_reason":"content_filter","message":{"role":"assistant","content":null},"content_filter_results":{"sexual":{"filtered":true,"severity":"medium"}}}],"usage":{"prompt_tokens":9,"completion_tokens":0,"total_tokens":9}}"#;
        assert_eq!(verdict(answer(200, body)), Verdict::Success);
    }

    #[test]
    fn a_bad_key_stops_the_run() {
        let body = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
        assert!(matches!(
            verdict(answer(401, body)),
            Verdict::StopRun(StopReason::Unauthorized { status: 401, .. })
        ));
    }
}
