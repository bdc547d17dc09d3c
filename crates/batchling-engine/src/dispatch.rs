//! The dispatch loop: one loop that takes pacing, concurrency, retry policy,
//! shutdown and a reporter as values.
//!
//! Flow: the reader thread sends parsed lines; the loop takes retries first,
//! then new lines; for each it takes a concurrency permit, waits for the
//! pacer, and spawns one attempt. An attempt's task classifies the answer and
//! either finishes the request (a line to the sink) or sleeps its backoff and
//! sends the request back to the loop. Each request carries a sender back to
//! the loop, so the loop knows the run is over exactly when the input is
//! exhausted and no request is left anywhere.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use batchling_core::output::{self, LineFailure};
use batchling_core::tokens::TokenEstimate;
use batchling_core::{RetryPolicy, RetryReason, StopReason, Verdict};
use batchling_providers::{Answer, Attempt, Outgoing, Provider, TransportKind};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::budget::Budget;
use crate::health::Health;
use crate::pacer::Pacer;
use crate::reader::{Parsed, ReadItem};
use crate::recorder::Entry;
use crate::report::{Counters, Reporter, StopCause};
use batchling_core::Usage;
use batchling_core::pricing::{Catalog, TokenCounts};
use batchling_core::usage::{BodyRead, read_body};
use batchling_store::{Cache, FinalState, Record, cache_key};

/// A request somewhere between the input and its final line.
#[derive(Debug)]
pub(crate) struct Pending {
    parsed: Parsed,
    /// Attempts that count against `max_attempts` (429s do not).
    attempts: u32,
    /// Retries so far (for the backoff exponent).
    retries: u32,
    /// Success count when this request started retrying.
    mark: u64,
    /// HTTP attempts made in this run, 429s included.
    sent: u32,
    /// Response-cache key, when the cache is on.
    cache_key: Option<[u8; 16]>,
    /// USD reserved in the budget for this request, until it ends (set at
    /// its first attempt; retries reuse it).
    reserved: Option<f64>,
    /// The way back to the loop; dropping the last one ends the run.
    home: mpsc::UnboundedSender<Pending>,
}

/// Everything attempt tasks share.
pub(crate) struct Ctx<P> {
    pub(crate) provider: Arc<P>,
    pub(crate) pacer: Arc<Pacer>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) health: Health,
    pub(crate) retry: RetryPolicy,
    pub(crate) recorder: mpsc::Sender<Entry>,
    /// Look-ups in the response cache (`--cache`).
    pub(crate) cache: Option<Mutex<Cache>>,
    pub(crate) reporter: Arc<dyn Reporter>,
    pub(crate) stop: CancellationToken,
    pub(crate) stop_cause: Mutex<Option<StopCause>>,
    pub(crate) attempt_done: Notify,
    /// Set while the loop may wait on `attempt_done` (discovery, outage), so
    /// the common path skips the notification.
    pub(crate) gating: AtomicBool,
    pub(crate) first_answer: AtomicBool,
    pub(crate) count_tokens: Arc<AtomicBool>,
    pub(crate) default_max_output: u64,
    pub(crate) id_counter: AtomicU64,
    pub(crate) id_prefix: String,
    pub(crate) started: Instant,
    pub(crate) prices: Option<Arc<Catalog>>,
    pub(crate) budget: Option<Budget>,
}

impl<P: Provider> Ctx<P> {
    pub(crate) fn stop_with(&self, cause: StopCause) {
        let mut c = self.stop_cause.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            self.reporter.notice(&format!("stopping: {cause}"));
            *c = Some(cause);
        }
        self.stop.cancel();
    }

    /// A unique `batch_req_...` id for an output line.
    fn line_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Relaxed);
        format!("batch_req_{}{n:08x}", self.id_prefix)
    }

    /// Send a finished request to the journal writer. It counts once
    /// committed; its permit (if any) is released then.
    async fn record(&self, record: Record, permit: Option<OwnedSemaphorePermit>) {
        self.record_entry(Entry {
            record,
            permit,
            cache_put: None,
        })
        .await;
    }

    async fn record_entry(&self, entry: Entry) {
        // The writer only goes away after a journal error, which already
        // stopped the run.
        let _ = self.recorder.send(entry).await;
    }

    /// Answer a new request from the response cache, if it is there.
    /// Returns the request back when it must be sent.
    pub(crate) async fn try_cache(&self, mut p: Pending) -> Option<Pending> {
        let Some(cache) = &self.cache else {
            return Some(p);
        };
        let key = cache_key(p.parsed.endpoint.path(), &p.parsed.body);
        p.cache_key = Some(key);
        let hit = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
        let hit = match hit {
            Ok(Some(hit)) => hit,
            Ok(None) => return Some(p),
            Err(e) => {
                self.reporter
                    .notice(&format!("response cache unreadable, sending instead: {e}"));
                return Some(p);
            }
        };
        let mut line = Vec::with_capacity(hit.body.len() + 160);
        let id = self.line_id();
        output::write_response_line(
            &mut line,
            &id,
            &p.parsed.custom_id,
            200,
            &hit.request_id,
            &hit.body,
        );
        let mut r = self.base_record(&p, FinalState::Done, line);
        r.status_code = Some(200);
        if let BodyRead::Json(Some(u)) = read_body(&hit.body) {
            r.usage = u;
        }
        // Answered from the cache: nothing was paid this time.
        r.cost_usd = Some(0.0).filter(|_| self.prices.is_some());
        Counters::add(&self.counters.cached, 1);
        self.record(r, None).await;
        None
    }

    /// What `usage` cost for this request's model, if its price is known.
    fn cost_of(&self, p: &Pending, usage: Option<Usage>) -> Option<f64> {
        let (prices, usage) = (self.prices.as_ref()?, usage?);
        let Some((_, price)) = p.parsed.model.as_deref().and_then(|m| prices.get(m)) else {
            Counters::add(&self.counters.unpriced, 1);
            return None;
        };
        Some(price.cost_online(&TokenCounts::from(usage)))
    }

    /// The request has ended: its budget reservation becomes what it cost.
    fn settle(&self, p: &Pending, cost: Option<f64>) {
        if let Some(c) = cost {
            let micro = (c * 1e6).round() as u64;
            Counters::add(&self.counters.cost_micro_usd, micro);
        }
        if let Some(b) = &self.budget {
            b.settle(p.reserved.unwrap_or(0.0), cost.unwrap_or(0.0));
        }
    }

    /// Reserve the request's worst case in the budget. `Wait` when it does
    /// not fit yet but requests in flight may make room; `Stop` (and the run
    /// stops) when it cannot fit or cannot be priced.
    pub(crate) fn reserve(&self, p: &mut Pending) -> Reserved {
        let Some(budget) = &self.budget else {
            return Reserved::Yes;
        };
        if p.reserved.is_some() {
            return Reserved::Yes; // a retry: reserved when first sent
        }
        let model = p.parsed.model.as_deref().unwrap_or("(none)");
        let Some((_, price)) = self.prices.as_ref().and_then(|c| c.get(model)) else {
            self.stop_with(StopCause::NoPrice {
                model: model.to_owned(),
            });
            return Reserved::Stop;
        };
        let t = p.parsed.tokens;
        let worst = price.cost_online(&TokenCounts {
            input: t.input,
            output: t.max_output,
            ..TokenCounts::default()
        });
        match budget.reserve(worst) {
            Ok(()) => {
                p.reserved = Some(worst);
                Reserved::Yes
            }
            Err(over) if over.may_fit_later() => Reserved::Wait,
            Err(_) => {
                self.stop_with(StopCause::BudgetReached {
                    limit_usd: budget.limit(),
                });
                Reserved::Stop
            }
        }
    }

    fn base_record(&self, p: &Pending, state: FinalState, line: Vec<u8>) -> Record {
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
        }
    }

    /// Record a request with the answer it got. The answer is consumed: a
    /// large body becomes its output line in its own memory (see
    /// [`output::response_line_around`]), so it is held once, not twice.
    async fn finish_with_answer(
        &self,
        p: &Pending,
        mut a: Answer,
        state: FinalState,
        permit: Option<OwnedSemaphorePermit>,
        latency: Duration,
    ) {
        let id = self.line_id();
        let request_id = a.request_id.take().unwrap_or_default();
        let error_message = (state != FinalState::Done).then(|| describe_answer(&a));
        let cache_put = match (state, p.cache_key) {
            (FinalState::Done, Some(k)) => Some((k, request_id.clone(), a.body.clone())),
            _ => None,
        };
        let custom_id = &p.parsed.custom_id;
        let line = if a.body_is_json && a.body.len() >= IN_PLACE_MIN && a.body.is_unique() {
            // Unique, so taken back as a Vec without a copy.
            let body = Vec::from(std::mem::take(&mut a.body));
            output::response_line_around(body, &id, custom_id, a.status, &request_id)
        } else {
            let envelope;
            let body: &[u8] = if a.body_is_json {
                &a.body
            } else {
                envelope = output::envelope_for_text(a.status, &body_text(&a.body));
                &envelope
            };
            let mut line = Vec::with_capacity(body.len() + 160);
            output::write_response_line(&mut line, &id, custom_id, a.status, &request_id, body);
            line
        };
        drop(a.body);
        let mut r = self.base_record(p, state, line);
        r.status_code = Some(a.status);
        r.usage = a.usage.unwrap_or_default();
        r.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        r.cost_usd = self.cost_of(p, a.usage);
        self.settle(p, r.cost_usd);
        r.error_message = error_message;
        self.record_entry(Entry {
            record: r,
            permit,
            cache_put,
        })
        .await;
    }

    /// Record a request as failed with its last attempt: the HTTP answer
    /// when there was one, else an `error` object.
    async fn finish_with_attempt(
        &self,
        p: &Pending,
        result: &Attempt,
        permit: Option<OwnedSemaphorePermit>,
        latency: Duration,
    ) {
        let t = match result {
            Attempt::Answered(a) => {
                return self
                    .finish_with_answer(p, a.clone(), FinalState::Failed, permit, latency)
                    .await;
            }
            Attempt::Transport(t) => t,
        };
        let (code, message) = match t.kind {
            TransportKind::TooLarge => ("response_too_large", t.message.clone()),
            TransportKind::Malformed => (
                "malformed_response",
                format!("gave up after {} attempts: {}", p.attempts, t.message),
            ),
            TransportKind::Timeout => (
                "request_timeout",
                format!("gave up after {} attempts: {}", p.attempts, t.message),
            ),
            TransportKind::Connection => (
                "connection_error",
                format!("gave up after {} attempts: {}", p.attempts, t.message),
            ),
            TransportKind::Invalid => (
                "invalid_request",
                format!("the request could not be sent: {}", t.message),
            ),
        };
        let mut line = Vec::with_capacity(160 + message.len());
        let id = self.line_id();
        output::write_failure_line(
            &mut line,
            &id,
            &p.parsed.custom_id,
            &LineFailure {
                code,
                message: &message,
            },
        );
        let mut r = self.base_record(p, FinalState::Failed, line);
        r.error_code = Some(code.to_owned());
        r.error_message = Some(message);
        self.settle(p, None);
        self.record(r, permit).await;
    }

    pub(crate) async fn reject(&self, seq: u64, e: batchling_core::LineError) {
        let r = Record::invalid(seq, &e, &self.line_id());
        self.record(r, None).await;
    }
}

/// The budget's answer to a request about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Its worst case is reserved (or no budget is set).
    Yes,
    /// It does not fit while others are in flight: hold it until one
    /// settles.
    Wait,
    /// It can never fit: the run stops.
    Stop,
}

/// Bodies at least this large become their output line in place.
const IN_PLACE_MIN: usize = 1 << 20;

/// The most of a body that is not JSON kept in its line (wrapped in an
/// error envelope): enough to show what it was.
const MAX_TEXT_BODY: usize = 64 * 1024;

/// A body that is not JSON, as text for its envelope: its start when long.
fn body_text(body: &[u8]) -> std::borrow::Cow<'_, str> {
    if body.len() <= MAX_TEXT_BODY {
        return String::from_utf8_lossy(body);
    }
    let mut text = String::from_utf8_lossy(&body[..MAX_TEXT_BODY]).into_owned();
    text.push_str(&format!(" [cut here: {} bytes in all]", body.len()));
    std::borrow::Cow::Owned(text)
}

fn describe_answer(a: &Answer) -> String {
    format!(
        "HTTP {}: {}",
        a.status,
        batchling_providers::openai::classify::error_message(a)
    )
}

fn describe_attempt(a: &Attempt) -> String {
    match a {
        Attempt::Answered(a) => describe_answer(a),
        Attempt::Transport(t) => t.message.clone(),
    }
}

/// One HTTP attempt and what follows from it.
pub(crate) async fn attempt<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut p: Pending,
    permit: OwnedSemaphorePermit,
) {
    let out = Outgoing {
        custom_id: p.parsed.custom_id.clone(),
        endpoint: p.parsed.endpoint,
        body: p.parsed.body.clone(),
    };
    let started = Instant::now();
    // Boxed: the send future is large, and inline it would make every
    // spawned attempt task that much bigger to build and move.
    let result = Box::pin(ctx.provider.send(&out)).await;
    drop(out);
    let latency = started.elapsed();
    p.sent += 1;
    ctx.counters.in_flight.fetch_sub(1, Relaxed);
    Counters::add(&ctx.counters.attempts, 1);
    if let Some(limits) = result.limits() {
        if ctx.pacer.observe(limits) {
            ctx.count_tokens.store(true, Relaxed);
        }
        ctx.first_answer.store(true, Relaxed);
    }
    if ctx.gating.load(Relaxed) {
        ctx.attempt_done.notify_waiters();
    }

    match ctx.provider.classify(&result) {
        Verdict::Success => {
            let Attempt::Answered(a) = result else {
                unreachable!("only answers succeed")
            };
            if let Some(u) = a.usage {
                let c = &ctx.counters;
                Counters::add(&c.input_tokens, u.input);
                Counters::add(&c.cached_tokens, u.cached_input);
                Counters::add(&c.output_tokens, u.output);
                // Providers charge the output reservation at admission; only
                // the input estimate is corrected.
                let t = p.parsed.tokens;
                if t != TokenEstimate::default() {
                    ctx.pacer.settle_tokens(t.input, u.input);
                }
            }
            ctx.counters
                .latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(latency);
            if ctx.health.success() {
                ctx.reporter
                    .notice("the upstream answers again; resuming full speed");
            }
            Box::pin(ctx.finish_with_answer(&p, a, FinalState::Done, Some(permit), latency)).await;
        }
        // The rarer paths are boxed so that their state does not make
        // every attempt task bigger.
        Verdict::Fail => {
            Box::pin(ctx.finish_with_attempt(&p, &result, Some(permit), latency)).await
        }
        Verdict::StopRun(reason) => {
            ctx.stop_with(match reason {
                StopReason::Unauthorized { status, message } => {
                    StopCause::Unauthorized { status, message }
                }
                StopReason::QuotaExhausted { message } => StopCause::QuotaExhausted { message },
            });
        }
        Verdict::Retry { after, reason } => {
            Box::pin(retry(ctx, p, &result, after, reason, permit, latency)).await
        }
    }
}

async fn retry<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut p: Pending,
    result: &Attempt,
    after: Option<Duration>,
    reason: RetryReason,
    permit: OwnedSemaphorePermit,
    latency: Duration,
) {
    if reason == RetryReason::RateLimited {
        Counters::add(&ctx.counters.rate_limited, 1);
        let pause = after.unwrap_or(Duration::from_secs(1));
        let was_paused = ctx.pacer.paused_until().is_some();
        ctx.pacer.pause(pause);
        if !was_paused {
            ctx.reporter.notice(&format!(
                "429 rate limited: all workers pause for {:.1}s",
                pause.as_secs_f64()
            ));
        }
    } else {
        p.attempts += 1;
    }
    if ctx.stop.is_cancelled() {
        return;
    }
    if p.attempts >= ctx.retry.max_attempts {
        if reason.is_outage_sign() && !ctx.health.succeeded_since(p.mark) {
            // Nothing else got through while this one retried: the upstream
            // is down, not this request. Keep it, and probe.
            if ctx.health.enter_outage(describe_attempt(result)) {
                ctx.reporter.notice(&format!(
                    "the upstream is failing ({}); probing with one request at a time",
                    describe_attempt(result)
                ));
            }
            p.attempts = 0;
            p.retries = 0;
            p.mark = ctx.health.mark();
            drop(permit);
            let home = p.home.clone();
            let _ = home.send(p);
            return;
        }
        ctx.finish_with_attempt(&p, result, Some(permit), latency)
            .await;
        return;
    }
    // Waiting out a backoff holds no concurrency slot.
    drop(permit);
    Counters::add(&ctx.counters.retries, 1);
    let delay = if reason == RetryReason::RateLimited {
        Duration::ZERO // the shared pause already holds every admission back
    } else {
        ctx.retry.backoff(p.retries, after, rand::random::<f64>())
    };
    p.retries += 1;
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = ctx.stop.cancelled() => return,
    }
    let home = p.home.clone();
    let _ = home.send(p);
}

/// The loop itself. Returns when every request is finished or the run stops.
pub(crate) async fn dispatch<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut input: mpsc::Receiver<Vec<ReadItem>>,
    permits: Arc<Semaphore>,
    discover: bool,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let (home_tx, mut home_rx) = mpsc::unbounded_channel::<Pending>();
    let mut home_tx = Some(home_tx);
    let mut batch = std::collections::VecDeque::new();
    // A new request that did not fit in the budget while others were in
    // flight: it goes first once one of them settles. Retries still go
    // ahead (their reservation is held), so waiting never deadlocks.
    let mut held: Option<Pending> = None;
    loop {
        if shutdown.is_cancelled() {
            ctx.stop_with(StopCause::Interrupted);
        }
        if ctx.stop.is_cancelled() {
            break;
        }
        while let Some(joined) = tasks.try_join_next() {
            check_joined(&ctx, joined);
        }
        // Retries first, then buffered lines, then wait for either.
        let next = if let Ok(p) = home_rx.try_recv() {
            p
        } else if let Some(p) = held.take() {
            let budget = ctx.budget.as_ref().expect("only the budget holds requests");
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => { held = Some(p); continue }
                _ = ctx.stop.cancelled() => { held = Some(p); continue }
                Some(back) = home_rx.recv() => { held = Some(p); back }
                _ = budget.settled() => p,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    check_joined(&ctx, joined);
                    held = Some(p);
                    continue;
                }
            }
        } else if let Some(item) = batch.pop_front() {
            match item {
                ReadItem::Valid(parsed) => {
                    let p = Pending {
                        parsed,
                        attempts: 0,
                        retries: 0,
                        mark: ctx.health.mark(),
                        sent: 0,
                        cache_key: None,
                        reserved: None,
                        home: home_tx
                            .clone()
                            .expect("lines come only while the input is open"),
                    };
                    match ctx.try_cache(p).await {
                        Some(p) => p,
                        None => continue, // answered from the cache
                    }
                }
                ReadItem::Invalid(seq, e) => {
                    ctx.reject(seq, e).await;
                    continue;
                }
            }
        } else {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => continue,
                _ = ctx.stop.cancelled() => continue,
                back = home_rx.recv() => match back {
                    Some(p) => p,
                    None => break, // input exhausted and nothing left anywhere
                },
                more = input.recv(), if home_tx.is_some() => {
                    match more {
                        Some(b) => batch = b.into(),
                        None => home_tx = None,
                    }
                    continue;
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    check_joined(&ctx, joined);
                    continue;
                }
            }
        };
        let mut next = next;
        if !gate(&ctx, discover).await {
            break;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = ctx.stop.cancelled() => break,
            _ = shutdown.cancelled() => { ctx.stop_with(StopCause::Interrupted); break; }
        };
        if next.parsed.tokens == TokenEstimate::default() && ctx.count_tokens.load(Relaxed) {
            // Read before a token limit was learned: count it now.
            let p = &next.parsed;
            next.parsed.tokens =
                crate::reader::token_cost(p.endpoint, &p.body, ctx.default_max_output);
        }
        match ctx.reserve(&mut next) {
            Reserved::Yes => {}
            Reserved::Wait => {
                drop(permit);
                held = Some(next);
                continue;
            }
            Reserved::Stop => break,
        }
        let cost = next.parsed.tokens.total();
        tokio::select! {
            _ = ctx.pacer.admit(cost) => {}
            _ = ctx.stop.cancelled() => break,
            _ = shutdown.cancelled() => { ctx.stop_with(StopCause::Interrupted); break; }
        }
        ctx.counters.in_flight.fetch_add(1, Relaxed);
        if ctx.counters.first_sent_us.load(Relaxed) == 0 {
            let us = ctx.started.elapsed().as_micros() as u64 + 1;
            ctx.counters.first_sent_us.store(us, Relaxed);
        }
        tasks.spawn(attempt(ctx.clone(), next, permit));
    }
}

fn check_joined<P: Provider>(ctx: &Ctx<P>, joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        // A bug, not a provider problem: stop rather than lose track of a
        // request.
        ctx.stop_with(StopCause::Internal {
            message: format!("an attempt task panicked: {e}"),
        });
    }
}

/// While the first answer (and its rate-limit headers) is awaited, requests
/// in flight may double every step, from one: a provider with small limits
/// sees only a handful of requests before batchling knows them, and one with
/// none (a local server) is at full concurrency within a few steps rather
/// than after a whole round trip.
const SLOW_START_STEP: Duration = Duration::from_millis(50);

async fn slow_start<P: Provider>(ctx: &Arc<Ctx<P>>, discovering: impl Fn() -> bool) -> bool {
    loop {
        let done = ctx.attempt_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if !discovering() {
            return true;
        }
        let first = ctx.counters.first_sent_us.load(Relaxed);
        let since = match first {
            0 => Duration::ZERO,
            us => ctx
                .started
                .elapsed()
                .saturating_sub(Duration::from_micros(us - 1)),
        };
        let steps = (since.as_millis() / SLOW_START_STEP.as_millis()).min(20) as u32;
        if ctx.counters.in_flight.load(Relaxed) < 1u64 << steps {
            return true;
        }
        let next_step = SLOW_START_STEP * (steps + 1) - since;
        tokio::select! {
            _ = done => {}
            _ = tokio::time::sleep(next_step) => {}
            _ = ctx.stop.cancelled() => return false,
        }
    }
}

/// Wait until the next attempt may be started in light of an outage (one
/// probe at a time, spaced out) or limit discovery (one request until the
/// first answer shows the limits). False when the run must stop.
async fn gate<P: Provider>(ctx: &Arc<Ctx<P>>, discover: bool) -> bool {
    let discovering = || discover && !ctx.first_answer.load(Relaxed);
    if !ctx.health.in_outage() && !discovering() {
        ctx.gating.store(false, Relaxed);
        return true;
    }
    ctx.gating.store(true, Relaxed);
    if !ctx.health.in_outage() {
        return slow_start(ctx, discovering).await;
    }
    // Outage: wait for nothing to be in flight, then probe.
    loop {
        let done = ctx.attempt_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if ctx.counters.in_flight.load(Relaxed) == 0 || (!ctx.health.in_outage() && !discovering())
        {
            break;
        }
        tokio::select! {
            _ = done => {}
            _ = ctx.stop.cancelled() => return false,
        }
    }
    match ctx.health.next_probe() {
        Ok(None) => true,
        Ok(Some(delay)) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = ctx.stop.cancelled() => false,
            }
        }
        Err(last_error) => {
            ctx.stop_with(StopCause::Unreachable { last_error });
            false
        }
    }
}
