//! The engine: read → pace → send → classify → retry or record.
//!
//! # Tour
//! - [`run`]: the library entry point. Give it a [`Job`], a
//!   [`Provider`], a shutdown token and a
//!   [`Reporter`]; get a [`RunSummary`].
//! - `reader`: streams the input on a blocking thread: parse, validate,
//!   catch duplicate ids, count tokens.
//! - `dispatch`: the one loop, with the per-attempt task and retry logic.
//! - [`budget`]: the `--max-cost` cap (reserve worst case, settle actual).
//! - [`estimate`]: a whole file's tokens per model, before sending.
//! - [`pacer`]: RPM/TPM pacing, the shared 429 pause, limits from headers.
//! - `health`: telling a bad request from a down upstream.
//! - `recorder`: the journal writer thread (group commits).
//! - output files are exported from the journal (`batchling-store`).
//! - [`report`]: progress snapshots and the summary.
//! - [`SharedLimits`]: one pacer and one concurrency cap shared by several
//!   runs against the same upstream (`batchling serve`).
//! - [`close_unfinished`]: end what a stopped run left (cancelled or
//!   expired batches).
//! - [`submit`]: `batchling submit`: a file through a Batch API (split,
//!   upload, create, poll, collect), resumable from the same journal.
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

// Dev-dependencies of the integration tests (`tests/`) only.
#[cfg(test)]
use batchling_mock as _;

pub mod budget;
mod close;
mod dispatch;
pub mod estimate;
#[doc(hidden)]
pub mod fuzzing;
mod health;
pub mod pacer;
mod reader;
mod recorder;
pub mod report;
pub mod submit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_core::pricing::Catalog;
use batchling_providers::Provider;
use batchling_store::{Cache, InputIdentity, Journal, StoreError, check_destination};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use close::close_unfinished;
pub use pacer::{EffectiveLimits, PacerConfig};
pub use reader::{DuplicateCheck, Input, MAX_LINE_BYTES, Validator, check_file, for_each_request};
pub use report::{Progress, Reporter, RunSummary, StopCause};

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
    /// The journal (see [`default_state_path`]).
    pub state: PathBuf,
    /// Clear the journal and start over.
    pub restart: bool,
    /// Send failed requests again (invalid lines stay invalid).
    pub retry_failed: bool,
    /// Commit with `synchronous=FULL` (survives power loss) rather than
    /// `NORMAL` (survives a crash of the process).
    pub durable: bool,
    /// The response cache shared across runs, if any.
    pub cache: Option<PathBuf>,
    /// Prices, for live cost and the budget.
    pub prices: Option<Arc<Catalog>>,
    /// A hard budget in USD (`--max-cost`).
    pub max_cost: Option<f64>,
    /// Pacing and concurrency shared with other runs; when set, it replaces
    /// `pacing` and `concurrency`.
    pub shared: Option<SharedLimits>,
    /// The server to record in the journal (a base URL, or `mock`), for a
    /// later resume or `status`.
    pub server: Option<String>,
}

/// One upstream's limits, shared by every run sending to it: admissions
/// queue fairly on one pacer and concurrency permits are handed out first
/// come, first served, so concurrent runs take turns.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    pacer: Arc<pacer::Pacer>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl SharedLimits {
    /// Limits for one upstream: its pacing and the most requests in flight
    /// across all runs.
    pub fn new(pacing: PacerConfig, concurrency: usize) -> Self {
        SharedLimits {
            pacer: Arc::new(pacer::Pacer::shared(pacing)),
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }

    /// The limits in force (given or learned).
    pub fn limits(&self) -> EffectiveLimits {
        self.pacer.limits()
    }

    /// Requests in flight (or awaiting their journal commit) right now.
    pub fn in_use(&self, concurrency: usize) -> usize {
        concurrency.saturating_sub(self.permits.available_permits())
    }
}

/// The default journal path: next to the output, `results.jsonl` →
/// `results.jsonl.journal`.
pub fn default_state_path(output: &Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".journal");
    output.with_file_name(name)
}

pub use batchling_core::Order;

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
            order: Order::Input,
            pacing: PacerConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
            give_up_after: Duration::from_secs(600),
            default_max_output: DEFAULT_MAX_OUTPUT,
            grace: Duration::from_secs(30),
            state: default_state_path(&output),
            restart: false,
            retry_failed: false,
            durable: true,
            cache: None,
            prices: None,
            max_cost: None,
            shared: None,
            server: None,
            output,
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
    /// The journal could not be opened, checked or written.
    #[error(transparent)]
    Journal(#[from] StoreError),
}

/// Run a job to the end (or until it stops). Per-request failures are data
/// in the summary, not errors; `Err` means the run itself could not work.
///
/// The job's journal is resumed if it exists: requests it records as done
/// (or failed, unless `retry_failed`) are not sent again. The output and
/// error files are written from the journal at the end, also after a stop.
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
    if job.max_cost.is_some() && job.prices.is_none() {
        return Err(EngineError::Config("--max-cost needs prices".into()));
    }
    let started = Instant::now();
    let input_name = job.input.display_name();
    let input_err = |source| EngineError::Input {
        path: input_name.clone(),
        source,
    };
    // Open the input first: a missing file is an error before anything else
    // is touched.
    drop(job.input.open().map_err(input_err)?);
    let identity = match &job.input {
        Input::File(p) => Some(InputIdentity::of_file(p).map_err(input_err)?),
        Input::Stdin => None,
    };
    // Where the answers go is checked before the first one is paid for.
    check_destination(&job.output)?;
    check_destination(&job.errors)?;
    let mut journal = Journal::open(&job.state, job.durable)?;
    let now_unix = batchling_core::clock::unix_now();
    journal.begin(
        &input_name,
        identity.as_ref(),
        &settings_json(&job),
        now_unix,
        job.restart,
    )?;
    if let Some(server) = &job.server {
        journal.set_server(server)?;
    }
    if job.retry_failed {
        journal.forget_failed()?;
    }
    let finished = journal.finished_seqs()?;
    let before = journal.counts()?;
    let batchling_store::Totals {
        usage:
            batchling_core::Usage {
                input: input_tokens,
                cached_input: cached_tokens,
                output: output_tokens,
            },
        cost_usd: spent_before,
    } = journal.totals()?;
    let resumed = before.done + before.failed + before.invalid;
    let baseline = report::Baseline {
        done: before.done,
        finished: resumed,
        tokens: input_tokens + output_tokens,
    };

    let counters = Arc::new(report::Counters::default());
    counters.succeeded.store(before.done, Relaxed);
    counters.failed.store(before.failed, Relaxed);
    counters.invalid.store(before.invalid, Relaxed);
    counters.input_tokens.store(input_tokens, Relaxed);
    counters.cached_tokens.store(cached_tokens, Relaxed);
    counters.output_tokens.store(output_tokens, Relaxed);
    counters.resumed.store(resumed, Relaxed);
    counters
        .resumed_tokens
        .store(input_tokens + output_tokens, Relaxed);
    if job.prices.is_some() {
        counters.priced.store(true, Relaxed);
        counters
            .cost_micro_usd
            .store((spent_before * 1e6).round() as u64, Relaxed);
    }
    if resumed > 0 {
        reporter.notice(&format!(
            "resuming {}: {} done, {} failed, {} invalid already; sending the rest",
            job.state.display(),
            before.done,
            before.failed,
            before.invalid
        ));
    }

    let (pacer, permits) = match &job.shared {
        Some(s) => (s.pacer.clone(), s.permits.clone()),
        None => (
            Arc::new(pacer::Pacer::new(job.pacing)),
            Arc::new(tokio::sync::Semaphore::new(job.concurrency)),
        ),
    };
    // Limits already known (given, or learned by an earlier run on a shared
    // pacer) need no discovery.
    let known = pacer.limits();
    let discover = pacer.learns() && known.rpm.is_none() && known.tpm.is_none();
    // Token counts are needed once a token limit is in force (given, or
    // learned from headers: the reader starts counting then, and the loop
    // counts lines read before).
    // The budget reserves each request's worst case, so it needs counts too.
    let count_tokens = Arc::new(AtomicBool::new(
        known.tpm.is_some() || job.max_cost.is_some(),
    ));
    let budget = job
        .max_cost
        .map(|limit| budget::Budget::new(limit, spent_before));

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

    let caches = match &job.cache {
        Some(path) => Some((Cache::open(path)?, Cache::open(path)?)),
        None => None,
    };
    let (cache_reader, cache_writer) = caches.map_or((None, None), |(r, w)| (Some(r), Some(w)));

    let stop = CancellationToken::new();
    let journal_error = Arc::new(Mutex::new(None::<String>));
    let (record_tx, record_rx) = mpsc::channel(8192);
    let writer_thread = {
        let (c, stop, err) = (counters.clone(), stop.clone(), journal_error.clone());
        let concurrency = job.concurrency;
        std::thread::spawn(move || {
            recorder::write_loop(journal, cache_writer, record_rx, c, concurrency, |e| {
                *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                stop.cancel();
            })
        })
    };

    let (read_tx, read_rx) = mpsc::channel(1024);
    let reader_thread = {
        let (input, ct, c, dmo) = (
            job.input.clone(),
            count_tokens.clone(),
            counters.clone(),
            job.default_max_output,
        );
        std::thread::spawn(move || {
            let read = reader::read_input(&input, read_tx, ct, dmo, &finished);
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
        recorder: record_tx,
        cache: cache_reader.map(Mutex::new),
        reporter: reporter.clone(),
        stop,
        stop_cause: Mutex::new(None),
        attempt_done: Notify::new(),
        gating: AtomicBool::new(discover),
        first_answer: AtomicBool::new(false),
        count_tokens,
        default_max_output: job.default_max_output,
        id_counter: AtomicU64::new(0),
        id_prefix: format!("{:016x}", rand::random::<u64>()),
        started,
        prices: job.prices.clone(),
        budget,
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
        permits,
        discover,
        shutdown.clone(),
        &mut tasks,
    )
    .await;

    // Stopping: attempts in flight get a grace period to land their answers
    // (a second Ctrl-C is the binary's business: it exits at once).
    if ctx.stop.is_cancelled() {
        let drain = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(job.grace, drain).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let mut stopped = ctx
        .stop_cause
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    drop(ctx); // closes the journal channel: the writer finishes its last group

    let read = reader_thread
        .join()
        .expect("the reader thread does not panic");
    let (journal, written) = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .expect("joining the writer")
        .expect("the writer thread does not panic");
    if let Err(e) = written {
        return Err(e.into());
    }
    if let Some(message) = journal_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        stopped = Some(StopCause::Journal { message });
    }
    // A run stopped before the background line count finished still
    // reports how many requests the job has (else `requests` is 0).
    if counters.total_known.load(Relaxed) == 0
        && let Input::File(path) = &job.input
        && let Ok(n) = reader::count_lines(path)
    {
        counters.total.store(n, Relaxed);
        counters.total_known.store(1, Relaxed);
    }
    match read {
        Err(source) if stopped.is_none() => return Err(input_err(source)),
        Ok((n, true)) => journal.set_total(n)?,
        _ => {}
    }
    journal.export(&job.output, &job.errors, job.order)?;
    let limits = pacer.limits();
    journal.set_limits(limits.rpm, limits.tpm)?;
    let batchling_store::Totals {
        usage:
            batchling_core::Usage {
                input: input_tokens,
                cached_input: cached_tokens,
                output: output_tokens,
            },
        cost_usd,
    } = journal.totals()?;
    counters.input_tokens.store(input_tokens, Relaxed);
    counters.cached_tokens.store(cached_tokens, Relaxed);
    counters.output_tokens.store(output_tokens, Relaxed);
    let elapsed = started.elapsed();
    let summary = RunSummary::build(
        &counters,
        elapsed,
        limits,
        stopped,
        baseline,
        job.prices.as_ref().map(|_| cost_usd),
    );
    reporter.tick(&counters.progress(elapsed, limits, false));
    Ok(summary)
}

/// The settings a journal records, for `batchling status`.
pub(crate) fn settings_json(job: &Job) -> String {
    serde_json::json!({
        "output": job.output,
        "errors": job.errors,
        "rpm": job.pacing.rpm,
        "tpm": job.pacing.tpm,
        "concurrency": job.concurrency,
        "max_attempts": job.retry.max_attempts,
    })
    .to_string()
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
