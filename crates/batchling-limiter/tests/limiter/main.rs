//! The shared budget against a real Redis on 127.0.0.1:6379 (started by
//! `.ci/run`; a test fails, saying how to start it, when it is not
//! there). Every assertion is on the times the scripts return, on
//! Redis's clock, never on how long anything took.

#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod support;

/// Settle, pause, learn and max_ahead.
mod budget;
/// Connecting: bad URLs, nothing listening, credentials, a blip.
mod connect;
/// Many processes at once: the schedule's one-second windows and density.
mod schedule;
