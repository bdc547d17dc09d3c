//! The `batchling` binary: parse arguments, run a command, exit with a
//! meaningful code (0 all done, 1 some requests failed, 2 usage/config/I/O
//! error, 130 interrupted).

mod args;
mod commands;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
