//! The read side: export splits answers from failures, status shows
//! workers, a job is deleted in one step.

use batchling_queue::{Completion, Outcome, QueueError, WorkerState};

use crate::support::{TestSchema, backdate_heartbeat, load};

#[tokio::test]
async fn export_writes_answers_and_failures_apart_in_seq_order() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 2_500, None).await;
    let w = s.queue.register("host", 1).await.unwrap();
    let mut claimed = Vec::new();
    loop {
        let batch = s.queue.claim(job, &w, 1_000).await.unwrap();
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    // Completed in reverse, every third a failure, one left running.
    let answers: Vec<_> = claimed
        .iter()
        .rev()
        .filter(|c| c.seq != 7)
        .map(|c| Completion {
            seq: c.seq,
            token: c.token,
            cost: 0.0,
            outcome: if c.seq % 3 == 0 {
                Outcome::Failed {
                    line: format!("e{}\n", c.seq).into_bytes(),
                }
            } else {
                Outcome::Done {
                    line: format!("o{}\n", c.seq).into_bytes(),
                }
            },
        })
        .collect();
    s.queue.complete(job, w.worker(), &answers).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let counts = s.queue.export(job, &mut out, &mut err).await.unwrap();
    let want_out: String = (0..2_500)
        .filter(|i| i % 3 != 0 && *i != 7)
        .map(|i| format!("o{i}\n"))
        .collect();
    let want_err: String = (0..2_500)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("e{i}\n"))
        .collect();
    // Compared whole (not printed: thousands of lines).
    assert!(
        String::from_utf8(out).unwrap() == want_out,
        "the output lines"
    );
    assert!(
        String::from_utf8(err).unwrap() == want_err,
        "the error lines"
    );
    assert_eq!(counts.not_done, 1);
}

#[tokio::test]
async fn status_shows_workers_alive_and_dead_with_what_they_hold() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 10, None).await;
    let a = s.queue.register("host-a", 11).await.unwrap();
    let b = s.queue.register("host-b", 22).await.unwrap();
    s.queue.claim(job, &a, 3).await.unwrap();
    s.queue.claim(job, &b, 2).await.unwrap();
    // b is declared dead by a pass that cannot reach this job's rows yet:
    // mark it dead by hand, as such a pass would.
    s.exec(&format!(
        "UPDATE {{s}}.workers SET state = 'dead' WHERE id = {}",
        b.worker().0
    ))
    .await;
    let st = s.queue.status(job).await.unwrap();
    assert_eq!((st.pending, st.running), (5, 5));
    let shown: Vec<_> = st
        .workers
        .iter()
        .map(|w| (w.host.as_str(), w.pid, w.state, w.held))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("host-a", 11, WorkerState::Alive, 3),
            ("host-b", 22, WorkerState::Dead, 2)
        ]
    );
    // The next rescue takes the dead worker's rows (the second guard).
    assert_eq!(s.queue.rescue().await.unwrap().requeued, 2);
}

#[tokio::test]
async fn status_sums_the_money_of_every_workers_ledger() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 10, Some(1.0)).await;
    let a = s.queue.register("host-a", 1).await.unwrap();
    let b = s.queue.register("host-b", 2).await.unwrap();
    let of_a = s.queue.claim(job, &a, 3).await.unwrap();
    let of_b = s.queue.claim(job, &b, 4).await.unwrap();
    // Each claim starts where the other's ended: one cursor across ledgers.
    let seqs = |c: &[batchling_queue::Claimed]| c.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(
        (seqs(&of_a), seqs(&of_b)),
        (vec![0, 1, 2], vec![3, 4, 5, 6])
    );
    let paid = |c: &batchling_queue::Claimed| Completion {
        seq: c.seq,
        token: c.token,
        cost: 0.004,
        outcome: Outcome::Done {
            line: b"o\n".to_vec(),
        },
    };
    let answers: Vec<_> = of_a[..2].iter().map(paid).collect();
    s.queue.complete(job, a.worker(), &answers).await.unwrap();
    let answers: Vec<_> = of_b[..1].iter().map(paid).collect();
    s.queue.complete(job, b.worker(), &answers).await.unwrap();
    assert_eq!(
        s.scalar(&format!(
            "SELECT count(*) FROM {{s}}.ledgers WHERE job_id = {}",
            job.0
        ))
        .await,
        2
    );
    let st = s.queue.status(job).await.unwrap();
    // Spent: three answers at 0.004; reserved: the four still running at 0.01.
    assert!((st.spent - 0.012).abs() < 1e-9, "{st:?}");
    assert!((st.reserved - 0.04).abs() < 1e-9, "{st:?}");
    // b dies; its three running rows' reservations go back from its ledger.
    backdate_heartbeat(&s, b.worker(), 31).await;
    assert_eq!(s.queue.rescue().await.unwrap().requeued, 3);
    let st = s.queue.status(job).await.unwrap();
    assert!((st.spent - 0.012).abs() < 1e-9, "{st:?}");
    assert!((st.reserved - 0.01).abs() < 1e-9, "{st:?}");
}

#[tokio::test]
async fn a_job_is_deleted_in_one_step_once_no_live_worker_holds_it() {
    let s = TestSchema::new().await;
    let job = load(&s.queue, 50, None).await;
    let keep = load(&s.queue, 5, None).await;
    let w = s.queue.register("host", 1).await.unwrap();
    s.queue.claim(job, &w, 5).await.unwrap();
    let e = s.queue.delete_job(job).await.unwrap_err();
    assert!(matches!(e, QueueError::JobInUse { held: 5, .. }), "{e:?}");
    backdate_heartbeat(&s, w.worker(), 31).await;
    s.queue.rescue().await.unwrap();
    assert!(s.queue.delete_job(job).await.unwrap());
    assert!(!s.queue.delete_job(job).await.unwrap());
    for table in [
        "jobs",
        "lines",
        "requests",
        "results",
        "late_results",
        "ledgers",
    ] {
        let left = s
            .scalar(&format!(
                "SELECT count(*) FROM {{s}}.{table} WHERE {} = {}",
                if table == "jobs" { "id" } else { "job_id" },
                job.0
            ))
            .await;
        assert_eq!(left, 0, "{table}");
    }
    assert_eq!(s.queue.status(keep).await.unwrap().total, 5);
    let e = s.queue.join_job(job).await.unwrap_err();
    assert!(e.to_string().contains("no job"), "{e}");
}
