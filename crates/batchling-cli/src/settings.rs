//! Arguments and environment resolved once into plain values. Commands take
//! these and never see clap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use batchling_core::RetryPolicy;
use batchling_core::duration::parse_duration;
use batchling_core::pricing::Catalog;
use batchling_engine::{Input, Job, Order, PacerConfig, default_errors_path};

pub(crate) fn order(o: OrderArg) -> Order {
    match o {
        OrderArg::Input => Order::Input,
        OrderArg::Completion => Order::Completion,
    }
}
use batchling_providers::ApiKey;
use batchling_providers::openai::ClientConfig;

use batchling_engine::submit::{PartLimits, SubmitJob};

use crate::args::{
    CancelArgs, ClientArgs, JournalArgs, LimitArgs, LogFormat, OrderArg, RunArgs, ServeArgs,
    SubmitArgs,
};
use batchling_server::config::{self as serve_config, ServeConfig, UpstreamConfig};

/// Environment variables batchling reads (besides the one named by
/// `--api-key-env`).
pub(crate) mod env {
    /// The API base URL when `--base-url` is not given.
    pub(crate) const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
}

const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

/// Where requests go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// A real server.
    Remote(ClientConfig),
    /// The built-in fake provider, started in-process. `implicit` when it
    /// was chosen because no key was set.
    Mock {
        implicit: bool,
        client: ClientConfig,
    },
}

/// Everything `batchling run` needs.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub(crate) job: Job,
    pub(crate) upstream: Upstream,
    pub(crate) strict: bool,
    pub(crate) quiet: bool,
    pub(crate) summary_json: Option<PathBuf>,
    /// Things worth saying before the run starts (the server taken from the
    /// journal).
    pub(crate) notes: Vec<String>,
}

/// How the journal names the built-in fake provider.
const MOCK_SERVER: &str = "mock";

/// The server a journal records for an upstream.
fn server_of(u: &Upstream) -> String {
    match u {
        Upstream::Remote(c) => c.base_url.trim_end_matches('/').to_owned(),
        Upstream::Mock { .. } => MOCK_SERVER.into(),
    }
}

/// What an existing journal records about its server: `None` when there is
/// no journal to resume (absent, `--restart`, unreadable: the run reports
/// that itself), `Some(None)` for a journal of an older batchling.
fn recorded_server(state: &Path, restart: bool) -> Option<Option<String>> {
    if restart || !state.exists() {
        return None;
    }
    let meta = batchling_store::Journal::open_read_only(state)
        .and_then(|j| j.meta())
        .ok()?;
    meta.created_at.map(|_| meta.server)
}

/// The upstream of a resume: the server the journal records, unless the
/// flags name another one (refused: answers or batches are there).
/// `named` is whether `--base-url` or `--mock` was given.
fn resume_upstream(
    state: &Path,
    restart: bool,
    upstream: Upstream,
    named: bool,
    notes: &mut Vec<String>,
) -> Result<Upstream> {
    let Some(recorded) = recorded_server(state, restart) else {
        return Ok(upstream);
    };
    let current = server_of(&upstream);
    let Some(recorded) = recorded else {
        notes.push(format!(
            "the journal {} does not record its server (an older batchling wrote it): sending to {current}, as the flags and environment say",
            state.display()
        ));
        return Ok(upstream);
    };
    if recorded == current {
        return Ok(upstream);
    }
    let name = |s: &str| match s {
        MOCK_SERVER => "the built-in fake provider".to_owned(),
        url => url.to_owned(),
    };
    if named {
        bail!(
            "the journal {} was started against {}, not {}; leave out --base-url/--mock to resume there, or start over with --restart",
            state.display(),
            name(&recorded),
            name(&current)
        );
    }
    notes.push(format!(
        "resuming against {}, the server the journal {} records",
        name(&recorded),
        state.display()
    ));
    let client = match upstream {
        Upstream::Remote(c) | Upstream::Mock { client: c, .. } => c,
    };
    Ok(if recorded == MOCK_SERVER {
        Upstream::Mock {
            implicit: false,
            client,
        }
    } else {
        Upstream::Remote(ClientConfig {
            base_url: recorded,
            ..client
        })
    })
}

/// `--errors`, or the default next to the output; never the output itself.
pub(crate) fn errors_path(output: &Path, errors: Option<PathBuf>) -> Result<PathBuf> {
    let errors = errors.unwrap_or_else(|| default_errors_path(output));
    if errors == output {
        bail!(
            "--errors and --output name the same file {}",
            output.display()
        );
    }
    Ok(errors)
}

/// The built-in prices, plus a user's file.
/// [`JournalArgs`] resolved: the journal and the files `run` and `submit`
/// write from it.
struct Journaling {
    state: PathBuf,
    errors: PathBuf,
    order: Order,
    restart: bool,
    durable: bool,
    prices: Arc<Catalog>,
    quiet: bool,
    summary_json: Option<PathBuf>,
}

impl Journaling {
    fn resolve(a: JournalArgs, output: &Path, errors: Option<PathBuf>) -> Result<Self> {
        Ok(Journaling {
            state: a
                .state
                .unwrap_or_else(|| batchling_engine::default_state_path(output)),
            errors: errors_path(output, errors)?,
            order: order(a.order),
            restart: a.restart,
            durable: !a.no_fsync,
            prices: Arc::new(catalog(a.prices.as_deref())?),
            quiet: a.quiet,
            summary_json: a.summary_json,
        })
    }
}

pub(crate) fn catalog(file: Option<&Path>) -> Result<Catalog> {
    let mut c = Catalog::builtin();
    if let Some(f) = file {
        c.load_file(f)?;
    }
    Ok(c)
}

fn parse_header(h: &str) -> Result<(String, String)> {
    let (k, v) = h
        .split_once(':')
        .with_context(|| format!("--header {h:?}: expected 'Name: value'"))?;
    if k.trim().is_empty() {
        bail!("--header {h:?}: the header name is empty");
    }
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl RunSettings {
    pub(crate) fn resolve(a: RunArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let input = if a.input == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(&a.input))
        };
        let give_up_after = parse_duration(&a.give_up_after).with_context(|| {
            format!(
                "--give-up-after {:?}: expected a duration such as 10m, 90s or 1h",
                a.give_up_after
            )
        })?;
        a.limits.check()?;
        let (mut client, has_key, has_base) = client_config(&a.client, &getenv)?;
        client.pool_size = a.limits.concurrency;
        client.http2 = a.http2;
        let upstream = upstream(a.mock, has_key || has_base, client);
        let j = Journaling::resolve(a.journal, &a.output, a.errors)?;
        let mut notes = Vec::new();
        let named = a.mock || a.client.base_url.is_some();
        let upstream = resume_upstream(&j.state, j.restart, upstream, named, &mut notes)?;
        let mut job = Job::new(input, a.output.clone());
        job.server = Some(server_of(&upstream));
        job.errors = j.errors;
        job.order = j.order;
        job.pacing = PacerConfig {
            learn: !a.ignore_limit_headers,
            ..a.limits.pacing()
        };
        job.concurrency = a.limits.concurrency;
        job.retry = a.limits.retry();
        job.give_up_after = give_up_after;
        job.state = j.state;
        job.restart = j.restart;
        job.retry_failed = a.retry_failed;
        job.durable = j.durable;
        job.cache = a.cache;
        if let Some(limit) = a.max_cost
            && !(limit.is_finite() && limit > 0.0)
        {
            bail!("--max-cost {limit}: expected a positive amount of USD");
        }
        job.max_cost = a.max_cost;
        job.prices = Some(j.prices);
        job.default_max_output = a.default_max_tokens;
        Ok(RunSettings {
            job,
            upstream,
            strict: a.strict,
            quiet: j.quiet,
            summary_json: j.summary_json,
            notes,
        })
    }
}

fn duration_flag(flag: &str, text: &str) -> Result<Duration> {
    parse_duration(text).with_context(|| {
        format!("{flag} {text:?}: expected a duration such as 10s, 90s, 30m or 6h")
    })
}

/// A flag's positive number of seconds (NaN, 0, negatives and values past
/// what a `Duration` holds are refused, never a panic).
fn positive_secs(flag: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {secs}: expected a positive number of seconds"))
}

/// Base URL and key from flags and environment: (config, key given,
/// a base URL given by flag or environment).
fn client_config(
    a: &ClientArgs,
    getenv: &impl Fn(&str) -> Option<String>,
) -> Result<(ClientConfig, bool, bool)> {
    let timeout = positive_secs("--timeout", a.timeout)?;
    let headers = a
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let key = getenv(&a.api_key_env)
        .filter(|k| !k.trim().is_empty())
        .map(ApiKey::new);
    let max_response_bytes = max_response_bytes(a.max_response_mb)?;
    let env_base = getenv(env::OPENAI_BASE_URL).filter(|s| !s.trim().is_empty());
    let has_base = a.base_url.is_some() || env_base.is_some();
    let config = ClientConfig {
        base_url: a
            .base_url
            .clone()
            .or(env_base)
            .unwrap_or_else(|| OPENAI_DEFAULT_BASE.into()),
        api_key: key.clone(),
        headers,
        timeout,
        max_response_bytes,
        ..ClientConfig::default()
    };
    Ok((config, key.is_some(), has_base))
}

/// `--max-response-mb` in bytes.
fn max_response_bytes(mb: u64) -> Result<u64> {
    if mb == 0 {
        bail!("--max-response-mb must be at least 1");
    }
    mb.checked_mul(1024 * 1024)
        .with_context(|| format!("--max-response-mb {mb}: too large"))
}

/// `--mock`, or no key and nowhere else to go: rehearse against the fake
/// provider rather than fail (the command says so loudly).
fn upstream(mock: bool, has_key_or_base: bool, client: ClientConfig) -> Upstream {
    if mock || !has_key_or_base {
        Upstream::Mock {
            implicit: !mock,
            client,
        }
    } else {
        Upstream::Remote(client)
    }
}

impl LimitArgs {
    fn check(&self) -> Result<()> {
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("--max-attempts must be at least 1");
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            bail!("--rpm and --tpm must be positive (leave them out for no limit)");
        }
        Ok(())
    }

    fn pacing(&self) -> PacerConfig {
        PacerConfig {
            rpm: self.rpm,
            tpm: self.tpm,
            ..PacerConfig::default()
        }
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        }
    }
}

/// Everything `batchling submit` needs.
#[derive(Debug, Clone)]
pub(crate) struct SubmitSettings {
    pub(crate) job: SubmitJob,
    pub(crate) upstream: Upstream,
    pub(crate) quiet: bool,
    pub(crate) summary_json: Option<PathBuf>,
    /// As for `run`.
    pub(crate) notes: Vec<String>,
}

impl SubmitSettings {
    pub(crate) fn resolve(a: SubmitArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        a.limits.check()?;
        let (mut client, has_key, has_base) = client_config(&a.client, &getenv)?;
        client.pool_size = a.limits.concurrency.max(1);
        let upstream = upstream(a.mock, has_key || has_base, client);
        if a.input.as_os_str() == "-" {
            bail!(
                "submit needs a file (parts are rebuilt from it on resume), not - (stdin); save the input to a file"
            );
        }
        if a.max_requests_per_batch == 0 {
            bail!("--max-requests-per-batch must be at least 1");
        }
        if a.max_batch_bytes == 0 {
            bail!("--max-batch-bytes must be at least 1");
        }
        let poll_interval = duration_flag("--poll-interval", &a.poll_interval)?;
        let max_poll_interval =
            duration_flag("--max-poll-interval", &a.max_poll_interval)?.max(poll_interval);
        let deadline = a
            .deadline
            .as_deref()
            .map(|d| duration_flag("--deadline", d))
            .transpose()?;
        let deadline_margin = duration_flag("--deadline-margin", &a.deadline_margin)?;
        let j = Journaling::resolve(a.journal, &a.output, a.errors)?;
        let mut notes = Vec::new();
        let named = a.mock || a.client.base_url.is_some();
        let upstream = resume_upstream(&j.state, j.restart, upstream, named, &mut notes)?;
        let server = Some(server_of(&upstream));
        let retry = a.limits.retry();
        let mut online = Job::new(Input::File(a.input.clone()), a.output.clone());
        online.pacing = a.limits.pacing();
        online.concurrency = a.limits.concurrency;
        online.retry = retry;
        online.server = server.clone();
        let job = SubmitJob {
            input: a.input,
            output: a.output,
            errors: j.errors,
            state: j.state,
            order: j.order,
            restart: j.restart,
            durable: j.durable,
            limits: PartLimits {
                max_requests: a.max_requests_per_batch,
                max_bytes: a.max_batch_bytes,
            },
            skip_invalid: a.skip_invalid,
            poll_interval,
            max_poll_interval,
            api_retry: retry,
            resubmit: a.resubmit,
            finish_online: a.finish_online,
            deadline,
            deadline_margin,
            prices: Some(j.prices),
            online,
            server,
        };
        Ok(SubmitSettings {
            job,
            upstream,
            quiet: j.quiet,
            summary_json: j.summary_json,
            notes,
        })
    }
}

/// Everything `batchling cancel` needs.
#[derive(Debug, Clone)]
pub(crate) struct CancelSettings {
    pub(crate) state: PathBuf,
    pub(crate) client: ClientConfig,
    pub(crate) poll_interval: Duration,
    pub(crate) prices: Arc<Catalog>,
    pub(crate) quiet: bool,
    /// As for `run`.
    pub(crate) notes: Vec<String>,
}

impl CancelSettings {
    pub(crate) fn resolve(a: CancelArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let (client, _, _) = client_config(&a.client, &getenv)?;
        // The batches are where the submit sent them: the journal says where.
        let mut notes = Vec::new();
        let named = a.client.base_url.is_some();
        let client = match resume_upstream(
            &a.state,
            false,
            Upstream::Remote(client),
            named,
            &mut notes,
        )? {
            Upstream::Remote(c) => c,
            Upstream::Mock { .. } => bail!(
                "the submit of {} ran on the built-in fake provider, whose batches ended with it: there is nothing to cancel",
                a.state.display()
            ),
        };
        Ok(CancelSettings {
            state: a.state,
            client,
            poll_interval: duration_flag("--poll-interval", &a.poll_interval)?,
            prices: Arc::new(catalog(a.prices.as_deref())?),
            quiet: a.quiet,
            notes,
        })
    }
}

/// Everything `batchling serve` needs.
#[derive(Debug, Clone)]
pub(crate) struct ServeSettings {
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) config: ServeConfig,
    /// Start the fake provider and use it as the one upstream.
    pub(crate) mock: bool,
    pub(crate) log_json: bool,
}

impl ServeSettings {
    pub(crate) fn resolve(a: ServeArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let listen = a.listen.parse().with_context(|| {
            format!(
                "--listen {:?}: expected an address such as 127.0.0.1:8080",
                a.listen
            )
        })?;
        let timeout = positive_secs("--timeout", a.timeout)?;
        if a.concurrency == 0 || a.max_attempts == 0 || a.max_running_batches == 0 {
            bail!("--concurrency, --max-attempts and --max-running-batches must be at least 1");
        }
        if a.rpm == Some(0) || a.tpm == Some(0) {
            bail!("--rpm and --tpm must be positive (leave them out for no limit)");
        }
        if a.max_upload_mb == 0 {
            bail!("--max-upload-mb must be at least 1");
        }
        let body_timeout = positive_secs("--body-timeout", a.body_timeout)?;
        let window = parse_duration(&a.batch_window).with_context(|| {
            format!(
                "--batch-window {:?}: expected a duration such as 24h or 90s",
                a.batch_window
            )
        })?;
        let (upstreams, file_keys_env) = match &a.config {
            Some(path) => {
                let loaded = serve_config::load(path, &getenv)?;
                (loaded.upstreams, loaded.auth_keys_env)
            }
            None => {
                let base = a
                    .base_url
                    .clone()
                    .or_else(|| getenv(env::OPENAI_BASE_URL).filter(|s| !s.trim().is_empty()));
                let base = match (base, a.mock) {
                    (Some(b), _) => b,
                    // Replaced by the fake provider's URL once it has started.
                    (None, true) => String::new(),
                    (None, false) => bail!(
                        "no upstream: give --base-url URL (or $OPENAI_BASE_URL), --config FILE for several, or --mock to try the API on the built-in fake provider"
                    ),
                };
                let mut up = UpstreamConfig::new(if a.mock { "mock" } else { "default" }, &base);
                up.api_key = getenv(&a.api_key_env)
                    .filter(|k| !k.trim().is_empty())
                    .map(ApiKey::new);
                up.rpm = a.rpm;
                up.tpm = a.tpm;
                up.concurrency = a.concurrency;
                up.timeout = timeout;
                up.max_response_bytes = max_response_bytes(a.max_response_mb)?;
                (vec![up], None)
            }
        };
        let mut config = ServeConfig::new(a.data_dir, upstreams);
        let keys_env = a.auth_keys_env.or(file_keys_env);
        if let Some(var) = &keys_env {
            let list = getenv(var).unwrap_or_default();
            config.auth_keys = serve_config::split_keys(&list);
            if config.auth_keys.is_empty() {
                bail!(
                    "${var} holds no client keys; set it to a comma-separated list of keys, or pass --no-auth"
                );
            }
        } else if !a.no_auth {
            bail!(
                "no client keys: name the variable holding them with --auth-keys-env NAME (comma-separated), or pass --no-auth to accept any client"
            );
        }
        config.no_auth = a.no_auth;
        config.max_upload_bytes = a.max_upload_mb * 1024 * 1024;
        config.http.body_timeout = body_timeout;
        config.completion_window = window;
        config.max_running_batches = a.max_running_batches;
        config.max_attempts = a.max_attempts;
        Ok(ServeSettings {
            listen,
            config,
            mock: a.mock,
            log_json: a.log_format == LogFormat::Json,
        })
    }
}
