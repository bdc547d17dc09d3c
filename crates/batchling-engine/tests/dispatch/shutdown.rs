//! Cancelling the shutdown token (Ctrl-C): no new request is sent, those in
//! flight get `grace` to land their answers, and what landed is journaled.
//!
//! The token is cancelled from inside a send, so that request is certainly
//! in flight at the cancel. Pacing at 600 a minute with one-second answers
//! keeps about ten in flight, and the loop is waiting for the pacer (not for
//! a permit) when the cancel comes.

use std::collections::BTreeSet;

use batchling_engine::{PacerConfig, StopCause};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{Upstream, Workdir, ok, secs};

const N: usize = 40;

fn paced() -> Workdir {
    let mut w = Workdir::with_requests(N);
    w.job.pacing = PacerConfig {
        rpm: Some(600),
        ..PacerConfig::default()
    };
    w
}

/// An upstream answering after `latency` that cancels `token` as its
/// `nth` send starts.
fn cancelling_at(nth: usize, token: &CancellationToken, up: Upstream) -> Upstream {
    let token = token.clone();
    up.on_send(move |log| {
        if log.len() == nth {
            token.cancel();
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_cancel_lets_requests_in_flight_finish_and_journals_them() {
    let w = paced();
    let shutdown = CancellationToken::new();
    let up = cancelling_at(15, &shutdown, Upstream::new(ok().after(secs(1)))).arc();

    let summary = w.run_until(&up, shutdown).await;

    assert_eq!(summary.stopped, Some(StopCause::Interrupted));
    let sends = up.sends();
    assert_eq!(sends.len(), 15, "nothing was sent after the cancel");
    let cancelled_at = sends[14].at;
    let landed_after = sends
        .iter()
        .filter(|s| s.answered.is_some_and(|a| a > cancelled_at))
        .count();
    assert!(
        landed_after >= 2,
        "only {landed_after} answers came after the cancel"
    );
    let answered: BTreeSet<String> = sends
        .iter()
        .filter(|s| s.answered.is_some())
        .map(|s| s.custom_id.clone())
        .collect();
    assert_eq!(answered.len(), 15, "every request in flight finished");
    assert_eq!(w.journaled(), answered);
    assert_eq!(w.answered().len(), 15);
    assert_eq!(summary.not_done, (N - 15) as u64);
}

#[tokio::test(start_paused = true)]
async fn an_answer_slower_than_grace_is_abandoned_and_left_unfinished() {
    let mut w = paced();
    w.job.grace = secs(5);
    let shutdown = CancellationToken::new();
    let slow = Upstream::new(ok().after(secs(1))).script("r03", [ok().after(secs(60))]);
    let up = cancelling_at(5, &shutdown, slow).arc();
    let started = Instant::now();

    let summary = w.run_until(&up, shutdown).await;

    assert_eq!(summary.stopped, Some(StopCause::Interrupted));
    let sends = up.sends();
    assert_eq!(sends.len(), 5);
    assert!(
        started.elapsed() >= sends[4].at + secs(5),
        "grace was waited"
    );
    assert_eq!(up.sends_of("r03")[0].answered, None, "r03 was dropped");
    let journaled: Vec<String> = w.journaled().into_iter().collect();
    assert_eq!(journaled, ["r00", "r01", "r02", "r04"]);
    assert!(w.failed().is_empty(), "an abandoned request is not failed");
}
