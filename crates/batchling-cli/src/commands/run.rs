//! `batchling run`: stream a file through the engine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use batchling_engine::{EngineError, Input, RunSummary, StopCause};
use batchling_mock::{MockConfig, MockServer};
use batchling_providers::openai::OpenAiClient;
use batchling_store::StoreError;
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::settings::{RunSettings, Upstream};
use crate::{hints, progress, signals};

pub(crate) async fn run(s: RunSettings) -> Result<ExitCode> {
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    if s.strict {
        let Input::File(path) = &s.job.input else {
            bail!("--strict reads the file twice, so it needs a file path, not - (stdin)");
        };
        let problems = batchling_engine::check_file(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("{}:{p}", path.display());
            }
            bail!(
                "{} has {} bad line(s); nothing was sent (--strict)",
                path.display(),
                problems.len()
            );
        }
    }

    if let Input::File(path) = &s.job.input
        && let Err(e) = std::fs::File::open(path)
    {
        bail!("cannot read {}: {e}", path.display());
    }
    if s.job.max_cost.is_some()
        && let (Input::File(path), Some(prices)) = (&s.job.input, &s.job.prices)
    {
        let models = batchling_engine::estimate::models_in_file(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let unpriced: Vec<_> = models.iter().filter(|m| prices.get(m).is_none()).collect();
        if !unpriced.is_empty() {
            bail!(
                "--max-cost needs a price for every model, and {} has none for {:?}; add them with --prices FILE (see `batchling prices`)",
                path.display(),
                unpriced
            );
        }
    }

    if let Some(path) = &s.summary_json {
        batchling_store::check_destination(path)?;
    }

    let (client_config, _mock) = start_upstream(s.upstream).await?;
    let client = OpenAiClient::new(client_config)?;

    let shutdown = CancellationToken::new();
    let reporter = progress::reporter(s.quiet);
    spawn_signal_handler(shutdown.clone(), reporter.clone());
    signals::ignore_file_size_signal();
    let summary =
        batchling_engine::run(s.job.clone(), Arc::new(client), shutdown, reporter.clone()).await;
    reporter.finish();
    let summary = summary.map_err(|e| export_hint(e, &s.job.state))?;

    if let Some(path) = &s.summary_json {
        let json = serde_json::to_vec_pretty(&summary).expect("the summary serialises");
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !s.quiet {
        progress::print_summary(&summary, &s.job.output, &s.job.errors, &s.job.state);
        if summary.requests == 0 && summary.stopped.is_none() {
            eprintln!(
                "note: {} has no requests (no non-blank lines); nothing was sent",
                s.job.input.display_name()
            );
        }
    }
    report_stop(&summary, &s.job.state);
    Ok(ExitCode::from(exit_code(&summary)))
}

/// An output file that could not be written at the end (the disk filled
/// up during the run): say that the answers are safe and how to get them.
pub(crate) fn export_hint(e: EngineError, journal: &std::path::Path) -> anyhow::Error {
    match e {
        EngineError::Journal(StoreError::Export { .. }) => anyhow::Error::new(e).context(format!(
            "every answer is kept in the journal {j}; once the problem is fixed, write the files with `batchling export {j} -o OUTPUT`",
            j = journal.display()
        )),
        e => e.into(),
    }
}

/// The client settings for an upstream, starting the built-in fake provider
/// when asked for (it lives as long as the returned server).
pub(crate) async fn start_upstream(
    upstream: Upstream,
) -> Result<(
    batchling_providers::openai::ClientConfig,
    Option<MockServer>,
)> {
    Ok(match upstream {
        Upstream::Remote(c) => (c, None),
        Upstream::Mock {
            implicit,
            mut client,
        } => {
            let server = MockServer::start(
                MockConfig::default(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            )
            .await
            .context("cannot start the built-in fake provider")?;
            if implicit {
                eprintln!(
                    "note: no API key and no --base-url: sending to the built-in fake provider \
                     (answers are fake). Set OPENAI_API_KEY or --base-url for a real run."
                );
            }
            client.base_url = server.base_url();
            (client, Some(server))
        }
    })
}

/// Why a stopped run stopped, on stderr (nothing for a run that finished).
fn report_stop(s: &RunSummary, journal: &std::path::Path) {
    match &s.stopped {
        Some(StopCause::Interrupted) => {
            eprintln!(
                "interrupted with {} request(s) not done; every answer so far is kept in {}: \
                 run the same command again to continue",
                s.not_done,
                journal.display()
            );
        }
        Some(cause) => {
            eprintln!("error: {}", hints::engine_stop(cause));
            if let (StopCause::BudgetReached { .. }, Some(spent)) = (cause, s.cost_usd) {
                eprintln!("spent so far: ${spent:.4}; the journal keeps every answer");
            }
        }
        None => {}
    }
}

/// The process exit code for a run's outcome.
fn exit_code(s: &RunSummary) -> u8 {
    match &s.stopped {
        Some(StopCause::Interrupted) => exit::INTERRUPTED,
        Some(_) => exit::ERROR,
        None if s.failed > 0 || s.not_done > 0 => exit::SOME_FAILED,
        None => exit::OK,
    }
}

/// First Ctrl-C or SIGTERM: stop dispatching and drain. Second: exit now.
pub(crate) fn spawn_signal_handler(
    shutdown: CancellationToken,
    reporter: Arc<dyn progress::CliReporter>,
) {
    signals::on_interrupt(move || {
        // Through the reporter, so that a progress bar keeps it on screen.
        reporter
            .alert("interrupted: finishing requests in flight (press Ctrl-C again to exit now)");
        shutdown.cancel();
    });
}
