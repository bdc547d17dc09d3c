//! Reading Azure OpenAI's rate-limit headers (provider-apis.md §6.4).
//!
//! Azure sends `x-ratelimit-remaining-requests` and
//! `x-ratelimit-remaining-tokens`; some deployments also send
//! `x-ratelimit-limit-tokens` and `x-ratelimit-reset-tokens`, the reset in
//! plain integer seconds. `-1` and `0` are sentinels for "unknown": a
//! limit sent as one makes the whole dimension unknown (its `remaining`
//! and `reset` come with it, `-1` and `0` too, and a 0 there is not "none
//! left"); a negative `remaining` and a reset of 0 say nothing either. A
//! `remaining` without a limit is Azure's usual pair and is believed.

use std::time::Duration;

use batchling_core::duration::parse_duration;
use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use reqwest::header::HeaderName;

use crate::http::HeaderLookup;

/// The three header names of one limit: limit, remaining, reset.
type Names = [HeaderName; 3];

static REQUESTS: Names = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
static TOKENS: Names = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

fn integer<H: HeaderLookup + ?Sized>(headers: &H, name: &HeaderName) -> Option<i64> {
    headers.header(name)?.trim().parse().ok()
}

fn reading<H: HeaderLookup + ?Sized>(
    headers: &H,
    [limit, remaining, reset]: &Names,
) -> LimitReading {
    let limit = match integer(headers, limit) {
        Some(sentinel) if sentinel <= 0 => return LimitReading::default(),
        l => l.map(|l| l as u64),
    };
    LimitReading {
        limit,
        remaining: integer(headers, remaining).and_then(|r| u64::try_from(r).ok()),
        // Integer seconds; an OpenAI-style duration ("6m0s") reads too.
        reset: headers
            .header(reset)
            .and_then(|t| parse_duration(t.trim()))
            .filter(|d| *d > Duration::ZERO),
    }
}

/// Azure's `x-ratelimit-*` headers, read as the module docs say.
pub fn rate_limits<H: HeaderLookup + ?Sized>(headers: &H) -> RateLimitSnapshot {
    RateLimitSnapshot {
        requests: reading(headers, &REQUESTS),
        tokens: reading(headers, &TOKENS),
        ..RateLimitSnapshot::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::header_map as map;

    #[test]
    fn azure_usual_pair_is_believed() {
        // As a 2024 chat deployment answers (oaib issue #11).
        let s = rate_limits(&map(&[
            ("x-ratelimit-remaining-requests", "79"),
            ("x-ratelimit-remaining-tokens", "61353"),
        ]));
        assert_eq!(s.requests.remaining, Some(79));
        assert_eq!(s.tokens.remaining, Some(61_353));
        assert_eq!((s.requests.limit, s.tokens.limit), (None, None));
        assert_eq!(s.tokens.reset, None);
        // A real countdown at its end is "none left".
        let s = rate_limits(&map(&[("x-ratelimit-remaining-requests", "0")]));
        assert_eq!(s.requests.remaining, Some(0));
    }

    #[test]
    fn limit_and_reset_in_integer_seconds() {
        let s = rate_limits(&map(&[
            ("x-ratelimit-limit-tokens", "450000"),
            ("x-ratelimit-remaining-tokens", "449000"),
            ("x-ratelimit-reset-tokens", "37"),
        ]));
        assert_eq!(s.tokens.limit, Some(450_000));
        assert_eq!(s.tokens.remaining, Some(449_000));
        assert_eq!(s.tokens.reset, Some(Duration::from_secs(37)));
    }

    #[test]
    fn a_sentinel_limit_makes_the_dimension_unknown() {
        // As a Responses API deployment answered (openai-dotnet #838).
        for limit in ["-1", "0"] {
            let s = rate_limits(&map(&[
                ("x-ratelimit-limit-tokens", limit),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "0"),
                ("x-ratelimit-remaining-requests", "12"),
            ]));
            assert!(s.tokens.is_empty(), "{limit}: {:?}", s.tokens);
            assert_eq!(s.requests.remaining, Some(12));
        }
        let s = rate_limits(&map(&[
            ("x-ratelimit-limit-tokens", "-1"),
            ("x-ratelimit-remaining-tokens", "-1"),
            ("x-ratelimit-reset-tokens", "0"),
        ]));
        assert!(s.is_empty());
        // Without a limit, -1 and a zero reset say nothing either.
        let s = rate_limits(&map(&[
            ("x-ratelimit-remaining-tokens", "-1"),
            ("x-ratelimit-reset-tokens", "0"),
        ]));
        assert!(s.is_empty());
        assert!(rate_limits(&map(&[("x-ratelimit-remaining-tokens", "lots")])).is_empty());
    }
}
