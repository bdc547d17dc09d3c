//! `batchling cancel`: cancel every live part of a submit journal, wait
//! until each is cancelled, collect what they finished, write the output.

use std::sync::Arc;
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_providers::BatchApi;
use batchling_store::{Journal, PartState, check_destination};

use super::apis::Apis;
use super::driver::Driver;
use super::job::{CancelJob, CancelSummary, SubmitError};
use crate::Order;
use crate::report::Reporter;

/// The longest wait between polls of cancelling batches.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Cancel every live part of a submit journal, wait until each is
/// cancelled, collect what they finished and write the output files.
pub async fn cancel<B: BatchApi>(
    job: CancelJob,
    api: B,
    reporter: Arc<dyn Reporter>,
) -> Result<CancelSummary, SubmitError> {
    cancel_with(job, Apis::one(api), reporter).await
}

/// [`cancel`] on several Batch APIs: each part's on its target's.
pub async fn cancel_with<B: BatchApi>(
    job: CancelJob,
    apis: Apis<B>,
    reporter: Arc<dyn Reporter>,
) -> Result<CancelSummary, SubmitError> {
    check_destination(&job.output)?;
    check_destination(&job.errors)?;
    let journal = Journal::open(&job.state, true)?;
    let retry = RetryPolicy::default();
    let mut d = Driver::new(
        &apis,
        &job.input,
        journal,
        reporter.as_ref(),
        retry,
        job.prices.clone(),
    )?;
    d.find_creating().await?;
    let cancelled = d.cancel_live().await?;
    let max_wait = job.poll_interval.max(MAX_POLL_INTERVAL);
    let mut wait = job.poll_interval;
    loop {
        let (_, parts) = d.cycle().await?;
        let live = parts
            .iter()
            .any(|p| matches!(p.state, PartState::Submitted | PartState::Finished));
        if !live {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(max_wait);
    }
    d.journal.export(&job.output, &job.errors, Order::Input)?;
    let c = d.journal.counts()?;
    Ok(CancelSummary {
        cancelled,
        succeeded: c.done,
        failed: c.failed + c.invalid,
    })
}
