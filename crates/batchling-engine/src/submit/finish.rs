//! The last steps of a submit: send what batches left through the online
//! runner, or export the journal; then sum it up.

use std::sync::Arc;

use batchling_providers::Provider;
use batchling_store::Journal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::job::{SubmitError, SubmitJob, SubmitStop, SubmitSummary};
use crate::report::Reporter;
use crate::{RunSummary, StopCause};

/// Write the output files: through the online runner when requests failed
/// in a batch or were left for online (`finish_online`, or the deadline
/// came), else by exporting the journal. With `retryable_only` (a routes
/// config's submit), a request its batch refused for good (a 4xx other
/// than 408, 409, 429) keeps its error line: only the others re-enter
/// their chain online.
pub(crate) async fn finish<P: Provider>(
    journal: Journal,
    job: &SubmitJob,
    (online, retryable_only): (crate::Routes<P>, bool),
    shutdown: &CancellationToken,
    reporter: Arc<dyn Reporter>,
    deadline_passed: bool,
    summary: &mut SubmitSummary,
) -> Result<(), SubmitError> {
    let counts = journal.counts()?;
    let pending = journal.meta()?.total.map_or(0, |t| {
        t.saturating_sub(counts.done + counts.failed + counts.invalid)
    });
    let go_online = summary.stopped.is_none()
        && (job.finish_online || deadline_passed)
        && (counts.failed > 0 || pending > 0);
    if !go_online {
        journal.export(&job.output, &job.errors, job.order)?;
        return Ok(());
    }
    let failed = if retryable_only {
        journal.forget_retryable_failures()?
    } else {
        counts.failed
    };
    let left = failed + pending;
    drop(journal);
    reporter.notice(&format!(
        "sending {left} request(s) through the online API (failed in a batch, or left for online)"
    ));
    let mut online_job = online_job(job);
    // Already forgotten: what is still failed stays so.
    online_job.retry_failed = !retryable_only;
    let run = crate::run(online_job, online, shutdown.clone(), reporter).await?;
    summary.online_requests = left;
    summary.stopped = stop_of(run).or(summary.stopped.take());
    Ok(())
}

/// The online runner's job: the submit's files and journal, failed
/// requests sent again.
fn online_job(job: &SubmitJob) -> crate::Job {
    let mut online = job.online.clone();
    online.input = crate::Input::File(job.input.clone());
    online.output = job.output.clone();
    online.errors = job.errors.clone();
    online.state = job.state.clone();
    online.order = job.order;
    online.restart = false;
    online.retry_failed = true;
    online.durable = job.durable;
    online.prices = job.prices.clone();
    online
}

fn stop_of(run: RunSummary) -> Option<SubmitStop> {
    Some(match run.stopped? {
        StopCause::Interrupted => SubmitStop::Interrupted,
        other => SubmitStop::Online {
            message: other.to_string(),
        },
    })
}

/// The summary, from the journal as written (read-only).
pub(crate) fn summarize(
    job: &SubmitJob,
    started: Instant,
    mut summary: SubmitSummary,
) -> Result<SubmitSummary, SubmitError> {
    let journal = Journal::open_read_only(&job.state)?;
    let status = journal.status()?;
    summary.requests = status.meta.total.unwrap_or(0);
    summary.succeeded = status.counts.done;
    summary.failed = status.counts.failed;
    summary.invalid = status.counts.invalid;
    summary.not_done = status.pending.unwrap_or(0);
    let parts = journal.parts()?;
    summary.parts = parts.len() as u64;
    for p in &parts {
        let n = journal.submit_value(&super::driver::warnings_key(p.part))?;
        summary.warnings += n.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    summary.cost_usd = job.prices.as_ref().map(|_| status.cost_usd);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}
