//! The shared job queue: many batchling workers, on many machines, share
//! one job's requests through PostgreSQL and answer each exactly once.
//!
//! # Tour
//! - [`Queue::connect`]: a connection pool on one schema (the URL's
//!   `?schema=`), its version checked and migrated under an advisory lock
//!   (`migrations/`). Messages for a bad URL, a refused port, a wrong user
//!   or database and a schema of another version say what to fix; no
//!   message or `Debug` output holds the URL's password.
//! - [`Queue::load_job`]: the lines COPYed in one transaction, keyed by the
//!   input's identity, so the same input joins the same job and a crashed
//!   loader leaves nothing behind; [`Queue::join_job`] by id.
//! - [`Queue::register`], [`Queue::heartbeat`] and the [`Lease`] every
//!   send is checked against ([`Lease::may_send`]).
//! - [`Queue::claim`]: a batch, `FOR UPDATE SKIP LOCKED`, a fencing
//!   [`ClaimToken`] each, the worker's alive check and the budget
//!   reservation in one transaction; [`Queue::release`] and
//!   [`Queue::release_unknown`] give claims back.
//! - [`Queue::complete`]: a batch of [`Completion`]s, fenced by token;
//!   stale answers are paid for but never output (`late_results`).
//! - [`Queue::rescue`] and [`Queue::sweep_stuck`]: dead workers' and stuck
//!   requests back to pending.
//! - [`Queue::export`], [`Queue::status`], [`Queue::delete_job`].
//!
//! # A request's states
//! *pending* → (claim) *running* under a token → *done* or *failed* (a
//! fenced completion), or back to *pending* (retry later, a release, a
//! rescue). `done` and `failed` are final, and a running row changes only
//! when the token still matches or a rescue finds its worker gone, so a
//! completion that committed first always stands and a woken zombie
//! overwrites nothing.
#![deny(missing_docs)]

// The integration tests' dev-dependency, unused by the unit tests.
#[cfg(test)]
use rand as _;

mod claim;
mod complete;
mod error;
mod ids;
mod ledger;
mod load;
mod migrate;
mod queue;
mod read;
mod rescue;
mod settings;
mod worker;

pub use claim::{Claimed, MAX_CLAIM};
pub use complete::{CompleteReport, Completion, Outcome};
pub use error::QueueError;
pub use ids::{ClaimToken, JobId, WorkerId};
pub use load::{JobInfo, JobSpec, LoadOutcome, MAX_IDENTITY_BYTES, NewLine};
pub use migrate::SCHEMA_VERSION;
pub use queue::Queue;
pub use read::{ExportCounts, JobStatus, WorkerState, WorkerStatus};
pub use rescue::RescueReport;
pub use settings::{DEFAULT_SCHEMA, LeaseSettings, QueueSettings};
pub use worker::{Lease, MAX_REPORT_BYTES};
