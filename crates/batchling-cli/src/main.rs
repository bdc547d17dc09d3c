//! The `batchling` binary: parse arguments, run a command, exit with a
//! meaningful code (0 all done, 1 some requests failed, 2 usage/config/I/O
//! error, 130 interrupted).

// The one crate that writes to the terminal (denied elsewhere in the workspace).
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// `println!` that returns an `io::Result`, so that a closed pipe
/// (`batchling prices | head`) ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod args;
mod commands;
mod hints;
mod job_store;
mod progress;
mod routing;
mod settings;
mod shared_budget;
mod signals;

use std::process::ExitCode;

// Dev-dependencies of the integration tests only (unit tests see them too;
// tempfile is used by some).
#[cfg(test)]
use rusqlite as _;
#[cfg(test)]
use tempfile as _;
#[cfg(test)]
use xxhash_rust as _;

/// mimalloc rather than glibc's malloc: a run allocates a few dozen small
/// buffers per request across three threads, which glibc's arenas handle
/// slowly (measurements in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            match hints::for_error(&e) {
                Some(hint) => eprintln!("error: {} ({hint})", message(&e)),
                None => eprintln!("error: {}", message(&e)),
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes, each cause only if the message does not
/// already say it (library errors often include their source's text).
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
