//! `batchling submit`: a file through a Batch API, and `batchling cancel`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use batchling_engine::submit::{CancelJob, CancelSummary, SubmitError, SubmitStop, SubmitSummary};
use batchling_providers::anthropic::translate::DEFAULT_MAX_TOKENS;
use batchling_providers::anthropic::{AnthropicClient, MessageBatchClient};
use batchling_providers::azure::{self, AzureClient};
use batchling_providers::openai::{BatchClient, ClientConfig, OpenAiClient};
use batchling_store::Journal;
use tokio_util::sync::CancellationToken;

use super::exit;
use super::run::{anthropic_config, azure_config, spawn_signal_handler, start_upstream_for};
use crate::settings::{CancelSettings, ProviderKind, SubmitSettings, recorded_lenient};
use crate::{progress, routing};

pub(crate) async fn submit(s: SubmitSettings) -> Result<ExitCode> {
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    if let Some(path) = &s.summary_json {
        batchling_store::check_destination(path)?;
    }
    let (client_config, _mock) = start_upstream_for(s.upstream.clone(), s.provider).await?;
    let shutdown = CancellationToken::new();
    let reporter = progress::reporter(s.quiet);
    spawn_signal_handler(shutdown.clone(), reporter.clone());
    let engine_reporter: Arc<dyn batchling_engine::report::Reporter> = reporter.clone();
    let (result, online_warnings) = submit_on(&s, client_config, shutdown, engine_reporter).await?;
    reporter.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(SubmitError::BadLines { path, problems }) => {
            for p in &problems {
                eprintln!("{}:{p}", path.display());
            }
            return Err(SubmitError::BadLines { path, problems }.into());
        }
        Err(SubmitError::Journal(e)) => {
            return Err(super::run::export_hint(e.into(), &s.job.state));
        }
        Err(SubmitError::Engine(e)) => return Err(super::run::export_hint(e, &s.job.state)),
        Err(e) => return Err(e.into()),
    };
    // Anthropic's: the batch answers' warnings (all of the job's, from the
    // journal) and the online ones (this process's).
    let warnings = online_warnings.map(|online| summary.warnings + online);
    if let Some(path) = &s.summary_json {
        super::run::write_summary_json(path, &summary, warnings)?;
    }
    if !s.quiet {
        print_summary(&summary, &s.job);
        if let Some(w @ 1..) = warnings {
            eprintln!(
                "note: --lenient left out or clamped {w} field(s) Anthropic cannot take; each answer lists its own in x_batchling.warnings"
            );
        }
    }
    Ok(ExitCode::from(match &summary.stopped {
        Some(SubmitStop::Interrupted) => exit::INTERRUPTED,
        Some(SubmitStop::Online { message }) => {
            eprintln!("error: {message}");
            exit::ERROR
        }
        None if summary.failed > 0 || summary.invalid > 0 || summary.not_done > 0 => {
            exit::SOME_FAILED
        }
        None => exit::OK,
    }))
}

/// The submit on the chosen provider's Batch API and online client (the
/// engine is generic over both; only here is one chosen). The online one
/// finishes what batches left; Anthropic's also counts the warnings of what
/// it sent.
async fn submit_on(
    s: &SubmitSettings,
    client_config: ClientConfig,
    shutdown: CancellationToken,
    reporter: Arc<dyn batchling_engine::report::Reporter>,
) -> Result<(Result<SubmitSummary, SubmitError>, Option<u64>)> {
    let job = s.job.clone();
    if let Some(config) = &s.routes {
        return submit_on_config(s, config, client_config, shutdown, reporter).await;
    }
    Ok(match s.provider {
        ProviderKind::OpenAi => {
            let batches = BatchClient::new(&client_config)?;
            let online = Arc::new(OpenAiClient::new(client_config)?);
            let result =
                batchling_engine::submit::submit(job, batches, online, shutdown, reporter).await;
            (result, None)
        }
        ProviderKind::Anthropic => {
            // The batches and the online finish translate alike.
            let config = anthropic_config(client_config, DEFAULT_MAX_TOKENS, s.lenient);
            let batches = MessageBatchClient::new(&config)?;
            let online = Arc::new(AnthropicClient::new(config)?);
            let result =
                batchling_engine::submit::submit(job, batches, online.clone(), shutdown, reporter)
                    .await;
            (result, Some(online.translation_warnings()))
        }
        ProviderKind::Azure => {
            let config = azure_config(client_config, s.azure_api_version.clone());
            let batches = azure::batch_client(&config)?;
            let online = Arc::new(AzureClient::new(config)?);
            let result =
                batchling_engine::submit::submit(job, batches, online, shutdown, reporter).await;
            (result, None)
        }
    })
}

/// The submit on a routes config: each target's Batch API, and the
/// config's routes for what the batches leave (the one place submit names
/// the config's providers is `routing`).
async fn submit_on_config(
    s: &SubmitSettings,
    config: &crate::settings::ConfigRoutes,
    client_config: ClientConfig,
    shutdown: CancellationToken,
    reporter: Arc<dyn batchling_engine::report::Reporter>,
) -> Result<(Result<SubmitSummary, SubmitError>, Option<u64>)> {
    let apis = routing::batch_apis(config, &client_config, s.lenient)?;
    let (routes, groups) = routing::build(config, &client_config, DEFAULT_MAX_TOKENS, s.lenient)?;
    let mut job = s.job.clone();
    job.online.pacing.groups = groups;
    let result = batchling_engine::submit::submit_with(job, apis, routes, shutdown, reporter).await;
    // The batch answers' warnings are in the journal; the online finish's
    // are its clients', not counted here.
    Ok((result, s.lenient.then_some(0)))
}

fn print_summary(s: &SubmitSummary, job: &batchling_engine::submit::SubmitJob) {
    eprintln!("\nbatchling submit summary");
    eprintln!(
        "  requests   {} : {} succeeded, {} failed ({} invalid lines), {} not done",
        s.requests,
        s.succeeded,
        s.failed + s.invalid,
        s.invalid,
        s.not_done
    );
    eprintln!("  batches    {} part(s)", s.parts);
    if s.cancelled_for_deadline > 0 {
        eprintln!(
            "  deadline   {} part(s) cancelled to meet it",
            s.cancelled_for_deadline
        );
    }
    if s.online_requests > 0 {
        eprintln!("  online     {} request(s) sent online", s.online_requests);
    }
    if let Some(c) = s.cost_usd {
        eprintln!(
            "  cost       ${c:.4} (batch prices for batch answers, online prices for online ones)"
        );
    }
    eprintln!("  elapsed    {:.1}s", s.elapsed_s);
    eprintln!("  output     {}", job.output.display());
    eprintln!("  errors     {}", job.errors.display());
    eprintln!("  journal    {}", job.state.display());
    if s.stopped == Some(SubmitStop::Interrupted) {
        eprintln!(
            "  batches keep running on the server: run the same command again to collect them"
        );
    }
}

pub(crate) async fn cancel(s: CancelSettings) -> Result<ExitCode> {
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    if !s.state.exists() {
        anyhow::bail!(
            "{} does not exist; give the journal of a submit (OUTPUT.journal by default)",
            s.state.display()
        );
    }
    // Where the submit reads and writes, as it recorded them.
    let (input, output, errors) = {
        let j = Journal::open_read_only(&s.state)?;
        let meta = j.meta()?;
        let settings: serde_json::Value = j
            .submit_value("submit")?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let path = |key: &str| settings[key].as_str().map(std::path::PathBuf::from);
        match (meta.input, path("output"), path("errors")) {
            (Some(i), Some(o), Some(e)) if settings["command"] == "submit" => {
                (std::path::PathBuf::from(i), o, e)
            }
            _ => anyhow::bail!(
                "{} is not the journal of a `batchling submit`; nothing to cancel",
                s.state.display()
            ),
        }
    };
    let reporter = progress::reporter(s.quiet);
    let job = CancelJob {
        state: s.state.clone(),
        input,
        output: output.clone(),
        errors: errors.clone(),
        poll_interval: s.poll_interval,
        prices: Some(s.prices.clone()),
    };
    let engine_reporter: Arc<dyn batchling_engine::report::Reporter> = reporter.clone();
    let c = if let Some(config) = &s.routes {
        // What the batches finish is read as the submit translated it.
        let lenient = recorded_lenient(&s.state, false) == Some(true);
        let apis = routing::batch_apis(config, &s.client, lenient)?;
        batchling_engine::submit::cancel_with(job, apis, engine_reporter).await?
    } else {
        cancel_on(&s, job, engine_reporter).await?
    };
    reporter.finish();
    out!(
        "cancelled {} batch(es); kept {} answer(s), {} failed or cancelled; wrote {} and {}",
        c.cancelled,
        c.succeeded,
        c.failed,
        output.display(),
        errors.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `cancel` on the one provider the submit used.
async fn cancel_on(
    s: &CancelSettings,
    job: CancelJob,
    engine_reporter: Arc<dyn batchling_engine::report::Reporter>,
) -> Result<CancelSummary> {
    Ok(match s.provider {
        ProviderKind::OpenAi => {
            let batches = BatchClient::new(&s.client)?;
            batchling_engine::submit::cancel(job, batches, engine_reporter).await?
        }
        ProviderKind::Anthropic => {
            // What the batches finish is read as the submit translated it.
            let lenient = recorded_lenient(&s.state, false) == Some(true);
            let config = anthropic_config(s.client.clone(), DEFAULT_MAX_TOKENS, lenient);
            let batches = MessageBatchClient::new(&config)?;
            batchling_engine::submit::cancel(job, batches, engine_reporter).await?
        }
        ProviderKind::Azure => {
            let config = azure_config(s.client.clone(), s.azure_api_version.clone());
            let batches = azure::batch_client(&config)?;
            batchling_engine::submit::cancel(job, batches, engine_reporter).await?
        }
    })
}
