//! One lane's budget over fixed windows, and its per-second log: requests
//! (RPM), tokens (TPM, OpenAI's one token limit), and Anthropic's two
//! token limits, input (ITPM) and output (OTPM) tokens.
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
    InputTokens,
    OutputTokens,
}

impl LimitKind {
    /// The error `type` OpenAI uses for this limit.
    pub(crate) fn error_type(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens | LimitKind::InputTokens | LimitKind::OutputTokens => "tokens",
        }
    }
}

/// A lane's per-minute limits; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rates {
    pub(crate) rpm: Option<u64>,
    pub(crate) tpm: Option<u64>,
    pub(crate) itpm: Option<u64>,
    pub(crate) otpm: Option<u64>,
}

/// What one request takes from its lane, besides the request itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Against TPM.
    pub(crate) tokens: u64,
    /// Against ITPM.
    pub(crate) input: u64,
    /// Against OTPM.
    pub(crate) output: u64,
}

impl Cost {
    /// A cost in TPM tokens only.
    #[cfg(test)]
    pub(crate) fn tokens(tokens: u64) -> Self {
        Cost {
            tokens,
            ..Cost::default()
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
    /// The request alone costs more tokens than a per-minute limit: it can
    /// never be admitted.
    TooLarge {
        kind: LimitKind,
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
    pub(crate) input_tokens: Option<(u64, u64)>,
    pub(crate) output_tokens: Option<(u64, u64)>,
    /// Time until the current window ends.
    pub(crate) reset: Duration,
}

/// What a lane has admitted: the current window, and every second's totals.
#[derive(Debug, Default)]
struct State {
    index: u64,
    requests: u64,
    tokens: u64,
    input: u64,
    output: u64,
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
    rates: Rates,
    /// What one window allows.
    window_requests: Option<u64>,
    window_tokens: Option<u64>,
    window_input: Option<u64>,
    window_output: Option<u64>,
    state: Mutex<State>,
}

impl Budget {
    pub(crate) fn new(start: Instant, window: LimitWindow, rates: Rates) -> Self {
        let quantum = |limit: Option<u64>| limit.map(|l| window.quantum(l));
        Budget {
            start,
            window_nanos: window.length().as_nanos() as u64,
            rates,
            window_requests: quantum(rates.rpm),
            window_tokens: quantum(rates.tpm),
            window_input: quantum(rates.itpm),
            window_output: quantum(rates.otpm),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether any limit is configured.
    pub(crate) fn is_active(&self) -> bool {
        self.rates != Rates::default()
    }

    /// The configured per-minute limits.
    pub(crate) fn per_minute(&self) -> Rates {
        self.rates
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

    /// Take one request of `cost` from the current window, or say why not.
    #[cfg(test)]
    pub(crate) fn admit(&self, cost: Cost) -> Admission {
        self.admit_at(Instant::now(), cost)
    }

    #[cfg(test)]
    pub(crate) fn admit_at(&self, now: Instant, cost: Cost) -> Admission {
        self.admit_seen_at(now, cost).0
    }

    /// Take one request of `cost` from the current window, or say why not,
    /// with the header values right after: a provider's limiter works them
    /// out when it admits a request, so they describe the budget as that
    /// request left it, whenever the answer goes out.
    pub(crate) fn admit_seen_at(&self, now: Instant, cost: Cost) -> (Admission, LimitSnapshot) {
        let (index, left) = self.position(now);
        if !self.is_active() {
            return (Admission::Admitted, self.snapshot_of([0; 4], left));
        }
        let mut state = self.lock();
        if state.index != index {
            state.index = index;
            state.requests = 0;
            state.tokens = 0;
            state.input = 0;
            state.output = 0;
        }
        let verdict = self.judge(&state, cost, left);
        if verdict == Admission::Admitted {
            state.requests += 1;
            state.tokens += cost.tokens;
            state.input += cost.input;
            state.output += cost.output;
            let second = (self.elapsed(now) / 1_000_000_000) as usize;
            if state.seconds.len() <= second {
                state.seconds.resize(second + 1, SecondCount::default());
            }
            let count = &mut state.seconds[second];
            count.requests += 1;
            count.tokens += cost.tokens;
            count.input_tokens += cost.input;
            count.output_tokens += cost.output;
        } else {
            state.rate_limited += 1;
        }
        let used = [state.requests, state.tokens, state.input, state.output];
        (verdict, self.snapshot_of(used, left))
    }

    /// Whether one request of `cost` fits the window `state` describes: the
    /// request limit first, then each token limit in turn.
    fn judge(&self, state: &State, cost: Cost, left: Duration) -> Admission {
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
        let dimensions = [
            (
                LimitKind::Tokens,
                self.window_tokens,
                self.rates.tpm,
                state.tokens,
                cost.tokens,
            ),
            (
                LimitKind::InputTokens,
                self.window_input,
                self.rates.itpm,
                state.input,
                cost.input,
            ),
            (
                LimitKind::OutputTokens,
                self.window_output,
                self.rates.otpm,
                state.output,
                cost.output,
            ),
        ];
        for (kind, window, per_minute, used, asked) in dimensions {
            let (Some(limit), Some(per_minute)) = (window, per_minute) else {
                continue;
            };
            if asked > per_minute {
                return Admission::TooLarge {
                    kind,
                    limit: per_minute,
                    requested: asked,
                };
            }
            // A request bigger than one window's quantum (possible only with
            // per-second windows) gets an empty window to itself.
            let fits = used + asked <= limit || (asked > limit && used == 0);
            if !fits {
                return Admission::Limited {
                    kind,
                    limit,
                    used,
                    requested: asked,
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
        let used = if self.is_active() {
            let state = self.lock();
            if state.index == index {
                [state.requests, state.tokens, state.input, state.output]
            } else {
                [0; 4]
            }
        } else {
            [0; 4]
        };
        self.snapshot_of(used, reset)
    }

    /// The header values when the current window has `used` (requests,
    /// tokens, input, output) and `reset` left.
    fn snapshot_of(&self, used: [u64; 4], reset: Duration) -> LimitSnapshot {
        let remaining = |per_minute: Option<u64>, window: Option<u64>, used: u64| {
            per_minute
                .zip(window)
                .map(|(per_minute, limit)| (per_minute, limit.saturating_sub(used)))
        };
        LimitSnapshot {
            requests: remaining(self.rates.rpm, self.window_requests, used[0]),
            tokens: remaining(self.rates.tpm, self.window_tokens, used[1]),
            input_tokens: remaining(self.rates.itpm, self.window_input, used[2]),
            output_tokens: remaining(self.rates.otpm, self.window_output, used[3]),
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

    fn rates(rpm: Option<u64>, tpm: Option<u64>) -> Rates {
        Rates {
            rpm,
            tpm,
            ..Rates::default()
        }
    }

    #[test]
    fn minute_window_counts_requests_and_tokens() {
        let start = Instant::now();
        let l = Budget::new(start, LimitWindow::Minute, rates(Some(3), Some(100)));
        let t = start + Duration::from_secs(10);
        assert_eq!(l.admit_at(t, Cost::tokens(40)), Admission::Admitted);
        assert_eq!(l.admit_at(t, Cost::tokens(40)), Admission::Admitted);
        // Third would exceed tokens: rejected and costs nothing.
        match l.admit_at(t, Cost::tokens(40)) {
            Admission::Limited {
                kind: LimitKind::Tokens,
                used: 80,
                retry_after,
                ..
            } => assert_eq!(retry_after, Duration::from_secs(50)),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.admit_at(t, Cost::tokens(20)), Admission::Admitted);
        match l.admit_at(t, Cost::tokens(0)) {
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
        assert_eq!(l.admit_at(t2, Cost::tokens(100)), Admission::Admitted);
        assert_eq!(
            l.admit_at(t2, Cost::tokens(101)),
            Admission::TooLarge {
                kind: LimitKind::Tokens,
                limit: 100,
                requested: 101
            }
        );
    }

    #[test]
    fn second_window_uses_quanta() {
        let start = Instant::now();
        let l = Budget::new(start, LimitWindow::Second, rates(Some(120), Some(600)));
        let t = start + Duration::from_millis(250);
        assert_eq!(l.admit_at(t, Cost::tokens(5)), Admission::Admitted);
        assert_eq!(l.admit_at(t, Cost::tokens(5)), Admission::Admitted);
        match l.admit_at(t, Cost::tokens(0)) {
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
        assert_eq!(l.admit_at(t2, Cost::tokens(50)), Admission::Admitted);
        assert!(matches!(
            l.admit_at(t2, Cost::tokens(1)),
            Admission::Limited { .. }
        ));
        // Minimum quantum is 1.
        let tiny = Budget::new(start, LimitWindow::Second, rates(Some(10), None));
        assert_eq!(tiny.admit_at(t, Cost::tokens(0)), Admission::Admitted);
        assert!(matches!(
            tiny.admit_at(t, Cost::tokens(0)),
            Admission::Limited { .. }
        ));
    }

    #[test]
    fn input_and_output_tokens_are_limits_of_their_own() {
        let start = Instant::now();
        let rates = Rates {
            itpm: Some(100),
            otpm: Some(10),
            ..Rates::default()
        };
        let l = Budget::new(start, LimitWindow::Minute, rates);
        let t = start + Duration::from_secs(1);
        let cost = |input, output| Cost {
            tokens: 0,
            input,
            output,
        };
        assert_eq!(l.admit_at(t, cost(90, 4)), Admission::Admitted);
        // Input still fits, output does not.
        assert!(matches!(
            l.admit_at(t, cost(5, 7)),
            Admission::Limited {
                kind: LimitKind::OutputTokens,
                used: 4,
                ..
            }
        ));
        assert!(matches!(
            l.admit_at(t, cost(20, 1)),
            Admission::Limited {
                kind: LimitKind::InputTokens,
                used: 90,
                ..
            }
        ));
        assert!(matches!(
            l.admit_at(t, cost(1, 11)),
            Admission::TooLarge {
                kind: LimitKind::OutputTokens,
                ..
            }
        ));
        let snap = l.snapshot_at(t);
        assert_eq!(snap.input_tokens, Some((100, 10)));
        assert_eq!(snap.output_tokens, Some((10, 6)));
        assert_eq!((snap.requests, snap.tokens), (None, None));
        let seconds = l.totals().seconds;
        assert_eq!((seconds[1].input_tokens, seconds[1].output_tokens), (90, 4));
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Budget::new(Instant::now(), LimitWindow::Minute, Rates::default());
        for _ in 0..1000 {
            assert_eq!(l.admit(Cost::tokens(1_000_000)), Admission::Admitted);
        }
        let snap = l.snapshot();
        assert_eq!(snap.requests, None);
        assert_eq!(snap.tokens, None);
    }
}
