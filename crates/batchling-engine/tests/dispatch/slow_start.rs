//! With no limits given, the first answer's headers may tell them: until it
//! arrives, the first request goes alone, then requests in flight may double
//! every 50 ms (`SLOW_START_STEP` in `pacer/mod.rs`); once it arrives the
//! concurrency opens (the slow start of the model's pacer lane, `SlowStart`).

use crate::support::{Upstream, Workdir, id, ms, ok, secs};

#[tokio::test(start_paused = true)]
async fn the_first_request_goes_alone_until_its_answer_then_all_go() {
    const N: usize = 20;
    let w = Workdir::with_requests(N);
    // The first answer comes before the first doubling step; the others
    // take a second, so everything sent after it is in flight at once.
    let up = Upstream::new(ok().after(secs(1)))
        .script(&id(0), [ok().after(ms(30))])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.succeeded, N as u64);
    let sends = up.sends();
    assert_eq!(sends[0].custom_id, id(0));
    let first_answer = sends[0].answered.expect("answered");
    for s in &sends[1..] {
        assert!(s.at >= first_answer, "{s:?} before the first answer");
    }
    // Open at once, not doubling on: the rest were all in flight before the
    // first 50 ms step. (An upper bound on time, which holds because nothing
    // delays those sends: more permits than requests, no pacing, and the
    // whole input in the reader's first batch.)
    let early = sends.iter().filter(|s| s.at < ms(50)).map(|s| s.in_flight);
    assert_eq!(early.max(), Some(N - 1), "the rest went together");
}

#[tokio::test(start_paused = true)]
async fn while_the_first_answer_is_awaited_requests_in_flight_double_every_50_ms() {
    const N: usize = 40;
    let w = Workdir::with_requests(N);
    let up = Upstream::new(ok().after(secs(1))).arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.succeeded, N as u64);
    let sends = up.sends();
    let start = sends[0].at;
    for s in &sends {
        let steps = ((s.at - start).as_millis() / 50) as u32;
        assert!(
            s.in_flight <= 1 << steps,
            "{} in flight after {} steps",
            s.in_flight,
            steps
        );
    }
    // It did open: all were in flight before the first answer (at 1 s).
    assert_eq!(sends.iter().map(|s| s.in_flight).max(), Some(N));
}

#[tokio::test(start_paused = true)]
async fn a_limit_learned_from_the_first_answer_paces_the_rest() {
    const N: usize = 10;
    let w = Workdir::with_requests(N);
    let up = Upstream::new(ok().rpm_limit(600))
        .script(&id(0), [ok().after(ms(30)).rpm_limit(600)])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!(
        (summary.succeeded, summary.rpm_limit),
        (N as u64, Some(600))
    );
    let sends = up.sends();
    // 600 a minute: ~101 ms apart, less the pacer's 10 ms catch-up slack.
    for w in sends[1..].windows(2) {
        assert!(w[1].at - w[0].at >= ms(90), "{w:?}");
    }
}
