//! A 429 pauses every request of its model (one model here), not only the
//! one that got it; and the retries it causes still pass the pacer.
//!
//! Both tests pace at 600 requests a minute: one send per ~101 ms (99%
//! utilisation), so a pause shows as a hole in an otherwise even schedule.

use batchling_engine::PacerConfig;

use crate::support::{Upstream, Workdir, id, ms, ok, rate_limited, secs};

fn paced(n: usize) -> Workdir {
    let mut w = Workdir::with_requests(n);
    w.job.pacing = PacerConfig {
        rpm: Some(600),
        ..PacerConfig::default()
    };
    w
}

#[tokio::test(start_paused = true)]
async fn after_a_429_no_request_is_sent_until_its_retry_after() {
    let w = paced(30);
    // Answers take 250 ms, so a few requests are in flight when the 429
    // comes back (at ~1.26 s, half-way between two sends); they may land
    // during the pause, but nothing new goes out.
    let up = Upstream::new(ok().after(ms(250)))
        .script("r10", [rate_limited(secs(2)).after(ms(250)), ok()])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (30, 1));
    let got_429 = up.sends_of("r10")[0].answered.expect("answered");
    let sends = up.sends();
    let during: Vec<_> = sends
        .iter()
        .filter(|s| s.at > got_429 && s.at < got_429 + secs(2))
        .collect();
    assert!(during.is_empty(), "sent during the pause: {during:?}");
    // Without the pause about 20 sends would have fallen in that window:
    // the run was not over.
    let after = sends.iter().filter(|s| s.at >= got_429 + secs(2)).count();
    assert!(after >= 10, "only {after} sends after the pause");
    assert!(up.sends_of("r10")[1].at >= got_429 + secs(2));
}

#[tokio::test(start_paused = true)]
async fn retries_after_429s_pass_the_pacer_and_each_request_is_written_once() {
    const N: usize = 20;
    let w = paced(N);
    let mut up = Upstream::new(ok());
    for i in 5..10 {
        up = up.script(&id(i), [rate_limited(secs(1)), ok()]);
    }
    let up = up.arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.rate_limited), (N as u64, 5));
    let sends = up.sends();
    assert_eq!(sends.len(), N + 5);
    // The pacer's spacing (~101 ms), less its 10 ms of catch-up slack after
    // a late admission (`pacer/limit.rs`, SLACK), holds between any two sends,
    // retries included.
    for w in sends.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= ms(90),
            "{} then {} after {gap:?}",
            w[0].custom_id,
            w[1].custom_id
        );
    }
    // And no one-second window holds more than a second's share (10).
    for s in &sends {
        let in_window = sends
            .iter()
            .filter(|t| t.at >= s.at && t.at < s.at + secs(1))
            .count();
        assert!(
            in_window <= 10,
            "{in_window} sends in the second from {:?}",
            s.at
        );
    }
    w.assert_each_answered_once();
    assert!(w.failed().is_empty());
}
