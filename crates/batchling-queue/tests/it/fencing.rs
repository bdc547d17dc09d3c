//! Fencing without sleeps: workers are made silent by backdating their
//! heartbeat, then a rescue runs.

use std::time::Duration;

use batchling_queue::{Claimed, Completion, Outcome, QueueError};

use crate::support::{TestSchema, backdate_heartbeat, load};

fn done(c: &Claimed, cost: f64) -> Completion {
    Completion {
        seq: c.seq,
        token: c.token,
        cost,
        outcome: Outcome::Done {
            line: format!("{{\"custom_id\":\"{}\",\"by\":{}}}\n", c.custom_id, c.token)
                .into_bytes(),
        },
    }
}

async fn export(s: &TestSchema, job: batchling_queue::JobId) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    s.queue.export(job, &mut out, &mut err).await.unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn a_rescued_claims_old_token_lands_in_late_results_and_changes_nothing() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 3, None).await;
    let mut zombie = s.queue.register("host-a", 1).await.unwrap();
    let claimed = s.queue.claim(job, &zombie, 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    backdate_heartbeat(&s, zombie.worker(), 31).await;
    let rescue = s.queue.rescue().await.unwrap();
    assert_eq!(rescue.declared_dead, vec![zombie.worker()]);
    assert_eq!(rescue.requeued, 3);
    // Another worker takes them over and answers.
    let fresh = s.queue.register("host-b", 2).await.unwrap();
    let again = s.queue.claim(job, &fresh, 10).await.unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c.attempt == 2));
    let batch: Vec<_> = again.iter().map(|c| done(c, 0.002)).collect();
    assert_eq!(
        s.queue
            .complete(job, fresh.worker(), &batch)
            .await
            .unwrap()
            .accepted,
        3
    );
    // The zombie wakes: its answers are paid for, never output.
    let late: Vec<_> = claimed.iter().map(|c| done(c, 0.001)).collect();
    let report = s.queue.complete(job, zombie.worker(), &late).await.unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.late, vec![0, 1, 2]);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.late_results").await, 3);
    let (out, _) = export(&s, job).await;
    for c in &again {
        assert!(out.contains(&format!("\"by\":{}", c.token)), "{out}");
    }
    for c in &claimed {
        assert!(!out.contains(&format!("\"by\":{}", c.token)), "{out}");
    }
    let status = s.queue.status(job).await.unwrap();
    assert_eq!((status.done, status.late, status.running), (3, 3, 0));
    assert!((status.spent - 0.009).abs() < 1e-9, "{}", status.spent);
    assert!(status.reserved.abs() < 1e-12);
    // And it is never resurrected.
    let e = s.queue.heartbeat(&mut zombie).await.unwrap_err();
    assert!(matches!(e, QueueError::WorkerDead { .. }), "{e:?}");
}

#[tokio::test]
async fn a_completion_committed_before_the_rescue_stands() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 4, None).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    let claimed = s.queue.claim(job, &w, 4).await.unwrap();
    let batch: Vec<_> = claimed.iter().map(|c| done(c, 0.001)).collect();
    assert_eq!(
        s.queue
            .complete(job, w.worker(), &batch)
            .await
            .unwrap()
            .accepted,
        4
    );
    backdate_heartbeat(&s, w.worker(), 31).await;
    let rescue = s.queue.rescue().await.unwrap();
    assert_eq!(rescue.declared_dead, vec![w.worker()]);
    assert_eq!(
        rescue.requeued, 0,
        "the rescue touched none of the done rows"
    );
    let status = s.queue.status(job).await.unwrap();
    assert_eq!((status.done, status.pending), (4, 0));
    let (out, _) = export(&s, job).await;
    assert_eq!(out.lines().count(), 4);
}

#[tokio::test]
async fn a_dead_workers_claim_gets_no_rows() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 5, None).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    backdate_heartbeat(&s, w.worker(), 31).await;
    s.queue.rescue().await.unwrap();
    let e = s.queue.claim(job, &w, 5).await.unwrap_err();
    assert!(matches!(e, QueueError::WorkerDead { .. }), "{e:?}");
    assert_eq!(
        s.scalar("SELECT count(*) FROM {s}.requests WHERE state <> 0")
            .await,
        0
    );
    let status = s.queue.status(job).await.unwrap();
    assert!(
        status.workers.is_empty(),
        "a dead worker holding nothing is not listed"
    );
}

#[tokio::test]
async fn replaying_a_batch_after_an_ambiguous_commit_changes_nothing() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 5, None).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    let claimed = s.queue.claim(job, &w, 5).await.unwrap();
    let mut batch: Vec<_> = claimed.iter().map(|c| done(c, 0.001)).collect();
    batch[4].outcome = Outcome::RetryLater {
        after: Duration::from_secs(3_600),
    };
    let first = s.queue.complete(job, w.worker(), &batch).await.unwrap();
    assert_eq!((first.accepted, first.replayed), (5, 0));
    let replay = s.queue.complete(job, w.worker(), &batch).await.unwrap();
    assert_eq!((replay.accepted, replay.replayed), (0, 5));
    assert!(replay.late.is_empty());
    assert_eq!(
        s.scalar(
            "SELECT count(*) FROM (SELECT seq FROM {s}.results GROUP BY seq HAVING count(*) = 1) x"
        )
        .await,
        4
    );
    let status = s.queue.status(job).await.unwrap();
    assert!(
        (status.spent - 0.005).abs() < 1e-9,
        "cost counted once: {}",
        status.spent
    );
    // The retry went back to pending, not due for an hour.
    assert_eq!((status.done, status.pending, status.not_due), (4, 1, 1));
    assert!(s.queue.claim(job, &w, 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn claims_whose_reply_was_lost_are_released_and_known_ones_kept() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 10, Some(1.0)).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    let claimed = s.queue.claim(job, &w, 10).await.unwrap();
    let known: Vec<_> = claimed[..4].iter().map(|c| c.token).collect();
    assert_eq!(
        s.queue.release_unknown(w.worker(), &known).await.unwrap(),
        6
    );
    let status = s.queue.status(job).await.unwrap();
    assert_eq!((status.running, status.pending), (4, 6));
    assert!((status.reserved - 0.04).abs() < 1e-9, "{}", status.reserved);
    // Released claims were never sent: the next claim is their first again.
    let next = s.queue.claim(job, &w, 10).await.unwrap();
    assert_eq!(next.len(), 6);
    assert!(next.iter().all(|c| c.attempt == 1));
    // A graceful stop gives the rest back.
    assert_eq!(s.queue.release(w.worker(), &known).await.unwrap(), 4);
    assert_eq!(s.queue.deregister(&w).await.unwrap(), 6);
    let status = s.queue.status(job).await.unwrap();
    assert_eq!((status.running, status.pending), (0, 10));
    assert!(status.reserved.abs() < 1e-12);
}

#[tokio::test]
async fn a_stuck_claim_is_swept_back_while_its_worker_lives() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 3, None).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    let claimed = s.queue.claim(job, &w, 3).await.unwrap();
    s.exec(&format!(
        "UPDATE {{s}}.requests SET claimed_at = now() - interval '10 minutes' WHERE seq = {}",
        claimed[0].seq
    ))
    .await;
    assert_eq!(
        s.queue.sweep_stuck(Duration::from_secs(300)).await.unwrap(),
        1
    );
    let report = s
        .queue
        .complete(job, w.worker(), &[done(&claimed[0], 0.001)])
        .await
        .unwrap();
    assert_eq!(report.late, vec![claimed[0].seq]);
    let status = s.queue.status(job).await.unwrap();
    assert_eq!((status.running, status.pending), (2, 1));
}

#[tokio::test]
async fn claims_run_on_from_the_cursor_then_wrap_to_requests_sent_back() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 10, None).await;
    let w = s.queue.register("host-a", 1).await.unwrap();
    let first = s.queue.claim(job, &w, 5).await.unwrap();
    let seqs = |c: &[Claimed]| c.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&first), vec![0, 1, 2, 3, 4]);
    // seq 1 is due again at once; seq 0 goes back unsent.
    let retry = Completion {
        seq: 1,
        token: first[1].token,
        cost: 0.0,
        outcome: Outcome::RetryLater {
            after: Duration::ZERO,
        },
    };
    assert_eq!(
        s.queue
            .complete(job, w.worker(), &[retry])
            .await
            .unwrap()
            .accepted,
        1
    );
    assert_eq!(
        s.queue
            .release(w.worker(), &[first[0].token])
            .await
            .unwrap(),
        1
    );
    let next = s.queue.claim(job, &w, 10).await.unwrap();
    assert_eq!(seqs(&next), vec![5, 6, 7, 8, 9, 0, 1]);
    let by_seq = |seq| next.iter().find(|c| c.seq == seq).unwrap().attempt;
    assert_eq!(
        (by_seq(0), by_seq(1)),
        (1, 2),
        "a release is not an attempt; a retry is"
    );
    assert!(s.queue.claim(job, &w, 10).await.unwrap().is_empty());
}
