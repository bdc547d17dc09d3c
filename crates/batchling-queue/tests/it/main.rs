//! The queue against a real PostgreSQL (127.0.0.1:5432, database `test`):
//! each test works in a schema of its own and drops it at the end.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod concurrency;
mod connect;
mod fencing;
mod load;
mod read;
mod support;
