//! Integration tests: the `batchling` binary, run as a subprocess against the
//! fake provider started in-process. No timing assertions.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod anthropic;
mod azure;
mod bad_input;
mod config;
mod costs;
mod formats;
mod job_store;
mod limits;
mod line_caps;
mod malformed;
mod model_limits;
mod newcomer;
mod order;
mod readme;
mod resume;
mod retries;
mod routes;
mod routes_journal;
mod scale_out;
mod serve;
mod serve_client;
mod shared_budget;
mod stops;
mod submit;
mod submit_anthropic;
mod submit_config;
mod support;
