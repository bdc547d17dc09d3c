//! When every request fails, the upstream is down, not the requests: none
//! is failed, dispatch drops to one probe at a time with growing pauses,
//! and the run either resumes at full speed once a probe succeeds or stops
//! after `give_up_after` with the requests left unfinished (`health.rs`).

use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_engine::StopCause;
use tokio::time::Instant;

use crate::support::{Sent, Upstream, Workdir, ms, ok, reset, secs, status, timeout};

const MAX_ATTEMPTS: u32 = 3;

fn failing_fast(n: usize, give_up_after: Duration) -> Workdir {
    let mut w = Workdir::with_requests(n);
    w.job.retry = RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        base: ms(100),
        cap: secs(1),
    };
    w.job.give_up_after = give_up_after;
    w
}

/// When the outage was detected: the first request to use up its attempts
/// with nothing answered meanwhile does so when its last answer arrives.
fn detected(sends: &[Sent]) -> Duration {
    sends
        .iter()
        .filter(|s| s.attempt == MAX_ATTEMPTS as usize)
        .filter_map(|s| s.answered)
        .min()
        .expect("some request used up its attempts")
}

/// The sends that started after `from` and before `to` went alone, each
/// at least a second (the first probe pause) after the one before answered.
fn assert_probed_one_at_a_time(sends: &[Sent], from: Duration, to: Duration) -> usize {
    let probes: Vec<&Sent> = sends.iter().filter(|s| s.at > from && s.at < to).collect();
    for p in &probes {
        assert_eq!(p.in_flight, 1, "{p:?} was not alone");
    }
    for w in probes.windows(2) {
        let answered = w[0].answered.expect("a probe is answered");
        assert!(w[1].at >= answered + secs(1), "probes too close: {w:?}");
    }
    probes.len()
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_probed_one_request_at_a_time_then_every_request_is_answered() {
    let w = failing_fast(5, secs(120));
    let up = Upstream::new(ok())
        .down_for(secs(20), [status(500), reset(), timeout().after(secs(2))])
        .arc();

    let summary = w.run(&up).await;

    assert_eq!((summary.succeeded, summary.failed), (5, 0));
    assert_eq!(w.answered().len(), 5);
    let sends = up.sends();
    let first_ok = sends
        .iter()
        .find(|s| s.status == Some(200))
        .expect("a success");
    assert!(first_ok.at >= secs(20));
    assert_eq!(first_ok.in_flight, 1, "the first success is a probe");
    let probes = assert_probed_one_at_a_time(&sends, detected(&sends), first_ok.at);
    assert!(probes >= 2, "{probes} probes");
    // Requests kept their place through the outage rather than failing
    // after MAX_ATTEMPTS.
    let most = (0..5)
        .map(|i| up.sends_of(&crate::support::id(i)).len())
        .max()
        .unwrap_or(0);
    assert!(
        most > MAX_ATTEMPTS as usize,
        "at most {most} sends per request"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_outage_stops_after_give_up_after_with_requests_unfinished() {
    let w = failing_fast(3, secs(30));
    let up = Upstream::new(status(500)).arc();
    let started = Instant::now();

    let summary = w.run(&up).await;

    assert!(
        matches!(summary.stopped, Some(StopCause::Unreachable { .. })),
        "{:?}",
        summary.stopped
    );
    assert!(started.elapsed() >= secs(30));
    assert_eq!(
        (summary.succeeded, summary.failed, summary.not_done),
        (0, 0, 3)
    );
    assert!(w.journaled().is_empty(), "nothing is final");
    assert!(w.answered().is_empty() && w.failed().is_empty());
    let sends = up.sends();
    let last = sends.last().expect("sends").at;
    assert!(last >= secs(15), "probing went on: last send at {last:?}");
    assert_probed_one_at_a_time(&sends, detected(&sends), Duration::MAX);
}
