//! The engine: read → pace → send → classify → retry or record.
//!
//! # Tour
//! - [`run`]: the library entry point. Give it a [`Job`], a
//!   [`Provider`](batchling_providers::Provider), a shutdown token and a
//!   [`Reporter`]; get a [`RunSummary`].
//! - `reader`: streams the input on a blocking thread: parse, validate,
//!   catch duplicate ids, count tokens.
//! - `dispatch`: the one loop, with the per-attempt task and retry logic.
//! - [`pacer`]: RPM/TPM pacing, the shared 429 pause, limits from headers.
//! - `health`: telling a bad request from a down upstream.
//! - `sink`: output and error files, in input or completion order.
//! - [`report`]: progress snapshots and the summary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use batchling_engine::{Input, Job, report::Silent};
//! use batchling_providers::openai::{ClientConfig, OpenAiClient};
//!
//! let client = OpenAiClient::new(ClientConfig {
//!     base_url: "http://127.0.0.1:8080/v1".into(),
//!     ..ClientConfig::default()
//! })?;
//! let job = Job::new(Input::File("requests.jsonl".into()), "out.jsonl".into());
//! let summary = batchling_engine::run(job, Arc::new(client), Default::default(), Arc::new(Silent)).await?;
//! println!("{} succeeded, {} failed", summary.succeeded, summary.failed);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod dispatch;
mod health;
pub mod pacer;
mod reader;
pub mod report;
mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_providers::Provider;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use pacer::{EffectiveLimits, PacerConfig};
pub use reader::{DuplicateCheck, Input, Validator, check_file};
pub use report::{Progress, Reporter, RunSummary, StopCause};
pub use sink::Order;

/// One run over an input file.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where requests come from.
    pub input: Input,
    /// Where successful answers go.
    pub output: PathBuf,
    /// Where failures and invalid lines go.
    pub errors: PathBuf,
    /// Output line order.
    pub order: Order,
    /// Rate limits.
    pub pacing: PacerConfig,
    /// Most attempts in flight at once.
    pub concurrency: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Stop when the upstream has failed everything for this long.
    pub give_up_after: Duration,
    /// Output tokens reserved for a request that sets no maximum.
    pub default_max_output: u64,
    /// After a stop, how long to wait for attempts in flight.
    pub grace: Duration,
}

/// The default error-file path for an output path:
/// `results.jsonl` → `results.errors.jsonl`.
pub fn default_errors_path(output: &Path) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, output.extension()) {
        (Some(s), Some(ext)) => format!("{s}.errors.{}", ext.to_string_lossy()),
        (Some(s), None) => format!("{s}.errors.jsonl"),
        _ => "errors.jsonl".into(),
    };
    output.with_file_name(name)
}

/// Default concurrency: enough to fill a 6,000 RPM budget at 2 s latency.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Default output reservation when a body sets no maximum.
pub const DEFAULT_MAX_OUTPUT: u64 = 4096;

impl Job {
    /// A job with defaults for everything but input and output.
    pub fn new(input: Input, output: PathBuf) -> Self {
        Job {
            input,
            errors: default_errors_path(&output),
            output,
            order: Order::Input,
            pacing: PacerConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
            give_up_after: Duration::from_secs(600),
            default_max_output: DEFAULT_MAX_OUTPUT,
            grace: Duration::from_secs(30),
        }
    }
}

/// A run could not happen or could not finish writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The input's name.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The settings make no sense.
    #[error("{0}")]
    Config(String),
}

/// Run a job to the end (or until it stops). Per-request failures are data
/// in the summary, not errors; `Err` means the run itself could not work.
pub async fn run<P: Provider>(
    job: Job,
    provider: Arc<P>,
    shutdown: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<RunSummary, EngineError> {
    if job.concurrency == 0 {
        return Err(EngineError::Config(
            "--concurrency must be at least 1".into(),
        ));
    }
    if job.retry.max_attempts == 0 {
        return Err(EngineError::Config(
            "--max-attempts must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    // Open the input now so a missing file is an error before anything runs
    // (and before the output files are truncated).
    let input_name = job.input.display_name();
    drop(job.input.open().map_err(|source| EngineError::Input {
        path: input_name.clone(),
        source,
    })?);

    let sink = sink::Sink::create(&job.output, &job.errors, job.order, sink::DEFAULT_MEM_CAP)
        .map_err(|(path, source)| EngineError::Output { path, source })?;
    let counters = Arc::new(report::Counters::default());
    let pacer = Arc::new(pacer::Pacer::new(job.pacing));
    let discover = job.pacing.learn && job.pacing.rpm.is_none() && job.pacing.tpm.is_none();
    // Token counts are needed once a token limit is in force (given, or
    // learned from headers: the reader starts counting then, and the loop
    // counts lines read before).
    let count_tokens = Arc::new(AtomicBool::new(job.pacing.tpm.is_some()));

    if let Input::File(path) = &job.input {
        let (c, path) = (counters.clone(), path.clone());
        std::thread::spawn(move || {
            if let Ok(n) = reader::count_lines(&path)
                && c.total_known.load(Relaxed) == 0
            {
                c.total.store(n, Relaxed);
                c.total_known.store(1, Relaxed);
            }
        });
    }

    let (read_tx, read_rx) = mpsc::channel(1024);
    let reader_thread = {
        let (input, ct, c, dmo) = (
            job.input.clone(),
            count_tokens.clone(),
            counters.clone(),
            job.default_max_output,
        );
        std::thread::spawn(move || {
            let read = reader::read_input(&input, read_tx, ct, dmo);
            // Only a complete read knows the exact count; a stopped run keeps
            // the line count taken up front.
            if let Ok((n, true)) = read {
                c.total.store(n, Relaxed);
                c.total_known.store(1, Relaxed);
            }
            read
        })
    };

    let ctx = Arc::new(dispatch::Ctx {
        provider,
        pacer: pacer.clone(),
        counters: counters.clone(),
        health: health::Health::new(job.give_up_after),
        retry: job.retry,
        sink: Mutex::new(Some(sink)),
        sink_error: Mutex::new(None),
        reporter: reporter.clone(),
        stop: CancellationToken::new(),
        stop_cause: Mutex::new(None),
        attempt_done: Notify::new(),
        gating: AtomicBool::new(discover),
        first_answer: AtomicBool::new(false),
        count_tokens,
        default_max_output: job.default_max_output,
        id_counter: AtomicU64::new(0),
        id_prefix: format!("{:016x}", rand::random::<u64>()),
    });

    let ticker = reporter.interval().map(|every| {
        let (c, p, r) = (counters.clone(), pacer.clone(), reporter.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(started + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                r.tick(&c.progress(started.elapsed(), p.limits(), p.paused_until().is_some()));
            }
        })
    });

    let mut tasks = tokio::task::JoinSet::new();
    dispatch::dispatch(
        ctx.clone(),
        read_rx,
        job.concurrency,
        discover,
        shutdown.clone(),
        &mut tasks,
    )
    .await;

    // Stopping: attempts in flight get a grace period to land their answers.
    if ctx.stop.is_cancelled() {
        let drain = async { while tasks.join_next().await.is_some() {} };
        // A second Ctrl-C is the binary's business: it exits at once.
        let _ = tokio::time::timeout(job.grace, drain).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let stopped = ctx
        .stop_cause
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((path, source)) = ctx
        .sink_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(EngineError::Output { path, source });
    }
    let sink = ctx.sink.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(sink) = sink {
        sink.finish()
            .map_err(|(path, source)| EngineError::Output { path, source })?;
    }
    drop(ctx);

    let read = reader_thread
        .join()
        .expect("the reader thread does not panic");
    if let Err(source) = read
        && stopped.is_none()
    {
        return Err(EngineError::Input {
            path: input_name,
            source,
        });
    }
    let elapsed = started.elapsed();
    counters
        .requests
        .store(counters.total.load(Relaxed), Relaxed);
    let summary = RunSummary::build(&counters, elapsed, pacer.limits(), stopped);
    reporter.tick(&counters.progress(elapsed, pacer.limits(), false));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_path_sits_next_to_output() {
        assert_eq!(
            default_errors_path(Path::new("d/out.jsonl")),
            PathBuf::from("d/out.errors.jsonl")
        );
        assert_eq!(
            default_errors_path(Path::new("out")),
            PathBuf::from("out.errors.jsonl")
        );
    }
}
