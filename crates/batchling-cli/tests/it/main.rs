//! Integration tests: the `batchling` binary, run as a subprocess against the
//! fake provider started in-process. No timing assertions.

mod bad_input;
mod costs;
mod formats;
mod limits;
mod line_caps;
mod malformed;
mod newcomer;
mod order;
mod readme;
mod resume;
mod retries;
mod serve;
mod serve_client;
mod stops;
mod submit;
mod support;
