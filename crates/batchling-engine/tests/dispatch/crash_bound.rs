//! The crash bound: a request's concurrency permit is released only once
//! its answer is committed to the journal (`recorder.rs`), so at any time
//! requests sent but not yet durable are at most `concurrency`. That bounds
//! what a crash can make us pay twice: a resumed run sends again exactly
//! the requests the journal does not hold.
//!
//! Checked where a crash would hurt: as each send starts, the journal is
//! read (read-only, as `batchling status` does while a run writes it). Every
//! answer is a 200, so each send is paid for and final; `sends so far −
//! rows committed` is then the number of paid requests a crash at that
//! instant would lose. A loop that freed permits at the answer would let
//! sends run ahead of the writer thread's commits and break the bound.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use batchling_store::Journal;

use crate::support::{Upstream, Workdir, ms, ok};

const CONCURRENCY: usize = 8;
const N: usize = 300;

#[tokio::test(start_paused = true)]
async fn requests_sent_but_not_durable_never_exceed_the_concurrency() {
    let mut w = Workdir::with_requests(N);
    w.job.concurrency = CONCURRENCY;
    // Every commit waits for its fsync: the writer is as slow as it gets.
    w.job.durable = true;
    let state = w.job.state.clone();
    let journal = Mutex::new(None::<Journal>);
    let worst = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let (worst_seen, checked) = (worst.clone(), checks.clone());
    let up = Upstream::new(ok().after(ms(1)))
        .on_send(move |log| {
            let mut journal = journal.lock().unwrap_or_else(|p| p.into_inner());
            // The run created the journal before its first send.
            let journal = journal
                .get_or_insert_with(|| Journal::open_read_only(&state).expect("the journal"));
            let c = journal.counts().expect("the journal reads");
            let durable = (c.done + c.failed + c.invalid) as usize;
            worst_seen.fetch_max(log.len().saturating_sub(durable), Relaxed);
            checked.fetch_add(1, Relaxed);
        })
        .arc();

    let summary = w.run(&up).await;

    assert_eq!(summary.succeeded, N as u64);
    assert_eq!(checks.load(Relaxed), N, "checked at every send");
    let worst = worst.load(Relaxed);
    assert!(
        worst <= CONCURRENCY,
        "{worst} requests were paid for but not durable at once"
    );
}
