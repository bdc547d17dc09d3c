//! One file per subcommand. Each takes resolved settings and returns the
//! process exit code.

mod config;
mod estimate;
mod export;
mod mock;
mod prices;
pub(crate) mod run;
mod serve;
mod status;
mod store;
mod submit;

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::args::{Cli, Command};
use crate::settings::{
    CancelSettings, EstimateSettings, ExportSettings, MockSettings, PricesSettings, RunSettings,
    ServeSettings, StatusSettings, SubmitSettings,
};

/// Exit codes, as documented in the README.
pub(crate) mod exit {
    /// Every request answered.
    pub(crate) const OK: u8 = 0;
    /// The run finished but some requests failed.
    pub(crate) const SOME_FAILED: u8 = 1;
    /// Usage, configuration or I/O error, or a run stopped by the provider.
    pub(crate) const ERROR: u8 = 2;
    /// Interrupted (Ctrl-C / SIGTERM).
    pub(crate) const INTERRUPTED: u8 = 130;
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(a) => {
            let settings = RunSettings::resolve(*a, |k| std::env::var(k).ok())?;
            // One thread runs the dispatch loop and every HTTP exchange: no
            // cross-thread wake-ups or work stealing per request (less CPU,
            // see BENCHMARKS.md). The reader and the journal writer keep
            // their own threads, so one core is never the limit.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(run::run(settings))
        }
        Command::Submit(a) => {
            let settings = SubmitSettings::resolve(*a, |k| std::env::var(k).ok())?;
            runtime()?.block_on(submit::submit(settings))
        }
        Command::Cancel(a) => {
            let settings = CancelSettings::resolve(a, |k| std::env::var(k).ok())?;
            runtime()?.block_on(submit::cancel(settings))
        }
        Command::Mock(a) => runtime()?.block_on(mock::mock(MockSettings::resolve(a)?)),
        Command::Serve(a) => {
            let settings = ServeSettings::resolve(*a, |k| std::env::var(k).ok())?;
            runtime()?.block_on(serve::serve(settings))
        }
        Command::Status(a) => {
            let s = StatusSettings::resolve(a)?;
            match &s.store {
                Some(st) => runtime()?.block_on(store::status(st, s.json, s.delete)),
                None => status::status(&s),
            }
        }
        Command::Export(a) => {
            let s = ExportSettings::resolve(a)?;
            match &s.store {
                Some(st) => runtime()?.block_on(store::export(st, &s)),
                None => export::export(&s),
            }
        }
        Command::Prices(a) => prices::prices(&PricesSettings::resolve(a)?),
        Command::Config(a) => config::config(a, |k| std::env::var(k).ok()),
        Command::Estimate(a) => estimate::estimate(&EstimateSettings::resolve(a)?),
    }
}
