//! A job shared with other workers (`run --store`): its requests come from
//! a store they all claim from, not from the input file, and its answers
//! go back to that store.
//!
//! The engine names no store: it is a trait the caller implements (the CLI,
//! over PostgreSQL). What changes for a run on a store:
//!
//! - the lines come from [`JobStore::claim`] (in batches, each line with
//!   its claim's fencing token), not from the reader;
//! - before every send the attempt asks [`JobStore::may_send`]: a worker
//!   whose lease lapsed (a stall, a partition) sends nothing until it holds
//!   a lease again, and a claim taken over by another worker is dropped;
//! - the local journal stays: every answer is committed to it first, with
//!   its token (the outbox), and only then handed to the store
//!   ([`JobStore::committed`]); what the store has taken the journal
//!   forgets ([`JobStore::flushed`]). A worker killed while the store is
//!   unreachable hands its journaled answers over when it starts again
//!   ([`JobStore::committed`] with the outbox, before any claim);
//! - the output files are written from the store ([`JobStore::export`]).

use std::path::Path;
use std::time::Duration;

use batchling_core::Order;
use batchling_store::FinalState;

pub use crate::shared::{Fut, Unavailable};

/// A job in a store shared with other workers. Every call is bounded: a
/// store that does not answer is [`Unavailable`], quickly, and the engine
/// waits and asks again (stopping after the job's `give_up_after`).
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// The job as messages name it (no secrets).
    fn describe(&self) -> String;

    /// What keys the worker's local journal to the job: the same whatever
    /// address reaches the store, so a worker restarted through another
    /// one still finds the answers it journaled (no secrets). The
    /// description by default.
    fn journal_key(&self) -> String {
        self.describe()
    }

    /// The job's number of requests.
    fn total(&self) -> u64;

    /// Claim up to `max` requests for this worker.
    fn claim(&self, max: usize) -> Fut<'_, Result<Claim, Unavailable>>;

    /// Whether a request claimed with `token` may be sent now.
    fn may_send(&self, token: i64) -> MaySend;

    /// Records just committed to the local journal, each with the token it
    /// was claimed with: the store is to take them, in the background.
    fn committed(&self, records: Vec<Committed>);

    /// Seqs of records the store has taken since the last call (the local
    /// journal's outbox forgets them).
    fn flushed(&self) -> Vec<u64>;

    /// The run is over for this worker: hand over what is left (waiting at
    /// most `grace` for the store), then leave the job, giving back claims
    /// never sent.
    fn close(&self, grace: Duration) -> Fut<'_, Result<Closed, Unavailable>>;

    /// This worker's pacer lanes now (JSON, as the journal's `lanes` meta
    /// row holds them), for `status` on any machine; called every few
    /// seconds from the journal writer's thread, so it must not block.
    fn report(&self, lanes_json: &str) {
        let _ = lanes_json;
    }

    /// Write the job's output and error files from the store (in seq order:
    /// the input's).
    fn export<'a>(
        &'a self,
        output: &'a Path,
        errors: &'a Path,
        order: Order,
    ) -> Fut<'a, Result<Exported, Unavailable>>;
}

/// What a claim gave.
#[derive(Debug)]
pub enum Claim {
    /// Requests to send, in seq order.
    Lines(Vec<ClaimedLine>),
    /// Nothing is due now (others hold the rest, or retries wait): ask
    /// again after this.
    Wait(Duration),
    /// Every request of the job has its answer (or error): nothing more
    /// will come.
    Finished,
    /// Not even the next request fits the job's budget.
    BudgetReached {
        /// The budget, USD.
        cap: f64,
        /// What the job has spent, USD.
        spent: f64,
    },
}

/// One claimed request: its input line, as loaded.
#[derive(Debug, Clone)]
pub struct ClaimedLine {
    /// Its place in the job (the input's order).
    pub seq: u64,
    /// The claim's fencing token.
    pub token: i64,
    /// The input line, byte for byte (without its newline).
    pub line: Vec<u8>,
}

/// Whether a claimed request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaySend {
    /// Yes.
    Send,
    /// Not now (the lease lapsed and is being renewed): ask again after
    /// this.
    Wait(Duration),
    /// Never: the claim was taken over (this worker was declared dead).
    /// The request is dropped here; its new holder answers it.
    Void,
}

/// A record committed to the local journal, for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The request.
    pub seq: u64,
    /// The token it was claimed with.
    pub token: i64,
    /// Answered, failed or invalid.
    pub state: FinalState,
    /// Its output- or error-file line, with its newline.
    pub line: Vec<u8>,
    /// What it cost, USD.
    pub cost: f64,
}

/// How a worker left the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    /// Answers the store took at the end.
    pub handed_over: u64,
    /// Answers it refused as late (their claim had been taken over): paid,
    /// never output.
    pub late: u64,
    /// Claims given back unsent.
    pub released: u64,
    /// Answers still only in the local journal (the store did not come
    /// back within the grace): the same command hands them over.
    pub left_local: u64,
}

/// What [`JobStore::export`] wrote, and the job's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Output lines.
    pub output: u64,
    /// Error lines.
    pub errors: u64,
    /// Requests without an answer yet (other workers', or a stopped job's).
    pub not_done: u64,
}

/// Claims in flight to the loop at once: a claim's lines wait in the
/// channel at most this many batches deep, so a worker never sits on many
/// more requests than it can send soon (others would wait for them at the
/// end of a job).
pub(crate) const CLAIMS_AHEAD: usize = 1;

/// How many requests one claim asks for: about what the run has in flight,
/// so that claims stay few without hoarding.
pub(crate) fn claim_size(concurrency: usize) -> usize {
    concurrency.clamp(64, 1_000)
}

/// The claimer: the shared job store's stand-in for the reader. It claims
/// requests in batches, parses each claimed line as the reader would, and
/// sends them to the loop; it ends when the job has every answer, the run
/// stops, or the loop is gone. Returns the number of requests claimed and
/// whether the job was finished.
pub(crate) async fn claim_loop<P>(
    ctx: std::sync::Arc<crate::ctx::Ctx<P>>,
    store: std::sync::Arc<dyn JobStore>,
    tx: tokio::sync::mpsc::Sender<Vec<crate::reader::ReadItem>>,
    max: usize,
) -> std::io::Result<(u64, bool)> {
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut claimed = 0u64;
    loop {
        let got = tokio::select! {
            got = store.claim(max) => got,
            () = ctx.stop.token.cancelled() => return Ok((claimed, false)),
            () = tx.closed() => return Ok((claimed, false)),
        };
        let pause = match got {
            Ok(claim) => {
                if down_since.take().is_some() {
                    ctx.reporter.notify(&crate::Notice::JobStoreBack);
                }
                match claim {
                    Claim::Lines(lines) => {
                        claimed += lines.len() as u64;
                        let items = lines.into_iter().map(|l| parse_claimed(&ctx, l)).collect();
                        if tx.send(items).await.is_err() {
                            return Ok((claimed, false));
                        }
                        continue;
                    }
                    Claim::Wait(pause) => pause,
                    Claim::Finished => return Ok((claimed, true)),
                    Claim::BudgetReached { cap, .. } => {
                        ctx.stop_with(crate::StopCause::BudgetReached { limit_usd: cap });
                        return Ok((claimed, false));
                    }
                }
            }
            Err(Unavailable(why)) => {
                let since = *down_since.get_or_insert_with(|| {
                    let why = why.clone();
                    ctx.reporter.notify(&crate::Notice::JobStoreDown { why });
                    tokio::time::Instant::now()
                });
                if since.elapsed() > ctx.health.give_up_after() {
                    ctx.stop_with(crate::StopCause::JobStoreUnreachable { why });
                    return Ok((claimed, false));
                }
                Duration::from_millis(500)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.stop.token.cancelled() => return Ok((claimed, false)),
            () = tx.closed() => return Ok((claimed, false)),
        }
    }
}

/// A claimed line as the reader makes a line of the input: parsed and
/// checked (an invalid one is recorded as such, under its claim), its
/// tokens counted when they matter.
fn parse_claimed<P>(ctx: &crate::ctx::Ctx<P>, l: ClaimedLine) -> crate::reader::ReadItem {
    use crate::reader::{Parsed, ReadItem, parse_request, token_cost};
    use std::sync::atomic::Ordering::Relaxed;
    let line_no = l.seq + 1;
    match parse_request(line_no, &l.line) {
        Ok(req) => {
            let tokens = if ctx.discovery.count_tokens.load(Relaxed) {
                let dmo = ctx.discovery.default_max_output;
                token_cost(req.endpoint, req.body.as_bytes(), dmo)
            } else {
                Default::default()
            };
            ReadItem::Valid(Parsed {
                seq: l.seq,
                line_no,
                custom_id: req.custom_id,
                endpoint: req.endpoint,
                body: bytes::Bytes::from(req.body),
                model: req.model,
                tokens,
                claim: Some(l.token),
            })
        }
        Err(e) => ReadItem::Invalid(l.seq, e, Some(l.token)),
    }
}

/// An outbox entry as the store takes it.
impl From<batchling_store::OutboxEntry> for Committed {
    fn from(e: batchling_store::OutboxEntry) -> Self {
        Committed {
            seq: e.seq,
            token: e.token,
            state: e.state,
            line: e.line,
            cost: e.cost_usd.unwrap_or(0.0),
        }
    }
}
