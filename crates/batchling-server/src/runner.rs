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

use batchling_core::pricing::Catalog;
use batchling_engine::report::{Notice, Progress, Reporter};
use batchling_engine::{Input, Job, Order, StopCause};
use batchling_store::Journal;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::new_file_id;
use crate::files::content_path;
use crate::meta::{BatchRow, FileRow, Meta, Outcome, Status};
use crate::unix_now;
use crate::upstream::{Upstream, UpstreamMetrics, route};

/// Most validation errors listed in a failed batch's `errors.data`.
const MAX_LISTED_ERRORS: usize = 1000;

/// After the upstream stopped a run (unreachable, refused our key), wait
/// this long before trying again, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What a running batch shows before its end is recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveCounts {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) input_tokens: u64,
    pub(crate) cached_tokens: u64,
    pub(crate) output_tokens: u64,
}

#[derive(Debug, Default)]
struct Live {
    cancel: CancellationToken,
    completed: AtomicU64,
    failed: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// The batch runner.
#[derive(Debug)]
pub(crate) struct Runner {
    meta: Arc<Meta>,
    data_dir: PathBuf,
    upstreams: Vec<Upstream>,
    completion_window: Duration,
    max_attempts: u32,
    prices: Arc<Catalog>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Batches running at once.
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        meta: Arc<Meta>,
        data_dir: PathBuf,
        upstreams: Vec<Upstream>,
        completion_window: Duration,
        max_attempts: u32,
        max_running: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Runner {
            meta,
            data_dir,
            upstreams,
            completion_window,
            max_attempts,
            prices: Arc::new(Catalog::builtin()),
            live: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max_running.max(1))),
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    pub(crate) fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
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
            input_tokens: l.input_tokens.load(Relaxed),
            cached_tokens: 0,
            output_tokens: l.output_tokens.load(Relaxed),
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

    async fn drive(self: &Arc<Self>, id: &str, live: &Arc<Live>) -> Result<(), String> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let b = self
                .meta
                .batch_by_id(id)
                .map_err(|e| e.to_string())?
                .ok_or("the batch is gone")?;
            let expired = unix_now() >= b.expires_at;
            match b.status() {
                Status::Validating if expired => self.end(&b, Status::Expired).await?,
                Status::Validating => self.validate(&b).await?,
                Status::InProgress if expired => self.end(&b, Status::Expired).await?,
                Status::InProgress => match self.run(&b, live).await {
                    Ended::Done => {
                        self.meta
                            .transition(id, &[Status::InProgress], Status::Finalizing, unix_now())
                            .map_err(|e| e.to_string())?;
                    }
                    Ended::Shutdown => return Ok(()),
                    // The status already says cancelling; the next turn ends it.
                    Ended::Cancelled => {}
                    Ended::Expired => self.end(&b, Status::Expired).await?,
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
                Status::Finalizing => self.end(&b, Status::Completed).await?,
                Status::Cancelling => self.end(&b, Status::Cancelled).await?,
                _ => return Ok(()),
            }
        }
    }

    /// `validating` → `in_progress` or `failed`.
    async fn validate(&self, b: &BatchRow) -> Result<(), String> {
        let path = content_path(&self.data_dir, &b.input_file_id);
        let endpoint = b.endpoint.clone();
        let routes: Vec<(String, crate::config::UpstreamConfig)> = self
            .upstreams
            .iter()
            .map(|u| (u.config.name.clone(), u.config.clone()))
            .collect();
        let checked = tokio::task::spawn_blocking(move || check_input(&path, &endpoint, &routes))
            .await
            .map_err(|e| e.to_string())?;
        let now = unix_now();
        match checked {
            Ok(c) => {
                self.meta
                    .start(&b.id, c.total, c.model.as_deref(), &c.upstream, now)
                    .map_err(|e| e.to_string())?;
                tracing::info!(batch = %b.id, total = c.total, upstream = %c.upstream, "batch in progress");
            }
            Err((errors, total)) => {
                let n = errors.len();
                self.meta
                    .fail(&b.id, &Value::Array(errors).to_string(), total, now)
                    .map_err(|e| e.to_string())?;
                tracing::info!(batch = %b.id, errors = n, "batch failed validation");
            }
        }
        Ok(())
    }

    /// One engine run of an `in_progress` batch, until it finishes or
    /// something stops it.
    async fn run(&self, b: &BatchRow, live: &Arc<Live>) -> Ended {
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
        job.shared = Some(upstream.limits.clone());
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
            metrics: upstream.metrics.clone(),
            cost_seen: Mutex::new(spent_before),
        });
        let stop = CancellationToken::new();
        let run = batchling_engine::run(job, upstream.provider.clone(), stop.clone(), reporter);
        tokio::pin!(run);
        let why = tokio::select! {
            r = &mut run => {
                return match r {
                    Ok(s) => match s.stopped {
                        None if s.not_done == 0 => Ended::Done,
                        None => Ended::Stopped(format!("{} requests not done", s.not_done)),
                        Some(cause) => Ended::Stopped(cause.to_string()),
                    },
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
                _ => Ended::Stopped(s.stopped.map(|c| c.to_string()).unwrap_or_default()),
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
    async fn end(&self, b: &BatchRow, status: Status) -> Result<(), String> {
        let job = self.job_for(b);
        let dir = self.batch_dir(&b.id);
        let (code, message) = match status {
            Status::Expired => (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            ),
            Status::Cancelled => (
                "batch_cancelled",
                "This request was not executed because the batch was cancelled.",
            ),
            _ => (
                "batch_incomplete",
                "This request was not executed (the batch ended before it ran).",
            ),
        };
        let completed = status == Status::Completed;
        let counts = tokio::task::spawn_blocking(move || -> Result<_, String> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            // A completed run has just exported both files (the run removes
            // them first); anything else closes what is unfinished and
            // exports again.
            let exported = completed && job.output.exists() && job.errors.exists();
            if !exported {
                batchling_engine::close_unfinished(&job, code, message)
                    .map_err(|e| e.to_string())?;
            }
            let j = Journal::open_read_only(&job.state).map_err(|e| e.to_string())?;
            let c = j.counts().map_err(|e| e.to_string())?;
            let usage = j.usage_totals().map_err(|e| e.to_string())?;
            Ok((c.done, c.failed + c.invalid, usage, job.output, job.errors))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (done, failed, usage, output, errors) = counts;
        let now = unix_now();
        let mut files = Vec::new();
        let mut register =
            |path: &Path, lines: u64, suffix: &str| -> Result<Option<String>, String> {
                if lines == 0 {
                    return Ok(None);
                }
                let id = new_file_id();
                let dest = content_path(&self.data_dir, &id);
                std::fs::rename(path, &dest)
                    .map_err(|e| format!("cannot move {} into place: {e}", path.display()))?;
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
            };
        let output_file_id = register(&output, done, "output")?;
        let error_file_id = register(&errors, failed, "error")?;
        // A cancel that arrived while finalizing still ends as cancelled,
        // with every request's result.
        let status = match (status, self.meta.batch_by_id(&b.id)) {
            (Status::Completed, Ok(Some(now))) if now.status() == Status::Cancelling => {
                Status::Cancelled
            }
            (s, _) => s,
        };
        let outcome = Outcome {
            status: status.clone(),
            files,
            output_file_id,
            error_file_id,
            completed: done,
            failed,
            usage,
        };
        let recorded = self
            .meta
            .finish(&b.id, &outcome, now)
            .map_err(|e| e.to_string())?;
        if !recorded {
            for f in &outcome.files {
                let _ = std::fs::remove_file(content_path(&self.data_dir, &f.id));
            }
            return Ok(());
        }
        tracing::info!(
            batch = %b.id,
            status = status.as_str(),
            completed = done,
            failed,
            "batch ended"
        );
        // The journal's answers are in the result files now.
        let _ = std::fs::remove_dir_all(self.batch_dir(&b.id));
        if self.meta.file_deleted(&b.input_file_id).unwrap_or(false) {
            self.release_file(&b.input_file_id);
        }
        Ok(())
    }
}

/// Read the whole input: every line valid for `endpoint`, and all models
/// served by one upstream. `Err` carries `errors.data` and the line count.
fn check_input(
    path: &Path,
    endpoint: &str,
    upstreams: &[(String, crate::config::UpstreamConfig)],
) -> Result<Checked, (Vec<Value>, u64)> {
    let mut errors = Vec::new();
    let mut total = 0u64;
    let mut chosen: Option<(usize, u64, Option<String>)> = None;
    let push = |errors: &mut Vec<Value>, code: &str, message: String, line: Option<u64>| {
        if errors.len() < MAX_LISTED_ERRORS {
            errors.push(json!({"code": code, "message": message, "param": null, "line": line}));
        }
    };
    let read = batchling_engine::for_each_request(path, |r| {
        total += 1;
        match r {
            Err(e) => push(
                &mut errors,
                e.problem.code(),
                e.to_string(),
                Some(e.line_no),
            ),
            Ok(req) if req.endpoint.path() != endpoint => push(
                &mut errors,
                "url_mismatch",
                format!(
                    "line {}: url {} does not match the batch's endpoint {endpoint}",
                    req.line_no,
                    req.endpoint.path()
                ),
                Some(req.line_no),
            ),
            Ok(req) => {
                let model = req.model.as_deref();
                match upstreams.iter().position(|(_, u)| u.serves(model)) {
                    None => push(
                        &mut errors,
                        "model_not_found",
                        format!(
                            "line {}: no upstream of this server serves model {model:?}",
                            req.line_no
                        ),
                        Some(req.line_no),
                    ),
                    Some(i) => match &chosen {
                        None => chosen = Some((i, req.line_no, req.model.clone())),
                        Some((j, first, first_model)) if *j != i => push(
                            &mut errors,
                            "model_mismatch",
                            format!(
                                "line {}: model {model:?} is served by upstream {:?}, but line {first} (model {first_model:?}) by {:?}; a batch runs on one upstream, so split the file",
                                req.line_no, upstreams[i].0, upstreams[*j].0
                            ),
                            Some(req.line_no),
                        ),
                        Some(_) => {}
                    },
                }
            }
        }
        true
    });
    if let Err(e) = read {
        push(
            &mut errors,
            "file_unreadable",
            format!("the input file cannot be read: {e}"),
            None,
        );
    }
    if total == 0 && errors.is_empty() {
        push(
            &mut errors,
            "empty_file",
            "The input file has no requests.".into(),
            None,
        );
    }
    match chosen {
        Some((i, _, model)) if errors.is_empty() => Ok(Checked {
            total,
            model,
            upstream: upstreams[i].0.clone(),
        }),
        _ => Err((errors, total)),
    }
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
