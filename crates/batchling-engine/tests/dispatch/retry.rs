//! Retries after 5xx: full-jitter exponential backoff, `max_attempts`, and
//! a server's `Retry-After` winning over the backoff.
//!
//! The backoff before retry `k` (1-based) is uniform in
//! `[0, min(cap, base · 2^(k-1)))` (`RetryPolicy::backoff`): it has no lower
//! bound but zero, so each gap is checked against its ceiling, and the
//! growth through the mean of many requests' gaps.
//!
//! The ceilings are upper bounds on simulated time. They hold here because
//! nothing stands between a backoff's timer and the send it releases: no
//! pacing, more permits than requests, and limit discovery ends at the first
//! answer. Tokio rounds a timer up to the next millisecond.

use std::time::Duration;

use batchling_core::RetryPolicy;

use crate::support::{Sent, Upstream, Workdir, id, ms, ok, secs, status};

/// The gap before each retry: from an answer to the next send.
fn gaps(sends: &[Sent]) -> Vec<Duration> {
    sends
        .windows(2)
        .map(|w| w[1].at - w[0].answered.expect("answered before its retry"))
        .collect()
}

fn mean(d: impl Iterator<Item = Duration>) -> Duration {
    let d: Vec<Duration> = d.collect();
    d.iter().sum::<Duration>() / d.len() as u32
}

const TIMER_ROUNDING: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn two_500s_then_200_is_answered_once_after_growing_backoffs() {
    const N: usize = 200;
    let base = secs(1);
    let mut w = Workdir::with_requests(N);
    w.job.retry = RetryPolicy {
        max_attempts: 6,
        base,
        cap: secs(60),
    };
    let up = Upstream::each([status(500), status(500), ok()]).arc();

    let summary = w.run(&up).await;

    assert_eq!(
        (summary.succeeded, summary.failed, summary.attempts),
        (N as u64, 0, 3 * N as u64)
    );
    w.assert_each_answered_once();
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..N {
        let sends = up.sends_of(&id(i));
        let statuses: Vec<_> = sends.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Some(500), Some(500), Some(200)], "{}", id(i));
        let g = gaps(&sends);
        assert!(
            g[0] <= base + TIMER_ROUNDING,
            "{}: first backoff {:?}",
            id(i),
            g[0]
        );
        assert!(
            g[1] <= 2 * base + TIMER_ROUNDING,
            "{}: second backoff {:?}",
            id(i),
            g[1]
        );
        first.push(g[0]);
        second.push(g[1]);
    }
    // Means of 200 uniform draws: base/2 and base, each within seven
    // standard deviations (a miss by chance is below one in 10^11).
    let (m1, m2) = (mean(first.into_iter()), mean(second.into_iter()));
    assert!(m1 >= ms(350) && m1 <= ms(650), "mean first backoff {m1:?}");
    assert!(
        m2 >= ms(700) && m2 <= ms(1300),
        "mean second backoff {m2:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_always_gets_500_fails_after_max_attempts() {
    let mut w = Workdir::with_requests(3);
    w.job.retry = RetryPolicy {
        max_attempts: 5,
        base: ms(100),
        cap: ms(300),
    };
    // The other requests succeed meanwhile, so the upstream is not down:
    // r00 itself is the problem (see `outage.rs` for the other case).
    let up = Upstream::new(ok()).script("r00", [status(500)]).arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.failed), (2, 1));
    let sends = up.sends_of("r00");
    assert_eq!(sends.len(), 5, "exactly max_attempts sends");
    let ceilings = [ms(100), ms(200), ms(300), ms(300)];
    for (gap, ceiling) in gaps(&sends).into_iter().zip(ceilings) {
        assert!(gap <= ceiling + TIMER_ROUNDING, "{gap:?} over {ceiling:?}");
    }
    assert_eq!(w.failed(), ["r00"]);
    let line = &w.failure_lines()[0];
    assert_eq!(line["response"]["status_code"], 500, "{line}");
    assert_eq!(w.answered(), ["r01", "r02"]);
}

#[tokio::test(start_paused = true)]
async fn a_servers_retry_after_wins_over_the_backoff() {
    let mut w = Workdir::with_requests(1);
    w.job.retry = RetryPolicy {
        max_attempts: 6,
        base: ms(10),
        cap: ms(10),
    };
    let up = Upstream::new(ok())
        .script("r00", [status(503).retry_after(secs(3)), ok()])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.succeeded, 1);
    let g = gaps(&up.sends_of("r00"));
    // The backoff alone would be under 10 ms.
    assert!(g[0] >= secs(3), "retried after {:?}", g[0]);
}
