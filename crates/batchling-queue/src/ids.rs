//! The queue's names for things: jobs, workers, claim tokens, and money as
//! the store keeps it (whole nano-USD, so sums never drift).

use std::fmt;

use crate::error::QueueError;

/// A job in the queue (one input file with its settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

/// A registered worker (one process; a worker declared dead registers
/// again under a new id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub i64);

/// The fencing token of one claim of one request: drawn from a sequence,
/// never reused. A completion counts only while the request still carries
/// the token it was claimed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimToken(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Nano-USD per USD.
const NANOS: f64 = 1e9;

/// The largest amount the store keeps (about 9.2 billion USD).
const MAX_USD: f64 = i64::MAX as f64 / NANOS;

/// How an amount is rounded into nano-USD.
#[derive(Clone, Copy)]
pub(crate) enum Round {
    /// Worst cases round up: a reservation is never smaller than asked.
    Up,
    /// Costs round to nearest.
    Nearest,
}

/// `usd` in nano-USD; `what` names the field for the message.
pub(crate) fn to_nanos(usd: f64, round: Round, what: &str) -> Result<i64, QueueError> {
    if !usd.is_finite() || !(0.0..MAX_USD).contains(&usd) {
        return Err(QueueError::BadInput {
            what: format!(
                "{what} is {usd} USD; it must be a finite amount between 0 and {MAX_USD:.0}"
            ),
        });
    }
    let n = usd * NANOS;
    let n = match round {
        Round::Up => n.ceil(),
        Round::Nearest => n.round(),
    };
    // In range: checked above.
    Ok(n as i64)
}

/// Nano-USD back to USD, for reports.
pub(crate) fn to_usd(nanos: i64) -> f64 {
    nanos as f64 / NANOS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_cases_round_up_and_costs_to_nearest() {
        assert_eq!(to_nanos(1.5e-9, Round::Up, "w").ok(), Some(2));
        assert_eq!(to_nanos(1.4e-9, Round::Nearest, "c").ok(), Some(1));
        assert_eq!(to_nanos(2.0, Round::Nearest, "c").ok(), Some(2_000_000_000));
        assert!((to_usd(2_000_000_000) - 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn negative_infinite_and_huge_amounts_are_refused_by_name() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            let e = to_nanos(bad, Round::Up, "line 3: worst_cost").unwrap_err();
            assert!(e.to_string().contains("line 3: worst_cost"), "{e}");
        }
    }
}
