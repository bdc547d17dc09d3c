//! The one place that decides what an OpenAI-compatible answer means: an
//! online attempt ([`classify`]) and a failed Files/Batches call
//! ([`is_transient`]) go by the same status rule ([`retry_status`]).

use std::time::Duration;

use batchling_core::retry::says_context_window;
use batchling_core::{FailKind, RetryReason, StopReason, Verdict};
use serde_json::Value;

use crate::attempt::{Answer, Attempt, TransportKind};
use crate::batch::BatchApiError;

/// Whether an error status is worth another try: 408, 409, 429 and 5xx (529
/// included) are; every other is not. The server's `x-should-retry`, when
/// sent, overrides the status both ways, as in OpenAI's SDK.
pub fn retry_status(status: u16, should_retry: Option<bool>) -> bool {
    should_retry.unwrap_or(matches!(status, 408 | 409 | 429 | 500..=599))
}

/// Whether a failed Files/Batches call can work if tried again: no answer
/// (connection, timeout) can; an answer goes by [`retry_status`]; an answer
/// that does not parse or is over its cap cannot.
pub fn is_transient(error: &BatchApiError) -> bool {
    match error {
        BatchApiError::Status {
            status,
            should_retry,
            ..
        } => retry_status(*status, *should_retry),
        BatchApiError::Transport { .. } => true,
        BatchApiError::Decode { .. }
        | BatchApiError::TooLarge { .. }
        | BatchApiError::Ambiguous { .. } => false,
    }
}

/// Decide retry / give up / success / stop-the-run for one attempt.
///
/// Rules (docs/providers.md, "OpenAI: errors"): retry connection errors,
/// malformed HTTP, timeouts and 2xx bodies that are not JSON; fail an
/// answer over the response cap at once; stop the whole run on 401/403 and
/// on quota exhaustion; every other error status goes by [`retry_status`]
/// (408, 409, 429, 5xx retry; `x-should-retry` overrides).
pub fn classify(attempt: &Attempt) -> Verdict {
    let answer = match attempt {
        Attempt::Transport(t) => {
            let reason = match t.kind {
                TransportKind::Timeout => RetryReason::Timeout,
                TransportKind::Connection | TransportKind::Malformed => RetryReason::Connection,
                TransportKind::Invalid | TransportKind::TooLarge => {
                    return Verdict::Fail(FailKind::Invalid);
                }
            };
            return Verdict::Retry {
                after: None,
                reason,
            };
        }
        Attempt::Answered(a) => a,
    };
    let status = answer.status;
    if (200..300).contains(&status) {
        return if answer.body_is_json {
            Verdict::Success
        } else {
            Verdict::Retry {
                after: None,
                reason: RetryReason::MalformedBody,
            }
        };
    }
    if status == 401 || status == 403 {
        return Verdict::StopRun(StopReason::Unauthorized {
            status,
            message: error_message(answer),
        });
    }
    if status == 429 && is_quota_exhausted(answer) {
        return Verdict::StopRun(StopReason::QuotaExhausted {
            message: error_message(answer),
        });
    }
    let reason = if status == 429 {
        RetryReason::RateLimited
    } else {
        RetryReason::ServerError
    };
    if retry_status(status, answer.should_retry) {
        Verdict::Retry {
            after: server_delay(answer),
            reason,
        }
    } else {
        Verdict::Fail(fail_kind(answer))
    }
}

/// What kind of permanent failure an error answer is, from its status and
/// its error object's `code` and `type` (OpenAI's, Azure's and Anthropic's
/// shapes); only a context-window message without such a field is read as
/// text ([`says_context_window`]).
pub(crate) fn fail_kind(answer: &Answer) -> FailKind {
    let error = error_object(answer);
    let field = |k: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (code, kind) = (field("code"), field("type"));
    if code == "context_length_exceeded" {
        return FailKind::ContextWindow;
    }
    if code == "model_not_found" || (answer.status == 404 && kind == "not_found_error") {
        return FailKind::ModelNotFound;
    }
    // Azure's content filter refuses a prompt with 400 `content_filter`.
    if code == "content_filter" || code == "content_policy_violation" {
        return FailKind::ContentPolicy;
    }
    if matches!(answer.status, 400 | 413) && says_context_window(field("message")) {
        return FailKind::ContextWindow;
    }
    FailKind::Invalid
}

/// The wait a server asked for: `retry-after(-ms)`, else on a 429 the reset
/// time of whichever budget it reports as empty.
fn server_delay(answer: &Answer) -> Option<Duration> {
    if answer.retry_after.is_some() {
        return answer.retry_after;
    }
    if answer.status != 429 {
        return None;
    }
    [answer.limits.requests, answer.limits.tokens]
        .iter()
        .filter(|r| r.remaining == Some(0))
        .filter_map(|r| r.reset)
        .max()
}

/// The most of an error body parsed for its `error` object: a tree of
/// values takes many times the text's size, and real error envelopes are
/// a few hundred bytes.
const MAX_ERROR_PARSE: usize = 1 << 20;

pub(crate) fn error_object(answer: &Answer) -> Option<Value> {
    if answer.body.len() > MAX_ERROR_PARSE {
        return None;
    }
    let v: Value = serde_json::from_slice(&answer.body).ok()?;
    v.get("error").cloned()
}

/// OpenAI's `insufficient_quota`, or Anthropic's spend-cap 429.
fn is_quota_exhausted(answer: &Answer) -> bool {
    let Some(err) = error_object(answer) else {
        return false;
    };
    let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("");
    field("code") == "insufficient_quota"
        || field("type") == "insufficient_quota"
        || err
            .pointer("/details/error_code")
            .and_then(Value::as_str)
            .is_some_and(|c| c == "enforced_spend_limit_reached")
}

/// The provider's error message, or the start of the body when it has none.
pub fn error_message(answer: &Answer) -> String {
    if let Some(msg) = error_object(answer)
        .as_ref()
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
    {
        return msg.to_owned();
    }
    // Only the start is shown: no need to convert a large body in full.
    let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(2048)]);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {} with an empty body", answer.status);
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::TransportError;
    use batchling_core::ratelimit::LimitReading;

    use crate::test_support::answer;

    fn verdict(a: Answer) -> Verdict {
        classify(&Attempt::Answered(a))
    }

    fn is_retry(v: &Verdict, want: RetryReason) -> bool {
        matches!(v, Verdict::Retry { reason, .. } if *reason == want)
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 500, 502, 503, 504, 529] {
            assert!(
                is_retry(&verdict(answer(s, "{}")), RetryReason::ServerError),
                "{s}"
            );
        }
        assert!(is_retry(
            &verdict(answer(429, "{}")),
            RetryReason::RateLimited
        ));
    }

    #[test]
    fn permanent_failures_say_their_kind_from_fields_first() {
        let kind = |status, body: &str| match verdict(answer(status, body)) {
            Verdict::Fail(k) => k,
            v => panic!("{status} {body}: {v:?}"),
        };
        let openai_cw = r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert_eq!(kind(400, openai_cw), FailKind::ContextWindow);
        let vllm_cw = r#"{"error":{"message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","code":400}}"#;
        assert_eq!(kind(400, vllm_cw), FailKind::ContextWindow);
        let claude_cw = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(kind(400, claude_cw), FailKind::ContextWindow);
        let gone = r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#;
        assert_eq!(kind(404, gone), FailKind::ModelNotFound);
        let claude_gone =
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}"#;
        assert_eq!(kind(404, claude_gone), FailKind::ModelNotFound);
        let azure_filter = r#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400}}"#;
        assert_eq!(kind(400, azure_filter), FailKind::ContentPolicy);
        // A context-window message on a status that does not say "bad
        // request" is not trusted, nor is a 404 of another type.
        assert_eq!(kind(422, vllm_cw), FailKind::Invalid);
        assert_eq!(
            kind(404, r#"{"error":{"type":"invalid_request_error"}}"#),
            FailKind::Invalid
        );
        assert_eq!(kind(400, "not json"), FailKind::Invalid);
    }

    #[test]
    fn permanent_statuses_fail() {
        for s in [400, 404, 413, 422, 402] {
            assert_eq!(
                verdict(answer(s, "{}")),
                Verdict::Fail(FailKind::Invalid),
                "{s}"
            );
        }
    }

    #[test]
    fn auth_and_quota_stop_the_run() {
        let v = verdict(answer(401, r#"{"error":{"message":"Incorrect API key"}}"#));
        assert_eq!(
            v,
            Verdict::StopRun(StopReason::Unauthorized {
                status: 401,
                message: "Incorrect API key".into()
            })
        );
        let q = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(matches!(
            verdict(answer(429, q)),
            Verdict::StopRun(StopReason::QuotaExhausted { .. })
        ));
        let spend = r#"{"type":"error","error":{"type":"rate_limit_error","message":"cap","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(matches!(
            verdict(answer(429, spend)),
            Verdict::StopRun(StopReason::QuotaExhausted { .. })
        ));
    }

    #[test]
    fn should_retry_overrides_both_ways() {
        let mut a = answer(400, "{}");
        a.should_retry = Some(true);
        assert!(is_retry(&verdict(a), RetryReason::ServerError));
        let mut b = answer(503, "{}");
        b.should_retry = Some(false);
        assert_eq!(verdict(b), Verdict::Fail(FailKind::Invalid));
    }

    #[test]
    fn delays_from_headers() {
        let mut a = answer(429, "{}");
        a.retry_after = Some(Duration::from_millis(300));
        assert_eq!(
            verdict(a),
            Verdict::Retry {
                after: Some(Duration::from_millis(300)),
                reason: RetryReason::RateLimited
            }
        );
        let mut b = answer(429, "{}");
        b.limits.tokens = LimitReading {
            limit: Some(100),
            remaining: Some(0),
            reset: Some(Duration::from_secs(2)),
        };
        b.limits.requests = LimitReading {
            limit: Some(10),
            remaining: Some(3),
            reset: Some(Duration::from_secs(9)),
        };
        assert_eq!(
            verdict(b),
            Verdict::Retry {
                after: Some(Duration::from_secs(2)),
                reason: RetryReason::RateLimited
            }
        );
    }

    #[test]
    fn bad_2xx_body_and_transport() {
        let mut a = answer(200, "{\"choi");
        a.body_is_json = false;
        assert!(is_retry(&verdict(a), RetryReason::MalformedBody));
        assert_eq!(verdict(answer(200, "{}")), Verdict::Success);
        let t = Attempt::Transport(TransportError {
            kind: TransportKind::Timeout,
            message: "timed out".into(),
        });
        assert!(is_retry(&classify(&t), RetryReason::Timeout));
    }

    #[test]
    fn oversized_and_malformed_answers() {
        let t = |kind| {
            classify(&Attempt::Transport(TransportError {
                kind,
                message: "x".into(),
            }))
        };
        assert_eq!(t(TransportKind::TooLarge), Verdict::Fail(FailKind::Invalid));
        assert!(is_retry(
            &t(TransportKind::Malformed),
            RetryReason::Connection
        ));
        // A huge error body is not parsed into values; its start is shown.
        let huge = format!("{{\"error\":{{\"message\":\"{}\"}}}}", "m".repeat(2 << 20));
        let m = error_message(&answer(500, &huge));
        assert!(
            m.starts_with("{\"error\"") && m.chars().count() == 300,
            "{}",
            &m[..40]
        );
    }

    #[test]
    fn batch_api_errors_follow_the_same_status_rule() {
        let status = |status, should_retry| BatchApiError::Status {
            what: "x".into(),
            status,
            message: String::new(),
            retry_after: None,
            should_retry,
        };
        for s in [408, 409, 429, 500, 503, 529] {
            assert!(is_transient(&status(s, None)), "{s}");
        }
        for s in [400, 401, 404, 422] {
            assert!(!is_transient(&status(s, None)), "{s}");
        }
        assert!(!is_transient(&status(500, Some(false))));
        assert!(is_transient(&status(400, Some(true))));
        let transport = BatchApiError::Transport {
            what: "x".into(),
            message: "reset".into(),
        };
        assert!(is_transient(&transport));
        let decode = BatchApiError::Decode {
            what: "x".into(),
            message: "eof".into(),
        };
        assert!(!is_transient(&decode));
    }

    #[test]
    fn message_fallbacks() {
        assert_eq!(
            error_message(&answer(502, "")),
            "HTTP 502 with an empty body"
        );
        assert_eq!(error_message(&answer(502, " <html> ")), "<html>");
    }
}
