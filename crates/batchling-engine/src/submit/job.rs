//! What a submit or a cancel is given, what it reports, and how it fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use batchling_core::RetryPolicy;
use batchling_core::pricing::Catalog;
use batchling_providers::BatchApiError;
use batchling_store::StoreError;
use serde::Serialize;

use super::plan::PartLimits;
use crate::{EngineError, Job, Order};

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
    /// Retries of Batch API calls on transient errors.
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
    /// Warnings the batch answers' lines carry: what the Batch API changed
    /// in their requests to take them ([`BatchApi::add_warnings`];
    /// Anthropic's lenient translation). Not serialised: the caller names
    /// it (the CLI adds its online client's to it).
    ///
    /// [`BatchApi::add_warnings`]: batchling_providers::BatchApi::add_warnings
    #[serde(skip)]
    pub warnings: u64,
    /// Seconds it took.
    pub elapsed_s: f64,
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
    #[error("{} has {} bad line(s); nothing was uploaded", path.display(), problems.len())]
    BadLines {
        /// The input.
        path: PathBuf,
        /// `line N: problem` for each.
        problems: Vec<String>,
    },
    /// A line is larger than a part may be.
    #[error("{}: line {line_no} is {bytes} bytes, more than a part may hold ({limit} bytes); nothing was uploaded", path.display())]
    LineTooLarge {
        /// The input.
        path: PathBuf,
        /// The line.
        line_no: u64,
        /// Its size in a batch file.
        bytes: u64,
        /// The most bytes a part may hold.
        limit: u64,
    },
    /// The input no longer rebuilds a planned part.
    #[error("{}: part {part} no longer matches the journal; the input changed under it", path.display())]
    PartChanged {
        /// The input.
        path: PathBuf,
        /// The part.
        part: u64,
    },
    /// A part's target is not in the config given (a resume or a cancel
    /// with another config).
    #[error(
        "part {part} was submitted to the target {target:?}, which the config does not have: give the config the submit was started with"
    )]
    NoTarget {
        /// The part.
        part: u64,
        /// Its target.
        target: String,
    },
    /// The server refused the key.
    #[error(
        "the server refused the API key ({source}); check the key and that it may use the Batch API. The journal is kept: rerun the same command"
    )]
    Auth {
        /// What it said.
        source: BatchApiError,
    },
    /// A Batch API call failed for good (or kept failing).
    #[error("{source}; the journal is kept: rerun the same command to go on")]
    Api {
        /// The call's error.
        source: BatchApiError,
    },
    /// The journal was started with other Batch API settings
    /// ([`BatchApi::settings`]): its parts were made another way.
    ///
    /// [`BatchApi::settings`]: batchling_providers::BatchApi::settings
    #[error(
        "the journal was started with the Batch API settings {recorded}, not {given}: its parts must be created and read the way they were planned"
    )]
    SettingsChanged {
        /// What the journal has.
        recorded: String,
        /// What the client has.
        given: String,
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
