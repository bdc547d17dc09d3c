//! One limit of a lane: a dimension (what it counts), its per-minute
//! figure, even spacing and a sliding one-second log.

use std::collections::VecDeque;
use std::time::Duration;

use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use batchling_core::tokens::TokenEstimate;
use tokio::time::Instant;

use super::charge::{Charge, Sent, Stamp};

/// A request's input as the provider counted it (its answer's `usage`),
/// against what was reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settle {
    /// Input tokens reserved at admission.
    pub reserved: u64,
    /// Input tokens counted, cache reads and writes included.
    pub input: u64,
    /// Of those, read from the prompt cache.
    pub cache_reads: u64,
}

/// An answer, as a limit learns from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Observed<'a> {
    /// Its rate-limit headers.
    pub(super) snapshot: &'a RateLimitSnapshot,
    /// Its request's admission.
    pub(super) stamp: Stamp,
    /// The lane's running totals now.
    pub(super) sent: Sent,
    /// Now.
    pub(super) now: Instant,
    /// A 429: the provider charged nothing for it.
    pub(super) refused: bool,
}

/// The window every limit is enforced over, client side.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Two holds ending this close are about one window of the provider.
const HOLD_SAME_WINDOW: Duration = Duration::from_millis(25);

/// How far behind schedule admissions may fall and still catch up.
const SLACK: Duration = Duration::from_millis(10);

/// What one request costs, in the units the limits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Input tokens.
    pub input: u64,
    /// Output tokens reserved (providers charge the maximum at admission).
    pub output: u64,
}

impl Cost {
    /// A cost counted as tokens only (the input side), for callers that
    /// know one total.
    pub fn tokens(n: u64) -> Self {
        Cost {
            input: n,
            output: 0,
        }
    }
}

impl From<TokenEstimate> for Cost {
    fn from(t: TokenEstimate) -> Self {
        Cost {
            input: t.input,
            output: t.max_output,
        }
    }
}

/// What a limit counts. Each has its own counting rule, so a provider that
/// keeps requests, input tokens and output tokens apart (Anthropic) fits
/// the same lane as one that keeps requests and tokens (OpenAI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// One per request.
    Requests,
    /// Input plus reserved output.
    Tokens,
    /// Input only.
    InputTokens,
    /// Reserved output only.
    OutputTokens,
}

impl Dimension {
    /// The units of `cost` this dimension counts.
    pub fn units(self, cost: Cost) -> u64 {
        match self {
            Dimension::Requests => 1,
            Dimension::Tokens => cost.input.saturating_add(cost.output),
            Dimension::InputTokens => cost.input,
            Dimension::OutputTokens => cost.output,
        }
    }

    /// This dimension's share of a lane's running totals.
    fn total(self, sent: Sent) -> u64 {
        match self {
            Dimension::Requests => sent.requests,
            d => d.units(sent.tokens),
        }
    }

    /// What a response's headers say about this dimension (OpenAI's
    /// headers name requests and tokens only).
    pub(super) fn reading(self, s: &RateLimitSnapshot) -> Option<&LimitReading> {
        Some(match self {
            Dimension::Requests => &s.requests,
            Dimension::Tokens => &s.tokens,
            Dimension::InputTokens => &s.input_tokens,
            Dimension::OutputTokens => &s.output_tokens,
        })
    }

    /// Whether the provider may count this dimension its own way (every
    /// token dimension; a request is a request).
    fn learns_charge(self) -> bool {
        self != Dimension::Requests
    }
}

/// One limit: even spacing plus a sliding one-second log.
#[derive(Debug)]
pub(super) struct Limit {
    pub(super) dim: Dimension,
    /// Units per minute as configured or learned.
    pub(super) per_minute: Option<u64>,
    given: Option<u64>,
    /// Earliest time the next admission may happen (spacing).
    next_at: Instant,
    /// Admissions in the last window: (time, units).
    log: VecDeque<(Instant, u64)>,
    in_window: u64,
    /// After a low `remaining`: at most `budget` more units until `until`.
    hold: Option<(Instant, u64)>,
    /// Log admissions even with no limit, because one may be learned.
    track: bool,
    /// What the provider charges per unit of ours (`charge.rs`).
    charge: Charge,
}

impl Limit {
    pub(super) fn new(dim: Dimension, given: Option<u64>, now: Instant, track: bool) -> Self {
        Limit {
            dim,
            track,
            per_minute: given,
            given,
            next_at: now,
            log: VecDeque::new(),
            in_window: 0,
            hold: None,
            charge: Charge::default(),
        }
    }

    /// What `cost` takes from this limit, in the provider's count.
    fn units(&self, cost: Cost) -> u64 {
        self.charge.of(self.dim.units(cost))
    }

    /// Provider units per unit of ours, as learned (1 until then).
    pub(super) fn charge_ratio(&self) -> f64 {
        self.charge.ratio()
    }

    /// A 429 came back: the open pair of answers counts a request the
    /// provider refused.
    pub(super) fn refused(&mut self) {
        self.charge.forget_pair();
    }

    fn rate_per_sec(&self, utilisation: f64) -> Option<f64> {
        self.per_minute
            .map(|pm| (pm as f64 / 60.0 * utilisation).max(1e-9))
    }

    /// Units allowed in one window: the limit's full one-second share. The
    /// spacing aims below it (`utilisation`); the log is the hard ceiling
    /// that spacing plus timer jitter can never push past.
    fn window_cap(&self) -> Option<u64> {
        self.per_minute.map(|pm| (pm / 60).max(1))
    }

    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(t, units)) = self.log.front() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.log.pop_front();
            self.in_window -= units;
        }
        if let Some((until, _)) = self.hold
            && now >= until
        {
            self.hold = None;
        }
    }

    /// When `cost` may be admitted (`now` or later).
    pub(super) fn ready_at(&self, cost: Cost, now: Instant) -> Instant {
        let Some(cap) = self.window_cap() else {
            return now;
        };
        let units = self.units(cost);
        let mut at = self.next_at.max(now);
        // A request bigger than a whole window can never fit; it goes alone
        // once the window is empty.
        let need = (self.in_window + units).saturating_sub(cap.max(units));
        if need > 0 {
            let mut freed = 0;
            for &(t, u) in &self.log {
                freed += u;
                if freed >= need {
                    at = at.max(t + WINDOW);
                    break;
                }
            }
        }
        if let Some((until, budget)) = self.hold
            && units > budget
        {
            at = at.max(until);
        }
        at
    }

    /// The share of this limit's window left after `cost` (expired
    /// entries dropped first), also under a `remaining` hold; 1 with no
    /// limit.
    pub(super) fn room(&self, cost: Cost) -> f64 {
        let Some(cap) = self.window_cap() else {
            return 1.0;
        };
        let units = self.units(cost);
        let mut left = cap.saturating_sub(self.in_window.saturating_add(units));
        if let Some((_, budget)) = self.hold {
            left = left.min(budget.saturating_sub(units));
        }
        left as f64 / cap as f64
    }

    pub(super) fn admit(&mut self, cost: Cost, now: Instant, utilisation: f64) {
        let units = self.units(cost);
        if let Some(rate) = self.rate_per_sec(utilisation) {
            // Timers fire up to a millisecond late; restarting the schedule
            // from `now` each time would turn that lateness into a steady
            // loss (5% at 100 requests/s). Lateness up to SLACK is made up by
            // the next admissions instead; the sliding log still caps every
            // window.
            let base = self.next_at.max(now.checked_sub(SLACK).unwrap_or(now));
            self.next_at = base + Duration::from_secs_f64(units as f64 / rate);
            self.log.push_back((now, units));
            self.in_window += units;
        } else if self.track {
            // No limit yet, but one may be learned: it must count what was
            // sent in the last window.
            self.log.push_back((now, units));
            self.in_window += units;
        }
        if let Some((_, budget)) = &mut self.hold {
            *budget = budget.saturating_sub(units);
        }
    }

    /// An answer came back (see [`Observed`]).
    pub(super) fn observe(&mut self, seen: Observed<'_>, learn: bool, utilisation: f64) {
        let Some(reading) = self.dim.reading(seen.snapshot) else {
            return;
        };
        if learn && let Some(limit) = reading.limit {
            self.per_minute = Some(self.given.map_or(limit, |g| g.min(limit)));
            if seen.refused {
                // Our count has it, the provider's does not: the open pair
                // would be a lie.
                self.charge.forget_pair();
            } else if self.dim.learns_charge() && !seen.snapshot.coarse_resets {
                let sent = self.dim.total(seen.stamp.sent);
                self.charge.observe(sent, seen.stamp.at, reading, limit);
            }
        }
        if !seen.snapshot.coarse_resets {
            self.hold_to_remaining(reading, seen, utilisation);
        }
    }

    /// A remaining count lower than what we would send before the reset
    /// means someone else shares the budget, or our view is off: send no
    /// more than that until the reset (or for a window, the shorter).
    /// Providers work `remaining` out when they admit a request, so what
    /// was sent since then is spent from it, and the reset runs from then.
    fn hold_to_remaining(&mut self, reading: &LimitReading, seen: Observed<'_>, utilisation: f64) {
        let (Some(remaining), Some(reset), Some(rate)) = (
            reading.remaining,
            reading.reset,
            self.rate_per_sec(utilisation),
        ) else {
            return;
        };
        // At most a window ahead: a token bucket's reset is the time to
        // refill it all, while it refills all along (the spacing sends
        // what refills), and a reset in whole seconds may overshoot the
        // window it describes; every answer renews the hold.
        let until = (seen.stamp.at.unwrap_or(seen.now) + reset).min(seen.now + WINDOW);
        if until <= seen.now {
            return;
        }
        let ours = (self.dim.total(seen.sent)).wrapping_sub(self.dim.total(seen.stamp.sent));
        let left = remaining.saturating_sub(self.charge.of(ours));
        let planned = rate * until.duration_since(seen.now).as_secs_f64();
        if (left as f64) < planned {
            self.hold = Some(match self.hold {
                // The same window (or bucket refill): the tighter budget.
                Some((u, b)) if until <= u + HOLD_SAME_WINDOW => (u.max(until), b.min(left)),
                // A later window's reading: the earlier window has ended
                // (its request was admitted after it), so its budget is
                // no longer anyone's.
                _ => (until, left),
            });
        }
    }

    /// A request's input turned out other than reserved (`settle`): move
    /// the spacing by the difference, if this limit counts input. An input
    /// token limit leaves cache reads out (Anthropic's does); a token
    /// limit counts them.
    pub(super) fn correct_input(&mut self, settle: Settle, utilisation: f64) {
        let actual = match self.dim {
            Dimension::Tokens => settle.input,
            Dimension::InputTokens => settle.input.saturating_sub(settle.cache_reads),
            Dimension::Requests | Dimension::OutputTokens => return,
        };
        let delta = actual as i64 - settle.reserved as i64;
        let Some(rate) = self.rate_per_sec(utilisation) else {
            return;
        };
        if delta == 0 {
            return;
        }
        let units = self.charge.of(delta.unsigned_abs());
        let shift = Duration::from_secs_f64(units as f64 / rate);
        if delta > 0 {
            self.next_at += shift;
        } else {
            self.next_at = self.next_at.checked_sub(shift).unwrap_or(self.next_at);
        }
    }
}
