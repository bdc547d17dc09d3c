//! Durations as providers write them in rate-limit headers.

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
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
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
    Some(Duration::from_secs_f64(total))
}

/// Format a duration the way OpenAI writes reset headers (`1s`, `350ms`,
/// `6m0s`, `1m23.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = d.as_secs_f64();
    let h = (total_secs / 3600.0).floor() as u64;
    let m = ((total_secs - h as f64 * 3600.0) / 60.0).floor() as u64;
    let s = total_secs - h as f64 * 3600.0 - m as f64 * 60.0;
    let s = (s * 1000.0).round() / 1000.0;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

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
        for s in ["", "abc", "5x", "-1", "m5", "1.2.3s", "NaN"] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0, 20, 350, 1000, 1500, 60_000, 83_500, 5_011_000] {
            let d = Duration::from_millis(ms);
            let back = parse_duration(&format_duration(d)).unwrap();
            assert_eq!(back.as_millis(), d.as_millis(), "{}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_secs(360)), "6m0s");
    }
}
