//! One attempt and what follows from it: send through the provider, let the
//! provider classify the answer, then finish the request (a record to the
//! journal writer), retry it after its backoff, keep it through an outage,
//! or stop the run.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use batchling_core::output::{self, LineFailure};
use batchling_core::tokens::TokenEstimate;
use batchling_core::usage::{BodyRead, read_body};
use batchling_core::{RetryReason, StopReason, Usage, Verdict};
use batchling_providers::{Answer, Attempt, Outgoing, Provider, TransportKind};
use batchling_store::{AttemptRow, FinalState, PaidAttempts, Record, cache_key};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::dispatch::Pending;
use crate::job_store::{JobStore, MaySend};
use crate::pacer::{Admitted, Cost, LaneId, PerMinute, Settle};
use crate::recorder::{Entry, Finished};
use crate::report::{Counters, Notice, StopCause};
use crate::route::hop::Then;
use crate::route::{Chain, KeyAt};
use crate::shared::{Booking, Shared, SharedBudget, SharedLane, Ticket, Unavailable, wait_out};

/// What an attempt came back with, the key it went on, and the permit it
/// still holds.
struct Sent {
    result: Attempt,
    key: KeyAt,
    permit: OwnedSemaphorePermit,
    latency: Duration,
}

/// One HTTP attempt and what follows from it (the attempt task's body).
pub(crate) async fn attempt<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut p: Pending,
    permit: OwnedSemaphorePermit,
    admitted: Admitted,
) {
    let key = p
        .hop
        .and_then(|h| h.key)
        .expect("a request is given a key when admitted");
    // Boxed, and only awaited when there is a lease or a shared budget to
    // ask: a run without either builds no such future per attempt.
    let booked = if ctx.admission.shared.is_some() || ctx.admission.store.is_some() {
        let Ok(booked) = Box::pin(clear_to_send(&ctx, &p, key, admitted.lane)).await else {
            return unsent(&ctx, p, permit);
        };
        booked
    } else {
        None
    };
    // In a block, so that the answer, its verdict and the request's copy
    // are not kept across the last await: the task stays small to build and
    // move (the follow-up is boxed).
    let follow_up = {
        let out = Outgoing {
            custom_id: p.parsed.custom_id.clone(),
            endpoint: p.parsed.endpoint,
            body: body_for_target(&ctx, &p),
        };
        let client = &ctx.routes.key(key).client;
        let started = Instant::now();
        // Boxed: the send future is large, and inline it would make every
        // spawned attempt task that much bigger to build and move.
        let result = Box::pin(client.send(&out)).await;
        drop(out);
        let latency = started.elapsed();
        p.sent += 1;
        ctx.counters().in_flight.fetch_sub(1, Relaxed);
        Counters::add(&ctx.counters().attempts, 1);
        let verdict = client.classify(&result);
        let lane = admitted.lane;
        ctx.discovery
            .answered(&ctx.admission.pacer, admitted, &result, &verdict);
        // After the pacer read the answer's headers: what it learned is
        // shared too.
        if let Some(booked) = booked {
            booked.settle(&ctx, &result, &verdict, lane);
        }
        let sent = Sent {
            result,
            key,
            permit,
            latency,
        };
        Box::pin(follow_up(ctx, p, sent, verdict))
    };
    follow_up.await;
}

/// An attempt's booking on the shared budget, and the lane it is on.
struct Booked {
    /// `None`: nothing booked (the lane's limits were not known yet).
    ticket: Option<Ticket>,
    group: Box<str>,
    model: Option<String>,
    /// What the lane had learned from headers when it was booked.
    learned: Option<PerMinute>,
}

impl Booked {
    /// After the answer: what it took settles the booking, a 429 pauses
    /// the lane for every process (in the background: the attempt does
    /// not wait for the store). Anything else keeps it charged, as
    /// providers count refused requests.
    fn settle<P>(self, ctx: &Ctx<P>, result: &Attempt, verdict: &Verdict, lane: LaneId) {
        let Some(shared) = &ctx.admission.shared else {
            return;
        };
        let budget = shared.budget.clone();
        self.share_learned(ctx, &budget, lane);
        let Some(ticket) = self.ticket else {
            return;
        };
        let rate_limited = matches!(
            verdict,
            Verdict::Retry {
                reason: RetryReason::RateLimited,
                ..
            }
        );
        match (result, rate_limited) {
            (_, true) => {
                let pause = retry_after(verdict).unwrap_or(Duration::from_secs(1));
                let (group, model) = (self.group, self.model);
                tokio::spawn(async move {
                    let lane = SharedLane {
                        group: &group,
                        model: model.as_deref(),
                    };
                    let _ = budget.pause(lane, pause).await;
                });
            }
            (Attempt::Answered(a), false) if *verdict == Verdict::Success => {
                // No usage (embeddings' answers may lack it): as booked.
                let Some(usage) = a.usage else {
                    return;
                };
                let actual = Cost {
                    input: usage.input,
                    output: usage.output,
                };
                tokio::spawn(async move {
                    let _ = budget.settle(ticket, actual).await;
                });
            }
            _ => {}
        }
    }
}

impl Booked {
    /// Limits the lane learned from this answer's headers (first ones, or
    /// new ones) go to the other processes, in the background.
    fn share_learned<P>(&self, ctx: &Ctx<P>, budget: &Arc<dyn SharedBudget>, lane: LaneId) {
        let Some(now) = ctx.admission.pacer.learned_view(lane) else {
            return;
        };
        if Some(now) == self.learned {
            return;
        }
        let (budget, group, model) = (budget.clone(), self.group.clone(), self.model.clone());
        tokio::spawn(async move {
            let lane = SharedLane {
                group: &group,
                model: model.as_deref(),
            };
            let _ = budget.learn(lane, now).await;
        });
    }
}

/// Booking failed for good: the run stopped while the budget was away.
struct Unsent;

/// Book the attempt's send on the shared budget (after the local pacer
/// admitted it) and wait for its time. A lane without known limits (slow
/// start) books nothing. While the budget cannot be reached nothing is
/// sent (one notice says so, another when it is back); a stop then gives
/// up: the request goes unsent, to be sent by a later run.
async fn book<P>(
    ctx: &Ctx<P>,
    shared: &Shared,
    p: &Pending,
    key: KeyAt,
    lane_id: LaneId,
) -> Result<Option<Booked>, Unsent> {
    let group = ctx.routes.group_name(key.group);
    let (model, limits) = shared_limits(ctx, shared, group, lane_id).await;
    let learned = ctx.admission.pacer.learned_view(lane_id);
    let Some(limits) = limits else {
        let (group, ticket) = (group.into(), None);
        return Ok(Some(Booked {
            ticket,
            group,
            model,
            learned,
        }));
    };
    let cost = Cost::from(p.parsed.tokens);
    let mut rebooks = 0;
    loop {
        let lane = SharedLane {
            group,
            model: model.as_deref(),
        };
        match shared.budget.reserve(lane, limits, cost).await {
            Ok(booking) => {
                if shared.down.swap(false, Relaxed) {
                    shared.back();
                    ctx.reporter.notify(&Notice::SharedBudgetBack);
                }
                match booking {
                    Booking::Send { wait, ticket } => {
                        // Booked ahead: the others' sends come first, so
                        // this lane admits no more here until then.
                        if !wait.is_zero() {
                            ctx.admission.pacer.hold(lane_id, wait);
                        }
                        if let Err(late) = wait_out(wait, rebooks).await {
                            // Its booked time stays spent: the safe side.
                            rebooks += 1;
                            if !shared.woke_late.swap(true, Relaxed) {
                                ctx.reporter.notify(&Notice::WokeLate { late });
                            }
                            continue;
                        }
                        let (group, ticket) = (group.into(), Some(ticket));
                        return Ok(Some(Booked {
                            ticket,
                            group,
                            model,
                            learned,
                        }));
                    }
                    Booking::Later(after) => {
                        // The lane here waits too: the others' sends fill it.
                        let after = after.max(Duration::from_millis(1));
                        ctx.admission.pacer.hold(lane_id, after);
                        tokio::time::sleep(after).await;
                    }
                }
            }
            Err(Unavailable(why)) => {
                let away = shared.away();
                if away > ctx.health.give_up_after() {
                    ctx.stop_with(StopCause::SharedBudgetUnreachable { why });
                    return Err(Unsent);
                }
                if !shared.down.swap(true, Relaxed) {
                    ctx.reporter.notify(&Notice::SharedBudgetDown { why });
                }
                if ctx.stop.is_stopped() {
                    return Err(Unsent);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The lane's model and the limits to book under: the local lane's, or,
/// in slow start here, those another process learned.
async fn shared_limits<P>(
    ctx: &Ctx<P>,
    shared: &Shared,
    group: &str,
    lane_id: LaneId,
) -> (Option<String>, Option<PerMinute>) {
    let pacer = &ctx.admission.pacer;
    let (model, limits) = pacer.shared_view(lane_id);
    if limits.is_some() {
        return (model, limits);
    }
    let lane = SharedLane {
        group,
        model: model.as_deref(),
    };
    match shared.budget.learned(lane).await {
        Ok(Some(learned)) => {
            pacer.learn_shared(lane_id, learned);
            (model, pacer.shared_view(lane_id).1)
        }
        _ => (model, None),
    }
}

/// What a send needs beyond the local pacer, in order: the job store's
/// lease (`run --store`), then the shared budget's booking (`--limiter`),
/// then the lease once more, at the last moment before the send. A lease
/// that lapsed while the booking waited books again once it is back: a
/// send late for its booked time would crowd the others' (the first
/// booking's room stays spent, on the safe side). `Err`: not to be sent.
async fn clear_to_send<P>(
    ctx: &Ctx<P>,
    p: &Pending,
    key: KeyAt,
    lane: LaneId,
) -> Result<Option<Booked>, Unsent> {
    let leased = (ctx.admission.store.as_deref()).zip(p.parsed.claim);
    loop {
        if let Some((store, token)) = leased {
            lease_gate(ctx, store, token).await?;
        }
        let booked = match &ctx.admission.shared {
            Some(shared) => book(ctx, shared, p, key, lane).await?,
            None => None,
        };
        match leased.map(|(store, token)| store.may_send(token)) {
            None | Some(MaySend::Send) => return Ok(booked),
            Some(MaySend::Void) => return Err(Unsent),
            Some(MaySend::Wait(_)) => continue,
        }
    }
}

/// Wait until the shared job store's lease lets this worker send the
/// request claimed with `token`: `Err` when the claim was taken over
/// (another worker answers it) or the run stops meanwhile.
async fn lease_gate<P>(ctx: &Ctx<P>, store: &dyn JobStore, token: i64) -> Result<(), Unsent> {
    loop {
        match store.may_send(token) {
            MaySend::Send => return Ok(()),
            MaySend::Void => return Err(Unsent),
            MaySend::Wait(pause) => tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = ctx.stop.token.cancelled() => return Err(Unsent),
            },
        }
    }
}

/// An admitted attempt that was never sent: not in flight any more, its
/// permit back, nothing journaled (a later run sends it).
fn unsent<P>(ctx: &Ctx<P>, p: Pending, permit: OwnedSemaphorePermit) {
    ctx.counters().in_flight.fetch_sub(1, Relaxed);
    ctx.accounting.settle(&p, None);
    drop(permit);
}

/// The request's body as its target sends it: with the target's own name
/// for the model when that differs from the line's (a route's alias, a
/// fallback to another model).
fn body_for_target<P>(ctx: &Ctx<P>, p: &Pending) -> bytes::Bytes {
    let hop = p.hop.expect("placed before it is sent");
    match ctx.routes.target(hop.target).model.as_deref() {
        Some(m) if Some(m) != p.parsed.model.as_deref() => {
            batchling_core::json::with_model(&p.parsed.body, m)
                .map_or_else(|| p.parsed.body.clone(), bytes::Bytes::from)
        }
        _ => p.parsed.body.clone(),
    }
}

/// What the provider's verdict on an attempt calls for: a success is
/// recorded; anything else is put to the route (`Routes::after`), which
/// says whether the request retries on its target, moves on now, fails or
/// stops the run.
async fn follow_up<P: Provider>(ctx: Arc<Ctx<P>>, mut p: Pending, sent: Sent, verdict: Verdict) {
    let now = Instant::now();
    if !matches!(verdict, Verdict::StopRun(_)) {
        ctx.routes.key_answered(sent.key);
    }
    if ctx.routes.records_attempts() {
        p.tried.push(attempt_row(&ctx, &p, &sent, &verdict));
    }
    if verdict == Verdict::Success {
        if let Some(hop) = &mut p.hop {
            hop.probe = false;
            ctx.routes.target(hop.target).circuit.worked();
        }
        let Attempt::Answered(a) = sent.result else {
            unreachable!("only answers succeed")
        };
        if refused_elsewhere(&ctx, &mut p, &a) {
            drop(sent.permit);
            // What it cost is journaled before the line moves on.
            let paid = PaidAttempts {
                seq: p.parsed.seq,
                attempts: std::mem::take(&mut p.tried),
            };
            ctx.sink.send(Entry::Paid(paid)).await;
            let home = p.home.clone();
            let _ = home.send(p);
            return;
        }
        count_success(&ctx, &p, &a, sent.latency);
        let permit = Some(sent.permit);
        ctx.finish_with_answer(&p, a, FinalState::Done, permit, sent.latency)
            .await;
        return;
    }
    let rate_limited = matches!(
        verdict,
        Verdict::Retry {
            reason: RetryReason::RateLimited,
            ..
        }
    );
    if rate_limited {
        pause_for_429(&ctx, &p, retry_after(&verdict));
    } else {
        p.attempts += 1;
    }
    let mut hop = p.hop.expect("placed before it is sent");
    let then = ctx
        .routes
        .after(&mut hop, &verdict, p.attempts, ctx.retry.max_attempts, now);
    p.hop = Some(hop);
    // The rarer paths are boxed so that their state does not make every
    // follow-up bigger.
    match then {
        Then::Retry => Box::pin(retry(ctx, p, sent, &verdict)).await,
        Then::Move => {
            Counters::add(&ctx.counters().retries, 1);
            drop(sent);
            let home = p.home.clone();
            let _ = home.send(p);
        }
        Then::Fail => Box::pin(give_up(ctx, p, sent, &verdict)).await,
        Then::Stop => {
            if let Verdict::StopRun(reason) = verdict {
                ctx.stop_with(match reason {
                    StopReason::Unauthorized { status, message } => {
                        StopCause::Unauthorized { status, message }
                    }
                    StopReason::QuotaExhausted { message } => StopCause::QuotaExhausted { message },
                });
            }
        }
    }
}

/// One attempt as the journal keeps it (its cost is filled in when it
/// answered the request).
fn attempt_row<P>(ctx: &Ctx<P>, p: &Pending, sent: &Sent, verdict: &Verdict) -> AttemptRow {
    let routes = &ctx.routes;
    let target = p.hop.map(|h| routes.target(h.target).name.to_string());
    let group = &routes.groups[sent.key.group as usize];
    let (status, usage) = match &sent.result {
        Attempt::Answered(a) => (Some(a.status), a.usage.unwrap_or_default()),
        Attempt::Transport(_) => (None, Usage::default()),
    };
    let error_class = match verdict {
        Verdict::Success => None,
        Verdict::Retry { reason, .. } => Some(match reason {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::ServerError => "server_error",
            RetryReason::Connection => "connection",
            RetryReason::Timeout => "timeout",
            RetryReason::MalformedBody => "malformed",
        }),
        Verdict::StopRun(_) => Some("key_refused"),
        Verdict::Fail(kind) => Some(kind.as_str()),
    };
    AttemptRow {
        target: target.unwrap_or_default(),
        group: group.name.to_string(),
        key_id: routes.key(sent.key).id.to_string(),
        status,
        error_class: error_class.map(str::to_owned),
        retry_after_ms: retry_after(verdict).map(|d| d.as_millis() as u64),
        usage,
        cost_usd: None,
        billed: *verdict == Verdict::Success,
    }
}

/// A refusal answer on a route with a content-policy chain: the attempt is
/// billed (its cost settles and counts toward the line's), and the line
/// moves to that chain. False for any other answer (a refusal without such
/// a chain is the answer).
fn refused_elsewhere<P>(ctx: &Ctx<P>, p: &mut Pending, a: &Answer) -> bool {
    let Some(mut hop) = p.hop else {
        return false;
    };
    let routes = &ctx.routes;
    let has_chain = !routes
        .route(hop.route)
        .chain(Chain::ContentPolicy)
        .is_empty();
    if !has_chain || !batchling_core::usage::says_refusal(&a.body) {
        return false;
    }
    if !routes.after_refusal(&mut hop, p.attempts + 1, ctx.retry.max_attempts) {
        return false;
    }
    p.attempts += 1;
    // Priced at the target that refused, before the line moves on.
    let cost = ctx.accounting.cost_of(routes, p, a.usage);
    p.hop = Some(hop);
    ctx.accounting.settle(p, cost);
    // Its reservation is spent: the next attempt reserves its own.
    p.reserved = None;
    p.spent += cost.unwrap_or(0.0);
    if let Some(last) = p.tried.last_mut() {
        last.cost_usd = cost;
        last.error_class = Some("refusal".to_owned());
    }
    Counters::add(&ctx.counters().retries, 1);
    true
}

/// The server's delay of a retry verdict.
fn retry_after(verdict: &Verdict) -> Option<Duration> {
    match verdict {
        Verdict::Retry { after, .. } => *after,
        _ => None,
    }
}

/// The request fails with this attempt: unless it ran out of attempts on
/// outage signs while nothing else succeeded, on a route with nowhere else
/// to go (the upstream is down, not this request: it is kept and the loop
/// probes).
async fn give_up<P: Provider>(ctx: Arc<Ctx<P>>, p: Pending, sent: Sent, verdict: &Verdict) {
    let outage_sign = matches!(verdict, Verdict::Retry { reason, .. } if reason.is_outage_sign());
    let route = p.hop.map(|h| ctx.routes.route(h.route));
    if outage_sign
        && route.is_some_and(|r| !r.has_fallback())
        && !ctx.health.succeeded_since(p.mark)
    {
        keep_through_outage(&ctx, p, sent);
        return;
    }
    ctx.finish_failed(&p, sent).await;
}

/// A success: its tokens and latency count, the pacer's token estimate is
/// corrected, and an outage (if any) ends.
fn count_success<P>(ctx: &Ctx<P>, p: &Pending, a: &Answer, latency: Duration) {
    let c = ctx.counters();
    let mut tokens = 0;
    let mut settle = None;
    if let Some(u) = a.usage {
        Counters::add(&c.input_tokens, u.input);
        Counters::add(&c.cached_tokens, u.cached_input);
        Counters::add(&c.output_tokens, u.output);
        tokens = u.input.saturating_add(u.output);
        // Providers charge the output reservation at admission; only the
        // input estimate is corrected.
        let t = p.parsed.tokens;
        if t != TokenEstimate::default() {
            settle = Some(Settle {
                reserved: t.input,
                input: u.input,
                cache_reads: u.cached_input,
            });
        }
    }
    if let Some(lane) = p.lane {
        // The lane's counts (for the summary) and its correction, in one lock.
        ctx.admission.pacer.succeeded(lane, tokens, settle);
    }
    c.latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(latency);
    if ctx.health.success() {
        ctx.reporter.notify(&Notice::OutageEnded);
    }
}

/// A retry on the same target: it sleeps its backoff (none after a 429:
/// its lane's pause holds it back), holding no permit, and goes back to the
/// loop.
async fn retry<P: Provider>(ctx: Arc<Ctx<P>>, mut p: Pending, sent: Sent, verdict: &Verdict) {
    if ctx.stop.is_stopped() {
        return;
    }
    // Waiting out a backoff holds no concurrency slot.
    drop(sent);
    Counters::add(&ctx.counters().retries, 1);
    let delay = match verdict {
        Verdict::Retry {
            reason: RetryReason::RateLimited,
            ..
        } => Duration::ZERO,
        v => ctx
            .retry
            .backoff(p.retries, retry_after(v), rand::random::<f64>()),
    };
    p.retries += 1;
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = ctx.stop.token.cancelled() => return,
    }
    let home = p.home.clone();
    let _ = home.send(p);
}

/// A 429: every admission to the request's lane (its model's) waits, the
/// server's delay, else a second; the other lanes keep their pace (see
/// `Pacer::pause`). The first 429 of a pause is told.
fn pause_for_429<P>(ctx: &Ctx<P>, p: &Pending, after: Option<Duration>) {
    Counters::add(&ctx.counters().rate_limited, 1);
    let Some(lane) = p.lane else {
        return; // never admitted, so never sent: cannot happen
    };
    let pause = after.unwrap_or(Duration::from_secs(1));
    let pacer = &ctx.admission.pacer;
    let was_paused = pacer.paused_until(lane).is_some();
    pacer.pause(lane, pause);
    if !was_paused {
        ctx.reporter.notify(&Notice::RateLimited { pause });
    }
}

/// The upstream is down, not this request: it starts over (attempts,
/// backoff) and goes back to the loop, which probes one at a time.
fn keep_through_outage<P: Provider>(ctx: &Ctx<P>, mut p: Pending, sent: Sent) {
    let last_error = ctx.describe_attempt(sent.key, &sent.result);
    if ctx.health.enter_outage(last_error.clone()) {
        ctx.reporter.notify(&Notice::OutageStarted { last_error });
    }
    p.attempts = 0;
    p.retries = 0;
    if let Some(hop) = &mut p.hop {
        hop.on_target = 0;
    }
    p.mark = ctx.health.mark();
    drop(sent);
    let home = p.home.clone();
    let _ = home.send(p);
}

/// The top-level `model` an answer's body names (the model that answered,
/// a dated snapshot, say); `None` when it has none.
pub(crate) fn response_model(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let [Some(range)] = batchling_core::json::scan_object(text, ["model"]).ok()? else {
        return None;
    };
    batchling_core::json::string_value(&text[range]).map(|m| m.chars().take(200).collect())
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

impl<P: Provider> Ctx<P> {
    /// An answer that did not succeed, in words: its status and the
    /// provider's message.
    fn describe_answer(&self, key: KeyAt, a: &Answer) -> String {
        let client = &self.routes.key(key).client;
        format!("HTTP {}: {}", a.status, client.describe(a))
    }

    /// An attempt that did not succeed, in words.
    fn describe_attempt(&self, key: KeyAt, a: &Attempt) -> String {
        match a {
            Attempt::Answered(a) => self.describe_answer(key, a),
            Attempt::Transport(t) => t.message.clone(),
        }
    }

    /// Answer a new request from the response cache, if it is there.
    /// Returns the request back when it must be sent.
    pub(crate) async fn try_cache(&self, mut p: Pending) -> Option<Pending> {
        let Some(cache) = &self.sink.cache else {
            return Some(p);
        };
        let key = cache_key(p.parsed.endpoint.path(), &p.parsed.body);
        p.cache_key = Some(key);
        let hit = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
        let hit = match hit {
            Ok(Some(hit)) => hit,
            Ok(None) => return Some(p),
            Err(e) => {
                self.reporter.notify(&Notice::CacheUnreadable {
                    error: e.to_string(),
                });
                return Some(p);
            }
        };
        let mut line = Vec::with_capacity(hit.body.len() + 160);
        let id = self.sink.ids.next();
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
        r.cost_usd = Some(0.0).filter(|_| self.accounting.prices.is_some());
        Counters::add(&self.counters().cached, 1);
        self.sink.record(r, p.parsed.claim, None).await;
        None
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
        let id = self.sink.ids.next();
        let request_id = a.request_id.take().unwrap_or_default();
        let answered_by = (self.routes.records_attempts() && a.body_is_json)
            .then(|| response_model(&a.body))
            .flatten();
        let key = p.hop.and_then(|h| h.key);
        let error_message = match key {
            Some(key) if state != FinalState::Done => Some(self.describe_answer(key, &a)),
            _ => None,
        };
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
        let own = self.accounting.cost_of(&self.routes, p, a.usage);
        if let Some(route) = &mut r.route {
            if let Some(last) = route.attempts.last_mut().filter(|t| t.billed) {
                last.cost_usd = own;
            }
            route.response_model = answered_by;
        }
        self.accounting.settle(p, own);
        // The line's cost: every billed attempt (a refusal before, say).
        r.cost_usd = own.map(|c| c + p.spent);
        r.error_message = error_message;
        self.sink
            .send(Entry::Finished(Finished {
                record: r,
                permit,
                cache_put,
                claim: p.parsed.claim,
            }))
            .await;
    }

    /// Record a request as failed with its last attempt: the HTTP answer
    /// when there was one, else an `error` object.
    async fn finish_failed(&self, p: &Pending, sent: Sent) {
        let Sent {
            result,
            permit,
            latency,
            ..
        } = sent;
        let t = match result {
            Attempt::Answered(a) => {
                return self
                    .finish_with_answer(p, a, FinalState::Failed, Some(permit), latency)
                    .await;
            }
            Attempt::Transport(t) => t,
        };
        let (code, message) = match t.kind {
            TransportKind::TooLarge => ("response_too_large", t.message),
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
        self.record_failure(p, code, message, Some(permit)).await;
    }

    /// Record `p` as failed with an `error` object of `code` and
    /// `message` (no HTTP answer to show), releasing `permit` once durable.
    async fn record_failure(
        &self,
        p: &Pending,
        code: &str,
        message: String,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let mut line = Vec::with_capacity(160 + message.len());
        let id = self.sink.ids.next();
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
        r.cost_usd = (p.spent > 0.0).then_some(p.spent);
        self.accounting.settle(p, None);
        self.sink.record(r, p.parsed.claim, permit).await;
    }

    /// Record a request its route has nowhere to send: `no_route` (no
    /// route names its model) or `no_eligible_target` (every target left
    /// is out for the run or over the price ceiling).
    pub(crate) async fn finish_unsendable(&self, p: &Pending, code: &'static str) {
        let model = p.parsed.model.as_deref().unwrap_or("(none)");
        let message = match code {
            "no_route" => format!("no route takes the model {model:?}"),
            _ => {
                let tried = if p.sent > 0 {
                    format!(" after {} attempts", p.sent)
                } else {
                    String::new()
                };
                let route = p.hop.map_or("", |h| &*self.routes.route(h.route).name);
                format!(
                    "no target of the route {route:?} (model {model:?}) can take it{tried}: each is out for the run (a refused key, a model not found) or over the route's max_price_ratio"
                )
            }
        };
        self.record_failure(p, code, message, None).await;
    }

    /// Record an invalid line.
    pub(crate) async fn reject(&self, seq: u64, e: batchling_core::LineError, claim: Option<i64>) {
        let r = Record::invalid(seq, &e, &self.sink.ids.next());
        self.sink.record(r, claim, None).await;
    }
}
