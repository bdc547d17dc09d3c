//! What an answer of Anthropic's Messages API means (docs/providers.md,
//! "Anthropic: errors"). The status rule and the error-message reading are
//! OpenAI's ([`retry_status`], [`error_message`]): the SDKs retry alike.

use std::time::Duration;

use batchling_core::{RetryReason, StopReason, Verdict};
use serde_json::Value;

use crate::attempt::{Answer, Attempt};
use crate::openai::classify::{error_message, error_object, fail_kind, retry_status};

/// Decide retry / give up / success / stop-the-run for one attempt.
///
/// | answer | verdict |
/// |---|---|
/// | no answer (connection, timeout, malformed HTTP), 2xx not JSON, over the cap | as OpenAI's: retry, retry, fail |
/// | 2xx with a JSON body | success |
/// | 401, 403 | stop the run: unauthorized |
/// | 402 `billing_error`, or a 429 spend cap (`error.details.error_code` `enforced_spend_limit_reached`) | stop the run: quota |
/// | 429 | retry as a rate limit, after `retry-after`, else the reset of an empty budget |
/// | 529 `overloaded_error`, 500, 502, 503, 504, any 5xx | retry as a server error (not a rate limit: no lane pause, no smaller limits) |
/// | 408, 409 | retry |
/// | every other 4xx | fail |
///
/// `x-should-retry` overrides the retry-or-fail rule both ways, as in the
/// SDK ([`retry_status`]); it does not undo a stop.
pub fn classify(attempt: &Attempt) -> Verdict {
    let answer = match attempt {
        Attempt::Transport(_) => return crate::openai::classify(attempt),
        Attempt::Answered(a) => a,
    };
    let status = answer.status;
    if (200..300).contains(&status) {
        return crate::openai::classify(attempt);
    }
    if status == 401 || status == 403 {
        return Verdict::StopRun(StopReason::Unauthorized {
            status,
            message: error_message(answer),
        });
    }
    if status == 402 || (status == 429 && is_spend_cap(answer)) {
        return Verdict::StopRun(StopReason::QuotaExhausted {
            message: error_message(answer),
        });
    }
    if !retry_status(status, answer.should_retry) {
        return Verdict::Fail(fail_kind(answer));
    }
    if status == 429 {
        Verdict::Retry {
            after: answer.retry_after.or_else(|| empty_budget_reset(answer)),
            reason: RetryReason::RateLimited,
        }
    } else {
        // 529 is Anthropic's load, not the caller's limit.
        Verdict::Retry {
            after: answer.retry_after,
            reason: RetryReason::ServerError,
        }
    }
}

/// The spend cap: a 429 `rate_limit_error` whose details say
/// `enforced_spend_limit_reached` (waiting does not lift it), or one typed
/// `billing_error`.
fn is_spend_cap(answer: &Answer) -> bool {
    let Some(error) = error_object(answer) else {
        return false;
    };
    let code = error.pointer("/details/error_code").and_then(Value::as_str);
    let kind = error.get("type").and_then(Value::as_str);
    code == Some("enforced_spend_limit_reached") || kind == Some("billing_error")
}

/// The latest reset among the budgets the headers report as empty.
fn empty_budget_reset(answer: &Answer) -> Option<Duration> {
    let l = &answer.limits;
    [l.requests, l.tokens, l.input_tokens, l.output_tokens]
        .iter()
        .filter(|r| r.remaining == Some(0))
        .filter_map(|r| r.reset)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::{TransportError, TransportKind};
    use batchling_core::FailKind;
    use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
    use bytes::Bytes;

    fn answer(status: u16, error_type: &str) -> Answer {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"{error_type}","message":"said {status}"}},"request_id":"req_1"}}"#
        );
        Answer {
            status,
            body: Bytes::from(body),
            request_id: None,
            limits: RateLimitSnapshot::default(),
            retry_after: None,
            should_retry: None,
            body_is_json: true,
            usage: None,
        }
    }

    fn verdict(a: Answer) -> Verdict {
        classify(&Attempt::Answered(a))
    }

    fn retry(after: Option<Duration>, reason: RetryReason) -> Verdict {
        Verdict::Retry { after, reason }
    }

    #[test]
    fn success_and_bad_2xx_bodies() {
        assert_eq!(verdict(answer(200, "x")), Verdict::Success);
        let mut cut = answer(200, "x");
        cut.body_is_json = false;
        assert_eq!(verdict(cut), retry(None, RetryReason::MalformedBody));
    }

    #[test]
    fn rate_limit_waits_for_retry_after() {
        let mut a = answer(429, "rate_limit_error");
        a.retry_after = Some(Duration::from_secs(12));
        assert_eq!(
            verdict(a),
            retry(Some(Duration::from_secs(12)), RetryReason::RateLimited)
        );
    }

    #[test]
    fn rate_limit_without_retry_after_waits_for_the_empty_budget() {
        let mut a = answer(429, "rate_limit_error");
        a.limits.requests = LimitReading {
            limit: Some(50),
            remaining: Some(3),
            reset: Some(Duration::from_secs(30)),
        };
        a.limits.output_tokens = LimitReading {
            limit: Some(8000),
            remaining: Some(0),
            reset: Some(Duration::from_secs(4)),
        };
        assert_eq!(
            verdict(a),
            retry(Some(Duration::from_secs(4)), RetryReason::RateLimited)
        );
        assert_eq!(
            verdict(answer(429, "rate_limit_error")),
            retry(None, RetryReason::RateLimited)
        );
    }

    #[test]
    fn spend_cap_and_billing_stop_the_run() {
        // The mock's `__spend_limit__` answer.
        let mut cap = answer(429, "rate_limit_error");
        cap.body = Bytes::from_static(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend cap","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_2"}"#,
        );
        let quota = |message: &str| {
            Verdict::StopRun(StopReason::QuotaExhausted {
                message: message.into(),
            })
        };
        assert_eq!(verdict(cap), quota("spend cap"));
        assert_eq!(verdict(answer(429, "billing_error")), quota("said 429"));
        assert_eq!(verdict(answer(402, "billing_error")), quota("said 402"));
    }

    #[test]
    fn overloaded_and_outages_retry_as_server_errors() {
        for s in [529, 500, 502, 503, 504] {
            assert_eq!(
                verdict(answer(s, "overloaded_error")),
                retry(None, RetryReason::ServerError),
                "{s}"
            );
        }
        let mut a = answer(529, "overloaded_error");
        a.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            verdict(a),
            retry(Some(Duration::from_secs(3)), RetryReason::ServerError)
        );
    }

    #[test]
    fn auth_stops_the_run() {
        for (s, kind) in [(401, "authentication_error"), (403, "permission_error")] {
            assert_eq!(
                verdict(answer(s, kind)),
                Verdict::StopRun(StopReason::Unauthorized {
                    status: s,
                    message: format!("said {s}")
                })
            );
        }
    }

    #[test]
    fn timeout_and_conflict_retry_other_4xx_fail() {
        for s in [408, 409] {
            assert_eq!(
                verdict(answer(s, "conflict_error")),
                retry(None, RetryReason::ServerError),
                "{s}"
            );
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(
                verdict(answer(s, "invalid_request_error")),
                Verdict::Fail(FailKind::Invalid),
                "{s}"
            );
        }
    }

    #[test]
    fn should_retry_overrides_but_not_a_stop() {
        let mut a = answer(400, "invalid_request_error");
        a.should_retry = Some(true);
        assert_eq!(verdict(a), retry(None, RetryReason::ServerError));
        let mut b = answer(529, "overloaded_error");
        b.should_retry = Some(false);
        assert_eq!(verdict(b), Verdict::Fail(FailKind::Invalid));
        let mut c = answer(401, "authentication_error");
        c.should_retry = Some(true);
        assert!(matches!(verdict(c), Verdict::StopRun(_)));
    }

    #[test]
    fn transport_errors_are_openais() {
        let t = |kind| {
            classify(&Attempt::Transport(TransportError {
                kind,
                message: "x".into(),
            }))
        };
        assert_eq!(t(TransportKind::Timeout), retry(None, RetryReason::Timeout));
        assert_eq!(
            t(TransportKind::Connection),
            retry(None, RetryReason::Connection)
        );
        assert_eq!(
            t(TransportKind::Malformed),
            retry(None, RetryReason::Connection)
        );
        assert_eq!(t(TransportKind::TooLarge), Verdict::Fail(FailKind::Invalid));
        assert_eq!(t(TransportKind::Invalid), Verdict::Fail(FailKind::Invalid));
    }

    #[test]
    fn odd_bodies_do_not_stop_the_run() {
        let mut a = answer(429, "x");
        a.body = Bytes::from_static(b"<html>Too Many Requests</html>");
        assert_eq!(verdict(a), retry(None, RetryReason::RateLimited));
        let mut huge = answer(429, "x");
        let big = format!(
            r#"{{"error":{{"type":"billing_error","message":"{}"}}}}"#,
            "m".repeat(2 << 20)
        );
        huge.body = Bytes::from(big);
        // Over the parse bound: not read, so a plain rate limit.
        assert_eq!(verdict(huge), retry(None, RetryReason::RateLimited));
    }
}
