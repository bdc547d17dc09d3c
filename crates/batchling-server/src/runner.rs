//! Running batches: validate the input file, run it through the engine (the
//! same `batchling_engine::run` as `batchling run`, with the upstream's
//! shared limits), then write the result files and record the end.
//!
//! Each batch is one task that reads the batch's status from the database
//! and acts on it, so the same code resumes a batch after a restart:
//! `in_progress` resumes the engine from the batch's journal (done requests
//! are never sent again), `finalizing` and `cancelling` redo their (idempotent)
//! end step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchling_core::Usage;
use batchling_core::batch::BatchStatus;
use batchling_core::pricing::Catalog;
use batchling_engine::report::{Notice, Progress, Reporter};
use batchling_engine::{EngineError, Input, Job, Order, RunSummary, SharedLimits, StopCause};
use batchling_store::{Journal, StoreError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::new_file_id;
use crate::files::content_path;
use crate::meta::{BatchRow, FileRow, MetaDb, MetaError, Outcome};
use crate::unix_now;
use crate::upstream::{ROUTES_NAME, Routed, UpstreamClient, UpstreamMetrics, kind_speaks, route};

/// Most validation errors listed in a failed batch's `errors.data`.
const MAX_LISTED_ERRORS: usize = 1000;

/// After the upstream stopped a run (unreachable, refused our key), wait
/// this long before trying again, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Why driving a batch stopped short. The batch keeps its status, so a
/// restart of the server resumes it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerError {
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The batch's row is gone.
    #[error("the batch is gone")]
    Gone,
    /// The engine could not close the batch's unfinished requests.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The batch's journal could not be read.
    #[error(transparent)]
    Journal(#[from] StoreError),
    /// A file or directory of the batch could not be made or moved.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb: "create", "move into place".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// A blocking step panicked or was cancelled.
    #[error("a blocking step failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl RunnerError {
    fn io<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> RunnerError + 'a {
        move |source| RunnerError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// What a running batch shows before its end is recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveCounts {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Tokens so far (cached input is not counted while running).
    pub(crate) usage: Usage,
}

#[derive(Debug, Default)]
struct Live {
    cancel: CancellationToken,
    completed: AtomicU64,
    failed: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// What the runner is set up with (from [`crate::ServeConfig`]).
#[derive(Debug)]
pub(crate) struct RunnerConfig {
    /// The data directory: input and result files, batch journals.
    pub(crate) data_dir: PathBuf,
    /// The upstreams batches run on.
    pub(crate) upstreams: Vec<UpstreamClient>,
    /// Or the routes of a config they all run on.
    pub(crate) routed: Option<Routed>,
    /// How long a batch has before it expires.
    pub(crate) completion_window: Duration,
    /// Attempts per request, the first included.
    pub(crate) max_attempts: u32,
    /// Batches running at once; later ones wait their turn.
    pub(crate) max_running: usize,
    /// Keep an ended batch's journal.
    pub(crate) keep_journals: bool,
}

/// The batch runner.
#[derive(Debug)]
pub(crate) struct Runner {
    meta: Arc<MetaDb>,
    data_dir: PathBuf,
    upstreams: Vec<UpstreamClient>,
    routed: Option<Routed>,
    completion_window: Duration,
    max_attempts: u32,
    prices: Arc<Catalog>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Batches running at once.
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    keep_journals: bool,
}

/// Why a batch's engine run ended.
enum Ended {
    /// Every request is finished.
    Done,
    /// The server is shutting down: leave the batch as it is.
    Shutdown,
    /// The client cancelled it.
    Cancelled,
    /// Its completion window passed.
    Expired,
    /// The upstream or the journal stopped it; try again later.
    Stopped(String),
}

/// What validation found.
struct Checked {
    total: u64,
    model: Option<String>,
    upstream: String,
}

impl Runner {
    /// A runner on `meta`; `shutdown` stops every batch (they stay
    /// resumable).
    pub(crate) fn new(
        meta: Arc<MetaDb>,
        shutdown: CancellationToken,
        config: RunnerConfig,
    ) -> Self {
        Runner {
            meta,
            data_dir: config.data_dir,
            upstreams: config.upstreams,
            routed: config.routed,
            completion_window: config.completion_window,
            max_attempts: config.max_attempts,
            prices: Arc::new(Catalog::builtin()),
            live: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(config.max_running.max(1))),
            shutdown,
            tasks: TaskTracker::new(),
            keep_journals: config.keep_journals,
        }
    }

    pub(crate) fn upstreams(&self) -> &[UpstreamClient] {
        &self.upstreams
    }

    /// The routes of a config, when batches run on them.
    pub(crate) fn routed(&self) -> Option<&Routed> {
        self.routed.as_ref()
    }

    pub(crate) fn completion_window(&self) -> Duration {
        self.completion_window
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live counts of a batch whose engine run is going on.
    pub(crate) fn live(&self, id: &str) -> Option<LiveCounts> {
        let l = self.live_map().get(id).cloned()?;
        Some(LiveCounts {
            completed: l.completed.load(Relaxed),
            failed: l.failed.load(Relaxed),
            usage: Usage {
                input: l.input_tokens.load(Relaxed),
                cached_input: 0,
                output: l.output_tokens.load(Relaxed),
                ..Usage::default()
            },
        })
    }

    /// Start driving a batch (new, or resumed at start-up).
    pub(crate) fn start(self: &Arc<Self>, id: &str) {
        let live = Arc::new(Live::default());
        self.live_map().insert(id.to_owned(), live.clone());
        let (me, id) = (self.clone(), id.to_owned());
        self.tasks.spawn(async move {
            if let Err(e) = me.drive(&id, &live).await {
                // The batch keeps its status; a restart resumes it.
                tracing::error!(batch = %id, "batch stopped: {e}");
            }
            me.live_map().remove(&id);
        });
    }

    /// A cancel was recorded: stop the batch's run.
    pub(crate) fn cancel(&self, id: &str) {
        if let Some(l) = self.live_map().get(id) {
            l.cancel.cancel();
        }
    }

    /// A file was deleted: remove its content unless a batch still reads it.
    pub(crate) fn release_file(&self, id: &str) {
        match self.meta.file_in_use(id) {
            Ok(false) => {
                let _ = std::fs::remove_file(content_path(&self.data_dir, id));
            }
            Ok(true) => {} // removed when that batch ends
            Err(e) => tracing::warn!(file = %id, "cannot check file use: {e}"),
        }
    }

    /// Stop every batch (they stay resumable) and wait for them.
    pub(crate) async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn batch_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("batches").join(id)
    }

    fn job_for(&self, b: &BatchRow) -> Job {
        let dir = self.batch_dir(&b.id);
        let mut job = Job::new(
            Input::File(content_path(&self.data_dir, &b.input_file_id)),
            dir.join("output.jsonl"),
        );
        job.errors = dir.join("errors.jsonl");
        job.state = dir.join("journal");
        job.order = Order::Input;
        job.retry.max_attempts = self.max_attempts;
        job.prices = Some(self.prices.clone());
        job.grace = Duration::from_secs(30);
        job
    }

    async fn drive(self: &Arc<Self>, id: &str, live: &Arc<Live>) -> Result<(), RunnerError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let b = self.meta.batch_by_id(id)?.ok_or(RunnerError::Gone)?;
            let expired = unix_now() >= b.expires_at;
            match b.status {
                BatchStatus::Validating if expired => self.end(&b, BatchStatus::Expired).await?,
                BatchStatus::Validating => self.validate(&b).await?,
                BatchStatus::InProgress if expired => self.end(&b, BatchStatus::Expired).await?,
                BatchStatus::InProgress => match self.run(&b, live).await {
                    Ended::Done => {
                        self.meta.transition(
                            id,
                            &[BatchStatus::InProgress],
                            BatchStatus::Finalizing,
                            unix_now(),
                        )?;
                    }
                    Ended::Shutdown => return Ok(()),
                    // The status already says cancelling; the next turn ends it.
                    Ended::Cancelled => {}
                    Ended::Expired => self.end(&b, BatchStatus::Expired).await?,
                    Ended::Stopped(why) => {
                        tracing::warn!(
                            batch = %id,
                            "run stopped ({why}); trying again in {}s",
                            backoff.as_secs()
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.shutdown.cancelled() => return Ok(()),
                            _ = live.cancel.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                BatchStatus::Finalizing => self.end(&b, BatchStatus::Completed).await?,
                BatchStatus::Cancelling => self.end(&b, BatchStatus::Cancelled).await?,
                _ => return Ok(()),
            }
        }
    }

    /// `validating` → `in_progress` or `failed`.
    async fn validate(&self, b: &BatchRow) -> Result<(), RunnerError> {
        let path = content_path(&self.data_dir, &b.input_file_id);
        let endpoint = b.endpoint.clone();
        let serving = match &self.routed {
            Some(r) => Serving::Routes(r.config.clone()),
            None => Serving::Upstreams(
                (self.upstreams.iter())
                    .map(|u| (u.config.name.clone(), u.config.clone()))
                    .collect(),
            ),
        };
        let checked =
            tokio::task::spawn_blocking(move || check_input(&path, &endpoint, &serving)).await?;
        let now = unix_now();
        match checked {
            Ok(c) => {
                self.meta
                    .start(&b.id, c.total, c.model.as_deref(), &c.upstream, now)?;
                tracing::info!(batch = %b.id, total = c.total, upstream = %c.upstream, "batch in progress");
            }
            Err((errors, total)) => {
                let n = errors.len();
                self.meta
                    .fail(&b.id, &Value::Array(errors).to_string(), total, now)?;
                tracing::info!(batch = %b.id, errors = n, "batch failed validation");
            }
        }
        Ok(())
    }

    /// One engine run of an `in_progress` batch, until it finishes or
    /// something stops it.
    async fn run(&self, b: &BatchRow, live: &Arc<Live>) -> Ended {
        if let Some(r) = &self.routed {
            let routes = r.routes.clone();
            return self.run_on(b, live, routes, &r.limits, &r.metrics).await;
        }
        let upstream = b
            .upstream
            .as_deref()
            .and_then(|name| self.upstreams.iter().find(|u| u.config.name == name))
            .or_else(|| route(&self.upstreams, b.model.as_deref()));
        let Some(upstream) = upstream else {
            return Ended::Stopped(format!(
                "no configured upstream serves model {:?} (upstream {:?} is gone)",
                b.model, b.upstream
            ));
        };
        let routes = Arc::new(batchling_engine::Routes::single(upstream.provider.clone()));
        self.run_on(b, live, routes, &upstream.limits, &upstream.metrics)
            .await
    }

    /// One engine run of a batch on `routes` and the `limits` they share
    /// with other batches, counting into `metrics`.
    async fn run_on(
        &self,
        b: &BatchRow,
        live: &Arc<Live>,
        routes: Arc<batchling_engine::Routes<crate::upstream::Metered>>,
        limits: &SharedLimits,
        metrics: &Arc<UpstreamMetrics>,
    ) -> Ended {
        let expiry = tokio::time::Instant::now()
            + Duration::from_secs(b.expires_at.saturating_sub(unix_now()));
        // Wait for a running slot (cancel and expiry still apply).
        let _slot = tokio::select! {
            s = self.slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = self.shutdown.cancelled() => return Ended::Shutdown,
            _ = live.cancel.cancelled() => return Ended::Cancelled,
            _ = tokio::time::sleep_until(expiry) => return Ended::Expired,
        };
        let mut job = self.job_for(b);
        job.shared = Some(limits.clone());
        if let Some(dir) = job.state.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return Ended::Stopped(format!("cannot create {}: {e}", dir.display()));
        }
        // Result files exist afterwards only if this run wrote them, so a
        // finalizing batch can trust them (see `end`).
        let _ = std::fs::remove_file(&job.output);
        let _ = std::fs::remove_file(&job.errors);
        let spent_before = match Journal::open_read_only(&job.state) {
            Ok(j) => j.cost_total().unwrap_or(0.0),
            Err(_) => 0.0,
        };
        let reporter = Arc::new(BatchReporter {
            id: b.id.clone(),
            live: live.clone(),
            metrics: metrics.clone(),
            cost_seen: Mutex::new(spent_before),
        });
        let stop = CancellationToken::new();
        let run = batchling_engine::run_shared(job, routes, stop.clone(), reporter);
        tokio::pin!(run);
        let why = tokio::select! {
            r = &mut run => {
                return match r {
                    Ok(s) => ended(&s),
                    Err(e) => Ended::Stopped(e.to_string()),
                };
            }
            _ = self.shutdown.cancelled() => Ended::Shutdown,
            _ = live.cancel.cancelled() => Ended::Cancelled,
            _ = tokio::time::sleep_until(expiry) => Ended::Expired,
        };
        // Stop dispatching; answers in flight still land in the journal.
        stop.cancel();
        let result = run.await;
        match result {
            Ok(s) if s.stopped.is_none() || s.stopped == Some(StopCause::Interrupted) => why,
            Ok(s) => match why {
                Ended::Shutdown => why,
                _ => Ended::Stopped(s.stopped.as_ref().map(stop_reason).unwrap_or_default()),
            },
            Err(e) => match why {
                Ended::Shutdown => why,
                _ => Ended::Stopped(e.to_string()),
            },
        }
    }

    /// Close what is unfinished (cancelled or expired), write the result
    /// files and record the end. Idempotent up to its last step (one
    /// transaction), so a crash anywhere in it just repeats it.
    async fn end(&self, b: &BatchRow, status: BatchStatus) -> Result<(), RunnerError> {
        let job = self.job_for(b);
        let dir = self.batch_dir(&b.id);
        let completed = status == BatchStatus::Completed;
        let (code, message) = unfinished_line(&status);
        let results = tokio::task::spawn_blocking(move || {
            close_and_count(job, &dir, completed, code, message)
        })
        .await??;
        let now = unix_now();
        let mut files = Vec::new();
        let output_file_id =
            self.register(b, &results.output, results.done, "output", now, &mut files)?;
        let error_file_id =
            self.register(b, &results.errors, results.failed, "error", now, &mut files)?;
        let outcome = Outcome {
            status: self.final_status(b, status),
            files,
            output_file_id,
            error_file_id,
            completed: results.done,
            failed: results.failed,
            usage: results.usage,
        };
        self.record_end(b, &outcome, now)
    }

    /// Move a result file into `files/` as a new file of the batch's owner
    /// (pushed to `files`); none when it has no lines.
    fn register(
        &self,
        b: &BatchRow,
        path: &Path,
        lines: u64,
        suffix: &str,
        now: u64,
        files: &mut Vec<FileRow>,
    ) -> Result<Option<String>, RunnerError> {
        if lines == 0 {
            return Ok(None);
        }
        let id = new_file_id();
        let dest = content_path(&self.data_dir, &id);
        std::fs::rename(path, &dest).map_err(RunnerError::io("move into place", path))?;
        let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        files.push(FileRow {
            id: id.clone(),
            owner: b.owner.clone(),
            filename: format!("{}_{suffix}.jsonl", b.id),
            purpose: "batch_output".into(),
            bytes,
            created_at: now,
            expires_at: b.output_expires_after.map(|s| now + s),
        });
        Ok(Some(id))
    }

    /// The status to record: a cancel that arrived while finalizing still
    /// ends as cancelled, with every request's result.
    fn final_status(&self, b: &BatchRow, status: BatchStatus) -> BatchStatus {
        match (status, self.meta.batch_by_id(&b.id)) {
            (BatchStatus::Completed, Ok(Some(now))) if now.status == BatchStatus::Cancelling => {
                BatchStatus::Cancelled
            }
            (s, _) => s,
        }
    }

    /// The last step, one transaction; then tidy up what the batch leaves.
    /// When the batch had already ended, its new result files go.
    fn record_end(&self, b: &BatchRow, outcome: &Outcome, now: u64) -> Result<(), RunnerError> {
        if !self.meta.finish(&b.id, outcome, now)? {
            for f in &outcome.files {
                let _ = std::fs::remove_file(content_path(&self.data_dir, &f.id));
            }
            return Ok(());
        }
        tracing::info!(
            batch = %b.id,
            status = outcome.status.as_str(),
            completed = outcome.completed,
            failed = outcome.failed,
            "batch ended"
        );
        // The journal's answers are in the result files now.
        if !self.keep_journals {
            let _ = std::fs::remove_dir_all(self.batch_dir(&b.id));
        }
        if self.meta.file_deleted(&b.input_file_id).unwrap_or(false) {
            self.release_file(&b.input_file_id);
        }
        Ok(())
    }
}

/// How a batch's engine run ended, from its summary.
fn ended(s: &RunSummary) -> Ended {
    match &s.stopped {
        None if s.not_done == 0 => Ended::Done,
        None => Ended::Stopped(format!("{} requests not done", s.not_done)),
        Some(cause) => Ended::Stopped(stop_reason(cause)),
    }
}

/// A stop, for the log. In the server's words where the engine's name a
/// `batchling run` flag: serve gives up on an unreachable upstream after its
/// own time, and tries again later.
fn stop_reason(cause: &StopCause) -> String {
    match cause {
        StopCause::Unreachable { last_error } => {
            format!("the upstream kept failing (last error: {last_error})")
        }
        other => other.to_string(),
    }
}

/// The `error.code` and message of requests a batch's end leaves unrun.
fn unfinished_line(status: &BatchStatus) -> (&'static str, &'static str) {
    match status {
        BatchStatus::Expired => (
            batchling_core::batch::EXPIRED_CODE,
            batchling_core::batch::EXPIRED_MESSAGE,
        ),
        BatchStatus::Cancelled => (
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
        ),
        _ => (
            "batch_incomplete",
            "This request was not executed (the batch ended before it ran).",
        ),
    }
}

/// A batch's results, exported and counted.
struct Results {
    done: u64,
    failed: u64,
    usage: Usage,
    output: PathBuf,
    errors: PathBuf,
}

/// Export the results of a batch's journal (blocking). A completed run has
/// just exported both files (the run removes them first); anything else
/// closes what is unfinished with `code` and `message`, and exports again.
fn close_and_count(
    job: Job,
    dir: &Path,
    completed: bool,
    code: &str,
    message: &str,
) -> Result<Results, RunnerError> {
    std::fs::create_dir_all(dir).map_err(RunnerError::io("create", dir))?;
    let exported = completed && job.output.exists() && job.errors.exists();
    if !exported {
        batchling_engine::close_unfinished(&job, code, message)?;
    }
    let j = Journal::open_read_only(&job.state)?;
    let c = j.counts()?;
    Ok(Results {
        done: c.done,
        failed: c.failed + c.invalid,
        usage: j.usage_totals()?,
        output: job.output,
        errors: job.errors,
    })
}

/// What a batch's lines may name: upstreams (by name), or a routes
/// config's routes and models.
enum Serving {
    Upstreams(Vec<(String, crate::config::UpstreamConfig)>),
    Routes(Arc<batchling_core::routes::RoutesConfig>),
}

/// Read the whole input: every line valid for `endpoint`, and all models
/// served by one upstream (or each a route or model of the routes config).
/// `Err` carries `errors.data` and the line count.
fn check_input(
    path: &Path,
    endpoint: &str,
    serving: &Serving,
) -> Result<Checked, (Vec<Value>, u64)> {
    let mut v = Validation {
        endpoint,
        serving,
        errors: Vec::new(),
        total: 0,
        chosen: None,
    };
    let read = batchling_engine::for_each_request(path, |r| {
        v.total += 1;
        match r {
            Err(e) => v.push(e.problem.code(), e.to_string(), Some(e.line_no)),
            Ok(req) => v.check(&req),
        }
        true
    });
    if let Err(e) = read {
        let message = format!("the input file cannot be read: {e}");
        v.push("file_unreadable", message, None);
    }
    v.finish()
}

/// Validation of a batch's input in progress: the errors so far (at most
/// [`MAX_LISTED_ERRORS`] listed) and the upstream the first line chose.
struct Validation<'a> {
    endpoint: &'a str,
    serving: &'a Serving,
    errors: Vec<Value>,
    total: u64,
    /// The upstream's index, the first line routed to it, and its model.
    chosen: Option<(usize, u64, Option<String>)>,
}

impl Validation<'_> {
    fn push(&mut self, code: &str, message: String, line: Option<u64>) {
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors
                .push(json!({"code": code, "message": message, "param": null, "line": line}));
        }
    }

    /// A well-formed line: its url is the batch's endpoint, and its model
    /// is served by the upstream every earlier line went to (or is a route
    /// or model of the routes config).
    fn check(&mut self, req: &batchling_core::request::RequestLine) {
        let line = req.line_no;
        if req.endpoint.path() != self.endpoint {
            let message = format!(
                "line {line}: url {} does not match the batch's endpoint {}",
                req.endpoint.path(),
                self.endpoint
            );
            return self.push("url_mismatch", message, Some(line));
        }
        match self.serving {
            Serving::Upstreams(upstreams) => self.check_upstream(req, upstreams),
            Serving::Routes(config) => self.check_route(req, config),
        }
    }

    /// A line's model names a route or a model of the config, and every
    /// target of its chain speaks the batch's endpoint.
    fn check_route(
        &mut self,
        req: &batchling_core::request::RequestLine,
        config: &batchling_core::routes::RoutesConfig,
    ) {
        let line = req.line_no;
        let Some(model) = req.model.as_deref() else {
            let message = format!(
                "line {line}: the body has no model; this server's lines name one of its routes or models ({})",
                names_of(config)
            );
            return self.push("model_not_found", message, Some(line));
        };
        let Some(chains) = config.chains_for(model) else {
            let message = format!(
                "line {line}: model {model:?} is not a route or model of this server ({})",
                names_of(config)
            );
            return self.push("model_not_found", message, Some(line));
        };
        let all = (chains.chain.iter())
            .chain(&chains.context_window)
            .chain(&chains.content_policy);
        for target in all {
            if let Some(p) = config.provider_of(target)
                && !kind_speaks(p.kind, req.endpoint)
            {
                let message = format!(
                    "line {line}: model {model:?} goes to {target:?} at provider {:?}, which speaks {}'s API: it has no {}",
                    p.name,
                    p.kind,
                    req.endpoint.path()
                );
                return self.push("model_not_found", message, Some(line));
            }
        }
        if self.chosen.is_none() {
            self.chosen = Some((0, line, req.model.clone()));
        }
    }

    /// A line's model is served by the upstream every earlier line went to.
    fn check_upstream(
        &mut self,
        req: &batchling_core::request::RequestLine,
        upstreams: &[(String, crate::config::UpstreamConfig)],
    ) {
        let line = req.line_no;
        let model = req.model.as_deref();
        let serves = |u: &crate::config::UpstreamConfig| u.serves(model);
        let Some(i) =
            (upstreams.iter()).position(|(_, u)| serves(u) && u.kind.speaks(req.endpoint))
        else {
            let message = match upstreams.iter().find(|(_, u)| serves(u)) {
                Some((name, u)) => format!(
                    "line {line}: no upstream of this server serves model {model:?} at {}: upstream {name:?} serves the model but speaks {}'s API, which has no {}",
                    req.endpoint.path(),
                    u.kind.name(),
                    req.endpoint.path()
                ),
                None => format!("line {line}: no upstream of this server serves model {model:?}"),
            };
            return self.push("model_not_found", message, Some(line));
        };
        match &self.chosen {
            None => self.chosen = Some((i, line, req.model.clone())),
            Some((j, first, first_model)) if *j != i => {
                let message = format!(
                    "line {line}: model {model:?} is served by upstream {:?}, but line {first} (model {first_model:?}) by {:?}; a batch runs on one upstream, so split the file",
                    upstreams[i].0, upstreams[*j].0
                );
                self.push("model_mismatch", message, Some(line));
            }
            Some(_) => {}
        }
    }

    fn finish(mut self) -> Result<Checked, (Vec<Value>, u64)> {
        if self.total == 0 && self.errors.is_empty() {
            self.push("empty_file", "The input file has no requests.".into(), None);
        }
        match self.chosen {
            Some((i, _, model)) if self.errors.is_empty() => Ok(Checked {
                total: self.total,
                model,
                upstream: match self.serving {
                    Serving::Upstreams(upstreams) => upstreams[i].0.clone(),
                    Serving::Routes(_) => ROUTES_NAME.to_owned(),
                },
            }),
            _ => Err((self.errors, self.total)),
        }
    }
}

/// The names a line of a routes config's server may use, for an error:
/// the first few routes and models.
fn names_of(config: &batchling_core::routes::RoutesConfig) -> String {
    const SHOWN: usize = 8;
    let names: Vec<&str> = (config.routes.keys())
        .chain(
            config
                .models
                .keys()
                .filter(|m| !config.routes.contains_key(*m)),
        )
        .map(String::as_str)
        .collect();
    let more = if names.len() > SHOWN { ", ..." } else { "" };
    format!(
        "it has {}{more}",
        names[..names.len().min(SHOWN)].join(", ")
    )
}

/// Feeds a batch's live counts and its upstream's cost counter.
struct BatchReporter {
    id: String,
    live: Arc<Live>,
    metrics: Arc<UpstreamMetrics>,
    cost_seen: Mutex<f64>,
}

impl Reporter for BatchReporter {
    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }

    fn tick(&self, p: &Progress) {
        self.live.completed.store(p.succeeded, Relaxed);
        self.live.failed.store(p.failed, Relaxed);
        self.live.input_tokens.store(p.input_tokens, Relaxed);
        self.live.output_tokens.store(p.output_tokens, Relaxed);
        if let Some(cost) = p.cost_usd {
            let mut seen = self.cost_seen.lock().unwrap_or_else(|e| e.into_inner());
            if cost > *seen {
                let micro = ((cost - *seen) * 1e6).round() as u64;
                self.metrics.cost_micro_usd.fetch_add(micro, Relaxed);
                *seen = cost;
            }
        }
    }

    fn notify(&self, notice: &Notice) {
        let batch = &self.id;
        match notice {
            Notice::RateLimited { pause } => {
                tracing::info!(%batch, pause_s = pause.as_secs_f64(), "{notice}");
            }
            Notice::OutageStarted { last_error } => {
                tracing::info!(%batch, %last_error, "{notice}");
            }
            Notice::Stopping(cause) => {
                tracing::info!(%batch, stop = cause.kind(), "{notice}");
            }
            _ => tracing::info!(%batch, "{notice}"),
        }
    }
}
