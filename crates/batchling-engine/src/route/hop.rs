//! Where a line is on its route, and what an attempt's verdict makes of
//! it: stay on the target (a backoff), go on now (another key, the next
//! target, another chain), fail, or stop the run.
//!
//! | verdict | the line |
//! |---|---|
//! | 429 | stays: its lane (group, model) is paused, another group with room may take it; no attempt counted |
//! | 5xx, 529, timeout, connection, a bad 2xx | retries on its target (backoff), after `max_attempts_per_target` goes to the next step; feeds the target's circuit |
//! | a dead key (401/403, no quota, spend cap) | the key is out for the run; the line goes on with another key or target; the run stops only when no key is left |
//! | context window | the route's context-window chain, if any; else fails |
//! | content policy | the route's content-policy chain, if any; else fails |
//! | model not found | the target is out for the run; the next step |
//! | invalid request | fails, everywhere: no fallback |
//!
//! Over all of it, a line gets at most the route's `max_attempts` (429s
//! not counted); a line never goes back to a step it left, so no chain
//! loops.

use batchling_core::{FailKind, RetryReason, Verdict};
use tokio::time::Instant;

use super::circuit::Passage;
use super::{Chain, DEFAULT_MAX_ATTEMPTS_PER_TARGET, KeyAt, Routes};

/// A line's place on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) route: u32,
    pub(crate) chain: Chain,
    /// Its index in `chain`.
    pub(crate) step: u8,
    /// The target at `step`, once placed.
    pub(crate) target: u32,
    /// Attempts at this target (429s not counted).
    pub(crate) on_target: u32,
    /// The key of the attempt in flight.
    pub(crate) key: Option<KeyAt>,
    /// The attempt in flight is its target's circuit probe.
    pub(crate) probe: bool,
    /// Steps moved along (0: still on the primary).
    pub(crate) moved: u8,
}

impl Hop {
    /// A line at the start of route `route`.
    pub(crate) fn start(route: u32) -> Self {
        Hop {
            route,
            chain: Chain::Main,
            step: 0,
            target: u32::MAX,
            on_target: 0,
            key: None,
            probe: false,
            moved: 0,
        }
    }

    /// Go to `step` of `chain` (its target is found by `place`).
    fn go(&mut self, chain: Chain, step: usize) {
        self.chain = chain;
        self.step = step.min(usize::from(u8::MAX)) as u8;
        self.target = u32::MAX;
        self.on_target = 0;
        self.moved = self.moved.saturating_add(1);
    }
}

/// Where the line's next attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// To this target (the hop's `target`); `changed` when it is not the
    /// target of its last attempt.
    Go { changed: bool },
    /// Every eligible target's circuit is open: not before `at`, when
    /// `target`'s may let a probe through.
    Shut {
        /// The soonest probe.
        at: Instant,
        /// The target it is for.
        target: u32,
    },
    /// No target is left for it.
    Nowhere,
}

/// What the line does after an attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Again at the same target, after its backoff.
    Retry,
    /// Again now: another key, the next step or another chain.
    Move,
    /// It fails with this attempt's answer.
    Fail,
    /// Nothing can be sent any more: the run stops.
    Stop,
}

impl<P> Routes<P> {
    /// The attempts a line of route `r` gets over its whole route, and at
    /// one target.
    pub(crate) fn caps(&self, r: u32, default_max: u32) -> (u32, u32) {
        let route = self.route(r);
        let total = route.max_attempts.unwrap_or(default_max);
        let per = route.per_target.unwrap_or(if route.has_fallback() {
            DEFAULT_MAX_ATTEMPTS_PER_TARGET.min(total)
        } else {
            total
        });
        (total, per)
    }

    /// The targets a line at `hop` may still be sent to (alive, from its
    /// step on in its chain, and every target of the other chains), for
    /// the budget's worst case.
    pub(crate) fn reachable(&self, hop: Option<Hop>) -> impl Iterator<Item = u32> + '_ {
        let hop = hop.unwrap_or(Hop::start(0));
        let route = self.route(hop.route);
        [Chain::Main, Chain::ContextWindow, Chain::ContentPolicy]
            .into_iter()
            .flat_map(move |c| {
                let from = if c == hop.chain {
                    usize::from(hop.step)
                } else {
                    0
                };
                route.chain(c).iter().skip(from).copied()
            })
            .filter(|&t| self.target_alive(t))
    }

    /// Find the target of the line's next attempt: its step if that target
    /// may be sent to, else the next step that may. A step past the
    /// primary must fit the price ceiling: `fits(primary, target, ratio)`.
    /// A target whose circuit is open is passed over; if every one left
    /// is, the line waits for the soonest probe.
    pub(crate) fn place(
        &self,
        hop: &mut Hop,
        now: Instant,
        fits: impl Fn(u32, u32, f64) -> bool,
    ) -> Place {
        let route = self.route(hop.route);
        let chain = route.chain(hop.chain);
        let primary = route.chain(Chain::Main)[0];
        let mut shut: Option<(Instant, u32)> = None;
        for (i, &t) in chain.iter().enumerate().skip(usize::from(hop.step)) {
            if !self.target_alive(t) {
                continue;
            }
            let is_primary = t == primary && hop.chain == Chain::Main && i == 0;
            if let Some(ratio) = route.max_price_ratio
                && !is_primary
                && !fits(primary, t, ratio)
            {
                continue;
            }
            if hop.probe && hop.target == t {
                // Its probe was taken when placed, and not sent yet.
                return Place::Go { changed: false };
            }
            let passage = self.target(t).circuit.passage(now);
            if let Passage::Shut(until) = passage {
                if shut.is_none_or(|(s, _)| until < s) {
                    shut = Some((until, t));
                }
                continue;
            }
            let changed = hop.target != t;
            if changed {
                if hop.target != u32::MAX && usize::from(hop.step) != i {
                    hop.moved = hop.moved.saturating_add(1);
                }
                hop.step = i as u8;
                hop.target = t;
                hop.on_target = 0;
            }
            hop.probe = passage == Passage::Probe;
            return Place::Go { changed };
        }
        match shut {
            Some((at, target)) => Place::Shut { at, target },
            None => Place::Nowhere,
        }
    }

    /// What an attempt that did not succeed makes of the line (see the
    /// module's table). `attempts` are the line's attempts so far over its
    /// route (this one included, 429s not), `max_attempts` the job's
    /// default cap.
    pub(crate) fn after(
        &self,
        hop: &mut Hop,
        verdict: &Verdict,
        attempts: u32,
        max_attempts: u32,
        now: Instant,
    ) -> Then {
        let target = self.target(hop.target);
        let (total, per_target) = self.caps(hop.route, max_attempts);
        let probe = std::mem::take(&mut hop.probe);
        match verdict {
            Verdict::Success => {
                target.circuit.worked();
                Then::Fail // not asked: a success is not a failure
            }
            Verdict::Retry {
                reason: RetryReason::RateLimited,
                ..
            } => {
                if probe {
                    target.circuit.probe_void();
                }
                Then::Retry
            }
            Verdict::Retry { reason, .. } => {
                if reason.is_outage_sign() {
                    target.circuit.failed(now);
                }
                hop.on_target += 1;
                if attempts >= total {
                    return Then::Fail;
                }
                let chain = self.route(hop.route).chain(hop.chain);
                if hop.on_target >= per_target && usize::from(hop.step) + 1 < chain.len() {
                    hop.go(hop.chain, usize::from(hop.step) + 1);
                    return Then::Move;
                }
                Then::Retry
            }
            Verdict::StopRun(_) => {
                if probe {
                    target.circuit.probe_void();
                }
                let alive = hop.key.is_some_and(|k| self.kill_key(k));
                match (alive, attempts >= total) {
                    (false, _) => Then::Stop,
                    (true, true) => Then::Fail,
                    (true, false) => Then::Move,
                }
            }
            Verdict::Fail(kind) => {
                target.circuit.worked();
                self.after_failure(hop, *kind, attempts >= total)
            }
        }
    }

    /// A refusal answer at the hop's target: true when the line moves to
    /// the route's content-policy chain (it has one, a step is left there,
    /// and attempts are left); false when the refusal is the answer.
    pub(crate) fn after_refusal(&self, hop: &mut Hop, attempts: u32, max_attempts: u32) -> bool {
        let (total, _) = self.caps(hop.route, max_attempts);
        let then = self.after_failure(hop, FailKind::ContentPolicy, attempts >= total);
        then == Then::Move
    }

    /// A permanent failure at the target: another chain, the next step,
    /// or the end.
    fn after_failure(&self, hop: &mut Hop, kind: FailKind, out_of_attempts: bool) -> Then {
        let route = self.route(hop.route);
        let next_in = |c: Chain| {
            let chain = route.chain(c);
            if hop.chain == c {
                (usize::from(hop.step) + 1 < chain.len()).then(|| usize::from(hop.step) + 1)
            } else {
                (!chain.is_empty()).then_some(0)
            }
        };
        let to = match kind {
            FailKind::Invalid => None,
            FailKind::ContextWindow => {
                next_in(Chain::ContextWindow).map(|s| (Chain::ContextWindow, s))
            }
            FailKind::ContentPolicy => {
                next_in(Chain::ContentPolicy).map(|s| (Chain::ContentPolicy, s))
            }
            FailKind::ModelNotFound => {
                self.remove_target(hop.target);
                let chain = route.chain(hop.chain);
                (usize::from(hop.step) + 1 < chain.len())
                    .then(|| (hop.chain, usize::from(hop.step) + 1))
            }
        };
        match to {
            Some((chain, step)) if !out_of_attempts => {
                hop.go(chain, step);
                Then::Move
            }
            _ => Then::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use batchling_core::StopReason;

    use super::*;
    use crate::route::{RouteSpec, RoutesBuilder};

    fn retry(reason: RetryReason) -> Verdict {
        Verdict::Retry {
            after: None,
            reason,
        }
    }

    /// A route over three targets (a, b, c), one key each; c is the
    /// context-window chain, b also the content-policy chain.
    fn routes(spec: impl FnOnce(&mut RouteSpec)) -> Routes<()> {
        let mut b = RoutesBuilder::new();
        let ts: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let g = b.group(n, vec![((*n).to_owned(), Arc::new(()))]);
                b.target(n, Some(n), &[g], None)
            })
            .collect();
        let mut s = RouteSpec {
            chain: vec![ts[0], ts[1]],
            context_window_chain: vec![ts[2]],
            content_policy_chain: vec![ts[1]],
            ..RouteSpec::default()
        };
        spec(&mut s);
        b.route("r", s);
        b.build().expect("valid")
    }

    fn placed(r: &Routes<()>, hop: &mut Hop, now: Instant) -> Place {
        r.place(hop, now, |_, _, _| true)
    }

    #[test]
    fn server_errors_retry_then_move_on_and_the_cap_holds() {
        let r = routes(|_| {});
        let now = Instant::now();
        let mut hop = Hop::start(0);
        assert_eq!(placed(&r, &mut hop, now), Place::Go { changed: true });
        assert_eq!(hop.target, 0);
        let e = retry(RetryReason::ServerError);
        assert_eq!(r.after(&mut hop, &e, 1, 6, now), Then::Retry);
        assert_eq!(r.after(&mut hop, &e, 2, 6, now), Then::Retry);
        assert_eq!(r.after(&mut hop, &e, 3, 6, now), Then::Move);
        assert_eq!(placed(&r, &mut hop, now), Place::Go { changed: true });
        assert_eq!((hop.target, hop.moved), (1, 1));
        // The last step keeps retrying until the cap over the whole route.
        for n in 4..6 {
            assert_eq!(r.after(&mut hop, &e, n, 6, now), Then::Retry);
        }
        assert_eq!(r.after(&mut hop, &e, 6, 6, now), Then::Fail);
    }

    #[test]
    fn rate_limits_stay_and_count_nothing() {
        let r = routes(|_| {});
        let mut hop = Hop::start(0);
        let now = Instant::now();
        placed(&r, &mut hop, now);
        for _ in 0..20 {
            assert_eq!(
                r.after(&mut hop, &retry(RetryReason::RateLimited), 0, 6, now),
                Then::Retry
            );
        }
        assert_eq!((hop.target, hop.on_target), (0, 0));
    }

    #[test]
    fn failures_go_to_their_own_chains_or_nowhere() {
        let r = routes(|_| {});
        let now = Instant::now();
        let mut hop = Hop::start(0);
        placed(&r, &mut hop, now);
        let cw = Verdict::Fail(FailKind::ContextWindow);
        assert_eq!(r.after(&mut hop, &cw, 1, 6, now), Then::Move);
        placed(&r, &mut hop, now);
        assert_eq!((hop.chain, hop.target), (Chain::ContextWindow, 2));
        // Too small as well, and nothing after it in that chain.
        assert_eq!(r.after(&mut hop, &cw, 2, 6, now), Then::Fail);

        let mut hop = Hop::start(0);
        placed(&r, &mut hop, now);
        let invalid = Verdict::Fail(FailKind::Invalid);
        assert_eq!(r.after(&mut hop, &invalid, 1, 6, now), Then::Fail);

        let mut hop = Hop::start(0);
        placed(&r, &mut hop, now);
        let policy = Verdict::Fail(FailKind::ContentPolicy);
        assert_eq!(r.after(&mut hop, &policy, 1, 6, now), Then::Move);
        placed(&r, &mut hop, now);
        assert_eq!((hop.chain, hop.target), (Chain::ContentPolicy, 1));

        // Without those chains, both fail on the spot.
        let bare = routes(|s| {
            s.context_window_chain.clear();
            s.content_policy_chain.clear();
        });
        for v in [cw, policy] {
            let mut hop = Hop::start(0);
            placed(&bare, &mut hop, now);
            assert_eq!(bare.after(&mut hop, &v, 1, 6, now), Then::Fail);
        }
    }

    #[test]
    fn a_model_gone_is_out_for_every_line() {
        let r = routes(|_| {});
        let now = Instant::now();
        let mut hop = Hop::start(0);
        placed(&r, &mut hop, now);
        let gone = Verdict::Fail(FailKind::ModelNotFound);
        assert_eq!(r.after(&mut hop, &gone, 1, 6, now), Then::Move);
        let mut other = Hop::start(0);
        placed(&r, &mut other, now);
        assert_eq!(other.target, 1, "a new line skips the gone primary");
    }

    #[test]
    fn a_dead_key_moves_the_line_and_the_last_one_stops_the_run() {
        let r = routes(|_| {});
        let now = Instant::now();
        let dead = Verdict::StopRun(StopReason::Unauthorized {
            status: 401,
            message: String::new(),
        });
        let mut hop = Hop::start(0);
        for (t, then) in [(0, Then::Move), (1, Then::Move), (2, Then::Stop)] {
            // Target c is only in the context chain: place it by hand.
            if t < 2 {
                placed(&r, &mut hop, now);
            } else {
                hop.target = 2;
            }
            assert_eq!(hop.target, t);
            hop.key = match r.pick_key(t) {
                crate::route::KeyPick::Key(k) => Some(k),
                _ => None,
            };
            assert_eq!(r.after(&mut hop, &dead, 1, 6, now), then);
        }
    }

    #[test]
    fn an_open_circuit_sends_new_lines_to_the_fallback_and_lets_one_probe() {
        let r = routes(|s| s.max_attempts_per_target = Some(1));
        let now = Instant::now();
        let e = retry(RetryReason::ServerError);
        for _ in 0..10 {
            let mut hop = Hop::start(0);
            placed(&r, &mut hop, now);
            assert_eq!(hop.target, 0);
            r.after(&mut hop, &e, 1, 6, now);
        }
        let mut hop = Hop::start(0);
        placed(&r, &mut hop, now);
        assert_eq!(hop.target, 1, "the primary's circuit is open");
        let later = now + Duration::from_secs(6);
        let mut probe = Hop::start(0);
        placed(&r, &mut probe, later);
        assert!(probe.probe && probe.target == 0);
        let mut next = Hop::start(0);
        placed(&r, &mut next, later);
        assert_eq!(next.target, 1, "one probe at a time");
    }

    #[test]
    fn the_price_ceiling_passes_over_dear_fallbacks() {
        let r = routes(|s| s.max_price_ratio = Some(3.0));
        let now = Instant::now();
        let mut hop = Hop::start(0);
        hop.go(Chain::Main, 1);
        assert_eq!(r.place(&mut hop, now, |_, t, _| t != 1), Place::Nowhere);
        let mut hop = Hop::start(0);
        assert_eq!(
            r.place(&mut hop, now, |_, _, _| false),
            Place::Go { changed: true },
            "the primary is never priced out"
        );
    }
}
