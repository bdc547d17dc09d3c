//! The engine: read → pace → send → classify → retry or record.
//!
//! # Tour
//! - [`run`]: the library entry point. Give it a [`Job`], its [`Routes`]
//!   (one [`Provider`](batchling_providers::Provider) as it is:
//!   [`Routes::single`]), a shutdown token and a [`Reporter`]; get a
//!   [`RunSummary`]. Its steps (`run.rs`): open the
//!   journal, start the reader and the writer, dispatch, drain, finish.
//! - `reader`: streams the input on a blocking thread: parse, validate,
//!   catch duplicate ids, count tokens.
//! - `dispatch`: the one loop: next request, admission, spawn an attempt.
//! - `ctx`: what the loop and its attempts share, in small parts
//!   (admission, discovery, accounting, sink, stop).
//! - `gate`: slow start while the limits are discovered, one probe at a
//!   time during an outage.
//! - `attempt`: one attempt and what follows (finish, retry, move on,
//!   stop).
//! - [`route`]: routes (chains of targets), limit groups and their keys,
//!   circuits; what moves a line along its chain (`route/hop.rs`).
//! - [`budget`]: a spending cap (reserve worst case, settle actual).
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
//! use batchling_engine::{Input, Job, Routes, report::Silent};
//! use batchling_providers::openai::{ClientConfig, OpenAiClient};
//!
//! let client = OpenAiClient::new(ClientConfig {
//!     base_url: "http://127.0.0.1:8080/v1".into(),
//!     ..ClientConfig::default()
//! })?;
//! let job = Job::new(Input::File("requests.jsonl".into()), "out.jsonl".into());
//! let summary = batchling_engine::run(job, Routes::single(Arc::new(client)), Default::default(), Arc::new(Silent)).await?;
//! println!("{} succeeded, {} failed", summary.succeeded, summary.failed);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod attempt;
pub mod budget;
mod close;
mod ctx;
mod dispatch;
pub mod estimate;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod health;
pub mod job_store;
pub mod pacer;
mod reader;
mod recorder;
pub mod report;
pub mod route;
mod run;
pub mod shared;
pub mod submit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_core::pricing::Catalog;
use batchling_store::StoreError;

pub use close::close_unfinished;
pub use pacer::{EffectiveLimits, GroupLimits, PacerConfig};
pub use reader::{
    DuplicateCheck, Input, MAX_LINE_BYTES, Validator, check_file, for_each_line_of,
    for_each_request, token_cost,
};
pub use report::{Notice, Progress, Reporter, RunSummary, StopCause};
pub use route::{RouteSpec, Routes, RoutesBuilder};
pub use run::{run, run_shared};

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
    /// A hard budget in USD (see [`budget`]).
    pub max_cost: Option<f64>,
    /// Pacing and concurrency shared with other runs; when set, it replaces
    /// `pacing` and `concurrency` (the journal still records those two).
    pub shared: Option<SharedLimits>,
    /// A rate budget shared with other processes (`--limiter`): every
    /// attempt books its send there too, after the local pacer.
    pub shared_budget: Option<Arc<dyn shared::SharedBudget>>,
    /// A job shared with other workers (`--store`): its requests are
    /// claimed from the store instead of read from `input`, and its output
    /// files are written from the store. `state` is this worker's own
    /// journal (the outbox of its answers).
    pub job_store: Option<Arc<dyn job_store::JobStore>>,
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
    /// The permits' number: the journal writer sizes its groups from it.
    concurrency: usize,
}

impl SharedLimits {
    /// Limits for one upstream: its pacing and the most requests in flight
    /// across all runs.
    pub fn new(pacing: PacerConfig, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        SharedLimits {
            pacer: Arc::new(pacer::Pacer::shared(pacing)),
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            concurrency,
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
            shared_budget: None,
            job_store: None,
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
    /// The concurrency is 0: nothing could ever be sent.
    #[error("the concurrency must be at least 1")]
    NoConcurrency,
    /// The most attempts per request is 0: nothing could ever be sent.
    #[error("the most attempts per request must be at least 1")]
    NoAttempts,
    /// A budget was set without prices to hold requests to it.
    #[error("a budget needs prices")]
    BudgetWithoutPrices,
    /// Only a file can be read again (to close what a run left unfinished).
    #[error("only a file input can be closed (standard input cannot be read again)")]
    NotAFile,
    /// A bug in batchling: a thread of the run panicked.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
    /// The journal could not be opened, checked or written.
    #[error(transparent)]
    Journal(#[from] StoreError),
}

impl Job {
    /// The settings a journal records, for `batchling status`.
    pub(crate) fn settings_json(&self) -> String {
        serde_json::json!({
            "output": self.output,
            "errors": self.errors,
            "rpm": self.pacing.rpm,
            "tpm": self.pacing.tpm,
            "concurrency": self.concurrency,
            "max_attempts": self.retry.max_attempts,
        })
        .to_string()
    }
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
