//! The journal writer: finished requests are committed to the journal in
//! groups on a dedicated thread; only after a commit do they count.
//!
//! Each entry carries the concurrency permit of its request, released after
//! the commit. So requests in flight plus answers not yet durable never
//! exceed `--concurrency`: that bounds what a crash can make us pay twice.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use batchling_store::{Cache, FinalState, Journal, Record, StoreError};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::report::Counters;

/// One finished request on its way to the journal.
pub(crate) struct Entry {
    pub(crate) record: Record,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// An answer to keep in the response cache: key, request id, body.
    pub(crate) cache_put: Option<([u8; 16], String, Bytes)>,
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
    mut cache: Option<Cache>,
    mut rx: mpsc::Receiver<Entry>,
    counters: Arc<Counters>,
    on_error: impl Fn(&StoreError),
) -> (Journal, Result<(), StoreError>) {
    let mut records = Vec::with_capacity(MAX_GROUP);
    let mut permits = Vec::with_capacity(MAX_GROUP);
    let mut puts = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(e) = next.take() {
            records.push(e.record);
            permits.push(e.permit);
            puts.extend(e.cache_put);
            if records.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        let mut result = journal.commit(&records);
        if result.is_ok()
            && let Some(c) = cache.as_mut()
            && !puts.is_empty()
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            result = c.put_many(puts.iter().map(|(k, id, b)| (k, id.as_str(), &b[..])), now);
        }
        puts.clear();
        if let Err(e) = result {
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
