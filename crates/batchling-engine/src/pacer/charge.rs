//! Learning what the provider charges: the ratio of its count of a
//! request's tokens to ours, from how its `remaining` moves between answers.
//!
//! A provider's limiter works out `remaining` when it admits a request, so
//! two answers from one provider window differ by what it charged for the
//! requests admitted between them, which are the ones the lane admitted
//! between them (each answer carries the lane's running total of its own
//! count at its admission, a [`Stamp`]). Their ratio, summed over many such
//! pairs with older pairs fading, is the lane's charge ratio: a request of
//! `n` tokens by our count is charged `n × ratio`.
//!
//! Two pairs count:
//! - one window of a provider that keeps fixed windows (the same window end,
//!   `remaining` not up): nothing came back in between;
//! - a token bucket's, whose `reset` is the time to refill what is used at
//!   the limit's rate: what refilled in between (`rate × elapsed`) is added.
//!
//! Anything else (a window boundary, a reset in whole seconds that cannot
//! tell, answers out of order) starts a new pair and teaches nothing. A 429
//! in between makes the pair a lie (the refused request is in our count,
//! not the provider's), so a pause drops the open pair. See
//! docs/providers.md, "What the provider counts", for the failure modes.

use std::time::Duration;

use batchling_core::ratelimit::LimitReading;
use tokio::time::Instant;

use super::Cost;

/// A lane's running totals of what it admitted, by our count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Requests.
    pub requests: u64,
    /// Input and output tokens.
    pub tokens: Cost,
}

impl Sent {
    /// One more request costing `cost`.
    pub(super) fn add(&mut self, cost: Cost) {
        self.requests = self.requests.wrapping_add(1);
        self.tokens.input = self.tokens.input.wrapping_add(cost.input);
        self.tokens.output = self.tokens.output.wrapping_add(cost.output);
    }
}

/// A request's admission: its lane's running totals then (that request
/// included), and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// The totals.
    pub sent: Sent,
    /// When; `None` for an attempt the pacer did not stamp.
    pub at: Option<Instant>,
}

/// How closely two window ends must agree to be one window, and a reset a
/// bucket's refill time: admission here and there are a send apart.
const SAME_WITHIN: Duration = Duration::from_millis(25);

/// Each new pair's weight against what was learned (older pairs fade).
const FADE: f64 = 0.9;

/// The ratio stays within this factor of 1: a count off by more is a
/// misreading, not a counting rule.
const MAX_RATIO: f64 = 4.0;

/// Fewest of our units a pair must span to teach anything (a pair of one
/// tiny request is mostly rounding).
const MIN_SPAN: u64 = 8;

/// One answer's view of the provider's budget.
#[derive(Debug, Clone, Copy)]
struct Seen {
    sent: u64,
    at: Instant,
    remaining: u64,
    /// When the provider's window ends (or its bucket is full).
    end: Instant,
}

/// A limit's charge ratio and the evidence behind it.
#[derive(Debug)]
pub(super) struct Charge {
    ratio: f64,
    /// Faded sums of the provider's count and ours over the pairs seen.
    theirs: f64,
    ours: f64,
    /// The latest answer, the start of the next pair.
    last: Option<Seen>,
}

impl Default for Charge {
    fn default() -> Self {
        Charge {
            ratio: 1.0,
            theirs: 0.0,
            ours: 0.0,
            last: None,
        }
    }
}

impl Charge {
    /// The provider's count of `units` of ours.
    pub(super) fn of(&self, units: u64) -> u64 {
        if self.ratio == 1.0 {
            units
        } else {
            (units as f64 * self.ratio).round() as u64
        }
    }

    /// Provider units per unit of ours.
    pub(super) fn ratio(&self) -> f64 {
        self.ratio
    }

    /// A refused request spoils the open pair.
    pub(super) fn forget_pair(&mut self) {
        self.last = None;
    }

    /// An answer admitted at `at`, when the lane had sent `sent` units by
    /// our count, read `reading`; `per_minute` is the limit.
    pub(super) fn observe(
        &mut self,
        sent: u64,
        at: Option<Instant>,
        reading: &LimitReading,
        per_minute: u64,
    ) {
        let (Some(at), Some(remaining), Some(reset)) = (at, reading.remaining, reading.reset)
        else {
            return;
        };
        let seen = Seen {
            sent,
            at,
            remaining,
            end: at + reset,
        };
        let Some(last) = self.last else {
            self.last = Some(seen);
            return;
        };
        if seen.sent <= last.sent {
            return; // an earlier admission answered late: not a pair
        }
        self.last = Some(seen);
        let ours = seen.sent - last.sent;
        if ours < MIN_SPAN {
            self.last = Some(last); // keep the wider pair open
            return;
        }
        if let Some(theirs) = charged_between(&last, &seen, per_minute) {
            self.learn(theirs, ours as f64);
        }
    }

    fn learn(&mut self, theirs: f64, ours: f64) {
        self.theirs = self.theirs * FADE + theirs;
        self.ours = self.ours * FADE + ours;
        if self.ours > 0.0 {
            self.ratio = (self.theirs / self.ours).clamp(1.0 / MAX_RATIO, MAX_RATIO);
        }
    }
}

/// What the provider charged between two answers, if the pair can tell.
fn charged_between(a: &Seen, b: &Seen, per_minute: u64) -> Option<f64> {
    let rate = per_minute as f64 / 60.0;
    let bucket = |s: &Seen| {
        let refill = per_minute.saturating_sub(s.remaining) as f64 / rate.max(1e-9);
        (refill - s.end.duration_since(s.at).as_secs_f64()).abs() <= SAME_WITHIN.as_secs_f64()
    };
    if bucket(a) && bucket(b) && b.remaining < per_minute {
        let refilled = rate * b.at.duration_since(a.at).as_secs_f64();
        return Some(a.remaining as f64 - b.remaining as f64 + refilled);
    }
    let same_end = a.end.max(b.end) - a.end.min(b.end) <= SAME_WITHIN;
    (same_end && b.remaining <= a.remaining).then(|| (a.remaining - b.remaining) as f64)
}
