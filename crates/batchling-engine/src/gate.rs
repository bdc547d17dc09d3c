//! Holding the next attempt back while the run no longer trusts the
//! upstream: one probe at a time during an outage. (Slow start, while a
//! lane's limits are discovered, is the pacer's: it holds that lane alone.)

use std::sync::atomic::Ordering::Relaxed;

use crate::ctx::{Ctx, Discovery, Stop};
use crate::report::StopCause;

/// Wait until the next attempt may be started in light of an outage (one
/// probe at a time, spaced out). False when the run must stop.
pub(crate) async fn gate<P>(ctx: &Ctx<P>) -> bool {
    let d = &ctx.discovery;
    if !ctx.health.in_outage() {
        d.gating.store(false, Relaxed);
        return true;
    }
    d.gating.store(true, Relaxed);
    // Outage: wait for nothing to be in flight, then probe.
    let idle = || ctx.counters().in_flight.load(Relaxed) == 0;
    let over = || !ctx.health.in_outage();
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
