//! Holding the next attempt back while the run does not yet know (or no
//! longer trusts) the upstream: slow start while the limits are discovered,
//! one probe at a time during an outage.

use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use crate::ctx::{Ctx, Discovery, Stop};
use crate::report::{Counters, StopCause};

/// While the first answer (and its rate-limit headers) is awaited, requests
/// in flight may double every step, from one: a provider with small limits
/// sees only a handful of requests before batchling knows them, and one with
/// none (a local server) is at full concurrency within a few steps rather
/// than after a whole round trip.
const SLOW_START_STEP: Duration = Duration::from_millis(50);

/// Wait until the next attempt may be started in light of an outage (one
/// probe at a time, spaced out) or limit discovery (slow start). False when
/// the run must stop.
pub(crate) async fn gate<P>(ctx: &Ctx<P>) -> bool {
    let d = &ctx.discovery;
    if !ctx.health.in_outage() && !d.discovering() {
        d.gating.store(false, Relaxed);
        return true;
    }
    d.gating.store(true, Relaxed);
    if !ctx.health.in_outage() {
        return slow_start(d, ctx.counters(), &ctx.stop).await;
    }
    // Outage: wait for nothing to be in flight, then probe.
    let idle = || ctx.counters().in_flight.load(Relaxed) == 0;
    let over = || !ctx.health.in_outage() && !d.discovering();
    if !wait_for_attempts(d, &ctx.stop, || idle() || over()).await {
        return false;
    }
    match ctx.health.next_probe() {
        Ok(None) => true,
        Ok(Some(delay)) => {
            tokio::select! {
                _ = tokio::time::sleep(delay) => true,
                _ = ctx.stop.token.cancelled() => false,
            }
        }
        Err(last_error) => {
            ctx.stop_with(StopCause::Unreachable { last_error });
            false
        }
    }
}

/// Wait, while discovering, until fewer attempts are in flight than the
/// slow start allows by now. False when the run stops meanwhile.
async fn slow_start(d: &Discovery, counters: &Counters, stop: &Stop) -> bool {
    loop {
        let done = d.attempt_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if !d.discovering() {
            return true;
        }
        let since = match counters.first_sent_us.load(Relaxed) {
            0 => Duration::ZERO,
            us => d
                .started
                .elapsed()
                .saturating_sub(Duration::from_micros(us - 1)),
        };
        let steps = (since.as_millis() / SLOW_START_STEP.as_millis()).min(20) as u32;
        if counters.in_flight.load(Relaxed) < 1u64 << steps {
            return true;
        }
        let next_step = SLOW_START_STEP * (steps + 1) - since;
        tokio::select! {
            _ = done => {}
            _ = tokio::time::sleep(next_step) => {}
            _ = stop.token.cancelled() => return false,
        }
    }
}

/// Wait until `ready` holds, looking again each time an attempt ends. The
/// notification is armed before `ready` is looked at, so an attempt that
/// ends in between is not missed. False when the run stops meanwhile.
async fn wait_for_attempts(d: &Discovery, stop: &Stop, ready: impl Fn() -> bool) -> bool {
    loop {
        let done = d.attempt_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if ready() {
            return true;
        }
        tokio::select! {
            _ = done => {}
            _ = stop.token.cancelled() => return false,
        }
    }
}
