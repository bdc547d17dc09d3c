//! Durations as providers write them in rate-limit headers.

use std::fmt::Write as _;
use std::time::Duration;

/// Parse a rate-limit reset value: Go's `time.Duration` text (`6m0s`, `20ms`,
/// `1m23.5s`, `1h2m`, `3us`) or a bare number of seconds (`12`, `0.5`), as
/// some non-OpenAI servers send. Returns `None` for anything else, including
/// negative numbers, so a strange header never stops a run.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    // `try_from`: negative, NaN, infinite and too-big values (a header of
    // `1e300`) are refused; `from_secs_f64` would panic on the last two.
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0_f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        // Longest unit first so that "ms" is not read as minutes.
        let (scale, unit_len) = ["ms", "us", "µs", "ns", "h", "m", "s"]
            .iter()
            .find(|u| rest.starts_with(**u))
            .map(|u| {
                let scale = match *u {
                    "ms" => 1e-3,
                    "us" | "µs" => 1e-6,
                    "ns" => 1e-9,
                    "h" => 3600.0,
                    "m" => 60.0,
                    _ => 1.0,
                };
                (scale, u.len())
            })?;
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Write a duration the way Go's `time.Duration.String()` does, rounded UP
/// to whole milliseconds (a client that waits this long is never early):
/// `0s`, `350ms`, `1s`, `1.5s`, `6m0s`, `1m23.5s`, `1h2m3s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000) as u64;
    let mut out = String::with_capacity(12);
    if ms == 0 {
        out.push_str("0s");
    } else if ms < 1000 {
        let _ = write!(out, "{ms}ms");
    } else {
        let hours = ms / 3_600_000;
        let minutes = ms / 60_000 % 60;
        let secs = ms / 1000 % 60;
        let frac = ms % 1000;
        if hours > 0 {
            let _ = write!(out, "{hours}h");
        }
        if hours > 0 || minutes > 0 {
            let _ = write!(out, "{minutes}m");
        }
        let _ = write!(out, "{secs}");
        if frac > 0 {
            let f = format!("{frac:03}");
            let _ = write!(out, ".{}", f.trim_end_matches('0'));
        }
        out.push('s');
    }
    out
}

/// Parse Go-duration text (`1s`, `6m0s`, `20ms`, `2m59.56s`, `1h23m31s`,
/// `1.5µs`), also a bare number as seconds. `None` when unparseable.
#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> f64 {
        parse_duration(s).unwrap().as_secs_f64()
    }

    #[test]
    fn reference_values() {
        assert_eq!(secs("6m0s"), 360.0);
        assert!((secs("20ms") - 0.02).abs() < 1e-9);
        assert!((secs("2m59.56s") - 179.56).abs() < 1e-9);
        assert_eq!(secs("1h23m31s"), 5011.0);
        assert_eq!(secs("1s"), 1.0);
        assert!((secs("33.023s") - 33.023).abs() < 1e-9);
        assert!((secs("3us") - 3e-6).abs() < 1e-12);
        assert_eq!(secs("12"), 12.0);
        assert_eq!(secs("0.5"), 0.5);
    }

    #[test]
    fn junk_is_unknown() {
        // Too big for a Duration: found by the `ratelimit_headers` fuzz target
        // (fuzz/regressions/ratelimit_headers/), a panic before.
        let huge = format!("{}h", "9".repeat(30));
        for s in [
            "", "abc", "5x", "-1", "m5", "1.2.3s", "NaN", "inf", "1e300", &huge,
        ] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }

    #[test]
    fn go_duration_format() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(1), "1ms"),
            (Duration::from_millis(350), "350ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(33_023), "33.023s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(83_500), "1m23.5s"),
            (Duration::from_secs(5011), "1h23m31s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            let rounded = Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64);
            let parsed = parse_duration(text).unwrap();
            assert!(
                parsed.abs_diff(rounded) < Duration::from_micros(1),
                "{text}"
            );
        }
    }
}
