//! Pacing: requests-per-minute and tokens-per-minute limits, a shared pause
//! after a 429, and limits learned from response headers.
//!
//! # Design constraints
//! - Providers enforce limits over short windows (OpenAI documents that a
//!   per-minute limit may be enforced per second), so the pacer never admits
//!   more than one second's worth of a limit in any one-second window (a
//!   sliding log), and spaces admissions evenly (`cost / rate` apart) so no
//!   window edge sees a burst.
//! - Every attempt, retries included, is admitted here: providers count them.
//! - Admission is first come, first served: on a shared pacer
//!   ([`Pacer::shared`]) callers queue on a fair async lock, so several
//!   dispatch loops (`batchling serve` runs one per batch) take turns and a
//!   large batch cannot starve a small one; a single loop skips the lock. Responses update the state from many tasks, so the state sits
//!   behind a short mutex that is never held across an await.
//! - Time comes from `tokio::time`, so tests can run with paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use batchling_core::ratelimit::{LimitReading, RateLimitSnapshot};
use tokio::time::Instant;

/// The window every limit is enforced over, client side.
const WINDOW: Duration = Duration::from_secs(1);

/// How far behind schedule admissions may fall and still catch up.
const SLACK: Duration = Duration::from_millis(10);

/// Pacer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacerConfig {
    /// Requests per minute given by the user.
    pub rpm: Option<u64>,
    /// Tokens per minute given by the user.
    pub tpm: Option<u64>,
    /// Adopt limits from `x-ratelimit-*` headers (the lower of given and
    /// learned wins).
    pub learn: bool,
    /// Fraction of each limit actually used (e.g. 0.99), leaving room for
    /// timing jitter between us and the provider's clock.
    pub utilisation: f64,
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            rpm: None,
            tpm: None,
            learn: true,
            utilisation: 0.99,
        }
    }
}

/// One limit: even spacing plus a sliding one-second log.
#[derive(Debug)]
struct Lane {
    /// Units per minute as configured or learned.
    per_minute: Option<u64>,
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
}

impl Lane {
    fn new(given: Option<u64>, now: Instant, track: bool) -> Self {
        Lane {
            track,
            per_minute: given,
            given,
            next_at: now,
            log: VecDeque::new(),
            in_window: 0,
            hold: None,
        }
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

    fn expire(&mut self, now: Instant) {
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

    /// When `cost` units may be admitted, or `None` if right now.
    fn ready_at(&self, cost: u64, now: Instant) -> Instant {
        let Some(cap) = self.window_cap() else {
            return now;
        };
        let mut at = self.next_at.max(now);
        // A request bigger than a whole window can never fit; it goes alone
        // once the window is empty.
        let need = (self.in_window + cost).saturating_sub(cap.max(cost));
        if need > 0 {
            let mut freed = 0;
            for &(t, units) in &self.log {
                freed += units;
                if freed >= need {
                    at = at.max(t + WINDOW);
                    break;
                }
            }
        }
        if let Some((until, budget)) = self.hold
            && cost > budget
        {
            at = at.max(until);
        }
        at
    }

    fn admit(&mut self, cost: u64, now: Instant, utilisation: f64) {
        if let Some(rate) = self.rate_per_sec(utilisation) {
            // Timers fire up to a millisecond late; restarting the schedule
            // from `now` each time would turn that lateness into a steady
            // loss (5% at 100 requests/s). Lateness up to SLACK is made up by
            // the next admissions instead; the sliding log still caps every
            // window.
            let base = self.next_at.max(now.checked_sub(SLACK).unwrap_or(now));
            self.next_at = base + Duration::from_secs_f64(cost as f64 / rate);
            self.log.push_back((now, cost));
            self.in_window += cost;
        } else if self.track {
            // No limit yet, but one may be learned: it must count what was
            // sent in the last window.
            self.log.push_back((now, cost));
            self.in_window += cost;
        }
        if let Some((_, budget)) = &mut self.hold {
            *budget = budget.saturating_sub(cost);
        }
    }

    fn observe(&mut self, reading: &LimitReading, now: Instant, learn: bool, utilisation: f64) {
        if learn && let Some(limit) = reading.limit {
            self.per_minute = Some(self.given.map_or(limit, |g| g.min(limit)));
        }
        // A remaining count lower than what we would send before the reset
        // means someone else shares the budget, or our view is off: send no
        // more than that until the reset.
        if let (Some(remaining), Some(reset), Some(rate)) = (
            reading.remaining,
            reading.reset,
            self.rate_per_sec(utilisation),
        ) {
            let planned = rate * reset.as_secs_f64();
            if (remaining as f64) < planned {
                let until = now + reset;
                self.hold = Some(match self.hold {
                    Some((u, b)) => (u.max(until), b.min(remaining)),
                    None => (until, remaining),
                });
            }
        }
    }

    /// Move the spacing by a correction of `delta` units (positive: the
    /// request cost more than reserved).
    fn correct(&mut self, delta: i64, utilisation: f64) {
        let Some(rate) = self.rate_per_sec(utilisation) else {
            return;
        };
        let shift = Duration::from_secs_f64(delta.unsigned_abs() as f64 / rate);
        if delta > 0 {
            self.next_at += shift;
        } else {
            self.next_at = self.next_at.checked_sub(shift).unwrap_or(self.next_at);
        }
    }
}

#[derive(Debug)]
struct State {
    requests: Lane,
    tokens: Lane,
    paused_until: Option<Instant>,
}

/// Shared pacing state. See the module docs.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    state: Mutex<State>,
    /// The admission queue of a pacer shared by several dispatch loops
    /// (tokio's mutex is fair: FIFO). A single loop needs none.
    turn: Option<tokio::sync::Mutex<()>>,
}

/// The limits currently in force, for progress and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EffectiveLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(config: PacerConfig) -> Self {
        let now = Instant::now();
        Pacer {
            config,
            state: Mutex::new(State {
                requests: Lane::new(config.rpm, now, config.learn),
                tokens: Lane::new(config.tpm, now, config.learn),
                paused_until: None,
            }),
            turn: None,
        }
    }

    /// A pacer for several dispatch loops: they are admitted in turn.
    pub fn shared(config: PacerConfig) -> Self {
        Pacer {
            turn: Some(tokio::sync::Mutex::new(())),
            ..Pacer::new(config)
        }
    }

    /// Whether limits are adopted from response headers.
    pub fn learns(&self) -> bool {
        self.config.learn
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked mid-update
        // (every update is a few field writes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force now.
    pub fn limits(&self) -> EffectiveLimits {
        let s = self.lock();
        EffectiveLimits {
            rpm: s.requests.per_minute,
            tpm: s.tokens.per_minute,
        }
    }

    /// Try to admit a request of `tokens` now. On success returns `None`;
    /// otherwise the instant to try again.
    pub fn try_admit(&self, tokens: u64, now: Instant) -> Option<Instant> {
        let u = self.config.utilisation;
        let mut s = self.lock();
        s.requests.expire(now);
        s.tokens.expire(now);
        let mut at = s
            .requests
            .ready_at(1, now)
            .max(s.tokens.ready_at(tokens, now));
        if let Some(p) = s.paused_until {
            if p > now {
                at = at.max(p);
            } else {
                s.paused_until = None;
            }
        }
        if at > now {
            return Some(at);
        }
        s.requests.admit(1, now, u);
        s.tokens.admit(tokens, now, u);
        None
    }

    /// Wait until a request of `tokens` may go, then admit it.
    pub async fn admit(&self, tokens: u64) {
        let _turn = match &self.turn {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        loop {
            match self.try_admit(tokens, Instant::now()) {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Every admission waits until `now + delay` (a 429's Retry-After):
    /// all workers pause together.
    pub fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut s = self.lock();
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Until when dispatch is paused, if it is.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|p| *p > Instant::now())
    }

    /// Take in what a response's headers said. Returns whether a token
    /// limit is now in force (so requests need token counts).
    pub fn observe(&self, snapshot: &RateLimitSnapshot) -> bool {
        let now = Instant::now();
        let (learn, u) = (self.config.learn, self.config.utilisation);
        let mut s = self.lock();
        if !snapshot.is_empty() {
            s.requests.observe(&snapshot.requests, now, learn, u);
            s.tokens.observe(&snapshot.tokens, now, learn, u);
        }
        s.tokens.per_minute.is_some()
    }

    /// Correct a token reservation once the real count is known:
    /// `reserved` was charged, `actual` is what the provider counted.
    pub fn settle_tokens(&self, reserved: u64, actual: u64) {
        let delta = actual as i64 - reserved as i64;
        if delta != 0 {
            let u = self.config.utilisation;
            self.lock().tokens.correct(delta, u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(rpm: Option<u64>, tpm: Option<u64>) -> PacerConfig {
        PacerConfig {
            rpm,
            tpm,
            learn: true,
            utilisation: 1.0,
        }
    }

    /// Drive the pacer with simulated time; return admission instants.
    fn admissions(p: &Pacer, start: Instant, costs: &[u64]) -> Vec<Instant> {
        let mut now = start;
        let mut out = Vec::new();
        for &c in costs {
            loop {
                match p.try_admit(c, now) {
                    None => break,
                    Some(at) => {
                        assert!(at > now);
                        now = at;
                    }
                }
            }
            out.push(now);
        }
        out
    }

    fn max_in_any_window(times: &[Instant], costs: &[u64]) -> u64 {
        let mut best = 0;
        for i in 0..times.len() {
            let mut sum = 0;
            for j in i..times.len() {
                if times[j].duration_since(times[i]) >= WINDOW {
                    break;
                }
                sum += costs[j];
            }
            best = best.max(sum);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_evenly() {
        let p = Pacer::new(cfg(Some(6000), None));
        let t0 = Instant::now();
        let times = admissions(&p, t0, &[1; 300]);
        // 100 per second: the 300th goes at 2.99 s, not in bursts.
        let last = times.last().unwrap().duration_since(t0);
        assert!(last >= Duration::from_millis(2980) && last <= Duration::from_millis(3000));
        for w in times.windows(2) {
            assert!(w[1].duration_since(w[0]) >= Duration::from_millis(9));
        }
    }

    proptest! {
        /// The pacer never admits more than a limit's one-second share in any
        /// one-second window, whatever the request sizes.
        #[test]
        fn never_over_the_limit_in_any_window(
            rpm in 60u64..20_000,
            tpm in 6_000u64..2_000_000,
            costs in proptest::collection::vec(1u64..40_000, 1..300),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let p = Pacer::new(cfg(Some(rpm), Some(tpm)));
                let times = admissions(&p, Instant::now(), &costs);
                let ones = vec![1; costs.len()];
                let req_cap = ((rpm as f64 / 60.0).floor() as u64).max(1);
                let tok_cap = ((tpm as f64 / 60.0).floor() as u64).max(1);
                prop_assert!(max_in_any_window(&times, &ones) <= req_cap);
                // One request bigger than a window's share is admitted alone.
                let biggest = costs.iter().copied().max().unwrap();
                prop_assert!(max_in_any_window(&times, &costs) <= tok_cap.max(biggest));
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pause_blocks_everyone_until_it_ends() {
        let p = Pacer::new(cfg(None, None));
        let t0 = Instant::now();
        assert_eq!(p.try_admit(1, t0), None);
        p.pause(Duration::from_secs(2));
        assert_eq!(p.try_admit(1, t0), Some(t0 + Duration::from_secs(2)));
        assert_eq!(p.try_admit(1, t0 + Duration::from_secs(2)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn learns_limits_from_headers() {
        let p = Pacer::new(cfg(None, None));
        assert_eq!(p.limits(), EffectiveLimits::default());
        p.observe(&RateLimitSnapshot {
            requests: LimitReading {
                limit: Some(600),
                remaining: Some(599),
                reset: Some(Duration::from_millis(100)),
            },
            tokens: LimitReading {
                limit: Some(60_000),
                remaining: None,
                reset: None,
            },
        });
        assert_eq!(
            p.limits(),
            EffectiveLimits {
                rpm: Some(600),
                tpm: Some(60_000)
            }
        );
        let t0 = Instant::now();
        let times = admissions(&p, t0, &[1; 11]);
        assert_eq!(times[10].duration_since(t0), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn given_limit_wins_when_lower() {
        let p = Pacer::new(cfg(Some(120), None));
        p.observe(&RateLimitSnapshot {
            requests: LimitReading {
                limit: Some(6000),
                ..LimitReading::default()
            },
            ..RateLimitSnapshot::default()
        });
        assert_eq!(p.limits().rpm, Some(120));
    }

    #[tokio::test(start_paused = true)]
    async fn low_remaining_holds_until_reset() {
        let p = Pacer::new(cfg(Some(6000), None));
        p.observe(&RateLimitSnapshot {
            requests: LimitReading {
                limit: Some(6000),
                remaining: Some(2),
                reset: Some(Duration::from_millis(500)),
            },
            ..RateLimitSnapshot::default()
        });
        let t0 = Instant::now();
        let times = admissions(&p, t0, &[1; 3]);
        // Two more fit before the reset; the third waits for it.
        assert!(times[1].duration_since(t0) < Duration::from_millis(100));
        assert_eq!(times[2].duration_since(t0), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn token_corrections_move_the_schedule() {
        let p = Pacer::new(cfg(None, Some(60_000))); // 1000 tokens/s
        let t0 = Instant::now();
        assert_eq!(p.try_admit(500, t0), None);
        p.settle_tokens(500, 1500);
        assert_eq!(p.try_admit(10, t0), Some(t0 + Duration::from_millis(1500)));
        p.settle_tokens(1500, 500);
        assert_eq!(p.try_admit(10, t0 + Duration::from_millis(500)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_sharing_a_pacer_take_turns() {
        // Two dispatch loops on one pacer (two batches of `batchling serve`):
        // a big one queued first and a small one arriving later alternate,
        // so the small one is done after about twice its own length.
        let p = std::sync::Arc::new(Pacer::shared(cfg(Some(600), None)));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let run = |name: &'static str, n: usize| {
            let (p, order) = (p.clone(), order.clone());
            tokio::spawn(async move {
                for _ in 0..n {
                    p.admit(1).await;
                    order.lock().unwrap().push(name);
                }
            })
        };
        let big = run("big", 100);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let small = run("small", 5);
        small.await.unwrap();
        let admitted = order.lock().unwrap().clone();
        let bigs = admitted.iter().filter(|n| **n == "big").count();
        assert!(
            bigs <= 3 + 6,
            "the small caller waited behind {bigs} big admissions"
        );
        big.abort();
    }
}
