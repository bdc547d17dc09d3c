//! The journal writer: finished requests are committed to the journal in
//! groups on a dedicated thread; only after a commit do they count.
//!
//! Each entry carries the concurrency permit of its request, released after
//! the commit. So requests in flight plus answers not yet durable never
//! exceed the run's concurrency: that bounds what a crash can make us pay
//! twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use batchling_store::{Cache, FinalState, Journal, OutboxChange, PaidAttempts, Record, StoreError};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::job_store::{Committed, JobStore};
use crate::report::Counters;

/// What goes to the journal.
// Nearly every entry is the large variant: boxing it would cost every
// request an allocation to save a rare one's bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Entry {
    /// A finished request.
    Finished(Finished),
    /// Billed attempts of a request that goes on (a refusal before its
    /// content-policy chain): journaled as they happen, so that a crash
    /// before its answer cannot lose what they cost.
    Paid(PaidAttempts),
}

/// One finished request on its way to the journal.
pub(crate) struct Finished {
    pub(crate) record: Record,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// An answer to keep in the response cache: key, request id, body.
    pub(crate) cache_put: Option<([u8; 16], String, Bytes)>,
    /// The token of its claim on a shared job store (`run --store`): the
    /// record goes to the outbox too, and to the store once committed.
    pub(crate) claim: Option<i64>,
}

/// The most records in one transaction: big enough to amortise the commit,
/// small enough that the first answers of a group are not held long.
const MAX_GROUP: usize = 4096;

/// The longest a group waits to fill up, and how often it looks meanwhile.
const LINGER: Duration = Duration::from_millis(1);
const NAP: Duration = Duration::from_micros(200);

fn counter_for(c: &Counters, state: FinalState) -> &AtomicU64 {
    match state {
        FinalState::Done => &c.succeeded,
        FinalState::Failed => &c.failed,
        FinalState::Invalid => &c.invalid,
    }
}

/// How often the pacer's lanes are written to the journal while a run goes
/// (for `batchling status` on a run in progress, or killed).
const LANES_EVERY: Duration = Duration::from_secs(10);

/// What `batchling status` shows of a run in progress, as JSON: its pacer
/// lanes and, over a routes config, its routes' health.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    pub(crate) lanes: Option<String>,
    pub(crate) routes: Option<String>,
}

/// Writes the run's [`Reports`] (from `make`) to the journal now and then,
/// after a commit.
pub(crate) struct LaneRecorder {
    make: Box<dyn FnMut() -> Reports + Send>,
    last: Instant,
}

impl LaneRecorder {
    pub(crate) fn new(make: Box<dyn FnMut() -> Reports + Send>) -> Self {
        LaneRecorder {
            make,
            last: Instant::now(),
        }
    }

    /// Record the reports if the last time was [`LANES_EVERY`] ago. A
    /// failed write is left for the next commit to report (they are only
    /// informational; the end of the run writes them again).
    fn maybe_record(&mut self, journal: &Journal, store: Option<&dyn JobStore>) {
        if self.last.elapsed() < LANES_EVERY {
            return;
        }
        self.last = Instant::now();
        let reports = (self.make)();
        if let Some(json) = reports.lanes {
            let _ = journal.set_lanes(&json);
            // Other machines' `status` reads the job from the store.
            if let Some(store) = store {
                store.report(&json);
            }
        }
        if let Some(json) = reports.routes {
            let _ = journal.set_route_health(&json);
        }
    }
}

/// Run on the writer thread until every sender is gone. Returns the journal
/// (for the export) and the first error, after which nothing more is
/// committed and entries are dropped uncounted.
pub(crate) fn write_loop(
    mut journal: Journal,
    (mut cache, store): (Option<Cache>, Option<Arc<dyn JobStore>>),
    mut rx: mpsc::Receiver<Entry>,
    counters: Arc<Counters>,
    (concurrency, mut lanes): (usize, LaneRecorder),
    on_error: impl Fn(&StoreError),
) -> (Journal, Result<(), StoreError>) {
    let mut records = Vec::with_capacity(MAX_GROUP);
    let mut claims = Vec::new();
    let mut permits = Vec::with_capacity(MAX_GROUP);
    let mut puts = Vec::new();
    let mut paid = Vec::new();
    // Half the concurrency: each commit costs an fsync, and answers waiting
    // for it hold their permits, so a group can never reach the whole
    // concurrency. A smaller target means more fsyncs, which cost more CPU
    // (BENCHMARKS.md has the measurements).
    let fill = (concurrency / 2).clamp(1, MAX_GROUP);
    loop {
        // Answers already waiting after the last commit mean they arrive
        // faster than commits finish: only then is lingering worth it (at
        // low rates it would only add wake-ups).
        let (first, busy) = match rx.try_recv() {
            Ok(e) => (e, true),
            Err(mpsc::error::TryRecvError::Empty) => match rx.blocking_recv() {
                Some(e) => (e, false),
                None => break,
            },
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let mut next = Some(first);
        let started = Instant::now();
        loop {
            while let Some(e) = next.take() {
                match e {
                    Entry::Finished(f) => {
                        if let Some(token) = f.claim {
                            claims.push((f.record.seq, token));
                        }
                        records.push(f.record);
                        permits.push(f.permit);
                        puts.extend(f.cache_put);
                    }
                    Entry::Paid(p) => paid.push(p),
                }
                if records.len() + paid.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            // Linger briefly for a fuller group: each commit costs an fsync,
            // and without this groups stay small when answers come fast.
            // Never while nothing is in flight (no answer is coming), and
            // never long (permits are held meanwhile).
            if !busy
                || records.len() >= fill
                || counters.in_flight.load(Relaxed) == 0
                || started.elapsed() >= LINGER
            {
                break;
            }
            // Polling rather than a blocking receive: senders then never
            // pay for waking this thread.
            std::thread::sleep(NAP);
            next = rx.try_recv().ok();
        }
        let forget = store.as_ref().map(|s| s.flushed()).unwrap_or_default();
        let outbox = OutboxChange {
            add: &claims,
            forget: &forget,
        };
        let mut result = journal.commit_with_outbox(&records, &paid, outbox);
        paid.clear();
        if result.is_ok()
            && let Some(c) = cache.as_mut()
            && !puts.is_empty()
        {
            let now = batchling_core::clock::unix_now();
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
        if let Some(store) = &store {
            hand_over(&**store, &mut records, &claims);
        }
        claims.clear();
        records.clear();
        permits.clear(); // releases the permits: those requests are durable now
        lanes.maybe_record(&journal, store.as_deref());
    }
    (journal, Ok(()))
}

/// Committed records that came from claims go to the job store (in the
/// background: the store takes them while the next group is written).
/// `claims` are in the order of their records (one per claimed record).
fn hand_over(store: &dyn JobStore, records: &mut [Record], claims: &[(u64, i64)]) {
    if claims.is_empty() {
        return;
    }
    let mut claims = claims.iter().peekable();
    let committed = records
        .iter_mut()
        .filter_map(|r| {
            let &(_, token) = claims.next_if(|(seq, _)| *seq == r.seq)?;
            Some(Committed {
                seq: r.seq,
                token,
                state: r.state,
                line: std::mem::take(&mut r.line),
                cost: r.cost_usd.unwrap_or(0.0),
            })
        })
        .collect();
    store.committed(committed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_recorded_now_and_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = Journal::open(&path, false).unwrap();
        let mut calls = 0;
        let mut lanes = LaneRecorder::new(Box::new(move || {
            calls += 1;
            Reports {
                lanes: Some(format!("[{calls}]")),
                routes: Some(format!("{{\"n\":{calls}}}")),
            }
        }));
        lanes.maybe_record(&journal, None);
        assert_eq!(journal.meta().unwrap().lanes, None, "not yet");
        lanes.last -= LANES_EVERY;
        lanes.maybe_record(&journal, None);
        assert_eq!(journal.meta().unwrap().lanes.as_deref(), Some("[1]"));
        let health = journal.meta().unwrap().route_health;
        assert_eq!(health.as_deref(), Some("{\"n\":1}"));
        lanes.maybe_record(&journal, None);
        assert_eq!(
            journal.meta().unwrap().lanes.as_deref(),
            Some("[1]"),
            "not again so soon"
        );
    }
}
