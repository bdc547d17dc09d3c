//! One lane's RPM / TPM budget over fixed windows, and its per-second log.
//!
//! Windows are aligned to the server's start instant: window `k` covers
//! `[start + k·len, start + (k+1)·len)`. A request's cost is counted when it
//! is admitted and never refunded; a rejected request costs nothing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitWindow;
use crate::stats::SecondCount;

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

/// What a lane has admitted: the current window, and every second's totals.
#[derive(Debug, Default)]
struct State {
    index: u64,
    requests: u64,
    tokens: u64,
    /// Entry `i`: what was admitted in second `i` after the start.
    seconds: Vec<SecondCount>,
    rate_limited: u64,
}

/// What [`Budget::totals`] reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) rate_limited: u64,
    pub(crate) seconds: Vec<SecondCount>,
}

/// Fixed-window counters for one lane. The critical section is a few
/// integer operations; the lock is never held across an await.
#[derive(Debug)]
pub(crate) struct Budget {
    start: Instant,
    window_nanos: u64,
    /// Configured per-minute figures (for headers and "too large").
    rpm: Option<u64>,
    tpm: Option<u64>,
    /// What one window allows.
    window_requests: Option<u64>,
    window_tokens: Option<u64>,
    state: Mutex<State>,
}

impl Budget {
    pub(crate) fn new(
        start: Instant,
        window: LimitWindow,
        rpm: Option<u64>,
        tpm: Option<u64>,
    ) -> Self {
        Budget {
            start,
            window_nanos: window.length().as_nanos() as u64,
            rpm,
            tpm,
            window_requests: rpm.map(|r| window.quantum(r)),
            window_tokens: tpm.map(|t| window.quantum(t)),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether any limit is configured.
    pub(crate) fn is_active(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }

    /// The configured per-minute limits.
    pub(crate) fn per_minute(&self) -> (Option<u64>, Option<u64>) {
        (self.rpm, self.tpm)
    }

    /// Nanoseconds since the start.
    fn elapsed(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// The current window's index and the time left in it.
    fn position(&self, now: Instant) -> (u64, Duration) {
        let elapsed = self.elapsed(now);
        let index = elapsed / self.window_nanos;
        let left = self.window_nanos - elapsed % self.window_nanos;
        (index, Duration::from_nanos(left))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take one request and `tokens` from the current window, or say why not.
    #[cfg(test)]
    pub(crate) fn admit(&self, tokens: u64) -> Admission {
        self.admit_at(Instant::now(), tokens)
    }

    pub(crate) fn admit_at(&self, now: Instant, tokens: u64) -> Admission {
        if !self.is_active() {
            return Admission::Admitted;
        }
        let (index, left) = self.position(now);
        let mut state = self.lock();
        if state.index != index {
            state.index = index;
            state.requests = 0;
            state.tokens = 0;
        }
        let verdict = self.judge(&state, tokens, left);
        if verdict == Admission::Admitted {
            state.requests += 1;
            state.tokens += tokens;
            let second = (self.elapsed(now) / 1_000_000_000) as usize;
            if state.seconds.len() <= second {
                state.seconds.resize(second + 1, SecondCount::default());
            }
            state.seconds[second].requests += 1;
            state.seconds[second].tokens += tokens;
        } else {
            state.rate_limited += 1;
        }
        verdict
    }

    /// Whether one request of `tokens` fits the window `state` describes.
    fn judge(&self, state: &State, tokens: u64, left: Duration) -> Admission {
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
        Admission::Admitted
    }

    /// The header values right now.
    pub(crate) fn snapshot(&self) -> LimitSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> LimitSnapshot {
        let (index, reset) = self.position(now);
        let (used_requests, used_tokens) = if self.is_active() {
            let state = self.lock();
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

    /// Everything admitted and refused so far.
    pub(crate) fn totals(&self) -> Totals {
        let state = self.lock();
        Totals {
            rate_limited: state.rate_limited,
            seconds: state.seconds.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_window_counts_requests_and_tokens() {
        let start = Instant::now();
        let l = Budget::new(start, LimitWindow::Minute, Some(3), Some(100));
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
        let l = Budget::new(start, LimitWindow::Second, Some(120), Some(600));
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
        let tiny = Budget::new(start, LimitWindow::Second, Some(10), None);
        assert_eq!(tiny.admit_at(t, 0), Admission::Admitted);
        assert!(matches!(tiny.admit_at(t, 0), Admission::Limited { .. }));
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Budget::new(Instant::now(), LimitWindow::Minute, None, None);
        for _ in 0..1000 {
            assert_eq!(l.admit(1_000_000), Admission::Admitted);
        }
        let snap = l.snapshot();
        assert_eq!(snap.requests, None);
        assert_eq!(snap.tokens, None);
    }
}
