//! A target's circuit: after repeated failures that say "the target is
//! down" (5xx, 529, timeouts, connection errors) its lines go to the next
//! step of their chain, and one probe per interval finds out whether it is
//! back.
//!
//! It opens on evidence of an outage, not of load: at least
//! [`OPEN_AFTER`] failures in a row *and* at least half of the last
//! [`RECENT`] attempts failing. A provider refusing 30% of attempts (a 529
//! storm) fails five in a row now and then, but seldom half of twenty, so
//! it keeps its traffic and the retries absorb the storm; a dead one opens
//! it within ten answers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures in a row before a circuit may open.
pub(crate) const OPEN_AFTER: u32 = 5;

/// How long an open circuit stays shut before one probe may go.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The recent attempts of which at least half must have failed to open.
const RECENT: u32 = 20;

/// What a circuit lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passage {
    /// Closed: anything goes.
    Open,
    /// Open, and this attempt is its probe (the only one until it ends).
    Probe,
    /// Open: go elsewhere, or wait until then.
    Shut(Instant),
}

#[derive(Debug, Default)]
struct State {
    /// Failures since the last success.
    in_a_row: u32,
    /// The last attempts' outcomes, newest in bit 0 (1: failed).
    recent: u32,
    /// While open: no attempt before then, except one probe after it.
    open_until: Option<Instant>,
    /// A probe is out.
    probing: bool,
    /// Times it opened (for reports).
    opened: u64,
}

impl State {
    /// Remember one more outcome.
    fn push(&mut self, failed: bool) {
        self.recent = (self.recent << 1) | u32::from(failed);
    }

    /// Failures among the last [`RECENT`] attempts.
    fn recent_failures(&self) -> u32 {
        (self.recent & ((1 << RECENT) - 1)).count_ones()
    }
}

/// One target's circuit. `off` never opens (a route without a fallback
/// leaves outages to the run's outage handling).
#[derive(Debug)]
pub(crate) struct Circuit {
    on: bool,
    state: Mutex<State>,
}

impl Circuit {
    pub(crate) fn new(on: bool) -> Self {
        Circuit {
            on,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt may go to the target now; a `Probe` is taken by
    /// the caller (the next caller is shut out until it ends).
    pub(crate) fn passage(&self, now: Instant) -> Passage {
        if !self.on {
            return Passage::Open;
        }
        let mut s = self.lock();
        let Some(until) = s.open_until else {
            return Passage::Open;
        };
        if s.probing || now < until {
            // While a probe is out, the next chance is an interval on.
            let next = if s.probing { now + PROBE_EVERY } else { until };
            return Passage::Shut(next);
        }
        s.probing = true;
        Passage::Probe
    }

    /// Whether it is closed (nothing held back), without taking a probe.
    pub(crate) fn is_closed(&self) -> bool {
        !self.on || self.lock().open_until.is_none()
    }

    /// An attempt at the target got an answer that is not an outage sign
    /// (a success, or a failure of the request itself): the circuit closes.
    pub(crate) fn worked(&self) {
        if !self.on {
            return;
        }
        let mut s = self.lock();
        s.push(false);
        s.in_a_row = 0;
        s.open_until = None;
        s.probing = false;
    }

    /// An attempt at the target failed with an outage sign. A probe that
    /// fails keeps it open for another interval.
    pub(crate) fn failed(&self, now: Instant) {
        if !self.on {
            return;
        }
        let mut s = self.lock();
        s.push(true);
        s.in_a_row += 1;
        let was_probe = std::mem::take(&mut s.probing);
        let outage = s.in_a_row >= OPEN_AFTER && s.recent_failures() * 2 >= RECENT;
        if was_probe || (s.open_until.is_none() && outage) {
            if s.open_until.is_none() {
                s.opened += 1;
            }
            s.open_until = Some(now + PROBE_EVERY);
        }
    }

    /// A probe ended without telling (the attempt was a 429, or stopped):
    /// the next may probe.
    pub(crate) fn probe_void(&self) {
        if self.on {
            self.lock().probing = false;
        }
    }

    /// Whether it is open now, and how many times it opened.
    pub(crate) fn report(&self) -> (bool, u64) {
        let s = self.lock();
        (s.open_until.is_some(), s.opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64, start: Instant) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn an_outage_opens_it_and_one_probe_per_interval_goes() {
        let c = Circuit::new(true);
        let s = Instant::now();
        // Ten failures in a row: half of the last twenty, five in a row.
        for i in 0..9 {
            c.failed(t(i, s));
            assert_eq!(c.passage(t(10, s)), Passage::Open);
        }
        c.failed(t(5, s));
        assert_eq!(c.passage(t(10, s)), Passage::Shut(t(5, s) + PROBE_EVERY));
        // After the interval: one probe, the others shut out while it is out.
        let later = t(5, s) + PROBE_EVERY;
        assert_eq!(c.passage(later), Passage::Probe);
        assert!(matches!(c.passage(later), Passage::Shut(_)));
        // The probe fails: another interval.
        c.failed(later);
        assert_eq!(c.passage(later), Passage::Shut(later + PROBE_EVERY));
        assert_eq!(c.passage(later + PROBE_EVERY), Passage::Probe);
        // It works: closed.
        c.worked();
        assert_eq!(c.passage(later + PROBE_EVERY), Passage::Open);
        assert_eq!(c.report(), (false, 1));
    }

    #[test]
    fn a_storm_of_some_failures_does_not_open_it() {
        let c = Circuit::new(true);
        let s = Instant::now();
        // 30% failing, with runs of up to 7 in a row: never half of the
        // last twenty.
        for round in 0..50 {
            for i in 0..14 {
                c.worked();
                let _ = i;
            }
            for i in 0..6 {
                c.failed(t(round * 10 + i, s));
            }
            assert_eq!(
                c.passage(t(round * 10 + 9, s)),
                Passage::Open,
                "round {round}"
            );
        }
    }

    #[test]
    fn a_void_probe_lets_the_next_probe() {
        let c = Circuit::new(true);
        let s = Instant::now();
        for i in 0..10 {
            c.failed(t(i, s));
        }
        let later = s + PROBE_EVERY * 2;
        assert_eq!(c.passage(later), Passage::Probe);
        c.probe_void();
        assert_eq!(c.passage(later), Passage::Probe);
    }

    #[test]
    fn off_never_opens() {
        let c = Circuit::new(false);
        let s = Instant::now();
        for i in 0..50 {
            c.failed(t(i, s));
        }
        assert_eq!(c.passage(t(60, s)), Passage::Open);
    }
}
