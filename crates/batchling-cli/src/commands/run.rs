//! `batchling run`: stream a file through the engine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use batchling_engine::job_store::JobStore as _;
use batchling_engine::{EngineError, Input, Routes, RunSummary, StopCause};
use batchling_mock::{MockConfig, MockServer, Shape};
use batchling_providers::ApiKey;
use batchling_providers::anthropic::translate::{Mode, RequestOptions};
use batchling_providers::anthropic::{AnthropicClient, AnthropicConfig};
use batchling_providers::azure::{AzureClient, AzureConfig};
use batchling_providers::openai::{ClientConfig, OpenAiClient};
use batchling_store::StoreError;
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::job_store::{LoadSpec, Outbox, PgJobStore, take_slot, without_password};
use crate::settings::{ProviderKind, RunSettings, StoreRun, Upstream, env};
use crate::{hints, progress, routing, signals};

pub(crate) async fn run(mut s: RunSettings) -> Result<ExitCode> {
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    check_input(&s)?;
    if let Some(path) = &s.summary_json {
        batchling_store::check_destination(path)?;
    }

    // Held for the run: the lock on this worker's outbox journal.
    let store = match &s.store {
        Some(st) => Some(attach_store(st.clone(), &mut s).await?),
        None => None,
    };
    let (client_config, _mock) = start_upstream_for(s.upstream.clone(), s.provider).await?;
    let shutdown = CancellationToken::new();
    let reporter = progress::reporter(s.quiet);
    spawn_signal_handler(shutdown.clone(), reporter.clone());
    signals::ignore_file_size_signal();
    let (summary, warnings) = send_all(&s, client_config, shutdown, reporter.clone()).await?;
    reporter.finish();
    let summary = summary.map_err(|e| export_hint(e, &s.job.state))?;

    if let Some(path) = &s.summary_json {
        write_summary_json(path, &summary, warnings)?;
    }
    if !s.quiet {
        progress::print_summary(&summary, &s.job.output, &s.job.errors, &s.job.state);
        if let Some(w @ 1..) = warnings {
            eprintln!(
                "note: --lenient left out or clamped {w} field(s) Anthropic cannot take; each answer lists its own in x_batchling.warnings"
            );
        }
        if summary.requests == 0 && summary.stopped.is_none() {
            eprintln!(
                "note: {} has no requests (no non-blank lines); nothing was sent",
                s.job.input.display_name()
            );
        }
    }
    report_stop(&summary, &s.job.state);
    if let Some((store, _outbox, url)) = &store {
        if !s.quiet {
            print_job_totals(store).await;
        }
        eprintln!(
            "{d}: another machine joins it with: batchling run --store {url} --job {id} -o OUTPUT",
            id = store.job_id(),
            d = store.describe(),
        );
    }
    Ok(ExitCode::from(exit_code(&summary)))
}

/// The summary's attempts, tokens and cost are this worker's; the job's
/// own, over every worker, are the store's.
async fn print_job_totals(store: &PgJobStore) {
    match store.job_status().await {
        Ok(j) => eprintln!(
            "  the job    {} of {} done, {} failed, ${:.4} spent by all its workers (the attempts, tokens and cost above are this worker's)",
            j.done, j.total, j.failed, j.spent
        ),
        Err(e) => eprintln!("  the job    its totals could not be read from the store: {e}"),
    }
}

/// `--store`: open the job (load the input or join it), take this
/// worker's outbox journal, and hand both to the engine; the store, not
/// the engine, keeps `--max-cost` (across every worker).
async fn attach_store(
    st: StoreRun,
    s: &mut RunSettings,
) -> Result<(Arc<PgJobStore>, Outbox, String)> {
    let spec = LoadSpec {
        prices: s.job.prices.clone(),
        default_max_output: s.job.default_max_output,
        budget_cap: st.budget_cap,
    };
    let url = without_password(&st.url);
    let store = PgJobStore::open(&st.url, st.source, spec)
        .await
        .with_context(|| format!("--store {url}"))?;
    let outbox = take_slot(&s.job.state, store.job_id())
        .context("cannot take this worker's journal (the outbox of its answers)")?;
    if !s.quiet {
        let how = if store.loaded_here() {
            "loaded"
        } else {
            "joined"
        };
        eprintln!(
            "note: {how} {} ({} requests); this worker's answers wait in {} until the store takes them",
            store.describe(),
            store.total(),
            outbox.path.display()
        );
    }
    s.job.state = outbox.path.clone();
    s.job.job_store = Some(store.clone());
    s.job.max_cost = None;
    Ok((store, outbox, url))
}

/// What can be checked of the input before anything is sent: `--strict`'s
/// whole-file check, that it can be read, and with a budget that every
/// model in it has a price.
fn check_input(s: &RunSettings) -> Result<()> {
    // Joining a job by id: the input is the store's, there is no file.
    let file_given = !matches!(&s.job.input, Input::File(p) if p.as_os_str().is_empty());
    if s.strict && file_given {
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
        && file_given
        && let Err(e) = std::fs::File::open(path)
    {
        bail!("cannot read {}: {e}", path.display());
    }
    let budget = s
        .job
        .max_cost
        .or(s.store.as_ref().and_then(|st| st.budget_cap));
    if budget.is_some()
        && file_given
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
    Ok(())
}

/// The run itself, with the client of the chosen provider (the engine is
/// generic over it; only here is one chosen). Anthropic's runs also count
/// lenient mode's warnings.
async fn send_all(
    s: &RunSettings,
    client_config: ClientConfig,
    shutdown: CancellationToken,
    reporter: Arc<dyn progress::CliReporter>,
) -> Result<(Result<RunSummary, EngineError>, Option<u64>)> {
    let mut job = s.job.clone();
    job.shared_budget = shared_budget(s, &client_config).await?;
    if let Some(config) = &s.routes {
        let lenient = s.lenient;
        let (routes, groups) =
            routing::build(config, &client_config, s.job.default_max_output, lenient)?;
        job.pacing.groups = groups;
        let summary = batchling_engine::run(job, routes, shutdown, reporter).await;
        return Ok((summary, None));
    }
    Ok(match s.provider {
        ProviderKind::OpenAi => {
            let client = Arc::new(OpenAiClient::new(client_config)?);
            let routes = Routes::single(client);
            let summary = batchling_engine::run(job, routes, shutdown, reporter).await;
            (summary, None)
        }
        ProviderKind::Anthropic => {
            let config = anthropic_config(client_config, s.job.default_max_output, s.lenient);
            let client = Arc::new(AnthropicClient::new(config)?);
            let routes = Routes::single(client.clone());
            let summary = batchling_engine::run(job, routes, shutdown, reporter).await;
            (summary, Some(client.translation_warnings()))
        }
        ProviderKind::Azure => {
            let config = azure_config(client_config, s.azure_api_version.clone());
            let client = Arc::new(AzureClient::new(config)?);
            let routes = Routes::single(client);
            let summary = batchling_engine::run(job, routes, shutdown, reporter).await;
            (summary, None)
        }
    })
}

/// `--limiter`: the budget shared with other processes, with each limit
/// group's base URL and key (a config's groups: their first key; else the
/// one upstream, as `default`).
async fn shared_budget(
    s: &RunSettings,
    client: &ClientConfig,
) -> Result<Option<Arc<dyn batchling_engine::shared::SharedBudget>>> {
    let Some((url, prefix)) = &s.limiter else {
        return Ok(None);
    };
    let groups: Vec<(String, String, Option<ApiKey>)> = match &s.routes {
        Some(c) => (c.config.groups.values())
            .map(|g| {
                let base = c.config.providers[&g.provider].base_url.clone();
                let key = (c.keys.iter()).find(|(_, group, _)| *group == g.name);
                (g.name.clone(), base, key.map(|(_, _, k)| k.clone()))
            })
            .collect(),
        None => vec![(
            "default".to_owned(),
            client.base_url.clone(),
            client.api_key.clone(),
        )],
    };
    let budget = crate::shared_budget::RedisBudget::connect(url, prefix, groups).await?;
    Ok(Some(Arc::new(budget)))
}

/// Azure's client settings: the shared ones (`base_url` is the resource's
/// endpoint) and the api-version, if any.
pub(crate) fn azure_config(client: ClientConfig, api_version: Option<String>) -> AzureConfig {
    AzureConfig {
        client,
        api_version,
    }
}

/// `--summary-json`: the engine's summary, and for Anthropic the count of
/// lenient mode's warnings.
pub(crate) fn write_summary_json(
    path: &std::path::Path,
    summary: &impl serde::Serialize,
    warnings: Option<u64>,
) -> Result<()> {
    let mut json = serde_json::to_value(summary).expect("the summary serialises");
    if let (Some(w), Some(fields)) = (warnings, json.as_object_mut()) {
        fields.insert("translation_warnings".into(), w.into());
    }
    let json = serde_json::to_vec_pretty(&json).expect("the summary serialises");
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
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

/// Anthropic's client settings from the shared ones: the same base URL,
/// key, headers (`anthropic-beta`, or an `anthropic-version` of the user's
/// choice, pass through), timeout, pool and cap; an OpenAI line without
/// `max_tokens` gets `--default-max-tokens`, as its reservation assumes;
/// `--lenient` chooses the translation's mode.
pub(crate) fn anthropic_config(
    c: ClientConfig,
    default_max_tokens: u64,
    lenient: bool,
) -> AnthropicConfig {
    let mode = if lenient { Mode::Lenient } else { Mode::Strict };
    let translation = RequestOptions {
        default_max_tokens,
        mode,
    };
    AnthropicConfig::from_client(c, translation)
}

/// The client settings for an upstream speaking `provider`'s API, starting
/// the built-in fake provider when asked for (it lives as long as the
/// returned server; it serves both APIs, Anthropic's under its root, with
/// any key).
pub(crate) async fn start_upstream_for(
    upstream: Upstream,
    provider: ProviderKind,
) -> Result<(ClientConfig, Option<MockServer>)> {
    Ok(match upstream {
        Upstream::Remote(c) => (c, None),
        Upstream::Mock {
            implicit,
            mut client,
        } => {
            let shape = match provider {
                ProviderKind::Azure => Shape::Azure,
                ProviderKind::OpenAi | ProviderKind::Anthropic => Shape::OpenAi,
            };
            let server = MockServer::start(
                MockConfig {
                    shape,
                    ..MockConfig::default()
                },
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            )
            .await
            .context("cannot start the built-in fake provider")?;
            if implicit {
                let key = match provider {
                    ProviderKind::OpenAi => env::OPENAI_API_KEY,
                    ProviderKind::Anthropic => env::ANTHROPIC_API_KEY,
                    ProviderKind::Azure => env::AZURE_OPENAI_API_KEY,
                };
                eprintln!(
                    "note: no API key and no --base-url: sending to the built-in fake provider \
                     (answers are fake). Set {key} or --base-url for a real run."
                );
            }
            match provider {
                ProviderKind::OpenAi => client.base_url = server.base_url(),
                ProviderKind::Anthropic => {
                    client.base_url = server.anthropic_base_url();
                    // The fake's Messages API wants a key, any key.
                    if client.api_key.is_none() {
                        client.api_key = Some(ApiKey::new("batchling-fake-provider"));
                    }
                }
                ProviderKind::Azure => {
                    // Azure-shaped: the endpoint is its root, and it wants
                    // a key, any key.
                    client.base_url = server.base_url().trim_end_matches("/v1").to_owned();
                    if client.api_key.is_none() {
                        client.api_key = Some(ApiKey::new("batchling-fake-provider"));
                    }
                }
            }
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
