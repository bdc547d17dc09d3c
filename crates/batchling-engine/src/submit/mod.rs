//! `batchling submit`: a file through a Batch API (OpenAI's Files + Batches
//! API or a compatible one), split, tracked in the journal, resumable.
//!
//! # Flow
//! 1. **plan** (`plan.rs`): validate every line before anything is sent; bad
//!    lines refuse the submit unless `skip_invalid` (then they go to the
//!    error file, as in `batchling run`). Pending requests are grouped by
//!    (endpoint, model) and cut at the request and byte limits; the parts
//!    and their request lists are journaled in one transaction.
//! 2. **upload → create**: each part's file is rebuilt from the input,
//!    checked against its planned hash, uploaded, then its batch created
//!    with `metadata.batchling_part = "<submit id>:<part>"`. The part is
//!    journaled as `creating` *before* the create call; a part found in
//!    `creating` (a crash, or a create whose answer was lost) is first
//!    looked up by that metadata in the batch list, and created only if
//!    absent. So a batch is never created twice for a part. An upload whose
//!    file id was not journaled is simply uploaded again (files are free).
//! 3. **poll** with backoff (`poll_interval` growing ×1.5 to
//!    `max_poll_interval` while nothing changes); counts go to the reporter.
//! 4. **collect** (`collect.rs`) each finished part at once: download its
//!    output and error files, join on `custom_id`, and journal one record per
//!    request together with the part's new state.
//! 5. **deadline**: at `deadline_at - deadline_margin`, live parts are
//!    cancelled, collected once cancelled, and what did not finish is sent
//!    online (as with `finish_online`).
//! 6. **finish online** ([`crate::run`]) or export: failed requests go
//!    through the online runner with the same journal, or the output and
//!    error files are exported from the journal as `batchling run` does.

pub(crate) mod collect;
mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_core::clock::unix_now;
use batchling_core::pricing::Catalog;
use batchling_providers::Provider;
use batchling_providers::openai::batches::{Batch, BatchApiError, BatchClient, BatchStatus};
use batchling_store::{
    Counts, FinalState, InputIdentity, Journal, Part, PartState, Record, StoreError,
    check_destination,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use plan::PartLimits;

use crate::report::{Progress, Reporter};
use crate::{EngineError, Job, Order, RunSummary};

/// The metadata key a batch is created with, naming its part.
pub const PART_METADATA_KEY: &str = "batchling_part";

/// One `batchling submit` job.
#[derive(Debug, Clone)]
pub struct SubmitJob {
    /// The input file (a path: parts are rebuilt from it on resume).
    pub input: PathBuf,
    /// Successful answers.
    pub output: PathBuf,
    /// Failures and bad lines.
    pub errors: PathBuf,
    /// The journal.
    pub state: PathBuf,
    /// Output line order.
    pub order: Order,
    /// Clear the journal first.
    pub restart: bool,
    /// fsync each commit.
    pub durable: bool,
    /// Part limits.
    pub limits: PartLimits,
    /// Submit the valid lines of a file with bad ones (which go to the error
    /// file) instead of refusing it.
    pub skip_invalid: bool,
    /// First wait between polls.
    pub poll_interval: Duration,
    /// Longest wait between polls.
    pub max_poll_interval: Duration,
    /// Retries of Files/Batches API calls on transient errors.
    pub api_retry: RetryPolicy,
    /// Send failed requests of earlier rounds again as new batches.
    pub resubmit: bool,
    /// Send requests that failed in a batch through the online runner.
    pub finish_online: bool,
    /// Have everything done this long after the journal was started.
    pub deadline: Option<Duration>,
    /// How long before the deadline to give up on the Batch API.
    pub deadline_margin: Duration,
    /// Prices (batch prices for batch answers).
    pub prices: Option<Arc<Catalog>>,
    /// Settings of the online runner (for `finish_online` and the
    /// deadline); its input, output, errors and state are set from here.
    pub online: Job,
    /// The server to record in the journal (a base URL, or `mock`): the
    /// batches live there, so `cancel` and a resume must go there too.
    pub server: Option<String>,
}

/// Why a submit stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum SubmitStop {
    /// Ctrl-C / SIGTERM: batches keep running on the server; the same
    /// command reattaches.
    Interrupted,
    /// The online runner stopped.
    Online {
        /// Its reason.
        message: String,
    },
}

/// What a submit did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubmitSummary {
    /// Non-blank input lines.
    pub requests: u64,
    /// Answered (by a batch or online).
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Bad input lines.
    pub invalid: u64,
    /// Not finished (interrupted).
    pub not_done: u64,
    /// Parts (batches) in the journal, all rounds.
    pub parts: u64,
    /// Parts cancelled because of the deadline.
    pub cancelled_for_deadline: u64,
    /// Requests sent through the online runner.
    pub online_requests: u64,
    /// USD: batch answers at batch prices, online ones at online prices.
    pub cost_usd: Option<f64>,
    /// Why it stopped early, if it did.
    pub stopped: Option<SubmitStop>,
    /// Seconds it took.
    pub elapsed_s: f64,
}

/// A submit could not happen or could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The input could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Input {
        /// The input.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input has bad lines and `skip_invalid` is off.
    #[error("{} has {} bad line(s); nothing was uploaded (fix them, or pass --skip-invalid to submit the rest and list them in the error file)", path.display(), problems.len())]
    BadLines {
        /// The input.
        path: PathBuf,
        /// `line N: problem` for each.
        problems: Vec<String>,
    },
    /// A line is larger than a part may be.
    #[error("{}: line {line_no} is {bytes} bytes, more than --max-batch-bytes allows; nothing was uploaded", path.display())]
    LineTooLarge {
        /// The input.
        path: PathBuf,
        /// The line.
        line_no: u64,
        /// Its size in a batch file.
        bytes: u64,
    },
    /// The input no longer rebuilds a planned part.
    #[error("{}: part {part} no longer matches the journal; the input changed under it (rerun with --restart)", path.display())]
    PartChanged {
        /// The input.
        path: PathBuf,
        /// The part.
        part: u64,
    },
    /// The server refused the key.
    #[error(
        "the server refused the API key ({source}); check the key (OPENAI_API_KEY or --api-key-env) and that it may use the Batch API. The journal is kept: rerun the same command"
    )]
    Auth {
        /// What it said.
        source: BatchApiError,
    },
    /// A Files/Batches call failed for good (or kept failing).
    #[error("{source}; the journal is kept: rerun the same command to go on")]
    Api {
        /// The call's error.
        source: BatchApiError,
    },
    /// The journal.
    #[error(transparent)]
    Journal(#[from] StoreError),
    /// The online runner.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<BatchApiError> for SubmitError {
    fn from(source: BatchApiError) -> Self {
        if source.is_auth() {
            SubmitError::Auth { source }
        } else {
            SubmitError::Api { source }
        }
    }
}

/// Call `f` until it succeeds, fails for good, or the policy's attempts
/// are used up; transient errors wait (the server's delay, else backoff).
async fn retrying<T, F, Fut>(
    policy: &RetryPolicy,
    reporter: &dyn Reporter,
    mut f: F,
) -> Result<T, BatchApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BatchApiError>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries + 1 < policy.max_attempts => {
                let wait = policy.backoff(tries, e.retry_after(), rand::random::<f64>());
                reporter.notice(&format!("{e}; retrying in {:.1}s", wait.as_secs_f64()));
                tokio::time::sleep(wait).await;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The journal's submit id: random, made once, so metadata and file names
/// of two jobs never collide.
fn submit_id(journal: &Journal) -> Result<String, StoreError> {
    if let Some(id) = journal.submit_value("submit_id")? {
        return Ok(id);
    }
    let id = format!("{:016x}", rand::random::<u64>());
    journal.set_submit_value("submit_id", &id)?;
    Ok(id)
}

fn part_key(submit_id: &str, part: u64) -> String {
    format!("{submit_id}:{part}")
}

fn counts_of(b: &Batch) -> Counts {
    let c = b.request_counts.unwrap_or_default();
    Counts {
        total: c.total,
        completed: c.completed,
        failed: c.failed,
    }
}

/// What drives one submit: the client, the journal and the settings.
struct Driver<'a> {
    job: &'a SubmitJob,
    client: &'a BatchClient,
    journal: Journal,
    reporter: &'a dyn Reporter,
    submit_id: String,
    started_unix: u64,
    /// Requests (and their tokens) already finished when this process
    /// started: progress rates leave them out.
    resumed: (u64, u64),
}

impl Driver<'_> {
    /// Upload and create every part that needs it, one part after the
    /// other (each batch starts as early as it can; one part's file is in
    /// memory at a time).
    async fn launch(&mut self, shutdown: &CancellationToken) -> Result<(), SubmitError> {
        for p in self.journal.parts()? {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match p.state {
                PartState::Planned => {
                    let file_id = self.upload(&p).await?;
                    self.journal.part_creating(p.part)?;
                    self.create(&p, &file_id, false).await?;
                }
                PartState::Uploaded => {
                    self.journal.part_creating(p.part)?;
                    let file_id = p.file_id.clone().unwrap_or_default();
                    self.create(&p, &file_id, false).await?;
                }
                PartState::Creating => {
                    let file_id = p.file_id.clone().unwrap_or_default();
                    self.create(&p, &file_id, true).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Rebuild a part's file from the input, check it against the plan,
    /// upload it and journal its id.
    async fn upload(&mut self, p: &Part) -> Result<String, SubmitError> {
        let input = &self.job.input;
        let reqs = self.journal.part_requests(p.part)?;
        let content = plan::part_contents(input, &[&reqs])
            .map_err(|source| SubmitError::Input {
                path: input.clone(),
                source,
            })?
            .pop()
            .unwrap_or_default();
        if plan::content_hash(&content) != p.content_hash {
            return Err(SubmitError::PartChanged {
                path: input.clone(),
                part: p.part,
            });
        }
        let name = format!("batchling-{}-part-{}.jsonl", self.submit_id, p.part);
        let content = bytes::Bytes::from(content);
        let file = retrying(&self.job.api_retry, self.reporter, || {
            self.client.upload_file(&name, content.clone())
        })
        .await?;
        self.journal.part_uploaded(p.part, &file.id)?;
        self.reporter.notice(&format!(
            "part {}: uploaded {} requests ({} bytes) as {}",
            p.part, p.requests, p.bytes, file.id
        ));
        Ok(file.id)
    }

    /// Create the part's batch. When the part may already have one (it was
    /// found in `creating`, or an attempt failed: a create whose answer was
    /// lost may have worked), look it up by its metadata first.
    async fn create(&mut self, p: &Part, file_id: &str, resumed: bool) -> Result<(), SubmitError> {
        let key = part_key(&self.submit_id, p.part);
        let meta = HashMap::from([(PART_METADATA_KEY.to_owned(), key.clone())]);
        let since = self.started_unix;
        let client = self.client;
        let look_first = std::cell::Cell::new(resumed);
        let batch = retrying(&self.job.api_retry, self.reporter, || {
            let (key, meta) = (key.clone(), meta.clone());
            let look = look_first.replace(true);
            async move {
                if look && let Some(b) = client.find_batch(PART_METADATA_KEY, &key, since).await? {
                    return Ok((b, true));
                }
                client
                    .create_batch(file_id, &p.endpoint, &meta)
                    .await
                    .map(|b| (b, false))
            }
        })
        .await?;
        let (batch, found) = batch;
        self.journal
            .part_submitted(p.part, &batch.id, batch.status.as_str())?;
        self.reporter.notice(&format!(
            "part {}: {} batch {} ({} requests, {})",
            p.part,
            if found {
                "found its already created"
            } else {
                "created"
            },
            batch.id,
            p.requests,
            p.model.as_deref().unwrap_or("no model")
        ));
        Ok(())
    }

    /// The part's batch as the API sees it now.
    async fn retrieve(&self, p: &Part) -> Result<Batch, BatchApiError> {
        let id = p.batch_id.as_deref().unwrap_or_default();
        let client = self.client;
        retrying(&self.job.api_retry, self.reporter, || {
            client.retrieve_batch(id)
        })
        .await
    }

    /// Poll every submitted part once; returns whether anything changed.
    async fn poll(&mut self) -> Result<bool, SubmitError> {
        let mut changed = false;
        for p in self.journal.parts()? {
            if p.state != PartState::Submitted {
                continue;
            }
            let b = self.retrieve(&p).await?;
            let counts = counts_of(&b);
            if b.status.is_terminal() {
                let errors = (!b.errors().is_empty())
                    .then(|| serde_json::to_string(&error_list(&b)).unwrap_or_default());
                self.journal.part_finished(
                    p.part,
                    b.status.as_str(),
                    counts,
                    b.output_file_id.as_deref(),
                    b.error_file_id.as_deref(),
                    errors.as_deref(),
                )?;
                changed = true;
            } else if p.batch_status.as_deref() != Some(b.status.as_str())
                || p.counts != Some(counts)
            {
                self.journal
                    .part_progress(p.part, b.status.as_str(), counts)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Download and journal the results of every finished part.
    async fn collect_finished(&mut self) -> Result<(), SubmitError> {
        for p in self.journal.parts()? {
            if p.state != PartState::Finished {
                continue;
            }
            let batch = self.retrieve(&p).await?;
            let client = self.client;
            let mut files = Vec::new();
            for fid in [&p.output_file_id, &p.error_file_id].into_iter().flatten() {
                let data = retrying(&self.job.api_retry, self.reporter, || {
                    client.file_content(fid)
                })
                .await?;
                files.push(data);
            }
            let reqs = self.journal.part_requests(p.part)?;
            let slices: Vec<&[u8]> = files.iter().map(|b| &b[..]).collect();
            if batch.status == BatchStatus::Failed {
                let (summary, _) = collect::failure_report(p.part, &batch, &reqs);
                self.reporter.notice(&summary);
            }
            let c = collect::collect(
                p.part,
                &batch,
                &reqs,
                &slices,
                p.model.as_deref(),
                self.job.prices.as_deref(),
            );
            if c.ignored > 0 {
                self.reporter.notice(&format!(
                    "part {}: {} result line(s) named no request of the part (or one already answered); ignored",
                    p.part, c.ignored
                ));
            }
            let done = c
                .records
                .iter()
                .filter(|r| r.state == FinalState::Done)
                .count();
            self.journal
                .part_collected(p.part, &c.records, c.cost_usd)?;
            self.reporter.notice(&format!(
                "part {}: batch {} {}: {done} answered, {} failed",
                p.part,
                batch.id,
                batch.status.as_str(),
                c.records.len() - done
            ));
        }
        Ok(())
    }

    /// Ask the server to cancel every live part.
    async fn cancel_live(&mut self) -> Result<u64, SubmitError> {
        let mut n = 0;
        for p in self.journal.parts()? {
            if p.state != PartState::Submitted
                || matches!(p.batch_status.as_deref(), Some("cancelling"))
            {
                continue;
            }
            let id = p.batch_id.clone().unwrap_or_default();
            let client = self.client;
            match retrying(&self.job.api_retry, self.reporter, || {
                client.cancel_batch(&id)
            })
            .await
            {
                Ok(b) => {
                    self.journal
                        .part_progress(p.part, b.status.as_str(), counts_of(&b))?;
                    n += 1;
                }
                // Finished meanwhile: the next poll collects it.
                Err(e) if e.status() == Some(400) || e.status() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    fn progress(&self, started: tokio::time::Instant) -> Result<Progress, SubmitError> {
        let s = self.journal.counts()?;
        let mut p = Progress {
            total: self.journal.meta()?.total,
            succeeded: s.done,
            failed: s.failed + s.invalid,
            elapsed: started.elapsed(),
            ..Progress::default()
        };
        for part in self.journal.parts()? {
            if let (PartState::Submitted, Some(c)) = (part.state, part.counts) {
                p.succeeded += c.completed;
                p.failed += c.failed;
                p.in_flight += c.total.saturating_sub(c.completed + c.failed);
            }
        }
        p.done = p.succeeded + p.failed;
        (p.resumed, p.resumed_tokens) = self.resumed;
        let batchling_store::Totals {
            usage: batchling_core::Usage { input, output, .. },
            cost_usd: cost,
        } = self.journal.totals()?;
        p.input_tokens = input;
        p.output_tokens = output;
        p.cost_usd = self.job.prices.as_ref().map(|_| cost);
        Ok(p)
    }
}

fn error_list(b: &Batch) -> serde_json::Value {
    serde_json::Value::Array(
        b.errors()
            .iter()
            .map(|e| {
                serde_json::json!({"code": e.code, "message": e.message, "param": e.param, "line": e.line})
            })
            .collect(),
    )
}

fn settings_json(job: &SubmitJob) -> String {
    serde_json::json!({
        "command": "submit",
        "output": job.output,
        "errors": job.errors,
        "max_requests_per_batch": job.limits.max_requests,
        "max_batch_bytes": job.limits.max_bytes,
        "deadline_s": job.deadline.map(|d| d.as_secs()),
    })
    .to_string()
}

/// Open the journal and plan what is pending into parts. Returns the
/// journal, its start time, and whether the deadline leaves no time for a
/// batch at all (then nothing new is planned: it all goes online).
fn prepare(job: &SubmitJob, reporter: &dyn Reporter) -> Result<(Journal, u64, bool), SubmitError> {
    let input_err = |source| SubmitError::Input {
        path: job.input.clone(),
        source,
    };
    std::fs::File::open(&job.input).map_err(input_err)?;
    let identity = InputIdentity::of_file(&job.input).map_err(input_err)?;
    // Checked before anything is uploaded, not when the results are in.
    check_destination(&job.output)?;
    check_destination(&job.errors)?;
    let mut journal = Journal::open(&job.state, job.durable)?;
    journal.begin(
        &job.input.display().to_string(),
        Some(&identity),
        &settings_json(job),
        unix_now(),
        job.restart,
    )?;
    // Kept apart from the `settings` meta, which an online run overwrites:
    // `batchling cancel` finds the files here.
    journal.set_submit_value("submit", &settings_json(job))?;
    if let Some(server) = &job.server {
        journal.set_server(server)?;
    }
    let started: u64 = journal.meta()?.created_at.unwrap_or_else(unix_now);
    let finished = journal.finished_seqs()?;
    let live = plan::seq_set(journal.seqs_in_live_parts()?);
    let ever = plan::seq_set(journal.seqs_in_any_part()?);
    let retry = if job.resubmit {
        plan::seq_set(journal.failed_seqs()?)
    } else {
        Default::default()
    };
    let is_finished = |seq: u64| finished.contains(seq);
    let round = journal
        .parts()?
        .iter()
        .map(|p| p.round + 1)
        .max()
        .unwrap_or(0);
    let no_time = job.deadline.is_some_and(|d| {
        started + d.as_secs().saturating_sub(job.deadline_margin.as_secs()) <= unix_now()
    });
    // New work is what no batch ever had. A request a batch had that has no
    // final state (its failure was forgotten by an online run that was then
    // interrupted) goes to a batch again only with --resubmit.
    let wanted = |seq: u64| {
        let again = job.resubmit && ever.contains(&seq) && !is_finished(seq);
        !no_time
            && !live.contains(&seq)
            && ((!is_finished(seq) && !ever.contains(&seq)) || retry.contains(&seq) || again)
    };
    let (scan, mut plans, too_large) =
        plan::plan(&job.input, job.limits, round, wanted).map_err(input_err)?;
    journal.set_total(scan.total)?;
    let new_problems: Vec<_> = scan
        .problems
        .iter()
        .filter(|(seq, _)| !is_finished(*seq))
        .collect();
    if !new_problems.is_empty() && !job.skip_invalid {
        return Err(SubmitError::BadLines {
            path: job.input.clone(),
            problems: new_problems.iter().map(|(_, e)| e.to_string()).collect(),
        });
    }
    if let Some(t) = too_large.first() {
        return Err(SubmitError::LineTooLarge {
            path: job.input.clone(),
            line_no: t.line_no,
            bytes: t.bytes,
        });
    }
    if !new_problems.is_empty() {
        let records: Vec<Record> = new_problems
            .iter()
            .map(|(seq, e)| Record::invalid(*seq, e, &format!("batch_req_invalid_{seq}")))
            .collect();
        journal.record_invalid(&records)?;
        reporter.notice(&format!(
            "{} bad line(s) go to the error file (--skip-invalid)",
            records.len()
        ));
    }
    if !plans.is_empty() {
        plan::hash_plans(&job.input, &mut plans).map_err(input_err)?;
        let resubmitting = plans
            .iter()
            .flat_map(|p| &p.requests)
            .filter(|r| retry.contains(&r.seq))
            .count();
        let numbers = journal.add_parts(&plans, job.resubmit)?;
        reporter.notice(&format!(
            "planned {} part(s) ({}–{}) for {} request(s){}",
            numbers.len(),
            numbers.first().unwrap_or(&0),
            numbers.last().unwrap_or(&0),
            plans.iter().map(|p| p.requests.len()).sum::<usize>(),
            if resubmitting > 0 {
                format!(", {resubmitting} of them failed before (--resubmit)")
            } else {
                String::new()
            }
        ));
    }
    Ok((journal, started, no_time))
}

/// Run a submit job to the end: every part collected and the output files
/// written, or stopped (interrupted) with everything journaled.
pub async fn submit<P: Provider>(
    job: SubmitJob,
    client: BatchClient,
    online: Arc<P>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<SubmitSummary, SubmitError> {
    let started = tokio::time::Instant::now();
    let (journal, started_unix, no_time) = prepare(&job, reporter.as_ref())?;
    let submit_id = submit_id(&journal)?;
    let mut d = Driver {
        job: &job,
        client: &client,
        journal,
        reporter: reporter.as_ref(),
        submit_id,
        started_unix,
        resumed: (0, 0),
    };
    d.resumed = {
        let p = d.progress(started)?;
        (p.done, p.input_tokens + p.output_tokens)
    };
    let deadline_at = job.deadline.map(|dl| started_unix + dl.as_secs());
    let fallback_at = deadline_at.map(|at| at.saturating_sub(job.deadline_margin.as_secs()));
    let mut summary = SubmitSummary::default();
    let mut fallback = no_time;
    if no_time {
        reporter.notice(
            "the deadline leaves no time for a batch (--deadline-margin is at least what is left): \
             sending what is pending online",
        );
    }

    d.launch(&shutdown).await?;
    let mut wait = job.poll_interval;
    let mut last_tick: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            summary.stopped = Some(SubmitStop::Interrupted);
            break;
        }
        let changed = d.poll().await?;
        d.collect_finished().await?;
        // As often as the reporter wants it, not at every (fast) poll.
        if let Some(every) = reporter.interval()
            && last_tick.is_none_or(|t| t.elapsed() >= every)
        {
            reporter.tick(&d.progress(started)?);
            last_tick = Some(tokio::time::Instant::now());
        }
        let parts = d.journal.parts()?;
        if parts.iter().all(|p| p.state == PartState::Collected) {
            break;
        }
        if let Some(at) = fallback_at
            && !fallback
            && unix_now() >= at
        {
            fallback = true;
            let n = d.cancel_live().await?;
            summary.cancelled_for_deadline = n;
            reporter.notice(&format!(
                "the deadline is near: cancelled {n} live part(s); what they did not finish goes online"
            ));
            wait = job.poll_interval;
            continue;
        }
        wait = if changed {
            job.poll_interval
        } else {
            wait.mul_f64(1.5).min(job.max_poll_interval)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    let journal = d.journal;
    let counts = journal.counts()?;
    let pending = journal.meta()?.total.map_or(0, |t| {
        t.saturating_sub(counts.done + counts.failed + counts.invalid)
    });
    let go_online = summary.stopped.is_none()
        && (job.finish_online || fallback)
        && (counts.failed > 0 || pending > 0);
    if go_online {
        let failed = counts.failed + pending;
        drop(journal);
        reporter.notice(&format!(
            "sending {failed} request(s) through the online API (failed in a batch, or left for online)"
        ));
        let mut online_job = job.online.clone();
        online_job.input = crate::Input::File(job.input.clone());
        online_job.output = job.output.clone();
        online_job.errors = job.errors.clone();
        online_job.state = job.state.clone();
        online_job.order = job.order;
        online_job.restart = false;
        online_job.retry_failed = true;
        online_job.durable = job.durable;
        online_job.prices = job.prices.clone();
        let run: RunSummary =
            crate::run(online_job, online, shutdown.clone(), reporter.clone()).await?;
        summary.online_requests = failed;
        if let Some(cause) = run.stopped {
            summary.stopped = Some(match cause {
                crate::StopCause::Interrupted => SubmitStop::Interrupted,
                other => SubmitStop::Online {
                    message: other.to_string(),
                },
            });
        }
    } else {
        journal.export(&job.output, &job.errors, job.order)?;
        drop(journal);
    }
    let journal = Journal::open_read_only(&job.state)?;
    let status = journal.status()?;
    summary.requests = status.meta.total.unwrap_or(0);
    summary.succeeded = status.counts.done;
    summary.failed = status.counts.failed;
    summary.invalid = status.counts.invalid;
    summary.not_done = status.pending.unwrap_or(0);
    summary.parts = journal.parts()?.len() as u64;
    summary.cost_usd = job.prices.as_ref().map(|_| status.cost_usd);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What `cancel` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CancelSummary {
    /// Parts whose batch was asked to cancel.
    pub cancelled: u64,
    /// Requests answered (kept).
    pub succeeded: u64,
    /// Requests failed, cancelled ones included.
    pub failed: u64,
}

/// What `cancel` works on: a submit journal and the files its submit used.
#[derive(Debug, Clone)]
pub struct CancelJob {
    /// The journal.
    pub state: PathBuf,
    /// The submit's input.
    pub input: PathBuf,
    /// Its output file.
    pub output: PathBuf,
    /// Its error file.
    pub errors: PathBuf,
    /// Wait between polls while batches are cancelling.
    pub poll_interval: Duration,
    /// Prices, for the cost of what the batches finished.
    pub prices: Option<Arc<Catalog>>,
}

/// Cancel every live part of a submit journal, wait until each is
/// cancelled, collect what they finished and write the output files.
pub async fn cancel(
    cancel: CancelJob,
    client: BatchClient,
    reporter: Arc<dyn Reporter>,
) -> Result<CancelSummary, SubmitError> {
    let CancelJob {
        state,
        input,
        output,
        errors,
        poll_interval,
        prices,
    } = cancel;
    let (state, input, output, errors) = (&state, &input, &output, &errors);
    check_destination(output)?;
    check_destination(errors)?;
    let journal = Journal::open(state, true)?;
    let submit_id = submit_id(&journal)?;
    let started_unix = journal.meta()?.created_at.unwrap_or_else(unix_now);
    let job = SubmitJob {
        input: input.to_owned(),
        output: output.to_owned(),
        errors: errors.to_owned(),
        state: state.to_owned(),
        order: Order::Input,
        restart: false,
        durable: true,
        limits: PartLimits::default(),
        skip_invalid: false,
        poll_interval,
        max_poll_interval: poll_interval.max(Duration::from_secs(10)),
        api_retry: RetryPolicy::default(),
        resubmit: false,
        finish_online: false,
        deadline: None,
        deadline_margin: Duration::ZERO,
        prices,
        online: Job::new(crate::Input::File(input.to_owned()), output.to_owned()),
        server: None,
    };
    let mut d = Driver {
        job: &job,
        client: &client,
        journal,
        reporter: reporter.as_ref(),
        submit_id,
        started_unix,
        resumed: (0, 0),
    };
    // A part caught between upload and create: find its batch (or create
    // nothing), so no batch escapes the cancel.
    for p in d.journal.parts()? {
        if p.state == PartState::Creating {
            let key = part_key(&d.submit_id, p.part);
            if let Some(b) = client
                .find_batch(PART_METADATA_KEY, &key, d.started_unix)
                .await?
            {
                d.journal.part_submitted(p.part, &b.id, b.status.as_str())?;
            }
        }
    }
    let cancelled = d.cancel_live().await?;
    let mut wait = poll_interval;
    loop {
        d.poll().await?;
        d.collect_finished().await?;
        let live = d
            .journal
            .parts()?
            .iter()
            .any(|p| matches!(p.state, PartState::Submitted | PartState::Finished));
        if !live {
            break;
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(job.max_poll_interval);
    }
    d.journal.export(output, errors, Order::Input)?;
    let c = d.journal.counts()?;
    Ok(CancelSummary {
        cancelled,
        succeeded: c.done,
        failed: c.failed + c.invalid,
    })
}
