//! RPM / TPM enforcement over fixed windows, and the Go-duration text that
//! OpenAI's `x-ratelimit-reset-*` headers use.
//!
//! Windows are aligned to the server's start instant: window `k` covers
//! `[start + k·len, start + (k+1)·len)`. A request's cost is counted when it
//! is admitted and never refunded; a rejected request costs nothing.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitWindow;

/// Which limit rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitKind {
    Requests,
    Tokens,
}

impl LimitKind {
    /// The error `type` OpenAI uses for this limit.
    pub(crate) fn error_type(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// The outcome of asking for budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted,
    /// Over a limit in the current window; try again after `retry_after`.
    Limited {
        kind: LimitKind,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after: Duration,
    },
    /// The request alone costs more tokens than the per-minute limit: it can
    /// never be admitted.
    TooLarge {
        limit: u64,
        requested: u64,
    },
}

/// What the `x-ratelimit-*` headers say at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitSnapshot {
    /// `(configured per-minute limit, remaining in the current window)`.
    pub(crate) requests: Option<(u64, u64)>,
    pub(crate) tokens: Option<(u64, u64)>,
    /// Time until the current window ends.
    pub(crate) reset: Duration,
}

#[derive(Debug, Default)]
struct WindowState {
    index: u64,
    requests: u64,
    tokens: u64,
}

/// Fixed-window counters for one server. The critical section is a few
/// integer operations; the lock is never held across an await.
#[derive(Debug)]
pub(crate) struct Limiter {
    start: Instant,
    window_nanos: u64,
    /// Configured per-minute figures (for headers and "too large").
    rpm: Option<u64>,
    tpm: Option<u64>,
    /// What one window allows.
    window_requests: Option<u64>,
    window_tokens: Option<u64>,
    state: Mutex<WindowState>,
}

impl Limiter {
    pub(crate) fn new(
        start: Instant,
        window: LimitWindow,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Self {
        Limiter {
            start,
            window_nanos: window.length().as_nanos() as u64,
            rpm,
            tpm,
            window_requests: rpm.map(|r| window.quantum(r)),
            window_tokens: tpm.map(|t| window.quantum(t)),
            state: Mutex::new(WindowState::default()),
        }
    }

    /// Whether any limit is configured.
    pub(crate) fn is_active(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }

    /// The current window's index and the time left in it.
    fn position(&self, now: Instant) -> (u64, Duration) {
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as u64;
        let index = elapsed / self.window_nanos;
        let left = self.window_nanos - elapsed % self.window_nanos;
        (index, Duration::from_nanos(left))
    }

    /// Take one request and `tokens` from the current window, or say why not.
    pub(crate) fn admit(&self, tokens: u64) -> Admission {
        self.admit_at(Instant::now(), tokens)
    }

    pub(crate) fn admit_at(&self, now: Instant, tokens: u64) -> Admission {
        if !self.is_active() {
            return Admission::Admitted;
        }
        let (index, left) = self.position(now);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.index != index {
            *state = WindowState {
                index,
                requests: 0,
                tokens: 0,
            };
        }
        if let Some(limit) = self.window_requests
            && state.requests >= limit
        {
            return Admission::Limited {
                kind: LimitKind::Requests,
                limit,
                used: state.requests,
                requested: 1,
                retry_after: left,
            };
        }
        if let (Some(limit), Some(per_minute)) = (self.window_tokens, self.tpm) {
            if tokens > per_minute {
                return Admission::TooLarge {
                    limit: per_minute,
                    requested: tokens,
                };
            }
            // A request bigger than one window's quantum (possible only with
            // per-second windows) gets an empty window to itself.
            let fits = state.tokens + tokens <= limit || (tokens > limit && state.tokens == 0);
            if !fits {
                return Admission::Limited {
                    kind: LimitKind::Tokens,
                    limit,
                    used: state.tokens,
                    requested: tokens,
                    retry_after: left,
                };
            }
        }
        state.requests += 1;
        state.tokens += tokens;
        Admission::Admitted
    }

    /// The header values right now.
    pub(crate) fn snapshot(&self) -> LimitSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> LimitSnapshot {
        let (index, reset) = self.position(now);
        let (used_requests, used_tokens) = if self.is_active() {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.index == index {
                (state.requests, state.tokens)
            } else {
                (0, 0)
            }
        } else {
            (0, 0)
        };
        LimitSnapshot {
            requests: self
                .rpm
                .zip(self.window_requests)
                .map(|(rpm, limit)| (rpm, limit.saturating_sub(used_requests))),
            tokens: self
                .tpm
                .zip(self.window_tokens)
                .map(|(tpm, limit)| (tpm, limit.saturating_sub(used_tokens))),
            reset,
        }
    }
}

/// Write a duration the way Go's `time.Duration.String()` does, rounded UP
/// to whole milliseconds (a client that waits this long is never early):
/// `0s`, `350ms`, `1s`, `1.5s`, `6m0s`, `1m23.5s`, `1h2m3s`.
pub fn format_go_duration(d: Duration) -> String {
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
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (1e-3, 2)
        } else if rest.starts_with("us") {
            (1e-6, 2)
        } else if rest.starts_with("µs") {
            (1e-6, "µs".len())
        } else if rest.starts_with("ns") {
            (1e-9, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += value * unit;
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(format_go_duration(d), text);
            let rounded = Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64);
            let parsed = parse_go_duration(text).unwrap();
            assert!(
                parsed.abs_diff(rounded) < Duration::from_micros(1),
                "{text}"
            );
        }
    }

    #[test]
    fn go_duration_parse() {
        let ms = |s: &str| parse_go_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(ms("6m0s"), Some(360.0));
        assert_eq!(ms("20ms"), Some(0.02));
        assert!((ms("2m59.56s").unwrap() - 179.56).abs() < 1e-9);
        assert_eq!(ms("1h23m31s"), Some(5011.0));
        assert_eq!(ms("12"), Some(12.0));
        assert_eq!(ms("1.5µs"), Some(1.5e-6));
        assert_eq!(ms("bogus"), None);
        assert_eq!(ms(""), None);
        assert_eq!(ms("5x"), None);
    }

    #[test]
    fn minute_window_counts_requests_and_tokens() {
        let start = Instant::now();
        let l = Limiter::new(start, LimitWindow::Minute, Some(3), Some(100));
        let t = start + Duration::from_secs(10);
        assert_eq!(l.admit_at(t, 40), Admission::Admitted);
        assert_eq!(l.admit_at(t, 40), Admission::Admitted);
        // Third would exceed tokens: rejected and costs nothing.
        match l.admit_at(t, 40) {
            Admission::Limited {
                kind: LimitKind::Tokens,
                used: 80,
                retry_after,
                ..
            } => assert_eq!(retry_after, Duration::from_secs(50)),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.admit_at(t, 20), Admission::Admitted);
        match l.admit_at(t, 0) {
            Admission::Limited {
                kind: LimitKind::Requests,
                limit: 3,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let snap = l.snapshot_at(t);
        assert_eq!(snap.requests, Some((3, 0)));
        assert_eq!(snap.tokens, Some((100, 0)));
        // Next window: fresh.
        let t2 = start + Duration::from_secs(61);
        assert_eq!(l.snapshot_at(t2).requests, Some((3, 3)));
        assert_eq!(l.admit_at(t2, 100), Admission::Admitted);
        assert_eq!(
            l.admit_at(t2, 101),
            Admission::TooLarge {
                limit: 100,
                requested: 101
            }
        );
    }

    #[test]
    fn second_window_uses_quanta() {
        let start = Instant::now();
        let l = Limiter::new(start, LimitWindow::Second, Some(120), Some(600));
        let t = start + Duration::from_millis(250);
        assert_eq!(l.admit_at(t, 5), Admission::Admitted);
        assert_eq!(l.admit_at(t, 5), Admission::Admitted);
        match l.admit_at(t, 0) {
            Admission::Limited {
                kind: LimitKind::Requests,
                limit: 2,
                retry_after,
                ..
            } => assert_eq!(retry_after, Duration::from_millis(750)),
            other => panic!("{other:?}"),
        }
        let snap = l.snapshot_at(t);
        assert_eq!(snap.requests, Some((120, 0)));
        assert_eq!(snap.tokens, Some((600, 0)));
        // A request bigger than the 10-token quantum gets an empty window.
        let t2 = start + Duration::from_millis(1250);
        assert_eq!(l.admit_at(t2, 50), Admission::Admitted);
        assert!(matches!(l.admit_at(t2, 1), Admission::Limited { .. }));
        // Minimum quantum is 1.
        let tiny = Limiter::new(start, LimitWindow::Second, Some(10), None);
        assert_eq!(tiny.admit_at(t, 0), Admission::Admitted);
        assert!(matches!(tiny.admit_at(t, 0), Admission::Limited { .. }));
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Limiter::new(Instant::now(), LimitWindow::Minute, None, None);
        for _ in 0..1000 {
            assert_eq!(l.admit(1_000_000), Admission::Admitted);
        }
        let snap = l.snapshot();
        assert_eq!(snap.requests, None);
        assert_eq!(snap.tokens, None);
    }
}
