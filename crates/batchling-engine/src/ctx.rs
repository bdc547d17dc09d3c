//! What the dispatch loop and its attempt tasks share, in small parts, so
//! that each function takes the parts it uses:
//!
//! - [`Admission`]: the pacer and the concurrency permits every attempt
//!   passes (retries included).
//! - [`Discovery`]: learning the limits from the first answers (slow start)
//!   and whether lines need token counts.
//! - [`Accounting`]: counters, prices and the budget.
//! - [`Sink`]: where finished requests go (the journal writer, the response
//!   cache) and the ids of their output lines.
//! - [`Stop`]: the caller's shutdown and the run's own stop, with its cause.
//!
//! plus the routes (and their providers), the retry policy, the upstream's [`Health`] and the
//! reporter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use batchling_core::RetryPolicy;
use batchling_core::Usage;
use batchling_core::pricing::{Catalog, ModelPrice, TokenCounts};
use batchling_core::retry::RetryReason;
use batchling_core::tokens::TokenEstimate;
use batchling_providers::{Attempt, Verdict};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::dispatch::Pending;
use crate::health::Health;
use crate::pacer::{Admitted, Pacer};
use crate::reader::{Parsed, token_cost};
use crate::recorder::{Entry, Finished};
use crate::report::{Counters, Notice, Reporter, StopCause};
use crate::route::Routes;
use batchling_store::{Cache, Record, RouteRecord};

/// Everything attempt tasks share with the loop.
pub(crate) struct Ctx<P> {
    /// Where lines go: routes, their targets, limit groups and keys (each
    /// key a provider client that sends, classifies, describes failures).
    pub(crate) routes: Arc<Routes<P>>,
    /// How many attempts a request gets and how long it waits between them.
    pub(crate) retry: RetryPolicy,
    /// Pacing and concurrency.
    pub(crate) admission: Admission,
    /// Limit discovery and token counting.
    pub(crate) discovery: Discovery,
    /// A failing request told from a failing upstream.
    pub(crate) health: Health,
    /// Counters, prices, budget.
    pub(crate) accounting: Accounting,
    /// The journal writer, the response cache and line ids.
    pub(crate) sink: Sink,
    /// Shutdown and stop.
    pub(crate) stop: Stop,
    /// Progress and notices for a person (or a log).
    pub(crate) reporter: Arc<dyn Reporter>,
}

impl<P> Ctx<P> {
    /// The run's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.accounting.counters
    }

    /// Stop the run for `cause` (the first cause is the one kept and told).
    pub(crate) fn stop_with(&self, cause: StopCause) {
        if self.stop.keep_first(&cause) {
            self.reporter.notify(&Notice::Stopping(cause));
        }
        self.stop.token.cancel();
    }

    /// A bare record of `p` in `state` with its output `line`; the caller
    /// fills in what it knows (status, usage, cost, error).
    pub(crate) fn base_record(
        &self,
        p: &Pending,
        state: batchling_store::FinalState,
        line: Vec<u8>,
    ) -> Record {
        Record {
            seq: p.parsed.seq,
            line_no: p.parsed.line_no,
            custom_id: Some(p.parsed.custom_id.clone()),
            state,
            attempts: p.sent,
            status_code: None,
            error_code: None,
            error_message: None,
            usage: Usage::default(),
            latency_ms: None,
            cost_usd: None,
            line,
            route: self.route_record(p),
        }
    }

    /// Who answered `p` and its attempts, when its routes keep that (a
    /// routes config): the route, the target of its last attempt, the steps
    /// it moved along.
    fn route_record(&self, p: &Pending) -> Option<Box<RouteRecord>> {
        if !self.routes.records_attempts() {
            return None;
        }
        let hop = p.hop?;
        let target =
            (hop.target != u32::MAX).then(|| self.routes.target(hop.target).name.to_string());
        Some(Box::new(RouteRecord {
            route: self.routes.route(hop.route).name.to_string(),
            target: target.unwrap_or_default(),
            response_model: None,
            step: u32::from(hop.moved),
            attempts: p.tried.clone(),
            batch: None,
        }))
    }
}

/// What every attempt passes before it is sent: a concurrency permit, then
/// the pacer. Shared with other runs in `batchling serve`.
pub(crate) struct Admission {
    /// Pacing in lanes (one per model): RPM/TPM, a 429 pausing its lane,
    /// limits learned from headers, slow start.
    pub(crate) pacer: Arc<Pacer>,
    /// The most attempts in flight (or answers awaiting their commit).
    pub(crate) permits: Arc<Semaphore>,
    /// A rate budget shared with other processes, booked after the pacer.
    pub(crate) shared: Option<crate::shared::Shared>,
    /// The shared job store whose lease every send of a claimed request
    /// needs (`run --store`).
    pub(crate) store: Option<Arc<dyn crate::job_store::JobStore>>,
}

/// Learning the limits, and counting tokens once they matter.
///
/// Each lane of the pacer (a model) learns its own limits: while its first
/// answer is awaited it is in slow start (one request, then doubling what
/// it has in flight every 50 ms; see `pacer`), while the other lanes keep
/// their pace.
pub(crate) struct Discovery {
    /// Set while the loop may wait on `attempt_done` (an outage), so the
    /// common path skips the notification.
    pub(crate) gating: AtomicBool,
    /// Woken when an attempt ends, while `gating` is set.
    pub(crate) attempt_done: Notify,
    /// Whether lines need token counts (a token limit or a budget is in
    /// force). Shared with the reader thread, which counts once it is set.
    pub(crate) count_tokens: Arc<AtomicBool>,
    /// Output tokens counted for a request that sets no maximum.
    pub(crate) default_max_output: u64,
    /// When the run started (for the summary's `first_request_s`).
    pub(crate) started: Instant,
}

impl Discovery {
    /// An attempt admitted as `admitted` came back: its lane learns the
    /// limits its headers show (a token limit turns token counting on) and
    /// leaves slow start; the loop is woken if it waits.
    pub(crate) fn answered(
        &self,
        pacer: &Pacer,
        admitted: Admitted,
        result: &Attempt,
        verdict: &Verdict,
    ) {
        let limits = result.limits();
        let headers = limits.is_some_and(|l| !l.is_empty());
        let refused = matches!(
            verdict,
            Verdict::Retry {
                reason: RetryReason::RateLimited,
                ..
            }
        );
        if (admitted.slow_start || headers) && pacer.answered(admitted, limits, refused) {
            self.count_tokens.store(true, Relaxed);
        }
        if self.gating.load(Relaxed) {
            self.attempt_done.notify_waiters();
        }
    }

    /// Count a line's tokens if it was read before they were needed.
    pub(crate) fn count_if_needed(&self, p: &mut Parsed) {
        if p.tokens == Default::default() && self.count_tokens.load(Relaxed) {
            p.tokens = token_cost(p.endpoint, &p.body, self.default_max_output);
        }
    }

    /// Remember when the run's first attempt went out (for the summary's
    /// `first_request_s`).
    pub(crate) fn note_send(&self, counters: &Counters) {
        if counters.first_sent_us.load(Relaxed) == 0 {
            let us = self.started.elapsed().as_micros() as u64 + 1;
            counters.first_sent_us.store(us, Relaxed);
        }
    }
}

/// What the run has spent and may spend.
pub(crate) struct Accounting {
    /// Counters shared with the reporter's ticker and the journal writer.
    pub(crate) counters: Arc<Counters>,
    /// Prices, for live cost and the budget.
    pub(crate) prices: Option<Arc<Catalog>>,
    /// The cap, when one is set.
    pub(crate) budget: Option<Budget>,
}

/// The budget's answer to a request about to be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reserved {
    /// Its worst case is reserved (or no budget is set).
    Yes,
    /// It does not fit while others are in flight: hold it until one
    /// settles.
    Wait,
    /// It can never fit: the run stops for this cause.
    Stop(StopCause),
}

impl Accounting {
    /// The price of target `t` for a line naming `line_model`: the
    /// target's own, else the catalog's for the model it sends.
    fn price_of<'a, P>(
        &'a self,
        routes: &'a Routes<P>,
        t: u32,
        line_model: Option<&str>,
    ) -> Option<&'a ModelPrice> {
        let target = routes.target(t);
        if let Some(price) = &target.price {
            return Some(price);
        }
        let model = routes.model_of(t, line_model)?;
        self.prices.as_ref()?.get(model).map(|(_, price)| price)
    }

    /// What `usage` cost at the target that answered (the request's hop),
    /// if its price is known.
    pub(crate) fn cost_of<P>(
        &self,
        routes: &Routes<P>,
        p: &Pending,
        usage: Option<Usage>,
    ) -> Option<f64> {
        let usage = usage?;
        self.prices.as_ref()?;
        let t = p.hop.map_or(0, |h| h.target);
        let Some(price) = self.price_of(routes, t, p.parsed.model.as_deref()) else {
            Counters::add(&self.counters.unpriced, 1);
            return None;
        };
        Some(price.cost_online(&TokenCounts::from(usage)))
    }

    /// A line's worst case at target `t`: its input and its most output.
    fn worst_at<P>(&self, routes: &Routes<P>, parsed: &Parsed, t: u32) -> Option<f64> {
        let price = self.price_of(routes, t, parsed.model.as_deref())?;
        Some(worst_case(price, parsed))
    }

    /// Whether target `t` may take the line under a price ceiling of
    /// `ratio` times its primary: both priced, and the line's worst case
    /// at `t` within `ratio` times its worst case at the primary. A line
    /// whose tokens were not counted (no token limit, no budget) is held to
    /// each price per token: input and output both within the ratio.
    pub(crate) fn within_ratio<P>(
        &self,
        routes: &Routes<P>,
        parsed: &Parsed,
        primary: u32,
        t: u32,
        ratio: f64,
    ) -> bool {
        let line = parsed.model.as_deref();
        let (Some(base), Some(at)) = (
            self.price_of(routes, primary, line),
            self.price_of(routes, t, line),
        ) else {
            return false;
        };
        if parsed.tokens == TokenEstimate::default() {
            return at.input <= base.input * ratio && at.output <= base.output * ratio;
        }
        worst_case(at, parsed) <= worst_case(base, parsed) * ratio
    }

    /// The request has ended: its budget reservation becomes what it cost.
    pub(crate) fn settle(&self, p: &Pending, cost: Option<f64>) {
        if let Some(c) = cost {
            let micro = (c * 1e6).round() as u64;
            Counters::add(&self.counters.cost_micro_usd, micro);
        }
        if let Some(b) = &self.budget {
            b.settle(p.reserved.unwrap_or(0.0), cost.unwrap_or(0.0));
        }
    }

    /// Reserve the request's worst case in the budget: at the dearest
    /// target its route may still send it to. `Wait` when it does not fit
    /// yet but requests in flight may make room; `Stop` when it cannot fit
    /// or a target cannot be priced.
    pub(crate) fn reserve<P>(&self, routes: &Routes<P>, p: &mut Pending) -> Reserved {
        let Some(budget) = &self.budget else {
            return Reserved::Yes;
        };
        if p.reserved.is_some() {
            return Reserved::Yes; // a retry: reserved when first sent
        }
        let mut worst = 0.0_f64;
        for t in routes.reachable(p.hop) {
            let Some(cost) = self.worst_at(routes, &p.parsed, t) else {
                let model = routes
                    .model_of(t, p.parsed.model.as_deref())
                    .unwrap_or("(none)");
                return Reserved::Stop(StopCause::NoPrice {
                    model: model.to_owned(),
                });
            };
            worst = worst.max(cost);
        }
        match budget.reserve(worst) {
            Ok(()) => {
                p.reserved = Some(worst);
                Reserved::Yes
            }
            Err(over) if over.may_fit_later() => Reserved::Wait,
            Err(_) => Reserved::Stop(StopCause::BudgetReached {
                limit_usd: budget.limit(),
            }),
        }
    }
}

/// A line's worst case at `price` (see [`crate::budget::worst_case`]).
fn worst_case(price: &ModelPrice, parsed: &Parsed) -> f64 {
    crate::budget::worst_case(price, parsed.tokens)
}

/// Where finished requests go.
pub(crate) struct Sink {
    /// The journal writer thread (group commits).
    pub(crate) recorder: mpsc::Sender<Entry>,
    /// Look-ups in the response cache (`Job::cache`); the writer keeps
    /// the answers.
    pub(crate) cache: Option<Mutex<Cache>>,
    /// Ids for output lines.
    pub(crate) ids: LineIds,
}

impl Sink {
    /// Send a finished request to the journal writer. It counts once
    /// committed; its permit (if any) is released then.
    pub(crate) async fn record(
        &self,
        record: Record,
        claim: Option<i64>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        self.send(Entry::Finished(Finished {
            record,
            permit,
            cache_put: None,
            claim,
        }))
        .await;
    }

    /// Send an entry to the journal writer.
    pub(crate) async fn send(&self, entry: Entry) {
        // The writer only goes away after a journal error, which already
        // stopped the run.
        let _ = self.recorder.send(entry).await;
    }
}

/// `batch_req_<run prefix><counter>`: unique output-line ids, as OpenAI's
/// batch output has them.
pub(crate) struct LineIds {
    prefix: String,
    next: AtomicU64,
}

impl LineIds {
    /// Ids with a random prefix for this run.
    pub(crate) fn new() -> Self {
        LineIds {
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Relaxed);
        format!("batch_req_{}{n:08x}", self.prefix)
    }
}

/// Two ways a run stops dispatching: the caller's shutdown (Ctrl-C,
/// SIGTERM, a cancelled server batch) and the run's own stop (a refused
/// key, the budget, an outage that lasted, a journal error).
pub(crate) struct Stop {
    /// The caller's token: seen by the loop, which stops as `Interrupted`.
    pub(crate) shutdown: CancellationToken,
    /// The run's token: cancelled on any stop; waits and backoffs watch it.
    pub(crate) token: CancellationToken,
    /// Why the run stopped: the first cause wins.
    cause: Mutex<Option<StopCause>>,
}

impl Stop {
    /// Not stopped, watching the caller's `shutdown`.
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Stop {
            shutdown,
            token: CancellationToken::new(),
            cause: Mutex::new(None),
        }
    }

    /// Whether the run stops.
    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Keep `cause` unless one is kept already; true if it was kept.
    fn keep_first(&self, cause: &StopCause) -> bool {
        let mut c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_some() {
            return false;
        }
        *c = Some(cause.clone());
        true
    }

    /// The cause kept, taken out.
    pub(crate) fn take_cause(&self) -> Option<StopCause> {
        self.cause.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
