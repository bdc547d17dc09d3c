//! Reading OpenAI's (and Azure's) rate-limit and retry headers.

use std::time::{Duration, SystemTime};

use batchling_core::duration::parse_duration;
use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use reqwest::header::HeaderName;

// Looked up by pre-built names: a `&str` name is parsed and validated on
// every lookup, several times per answer.
const fn name(n: &'static str) -> HeaderName {
    HeaderName::from_static(n)
}
static RETRY_AFTER_MS: HeaderName = name("retry-after-ms");
static RETRY_AFTER: HeaderName = name("retry-after");
static SHOULD_RETRY: HeaderName = name("x-should-retry");
static X_REQUEST_ID: HeaderName = name("x-request-id");
static REQUEST_ID: HeaderName = name("request-id");

pub use crate::http::HeaderLookup;

fn text<'h, H: HeaderLookup + ?Sized>(headers: &'h H, name: &HeaderName) -> Option<&'h str> {
    headers.header(name).map(str::trim)
}

/// A count header. Azure sends `-1` and `0` as "unknown" sentinels for the
/// limit; a limit of 0 or below is therefore treated as absent.
fn count<H: HeaderLookup + ?Sized>(headers: &H, name: &HeaderName, is_limit: bool) -> Option<u64> {
    let v: i64 = text(headers, name)?.parse().ok()?;
    match v {
        v if v < 0 => None,
        0 if is_limit => None,
        v => Some(v as u64),
    }
}

/// The three header names of one limit: limit, remaining, reset.
type Names = [HeaderName; 3];

static REQUESTS: Names = [
    name("x-ratelimit-limit-requests"),
    name("x-ratelimit-remaining-requests"),
    name("x-ratelimit-reset-requests"),
];
static TOKENS: Names = [
    name("x-ratelimit-limit-tokens"),
    name("x-ratelimit-remaining-tokens"),
    name("x-ratelimit-reset-tokens"),
];

fn reading<H: HeaderLookup + ?Sized>(
    headers: &H,
    [limit, remaining, reset]: &Names,
) -> LimitReading {
    LimitReading {
        limit: count(headers, limit, true),
        remaining: count(headers, remaining, false),
        reset: text(headers, reset).and_then(parse_duration),
    }
}

/// Read the `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
pub fn rate_limits<H: HeaderLookup + ?Sized>(headers: &H) -> RateLimitSnapshot {
    RateLimitSnapshot {
        requests: reading(headers, &REQUESTS),
        tokens: reading(headers, &TOKENS),
        ..RateLimitSnapshot::default()
    }
}

/// The server-given wait: `retry-after-ms` (milliseconds, may be fractional),
/// else `retry-after` (seconds, or an HTTP date).
pub fn retry_after<H: HeaderLookup + ?Sized>(headers: &H) -> Option<Duration> {
    // `try_from`: negative, NaN, infinite and too-big waits are ignored
    // (`from_secs_f64` panics on `1e300`).
    if let Some(wait) = text(headers, &RETRY_AFTER_MS)
        .and_then(|t| t.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
    {
        return Some(wait);
    }
    let ra = text(headers, &RETRY_AFTER)?;
    if let Ok(secs) = ra.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(ra).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `x-should-retry: true|false`, which overrides the status rules both ways.
pub fn should_retry<H: HeaderLookup + ?Sized>(headers: &H) -> Option<bool> {
    match text(headers, &SHOULD_RETRY)? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The provider's id for the request: `x-request-id`, or Anthropic's
/// `request-id`.
pub fn request_id<H: HeaderLookup + ?Sized>(headers: &H) -> Option<String> {
    text(headers, &X_REQUEST_ID)
        .or_else(|| text(headers, &REQUEST_ID))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    use crate::test_support::header_map as map;

    #[test]
    fn openai_headers() {
        let h = map(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let s = rate_limits(&h);
        assert_eq!(s.requests.limit, Some(60));
        assert_eq!(s.requests.remaining, Some(59));
        assert_eq!(s.requests.reset, Some(Duration::from_secs(1)));
        assert_eq!(s.tokens.limit, Some(150_000));
        assert_eq!(s.tokens.reset, Some(Duration::from_secs(360)));
    }

    #[test]
    fn azure_sentinels_and_plain_seconds() {
        let h = map(&[
            ("x-ratelimit-limit-tokens", "-1"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "12"),
            ("x-ratelimit-limit-requests", "0"),
        ]);
        let s = rate_limits(&h);
        assert_eq!(s.tokens.limit, None);
        assert_eq!(s.tokens.remaining, Some(0));
        assert_eq!(s.tokens.reset, Some(Duration::from_secs(12)));
        assert_eq!(s.requests.limit, None);
        assert!(rate_limits(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&map(&[("retry-after-ms", "250.5"), ("retry-after", "9")])),
            Some(Duration::from_micros(250_500))
        );
        assert_eq!(
            retry_after(&map(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(5));
        assert_eq!(
            retry_after(&map(&[("retry-after", &past)])),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&map(&[("retry-after", "soon")])), None);
        // Waits too big for a Duration are ignored, not a panic (fuzzing).
        assert_eq!(retry_after(&map(&[("retry-after", "1e300")])), None);
        assert_eq!(
            retry_after(&map(&[("retry-after-ms", "1e300"), ("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn should_retry_and_request_id() {
        assert_eq!(
            should_retry(&map(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(should_retry(&map(&[("x-should-retry", "maybe")])), None);
        assert_eq!(
            request_id(&map(&[("request-id", "req_1")])).as_deref(),
            Some("req_1")
        );
    }
}
