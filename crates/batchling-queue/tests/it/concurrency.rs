//! Several workers at once: every request exactly once, the budget never
//! exceeded.

use std::collections::HashSet;

use batchling_queue::{Completion, JobId, Outcome, Queue, QueueError};

use crate::support::{TestSchema, load};

/// Claim and complete until nothing is left; returns the seqs this worker
/// had accepted.
async fn work(q: Queue, job: JobId, worker: u32, batch: usize) -> Vec<u64> {
    let lease = q.register("host", worker).await.unwrap();
    let mut mine = Vec::new();
    loop {
        let claimed = q.claim(job, &lease, batch).await.unwrap();
        if claimed.is_empty() {
            return mine;
        }
        let answers: Vec<_> = claimed
            .iter()
            .map(|c| Completion {
                seq: c.seq,
                token: c.token,
                cost: 0.0,
                outcome: Outcome::Done {
                    line: format!("{}\n", c.custom_id).into_bytes(),
                },
            })
            .collect();
        let report = q.complete(job, lease.worker(), &answers).await.unwrap();
        assert_eq!(report.accepted as usize, claimed.len(), "{report:?}");
        mine.extend(claimed.iter().map(|c| c.seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_answer_5000_requests_each_exactly_once() {
    let s = TestSchema::with(|mut st| {
        st.pool_size = 8;
        st
    })
    .await;
    let job = load(&s.queue, 5_000, None).await;
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(work(s.queue.clone(), job, w, 200)))
        .collect();
    let mut all = Vec::new();
    let mut busy = 0;
    for w in workers {
        let mine = w.await.unwrap();
        busy += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    assert_eq!(all.len(), 5_000, "accepted answers");
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), 5_000, "no seq accepted twice");
    assert!(busy >= 2, "the work was shared ({busy} workers got some)");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let counts = s.queue.export(job, &mut out, &mut err).await.unwrap();
    assert_eq!(
        (counts.output, counts.errors, counts.not_done),
        (5_000, 0, 0)
    );
    let expected: Vec<String> = (0..5_000).map(|i| format!("req-{i}")).collect();
    let got: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(got, expected, "in seq order, each once");
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.late_results").await, 0);
}

/// Claim and complete (each request costs 0.007 of its 0.01 worst case)
/// until the budget says no and nothing of ours is reserved; checks after
/// every claim that spent + reserved stays within the cap.
async fn spend(q: Queue, job: JobId, worker: u32, cap: f64) -> u64 {
    let lease = q.register("host", worker).await.unwrap();
    let mut answered = 0;
    loop {
        match q.claim(job, &lease, 7).await {
            Ok(claimed) if claimed.is_empty() => return answered,
            Ok(claimed) => {
                let st = q.status(job).await.unwrap();
                assert!(st.spent + st.reserved <= cap + 1e-9, "{st:?}");
                let answers: Vec<_> = claimed
                    .iter()
                    .map(|c| Completion {
                        seq: c.seq,
                        token: c.token,
                        cost: 0.007,
                        outcome: Outcome::Done {
                            line: b"{}\n".to_vec(),
                        },
                    })
                    .collect();
                answered += q
                    .complete(job, lease.worker(), &answers)
                    .await
                    .unwrap()
                    .accepted;
            }
            Err(QueueError::BudgetReached { reserved, .. }) if reserved > 0.0 => {
                // The other worker's reservations may settle below their worst case.
                tokio::task::yield_now().await;
            }
            Err(QueueError::BudgetReached { .. }) => return answered,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_spend_past_the_budget() {
    let s = TestSchema::new().await;
    let cap = 1.0;
    let job = load(&s.queue, 1_000, Some(cap)).await;
    let a = tokio::spawn(spend(s.queue.clone(), job, 1, cap));
    let b = tokio::spawn(spend(s.queue.clone(), job, 2, cap));
    let answered = a.await.unwrap() + b.await.unwrap();
    let st = s.queue.status(job).await.unwrap();
    assert!(st.spent <= cap + 1e-9, "{st:?}");
    // It stopped only when not even one more worst case fitted.
    assert!(st.spent + 0.01 > cap, "{st:?}");
    assert_eq!(answered, st.done);
    assert!((st.spent - 0.007 * answered as f64).abs() < 1e-9);
    assert_eq!(st.reserved, 0.0);
}
