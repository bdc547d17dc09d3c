use super::limit::WINDOW;
use super::*;
use batchling_core::ratelimit::LimitReading;
use proptest::prelude::*;

fn cfg(rpm: Option<u64>, tpm: Option<u64>) -> PacerConfig {
    PacerConfig {
        rpm,
        tpm,
        learn: true,
        utilisation: 1.0,
        ..PacerConfig::default()
    }
}

/// `cfg(rpm, tpm)` with limits given per model: `(name, models, limits)`.
fn with_models(
    rpm: Option<u64>,
    tpm: Option<u64>,
    entries: &[(&str, &[&str], GivenLimits)],
) -> PacerConfig {
    let mut models = ModelLimits::default();
    for (name, list, limits) in entries {
        models.add(name, list, *limits);
    }
    PacerConfig {
        models: Arc::new(models),
        ..cfg(rpm, tpm)
    }
}

fn given(rpm: Option<u64>, tpm: Option<u64>) -> GivenLimits {
    GivenLimits {
        rpm,
        tpm,
        ..GivenLimits::default()
    }
}

/// Drive one lane with simulated time; return admission instants.
fn admissions(p: &Pacer, lane: LaneId, start: Instant, costs: &[u64]) -> Vec<Instant> {
    let mut now = start;
    let mut out = Vec::new();
    for &c in costs {
        loop {
            match p.try_admit(lane, Cost::tokens(c), now) {
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

/// Headers saying `rpm` requests a minute (and nothing else).
fn rpm_headers(rpm: u64) -> RateLimitSnapshot {
    RateLimitSnapshot {
        requests: LimitReading {
            limit: Some(rpm),
            ..LimitReading::default()
        },
        ..RateLimitSnapshot::default()
    }
}

/// Tell `lane` an answer with `snapshot` came back.
fn learn(p: &Pacer, lane: LaneId, snapshot: &RateLimitSnapshot) {
    let admitted = Admitted {
        lane,
        slow_start: false,
        stamp: Stamp::default(),
    };
    p.answered(admitted, Some(snapshot), false);
}

#[tokio::test(start_paused = true)]
async fn spaces_requests_evenly() {
    // Not learning: no token limit to discover, no slow start.
    let p = Pacer::new(PacerConfig {
        learn: false,
        ..cfg(Some(6000), None)
    });
    let t0 = Instant::now();
    let times = admissions(&p, p.lane(Some("m")), t0, &[1; 300]);
    // 100 per second: the 300th goes at 2.99 s, not in bursts.
    let last = times.last().unwrap().duration_since(t0);
    assert!(last >= Duration::from_millis(2980) && last <= Duration::from_millis(3000));
    for w in times.windows(2) {
        assert!(w[1].duration_since(w[0]) >= Duration::from_millis(9));
    }
}

proptest! {
    /// The pacer never admits more than a limit's one-second share in any
    /// one-second window, whatever the request sizes, in each lane, while
    /// another lane is admitting too.
    #[test]
    fn never_over_the_limit_in_any_window(
        rpm in 60u64..20_000,
        tpm in 6_000u64..2_000_000,
        costs in proptest::collection::vec(1u64..40_000, 1..300),
        other in proptest::collection::vec(1u64..40_000, 1..100),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let p = Pacer::new(cfg(Some(rpm), Some(tpm)));
            let (a, b) = (p.lane(Some("a")), p.lane(Some("b")));
            let t0 = Instant::now();
            admissions(&p, b, t0, &other);
            let times = admissions(&p, a, t0, &costs);
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
async fn a_pause_blocks_its_lane_until_it_ends_and_no_other() {
    let p = Pacer::new(cfg(Some(6000), None));
    let (a, b) = (p.lane(Some("a")), p.lane(Some("b")));
    let t0 = Instant::now();
    assert_eq!(p.try_admit(a, Cost::default(), t0), None);
    p.pause(a, Duration::from_secs(2));
    assert_eq!(
        p.try_admit(a, Cost::default(), t0),
        Some(t0 + Duration::from_secs(2))
    );
    assert!(p.any_paused() && p.paused_until(b).is_none());
    assert_eq!(p.try_admit(b, Cost::default(), t0), None);
    let later = t0 + Duration::from_secs(2);
    assert_eq!(p.try_admit(a, Cost::default(), later), None);
}

#[tokio::test(start_paused = true)]
async fn learns_limits_from_headers() {
    let p = Pacer::new(cfg(None, None));
    assert_eq!(p.limits(), EffectiveLimits::default());
    let lane = p.lane(Some("m"));
    assert!(p.discovering(lane));
    learn(
        &p,
        lane,
        &RateLimitSnapshot {
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
            ..RateLimitSnapshot::default()
        },
    );
    assert!(!p.discovering(lane) && p.counts_tokens());
    let want = EffectiveLimits {
        rpm: Some(600),
        tpm: Some(60_000),
        ..EffectiveLimits::default()
    };
    assert_eq!(p.limits(), want);
    let t0 = Instant::now();
    let times = admissions(&p, lane, t0, &[1; 11]);
    assert_eq!(times[10].duration_since(t0), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn each_lane_keeps_the_limits_its_own_answers_showed() {
    let p = Pacer::new(cfg(None, None));
    let (slow, fast) = (p.lane(Some("slow")), p.lane(Some("fast")));
    learn(&p, slow, &rpm_headers(600));
    learn(&p, fast, &rpm_headers(6000));
    let t0 = Instant::now();
    // Interleaved, each lane keeps its own pace: 10 a second and 100.
    let mut now = t0;
    let (mut n_slow, mut n_fast) = (0, 0);
    while now < t0 + Duration::from_secs(1) {
        if p.try_admit(slow, Cost::default(), now).is_none() {
            n_slow += 1;
        }
        if p.try_admit(fast, Cost::default(), now).is_none() {
            n_fast += 1;
        }
        now += Duration::from_millis(1);
    }
    assert_eq!((n_slow, n_fast), (10, 100));
    let lanes = p.lanes();
    assert_eq!(lanes[0].model.as_deref(), Some("slow"));
    assert_eq!(lanes[1].limits.rpm, Some(6000));
    // The run's limit is what both may send together.
    assert_eq!(p.limits().rpm, Some(6600));
}

#[tokio::test(start_paused = true)]
async fn given_limits_are_each_lanes_and_win_when_lower() {
    let p = Pacer::new(cfg(Some(120), None));
    assert_eq!(p.limits().rpm, Some(120));
    let (a, b) = (p.lane(Some("a")), p.lane(Some("b")));
    assert!(p.discovering(a), "its token limit is still to learn");
    learn(&p, a, &rpm_headers(6000));
    learn(&p, b, &rpm_headers(60));
    let rpms: Vec<_> = p.lanes().iter().map(|l| l.limits.rpm).collect();
    assert_eq!(rpms, [Some(120), Some(60)]);
}

#[tokio::test(start_paused = true)]
async fn a_new_lane_starts_slowly_while_a_known_one_keeps_its_pace() {
    let p = Pacer::new(cfg(None, None));
    let known = p.lane(Some("known"));
    learn(&p, known, &rpm_headers(6000));
    let fresh = p.lane(Some("fresh"));
    let t0 = Instant::now();
    // The new lane: one, then it waits for its first answer or 50 ms.
    assert_eq!(p.try_admit(fresh, Cost::default(), t0), None);
    let step = t0 + SLOW_START_STEP;
    assert_eq!(p.try_admit(fresh, Cost::default(), t0), Some(step));
    // The known lane is not held back by it.
    let times = admissions(&p, known, t0, &[1; 5]);
    assert!(times[4] < t0 + Duration::from_millis(50));
    // Its first answer, with headers, opens the new lane.
    let first = Admitted {
        lane: fresh,
        slow_start: true,
        stamp: Stamp::default(),
    };
    p.answered(first, Some(&rpm_headers(600)), false);
    assert_eq!(p.try_admit(fresh, Cost::default(), t0), None);
}

#[tokio::test(start_paused = true)]
async fn slow_start_doubles_then_opens_without_headers() {
    let p = Pacer::new(cfg(None, None));
    let lane = p.lane(None);
    let t0 = Instant::now();
    let sent = |at: Instant| {
        let mut n = 0;
        while p.try_admit(lane, Cost::default(), at).is_none() {
            n += 1;
        }
        n
    };
    assert_eq!(sent(t0), 1);
    assert_eq!(sent(t0 + SLOW_START_STEP), 1); // 2 in flight now
    assert_eq!(sent(t0 + SLOW_START_STEP * 2), 2); // 4
    // After its last step the lane is open, and stays so.
    let open = t0 + SLOW_START_STEP * SLOW_START_STEPS;
    assert_eq!(p.try_admit(lane, Cost::default(), open), None);
    assert!(!p.discovering(lane));
}

#[tokio::test(start_paused = true)]
async fn the_lane_of_a_model_is_found_again_and_odd_models_share_one() {
    let p = Pacer::new(cfg(Some(600), None));
    let (a, b) = (p.lane(Some("a")), p.lane(Some("b")));
    assert_ne!(a, b);
    assert_eq!(p.lane(Some("a")), a);
    assert_eq!(p.lane(Some("b")), b);
    let none = p.lane(None);
    assert_eq!(p.lane(Some("")), none);
    let long = "x".repeat(MAX_MODEL_BYTES + 1);
    assert_eq!(p.lane(Some(&long)), none, "too long a name gets no lane");
    for i in 0..MAX_LANES * 2 {
        p.lane(Some(&format!("m{i}")));
    }
    assert_eq!(p.lanes().len(), MAX_LANES);
}

#[tokio::test(start_paused = true)]
async fn low_remaining_holds_until_reset() {
    let p = Pacer::new(cfg(Some(6000), None));
    let lane = p.lane(None);
    learn(
        &p,
        lane,
        &RateLimitSnapshot {
            requests: LimitReading {
                limit: Some(6000),
                remaining: Some(2),
                reset: Some(Duration::from_millis(500)),
            },
            ..RateLimitSnapshot::default()
        },
    );
    let t0 = Instant::now();
    let times = admissions(&p, lane, t0, &[1; 3]);
    // Two more fit before the reset; the third waits for it.
    assert!(times[1].duration_since(t0) < Duration::from_millis(100));
    assert_eq!(times[2].duration_since(t0), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn token_corrections_move_the_schedule() {
    let p = Pacer::new(cfg(None, Some(60_000))); // 1000 tokens/s
    let lane = p.lane(None);
    let t0 = Instant::now();
    assert_eq!(p.try_admit(lane, Cost::tokens(500), t0), None);
    p.settle_tokens(lane, 500, 1500);
    let next = p.try_admit(lane, Cost::tokens(10), t0);
    assert_eq!(next, Some(t0 + Duration::from_millis(1500)));
    p.settle_tokens(lane, 1500, 500);
    let later = t0 + Duration::from_millis(500);
    assert_eq!(p.try_admit(lane, Cost::tokens(10), later), None);
}

#[test]
fn each_dimension_counts_by_its_own_rule() {
    let c = Cost {
        input: 300,
        output: 50,
    };
    let units = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::InputTokens,
        Dimension::OutputTokens,
    ]
    .map(|d| d.units(c));
    assert_eq!(units, [1, 350, 300, 50]);
}

#[tokio::test(start_paused = true)]
async fn an_output_token_limit_paces_by_output_alone() {
    // 6,000 output tokens a minute: 100 a second, whatever the input.
    let mut l = Limit::new(Dimension::OutputTokens, Some(6000), Instant::now(), true);
    let t0 = Instant::now();
    let big_input = Cost {
        input: 100_000,
        output: 50,
    };
    l.admit(big_input, t0, 1.0);
    assert_eq!(l.ready_at(big_input, t0), t0 + Duration::from_millis(500));
    let settle = Settle {
        reserved: 100_000,
        input: 101_000,
        cache_reads: 0,
    };
    l.correct_input(settle, 1.0);
    assert_eq!(l.ready_at(big_input, t0), t0 + Duration::from_millis(500));
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
                p.admit(Some("m"), None, Cost::default()).await;
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

/// A provider keeping fixed one-second windows of `tpm / 60` tokens, which
/// counts every request `factor` times what the pacer counts. Its headers
/// are worked out at admission, as a provider's limiter does.
struct WindowedProvider {
    tpm: u64,
    factor: f64,
    start: Instant,
    window: u64,
    used: u64,
    /// Each whole window's tokens by the provider's count.
    per_window: Vec<u64>,
    refused: Vec<u64>,
}

impl WindowedProvider {
    fn new(tpm: u64, factor: f64) -> Self {
        WindowedProvider {
            tpm,
            factor,
            start: Instant::now(),
            window: 0,
            used: 0,
            per_window: vec![0],
            refused: vec![0],
        }
    }

    /// Charge one request of `ours` tokens now: its headers, or the wait a
    /// 429 asks for.
    fn charge(&mut self, ours: u64) -> Result<RateLimitSnapshot, Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.start);
        let index = elapsed.as_secs();
        if index != self.window {
            self.window = index;
            self.used = 0;
            self.per_window.resize(index as usize + 1, 0);
            self.refused.resize(index as usize + 1, 0);
        }
        let cap = self.tpm / 60;
        let theirs = (ours as f64 * self.factor).round() as u64;
        let reset = Duration::from_secs(index + 1) - elapsed;
        if self.used + theirs > cap {
            self.refused[index as usize] += 1;
            return Err(reset);
        }
        self.used += theirs;
        self.per_window[index as usize] += theirs;
        Ok(RateLimitSnapshot {
            tokens: LimitReading {
                limit: Some(self.tpm),
                remaining: Some(cap - self.used),
                reset: Some(reset),
            },
            ..RateLimitSnapshot::default()
        })
    }
}

/// Send `n` requests of `ours` tokens each through a pacer that knows the
/// limit but not how the provider counts; each answer comes back `latency`
/// after its admission (its headers as the admission left the window).
async fn run_against(
    provider: &mut WindowedProvider,
    ours: u64,
    n: usize,
    latency: Duration,
) -> Pacer {
    let p = Pacer::new(cfg(None, Some(provider.tpm)));
    let mut answers: std::collections::VecDeque<(Instant, Admitted, Option<RateLimitSnapshot>)> =
        Default::default();
    let mut left = n;
    while left > 0 || !answers.is_empty() {
        let now = Instant::now();
        while answers.front().is_some_and(|a| a.0 <= now) {
            let (_, a, snapshot) = answers.pop_front().unwrap();
            match snapshot {
                Some(s) => {
                    p.answered(a, Some(&s), false);
                }
                None => {
                    p.answered(a, Some(&RateLimitSnapshot::default()), true);
                    p.pause(a.lane, Duration::from_millis(100));
                    left += 1;
                }
            }
        }
        let next_answer = answers.front().map(|a| a.0);
        if left == 0 {
            match next_answer {
                Some(t) => tokio::time::advance(t - now).await,
                None => break,
            }
            continue;
        }
        match p.try_admit_to(Some("m"), None, Cost::tokens(ours), now) {
            Tried::Admitted(a) => {
                left -= 1;
                answers.push_back((now + latency, a, provider.charge(ours).ok()));
            }
            Tried::Waits(w) => {
                let until = next_answer.map_or(w.at, |t| t.min(w.at));
                tokio::time::advance(until - now).await;
            }
        }
    }
    p
}

fn learned_ratio(p: &Pacer) -> f64 {
    p.lanes()[0]
        .token_charge
        .expect("a token limit is in force")
}

#[tokio::test(start_paused = true)]
async fn learns_a_provider_counting_more_and_earns_no_429s() {
    // 6,000 tokens a second; 100 tokens each by our count, 120 by the
    // provider's: unlearned, 60 a second go where 50 fit.
    let mut provider = WindowedProvider::new(360_000, 1.2);
    let p = run_against(&mut provider, 100, 3_000, Duration::from_millis(200)).await;
    let ratio = learned_ratio(&p);
    assert!((ratio - 1.2).abs() < 0.005, "learned {ratio}");
    // Learned from the first answers; the `remaining` hold covers the
    // round trip before them.
    assert_eq!(
        provider.refused.iter().sum::<u64>(),
        0,
        "{:?}",
        provider.refused
    );
    // And the provider's windows stay at its limit, not below it.
    let full = &provider.per_window[3..provider.per_window.len() - 1];
    assert!(full.iter().all(|t| (5_880..=6_000).contains(t)), "{full:?}");
}

#[tokio::test(start_paused = true)]
async fn learns_a_provider_counting_less_and_uses_what_it_leaves() {
    // 100 tokens by our count, 80 by the provider's: unlearned, 60 a second
    // go where 75 fit.
    let mut provider = WindowedProvider::new(360_000, 0.8);
    let p = run_against(&mut provider, 100, 3_000, Duration::from_millis(200)).await;
    let ratio = learned_ratio(&p);
    assert!((ratio - 0.8).abs() < 0.005, "learned {ratio}");
    assert_eq!(provider.refused.iter().sum::<u64>(), 0);
    let full = &provider.per_window[3..provider.per_window.len() - 1];
    assert!(full.iter().all(|t| (5_840..=6_000).contains(t)), "{full:?}");
}

#[test]
fn charge_learning_skips_pairs_across_windows_and_out_of_order_answers() {
    use super::charge::Charge;
    let t0 = Instant::now();
    let reading = |remaining, reset_ms| LimitReading {
        limit: Some(60_000),
        remaining: Some(remaining),
        reset: Some(Duration::from_millis(reset_ms)),
    };
    let mut c = Charge::default();
    let at = |ms| Some(t0 + Duration::from_millis(ms));
    // One window ending at 1 s: 100 of ours took 150 of theirs.
    c.observe(100, at(0), &reading(900, 1000), 60_000);
    c.observe(200, at(100), &reading(750, 900), 60_000);
    assert!((c.ratio() - 1.5).abs() < 1e-9);
    // A late answer to an earlier admission teaches nothing.
    c.observe(150, at(50), &reading(10, 950), 60_000);
    assert!((c.ratio() - 1.5).abs() < 1e-9);
    // The next window (its remaining back up): a new pair starts.
    c.observe(300, at(1000), &reading(1000, 1000), 60_000);
    assert!((c.ratio() - 1.5).abs() < 1e-9);
    // A 429 in between spoils the open pair.
    c.forget_pair();
    c.observe(400, at(1100), &reading(990, 900), 60_000);
    assert!((c.ratio() - 1.5).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_lane_with_every_limit_given_has_no_slow_start() {
    let p = Pacer::new(cfg(Some(120), Some(10_000)));
    assert!(!p.discovering(p.lane(Some("a"))));
    // Input and output token limits stand for tokens too.
    let io = GivenLimits {
        rpm: Some(50),
        itpm: Some(30_000),
        otpm: Some(8_000),
        ..GivenLimits::default()
    };
    let p = Pacer::new(with_models(None, None, &[("claude", &["claude"], io)]));
    assert!(!p.discovering(p.lane(Some("claude"))));
    assert!(p.discovering(p.lane(Some("other"))));
    assert!(p.counts_tokens(), "a given itpm needs token counts");
}

#[tokio::test(start_paused = true)]
async fn a_family_shares_one_lane_one_budget_and_one_pause() {
    let fam = given(Some(600), Some(1_000_000));
    let p = Pacer::new(with_models(
        Some(6000),
        None,
        &[("mini", &["mini-a", "mini-b"], fam)],
    ));
    let (a, b, other) = (
        p.lane(Some("mini-a")),
        p.lane(Some("mini-b")),
        p.lane(Some("c")),
    );
    assert_eq!(a, b, "one lane for the family");
    assert_ne!(a, other);
    assert!(!p.discovering(a));
    // 10 a second between both models of the family, not 10 each.
    let t0 = Instant::now();
    let mut now = t0;
    let mut sent = 0;
    while now < t0 + Duration::from_secs(1) {
        for m in ["mini-a", "mini-b"] {
            if let Tried::Admitted(x) = p.try_admit_to(Some(m), None, Cost::default(), now) {
                assert_eq!(x.lane, a);
                sent += 1;
            }
        }
        now += Duration::from_millis(1);
    }
    assert_eq!(sent, 10);
    // A 429 of one model pauses the other; the model outside keeps going.
    let later = Instant::now() + Duration::from_secs(5);
    tokio::time::advance(Duration::from_secs(5)).await;
    p.pause(a, Duration::from_secs(30));
    assert!(p.paused_until(b).is_some());
    assert!(p.try_admit(b, Cost::default(), later).is_some());
    assert!(p.paused_until(other).is_none());
    let lanes = p.lanes();
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0].model.as_deref(), Some("mini"));
    assert!(lanes[0].family && !lanes[1].family);
    assert_eq!(lanes[0].counts.rate_limited, 1);
    assert_eq!(lanes[0].limits.rpm, Some(600));
    assert_eq!(lanes[1].limits.rpm, Some(6000), "the default for the rest");
}

#[tokio::test(start_paused = true)]
async fn a_models_own_limit_replaces_the_defaults() {
    let own = given(Some(100), None);
    let p = Pacer::new(with_models(Some(10), Some(5000), &[("m", &["m"], own)]));
    let (m, x) = (p.lane(Some("m")), p.lane(Some("x")));
    let lanes = p.lanes();
    assert_eq!(
        lanes[0].given, own,
        "no default tpm for a model with its own entry"
    );
    assert_eq!(lanes[0].model.as_deref(), Some("m"));
    assert!(!lanes[0].family, "an entry for one model is no family");
    assert_eq!(lanes[1].given, given(Some(10), Some(5000)));
    assert!(p.discovering(m) && !p.discovering(x));
}

#[tokio::test(start_paused = true)]
async fn given_and_learned_per_model_the_lower_wins_either_way() {
    let p = Pacer::new(with_models(
        None,
        None,
        &[
            ("low", &["low"], given(Some(60), Some(1000))),
            ("high", &["high"], given(Some(6000), Some(1000))),
        ],
    ));
    let (low, high) = (p.lane(Some("low")), p.lane(Some("high")));
    // The provider says 600 for both: the given 60 stays, the given 6000
    // gives way.
    learn(&p, low, &rpm_headers(600));
    learn(&p, high, &rpm_headers(600));
    let rpms: Vec<_> = p.lanes().iter().map(|l| l.limits.rpm).collect();
    assert_eq!(rpms, [Some(60), Some(600)]);
    // And it paces by it: one a second, ten a second.
    let t0 = Instant::now();
    let low_times = admissions(&p, low, t0, &[0; 3]);
    assert_eq!(low_times[2].duration_since(t0), Duration::from_secs(2));
    let high_times = admissions(&p, high, t0, &[0; 3]);
    assert_eq!(high_times[2].duration_since(t0), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn lanes_carry_input_and_output_limits_only_when_given() {
    let io = GivenLimits {
        rpm: Some(6000),
        otpm: Some(6000),
        ..GivenLimits::default()
    };
    let p = Pacer::new(with_models(None, None, &[("c", &["c"], io)]));
    let (c, plain) = (p.lane(Some("c")), p.lane(Some("plain")));
    let big_output = Cost {
        input: 1,
        output: 50,
    };
    let t0 = Instant::now();
    // 100 output tokens a second: 50 each, so the third waits a second.
    let times = admissions(&p, c, t0, &[0; 0]);
    assert!(times.is_empty());
    assert_eq!(p.try_admit(c, big_output, t0), None);
    assert_eq!(
        p.try_admit(c, big_output, t0 + Duration::from_millis(500)),
        None
    );
    assert!(
        p.try_admit(c, big_output, t0 + Duration::from_millis(500))
            .is_some()
    );
    assert_eq!(p.lanes()[0].limits.otpm, Some(6000));
    assert_eq!(p.lanes()[1].limits.otpm, None);
    let s = p.lock();
    assert_eq!(s.lane(c).limits.len(), 3);
    assert_eq!(
        s.lane(plain).limits.len(),
        2,
        "no dimension that can hold nothing back"
    );
}

#[tokio::test(start_paused = true)]
async fn successes_count_per_lane() {
    let p = Pacer::new(cfg(Some(600), Some(100_000)));
    let (a, b) = (p.lane(Some("a")), p.lane(Some("b")));
    let settle = Settle {
        reserved: 10,
        input: 12,
        cache_reads: 0,
    };
    p.succeeded(a, 30, Some(settle));
    p.succeeded(a, 20, None);
    p.succeeded(b, 5, None);
    let before = p.lane_counts();
    p.succeeded(a, 1, None);
    let lanes = p.lanes();
    assert_eq!((lanes[0].counts.succeeded, lanes[0].counts.tokens), (3, 51));
    assert_eq!(lanes[1].counts.succeeded, 1);
    assert_eq!(lanes[0].counts.since(before[0]).succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn input_and_output_limits_come_into_a_lane_when_an_answer_shows_them() {
    let p = Pacer::new(cfg(None, None));
    let lane = p.lane(Some("claude"));
    let t0 = Instant::now();
    assert_eq!(p.lanes()[0].limits.itpm, None);
    // Anthropic's answer: 60 requests, 60,000 input tokens, 6,000 output
    // tokens a minute.
    let shown = |limit| LimitReading {
        limit: Some(limit),
        ..LimitReading::default()
    };
    let snapshot = RateLimitSnapshot {
        requests: shown(600),
        input_tokens: shown(60_000),
        output_tokens: shown(6_000),
        ..RateLimitSnapshot::default()
    };
    learn(&p, lane, &snapshot);
    let limits = p.lanes()[0].limits;
    assert_eq!((limits.itpm, limits.otpm), (Some(60_000), Some(6_000)));
    assert!(p.counts_tokens());
    // Output is the binding one: 100 a second, so 50-token answers go 2 a
    // second, spaced, though input and requests would allow more.
    let cost = Cost {
        input: 10,
        output: 50,
    };
    let mut now = t0;
    let mut times = Vec::new();
    for _ in 0..6 {
        while let Some(at) = p.try_admit(lane, cost, now) {
            now = at;
        }
        times.push(now);
    }
    let span = times[5].duration_since(times[0]);
    assert!(span >= Duration::from_millis(2400), "{span:?}");
}

#[tokio::test(start_paused = true)]
async fn an_input_token_limit_leaves_cache_reads_out_of_the_correction() {
    // 60,000 input tokens a minute: 1,000 a second.
    let io = GivenLimits {
        rpm: Some(6_000),
        itpm: Some(60_000),
        otpm: Some(600_000),
        ..GivenLimits::default()
    };
    let p = Pacer::new(with_models(None, None, &[("claude", &["claude"], io)]));
    let lane = p.lane(Some("claude"));
    let t0 = Instant::now();
    let cost = Cost {
        input: 500,
        output: 0,
    };
    assert_eq!(p.try_admit(lane, cost, t0), None);
    // 1,500 input tokens counted, 1,000 of them read from the cache: the
    // input limit was charged 500, as reserved.
    let settle = Settle {
        reserved: 500,
        input: 1_500,
        cache_reads: 1_000,
    };
    p.succeeded(lane, 1_500, Some(settle));
    let small = Cost {
        input: 10,
        output: 0,
    };
    assert_eq!(
        p.try_admit(lane, small, t0),
        Some(t0 + Duration::from_millis(500))
    );
}

#[test]
fn a_limit_group_has_its_own_limits_and_its_name_in_reports() {
    let mut mini = ModelLimits::default();
    mini.add(
        "gpt-4o-mini",
        &["gpt-4o-mini"],
        given(Some(5000), Some(2_000_000)),
    );
    let config = PacerConfig {
        groups: vec![
            GroupLimits {
                name: "proj-a".into(),
                defaults: given(Some(100), None),
                models: Arc::new(mini),
            },
            GroupLimits {
                name: "proj-b".into(),
                ..GroupLimits::default()
            },
        ],
        ..cfg(Some(60), Some(1000))
    };
    let p = Pacer::new(config);
    p.lane_in(0, Some("gpt-4o-mini"));
    p.lane_in(0, Some("other"));
    p.lane_in(1, Some("gpt-4o-mini"));
    let lanes = p.lanes();
    let of = |name: &str| {
        (lanes.iter())
            .find(|l| l.model.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name}: {lanes:?}"))
            .given
    };
    assert_eq!(of("proj-a/gpt-4o-mini"), given(Some(5000), Some(2_000_000)));
    // The group's default, and the pacer's for what the group leaves out.
    assert_eq!(of("proj-a/other"), given(Some(100), Some(1000)));
    assert_eq!(of("proj-b/gpt-4o-mini"), given(Some(60), Some(1000)));
}

#[test]
fn a_pool_admits_to_the_group_with_the_most_room_whatever_the_order() {
    let group = |name: &str| GroupLimits {
        name: name.into(),
        defaults: given(Some(600), None),
        ..GroupLimits::default()
    };
    let one = Cost::tokens(1);
    // Later than any lane's making.
    let t0 = Instant::now() + Duration::from_secs(1);
    // Group a (0) has three of its ten a second out; b (1) none.
    let pool = || {
        let p = Pacer::new(PacerConfig {
            groups: vec![group("a"), group("b")],
            learn: false,
            ..cfg(None, None)
        });
        for i in 0..3 {
            let at = t0 + Duration::from_millis(100 * i);
            let tried = p.try_admit_in_group(0, Some("m"), None, one, at);
            assert!(matches!(tried, Tried::Admitted(_)), "{i}: {tried:?}");
        }
        p
    };
    let now = t0 + Duration::from_millis(300);
    for order in [[0, 1], [1, 0]] {
        let p = pool();
        let (i, _) = (p.try_admit_roomiest(&order, Some("m"), one, now)).expect("both are ready");
        assert_eq!(order[i], 1, "order {order:?}: b has more room");
        // b's spacing now holds it: a, ready, takes the next.
        let (i, _) = (p.try_admit_roomiest(&order, Some("m"), one, now)).expect("a is ready");
        assert_eq!(order[i], 0);
        // Both spaced out: the answer is when the first is ready again.
        let Err(Some((_, w))) = p.try_admit_roomiest(&order, Some("m"), one, now) else {
            panic!("both lanes are spaced out");
        };
        assert!(w.at > now && w.at <= now + Duration::from_millis(100));
    }
    let p = Pacer::new(cfg(None, None));
    assert_eq!(p.try_admit_roomiest(&[], Some("m"), one, now), Err(None));
}

#[tokio::test(start_paused = true)]
async fn a_group_held_by_a_low_remaining_has_less_room_than_its_spacing_shows() {
    let group = |name: &str| GroupLimits {
        name: name.into(),
        defaults: given(Some(600), None),
        ..GroupLimits::default()
    };
    let p = Pacer::new(PacerConfig {
        groups: vec![group("a"), group("b")],
        ..cfg(None, None)
    });
    let one = Cost::tokens(1);
    let now = Instant::now();
    // One request each; a's answer says it has 2 left for a while.
    let Tried::Admitted(a) = p.try_admit_in_group(0, Some("m"), None, one, now) else {
        panic!("a is empty");
    };
    let Tried::Admitted(_) = p.try_admit_in_group(1, Some("m"), None, one, now) else {
        panic!("b is empty");
    };
    let snap = RateLimitSnapshot {
        requests: LimitReading {
            limit: Some(600),
            remaining: Some(2),
            reset: Some(Duration::from_secs(30)),
        },
        ..RateLimitSnapshot::default()
    };
    p.answered(a, Some(&snap), false);
    let later = now + Duration::from_millis(200);
    let (i, _) = (p.try_admit_roomiest(&[0, 1], Some("m"), one, later)).expect("both ready");
    assert_eq!(i, 1, "a's hold leaves it one of ten");
}

#[tokio::test(start_paused = true)]
async fn a_hold_delays_a_lane_without_counting_a_429_or_showing_a_pause() {
    let p = Pacer::new(PacerConfig {
        learn: false,
        ..cfg(Some(6000), None)
    });
    let lane = p.lane(Some("m"));
    let now = Instant::now();
    assert_eq!(p.try_admit(lane, Cost::tokens(1), now), None);
    p.hold(lane, Duration::from_millis(300));
    // A shorter hold does not shorten it.
    p.hold(lane, Duration::from_millis(100));
    let later = now + Duration::from_millis(50);
    assert_eq!(
        p.try_admit(lane, Cost::tokens(1), later),
        Some(now + Duration::from_millis(300))
    );
    assert!(!p.any_paused(), "a hold is not a 429 pause");
    assert_eq!(p.lanes()[0].counts.rate_limited, 0);
    let after = now + Duration::from_millis(300);
    assert_eq!(p.try_admit(lane, Cost::tokens(1), after), None);
}

#[tokio::test(start_paused = true)]
async fn limits_another_process_learned_end_slow_start_and_the_lower_given_one_wins() {
    let p = Pacer::new(PacerConfig {
        tpm: Some(50_000),
        ..cfg(None, None)
    });
    let lane = p.lane(Some("m"));
    assert!(p.discovering(lane));
    assert_eq!(p.learned_view(lane), None);
    p.learn_shared(
        lane,
        PerMinute {
            rpm: Some(6000),
            tpm: Some(1_000_000),
            ..PerMinute::default()
        },
    );
    assert!(!p.discovering(lane), "slow start is over");
    let (_, in_force) = p.shared_view(lane);
    let in_force = in_force.expect("limits are known");
    assert_eq!((in_force.rpm, in_force.tpm), (Some(6000), Some(50_000)));
    // Only what was learned goes on to other processes, not the given TPM.
    let learned = p.learned_view(lane).expect("the rpm was learned");
    assert_eq!((learned.rpm, learned.tpm), (Some(6000), None));
}

#[test]
fn a_run_that_ignores_headers_ignores_shared_limits_too() {
    let p = Pacer::new(PacerConfig {
        learn: false,
        ..cfg(Some(600), None)
    });
    let lane = p.lane(Some("m"));
    p.learn_shared(
        lane,
        PerMinute {
            rpm: Some(60),
            ..PerMinute::default()
        },
    );
    assert_eq!(p.shared_view(lane).1.and_then(|l| l.rpm), Some(600));
}
