//! The dispatch loop, tested in-process: `batchling_engine::run` against a
//! scripted upstream (`support::Upstream`) on paused tokio time. Durations
//! are simulated, so no test sleeps for real, and none starts a process.
//!
//! Paused time jumps to the next timer whenever the runtime is idle, also
//! while the reader or the journal writer (threads of their own) is busy.
//! So the tests assert orderings and lower bounds on simulated time, which
//! hold however those threads are scheduled; where one asserts an upper
//! bound, it says why nothing can wait on a thread there.
//!
//! One module per behaviour of the loop:

#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod budget; // `max_cost`: reserve the worst case, stop before going over
mod crash_bound; // sent but not yet durable ≤ concurrency
mod job_store; // claims from a shared store, the lease, the outbox, its export
mod lanes; // each model paced by its own limits, slow start and 429 pause
mod outage; // one probe at a time, recovery, giving up
mod rate_limit; // a 429 pauses everyone; its retries are still paced
mod retry; // backoff after 5xx, max attempts, a server's Retry-After
mod routes; // chains of targets, key pools, circuits, what moves a line
mod shutdown; // cancel: drain what is in flight, send nothing new
mod slow_start; // the first request alone, then doubling, then open
mod support;
