//! `batchling submit`: a file through a provider's Batch API
//! ([`BatchApi`]), split, tracked in the journal, resumable.
//!
//! # Flow ([`submit`] reads as these steps)
//! 1. **plan** (`prepare.rs`, `plan.rs`): validate every line before
//!    anything is sent; bad lines refuse the submit unless `skip_invalid`
//!    (then they go to the error file, as in `batchling run`). Pending
//!    requests (`Selection::wants`) are grouped by (endpoint, model) and cut
//!    at the request and byte limits; the parts and their request lists are
//!    journaled in one transaction.
//! 2. **launch** (`driver.rs`): each part's requests are rebuilt from the
//!    input, checked against their planned hash, uploaded, then its batch
//!    created with a tag `"<submit id>:<part>"`. The part is journaled as
//!    `creating` *before* the create call; a part found in `creating` (a
//!    crash, or a create whose answer was lost) is first looked up by that
//!    tag, and created only if absent. So a batch is never created twice
//!    for a part. An upload whose file id was not journaled is simply
//!    uploaded again (files are free).
//! 3. **poll** with backoff (`poll_interval` growing ×1.5 to
//!    `max_poll_interval` while nothing changes); counts go to the reporter.
//! 4. **collect** (`collect.rs`) each ended part at once: fetch its results,
//!    join on `custom_id`, and journal one record per request together with
//!    the part's new state.
//! 5. **deadline**: at `deadline_at - deadline_margin`, live parts are
//!    cancelled, collected once cancelled, and what did not finish is sent
//!    online (as with `finish_online`).
//! 6. **finish online** ([`crate::run`]) or **export** (`finish.rs`):
//!    failed requests go through the online runner with the same journal,
//!    or the output and error files are exported from the journal as
//!    `batchling run` does.
//!
//! [`cancel`] (`cancel.rs`) drives the same parts to a cancelled end.
//!
//! # Several Batch APIs (`submit --config`)
//! [`submit_with`] takes [`Apis`]: a Batch API per target of a routes
//! config. A line goes to its route's primary (its model written into its
//! body), parts are cut per (endpoint, target) at that API's limits, and a
//! part journals its target, so a resume and [`cancel_with`] talk to the
//! API that has its batch. What the batches leave goes online over the
//! config's [`Routes`](crate::Routes): the whole chain again.

mod apis;
mod cancel;
pub(crate) mod collect;
mod driver;
mod finish;
mod job;
mod plan;
mod prepare;
mod retry;
#[cfg(test)]
mod tests_inline;

use std::sync::Arc;
use std::time::Duration;

use batchling_core::clock::unix_now;
use batchling_providers::batch::Refusal;
use batchling_providers::{BatchApi, Provider};
use batchling_store::{Part, PartState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use apis::{Apis, BatchTarget};
pub use cancel::{cancel, cancel_with};
pub use job::{CancelJob, CancelSummary, SubmitError, SubmitJob, SubmitStop, SubmitSummary};
pub use plan::PartLimits;
pub use prepare::API_SETTINGS;

use crate::report::{Progress, Reporter};
use driver::Driver;

/// The id of a request's line in the output when the provider gave none:
/// `batch_req_<scope>_<n>` (scope: the batch id, or `invalid` for a bad
/// input line).
pub(crate) fn line_id(scope: &str, n: u64) -> String {
    format!("batch_req_{scope}_{n}")
}

/// Run a submit job to the end: every part collected and the output files
/// written, or stopped (interrupted) with everything journaled.
pub async fn submit<B: BatchApi, P: Provider>(
    job: SubmitJob,
    api: B,
    online: Arc<P>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<SubmitSummary, SubmitError> {
    let job = SubmitJob {
        limits: job.limits.within(api.limits()),
        ..job
    };
    let routes = crate::Routes::single(online);
    submit_with(job, Apis::one(api), routes, shutdown, reporter).await
}

/// [`submit`] on several Batch APIs (a part goes to its target's), with
/// `online` (the config's routes, or one provider's) finishing what the
/// batches leave.
pub async fn submit_with<B: BatchApi, P: Provider>(
    job: SubmitJob,
    apis: Apis<B>,
    online: crate::Routes<P>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<SubmitSummary, SubmitError> {
    let started = Instant::now();
    let settings = apis.settings();
    let limits = |target: Option<&str>| match apis.api(target) {
        Some(api) => job.limits.within(api.limits()),
        None => job.limits,
    };
    let opened = prepare::prepare(
        &job,
        (&|line| place(&apis, line), &limits, settings.as_deref()),
        reporter.as_ref(),
    )?;
    let mut deadline = Deadline::new(&job, opened.started_unix, opened.no_time);
    let mut d = Driver::new(
        &apis,
        &job.input,
        opened.journal,
        reporter.as_ref(),
        job.api_retry,
        job.prices.clone(),
    )?;
    let resumed = {
        let p = progress(&d, &job, &d.journal.parts()?, started, (0, 0))?;
        (p.done, p.input_tokens + p.output_tokens)
    };
    if opened.no_time {
        reporter.notice(
            "the deadline leaves no time for a batch (the margin is at least what is left): \
             sending what is pending online",
        );
    }
    d.launch(&job.input, &shutdown).await?;
    let mut summary = SubmitSummary::default();
    let watch = Watch {
        job: &job,
        reporter: reporter.as_ref(),
        started,
        resumed,
    };
    watch
        .run(&mut d, &mut deadline, &shutdown, &mut summary)
        .await?;
    let journal = d.journal;
    let retryable_only = apis.is_routed();
    finish::finish(
        journal,
        &job,
        (online, retryable_only),
        &shutdown,
        reporter.clone(),
        deadline.passed,
        &mut summary,
    )
    .await?;
    finish::summarize(&job, started, summary)
}

/// Where a line goes: its route's primary, unless that target's Batch API
/// refuses it (or no route takes it).
fn place<'a, B: BatchApi>(
    apis: &'a Apis<B>,
    line: &batchling_core::RequestLine,
) -> Result<apis::Placed<'a>, Refusal> {
    let placed = apis.place(line.model.as_deref())?;
    match apis.api(placed.target).and_then(|api| api.refuse(line)) {
        Some(why) => Err(why),
        None => Ok(placed),
    }
}

/// When to give up on the Batch API, and whether that time has come.
struct Deadline {
    /// Unix seconds: the deadline less its margin.
    fallback_at: Option<u64>,
    /// It came (or there was no time from the start): live parts were
    /// cancelled and what is left goes online.
    passed: bool,
}

impl Deadline {
    fn new(job: &SubmitJob, started_unix: u64, no_time: bool) -> Deadline {
        let deadline_at = job.deadline.map(|dl| started_unix + dl.as_secs());
        Deadline {
            fallback_at: deadline_at.map(|at| at.saturating_sub(job.deadline_margin.as_secs())),
            passed: no_time,
        }
    }

    /// Whether it has just come (true once).
    fn is_due(&mut self) -> bool {
        let due = !self.passed && self.fallback_at.is_some_and(|at| unix_now() >= at);
        self.passed |= due;
        due
    }
}

/// The poll loop of a submit: poll, collect, report, mind the deadline,
/// wait.
struct Watch<'a> {
    job: &'a SubmitJob,
    reporter: &'a dyn Reporter,
    started: Instant,
    /// Requests (and their tokens) finished before this process started.
    resumed: (u64, u64),
}

impl Watch<'_> {
    async fn run<B: BatchApi>(
        &self,
        d: &mut Driver<'_, B>,
        deadline: &mut Deadline,
        shutdown: &CancellationToken,
        summary: &mut SubmitSummary,
    ) -> Result<(), SubmitError> {
        let job = self.job;
        let mut wait = job.poll_interval;
        let mut last_tick: Option<Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                summary.stopped = Some(SubmitStop::Interrupted);
                return Ok(());
            }
            let (changed, parts) = d.cycle().await?;
            // As often as the reporter wants it, not at every (fast) poll.
            if let Some(every) = self.reporter.interval()
                && last_tick.is_none_or(|t| t.elapsed() >= every)
            {
                let p = progress(d, job, &parts, self.started, self.resumed)?;
                self.reporter.tick(&p);
                last_tick = Some(Instant::now());
            }
            if parts.iter().all(|p| p.state == PartState::Collected) {
                return Ok(());
            }
            if deadline.is_due() {
                let n = d.cancel_live().await?;
                summary.cancelled_for_deadline = n;
                self.reporter.notice(&format!(
                    "the deadline is near: cancelled {n} live part(s); what they did not finish goes online"
                ));
                wait = job.poll_interval;
                continue;
            }
            wait = next_wait(wait, changed, job.poll_interval, job.max_poll_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

/// The wait before the next poll: back to `first` after a change, else
/// half as long again, up to `max`.
fn next_wait(wait: Duration, changed: bool, first: Duration, max: Duration) -> Duration {
    if changed {
        first
    } else {
        wait.mul_f64(1.5).min(max)
    }
}

/// Where the job stands: the journal's final states plus what live
/// batches report.
fn progress<B: BatchApi>(
    d: &Driver<'_, B>,
    job: &SubmitJob,
    parts: &[Part],
    started: Instant,
    resumed: (u64, u64),
) -> Result<Progress, SubmitError> {
    let s = d.journal.counts()?;
    let mut p = Progress {
        total: d.journal.meta()?.total,
        succeeded: s.done,
        failed: s.failed + s.invalid,
        elapsed: started.elapsed(),
        ..Progress::default()
    };
    for part in parts {
        if let (PartState::Submitted, Some(c)) = (part.state, part.counts) {
            p.succeeded += c.completed;
            p.failed += c.failed;
            p.in_flight += c.total.saturating_sub(c.completed + c.failed);
        }
    }
    p.done = p.succeeded + p.failed;
    (p.resumed, p.resumed_tokens) = resumed;
    let batchling_store::Totals {
        usage,
        cost_usd: cost,
    } = d.journal.totals()?;
    p.input_tokens = usage.input;
    p.output_tokens = usage.output;
    p.cost_usd = job.prices.as_ref().map(|_| cost);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_while_nothing_changes() {
        let (first, max) = (Duration::from_secs(2), Duration::from_secs(5));
        let w = next_wait(first, false, first, max);
        assert_eq!(w, Duration::from_secs(3));
        let w = next_wait(w, false, first, max);
        assert_eq!(w, Duration::from_millis(4500));
        assert_eq!(next_wait(w, false, first, max), max);
        assert_eq!(next_wait(max, true, first, max), first);
    }

    #[test]
    fn a_deadline_comes_once() {
        let mut job = SubmitJob {
            deadline: Some(Duration::from_secs(10)),
            deadline_margin: Duration::from_secs(4),
            ..test_job()
        };
        let now = unix_now();
        assert!(!Deadline::new(&job, now, false).is_due());
        let mut d = Deadline::new(&job, now - 6, false);
        assert!(d.is_due() && d.passed);
        assert!(!d.is_due(), "only once");
        job.deadline = None;
        assert!(!Deadline::new(&job, 0, false).is_due());
        assert!(Deadline::new(&job, 0, true).passed);
    }

    pub(super) fn test_job() -> SubmitJob {
        let input = std::path::PathBuf::from("in.jsonl");
        SubmitJob {
            input: input.clone(),
            output: "out".into(),
            errors: "err".into(),
            state: "j".into(),
            order: crate::Order::Input,
            restart: false,
            durable: false,
            limits: PartLimits::default(),
            skip_invalid: false,
            poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(1),
            api_retry: batchling_core::RetryPolicy::default(),
            resubmit: false,
            finish_online: false,
            deadline: None,
            deadline_margin: Duration::ZERO,
            prices: None,
            online: crate::Job::new(crate::Input::File(input), "out".into()),
            server: None,
        }
    }
}
