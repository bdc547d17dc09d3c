//! Lanes: each model is paced by its own limits, learned from its own
//! answers or given per model; a new model starts slowly on its own; a 429
//! pauses its model only. Requests a lane cannot take yet are set aside
//! while other models' go ahead.
//!
//! Every file here has at most 64 lines, the reader's first batch, so no
//! send waits on the reader thread: the counts of sends within a simulated
//! second are lower bounds that hold however the threads run.

use std::time::Duration;

use batchling_engine::PacerConfig;

use crate::support::{Sent, Upstream, Workdir, id, ms, ok, rate_limited, secs};

/// The most sends that fall in any one-second window.
fn max_in_a_second(sends: &[Sent]) -> usize {
    let in_second = |s: &Sent| between(sends, s.at, s.at + secs(1));
    sends.iter().map(in_second).max().unwrap_or(0)
}

/// Sends that started in `[from, to)`.
fn between(sends: &[Sent], from: Duration, to: Duration) -> usize {
    sends.iter().filter(|s| s.at >= from && s.at < to).count()
}

/// Even requests for model `a`, odd ones for `b`.
fn alternating(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "a" } else { "b" }
}

#[tokio::test(start_paused = true)]
async fn two_models_each_run_at_the_limit_their_own_answers_show() {
    const N: usize = 64;
    let w = Workdir::with_models(N, alternating);
    // a: 600 a minute (10 a second); b: 1,200 (20 a second).
    let up = Upstream::new(ok())
        .model("a", [ok().after(ms(100)).rpm_limit(600)])
        .model("b", [ok().after(ms(100)).rpm_limit(1200)])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (N as u64, 0));
    let (a, b) = (up.sends_for("a"), up.sends_for("b"));
    // Never over its own limit in any second, slow start included...
    assert!(max_in_a_second(&a) <= 10, "a over its limit: {a:?}");
    assert!(max_in_a_second(&b) <= 20, "b over its limit: {b:?}");
    // ...and each at it, at the same time: b is not held to a's pace (its
    // 32 requests would take 3 s at a's 10 a second).
    let first = (Duration::ZERO, secs(1));
    assert!(between(&a, first.0, first.1) >= 9, "a: {a:?}");
    assert!(between(&b, first.0, first.1) >= 18, "b: {b:?}");
    assert!(b.last().expect("sent").at < secs(2), "b: {b:?}");
    assert_eq!(summary.rpm_limit, Some(1800), "the lanes' limits together");
    let lanes: Vec<_> = summary
        .lanes
        .iter()
        .map(|l| (l.model.as_deref(), l.rpm_limit))
        .collect();
    assert_eq!(lanes, [(Some("a"), Some(600)), (Some("b"), Some(1200))]);
    w.assert_each_answered_once();
}

#[tokio::test(start_paused = true)]
async fn a_new_model_starts_slowly_while_the_other_keeps_its_pace() {
    const N: usize = 64;
    // Lines 20 to 29 are for a model not seen before.
    let w = Workdir::with_models(N, |i| if (20..30).contains(&i) { "new" } else { "old" });
    let up = Upstream::new(ok())
        .model("old", [ok().after(ms(100)).rpm_limit(600)])
        .model("new", [ok().after(ms(500)).rpm_limit(6000)])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (N as u64, 0));
    let (old, new) = (up.sends_for("old"), up.sends_for("new"));
    // The new model's first request went alone; until its first answer
    // its requests in flight at most doubled every 50 ms.
    let start = new[0].at;
    let first_answer = new[0].answered.expect("answered");
    for s in new.iter().filter(|s| s.at < first_answer) {
        let in_flight = new
            .iter()
            .filter(|t| t.at <= s.at && t.answered.is_none_or(|a| a > s.at))
            .count();
        let steps = ((s.at - start).as_millis() / 50) as u32;
        assert!(in_flight <= 1 << steps, "{in_flight} after {steps} steps");
    }
    assert!(new[1].at >= start + ms(50), "{new:?}");
    // Meanwhile the old model kept its 10 a second.
    let during = between(&old, start, start + secs(1));
    assert!(during >= 9, "{during} of the old model's sends: {old:?}");
    assert!(max_in_a_second(&old) <= 10, "{old:?}");
}

#[tokio::test(start_paused = true)]
async fn a_429_for_one_model_pauses_that_model_alone() {
    const N: usize = 64;
    let w = Workdir::with_models(N, alternating);
    let up = Upstream::new(ok())
        .model("a", [ok().after(ms(100)).rpm_limit(600)])
        .model("b", [ok().after(ms(100)).rpm_limit(600)])
        .script(&id(10), [rate_limited(secs(2)).after(ms(100)), ok()])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (N as u64, 1));
    let got_429 = up.sends_of(&id(10))[0].answered.expect("answered");
    let pause = (got_429 + ms(1), got_429 + secs(2));
    let (a, b) = (up.sends_for("a"), up.sends_for("b"));
    assert_eq!(between(&a, pause.0, pause.1), 0, "a sent while paused");
    // b went on at its own pace (10 a second) through a's pause.
    let during = between(&b, pause.0, pause.1);
    assert!(
        during >= 15,
        "{during} of b's sends during a's pause: {b:?}"
    );
    assert!(up.sends_of(&id(10))[1].at >= got_429 + secs(2));
    w.assert_each_answered_once();
}

#[tokio::test(start_paused = true)]
async fn a_given_limit_is_each_models_not_a_total() {
    const N: usize = 40;
    let mut w = Workdir::with_models(N, alternating);
    w.job.pacing = PacerConfig {
        rpm: Some(600),
        ..PacerConfig::default()
    };
    let up = Upstream::new(ok().after(ms(100))).arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.succeeded, N as u64);
    let (a, b) = (up.sends_for("a"), up.sends_for("b"));
    assert!(max_in_a_second(&a) <= 10 && max_in_a_second(&b) <= 10);
    // Together, twice what one model may send.
    let together = between(&up.sends(), ms(500), ms(1500));
    assert!(together >= 18, "{together} sends in a second");
    assert_eq!(summary.rpm_limit, Some(1200));
}

#[tokio::test(start_paused = true)]
async fn a_model_whose_lines_come_late_does_not_wait_for_the_first_models_lines() {
    const N: usize = 40;
    // 30 lines of a slow model (3 s of sends), then 10 of a fast one.
    let w = Workdir::with_models(N, |i| if i < 30 { "slow" } else { "fast" });
    let up = Upstream::new(ok())
        .model("slow", [ok().after(ms(100)).rpm_limit(600)])
        .model("fast", [ok().after(ms(100)).rpm_limit(6000)])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (N as u64, 0));
    let (slow, fast) = (up.sends_for("slow"), up.sends_for("fast"));
    // The slow model's lines wait aside for their lane; the fast model's
    // go long before the last of them.
    let last_slow = slow.last().expect("sent").at;
    assert!(last_slow >= secs(2), "{slow:?}");
    let last_fast = fast.last().expect("sent").at;
    assert!(last_fast < secs(1), "{fast:?}");
}
