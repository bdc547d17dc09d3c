//! The journal writer: finished requests are committed to the journal in
//! groups on a dedicated thread; only after a commit do they count.
//!
//! Each entry carries the concurrency permit of its request, released after
//! the commit. So requests in flight plus answers not yet durable never
//! exceed `--concurrency`: that bounds what a crash can make us pay twice.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use batchling_store::{FinalState, Journal, Record, StoreError};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::report::Counters;

/// One finished request on its way to the journal.
pub(crate) struct Entry {
    pub(crate) record: Record,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// The most records in one transaction: big enough to amortise the commit,
/// small enough that the first answers of a group are not held long.
const MAX_GROUP: usize = 4096;

fn counter_for(c: &Counters, state: FinalState) -> &AtomicU64 {
    match state {
        FinalState::Done => &c.succeeded,
        FinalState::Failed => &c.failed,
        FinalState::Invalid => &c.invalid,
    }
}

/// Run on the writer thread until every sender is gone. Returns the journal
/// (for the export) and the first error, after which nothing more is
/// committed and entries are dropped uncounted.
pub(crate) fn write_loop(
    mut journal: Journal,
    mut rx: mpsc::Receiver<Entry>,
    counters: Arc<Counters>,
    on_error: impl Fn(&StoreError),
) -> (Journal, Result<(), StoreError>) {
    let mut records = Vec::with_capacity(MAX_GROUP);
    let mut permits = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        records.push(first.record);
        permits.push(first.permit);
        while records.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(e) => {
                    records.push(e.record);
                    permits.push(e.permit);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = journal.commit(&records) {
            on_error(&e);
            rx.close();
            while rx.blocking_recv().is_some() {}
            return (journal, Err(e));
        }
        for r in &records {
            Counters::add(counter_for(&counters, r.state), 1);
        }
        records.clear();
        permits.clear(); // releases the permits: those requests are durable now
    }
    (journal, Ok(()))
}
