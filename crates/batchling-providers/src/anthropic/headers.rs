//! Reading Anthropic's rate-limit headers (docs/providers.md, "Anthropic:
//! rate limits").
//!
//! The retry headers are OpenAI's (the SDKs are the same): `retry-after`
//! (and `retry-after-ms`, which Anthropic's SDK also honours),
//! `x-should-retry` and `request-id` are read by the functions re-exported
//! here.

use std::time::Duration;

use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use reqwest::header::HeaderName;

pub use crate::openai::headers::{HeaderLookup, request_id, retry_after, should_retry};

/// The three header names of one limit: limit, remaining, reset.
type Names = [HeaderName; 3];

const fn names(limit: &'static str, remaining: &'static str, reset: &'static str) -> Names {
    [
        HeaderName::from_static(limit),
        HeaderName::from_static(remaining),
        HeaderName::from_static(reset),
    ]
}

static REQUESTS: Names = names(
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
);
static TOKENS: Names = names(
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
);
static INPUT_TOKENS: Names = names(
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
);
static OUTPUT_TOKENS: Names = names(
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
);

/// Read the `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
/// {limit,remaining,reset}` headers. A reset is an RFC 3339 instant, read as
/// the wait from now (zero when it has passed). Values that do not parse are
/// absent, as is a limit of 0 (no real limit is zero).
pub fn rate_limits<H: HeaderLookup + ?Sized>(headers: &H) -> RateLimitSnapshot {
    rate_limits_at(headers, batchling_core::clock::unix_nanos())
}

/// [`rate_limits`] as seen at `now` (nanoseconds since the Unix epoch).
fn rate_limits_at<H: HeaderLookup + ?Sized>(headers: &H, now: u64) -> RateLimitSnapshot {
    RateLimitSnapshot {
        requests: reading(headers, &REQUESTS, now),
        tokens: reading(headers, &TOKENS, now),
        input_tokens: reading(headers, &INPUT_TOKENS, now),
        output_tokens: reading(headers, &OUTPUT_TOKENS, now),
        coarse_resets: true,
    }
}

fn reading<H: HeaderLookup + ?Sized>(
    headers: &H,
    [limit, remaining, reset]: &Names,
    now: u64,
) -> LimitReading {
    let text = |name| headers.header(name).map(str::trim);
    let count = |name| text(name).and_then(|t| t.parse::<u64>().ok());
    LimitReading {
        limit: count(limit).filter(|&l| l > 0),
        remaining: count(remaining),
        reset: text(reset)
            .and_then(parse_rfc3339)
            .map(|at| wait_until(at, now)),
    }
}

/// Time from `now` to `at` (both nanoseconds since the epoch): zero if
/// past, saturated at `u64::MAX` nanoseconds (584 years) if absurdly far.
fn wait_until(at: i128, now: u64) -> Duration {
    let nanos = (at - i128::from(now)).clamp(0, i128::from(u64::MAX));
    Duration::from_nanos(nanos as u64)
}

/// The longest RFC 3339 instant read: `YYYY-MM-DDTHH:MM:SS`, nine fraction
/// digits and an offset are 35 bytes; anything much longer is not one.
const MAX_INSTANT_LEN: usize = 40;

/// An RFC 3339 instant (`2025-08-21T12:40:59Z`, with optional fraction and
/// `±HH:MM` offset) as nanoseconds since the Unix epoch. `None` for anything
/// else; the year is four digits, so the result always fits.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > MAX_INSTANT_LEN {
        return None;
    }
    let num = |at: usize, len: usize| -> Option<i64> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // A leap second (60) is read as the next instant.
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (fraction, rest) = fraction_nanos(&b[19..])?;
    let offset = offset_seconds(rest)?;
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(fraction))
}

/// An optional `.digits` fraction as nanoseconds (digits past the ninth are
/// dropped), and what follows it.
fn fraction_nanos(b: &[u8]) -> Option<(i64, &[u8])> {
    let Some(after_dot) = b.strip_prefix(b".") else {
        return Some((0, b));
    };
    let len = after_dot.iter().take_while(|d| d.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let nanos = (0..9).fold(0i64, |n, i| {
        n * 10
            + after_dot
                .get(i)
                .filter(|_| i < len)
                .map_or(0, |&d| i64::from(d - b'0'))
    });
    Some((nanos, &after_dot[len..]))
}

/// `Z` as 0, `+HH:MM` / `-HH:MM` as seconds east of UTC.
fn offset_seconds(b: &[u8]) -> Option<i64> {
    match b {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date: count years from
/// March, so the leap day is the last day of a year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    const SEC: u64 = 1_000_000_000;
    /// 2025-08-21T12:40:00Z, Anthropic's example minus 59 s.
    const NOW: u64 = 1_755_780_000 * SEC;

    use crate::test_support::header_map as map;

    #[test]
    fn all_four_limits() {
        let h = map(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-tokens-limit", "90000"),
            ("anthropic-ratelimit-tokens-remaining", "89000"),
            ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:01.5Z"),
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-08-21T14:40:02+02:00",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "10000"),
            ("anthropic-ratelimit-output-tokens-remaining", " 9000 "),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-08-21T12:39:00Z",
            ),
        ]);
        let s = rate_limits_at(&h, NOW);
        assert_eq!(
            s.requests,
            LimitReading {
                limit: Some(50),
                remaining: Some(49),
                reset: Some(Duration::from_secs(59)),
            }
        );
        assert_eq!(s.tokens.limit, Some(90_000));
        assert_eq!(s.tokens.reset, Some(Duration::from_millis(1500)));
        assert_eq!(s.input_tokens.remaining, Some(0));
        assert_eq!(s.input_tokens.reset, Some(Duration::from_secs(2)));
        assert_eq!(s.output_tokens.remaining, Some(9000));
        // A reset already past is no wait, not a negative one.
        assert_eq!(s.output_tokens.reset, Some(Duration::ZERO));
    }

    #[test]
    fn missing_headers_are_absent() {
        assert!(rate_limits(&HeaderMap::new()).is_empty());
        let s = rate_limits_at(&map(&[("anthropic-ratelimit-requests-limit", "5")]), NOW);
        assert_eq!(s.requests.limit, Some(5));
        assert!(s.requests.remaining.is_none() && s.tokens.is_empty());
        // OpenAI's names are not Anthropic's.
        assert!(rate_limits(&map(&[("x-ratelimit-limit-requests", "5")])).is_empty());
    }

    #[test]
    fn garbage_and_huge_values_are_ignored() {
        let h = map(&[
            ("anthropic-ratelimit-requests-limit", "0"),
            ("anthropic-ratelimit-requests-remaining", "-3"),
            ("anthropic-ratelimit-requests-reset", "6m0s"),
            (
                "anthropic-ratelimit-tokens-limit",
                "99999999999999999999999",
            ),
            ("anthropic-ratelimit-tokens-remaining", "1e3"),
            ("anthropic-ratelimit-tokens-reset", "2025-02-30T00:00:00Z"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                &"9".repeat(10_000),
            ),
            (
                "anthropic-ratelimit-output-tokens-limit",
                "18446744073709551615",
            ),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "9999-12-31T23:59:59Z",
            ),
        ]);
        let s = rate_limits_at(&h, NOW);
        assert!(s.requests.is_empty() && s.tokens.is_empty() && s.input_tokens.is_empty());
        assert_eq!(s.output_tokens.limit, Some(u64::MAX));
        // The far future saturates (at about 584 years), it does not wrap.
        assert_eq!(s.output_tokens.reset, Some(Duration::from_nanos(u64::MAX)));
    }

    #[test]
    fn rfc3339_forms() {
        let at = |t| parse_rfc3339(t).map(|n| n / i128::from(SEC));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("2025-08-21T12:40:59Z"), Some(1_755_780_059));
        assert_eq!(at("2025-08-21t12:40:59z"), Some(1_755_780_059));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(at("2025-08-21T05:40:59-07:00"), Some(1_755_780_059));
        assert_eq!(at("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(
            parse_rfc3339("2025-08-21T12:40:59.123456789999Z"),
            Some(1_755_780_059 * i128::from(SEC) + 123_456_789)
        );
        for bad in [
            "",
            "2025-08-21",
            "2025-08-21T12:40:59",
            "2025-08-21T12:40:59+0200",
            "2025-08-21T12:40:59.Z",
            "2025-13-01T00:00:00Z",
            "2025-08-21T24:00:00Z",
            "2025-08-21T12:60:00Z",
            "2025-08-21T12:40:59+24:00",
            "2001-02-29T00:00:00Z",
            "+025-08-21T12:40:59Z",
            "2025-08-21T12:40:59Zjunk",
            "２０２５-08-21T12:40:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_headers_are_openais() {
        let h = map(&[("retry-after", "7"), ("request-id", "req_018")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        assert_eq!(request_id(&h).as_deref(), Some("req_018"));
    }
}
