//! A hard spending cap (`Job::max_cost`).
//!
//! Before a request is sent its worst-case cost (input plus the most output
//! it may generate) is reserved; when its answer arrives the reservation is
//! replaced by what it really cost. A request whose reservation does not fit
//! is not sent yet: `spent + reserved` never exceeds the cap, however many
//! requests are in flight. Reservations are worst cases and answers usually
//! cost far less, so a refusal while others are in flight only means "wait
//! for them to settle"; the budget is reached when nothing is reserved and
//! the next request still does not fit.

use std::sync::Mutex;

use batchling_core::pricing::{ModelPrice, TokenCounts};
use batchling_core::tokens::TokenEstimate;
use tokio::sync::Notify;

/// A request's worst case at `price`, USD: its input and the most output
/// it may generate, at the online price (what the budget reserves; a
/// shared job store reserves the same at its claim).
pub fn worst_case(price: &ModelPrice, tokens: TokenEstimate) -> f64 {
    price.cost_online(&TokenCounts {
        input: tokens.input,
        output: tokens.max_output,
        ..TokenCounts::default()
    })
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct State {
    spent: f64,
    reserved: f64,
    /// Reservations not yet settled.
    open: u64,
}

/// The shared budget of one run.
#[derive(Debug)]
pub struct Budget {
    limit: f64,
    state: Mutex<State>,
    /// Woken at each settlement, for a request waiting for room.
    on_settle: Notify,
}

/// A reservation that did not fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverBudget {
    /// Spent so far.
    pub spent: f64,
    /// Reserved by requests in flight.
    pub reserved: f64,
    /// What the refused request would have reserved.
    pub wanted: f64,
    /// Reservations not yet settled: when 0, waiting cannot help.
    pub open: u64,
}

impl OverBudget {
    /// Whether room may still appear: requests in flight hold reservations
    /// that their answers will replace by (usually much smaller) costs.
    pub fn may_fit_later(&self) -> bool {
        self.open > 0
    }
}

impl Budget {
    /// A budget of `limit` USD, of which `spent` was used by earlier runs.
    pub fn new(limit: f64, spent: f64) -> Self {
        Budget {
            limit,
            state: Mutex::new(State {
                spent,
                reserved: 0.0,
                open: 0,
            }),
            on_settle: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cap.
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Spent so far (real costs of answered requests).
    pub fn spent(&self) -> f64 {
        self.lock().spent
    }

    /// Reserve `worst_case` USD, or refuse if it does not fit.
    pub fn reserve(&self, worst_case: f64) -> Result<(), OverBudget> {
        let mut s = self.lock();
        if s.spent + s.reserved + worst_case > self.limit {
            return Err(OverBudget {
                spent: s.spent,
                reserved: s.reserved,
                wanted: worst_case,
                open: s.open,
            });
        }
        s.reserved += worst_case;
        s.open += 1;
        Ok(())
    }

    /// Replace a reservation by the real cost (0 for a request that was not
    /// billed).
    pub fn settle(&self, reserved: f64, actual: f64) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(1);
        // Exactly 0 once nothing is open: float residue must not refuse a
        // request that fits.
        s.reserved = if s.open == 0 {
            0.0
        } else {
            (s.reserved - reserved).max(0.0)
        };
        s.spent += actual;
        drop(s);
        // One stored permit: a settlement before the wait starts is not lost.
        self.on_settle.notify_one();
    }

    /// Wait for the next settlement (or one that came since the last wait).
    pub async fn settled(&self) {
        self.on_settle.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn refuses_what_does_not_fit_and_releases_the_rest() {
        let b = Budget::new(1.0, 0.25);
        assert!(b.reserve(0.5).is_ok());
        let e = b.reserve(0.5).unwrap_err();
        assert_eq!((e.spent, e.reserved, e.wanted, e.open), (0.25, 0.5, 0.5, 1));
        assert!(e.may_fit_later());
        b.settle(0.5, 0.1);
        assert!((b.spent() - 0.35).abs() < 1e-12);
        assert!(b.reserve(0.6).is_ok());
    }

    #[test]
    fn nothing_open_means_nothing_will_fit_later() {
        let b = Budget::new(1.0, 0.0);
        for _ in 0..3 {
            b.reserve(0.1).unwrap();
        }
        for _ in 0..3 {
            b.settle(0.1, 0.25);
        }
        let e = b.reserve(0.3).unwrap_err();
        assert_eq!((e.open, e.reserved), (0, 0.0));
        assert!(!e.may_fit_later());
        assert!(b.reserve(0.25).is_ok(), "0.75 spent + 0.25 fits exactly");
    }

    proptest! {
        /// With many threads reserving and settling at once, spent + reserved
        /// never passes the cap, as long as no request costs more than it
        /// reserved (true when tokens are counted exactly).
        #[test]
        fn never_over_the_cap_under_concurrency(
            limit in 0.01f64..50.0,
            work in proptest::collection::vec((0.0001f64..2.0, 0.0f64..=1.0), 1..400),
        ) {
            let b = Arc::new(Budget::new(limit, 0.0));
            let work = Arc::new(work);
            let peak = Arc::new(Mutex::new(0.0f64));
            std::thread::scope(|s| {
                for t in 0..4 {
                    let (b, work, peak) = (b.clone(), work.clone(), peak.clone());
                    s.spawn(move || {
                        for (i, (worst, share)) in work.iter().enumerate() {
                            if i % 4 != t {
                                continue;
                            }
                            if b.reserve(*worst).is_ok() {
                                let now = { let st = b.lock(); st.spent + st.reserved };
                                let mut p = peak.lock().unwrap();
                                *p = p.max(now);
                                drop(p);
                                b.settle(*worst, worst * share);
                            }
                        }
                    });
                }
            });
            prop_assert!(*peak.lock().unwrap() <= limit + 1e-9);
            prop_assert!(b.spent() <= limit + 1e-9);
        }
    }
}
