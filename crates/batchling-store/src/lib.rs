//! The journal: a job's durable record, in SQLite.
//!
//! # Tour
//! - [`Journal`]: open (create, migrate, lock), check the input's
//!   identity, list what is finished, commit records in groups, export the
//!   output and error files, report status.
//! - [`Record`]: one request's final state (done, failed or invalid) with
//!   its output line; a routed request's also says who answered and
//!   carries its attempts (table `attempts`, read back by
//!   [`Journal::route_report`] and [`Journal::request_route`]).
//! - [`Cache`]: the response cache across runs (`--cache`).
//! - [`Part`]: a `batchling submit` part (one batch on a Batch API) and its
//!   guarded state machine ([`PartState`]).
//! - [`InputIdentity`]: size and content hash of the input file, so a
//!   resume never mixes two different inputs.
//!
//! # State machine
//! A request is *pending* until dispatched, *in flight* while an attempt or
//! a retry wait is under way, then *done* (a 2xx answer), *failed* (a
//! permanent error or no attempts left) or *invalid* (a bad input line).
//! Only the three final states are written: a crash turns in-flight back
//! into pending, which is exactly what a row-less request means, so a
//! durable in-flight mark would cost a write per attempt and buy nothing.
//! `done` is terminal: the commit is guarded so that a done row is never
//! overwritten; `failed` may become `done` through `--retry-failed`.
//!
//! Output files are derived from the journal ([`Journal::export`]), never
//! appended to during a run, so a crash can never leave a partial or
//! duplicated line in them.
#![deny(missing_docs)]

mod cache;
mod destination;
mod error;
mod identity;
mod journal;
mod outbox;
mod parts;
mod record;
mod routes;

pub use cache::{Cache, CachedAnswer, cache_key};
pub use destination::{check_destination, temp_path};
pub use error::StoreError;
pub use identity::InputIdentity;
pub use journal::{JobMeta, JobStatus, Journal, LastError, LineExtras, StateCounts, Totals};
pub use outbox::{OutboxChange, OutboxEntry};
pub use parts::{Counts, Part, PartEnd, PartPlan, PartRequest, PartState};
pub use record::{AttemptRow, FinalState, PaidAttempts, Record, RouteRecord, UnknownState};
pub use routes::{KeyCounts, RequestRoute, RouteReport, TargetCounts};
